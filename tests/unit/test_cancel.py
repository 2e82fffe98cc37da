"""Cancelling an execution that another writer (its state machine) moves on at the same moment,
against emulated DynamoDB and Step Functions: a status that can still be cancelled is cancelled,
one that began acting gets the cancel request, and the logged status change is the one written."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cost_engine.models import ExecutionRecord, ExecutionStatus
from cost_engine.service import ExecutionService
from tests.unit.test_reconcile import execution, service  # noqa: F401  (the same fixtures)

S = ExecutionStatus


def moved_on_after_the_next_read(
    engine: ExecutionService, monkeypatch: pytest.MonkeyPatch, before: S, after: S
) -> None:
    """The next read of the execution answers `before`, and right after it the state machine's step
    moves it to `after`: as when a cancel arrives just as a step changes the status."""
    read = engine.ctx.executions.get
    moved: list[bool] = []

    def read_then_move(execution_id: str) -> ExecutionRecord:
        found = read(execution_id)
        if not moved:
            moved.append(True)
            engine.ctx.executions.transition(execution_id, after, expected=before)
        return found

    monkeypatch.setattr(engine.ctx.executions, "get", read_then_move)


def status_changes(engine: ExecutionService, execution_id: str) -> list[tuple[str, str]]:
    return [
        (event.detail["from"], event.detail["to"])
        for event in engine.ctx.audit.events(execution_id)
        if event.event_type == "status_changed"
    ]


@pytest.mark.parametrize(
    ("before", "after"),
    [(S.PENDING, S.VALIDATING), (S.VALIDATING, S.AWAITING_APPROVAL), (S.AWAITING_APPROVAL, S.APPROVED)],
)
def test_a_cancel_that_meets_a_status_change_between_its_read_and_its_write_still_cancels(
    service: ExecutionService,  # noqa: F811
    execution: Callable[..., ExecutionRecord],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    before: S,
    after: S,
) -> None:
    record = execution(before)
    moved_on_after_the_next_read(service, monkeypatch, before, after)

    cancelled = service.cancel(record.execution_id, "api:tester")

    assert cancelled.status == S.CANCELLED
    # The log shows the change that happened meanwhile, then the cancel from where it really was.
    assert status_changes(service, record.execution_id) == [(before.value, after.value), (after.value, "cancelled")]


def test_a_cancel_that_meets_the_start_of_acting_becomes_a_cancel_request(
    service: ExecutionService,  # noqa: F811
    execution: Callable[..., ExecutionRecord],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    record = execution(S.APPROVED)
    moved_on_after_the_next_read(service, monkeypatch, S.APPROVED, S.EXECUTING)

    requested = service.cancel(record.execution_id, "api:tester")

    # The change under way is rolled back by its own steps, which then end it cancelled.
    assert (requested.status, requested.cancel_requested_by) == (S.EXECUTING, "api:tester")


def test_a_status_change_logs_the_status_it_was_written_over(
    service: ExecutionService,  # noqa: F811
    execution: Callable[..., ExecutionRecord],  # noqa: F811
) -> None:
    record = execution(S.PENDING)
    # Moved on by another writer since this one last read it
    service.ctx.executions.transition(record.execution_id, S.VALIDATING, expected=S.PENDING)

    service.ctx.executions.transition(record.execution_id, S.FAILED, expected={S.PENDING, S.VALIDATING})

    assert status_changes(service, record.execution_id) == [("pending", "validating"), ("validating", "failed")]
