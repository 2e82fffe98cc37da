"""Executions whose state machine run ended without the engine's own steps ending them.

A run can end from outside: someone stops it (StopExecution, e.g. in the console), it runs past the
state machine's TimeoutSeconds, or it fails where no Catch applies. Its steps then never write the
execution's outcome, and the record would stay `executing` (say) with nothing driving it, the
resource perhaps half-changed. Step Functions announces each such ending on the account's default
EventBridge bus (`Step Functions Execution Status Change`); a rule sends those of the engine's state
machines here (topology.run_ended_event_pattern).

What is done depends on how far the execution got:
- nothing changed yet (pending … approved): it fails, with the reason;
- the resource may be half-changed (executing, verifying) or was being restored (rolling_back): a new
  rollback run of the same state machine, exactly as a manual rollback starts one, restores it and
  ends the execution `rolled_back` (or `rollback_failed`).

EventBridge delivers at least once, and the API's own cancel stops the run after it has ended the
execution: an event is acted on only while the execution is not final and the run that ended is the
one driving it. Once acted on, the execution is final or driven by a newer run, so a repeat of the
same event finds nothing to do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from cost_engine.audit_trail import acting
from cost_engine.errors import InvalidRequest, NotFound, StatusConflict, cause_message
from cost_engine.eventbridge import parse_event
from cost_engine.models import ExecutionRecord, ExecutionStatus, utc_now
from cost_engine.service import ExecutionService
from cost_engine.stores.executions import TASK_TOKEN_ATTRIBUTE
from cost_engine.topology import RUN_ENDED_STATUSES, STEP_FUNCTIONS_STATUS_CHANGE_DETAIL_TYPE
from cost_engine.transitions import CANCELLABLE_STATES, FINAL_STATES

S = ExecutionStatus

STATE_MACHINE_STOPPED = "state_machine_stopped"
# A run is named after its execution (`exec-` and 32 hex digits), a rollback run gets `-rollback-<n>`.
RUN_NAME = re.compile(r"(?P<execution_id>exec-[0-9a-f]{32})(?:-rollback-[1-9][0-9]*)?")
# Until the resource is backed up and changed (the backup step leaves `approved` first), failing the
# execution is all there is to do: the same states from which a cancel stops it outright.
NOTHING_CHANGED_STATES = CANCELLABLE_STATES
# How often the record may move under a reconciliation (a step of the ended run still in flight
# writes its result) before the event is handed back to Lambda's retries.
MAX_ATTEMPTS = 3


class StateMachineRunEnded(BaseModel):
    """What the engine reads of the `detail` of a Step Functions Execution Status Change event."""

    model_config = ConfigDict(populate_by_name=True)

    execution_arn: str = Field(alias="executionArn", min_length=1)
    state_machine_arn: str = Field(alias="stateMachineArn", min_length=1)
    name: str = Field(min_length=1)
    status: str = Field(min_length=1)
    error: str | None = None
    # Without a Lambda error's stack trace: it goes into the audit log and the error message.
    cause: Annotated[str | None, AfterValidator(lambda cause: cause_message(cause) or None)] = None


class StateMachineStatusChangeEvent(EventBridgeModel):
    detail: StateMachineRunEnded


class MalformedRunEvent(InvalidRequest):
    """The event is not a Step Functions Execution Status Change event the engine can read."""


class Outcome(StrEnum):
    NOT_OURS = "not_ours"  # another state machine's run, or a run that is no engine execution
    SETTLED = "settled"  # the execution is final, or a newer run drives it: nothing to do
    FAILED = "failed"
    ROLLING_BACK = "rolling_back"


@dataclass(frozen=True)
class Reconciliation:
    outcome: Outcome
    execution_id: str | None = None
    status: ExecutionStatus | None = None


def is_run_ended_event(event: Any) -> bool:
    return isinstance(event, dict) and event.get("detail-type") == STEP_FUNCTIONS_STATUS_CHANGE_DETAIL_TYPE


def parse_run_ended(event: Any) -> StateMachineStatusChangeEvent:
    return parse_event(
        StateMachineStatusChangeEvent,
        event,
        STEP_FUNCTIONS_STATUS_CHANGE_DETAIL_TYPE,
        MalformedRunEvent,
        "a Step Functions Execution Status Change event",
    )


def reconcile_run_ended(service: ExecutionService, event: Any) -> Reconciliation:
    """Leave the execution whose run ended final, or rolling back in a new run, with the reason in
    its error_message and audit log; do nothing when the engine has already settled it."""
    parsed = parse_run_ended(event)
    run = parsed.detail
    named = RUN_NAME.fullmatch(run.name)
    if (
        named is None
        or run.status not in RUN_ENDED_STATUSES
        or run.state_machine_arn not in service.ctx.settings.state_machine_arns.values()
    ):
        return Reconciliation(Outcome.NOT_OURS)
    execution_id = named["execution_id"]
    actor = f"event:{parsed.source}"
    logged: Outcome | None = None
    for _ in range(MAX_ATTEMPTS):
        try:
            record = service.ctx.executions.get(execution_id)
        except NotFound:
            return Reconciliation(Outcome.NOT_OURS, execution_id)
        if record.status in FINAL_STATES or service.current_run_arn(record) != run.execution_arn:
            return Reconciliation(Outcome.SETTLED, execution_id, record.status)
        then = Outcome.FAILED if record.status in NOTHING_CHANGED_STATES else Outcome.ROLLING_BACK
        if logged != then:
            # In the log before the status says so, as every outcome: whoever sees the new status
            # finds why. Logged again only if the record moved and the decision changed with it.
            service.ctx.audit.append(
                execution_id,
                STATE_MACHINE_STOPPED,
                actor,
                {
                    "run_status": run.status,
                    "execution_arn": run.execution_arn,
                    "execution_status": record.status.value,
                    "error": run.error,
                    "cause": run.cause,
                    "then": then.value,
                },
            )
            logged = then
        try:
            if then == Outcome.FAILED:
                record = fail_unchanged(service, record, _ended(record, run), actor)
            else:
                reason = rollback_reason(record, _ended(record, run))
                record = service.start_rollback_run(record, actor, {"error_message": reason})
        except StatusConflict:
            continue  # it moved meanwhile: look at where it is now
        return Reconciliation(then, execution_id, record.status)
    raise StatusConflict(f"execution {execution_id} kept changing while its ended run was reconciled: try again")


def _ended(record: ExecutionRecord, run: StateMachineRunEnded) -> str:
    ended = f"the state machine run {run.name} ended {run.status} while the execution was {record.status.value}"
    details = ": ".join(part for part in (run.error, run.cause) if part)
    return f"{ended} ({details})" if details else ended


def fail_unchanged(service: ExecutionService, record: ExecutionRecord, ended: str, actor: str) -> ExecutionRecord:
    """End an execution whose run is over before it changed anything: `failed`, with why (`ended`)."""
    with acting(record.execution_id, actor, service.ctx.audit):
        return service.ctx.executions.transition(
            record.execution_id,
            S.FAILED,
            expected=record.status,
            changes={
                "success": False,
                "completed_at": utc_now(),
                "error_message": f"{ended}, before anything was changed",
            },
            # An approval that nobody waits for any more can no longer be given.
            remove=[TASK_TOKEN_ATTRIBUTE],
        )


def rollback_reason(record: ExecutionRecord, ended: str) -> str:
    """Why an execution whose run is over (`ended`) while it may have half-changed its resource is rolled back."""
    reason = f"{ended}: the resource may be half-changed, so it is rolled back"
    # A rollback that was already under way keeps the reason it began for.
    return f"{record.error_message}; then {reason}" if record.error_message else reason
