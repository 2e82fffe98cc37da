"""The Step Functions runs of an execution: starting one, finding the one that drives it now, and
reading their history. The base of the service's parts (start, decisions, interventions)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from cost_engine.aws import error_code
from cost_engine.context import EngineContext
from cost_engine.errors import cause_message
from cost_engine.models import ExecutionRecord, ExecutionStatus
from cost_engine.transitions import FINAL_STATES

S = ExecutionStatus


def iso_seconds(moment: datetime | None) -> str | None:
    """A time as the state machines' input and the audit log write it: UTC, to the second."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def execution_arn(state_machine_arn: str, name: str) -> str:
    return state_machine_arn.replace(":stateMachine:", ":execution:", 1) + f":{name}"


def rollback_run_name(execution_id: str, run: int) -> str:
    """The name of an execution's `run`th rollback run (its first run is named after the execution)."""
    return f"{execution_id}-rollback-{run}"


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


class Runs:
    """The state machine runs of executions; every part of the service builds on these."""

    def __init__(self, context: EngineContext) -> None:
        self.ctx = context

    @property
    def _sfn(self) -> Any:
        return self.ctx.clients.stepfunctions

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
                return execution_arn(state_machine_arn, name)
            message = f"the state machine could not be started: {error}"
            target = S.FAILED if fail_from != S.ROLLING_BACK else S.ROLLBACK_FAILED
            changes: dict[str, Any] = {"error_message": message}
            if fail_from != S.ROLLING_BACK:  # it has no run: the ARN its record was created with names none
                changes["state_machine_execution_arn"] = None
            self.ctx.executions.transition(record.execution_id, target, expected=fail_from, changes=changes)
            self.ctx.audit.append(record.execution_id, "start_failed", "api", {"error": message})
            raise
        return str(started["executionArn"])

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
            arn = execution_arn(state_machine_arn, record.execution_id)
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
