"""A person's interventions in a running or finished execution: cancel and rollback."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from cost_engine.audit_trail import acting
from cost_engine.errors import Conflict, StatusConflict, UnsupportedType
from cost_engine.models import ExecutionRecord, ExecutionStatus, utc_now
from cost_engine.service.runs import Runs, rollback_run_name
from cost_engine.stores.executions import TASK_TOKEN_ATTRIBUTE
from cost_engine.transitions import (
    CANCEL_BY_ROLLBACK_STATES,
    CANCELLABLE_STATES,
    FINAL_STATES,
    ROLLBACK_REQUESTABLE_STATES,
)

S = ExecutionStatus
# An execution whose run ended in these may have half-changed its resource: a rollback run restores it.
STRANDED_ROLLBACK_STATES = frozenset({S.EXECUTING, S.VERIFYING, S.WATCHING, S.ROLLING_BACK})


class Interventions(Runs):
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
            "error": None,
        }
        name = rollback_run_name(record.execution_id, run)
        self._start(state_machine_arn, name, state_input, record, S.ROLLING_BACK)
        return record
