"""The steps of the common state machine spine, as the executor functions run them.

Each step loads the execution record, does its piece of work through the type's executor, records
the result with a conditional write and appends an audit event. The record in DynamoDB is the
source of truth: the state machine only carries the execution id and its control flags.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
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
    RefusedAtAction,
    StatusConflict,
    TransientError,
    UnsupportedType,
    cause_message,
)
from cost_engine.executors.base import AnyExecutor
from cost_engine.limits import ActingTimeLimitExceeded
from cost_engine.models import (
    ApprovalState,
    ExecutionRecord,
    ExecutionStatus,
    Recommendation,
    ValidationResult,
    utc_now,
)
from cost_engine.prechecks import PrecheckResult, run_prechecks
from cost_engine.stores.executions import TASK_TOKEN_ATTRIBUTE
from cost_engine.transitions import ACTING_STATES, CANCEL_BY_ROLLBACK_STATES, FINAL_STATES

S = ExecutionStatus


class Step(StrEnum):
    VALIDATE = "validate"
    PLAN = "plan"
    AUTO_APPROVE = "auto_approve"
    REQUEST_APPROVAL = "request_approval"
    EXPIRE = "expire"
    ACQUIRE_SLOT = "acquire_slot"
    BACKUP = "backup"
    CHECK_BACKUP = "check_backup"
    ACT = "act"
    CHECK_ACTION = "check_action"
    VERIFY = "verify"
    RECORD = "record"
    ROLLBACK = "rollback"
    CHECK_ROLLBACK = "check_rollback"
    RECORD_ROLLBACK = "record_rollback"
    RECORD_ROLLBACK_FAILURE = "record_rollback_failure"
    RECORD_FAILURE = "record_failure"


class StepRequest(BaseModel):
    step: Step
    execution_id: str
    task_token: str | None = None
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
            Step.VALIDATE: self.validate,
            Step.PLAN: self.plan,
            Step.AUTO_APPROVE: self.auto_approve,
            Step.REQUEST_APPROVAL: self.request_approval,
            Step.EXPIRE: self.expire,
            Step.ACQUIRE_SLOT: self.acquire_slot,
            Step.BACKUP: self.backup,
            Step.CHECK_BACKUP: self.check_backup,
            Step.ACT: self.act,
            Step.CHECK_ACTION: self.check_action,
            Step.VERIFY: self.verify,
            Step.RECORD: self.record,
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
        with acting(request.execution_id, f"state-machine:{request.step.value}", self.ctx.audit):
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
            return self.ctx.executions.transition(record.execution_id, new_status, expected=expected, changes=changes)
        except StatusConflict:
            current = self.ctx.executions.get(record.execution_id)
            if current.status == new_status:
                return current
            raise

    def _event(self, record: ExecutionRecord, event_type: str, step: Step, **detail: Any) -> None:
        self.ctx.audit.append(record.execution_id, event_type, f"state-machine:{step.value}", detail)

    def _load_acting(self, execution_id: str, step: Step) -> tuple[ExecutionRecord, Recommendation, AnyExecutor]:
        """`_load` for the steps after the backup began. A cancel asked for since stops here, before
        this step does anything: the Catch sends the execution to Rollback, which ends it cancelled."""
        loaded = self._load(execution_id)
        record = loaded[0]
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
        return loaded

    def _poll(
        self,
        request: StepRequest,
        executor: AnyExecutor,
        expected: ExecutionStatus,
        what: str,
        check: Callable[[], bool],
    ) -> dict[str, Any]:
        record = self._get(request.execution_id)
        done = check()
        attempts = 0 if done else record.poll_attempts + 1
        # The type's budget, unless the deployment sets one for every type (the local runtime does:
        # its waits take no time, so its checks count differently).
        budget = self.ctx.settings.max_poll_attempts or executor.polling.max_checks
        if attempts > budget:
            raise ActionFailed(f"{what} did not finish after {budget} checks")
        self.ctx.executions.update(
            request.execution_id,
            expected=expected,
            changes={"poll_attempts": attempts, "current_step": request.step.value},
        )
        if done:
            self._event(record, f"{what.replace(' ', '_')}_done", request.step)
        return {"done": done}

    # -- validate, plan, approve -----------------------------------------------------------------

    def validate(self, request: StepRequest) -> dict[str, Any]:
        record, recommendation, executor = self._load(request.execution_id)
        record = self._advance(record, S.VALIDATING, (S.PENDING, S.SCHEDULED), {"current_step": Step.VALIDATE.value})
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
                Step.VALIDATE,
                passed=not checked.errors,
                errors=checked.errors,
                warnings=checked.warnings,
                **checked.facts,
            )
        self._event(record, "validated", Step.VALIDATE, **result.model_dump(mode="json"))
        if not result.valid:
            self._event(record, "failed", Step.VALIDATE, reason="validation failed", errors=result.errors)
            self.ctx.executions.transition(
                record.execution_id,
                S.FAILED,
                expected=S.VALIDATING,
                changes={
                    "validation": result,
                    "success": False,
                    "completed_at": utc_now(),
                    "error_message": "validation failed: " + "; ".join(result.errors),
                },
            )
            return {"valid": False}
        self.ctx.executions.update(record.execution_id, expected=S.VALIDATING, changes={"validation": result})
        return {"valid": True}

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

    def plan(self, request: StepRequest) -> dict[str, Any]:
        record, recommendation, executor = self._load(request.execution_id)
        plan = executor.plan(recommendation, record.execution_id)
        policy = decide(
            self.ctx.settings.approval_policy,
            customer_id=record.customer_id,
            recommendation_type=record.recommendation_type,
            base_risk=record.validation.risk_level if record.validation else executor.risk_level,
            requires_human_approval=executor.requires_human_approval,
            auto_approve_requested=record.auto_approve_requested,
            estimated_monthly_savings=plan.estimated_monthly_savings,
            one_time_cost=plan.one_time_cost,
        )
        changes = {
            "plan": plan,
            "policy": policy,
            "estimated_monthly_savings": plan.estimated_monthly_savings,
            "current_step": Step.PLAN.value,
        }
        if record.dry_run:
            # What the policy would decide is part of the dry run's report; the last event ends it,
            # written before the status (see `record`).
            self._event(record, "approval_policy_decided", Step.PLAN, **policy.model_dump(mode="json"))
            self._event(record, "dry_run_completed", Step.PLAN, plan=plan.model_dump(mode="json"))
            self._advance(record, S.COMPLETED, S.VALIDATING, {**changes, "success": True, "completed_at": utc_now()})
            return {"dry_run": True, "auto_approve": False}
        self.ctx.executions.update(record.execution_id, expected=S.VALIDATING, changes=changes)
        self._event(record, "planned", Step.PLAN, plan=plan.model_dump(mode="json"))
        self._event(record, "approval_policy_decided", Step.PLAN, **policy.model_dump(mode="json"))
        return {"dry_run": False, "auto_approve": policy.auto_approve}

    def auto_approve(self, request: StepRequest) -> dict[str, Any]:
        record = self._get(request.execution_id)
        if record.policy is None or not record.policy.auto_approve:
            # Only the policy's own decision (recorded by the plan step) approves without a person.
            raise ActionFailed(f"execution {record.execution_id} was not cleared for automatic approval by the policy")
        self._advance(
            record, S.APPROVED, S.VALIDATING, {"auto_approved": True, "current_step": Step.AUTO_APPROVE.value}
        )
        self._event(
            record,
            "approved",
            Step.AUTO_APPROVE,
            approver="policy",
            reason=record.policy.reason,
            plan_hash=record.plan.fingerprint() if record.plan else None,
        )
        return {"approved": True}

    def request_approval(self, request: StepRequest) -> dict[str, Any]:
        record = self._get(request.execution_id)
        if not request.task_token:
            raise ActionFailed("request_approval needs the task token of the waiting state")
        # The token is stored before the status says "awaiting", so whoever sees that status
        # can complete the wait. It is never logged, returned by the API nor put in a link.
        self.ctx.executions.store_task_token(record.execution_id, request.task_token)
        settings = self.ctx.settings
        if record.status == S.AWAITING_APPROVAL and record.approval and record.approval_id:
            # A retried step (the message may not have gone out): the same approval and link again,
            # so a link already sent keeps working.
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
                {"approval": approval, "approval_id": approval_id, "current_step": Step.REQUEST_APPROVAL.value},
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
        self.ctx.executions.transition(
            record.execution_id,
            S.EXPIRED,
            expected=S.AWAITING_APPROVAL,
            changes={"success": False, "completed_at": utc_now(), "error_message": "no approval before the deadline"},
            remove=[TASK_TOKEN_ATTRIBUTE],
        )
        return {"status": S.EXPIRED.value}

    # -- act -------------------------------------------------------------------------------------

    def acquire_slot(self, request: StepRequest) -> dict[str, Any]:
        """Ask for one of the deployment's acting slots; without one the state machine waits and
        asks again. Nothing is touched until an execution holds a slot."""
        record = self._get(request.execution_id)
        first_ask = record.queued_at is None
        if first_ask:
            record = self.ctx.executions.update(
                record.execution_id,
                expected=S.APPROVED,
                changes={"queued_at": utc_now(), "current_step": Step.ACQUIRE_SLOT.value},
            )
        claim = self.ctx.limits.claim_slot(record)
        if claim.slot is None:
            if first_ask:
                self._event(
                    record,
                    "waiting_for_slot",
                    Step.ACQUIRE_SLOT,
                    acting=claim.acting,
                    ahead=claim.ahead,
                    limit=self.ctx.settings.max_concurrent_acting,
                )
            return {"acquired": False, "wait_seconds": self.ctx.limits.wait_before_asking_again(claim)}
        if record.acting_slot != claim.slot:
            # Right before the backup: the last moment at which nothing at all has been done. A
            # refusal fails the step (caught: the execution ends failed, and its slot is freed).
            recommendation, executor = self._subject(record)
            self._recheck(record, recommendation, executor, Step.ACQUIRE_SLOT, "before the backup")
            started = utc_now()
            self.ctx.executions.update(
                record.execution_id,
                expected=S.APPROVED,
                changes={"acting_slot": claim.slot, "acting_started_at": started},
            )
            waited = (started - record.queued_at).total_seconds() if record.queued_at else 0.0
            self._event(
                record, "slot_acquired", Step.ACQUIRE_SLOT, slot=claim.slot, acting=claim.acting, waited_seconds=waited
            )
        return {"acquired": True, "wait_seconds": 0}

    def backup(self, request: StepRequest) -> dict[str, Any]:
        record, recommendation, executor = self._load(request.execution_id)
        if record.backup is not None and record.status == S.EXECUTING:
            return {"started": True}  # a retry of a step that got through (its answer was lost)
        record = self._advance(record, S.EXECUTING, S.APPROVED, {"current_step": Step.BACKUP.value})
        made = executor.backup(recommendation, record.execution_id)
        backup = executor.stored(made)
        self.ctx.executions.update(
            record.execution_id, expected=S.EXECUTING, changes={"backup": backup, "rollback_available": True}
        )
        self._event(record, "backup_started", Step.BACKUP, backup=backup)
        if not executor.backup_waits:
            # The type's state machine has no backup wait (cost_engine.spine): the record is the backup,
            # and it is checked here, once, as CheckBackup would; Act follows at once.
            if not executor.backup_ready(recommendation, made):
                raise ActionFailed(f"the backup of {record.recommendation_type.value} was not complete once recorded")
            self._event(record, "backup_done", Step.BACKUP)
        return {"started": True}

    def check_backup(self, request: StepRequest) -> dict[str, Any]:
        record, recommendation, executor = self._load_acting(request.execution_id, Step.CHECK_BACKUP)
        backup = executor.read_backup(record.backup or {})
        return self._poll(
            request, executor, S.EXECUTING, "backup", lambda: executor.backup_ready(recommendation, backup)
        )

    def act(self, request: StepRequest) -> dict[str, Any]:
        record, recommendation, executor = self._load_acting(request.execution_id, Step.ACT)
        if record.action is not None:
            # A retry of a step that got through (its answer was lost): acting again would overwrite
            # what was recorded of the change with what the changed resource looks like now.
            return {"started": True}
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
        action = executor.stored(executor.apply(recommendation, executor.read_backup(record.backup or {})))
        self.ctx.executions.update(
            record.execution_id, expected=S.EXECUTING, changes={"action": action, "current_step": Step.ACT.value}
        )
        self._event(record, "action_started", Step.ACT, action=action)
        return {"started": True}

    def check_action(self, request: StepRequest) -> dict[str, Any]:
        record, recommendation, executor = self._load_acting(request.execution_id, Step.CHECK_ACTION)
        action = executor.read_action(record.action or {})
        return self._poll(request, executor, S.EXECUTING, "action", lambda: executor.apply_done(recommendation, action))

    def verify(self, request: StepRequest) -> dict[str, Any]:
        record, recommendation, executor = self._load_acting(request.execution_id, Step.VERIFY)
        record = self._advance(record, S.VERIFYING, S.EXECUTING, {"current_step": Step.VERIFY.value})
        result = executor.verify(recommendation, executor.read_action(record.action or {}))
        self.ctx.executions.update(record.execution_id, expected=S.VERIFYING, changes={"verification": result})
        self._event(record, "verified", Step.VERIFY, **result.model_dump(mode="json"))
        if not result.passed:
            raise ActionFailed("verification failed: " + "; ".join(result.failures))
        return {"passed": True}

    def record(self, request: StepRequest) -> dict[str, Any]:
        if self._get(request.execution_id).status == S.COMPLETED:
            return {"status": S.COMPLETED.value}  # a retry of a step that got through
        record, recommendation, executor = self._load_acting(request.execution_id, Step.RECORD)
        finalized = executor.finalize(recommendation, executor.read_action(record.action or {}))
        if finalized is not None:
            before, after = record.action or {}, executor.stored(finalized)
            # What finalizing added to the action record, or changed in it, logged before it is
            # recorded: a retried step that finds the record finalized already finds the event too.
            if finalizing := {k: v for k, v in after.items() if before.get(k) != v}:
                self._event(record, "finalized", Step.RECORD, **finalizing)
                record = self.ctx.executions.update(
                    record.execution_id, expected=S.VERIFYING, changes={"action": after}
                )
        savings = executor.measure_savings(recommendation, executor.read_backup(record.backup or {}))
        # The outcome is in the log before the status says so: a reader who sees `completed` finds
        # the whole log (only the limits' release follows, from the status change itself).
        self._event(record, "completed", Step.RECORD, actual_savings=savings)
        self._advance(
            record,
            S.COMPLETED,
            S.VERIFYING,
            {"success": True, "completed_at": utc_now(), "actual_savings": savings, "current_step": Step.RECORD.value},
        )
        return {"status": S.COMPLETED.value}

    # -- rollback --------------------------------------------------------------------------------

    def rollback(self, request: StepRequest) -> dict[str, Any]:
        record, recommendation, executor = self._load(request.execution_id)
        if record.status in ACTING_STATES:
            # Automatic: a step of the acting phase failed.
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
            self.ctx.executions.update(
                record.execution_id,
                expected=S.ROLLING_BACK,
                changes={"current_step": Step.ROLLBACK.value, "poll_attempts": 0},
            )
        else:
            raise Conflict(f"execution {record.execution_id} is '{record.status.value}': nothing to roll back")
        if record.refused_before_change and record.action is None:
            # The re-check refused before anything was changed: "restoring" would only put the
            # resource back to how it was at the backup, undoing what someone did to it since.
            result: dict[str, Any] = {"nothing_changed": True, "backup_kept": record.backup or {}}
        else:
            result = executor.stored(
                executor.rollback(
                    recommendation,
                    None if record.backup is None else executor.read_backup(record.backup),
                    None if record.action is None else executor.read_action(record.action),
                )
            )
        self.ctx.executions.update(record.execution_id, expected=S.ROLLING_BACK, changes={"rollback": result})
        self._event(record, "rollback_action", Step.ROLLBACK, rollback=result)
        return {"started": True}

    def check_rollback(self, request: StepRequest) -> dict[str, Any]:
        record, recommendation, executor = self._load(request.execution_id)
        rollback = record.rollback or {}
        if rollback.get("nothing_changed"):
            return self._poll(request, executor, S.ROLLING_BACK, "rollback", lambda: True)
        restored = executor.read_rollback(rollback)
        return self._poll(
            request, executor, S.ROLLING_BACK, "rollback", lambda: executor.rollback_done(recommendation, restored)
        )

    def record_rollback(self, request: StepRequest) -> dict[str, Any]:
        record = self._get(request.execution_id)
        automatic = record.success is None
        changes: dict[str, Any] = {
            "rollback_executed": True,
            "rollback_available": False,
            "completed_at": utc_now(),
            "actual_savings": 0.0,
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
            self.ctx.executions.transition(
                record.execution_id,
                target,
                expected=record.status,
                changes={"error_message": reason, "success": False, "completed_at": utc_now()},
            )
        return {"status": target.value}

    def record_failure(self, request: StepRequest) -> dict[str, Any]:
        """A step outside the acting phase failed: nothing was changed, the execution fails."""
        record = self._get(request.execution_id)
        reason = error_message(request.error)
        self._event(record, "failed", Step.RECORD_FAILURE, reason=reason)
        if record.status not in FINAL_STATES:
            self.ctx.executions.transition(
                record.execution_id,
                S.FAILED,
                expected=record.status,
                changes={"error_message": reason, "success": False, "completed_at": utc_now()},
            )
        return {"status": S.FAILED.value}
