"""What an execution's audit log alone says happened: its statuses, decisions, AWS changes, errors
and rollbacks, folded from its events (oldest first) without reading anything else.

The log is append-only, so this is the account of an execution that outlives (and can check) its
record: `replay(events).status` must be the record's status, and every AWS call that changed
something is in `aws_changes`. Where the log contradicts itself (a status change from a status it
never reached, or one the transition model forbids) the fold says so in `contradictions` instead
of guessing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cost_engine.audit_trail import AWS_CALL, STATUS_CHANGED
from cost_engine.models import AuditEvent, ExecutionStatus
from cost_engine.transitions import can_transition

# The first event of every execution, written with the record (which starts without a transition).
EXECUTION_REQUESTED = "execution_requested"
# Who decided what the execution may do, or that it stops.
DECISION_EVENTS = frozenset(
    {
        "approval_policy_decided",
        "approval_requested",
        "approved",
        "rejected",
        "approval_expired",
        "cancel_requested",
        "cancel_honoured",
        "cancelled",
        "rollback_requested",
    }
)
ERROR_EVENTS = frozenset({"failed", "rollback_failed", "start_failed", "stop_failed", "acting_time_limit_exceeded"})
ROLLBACK_EVENTS = frozenset(
    {"rollback_requested", "rollback_started", "rollback_action", "rollback_done", "rolled_back", "rollback_failed"}
)


@dataclass(frozen=True)
class StatusEntry:
    """The execution reached `status` at `at`, by `actor`'s doing."""

    status: ExecutionStatus
    at: datetime
    actor: str


@dataclass(frozen=True)
class LoggedEvent:
    event_type: str
    at: datetime
    actor: str
    detail: dict[str, Any]


@dataclass(frozen=True)
class AwsChange:
    """One AWS call that changed (or tried to change) something."""

    service: str
    operation: str
    at: datetime
    actor: str
    parameters: dict[str, Any]
    http_status: int | None
    request_id: str | None
    error: str | None

    @property
    def succeeded(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Replay:
    execution_id: str | None
    statuses: tuple[StatusEntry, ...] = ()
    decisions: tuple[LoggedEvent, ...] = ()
    aws_changes: tuple[AwsChange, ...] = ()
    errors: tuple[LoggedEvent, ...] = ()
    rollbacks: tuple[LoggedEvent, ...] = ()
    contradictions: tuple[str, ...] = ()

    @property
    def status(self) -> ExecutionStatus | None:
        """The status the log ends in; None for a log without its first event."""
        return self.statuses[-1].status if self.statuses else None


def _status(value: Any) -> ExecutionStatus | None:
    try:
        return ExecutionStatus(value)
    except ValueError:
        return None


def replay(events: Iterable[AuditEvent]) -> Replay:
    """Fold an execution's events, oldest first, into what they say happened."""
    execution_id: str | None = None
    statuses: list[StatusEntry] = []
    decisions: list[LoggedEvent] = []
    changes: list[AwsChange] = []
    errors: list[LoggedEvent] = []
    rollbacks: list[LoggedEvent] = []
    contradictions: list[str] = []
    for event in events:
        execution_id = execution_id or event.execution_id
        detail = event.detail
        if event.event_type == EXECUTION_REQUESTED and not statuses:
            # The record is created pending, or scheduled when the request named a time.
            first = ExecutionStatus.SCHEDULED if detail.get("scheduled_time") else ExecutionStatus.PENDING
            statuses.append(StatusEntry(first, event.timestamp, event.actor))
        elif event.event_type == STATUS_CHANGED:
            old, new = _status(detail.get("from")), _status(detail.get("to"))
            current = statuses[-1].status if statuses else None
            if new is None:
                contradictions.append(f"{event.event_id}: '{detail.get('to')}' is no status")
                continue
            if old != current:
                contradictions.append(
                    f"{event.event_id}: changed from '{detail.get('from')}', but the log had "
                    f"'{current.value if current else 'no status'}'"
                )
            elif old is not None and not can_transition(old, new):
                contradictions.append(f"{event.event_id}: '{old.value}' → '{new.value}' is not an allowed change")
            statuses.append(StatusEntry(new, event.timestamp, event.actor))
        elif event.event_type == AWS_CALL:
            changes.append(
                AwsChange(
                    service=str(detail.get("service")),
                    operation=str(detail.get("operation")),
                    at=event.timestamp,
                    actor=event.actor,
                    parameters=dict(detail.get("parameters") or {}),
                    http_status=detail.get("http_status"),
                    request_id=detail.get("request_id"),
                    error=detail.get("error"),
                )
            )
        logged = LoggedEvent(event.event_type, event.timestamp, event.actor, detail)
        if event.event_type in DECISION_EVENTS:
            decisions.append(logged)
        if event.event_type in ERROR_EVENTS:
            errors.append(logged)
        if event.event_type in ROLLBACK_EVENTS:
            rollbacks.append(logged)
    return Replay(
        execution_id=execution_id,
        statuses=tuple(statuses),
        decisions=tuple(decisions),
        aws_changes=tuple(changes),
        errors=tuple(errors),
        rollbacks=tuple(rollbacks),
        contradictions=tuple(contradictions),
    )
