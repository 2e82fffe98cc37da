"""The execution as the API shows it: the record, how far along it is, its steps and its outcome.

The API's own view (beside its models in cost_engine.api_models): the service works on records, and
only the API turns them into what a client reads."""

from __future__ import annotations

from typing import Any

from cost_engine.api_models import HIDDEN_RECORD_FIELDS, STATUS_STEPS
from cost_engine.models import ExecutionRecord, ExecutionResult, ExecutionStatus, RollbackResult
from cost_engine.stores.audit import AuditStore
from cost_engine.transitions import FINAL_STATES

S = ExecutionStatus

# How far along an execution is, for people following it.
PROGRESS: dict[ExecutionStatus, int] = {
    S.PENDING: 0,
    S.SCHEDULED: 0,
    S.VALIDATING: 15,
    S.AWAITING_APPROVAL: 30,
    S.APPROVED: 40,
    S.EXECUTING: 60,
    S.VERIFYING: 85,
    S.WATCHING: 90,
    S.ROLLING_BACK: 50,
}


def status_view(record: ExecutionRecord, audit: AuditStore) -> dict[str, Any]:
    """The execution as the API shows it: the record, progress, steps and any pending approval."""
    view = record.model_dump(mode="json", exclude=set(HIDDEN_RECORD_FIELDS))
    view["progress_percent"] = 100 if record.status in FINAL_STATES else PROGRESS.get(record.status, 0)
    view["pending_approval"] = (
        record.approval.model_dump(mode="json") if record.status == S.AWAITING_APPROVAL and record.approval else None
    )
    # The seed's result summaries, once there is an outcome to summarize.
    view["result"] = (
        ExecutionResult.from_record(record).model_dump(mode="json") if record.status in FINAL_STATES else None
    )
    view["rollback_result"] = (
        RollbackResult(
            execution_id=record.execution_id,
            success=record.status in (S.ROLLED_BACK, S.CANCELLED),
            status=record.status,
            restored=record.rollback or {},
            error_message=record.error_message if record.status == S.ROLLBACK_FAILED else None,
        ).model_dump(mode="json")
        # A cancel while acting ends `cancelled` after a rollback: that rollback is shown too.
        if record.status in (S.ROLLED_BACK, S.ROLLBACK_FAILED)
        or (record.status == S.CANCELLED and record.rollback_executed)
        else None
    )
    # The newest events of the log, without their details (GET /executions/{id}/logs has those). A
    # step's key tells a client following the execution which steps it has already shown.
    steps, earlier = audit.latest_steps(record.execution_id, STATUS_STEPS)
    view["steps"] = [
        {"event": e.event_type, "at": e.timestamp.isoformat(), "actor": e.actor, "key": e.event_key} for e in steps
    ]
    view["earlier_steps"] = earlier
    return view
