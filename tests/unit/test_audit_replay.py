"""replay: what an execution's audit log alone says happened, folded from its events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from cost_engine.audit_replay import replay
from cost_engine.models import AuditEvent, ExecutionStatus
from cost_engine.transitions import ALLOWED_TRANSITIONS

S = ExecutionStatus
EXECUTION_ID = "exec-" + "0" * 32
START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


class Log:
    """An execution's events as the engine appends them, one second apart."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def add(self, event_type: str, actor: str, **detail: Any) -> Log:
        self.events.append(
            AuditEvent(
                execution_id=EXECUTION_ID,
                timestamp=START + timedelta(seconds=len(self.events)),
                event_id=f"e{len(self.events):03d}",
                event_type=event_type,
                actor=actor,
                detail=detail,
            )
        )
        return self

    def status(self, old: ExecutionStatus, new: ExecutionStatus, actor: str) -> Log:
        return self.add("status_changed", actor, **{"from": old.value, "to": new.value})

    def requested(self, scheduled_time: str | None = None) -> Log:
        return self.add("execution_requested", "iam:arn:aws:iam::123456789012:user/ops", scheduled_time=scheduled_time)


def terminate_call(error: str | None = None) -> dict[str, Any]:
    detail: dict[str, Any] = {
        "service": "ec2",
        "operation": "TerminateInstances",
        "parameters": {"InstanceIds": ["i-0abc"]},
        "http_status": 400 if error else 200,
        "request_id": "req-1",
    }
    return {**detail, "error": error} if error else detail


def test_a_completed_execution_is_told_from_its_events_alone() -> None:
    # Given the log of an execution approved by a person, which terminated an instance
    log = (
        Log()
        .requested()
        .status(S.PENDING, S.VALIDATING, "state-machine:validate")
        .add("validated", "state-machine:validate", valid=True)
        .add("approval_policy_decided", "state-machine:plan", auto_approve=False, risk_level="high")
        .add("approval_requested", "state-machine:request_approval")
        .status(S.VALIDATING, S.AWAITING_APPROVAL, "state-machine:request_approval")
        .status(S.AWAITING_APPROVAL, S.APPROVED, "approver:lead@example.com")
        .add("approved", "approver:lead@example.com", comment="ok")
        .status(S.APPROVED, S.EXECUTING, "state-machine:backup")
        .add("aws_call", "state-machine:backup", service="ec2", operation="CreateImage", http_status=200)
        .add("aws_call", "state-machine:act", **terminate_call())
        .status(S.EXECUTING, S.VERIFYING, "state-machine:verify")
        .add("completed", "state-machine:record", actual_savings=70.0)
        .status(S.VERIFYING, S.COMPLETED, "state-machine:record")
        .add("slot_released", "engine:limits", slot=0)
    )

    # When it is replayed
    replayed = replay(log.events)

    # Then the statuses, who moved them and when, the decisions and the AWS changes are all there
    assert replayed.status == S.COMPLETED
    assert [(e.status, e.actor) for e in replayed.statuses] == [
        (S.PENDING, "iam:arn:aws:iam::123456789012:user/ops"),
        (S.VALIDATING, "state-machine:validate"),
        (S.AWAITING_APPROVAL, "state-machine:request_approval"),
        (S.APPROVED, "approver:lead@example.com"),
        (S.EXECUTING, "state-machine:backup"),
        (S.VERIFYING, "state-machine:verify"),
        (S.COMPLETED, "state-machine:record"),
    ]
    assert replayed.statuses[-1].at == log.events[-2].timestamp
    assert [d.event_type for d in replayed.decisions] == ["approval_policy_decided", "approval_requested", "approved"]
    assert [(c.service, c.operation, c.actor) for c in replayed.aws_changes] == [
        ("ec2", "CreateImage", "state-machine:backup"),
        ("ec2", "TerminateInstances", "state-machine:act"),
    ]
    assert replayed.aws_changes[1].parameters == {"InstanceIds": ["i-0abc"]}
    assert all(change.succeeded for change in replayed.aws_changes)
    assert replayed.errors == ()
    assert replayed.rollbacks == ()
    assert replayed.contradictions == ()
    assert replayed.execution_id == EXECUTION_ID


def test_a_failed_call_and_the_rollback_it_caused_are_told_as_errors_and_rollbacks() -> None:
    # Given an execution whose terminate call AWS refused, and which was then rolled back
    log = (
        Log()
        .requested()
        .status(S.PENDING, S.VALIDATING, "state-machine:validate")
        .status(S.VALIDATING, S.APPROVED, "state-machine:auto_approve")
        .add("approved", "state-machine:auto_approve", approver="policy")
        .status(S.APPROVED, S.EXECUTING, "state-machine:backup")
        .add("aws_call", "state-machine:act", **terminate_call(error="UnauthorizedOperation"))
        .status(S.EXECUTING, S.ROLLING_BACK, "state-machine:rollback")
        .add("rollback_started", "state-machine:rollback", reason="ActionFailed: terminate failed", automatic=True)
        .add("rollback_action", "state-machine:rollback", rollback={})
        .add("rolled_back", "state-machine:record_rollback", automatic=True)
        .status(S.ROLLING_BACK, S.ROLLED_BACK, "state-machine:record_rollback")
    )

    replayed = replay(log.events)

    assert replayed.status == S.ROLLED_BACK
    [refused] = replayed.aws_changes
    assert (refused.operation, refused.error, refused.http_status, refused.succeeded) == (
        "TerminateInstances",
        "UnauthorizedOperation",
        400,
        False,
    )
    assert [r.event_type for r in replayed.rollbacks] == ["rollback_started", "rollback_action", "rolled_back"]
    assert replayed.rollbacks[0].detail["reason"] == "ActionFailed: terminate failed"
    assert replayed.contradictions == ()


def test_a_failure_is_an_error_of_the_log() -> None:
    log = (
        Log()
        .requested()
        .status(S.PENDING, S.VALIDATING, "state-machine:validate")
        .status(S.VALIDATING, S.FAILED, "state-machine:validate")
        .add("failed", "state-machine:validate", reason="validation failed", errors=["instance is gone"])
    )

    replayed = replay(log.events)

    assert replayed.status == S.FAILED
    assert [(e.event_type, e.detail["reason"]) for e in replayed.errors] == [("failed", "validation failed")]


def test_a_request_with_a_time_starts_the_log_scheduled() -> None:
    log = Log().requested(scheduled_time="2026-03-02T22:00:00Z").status(S.SCHEDULED, S.CANCELLED, "iam:ops")

    replayed = replay(log.events)

    assert [e.status for e in replayed.statuses] == [S.SCHEDULED, S.CANCELLED]
    assert replayed.contradictions == ()


def test_a_change_from_a_status_the_log_never_reached_is_a_contradiction() -> None:
    # Given a log that misses the change to executing
    log = (
        Log()
        .requested()
        .status(S.PENDING, S.VALIDATING, "state-machine:validate")
        .status(S.VALIDATING, S.APPROVED, "state-machine:auto_approve")
        .status(S.EXECUTING, S.VERIFYING, "state-machine:verify")
    )

    replayed = replay(log.events)

    # Then the fold says so, and still reports where the log ends
    assert replayed.contradictions == ("e003: changed from 'executing', but the log had 'approved'",)
    assert replayed.status == S.VERIFYING


def test_a_change_the_transition_model_forbids_is_a_contradiction() -> None:
    log = Log().requested().status(S.PENDING, S.COMPLETED, "engine")

    assert replay(log.events).contradictions == ("e001: 'pending' → 'completed' is not an allowed change",)


def test_an_empty_log_says_nothing_happened() -> None:
    replayed = replay([])

    assert (replayed.status, replayed.statuses, replayed.execution_id) == (None, (), None)


@st.composite
def status_walks(draw: st.DrawFn) -> list[ExecutionStatus]:
    """A sequence of statuses an execution may go through, following the transition model."""
    walk = [draw(st.sampled_from([S.PENDING, S.SCHEDULED]))]
    for _ in range(draw(st.integers(min_value=0, max_value=12))):
        allowed = sorted(ALLOWED_TRANSITIONS[walk[-1]])
        if not allowed:
            break
        walk.append(draw(st.sampled_from(allowed)))
    return walk


def log_of(walk: list[ExecutionStatus]) -> Log:
    log = Log().requested(scheduled_time="2026-03-02T22:00:00Z" if walk[0] == S.SCHEDULED else None)
    for old, new in pairwise(walk):
        log.status(old, new, f"state-machine:{new.value}")
    return log


@given(status_walks())
def test_any_allowed_sequence_of_statuses_is_replayed_exactly(walk: list[ExecutionStatus]) -> None:
    replayed = replay(log_of(walk).events)

    assert [e.status for e in replayed.statuses] == walk
    assert replayed.status == walk[-1]
    assert replayed.contradictions == ()


@given(status_walks().filter(lambda walk: len(walk) >= 3), st.data())
def test_a_log_missing_any_one_status_change_but_the_last_is_caught(
    walk: list[ExecutionStatus], data: st.DataObject
) -> None:
    # Given the log of an allowed walk, with one status change (not the last) lost
    events = log_of(walk).events
    lost = data.draw(st.integers(min_value=1, max_value=len(events) - 2))

    # Then the replay of what is left says the log contradicts itself
    assert replay(events[:lost] + events[lost + 1 :]).contradictions
