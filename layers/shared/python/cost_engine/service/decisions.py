"""Approvals: a person's decision through the API or the emailed link, carried to the waiting run."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from cost_engine.approval_links import LinkCheck
from cost_engine.audit_trail import acting
from cost_engine.aws import error_code
from cost_engine.errors import TASK_WAIT_OVER_ERRORS, ApprovalRefused, Conflict, PlanChanged
from cost_engine.models import ApprovalDecision, ExecutionRecord, ExecutionStatus, utc_now
from cost_engine.service.runs import Runs
from cost_engine.stores.executions import TASK_TOKEN_ATTRIBUTE

S = ExecutionStatus


@dataclass(frozen=True)
class LinkOutcome:
    """What an approval link leads to: the HTTP status, a title and message for the page, and the
    execution (when there is one to show). `decidable` is true only while a decision can be made."""

    status_code: int
    title: str
    message: str
    record: ExecutionRecord | None = None
    decidable: bool = False


class Decisions(Runs):
    def decide(
        self,
        execution_id: str,
        decision: ApprovalDecision,
        approve: bool,
        actor: str,
        via: str = "api",
        source: str | None = None,
        record: ExecutionRecord | None = None,
    ) -> ExecutionRecord:
        """Approve or reject a waiting execution. The first decision wins: the write is conditional
        on the status still being awaiting_approval, so a second (or concurrent) one is a 409.

        `actor` is who decided as the engine knows it (the authenticated caller, or the link), and is
        what the record keeps as the approver; the decision's name is kept beside it, for display.
        `record` is the execution as the caller just read it, if it did (the write checks the status
        again)."""
        record = record if record is not None else self.ctx.executions.get(execution_id)
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
        if approve:
            # Its place in the queue for an acting slot: slots go out in the order of approval.
            changes["queued_at"] = now
        else:
            changes |= {
                "success": False,
                "completed_at": now,
                "error_message": f"rejected by {decision.approver} ({actor})"
                + (f": {decision.comment}" if decision.comment else ""),
            }
        # The status change's event and the decision's are written together.
        with self.ctx.audit.batched():
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
