"""The safety net: executions left unfinished although no state machine run drives them any more.

A run's own steps write an execution's end, and `cost_engine.reconcile` handles a run that ended on
its own. Both need the store: when DynamoDB fails for longer than the steps' retries (and the
reconciling trigger's), the run ends while the record still says, say, `verifying`, and nothing
would ever finish it. A schedule (topology.SWEEP_INTERVAL_MINUTES, on AWS an EventBridge rule to the
trigger function, locally a thread of the runtime) runs `sweep`:

- it reads the executions that are not final from a sparse index (`unfinished`, no Scan), and for
  each asks Step Functions whether the run that drives it has ended (DescribeExecution);
- one whose run has ended is finished from its audit log: `completed` if the log shows the change
  verified (and finalized, for the types that finalize) with no rollback begun; `failed` if it had
  changed nothing yet (up to `approved`); otherwise a rollback run, as reconciliation starts one,
  which ends it `rolled_back` (or `rollback_failed`, or `cancelled` when a cancel was asked for);
- one that is `approved` while its run still waits on the approval's task token (Step Functions
  could not be reached when it was approved) gets the approval handed over;
- one whose run never started (its start was lost) fails once `START_GRACE` has passed;
- then the free acting slots go to the oldest executions waiting for one (cost_engine.limits): a
  wake-up that could not be sent, or a slot reclaimed from a holder that had finished.

Each decision is a `swept` audit event (actor `engine:sweeper`) written before the status changes,
and every change is the same conditional write the steps use, so a step or a reconciliation acting
at the same moment wins or loses cleanly. An execution the sweep cannot settle now (the store or
Step Functions still failing, or the record moving under it) is left for the next sweep.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from cost_engine.audit_trail import acting
from cost_engine.errors import EngineError
from cost_engine.executors import executor_class
from cost_engine.models import AuditEvent, ExecutionRecord, ExecutionStatus, utc_now
from cost_engine.reconcile import NOTHING_CHANGED_STATES, fail_unchanged, rollback_reason
from cost_engine.service import ExecutionService
from cost_engine.topology import SCHEDULED_EVENT_DETAIL_TYPE, SCHEDULED_EVENT_SOURCE
from cost_engine.transitions import FINAL_STATES

logger = logging.getLogger(__name__)

S = ExecutionStatus

SWEEPER_ACTOR = "engine:sweeper"
SWEPT = "swept"
APPROVAL_DELIVERED = "approval_delivered"
# A record is written just before its first run starts: one this old with no run lost its start.
START_GRACE = timedelta(minutes=2)
# What in the log shows that a rollback has begun: from then on the change is being undone.
ROLLBACK_BEGUN_EVENTS = frozenset({"rollback_requested", "rollback_started", "rollback_action"})


class Decision(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"
    ROLLING_BACK = "rolling_back"
    APPROVAL_DELIVERED = "approval_delivered"


@dataclass
class SweepReport:
    """What one sweep looked at, what it decided per execution, and what it must leave for the next."""

    looked_at: int = 0
    decisions: dict[str, Decision] = field(default_factory=dict)
    left: dict[str, str] = field(default_factory=dict)
    # The waiting executions a free acting slot was handed to.
    slots_handed_over: list[str] = field(default_factory=list)


def is_sweep_event(event: Any) -> bool:
    """The schedule's event (an EventBridge Scheduled Event)."""
    return (
        isinstance(event, dict)
        and event.get("detail-type") == SCHEDULED_EVENT_DETAIL_TYPE
        and event.get("source") == SCHEDULED_EVENT_SOURCE
    )


def sweep(service: ExecutionService) -> SweepReport:
    """Look at every unfinished execution once. A failure to list raises (the invocation fails and
    is retried); a failure with one execution is logged and left for the next sweep."""
    report = SweepReport()
    for execution_id in service.ctx.executions.unfinished_ids():
        report.looked_at += 1
        try:
            decision = sweep_execution(service, execution_id)
        except (ClientError, BotoCoreError, EngineError) as error:
            logger.warning("execution %s left for the next sweep: %s", execution_id, error)
            report.left[execution_id] = str(error)
            continue
        if decision is not None:
            report.decisions[execution_id] = decision
    # Acting slots that a lost wake-up or a reclaimed holder left free go to the oldest waiters.
    try:
        report.slots_handed_over = [w.execution_id for w in service.ctx.limits.hand_over(SWEEPER_ACTOR)]
    except (ClientError, BotoCoreError, EngineError) as error:
        logger.warning("acting slots left for the next sweep to hand over: %s", error)
        report.left["slots"] = str(error)
    return report


def sweep_execution(service: ExecutionService, execution_id: str) -> Decision | None:
    """Finish the execution if no run drives it any more; None when there is nothing to do."""
    record = service.ctx.executions.get(execution_id)
    if record.status in FINAL_STATES:  # the index lags behind the table
        return None
    run = service.describe_current_run(record)
    if run is None:
        if utc_now() - record.created_at < START_GRACE:
            return None  # its start may be on its way
        return _finish(service, record, None, "its state machine run never started")
    if run["status"] == "RUNNING":
        return _deliver_approval(service, record)
    ended = f"the state machine run {run['name']} ended {run['status']} while the execution was {record.status.value}"
    details = ": ".join(str(part) for part in (run.get("error"), run.get("cause")) if part)
    return _finish(service, record, run, f"{ended} ({details})" if details else ended)


def decide(record: ExecutionRecord, events: list[AuditEvent]) -> Decision:
    """What an execution whose run has ended becomes, from its record and its audit log."""
    if record.status in NOTHING_CHANGED_STATES:
        return Decision.FAILED
    if record.status == S.VERIFYING and _verified(record, events):
        return Decision.COMPLETED
    return Decision.ROLLING_BACK


def _verified(record: ExecutionRecord, events: list[AuditEvent]) -> bool:
    """The change was verified and nothing since asked for it to be undone."""
    logged = {event.event_type for event in events}
    passed = any(event.event_type == "verified" and event.detail.get("passed") is True for event in events)
    finalized = not executor_class(record.recommendation_type).finalizes or "finalized" in logged
    undo_asked = bool(record.cancel_requested_by or record.acting_timed_out) or bool(logged & ROLLBACK_BEGUN_EVENTS)
    return passed and finalized and not undo_asked


def _finish(service: ExecutionService, record: ExecutionRecord, run: dict[str, Any] | None, ended: str) -> Decision:
    execution_id = record.execution_id
    then = decide(record, service.ctx.audit.events(execution_id))
    # In the log before the status says so, as every outcome: whoever sees the new status finds why.
    service.ctx.audit.append(
        execution_id,
        SWEPT,
        SWEEPER_ACTOR,
        {
            "run_status": run["status"] if run else None,
            "execution_arn": run["executionArn"] if run else None,
            "execution_status": record.status.value,
            "reason": ended,
            "then": then.value,
        },
    )
    if then == Decision.FAILED:
        fail_unchanged(service, record, ended, SWEEPER_ACTOR)
    elif then == Decision.COMPLETED:
        with acting(execution_id, SWEEPER_ACTOR, service.ctx.audit):
            # The savings are not measured here (the sweeper holds no permission on the resource).
            service.ctx.executions.transition(
                execution_id,
                S.COMPLETED,
                expected=S.VERIFYING,
                changes={"success": True, "completed_at": utc_now(), "current_step": SWEPT},
            )
    else:
        service.start_rollback_run(record, SWEEPER_ACTOR, {"error_message": rollback_reason(record, ended)})
    return then


def _deliver_approval(service: ExecutionService, record: ExecutionRecord) -> Decision | None:
    """An approval whose hand-over to the waiting run failed is handed over now."""
    if record.status != S.APPROVED:
        return None
    token = service.ctx.executions.task_token(record.execution_id)
    if token is None or not service.deliver_approval(record, token, SWEEPER_ACTOR):
        return None
    service.ctx.audit.append(record.execution_id, APPROVAL_DELIVERED, SWEEPER_ACTOR, {})
    return Decision.APPROVAL_DELIVERED
