"""Measuring a completed execution's saving from the bill (cost_engine.savings): when a person asks
(`POST /executions/{id}/measure`), and on one-time EventBridge Scheduler schedules made when the
execution completes, one for each of the deployment's windows (`savings_measure_days`)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from cost_engine import topology
from cost_engine.audit_trail import acting
from cost_engine.aws import aws_failure, error_code
from cost_engine.errors import Conflict, InvalidRequest
from cost_engine.models import MAX_WINDOW_DAYS, ExecutionStatus, SavingsMeasurement, utc_now
from cost_engine.savings import measure
from cost_engine.service.runs import Runs

# What a measurement schedule sends the trigger function (its `Input`), and the scheduled ones' caller.
MEASURE_SAVINGS_KEY = "measure_savings"
SCHEDULED = "schedule"
# The actor of what the engine does for savings on its own (the schedules, the scheduled measurements).
SAVINGS_ACTOR = "engine:savings"
# Scheduler's group of the engine's measurement schedules (the default group: nothing to create).
SCHEDULE_GROUP = "default"
# A day's cost is final in Cost Explorer about a day after it ends: a scheduled measurement comes
# that long after its window is over, so that it can be complete.
BILLING_DELAY = timedelta(days=1)
MEASURE_SCHEDULE_PREFIX = "cost-engine-measure-"


def schedule_name(execution_id: str, days: int) -> str:
    """One schedule per execution and window (Scheduler's names: at most 64 characters)."""
    return f"{MEASURE_SCHEDULE_PREFIX}{execution_id.removeprefix('exec-')}-{days}d"


def is_measure_event(event: dict[str, Any]) -> bool:
    """What a measurement schedule sends."""
    return isinstance(event.get(MEASURE_SAVINGS_KEY), dict)


def is_completed_event(event: dict[str, Any]) -> bool:
    """The engine's own event of an execution that completed."""
    return (
        event.get("source") == topology.EVENT_SOURCE
        and event.get("detail-type") == topology.STATUS_CHANGED_DETAIL_TYPE
        and (event.get("detail") or {}).get("new_status") == ExecutionStatus.COMPLETED.value
        and not (event.get("detail") or {}).get("dry_run")
    )


class Measurements(Runs):
    def measure_savings(
        self, execution_id: str, requested_by: str, window_days: int | None = None
    ) -> SavingsMeasurement:
        """Measure and record the execution's saving over windows of `window_days` (by default the
        deployment's longest). 409 unless the execution completed."""
        days = window_days or max(self.ctx.settings.savings_measure_days)
        if not 1 <= days <= MAX_WINDOW_DAYS:
            raise InvalidRequest(f"window_days must be between 1 and {MAX_WINDOW_DAYS}, not {days}")
        record = self.ctx.executions.get(execution_id)
        if record.status != ExecutionStatus.COMPLETED:
            raise Conflict(
                f"execution {execution_id} is '{record.status.value}': only a completed execution's saving"
                " can be measured"
            )
        if record.dry_run:
            raise Conflict(f"execution {execution_id} was a dry run: it changed nothing, so it saved nothing")
        recommendation = self.ctx.recommendations.get(record.recommendation_id)
        executor = self.ctx.executor_for(recommendation)
        action = executor.read_action(record.action) if record.action else None
        scope = executor.cost_scope(recommendation, action)
        measurement = measure(self.ctx.clients.ce, record, scope, window_days=days, requested_by=requested_by)
        self.ctx.executions.add_measurement(record, measurement)
        self.ctx.audit.append(
            execution_id,
            "savings_measured",
            SAVINGS_ACTOR if requested_by == SCHEDULED else requested_by,
            measurement.model_dump(mode="json"),
        )
        return measurement

    def schedule_measurements(self, execution_id: str, completed_at: datetime, target_arn: str) -> list[str]:
        """One-time schedules that measure a completed execution's saving once each window is over
        (and its last day's cost final); they delete themselves once they have run. Idempotent: a
        schedule that exists already is left as it is. The names of the schedules."""
        role_arn = self.ctx.settings.scheduler_role_arn
        if not role_arn:
            raise Conflict("the deployment has no scheduler role: savings measurements cannot be scheduled")
        # The schedules are the engine's changes for this execution: each is an `aws_call` in its log
        # (written together, once both are made).
        with self.ctx.audit.batched(), acting(execution_id, SAVINGS_ACTOR, self.ctx.audit):
            return [
                self._schedule_measurement(execution_id, completed_at, days, target_arn, role_arn)
                for days in self.ctx.settings.savings_measure_days
            ]

    def _schedule_measurement(
        self, execution_id: str, completed_at: datetime, days: int, target_arn: str, role_arn: str
    ) -> str:
        """A schedule that measures over windows of `days` once the window is over; its name."""
        name = schedule_name(execution_id, days)
        # The window's last day ends `days` whole days after the day of the change.
        due = completed_at.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=days + 1)
        due = max(due + BILLING_DELAY, utc_now() + timedelta(minutes=1))
        event = {MEASURE_SAVINGS_KEY: {"execution_id": execution_id, "window_days": days}}
        try:
            self.ctx.clients.scheduler.create_schedule(
                Name=name,
                GroupName=SCHEDULE_GROUP,
                Description=f"Measure the saving of {execution_id} over {days} days",
                ScheduleExpression=f"at({due.strftime('%Y-%m-%dT%H:%M:%S')})",
                ScheduleExpressionTimezone="UTC",
                FlexibleTimeWindow={"Mode": "OFF"},
                Target={"Arn": target_arn, "RoleArn": role_arn, "Input": json.dumps(event)},
                ActionAfterCompletion="DELETE",
            )
        except ClientError as error:
            if error_code(error) != "ConflictException":  # made by an earlier delivery of the event
                raise aws_failure("CreateSchedule", error) from error
        return name
