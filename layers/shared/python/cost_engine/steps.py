"""The steps of the common state machine spine, as the executor functions run them.

Each step loads the execution record, does its piece of work through the type's executor, records
the result with a conditional write and appends an audit event. The record in DynamoDB is the
source of truth: the state machine only carries the execution id and its control flags.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from enum import StrEnum
from typing import Any

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from pydantic import BaseModel

from cost_engine.approval_links import new_approval_id
from cost_engine.approval_policy import decide
from cost_engine.audit_trail import acting
from cost_engine.aws import error_code, is_transient
from cost_engine.context import EngineContext
from cost_engine.errors import (
    ActionFailed,
    CancelRequested,
    Conflict,
    GuardrailBreached,
    RefusedAtAction,
    StatusConflict,
    TransientError,
    UnsupportedType,
    cause_message,
)
from cost_engine.executors.base import AnyExecutor
from cost_engine.guardrails import Breach, alarm_breaches, threshold_breaches, watch_waits
from cost_engine.limits import ActingTimeLimitExceeded
from cost_engine.models import (
    ApprovalState,
    ExecutionRecord,
    ExecutionStatus,
    GuardrailSpec,
    MetricThreshold,
    Recommendation,
    ValidationResult,
    utc_now,
)
from cost_engine.prechecks import PrecheckResult, run_prechecks
from cost_engine.stores.executions import TASK_TOKEN_ATTRIBUTE
from cost_engine.transitions import ACTING_STATES, CANCEL_BY_ROLLBACK_STATES, FINAL_STATES, ROLLBACK_ON_FAILURE_STATES

S = ExecutionStatus
# Called as each phase of a task begins ("before") and ends without error ("after"), with the
# phase's name and the execution id. The local runtime's fault injector registers one, to fail or
# hold a task at one of its phases as it does at a whole task; on AWS nothing does.
PhaseCheckpoint = Callable[[str, str, str], None]
phase_checkpoints: list[PhaseCheckpoint] = []


class Step(StrEnum):
    """The tasks of the spine: what a state machine asks the executor function to do."""

    PREPARE = "prepare"
    REQUEST_APPROVAL = "request_approval"
    EXPIRE = "expire"
    ACQUIRE_SLOT = "acquire_slot"
    BACKUP = "backup"
    CHECK_BACKUP = "check_backup"
    ACT = "act"
    CHECK_ACTION = "check_action"
    FINISH = "finish"
    CHECK_GUARDRAILS = "check_guardrails"
    ROLLBACK = "rollback"
    CHECK_ROLLBACK = "check_rollback"
    RECORD_ROLLBACK = "record_rollback"
    RECORD_FAILURE = "record_failure"
    RECORD_ROLLBACK_FAILURE = "record_rollback_failure"


class Phase(StrEnum):
    """The pieces of work that a task does one after another, each logged as its own actor
    (`state-machine:<phase>`): folded into fewer tasks, so that an execution costs fewer state
    transitions, the audit log still says which piece did what."""

    VALIDATE = "validate"
    PLAN = "plan"
    AUTO_APPROVE = "auto_approve"
    VERIFY = "verify"
    RECORD = "record"


# The task each phase is done in.
TASK_OF_PHASE: dict[Phase, Step] = {
    Phase.VALIDATE: Step.PREPARE,
    Phase.PLAN: Step.PREPARE,
    Phase.AUTO_APPROVE: Step.PREPARE,
    Phase.VERIFY: Step.FINISH,
    Phase.RECORD: Step.FINISH,
}


# What Finish and a watch's last check answer: the execution is complete, nothing more to wait for.
WATCH_OVER: dict[str, Any] = {"done": True, "wait_seconds": 0, "checks": 0}


class Prepared(StrEnum):
    """Where Prepare sends the execution (the spine's PrepareOutcome)."""

    ROLLBACK = "rollback"
    WAIT = "wait"
    INVALID = "invalid"
    DRY_RUN = "dry_run"
    ASK_APPROVERS = "ask_approvers"
    APPROVED = "approved"


class StepRequest(BaseModel):
    step: Step
    execution_id: str
    task_token: str | None = None
    # What the run was started for (Prepare's answer for a manual rollback's run is to go to Rollback).
    mode: str | None = None
    # How many times AcquireSlot asked before (its wait timed out each time: $$.State.RetryCount).
    asked_before: int = 0
    # The acting slot AcquireSlot was given (Backup records it).
    slot: int | None = None
    # How many guardrail checks the watch made before this one (the state machine carries the count).
    checks_before: int = 0
    # What a Catch hands on: {"Error": ..., "Cause": ...}
    error: dict[str, Any] | None = None


def error_message(error: dict[str, Any] | None) -> str:
    """The readable message of a caught Step Functions error (a Lambda error's Cause is JSON)."""
    if not error:
        return "unknown error"
    name = str(error.get("Error", "Error"))
    cause = cause_message(error.get("Cause"))
    return f"{name}: {cause}" if cause else name


def approval_message(record: ExecutionRecord, approval: ApprovalState, link: str | None) -> str:
    """The approvers' email: what will be done, why a person is asked, and where to decide."""
    plan = record.plan
    savings = plan.estimated_monthly_savings if plan else record.estimated_monthly_savings
    lines = [
        "An execution of the Cost Execution Engine waits for your approval.",
        "",
        f"What:       {plan.summary if plan else record.recommendation_type.value}",
        f"Resource:   {record.resource_id} ({record.region}), customer {record.customer_id}",
        f"Risk:       {approval.risk_level.value if approval.risk_level else 'unknown'}"
        + (f" ({approval.reason})" if approval.reason else ""),
        f"Savings:    {f'${savings:,.2f}/month (estimated)' if savings is not None else 'not estimated'}",
    ]
    if plan and plan.one_time_cost:
        lines.append(f"Costs:      ${plan.one_time_cost:,.2f} once")
    if plan:
        lines.append(
            f"Rollback:   {plan.rollback_plan.rollback_steps[0] if plan.rollback_plan.rollback_steps else '-'}"
        )
    lines += [f"Decide by:  {approval.deadline.strftime('%Y-%m-%d %H:%M UTC')}", ""]
    if link:
        lines += [
            "Review the plan and approve or reject it here:",
            link,
            "",
            "Opening the link changes nothing; only the Approve or Reject button on the page decides. "
            "The link stops working after the first decision or at the deadline.",
        ]
    else:
        lines.append(
            f"Approve or reject with POST /executions/{record.execution_id}/approve or /reject on the engine's API."
        )
    lines += ["", f"Execution {record.execution_id}, recommendation {record.recommendation_id}."]
    return "\n".join(lines)


class StepRunner:
    def __init__(self, context: EngineContext) -> None:
        self.ctx = context
        self._steps: dict[Step, Callable[[StepRequest], dict[str, Any]]] = {
            Step.PREPARE: self.prepare,
            Step.REQUEST_APPROVAL: self.request_approval,
            Step.EXPIRE: self.expire,
            Step.ACQUIRE_SLOT: self.acquire_slot,
            Step.BACKUP: self.backup,
            Step.CHECK_BACKUP: self.check_backup,
            Step.ACT: self.act,
            Step.CHECK_ACTION: self.check_action,
            Step.FINISH: self.finish,
            Step.CHECK_GUARDRAILS: self.check_guardrails,
            Step.ROLLBACK: self.rollback,
            Step.CHECK_ROLLBACK: self.check_rollback,
            Step.RECORD_ROLLBACK: self.record_rollback,
            Step.RECORD_ROLLBACK_FAILURE: self.record_rollback_failure,
            Step.RECORD_FAILURE: self.record_failure,
        }

    def run(self, request: StepRequest) -> dict[str, Any]:
        """Run one step. AWS errors worth retrying leave as `TransientError`, which the state
        machines retry with backoff; every other error fails the step (and is caught there).
        Within the step, its AWS calls that change something and its status changes are logged as its own."""
        # The step's events are written together (cost_engine.stores.audit): before each status
        # change it writes, after each AWS change it makes, and at its end.
        with (
            self.ctx.audit.batched(),
            acting(request.execution_id, f"state-machine:{request.step.value}", self.ctx.audit),
        ):
            try:
                return self._steps[request.step](request)
            except ClientError as error:
                if is_transient(error):
                    raise TransientError(f"{request.step.value}: AWS answered {error_code(error)}: {error}") from error
                raise
            except (BotoConnectionError, HTTPClientError) as error:
                raise TransientError(f"{request.step.value}: AWS could not be reached: {error}") from error

    # -- helpers -------------------------------------------------------------------------------

    def _get(self, execution_id: str) -> ExecutionRecord:
        """The execution a step works on, refused if it is of another type than this function's: each
        type's function has the role of that type alone, and nothing of another type is its to touch."""
        record = self.ctx.executions.get(execution_id)
        own_type = self.ctx.settings.recommendation_type
        if own_type is not None and record.recommendation_type != own_type:
            raise UnsupportedType(
                f"this function runs the steps of {own_type.value}, and execution {execution_id} is "
                f"{record.recommendation_type.value}: its state machine invokes the wrong function"
            )
        return record

    def _load(self, execution_id: str) -> tuple[ExecutionRecord, Recommendation, AnyExecutor]:
        record = self._get(execution_id)
        return record, *self._subject(record)

    def _subject(self, record: ExecutionRecord) -> tuple[Recommendation, AnyExecutor]:
        """The recommendation an execution carries out, and its type's executor."""
        # Read from the table once per function instance (the store keeps what it has read).
        recommendation = self.ctx.recommendations.get(record.recommendation_id)
        return recommendation, self.ctx.executor_for(recommendation)

    def _advance(
        self,
        record: ExecutionRecord,
        new_status: ExecutionStatus,
        expected: ExecutionStatus | Iterable[ExecutionStatus],
        changes: dict[str, Any] | None = None,
    ) -> ExecutionRecord:
        """A status change that a retried step may repeat: already being there is success."""
        try:
            return self._transition(record.execution_id, new_status, expected=expected, changes=changes)
        except StatusConflict:
            current = self.ctx.executions.get(record.execution_id)
            if current.status == new_status:
                return current
            raise

    def _transition(
        self,
        execution_id: str,
        new_status: ExecutionStatus,
        *,
        expected: ExecutionStatus | Iterable[ExecutionStatus],
        changes: dict[str, Any] | None = None,
        remove: list[str] | None = None,
    ) -> ExecutionRecord:
        """A status change. One the run stops at (an end, or waiting for a person) is written after
        the events before it: whoever sees that status finds the whole log. The others' events are
        written with the rest of the step's, a moment later."""
        if new_status in FINAL_STATES or new_status == S.AWAITING_APPROVAL:
            self.ctx.audit.flush()
        return self.ctx.executions.transition(
            execution_id, new_status, expected=expected, changes=changes, remove=remove or []
        )

    def _event(self, record: ExecutionRecord, event_type: str, step: Step | Phase, **detail: Any) -> None:
        self.ctx.audit.append(record.execution_id, event_type, f"state-machine:{step.value}", detail)

    @contextmanager
    def _phase(self, execution_id: str, phase: Phase) -> Iterator[None]:
        """One phase of a task: what it does is logged as its own (`state-machine:<phase>`)."""
        _checkpoint(phase.value, execution_id, "before")
        with acting(execution_id, f"state-machine:{phase.value}", self.ctx.audit):
            yield
        _checkpoint(phase.value, execution_id, "after")

    def _load_acting(self, execution_id: str, step: Step) -> tuple[ExecutionRecord, Recommendation, AnyExecutor]:
        return self._acting(self._get(execution_id), step)

    def _acting(self, record: ExecutionRecord, step: Step) -> tuple[ExecutionRecord, Recommendation, AnyExecutor]:
        """What a step after the backup began works on. A cancel asked for since stops here, before
        this step does anything: the Catch sends the execution to Rollback, which ends it cancelled."""
        execution_id = record.execution_id
        if record.status not in CANCEL_BY_ROLLBACK_STATES:
            # A step of a run that was stopped, coming back after the execution was reconciled
            # (cost_engine.reconcile): acting now would change a resource that is being restored.
            raise StatusConflict(f"execution {execution_id} is '{record.status.value}': {step.value} does nothing")
        if record.cancel_requested_by:
            self._event(record, "cancel_honoured", step, requested_by=record.cancel_requested_by)
            raise CancelRequested(f"cancelled by {record.cancel_requested_by} while {record.status.value}")
        try:
            if record.status in ACTING_STATES:
                self.ctx.limits.check_acting_time(record)
        except ActingTimeLimitExceeded as exceeded:
            # Recorded first: the rollback that follows then ends the execution `failed`, not `rolled_back`.
            self.ctx.executions.update(execution_id, expected=record.status, changes={"acting_timed_out": True})
            self._event(record, "acting_time_limit_exceeded", step, reason=str(exceeded))
            raise
        return record, *self._subject(record)

    def _check(
        self,
        request: StepRequest,
        record: ExecutionRecord,
        executor: AnyExecutor,
        what: str,
        check: Callable[[], bool],
        *,
        first: bool,
        retried: bool = False,
    ) -> dict[str, Any]:
        """The answer of a check (the first one, made by the step that started the work, or one after
        a wait): done, or how long the state machine waits before the next check. The unfinished
        checks are counted against the type's budget; a check that finds the work done writes
        nothing but its event."""
        if first:  # the check a Check task would make, made by the task that started the work
            _checkpoint(f"check_{what}", request.execution_id, "before")
        done = check()
        if done:
            # A retried task whose first attempt got through found it done then, and logged it.
            if not (retried and record.poll_attempts == 0):
                self._event(record, f"{what.replace(' ', '_')}_done", request.step)
            if record.poll_attempts and not first:
                self.ctx.executions.update(request.execution_id, expected=record.status, changes={"poll_attempts": 0})
            return {"done": True, "wait_seconds": 0}
        attempts = 1 if first else record.poll_attempts + 1
        # The type's budget, unless the deployment sets one for every type (the local runtime does:
        # its waits take no time, so its checks count differently).
        budget = self.ctx.settings.max_poll_attempts or executor.polling.max_checks
        if attempts > budget:
            raise ActionFailed(f"{what} did not finish after {budget} checks")
        self.ctx.executions.update(
            request.execution_id,
            expected=record.status,
            changes={"poll_attempts": attempts, "current_step": request.step.value},
        )
        return {"done": False, "wait_seconds": executor.polling.wait_after(attempts)}

    # -- validate, plan, approve -----------------------------------------------------------------

    def prepare(self, request: StepRequest) -> dict[str, Any]:
        """Validate, plan, and when the approval policy approves without a person, approve: one task,
        as these always follow each other. Where the execution goes next is the answer. Every run
        starts here: a manual rollback's run goes on to Rollback, and a scheduled execution waits
        for its time before anything is checked."""
        if request.mode == "rollback":
            return {"next": Prepared.ROLLBACK.value}
        record, recommendation, executor = self._load(request.execution_id)
        if record.status == S.SCHEDULED and record.scheduled_time and record.scheduled_time > utc_now():
            return {"next": Prepared.WAIT.value}
        if (outcome := self._prepared(record)) is not None:
            return {"next": outcome.value}  # a retry of a task that got through (its answer was lost)
        with self._phase(record.execution_id, Phase.VALIDATE):
            record = self._advance(
                record, S.VALIDATING, (S.PENDING, S.SCHEDULED), {"current_step": Phase.VALIDATE.value}
            )
            validation = self._validate(record, recommendation, executor)
        if not validation.valid:
            self._event(record, "failed", Phase.VALIDATE, reason="validation failed", errors=validation.errors)
            self._transition(
                record.execution_id,
                S.FAILED,
                expected=S.VALIDATING,
                changes={
                    "validation": validation,
                    "success": False,
                    "completed_at": utc_now(),
                    "error_message": "validation failed: " + "; ".join(validation.errors),
                },
            )
            return {"next": Prepared.INVALID.value}
        with self._phase(record.execution_id, Phase.PLAN):
            return {"next": self._plan(record, recommendation, executor, validation).value}

    @staticmethod
    def _prepared(record: ExecutionRecord) -> Prepared | None:
        """Where a Prepare that already got through sent the execution, or None to prepare it now."""
        if record.status == S.APPROVED:
            return Prepared.APPROVED
        if record.status == S.FAILED and record.validation is not None and not record.validation.valid:
            return Prepared.INVALID
        if record.status == S.COMPLETED and record.dry_run:
            return Prepared.DRY_RUN
        if record.status == S.VALIDATING and record.policy is not None and record.plan is not None:
            return Prepared.ASK_APPROVERS
        return None

    def _validate(
        self, record: ExecutionRecord, recommendation: Recommendation, executor: AnyExecutor
    ) -> ValidationResult:
        # The engine acts with its own credentials: a recommendation for another account is refused
        # rather than carried out on a look-alike resource id here.
        account = self.ctx.clients.sts.get_caller_identity()["Account"]
        if recommendation.account_id != account:
            result = ValidationResult(
                valid=False,
                errors=[
                    f"the recommendation is for account {recommendation.account_id}, but the engine acts in "
                    f"account {account}: deploy the engine there (cross-account execution is not supported yet)"
                ],
                risk_level=executor.risk_level,
                estimated_duration=0,
            )
        else:
            result, checked = self._prechecked(recommendation, executor)
            self._event(
                record,
                "prechecked",
                Phase.VALIDATE,
                passed=not checked.errors,
                errors=checked.errors,
                warnings=checked.warnings,
                **checked.facts,
            )
        self._event(record, "validated", Phase.VALIDATE, **result.model_dump(mode="json"))
        return result

    def _prechecked(
        self, recommendation: Recommendation, executor: AnyExecutor
    ) -> tuple[ValidationResult, PrecheckResult]:
        """The common pre-checks (cost_engine.prechecks), then the type's own validation. A refusal by
        the pre-checks is final: the type's checks are not run. Also answers what the pre-checks
        looked at, for the audit log."""
        settings = self.ctx.settings
        checked = run_prechecks(
            executor,
            recommendation,
            settings.business_rules.for_customer(recommendation.customer_id),
            timedelta(days=settings.max_recommendation_age_days),
            utc_now(),
            settings.own_role_arn,
        )
        if checked.errors:
            refused = ValidationResult(
                valid=False,
                errors=checked.errors,
                warnings=checked.warnings,
                risk_level=executor.risk_level,
                estimated_duration=0,
            )
            return refused, checked
        result = executor.validate(recommendation)
        return result.model_copy(update={"warnings": [*checked.warnings, *result.warnings]}), checked

    def _recheck(
        self, record: ExecutionRecord, recommendation: Recommendation, executor: AnyExecutor, step: Step, moment: str
    ) -> None:
        """Safety judged at the moment of action, not of the request: an approval can take days, and
        meanwhile the resource may have been protected, put behind a load balancer or changed, the
        rules may have changed, the permission may be gone. The pre-checks and the type's validation
        run again, and the plan is made again: an approval holds for the plan it was given for only.
        Raises RefusedAtAction (with every reason) when the change must not be made now."""
        result, checked = self._prechecked(recommendation, executor)
        problems = list(result.errors)
        approved_hash = record.approval.plan_hash if record.approval else None
        # One event for the whole re-check: what was looked at, as `prechecked` has it, and the plan.
        detail: dict[str, Any] = {"moment": moment, **checked.facts}
        if result.valid and record.plan is not None:
            plan = executor.plan(recommendation, record.execution_id)
            detail["plan_hash"] = plan.fingerprint()
            changed = record.plan.differences(plan)
            if approved_hash is not None and approved_hash != record.plan.fingerprint():
                changed.append("the approved plan itself")
            if changed:
                detail["plan_changes"] = changed
                problems.append(
                    f"the plan is no longer the one that was approved ({', '.join(changed)} changed since): "
                    "execute the recommendation again to have the new plan approved"
                )
        self._event(record, "rechecked", step, passed=not problems, errors=problems, warnings=result.warnings, **detail)
        if problems:
            raise RefusedAtAction(f"refused {moment}: " + "; ".join(problems))

    def _plan(
        self,
        record: ExecutionRecord,
        recommendation: Recommendation,
        executor: AnyExecutor,
        validation: ValidationResult,
    ) -> Prepared:
        """The plan, priced, and the approval policy's decision on it; written with the validation in
        one write: the status the decision leads to (a dry run's end, or approved by the policy), or
        none while a person is to be asked."""
        try:
            plan = executor.plan(recommendation, record.execution_id)
        except Exception:
            # The validation stands in the record of an execution whose planning failed.
            self.ctx.executions.update(record.execution_id, expected=S.VALIDATING, changes={"validation": validation})
            raise
        policy = decide(
            self.ctx.settings.approval_policy,
            customer_id=record.customer_id,
            recommendation_type=record.recommendation_type,
            base_risk=validation.risk_level,
            requires_human_approval=executor.requires_human_approval,
            auto_approve_requested=record.auto_approve_requested,
            estimated_monthly_savings=plan.estimated_monthly_savings,
            one_time_cost=plan.one_time_cost,
        )
        changes = {
            "validation": validation,
            "plan": plan,
            "policy": policy,
            "estimated_monthly_savings": plan.estimated_monthly_savings,
            "current_step": Phase.PLAN.value,
        }
        if record.dry_run:
            # What the policy would decide is part of the dry run's report; the last event ends it,
            # written before the status (see `_record`).
            self._event(record, "approval_policy_decided", Phase.PLAN, **policy.model_dump(mode="json"))
            self._event(record, "dry_run_completed", Phase.PLAN, plan=plan.model_dump(mode="json"))
            self._advance(record, S.COMPLETED, S.VALIDATING, {**changes, "success": True, "completed_at": utc_now()})
            return Prepared.DRY_RUN
        self._event(record, "planned", Phase.PLAN, plan=plan.model_dump(mode="json"))
        self._event(record, "approval_policy_decided", Phase.PLAN, **policy.model_dump(mode="json"))
        if not policy.auto_approve:
            self.ctx.executions.update(record.execution_id, expected=S.VALIDATING, changes=changes)
            return Prepared.ASK_APPROVERS
        # Only the policy's own decision approves without a person; its place in the queue for an
        # acting slot is the moment of that approval.
        with self._phase(record.execution_id, Phase.AUTO_APPROVE):
            self._event(
                record,
                "approved",
                Phase.AUTO_APPROVE,
                approver="policy",
                reason=policy.reason,
                plan_hash=plan.fingerprint(),
            )
            now = utc_now()
            self._advance(
                record,
                S.APPROVED,
                S.VALIDATING,
                {**changes, "auto_approved": True, "queued_at": now, "current_step": Phase.AUTO_APPROVE.value},
            )
        return Prepared.APPROVED

    def request_approval(self, request: StepRequest) -> dict[str, Any]:
        record = self._get(request.execution_id)
        if not request.task_token:
            raise ActionFailed("request_approval needs the task token of the waiting state")
        # The token is stored no later than the status says "awaiting" (in the same write), so whoever
        # sees that status can complete the wait. It is never logged, returned by the API nor put in
        # a link.
        settings = self.ctx.settings
        if record.status == S.AWAITING_APPROVAL and record.approval and record.approval_id:
            # A retried step (the message may not have gone out): the same approval and link again,
            # so a link already sent keeps working; the wait is the retry's, with its own token.
            self.ctx.executions.store_task_token(record.execution_id, request.task_token)
            approval, approval_id = record.approval, record.approval_id
        else:
            now = utc_now()
            approval = ApprovalState(
                requested_at=now,
                deadline=now + timedelta(seconds=record.approval_timeout_seconds),
                approvers_notified=settings.approval_topic_arn,
                approvers=settings.approver_emails,
                risk_level=record.policy.risk_level if record.policy else None,
                reason=record.policy.reason if record.policy else None,
                plan_hash=record.plan.fingerprint() if record.plan else None,
            )
            approval_id = new_approval_id()
            # Recorded before the status says "awaiting": whoever sees that status (or decides at
            # once) finds the request already in the audit log, so the log reads in causal order.
            self._event(
                record,
                "approval_requested",
                Step.REQUEST_APPROVAL,
                deadline=approval.deadline.isoformat(),
                notified=settings.approval_topic_arn,
                approvers=settings.approver_emails,
                link_sent=self.ctx.links is not None,
            )
            record = self._advance(
                record,
                S.AWAITING_APPROVAL,
                S.VALIDATING,
                {
                    "approval": approval,
                    "approval_id": approval_id,
                    "current_step": Step.REQUEST_APPROVAL.value,
                    TASK_TOKEN_ATTRIBUTE: request.task_token,
                },
            )
        link = self.ctx.links.link(approval_id, approval.deadline) if self.ctx.links else None
        self._notify_approvers(record, approval, link)
        return {"requested": True}

    def _notify_approvers(self, record: ExecutionRecord, approval: ApprovalState, link: str | None) -> None:
        topic = self.ctx.settings.approval_topic_arn
        if not topic:
            return
        self.ctx.clients.sns.publish(
            TopicArn=topic,
            Subject=f"Approval needed: {record.recommendation_type.value} on {record.resource_id}"[:99],
            Message=approval_message(record, approval, link),
            # For subscriptions that only want some of the requests (filter policies).
            MessageAttributes={
                name: {"DataType": "String", "StringValue": value}
                for name, value in (
                    ("execution_id", record.execution_id),
                    ("customer_id", record.customer_id),
                    ("recommendation_type", record.recommendation_type.value),
                    ("risk_level", approval.risk_level.value if approval.risk_level else "unknown"),
                )
            },
        )

    def expire(self, request: StepRequest) -> dict[str, Any]:
        record = self._get(request.execution_id)
        if record.status in FINAL_STATES:  # a decision or a cancel came first
            return {"status": record.status.value}
        self._event(record, "approval_expired", Step.EXPIRE)
        self._transition(
            record.execution_id,
            S.EXPIRED,
            expected=S.AWAITING_APPROVAL,
            changes={"success": False, "completed_at": utc_now(), "error_message": "no approval before the deadline"},
            remove=[TASK_TOKEN_ATTRIBUTE],
        )
        return {"status": S.EXPIRED.value}

    # -- act -------------------------------------------------------------------------------------

    def acquire_slot(self, request: StepRequest) -> dict[str, Any]:
        """Ask for one of the deployment's acting slots. The state machine waits on this task's token
        in any case: a free slot is taken and the wait answered at once; otherwise the execution
        joins the queue with its token, and whoever frees a slot hands it over and answers the wait
        (cost_engine.limits). Nothing is touched until an execution holds a slot."""
        record = self._get(request.execution_id)
        if not request.task_token:
            raise ActionFailed("acquire_slot needs the task token of the waiting state")
        if record.status != S.APPROVED:
            raise StatusConflict(f"execution {record.execution_id} is '{record.status.value}': it asks for no slot")
        if record.queued_at is None:  # approved before approvals gave it its place in the queue
            record = self.ctx.executions.update(
                record.execution_id, expected=S.APPROVED, changes={"queued_at": utc_now()}
            )
        claim = self.ctx.limits.claim_slot(record, request.task_token, asked_before=request.asked_before > 0)
        if claim.slot is None:
            self._event(
                record,
                "waiting_for_slot",
                Step.ACQUIRE_SLOT,
                acting=claim.acting,
                ahead=claim.ahead,
                limit=self.ctx.settings.max_concurrent_acting,
            )
            return {"acquired": False}
        if not self.ctx.limits.wake(request.task_token, claim.slot):
            raise ActionFailed("the wait for an acting slot was over before the slot was taken")
        return {"acquired": True}

    def backup(self, request: StepRequest) -> dict[str, Any]:
        record, recommendation, executor = self._load(request.execution_id)
        if record.status == S.APPROVED:
            record = self._start_acting(record, recommendation, executor, request.slot)
        elif record.status != S.EXECUTING:  # cancelled (or ended) while it waited for this step
            raise StatusConflict(f"execution {record.execution_id} is '{record.status.value}': no backup is made")
        elif record.backup is not None:
            # A retry of a step that got through (its answer was lost).
            return self._check(
                request,
                record,
                executor,
                "backup",
                lambda: self._backup_ready(recommendation, executor, record),
                first=False,
                retried=True,
            )
        made = executor.backup(recommendation, record.execution_id)
        backup = executor.stored(made)
        record = self.ctx.executions.update(
            record.execution_id, expected=S.EXECUTING, changes={"backup": backup, "rollback_available": True}
        )
        self._event(record, "backup_started", Step.BACKUP, backup=backup)
        self.ctx.audit.flush()  # what was made is in the log before anything else is tried
        answer = self._check(
            request, record, executor, "backup", lambda: executor.backup_ready(recommendation, made), first=True
        )
        if not executor.backup_waits and not answer["done"]:
            # The type's state machine has no backup wait (cost_engine.spine): the record is the backup,
            # complete once written; Act follows at once.
            raise ActionFailed(f"the backup of {record.recommendation_type.value} was not complete once recorded")
        return answer

    def _start_acting(
        self, record: ExecutionRecord, recommendation: Recommendation, executor: AnyExecutor, slot: int | None
    ) -> ExecutionRecord:
        """The execution holds an acting slot: right before the backup, the last moment at which
        nothing at all has been done, the resource is checked again. A refusal fails the step before
        anything changed (Backup's Catch of RefusedAtAction ends the execution failed, and its slot
        is freed)."""
        if slot is None:
            raise ActionFailed("the backup step was not told the acting slot the execution holds")
        self._recheck(record, recommendation, executor, Step.BACKUP, "before the backup")
        started = utc_now()
        waited = (started - record.queued_at).total_seconds() if record.queued_at else 0.0
        self._event(record, "slot_acquired", Step.BACKUP, slot=slot, waited_seconds=waited)
        return self._advance(
            record,
            S.EXECUTING,
            S.APPROVED,
            {"acting_slot": slot, "acting_started_at": started, "current_step": Step.BACKUP.value},
        )

    @staticmethod
    def _backup_ready(recommendation: Recommendation, executor: AnyExecutor, record: ExecutionRecord) -> bool:
        return executor.backup_ready(recommendation, executor.read_backup(record.backup or {}))

    def check_backup(self, request: StepRequest) -> dict[str, Any]:
        record, recommendation, executor = self._load_acting(request.execution_id, Step.CHECK_BACKUP)
        return self._check(
            request,
            record,
            executor,
            "backup",
            lambda: self._backup_ready(recommendation, executor, record),
            first=False,
        )

    def act(self, request: StepRequest) -> dict[str, Any]:
        record, recommendation, executor = self._load_acting(request.execution_id, Step.ACT)
        if record.action is not None:
            # A retry of a step that got through (its answer was lost): acting again would overwrite
            # what was recorded of the change with what the changed resource looks like now.
            action = executor.read_action(record.action)
            return self._check(
                request,
                record,
                executor,
                "action",
                lambda: executor.apply_done(recommendation, action),
                first=False,
                retried=True,
            )
        if not record.rechecked_before_change:
            # Again right before the change: a backup can take long on AWS. Only on the first attempt:
            # a retried step may follow a change that went through (its answer lost), and the changed
            # resource would fail the checks as if nothing had been done.
            try:
                self._recheck(record, recommendation, executor, Step.ACT, "before the change")
            except RefusedAtAction:
                # Recorded first: the rollback that follows restores nothing and ends the execution `failed`.
                self.ctx.executions.update(
                    record.execution_id, expected=S.EXECUTING, changes={"refused_before_change": True}
                )
                raise
            self.ctx.executions.update(
                record.execution_id, expected=S.EXECUTING, changes={"rechecked_before_change": True}
            )
        made = executor.apply(recommendation, executor.read_backup(record.backup or {}))
        action = executor.stored(made)
        record = self.ctx.executions.update(
            record.execution_id, expected=S.EXECUTING, changes={"action": action, "current_step": Step.ACT.value}
        )
        self._event(record, "action_started", Step.ACT, action=action)
        self.ctx.audit.flush()  # what was changed is in the log before anything else is tried
        return self._check(
            request, record, executor, "action", lambda: executor.apply_done(recommendation, made), first=True
        )

    def check_action(self, request: StepRequest) -> dict[str, Any]:
        record, recommendation, executor = self._load_acting(request.execution_id, Step.CHECK_ACTION)
        action = executor.read_action(record.action or {})
        return self._check(
            request, record, executor, "action", lambda: executor.apply_done(recommendation, action), first=False
        )

    def finish(self, request: StepRequest) -> dict[str, Any]:
        """Verify the change; then, for a type that watches, begin the guardrail watch, or else record
        the execution completed: one task, as these always follow each other. The answer is done, or
        how long the state machine waits before the watch's first check."""
        record = self._get(request.execution_id)
        if record.status == S.COMPLETED:
            return WATCH_OVER  # a retry of a step that got through
        if record.status == S.WATCHING:  # the same, and the watch had begun
            return self._watch_answer(record, checks=0)
        record, recommendation, executor = self._acting(record, Step.FINISH)
        with self._phase(record.execution_id, Phase.VERIFY):
            record = self._verify(record, recommendation, executor)
            watched = self._watched(record, recommendation, executor)
            if watched is not None:
                settle_minutes, described = watched
                now = utc_now()
                self._event(record, "watch_started", Phase.VERIFY, settle_minutes=settle_minutes, watched=described)
                record = self._advance(
                    record,
                    S.WATCHING,
                    S.VERIFYING,
                    {
                        "watch_started_at": now,
                        "watch_until": now + timedelta(minutes=settle_minutes),
                        "current_step": Step.CHECK_GUARDRAILS.value,
                    },
                )
                return self._watch_answer(record, checks=0)
        with self._phase(record.execution_id, Phase.RECORD):
            self._record(record, recommendation, executor, S.VERIFYING)
        return WATCH_OVER

    def _guardrails(
        self, recommendation: Recommendation, executor: AnyExecutor, action: Any
    ) -> tuple[list[str], list[tuple[MetricThreshold, dict[str, str]]]]:
        """The alarms and thresholds (each with the dimensions it applies to) to watch."""
        spec = recommendation.guardrails or GuardrailSpec()
        thresholds = [
            *(executor.guardrail_thresholds(recommendation, action) if spec.type_defaults else []),
            *spec.thresholds,
        ]
        return list(spec.alarms), [
            (t, t.dimensions or executor.guardrail_dimensions(recommendation, action, t.namespace)) for t in thresholds
        ]

    def _watched(
        self, record: ExecutionRecord, recommendation: Recommendation, executor: AnyExecutor
    ) -> tuple[int, list[str]] | None:
        """How long the change is watched, and what is watched; None when it is not (a type that does
        not watch, a settling period of 0, or nothing to watch)."""
        if not executor.watches:
            return None
        spec = recommendation.guardrails or GuardrailSpec()
        settle = spec.settle_minutes if spec.settle_minutes is not None else self.ctx.settings.guardrail_settle_minutes
        alarms, thresholds = self._guardrails(recommendation, executor, executor.read_action(record.action or {}))
        described = [f"alarm {name}" for name in alarms] + [t.describe() for t, _ in thresholds]
        if executor.live_guardrails:
            described.append(executor.live_guardrails)
        return (settle, described) if settle > 0 and described else None

    def _watch_answer(self, record: ExecutionRecord, checks: int) -> dict[str, Any]:
        waits = watch_waits(self._settle_minutes(record))
        return {"done": False, "wait_seconds": waits[checks], "checks": checks}

    @staticmethod
    def _settle_minutes(record: ExecutionRecord) -> int:
        if record.watch_started_at is None or record.watch_until is None:
            raise StatusConflict(f"execution {record.execution_id} has no watch")
        return round((record.watch_until - record.watch_started_at).total_seconds() / 60)

    def check_guardrails(self, request: StepRequest) -> dict[str, Any]:
        """One check of the watch: a breach rolls the change back (the Catch sends it to Rollback); the
        last check without one records the execution completed."""
        record = self._get(request.execution_id)
        if record.status == S.COMPLETED:
            return WATCH_OVER  # a retry of the last check, which got through
        record, recommendation, executor = self._acting(record, Step.CHECK_GUARDRAILS)
        if record.status != S.WATCHING or record.watch_started_at is None:
            raise StatusConflict(f"execution {record.execution_id} is '{record.status.value}': there is no watch")
        action = executor.read_action(record.action or {})
        alarms, thresholds = self._guardrails(recommendation, executor, action)
        now = utc_now()
        cloudwatch = self.ctx.clients_in(recommendation.region).cloudwatch
        breaches = [
            *alarm_breaches(cloudwatch, alarms),
            *threshold_breaches(cloudwatch, thresholds, record.watch_started_at, now),
            *(
                Breach(executor.live_guardrails, reason)
                for reason in executor.guardrail_breaches(recommendation, action)
            ),
        ]
        checks = request.checks_before + 1
        result = {
            "checked_at": now.isoformat(),
            "checks": checks,
            "passed": not breaches,
            "breaches": [b.as_dict() for b in breaches],
        }
        if breaches:
            self._event(record, "guardrail_breached", Step.CHECK_GUARDRAILS, **result)
            self.ctx.executions.update(record.execution_id, expected=S.WATCHING, changes={"guardrails": result})
            raise GuardrailBreached("guardrail breached: " + "; ".join(f"{b.guardrail}: {b.reason}" for b in breaches))
        if checks < len(watch_waits(self._settle_minutes(record))):
            return self._watch_answer(record, checks)
        self._event(record, "guardrails_passed", Step.CHECK_GUARDRAILS, **result)
        with self._phase(record.execution_id, Phase.RECORD):
            self._record(record, recommendation, executor, S.WATCHING, {"guardrails": result})
        return WATCH_OVER

    def _verify(
        self, record: ExecutionRecord, recommendation: Recommendation, executor: AnyExecutor
    ) -> ExecutionRecord:
        if record.status == S.EXECUTING:
            result = executor.verify(recommendation, executor.read_action(record.action or {}))
            self._event(record, "verified", Phase.VERIFY, **result.model_dump(mode="json"))
            record = self._advance(
                record, S.VERIFYING, S.EXECUTING, {"verification": result, "current_step": Phase.VERIFY.value}
            )
        verification = record.verification
        if verification is None or not verification.passed:
            failures = verification.failures if verification else ["nothing was verified"]
            raise ActionFailed("verification failed: " + "; ".join(failures))
        return record

    def _record(
        self,
        record: ExecutionRecord,
        recommendation: Recommendation,
        executor: AnyExecutor,
        status: ExecutionStatus,
        changes: dict[str, Any] | None = None,
    ) -> None:
        """Finalize the change where the type does, and record the execution completed (from `status`:
        verifying, or watching once the watch passed)."""
        finalized = executor.finalize(recommendation, executor.read_action(record.action or {}))
        if finalized is not None:
            before, after = record.action or {}, executor.stored(finalized)
            # What finalizing added to the action record, or changed in it, logged before it is
            # recorded: a retried step that finds the record finalized already finds the event too.
            # Written at once, on its own: the sweeper completes (not rolls back) a finalized change.
            if finalizing := {k: v for k, v in after.items() if before.get(k) != v}:
                self._event(record, "finalized", Phase.RECORD, **finalizing)
                record = self.ctx.executions.update(record.execution_id, expected=status, changes={"action": after})
        expected = executor.expected_savings(recommendation, executor.read_backup(record.backup or {}))
        # The outcome is in the log before the status says so: a reader who sees `completed` finds
        # the whole log (only the limits' release follows, from the status change itself).
        self._event(record, "completed", Phase.RECORD, expected_savings=expected)
        self._advance(
            record,
            S.COMPLETED,
            status,
            {
                "success": True,
                "completed_at": utc_now(),
                "expected_savings": expected,
                "current_step": Phase.RECORD.value,
                **(changes or {}),
            },
        )

    # -- rollback --------------------------------------------------------------------------------

    def rollback(self, request: StepRequest) -> dict[str, Any]:
        record, recommendation, executor = self._load(request.execution_id)
        if record.status in ROLLBACK_ON_FAILURE_STATES:
            # Automatic: a step of the acting phase failed, or a guardrail tripped while it settled.
            reason = error_message(request.error)
            record = self._advance(
                record,
                S.ROLLING_BACK,
                record.status,
                {"error_message": reason, "current_step": Step.ROLLBACK.value, "poll_attempts": 0},
            )
            self._event(record, "rollback_started", Step.ROLLBACK, reason=reason, automatic=True)
        elif record.status == S.ROLLING_BACK:
            # Manual (the API moved it here) or a retry of this step.
            record = self.ctx.executions.update(
                record.execution_id,
                expected=S.ROLLING_BACK,
                changes={"current_step": Step.ROLLBACK.value, "poll_attempts": 0},
            )
        else:
            raise Conflict(f"execution {record.execution_id} is '{record.status.value}': nothing to roll back")
        restored: Any = None
        if record.refused_before_change and record.action is None:
            # The re-check refused before anything was changed: "restoring" would only put the
            # resource back to how it was at the backup, undoing what someone did to it since.
            result: dict[str, Any] = {"nothing_changed": True, "backup_kept": record.backup or {}}
        else:
            restored = executor.rollback(
                recommendation,
                None if record.backup is None else executor.read_backup(record.backup),
                None if record.action is None else executor.read_action(record.action),
            )
            result = executor.stored(restored)
        record = self.ctx.executions.update(record.execution_id, expected=S.ROLLING_BACK, changes={"rollback": result})
        self._event(record, "rollback_action", Step.ROLLBACK, rollback=result)
        return self._check(
            request,
            record,
            executor,
            "rollback",
            lambda: restored is None or executor.rollback_done(recommendation, restored),
            first=True,
        )

    def check_rollback(self, request: StepRequest) -> dict[str, Any]:
        record, recommendation, executor = self._load(request.execution_id)
        rollback = record.rollback or {}

        def restored() -> bool:
            return bool(rollback.get("nothing_changed")) or executor.rollback_done(
                recommendation, executor.read_rollback(rollback)
            )

        return self._check(request, record, executor, "rollback", restored, first=False)

    def record_rollback(self, request: StepRequest) -> dict[str, Any]:
        record = self._get(request.execution_id)
        automatic = record.success is None
        changes: dict[str, Any] = {
            "rollback_executed": True,
            "rollback_available": False,
            "completed_at": utc_now(),
            "expected_savings": 0.0,
            "current_step": Step.RECORD_ROLLBACK.value,
        }
        if automatic:
            changes["success"] = False
        self._event(record, "rolled_back", Step.RECORD_ROLLBACK, restored=record.rollback or {}, automatic=automatic)
        # A rollback that a cancel caused ends as what the person asked for: cancelled; one that the
        # acting time limit caused ends failed (with the reason), as the limit promises.
        final = S.ROLLED_BACK
        if automatic and record.cancel_requested_by:
            final = S.CANCELLED
        elif automatic and (record.acting_timed_out or record.refused_before_change):
            final = S.FAILED
        if final == S.CANCELLED:
            self._event(record, "cancelled", Step.RECORD_ROLLBACK, requested_by=record.cancel_requested_by)
        self._advance(record, final, S.ROLLING_BACK, changes)
        return {"status": final.value, "automatic": automatic}

    def record_rollback_failure(self, request: StepRequest) -> dict[str, Any]:
        record = self._get(request.execution_id)
        reason = "rollback failed: " + error_message(request.error)
        if record.error_message and record.success is None:
            reason = f"{record.error_message}; then {reason}"
        target = S.ROLLBACK_FAILED if record.status == S.ROLLING_BACK else S.FAILED
        self._event(record, "rollback_failed", Step.RECORD_ROLLBACK_FAILURE, reason=reason)
        if record.status not in FINAL_STATES:
            self._transition(
                record.execution_id,
                target,
                expected=record.status,
                changes={"error_message": reason, "success": False, "completed_at": utc_now()},
            )
        return {"status": target.value}

    def record_failure(self, request: StepRequest) -> dict[str, Any]:
        """A step outside the acting phase failed: nothing was changed, the execution fails."""
        self._fail(self._get(request.execution_id), error_message(request.error), Step.RECORD_FAILURE)
        return {"status": S.FAILED.value}

    def _fail(self, record: ExecutionRecord, reason: str, step: Step) -> None:
        self._event(record, "failed", step, reason=reason)
        if record.status not in FINAL_STATES:
            self._transition(
                record.execution_id,
                S.FAILED,
                expected=record.status,
                changes={"error_message": reason, "success": False, "completed_at": utc_now()},
            )


def _checkpoint(phase: str, execution_id: str, when: str) -> None:
    for checkpoint in phase_checkpoints:
        checkpoint(phase, execution_id, when)
