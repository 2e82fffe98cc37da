"""What the API does: register recommendations, start executions and act on them.

The state machines do the work; this module starts them, answers questions about them and carries
people's decisions (approve, reject, cancel, rollback) to them, each as a conditional write first.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError
from pydantic import ValidationError

from cost_engine.api_models import HIDDEN_RECORD_FIELDS
from cost_engine.approval_links import LinkCheck
from cost_engine.audit_trail import acting
from cost_engine.aws import error_code
from cost_engine.context import EngineContext
from cost_engine.errors import (
    ApprovalRefused,
    Conflict,
    DeniedByBusinessRules,
    InvalidParameters,
    InvalidRequest,
    NotFound,
    PlanChanged,
    RecommendationStale,
    StatusConflict,
    UnsupportedType,
    cause_message,
    validation_problems,
)
from cost_engine.executors import executor_class
from cost_engine.models import (
    ApprovalDecision,
    AuditEvent,
    ExecutionRecord,
    ExecutionRequest,
    ExecutionResult,
    ExecutionStatus,
    Recommendation,
    RollbackResult,
    new_execution_id,
    utc_now,
)
from cost_engine.prechecks import request_refusals, staleness
from cost_engine.stores.executions import TASK_TOKEN_ATTRIBUTE, Page
from cost_engine.transitions import (
    CANCEL_BY_ROLLBACK_STATES,
    CANCELLABLE_STATES,
    FINAL_STATES,
    ROLLBACK_REQUESTABLE_STATES,
)

S = ExecutionStatus
MAX_SCHEDULE_AHEAD = timedelta(days=30)
# An execution whose run ended in these may have half-changed its resource: a rollback run restores it.
STRANDED_ROLLBACK_STATES = frozenset({S.EXECUTING, S.VERIFYING, S.ROLLING_BACK})


# Step Functions' answers to a task token whose wait is over (answered, timed out, or its run ended).
TASK_WAIT_OVER_ERRORS = frozenset({"TaskTimedOut", "TaskDoesNotExist", "InvalidToken"})


def execution_id_for_key(idempotency_key: str) -> str:
    """The execution id a request with this idempotency key gets, the same on every repeat."""
    return "exec-" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]


def _execution_arn(state_machine_arn: str, name: str) -> str:
    return state_machine_arn.replace(":stateMachine:", ":execution:", 1) + f":{name}"


def rollback_run_name(execution_id: str, run: int) -> str:
    """The name of an execution's `run`th rollback run (its first run is named after the execution)."""
    return f"{execution_id}-rollback-{run}"


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def _history_step(event: dict[str, Any]) -> dict[str, Any] | None:
    """One Step Functions history event as a line of the execution's history, or None to leave out."""
    kind = str(event["type"])
    at = event["timestamp"].isoformat() if hasattr(event["timestamp"], "isoformat") else str(event["timestamp"])
    details: dict[str, Any] = next((v for k, v in event.items() if k.endswith("EventDetails")), {}) or {}
    if kind.endswith("StateEntered"):
        return {"at": at, "event": "state_entered", "state": details.get("name")}
    if kind == "TaskSucceeded":
        try:
            result = json.loads(details.get("output") or "null")
        except ValueError:
            result = None
        return {
            "at": at,
            "event": "step_result",
            "result": result.get("Payload") if isinstance(result, dict) else result,
        }
    if kind in ("TaskFailed", "TaskTimedOut", "ExecutionFailed", "ExecutionAborted", "ExecutionTimedOut"):
        return {"at": at, "event": kind, "error": details.get("error"), "cause": cause_message(details.get("cause"))}
    if kind == "ExecutionSucceeded":
        return {"at": at, "event": kind}
    return None


@dataclass(frozen=True)
class LinkOutcome:
    """What an approval link leads to: the HTTP status, a title and message for the page, and the
    execution (when there is one to show). `decidable` is true only while a decision can be made."""

    status_code: int
    title: str
    message: str
    record: ExecutionRecord | None = None
    decidable: bool = False


# How far along an execution is, for people following it.
PROGRESS: dict[ExecutionStatus, int] = {
    S.PENDING: 0,
    S.SCHEDULED: 0,
    S.VALIDATING: 15,
    S.AWAITING_APPROVAL: 30,
    S.APPROVED: 40,
    S.EXECUTING: 60,
    S.VERIFYING: 85,
    S.ROLLING_BACK: 50,
}


class ExecutionService:
    def __init__(self, context: EngineContext) -> None:
        self.ctx = context

    @property
    def _sfn(self) -> Any:
        return self.ctx.clients.stepfunctions

    # -- recommendations -------------------------------------------------------------------------

    def register_recommendation(self, recommendation: Recommendation) -> tuple[Recommendation, bool]:
        executor = executor_class(recommendation.type)  # refuses types the engine cannot carry out yet
        try:
            executor.parameters_model.model_validate(recommendation.parameters)
        except ValidationError as error:
            problems = validation_problems(error.errors(), prefix="parameters.")
            raise InvalidParameters(f"the parameters do not fit {recommendation.type.value}: {problems}") from None
        return self.ctx.recommendations.register(recommendation)

    def get_recommendation(self, recommendation_id: str) -> Recommendation:
        return self.ctx.recommendations.get(recommendation_id)

    # -- executions ------------------------------------------------------------------------------

    def execute_once(
        self, request: ExecutionRequest, actor: str, idempotency_key: str | None = None
    ) -> tuple[ExecutionRecord, bool]:
        """Start an execution; returns (record, created). With an idempotency key the execution id
        derives from the key, so a repeat of the same request (a retried call, an event delivered
        twice) finds the first execution and starts nothing new; the same key with a different
        request is refused."""
        recommendation = self.ctx.recommendations.get(request.recommendation_id)
        executor_class(recommendation.type)  # refuses types the engine cannot carry out
        state_machine_arn = self.ctx.settings.state_machine_arns.get(recommendation.type.value)
        if not state_machine_arn:
            raise UnsupportedType(f"no state machine is deployed for '{recommendation.type.value}'")
        fingerprint = request.model_dump_json()
        # Keys are the customer's own: two customers choosing the same key never meet.
        keyed_id = execution_id_for_key(f"{recommendation.customer_id}/{idempotency_key}") if idempotency_key else None
        if idempotency_key and keyed_id:
            existing = self._existing_for_key(keyed_id, idempotency_key, fingerprint)
            if existing is not None:
                return self._resume(existing, state_machine_arn), False
        # Refused on the recommendation alone, before anything is written: the validate step checks
        # these again (with the resource's tags) when the execution runs, which may be later.
        settings = self.ctx.settings
        if stale := staleness(recommendation, timedelta(days=settings.max_recommendation_age_days), utc_now()):
            raise RecommendationStale(stale)
        if refusals := request_refusals(
            settings.business_rules.for_customer(recommendation.customer_id), recommendation
        ):
            raise DeniedByBusinessRules("; ".join(refusals))
        if request.scheduled_time is not None:
            now = utc_now()
            if request.scheduled_time <= now:
                raise InvalidRequest("scheduled_time is in the past: give a future time, or leave it out to run now")
            if request.scheduled_time > now + MAX_SCHEDULE_AHEAD:
                raise InvalidRequest(
                    f"scheduled_time is more than {MAX_SCHEDULE_AHEAD.days} days ahead: give a time before "
                    f"{_iso(now + MAX_SCHEDULE_AHEAD)}"
                )

        record = ExecutionRecord(
            execution_id=keyed_id or new_execution_id(),
            recommendation_id=recommendation.recommendation_id,
            customer_id=recommendation.customer_id,
            recommendation_type=recommendation.type,
            resource_id=recommendation.resource_id,
            region=recommendation.region,
            account_id=recommendation.account_id,
            status=S.SCHEDULED if request.scheduled_time else S.PENDING,
            requested_by=actor,
            dry_run=request.dry_run,
            auto_approve_requested=request.auto_approve,
            approval_timeout_seconds=request.approval_timeout_seconds or self.ctx.settings.approval_timeout_seconds,
            estimated_monthly_savings=recommendation.estimated_monthly_savings,
            scheduled_time=request.scheduled_time,
            idempotency_key=idempotency_key,
            request_fingerprint=fingerprint if idempotency_key else None,
        )
        if not record.dry_run:
            # One execution per resource (a dry run changes nothing and takes no lock). Held at most
            # as long as this execution can run: its wait, its approval and its acting phase.
            settings = self.ctx.settings
            wait = (request.scheduled_time - utc_now()) if request.scheduled_time else timedelta(0)
            lease = wait + timedelta(seconds=record.approval_timeout_seconds + 2 * settings.max_acting_seconds)
            self.ctx.limits.lock_resource(recommendation, record.execution_id, lease)
        try:
            self.ctx.executions.create(record)
        except Conflict:
            if not record.dry_run:
                self.ctx.limits.release_resource(record, cooldown=False)
            if idempotency_key is None or keyed_id is None:
                raise
            # The same key at the same moment: the other request created it.
            existing = self._existing_for_key(keyed_id, idempotency_key, fingerprint)
            if existing is None:
                raise
            return self._resume(existing, state_machine_arn), False
        self.ctx.audit.append(
            record.execution_id,
            "execution_requested",
            actor,
            {**request.model_dump(mode="json"), **({"idempotency_key": idempotency_key} if idempotency_key else {})},
        )
        if record.status == S.SCHEDULED:
            self.ctx.audit.append(
                record.execution_id, "scheduled", actor, {"scheduled_time": _iso(record.scheduled_time)}
            )
        return self._resume(record, state_machine_arn), True

    def _existing_for_key(self, execution_id: str, idempotency_key: str, fingerprint: str) -> ExecutionRecord | None:
        try:
            existing = self.ctx.executions.get(execution_id)
        except NotFound:
            return None
        if existing.request_fingerprint != fingerprint:
            raise Conflict(
                f"idempotency key '{idempotency_key}' was already used for a different request "
                f"(execution {existing.execution_id}): send the same request again, or use a new key"
            )
        return existing

    def _resume(self, record: ExecutionRecord, state_machine_arn: str) -> ExecutionRecord:
        """Start the record's state machine unless it already runs. Its run is named after the
        execution and its input depends only on the record, so starting it twice is harmless."""
        if record.state_machine_execution_arn or record.status not in (S.PENDING, S.SCHEDULED):
            return record
        state_input: dict[str, Any] = {
            "execution_id": record.execution_id,
            "mode": "execute",
            "dry_run": record.dry_run,
            "poll_seconds": self.ctx.settings.poll_interval_seconds,
            "approval_timeout_seconds": record.approval_timeout_seconds,
            "error": None,
            # Always present (null when unset) so the state machine's Choice never meets a missing path.
            "scheduled_time": _iso(record.scheduled_time),
        }
        arn = self._start(state_machine_arn, record.execution_id, state_input, record, record.status)
        # The state machine may already have moved on: record its ARN whatever the status is now.
        return self.ctx.executions.update(
            record.execution_id, expected=set(ExecutionStatus), changes={"state_machine_execution_arn": arn}
        )

    def _start(
        self,
        state_machine_arn: str,
        name: str,
        state_input: dict[str, Any],
        record: ExecutionRecord,
        fail_from: ExecutionStatus,
    ) -> str:
        try:
            started = self._sfn.start_execution(
                stateMachineArn=state_machine_arn, name=name, input=json.dumps(state_input)
            )
        except ClientError as error:
            if error_code(error) == "ExecutionAlreadyExists":
                # A repeat of a start that went through (an idempotent retry): that run is ours.
                return _execution_arn(state_machine_arn, name)
            message = f"the state machine could not be started: {error}"
            target = S.FAILED if fail_from != S.ROLLING_BACK else S.ROLLBACK_FAILED
            self.ctx.executions.transition(
                record.execution_id, target, expected=fail_from, changes={"error_message": message}
            )
            self.ctx.audit.append(record.execution_id, "start_failed", "api", {"error": message})
            raise
        return str(started["executionArn"])

    def get(self, execution_id: str) -> ExecutionRecord:
        return self.ctx.executions.get(execution_id)

    def list_executions(self, customer_id: str, status: ExecutionStatus | None, limit: int, cursor: str | None) -> Page:
        return self.ctx.executions.list_by_customer(customer_id, status, limit, cursor)

    def logs(self, execution_id: str) -> list[AuditEvent]:
        self.ctx.executions.get(execution_id)  # 404 for an unknown execution
        return self.ctx.audit.events(execution_id)

    def history(self, execution_id: str) -> list[dict[str, Any]]:
        """The step-by-step history of the execution's state machine runs (the execution, then each
        manual rollback run), oldest first: each state entered, each step's result or error, and how
        each run ended. Task parameters are left out: the approval step's carry the task token."""
        record = self.ctx.executions.get(execution_id)
        steps: list[dict[str, Any]] = []
        for run, arn in enumerate(self._run_arns(record)):
            try:
                for event in self._history_events(arn):
                    step = _history_step(event)
                    if step is not None:
                        steps.append({"run": "execute" if run == 0 else f"rollback-{run}", **step})
            except ClientError as error:
                steps.append({"run": arn.rsplit(":", 1)[1], "event": "history_unavailable", "error": str(error)})
        return steps

    def _run_arns(self, record: ExecutionRecord) -> list[str]:
        """The ARNs of the execution's state machine runs, oldest first: its run, then each rollback run."""
        if not record.state_machine_execution_arn:
            return []
        prefix = record.state_machine_execution_arn.rsplit(":", 1)[0]
        return [record.state_machine_execution_arn] + [
            f"{prefix}:{rollback_run_name(record.execution_id, n)}" for n in range(1, record.rollback_runs + 1)
        ]

    def current_run_arn(self, record: ExecutionRecord) -> str | None:
        """The state machine run that drives the execution now (its latest), None before it has one."""
        runs = self._run_arns(record)
        return runs[-1] if runs else None

    def describe_current_run(self, record: ExecutionRecord) -> dict[str, Any] | None:
        """Step Functions' DescribeExecution of the run that drives the execution (`status`, `error`,
        `cause`…), or None when there is no such run. A first run whose ARN was never recorded (the
        store failed just after the start) is found by its name, the execution id."""
        arn = self.current_run_arn(record)
        if arn is None:
            state_machine_arn = self.ctx.settings.state_machine_arns.get(record.recommendation_type.value)
            if not state_machine_arn:
                return None
            arn = _execution_arn(state_machine_arn, record.execution_id)
        try:
            return dict(self._sfn.describe_execution(executionArn=arn))
        except ClientError as error:
            if error_code(error) == "ExecutionDoesNotExist":
                return None
            raise

    def is_stranded(self, record: ExecutionRecord) -> bool:
        """Not final, yet no state machine run drives it any more: nothing will end it but the sweeper
        (cost_engine.sweeper) or a person's rollback."""
        if record.status in FINAL_STATES:
            return False
        run = self.describe_current_run(record)
        return run is not None and run["status"] != "RUNNING"

    def _history_events(self, arn: str) -> list[dict[str, Any]]:
        pages = self._sfn.get_paginator("get_execution_history").paginate(
            executionArn=arn, PaginationConfig={"PageSize": 1000}
        )
        return [event for page in pages for event in page["events"]]

    def cancel(self, execution_id: str, actor: str) -> ExecutionRecord:
        record = self.ctx.executions.get(execution_id)
        if record.status in CANCEL_BY_ROLLBACK_STATES:
            return self._request_cancel(record, actor)
        if record.status not in CANCELLABLE_STATES:
            raise Conflict(
                f"execution {execution_id} is '{record.status.value}' and cannot be cancelled: "
                + (
                    "it has finished"
                    + (
                        "; ask for a rollback to undo its change"
                        if record.status in ROLLBACK_REQUESTABLE_STATES
                        else ""
                    )
                    if record.status in FINAL_STATES
                    else "it is already rolling back"
                )
            )
        try:
            with acting(execution_id, actor, self.ctx.audit):
                # Any cancellable status, not only the one read: the state machine moves it on meanwhile
                # (pending -> validating -> awaiting_approval) and each of those can still be cancelled.
                record = self.ctx.executions.transition(
                    execution_id,
                    S.CANCELLED,
                    expected=CANCELLABLE_STATES,
                    changes={"success": False, "completed_at": utc_now(), "error_message": f"cancelled by {actor}"},
                    remove=[TASK_TOKEN_ATTRIBUTE],
                )
        except StatusConflict:
            # It began acting (a cancel is then a request to its steps) or ended meanwhile: answer for now.
            return self.cancel(execution_id, actor)
        if record.state_machine_execution_arn:
            try:
                self._sfn.stop_execution(
                    executionArn=record.state_machine_execution_arn, error="Cancelled", cause=f"cancelled by {actor}"
                )
            except ClientError as error:
                self.ctx.audit.append(execution_id, "stop_failed", actor, {"error": str(error)})
        self.ctx.audit.append(execution_id, "cancelled", actor, {})
        return record

    def _request_cancel(self, record: ExecutionRecord, actor: str) -> ExecutionRecord:
        """A cancel while the resource is being changed. Stopping the state machine here could cut
        a step off mid-call and leave the change half-made, so the request is recorded instead; the
        next acting step sees it and fails, and the state machine's own rollback undoes the change
        before the execution ends `cancelled`. When no run drives it any more, nobody would see the
        request: a rollback run is started instead, which ends it `cancelled` all the same."""
        if self.is_stranded(record):
            return self.start_rollback_run(
                record,
                actor,
                {"cancel_requested_by": actor, "error_message": f"cancelled by {actor} after its run had ended"},
            )
        if record.cancel_requested_by:
            return record
        try:
            record = self.ctx.executions.update(
                record.execution_id, expected=CANCEL_BY_ROLLBACK_STATES, changes={"cancel_requested_by": actor}
            )
        except StatusConflict:
            # It moved on meanwhile (finished, or began rolling back): answer for where it is now.
            current = self.ctx.executions.get(record.execution_id)
            if current.status in CANCEL_BY_ROLLBACK_STATES:
                raise
            return self.cancel(record.execution_id, actor)
        self.ctx.audit.append(
            record.execution_id, "cancel_requested", actor, {"status": record.status.value, "then": "rollback"}
        )
        return record

    def rollback(self, execution_id: str, actor: str) -> ExecutionRecord:
        record = self.ctx.executions.get(execution_id)
        if record.dry_run:
            raise Conflict(
                f"execution {execution_id} was a dry run: it changed nothing, so there is nothing to roll back"
            )
        if record.status in STRANDED_ROLLBACK_STATES and self.is_stranded(record):
            # Its run ended mid-change and nothing will finish it: the same rollback run the engine's
            # own reconciliation starts, whether or not the record got to show the backup.
            return self.start_rollback_run(
                record,
                actor,
                {"error_message": f"rolled back by {actor}: its run had ended while it was {record.status.value}"},
            )
        if record.status not in ROLLBACK_REQUESTABLE_STATES:
            raise Conflict(
                f"execution {execution_id} is '{record.status.value}': a rollback can be asked for once it is "
                + ", ".join(sorted(s.value for s in ROLLBACK_REQUESTABLE_STATES))
                + "; or when it is "
                + ", ".join(sorted(s.value for s in STRANDED_ROLLBACK_STATES))
                + " and its state machine run has ended without finishing it"
            )
        if not record.rollback_available:
            raise Conflict(f"execution {execution_id} has no backup to roll back from: nothing was changed")
        # The conditional write makes a second click a 409 instead of a second rollback.
        return self.start_rollback_run(record, actor)

    def start_rollback_run(
        self, record: ExecutionRecord, actor: str, changes: dict[str, Any] | None = None
    ) -> ExecutionRecord:
        """Move the execution to rolling_back, with `changes`, and start a new rollback run of its
        state machine: the type's own rollback steps restore the resource and end the execution.

        The status change is a conditional write on the status `record` shows, so of two requests
        only one starts a run (the other gets `StatusConflict`). An execution already rolling back
        whose run ended without finishing stays rolling_back, and the new run takes over."""
        state_machine_arn = self.ctx.settings.state_machine_arns.get(record.recommendation_type.value)
        if not state_machine_arn:
            raise UnsupportedType(f"no state machine is deployed for '{record.recommendation_type.value}'")
        run = record.rollback_runs + 1
        values = {**(changes or {}), "rollback_runs": run, "current_step": "rollback_requested"}
        with acting(record.execution_id, actor, self.ctx.audit):
            if record.status == S.ROLLING_BACK:
                record = self.ctx.executions.update(record.execution_id, expected=S.ROLLING_BACK, changes=values)
            else:
                record = self.ctx.executions.transition(
                    record.execution_id, S.ROLLING_BACK, expected=record.status, changes=values
                )
        self.ctx.audit.append(record.execution_id, "rollback_requested", actor, {"run": run})
        state_input = {
            "execution_id": record.execution_id,
            "mode": "rollback",
            "poll_seconds": self.ctx.settings.poll_interval_seconds,
            "error": None,
        }
        name = rollback_run_name(record.execution_id, run)
        self._start(state_machine_arn, name, state_input, record, S.ROLLING_BACK)
        return record

    def decide(
        self,
        execution_id: str,
        decision: ApprovalDecision,
        approve: bool,
        actor: str,
        via: str = "api",
        source: str | None = None,
    ) -> ExecutionRecord:
        """Approve or reject a waiting execution. The first decision wins: the write is conditional
        on the status still being awaiting_approval, so a second (or concurrent) one is a 409.

        `actor` is who decided as the engine knows it (the authenticated caller, or the link), and is
        what the record keeps as the approver; the decision's name is kept beside it, for display."""
        record = self.ctx.executions.get(execution_id)
        if record.status != S.AWAITING_APPROVAL:
            raise Conflict(
                f"execution {execution_id} is '{record.status.value}', not awaiting approval: "
                "the decision changes nothing"
            )
        approved_plan = record.approval.plan_hash if record.approval else None
        if decision.plan_hash is not None and decision.plan_hash != approved_plan:
            raise PlanChanged(
                f"execution {execution_id} waits for a decision on plan {approved_plan}, not on {decision.plan_hash}: "
                "read the execution again and decide on the plan it shows"
            )
        token = self.ctx.executions.task_token(execution_id)
        now = utc_now()
        approval = record.approval.model_copy() if record.approval else None
        if approval is not None:
            approval.decided_by = actor
            approval.approver_name = decision.approver
            approval.decided_at = now
            approval.decision = "approved" if approve else "rejected"
            approval.decided_via = via
            approval.comment = decision.comment
        changes: dict[str, Any] = {"approval": approval}
        self._before_decision(record, decision, approve, actor)
        if not approve:
            changes |= {
                "success": False,
                "completed_at": now,
                "error_message": f"rejected by {decision.approver} ({actor})"
                + (f": {decision.comment}" if decision.comment else ""),
            }
        with acting(execution_id, f"approver:{actor}", self.ctx.audit):
            record = self.ctx.executions.transition(
                execution_id,
                S.APPROVED if approve else S.REJECTED,
                expected=S.AWAITING_APPROVAL,
                changes=changes,
                # An approval keeps the token until the run has it (see `deliver_approval`).
                remove=[] if approve else [TASK_TOKEN_ATTRIBUTE],
            )
        self.ctx.audit.append(
            execution_id,
            "approved" if approve else "rejected",
            f"approver:{actor}",
            {
                "comment": decision.comment,
                "via": via,
                "name": decision.approver,
                "plan_hash": approved_plan,
                **({"source": source} if source else {}),
            },
        )
        if token:
            if approve:
                self.deliver_approval(record, token, actor)
            else:
                self._sfn.send_task_failure(taskToken=token, error="Rejected", cause=f"rejected by {actor}")
        return record

    def _before_decision(self, record: ExecutionRecord, decision: ApprovalDecision, approve: bool, actor: str) -> None:
        """The type's own say before an approval is written (e.g. a limit on what purchases commit):
        ApprovalRefused leaves the execution waiting, and the log says who was refused and why."""
        if not approve:
            return
        recommendation = self.ctx.recommendations.get(record.recommendation_id)
        try:
            self.ctx.executor_for(recommendation).before_approval(recommendation, record)
        except ApprovalRefused as refused:
            self.ctx.audit.append(
                record.execution_id,
                "approval_refused",
                f"approver:{actor}",
                {"error": refused.code.value, "reason": refused.message},
            )
            raise

    def deliver_approval(self, record: ExecutionRecord, token: str, actor: str) -> bool:
        """Hand an approval to the run waiting on `token`, then forget the token. When Step Functions
        cannot be reached the approval stands and the token is kept: the sweeper hands it over later
        (cost_engine.sweeper), so the run never waits on a decision already made. True if this call
        handed it over; a token whose wait was already over is forgotten too."""
        approver = record.approval.decided_by if record.approval else None
        delivered = True
        try:
            self._sfn.send_task_success(taskToken=token, output=json.dumps({"approved_by": approver}))
        except ClientError as error:
            if error_code(error) not in TASK_WAIT_OVER_ERRORS:
                self.ctx.audit.append(
                    record.execution_id, "approval_delivery_failed", actor, {"error": str(error), "then": "retry"}
                )
                return False
            delivered = False
        self.ctx.executions.clear_task_token(record.execution_id)
        return delivered

    # -- approval links (the emailed page) ---------------------------------------------------------

    def open_link(self, approval_id: str, expires: str | None, signature: str | None) -> LinkOutcome:
        """What the approval page shows for a link. Reads only: mail scanners open every link."""
        if self.ctx.links is None:
            return LinkOutcome(404, "Approval links are off", "This deployment has no approval link key; use the API.")
        check = self.ctx.links.check(approval_id, expires, signature)
        if check == LinkCheck.TAMPERED:
            return LinkOutcome(
                403,
                "This link is not valid",
                "The link was changed or cut short: its signature does not match. Open the link from the email "
                "exactly as it was sent. Nothing was changed.",
            )
        if check == LinkCheck.EXPIRED:
            return LinkOutcome(
                410,
                "This link has expired",
                "The deadline for this approval has passed; the execution expired without changing anything. "
                "Ask for a new execution if the change is still wanted.",
            )
        record = self.ctx.executions.find_by_approval(approval_id)
        if record is None:
            return LinkOutcome(
                404,
                "No such approval",
                "No execution waits for this link: it may have been replaced by a newer request. Nothing was changed.",
            )
        if record.status != S.AWAITING_APPROVAL:
            approval = record.approval
            if approval and approval.decision:
                message = (
                    f"This execution was already {approval.decision} by {approval.approver_name or approval.decided_by}"
                    + (f" at {approval.decided_at:%Y-%m-%d %H:%M:%S UTC}" if approval.decided_at else "")
                    + f". It is now '{record.status.value}'. Your click changed nothing."
                )
            else:
                message = f"This execution is '{record.status.value}' and no longer waits for a decision."
            return LinkOutcome(409, "Already decided", message, record)
        return LinkOutcome(200, "Approval needed", "", record, decidable=True)

    def decide_by_link(
        self,
        approval_id: str,
        expires: str | None,
        signature: str | None,
        decision: ApprovalDecision,
        approve: bool,
        source: str,
    ) -> LinkOutcome:
        outcome = self.open_link(approval_id, expires, signature)
        if not outcome.decidable or outcome.record is None:
            return outcome
        try:
            # The link is a capability: the engine knows only that whoever holds it decided.
            record = self.decide(
                outcome.record.execution_id, decision, approve, actor=f"link:{approval_id}", via="link", source=source
            )
        except PlanChanged as changed:
            return LinkOutcome(409, "The plan changed", changed.message + ". Nothing was decided.", outcome.record)
        except ApprovalRefused as refused:
            return LinkOutcome(409, "Not approved", refused.message, outcome.record)
        except Conflict:
            # Someone decided between the page's read and this write: show what won.
            return self.open_link(approval_id, expires, signature)
        if approve:
            return LinkOutcome(
                200,
                "Approved",
                f"Thank you, {decision.approver}. The execution goes ahead: it backs up, acts, verifies and "
                "rolls back by itself if anything fails.",
                record,
            )
        return LinkOutcome(
            200, "Rejected", f"Thank you, {decision.approver}. The execution was rejected; nothing was changed.", record
        )

    def status_view(self, record: ExecutionRecord) -> dict[str, Any]:
        """The execution as the API shows it: the record, progress, steps and any pending approval."""
        view = record.model_dump(mode="json", exclude=set(HIDDEN_RECORD_FIELDS))
        view["progress_percent"] = 100 if record.status in FINAL_STATES else PROGRESS.get(record.status, 0)
        view["pending_approval"] = (
            record.approval.model_dump(mode="json")
            if record.status == S.AWAITING_APPROVAL and record.approval
            else None
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
        view["steps"] = [
            {"event": e.event_type, "at": e.timestamp.isoformat(), "actor": e.actor}
            for e in self.ctx.audit.events(record.execution_id)
        ]
        return view
