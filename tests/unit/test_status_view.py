"""The status an API client polls: the newest steps only, known by their keys, and the CLI's `--watch`
printing each step once however the window of newest steps slides between two polls."""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable
from typing import Any

from cli.__main__ import EXIT_OK, _watch
from cost_engine.api_models import STATUS_STEPS, ExecutionView
from cost_engine.api_views import status_view
from cost_engine.models import ExecutionRecord, ExecutionStatus
from cost_engine.service import ExecutionService
from tests.unit.test_reconcile import execution, service  # noqa: F401  (the same fixtures)

S = ExecutionStatus


def test_a_long_log_shows_its_newest_steps_and_says_there_are_earlier_ones(
    service: ExecutionService,  # noqa: F811
    execution: Callable[..., ExecutionRecord],  # noqa: F811
) -> None:
    # Given an execution whose log has more events than a status shows
    record = execution(S.EXECUTING)
    appended = [service.ctx.audit.append(record.execution_id, f"step_{n}", "test") for n in range(STATUS_STEPS + 7)]

    view = status_view(record, service.ctx.audit)

    # Then the status shows the newest ones, oldest first, and that there are earlier ones
    assert [step["event"] for step in view["steps"]] == [e.event_type for e in appended[-STATUS_STEPS:]]
    assert view["earlier_steps"] is True
    # And the view is what the API documents
    ExecutionView.model_validate(view)


def test_a_short_log_shows_all_its_steps(
    service: ExecutionService,  # noqa: F811
    execution: Callable[..., ExecutionRecord],  # noqa: F811
) -> None:
    record = execution(S.VALIDATING)
    appended = [service.ctx.audit.append(record.execution_id, f"step_{n}", "test") for n in range(3)]

    view = status_view(record, service.ctx.audit)

    assert [step["event"] for step in view["steps"]] == [e.event_type for e in appended]
    assert view["earlier_steps"] is False


class SlidingStatus:
    """An API whose status shows the newest two steps of a log that grows by three between polls."""

    def __init__(self) -> None:
        self.log = [f"event_{n}" for n in range(2)]
        self.polls = 0

    def call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        self.polls += 1
        if self.polls > 1:
            self.log += [f"event_{len(self.log) + n}" for n in range(3)]
        done = self.polls == 3
        return {
            "execution_id": "exec-1",
            "recommendation_type": "terminate_instance",
            "resource_id": "i-1",
            "status": "completed" if done else "executing",
            "error_message": None,
            "steps": [
                {"event": event, "at": "2026-12-04T10:00:00+00:00", "actor": "test", "key": f"{n:04d}"}
                for n, event in enumerate(self.log)
            ][-2:],
            "earlier_steps": len(self.log) > 2,
        }


def test_watching_prints_each_step_shown_once_as_the_newest_steps_slide() -> None:
    api, out = SlidingStatus(), io.StringIO()
    args = argparse.Namespace(json=False, timeout=60.0, interval=0.0)

    _, code = _watch(api, "exec-1", args, out)  # type: ignore[arg-type]

    printed = [line.split()[1] for line in out.getvalue().splitlines()[1:-1]]
    # The steps each poll showed, each once and in order, and where the ones that slid out between
    # two polls are
    assert printed == ["event_0", "event_1", "more", "event_3", "event_4", "more", "event_6", "event_7"]
    assert "more steps: cost-engine logs exec-1" in out.getvalue()
    assert code == EXIT_OK
