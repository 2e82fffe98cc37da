"""`schedule_instance`: an off-hours stop/start schedule for an EC2 instance, with EventBridge Scheduler.

Two schedules call EC2 through Scheduler's universal targets: StopInstances (with Hibernate when the
instance was launched for hibernation) at the end of the on hours, StartInstances at their start,
both evaluated in the instance's own time zone. Nothing is destroyed, so the backup is the record of
the instance's state; rollback deletes the schedules of the execution and leaves the instance running.
"""

from __future__ import annotations

import json
import re
import zoneinfo
from datetime import datetime, time, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from pydantic import ValidationError, field_validator, model_validator

from cost_engine.aws import aws_failure, error_code
from cost_engine.business_rules import DependencyRule
from cost_engine.ec2_instances import GONE_STATES, Ec2InstanceReads
from cost_engine.errors import ActionFailed
from cost_engine.executors.base import BaseExecutor, Permission, StepRecord
from cost_engine.executors.registry import register_executor
from cost_engine.models import (
    ExecutionPlan,
    Recommendation,
    RecommendationType,
    RiskLevel,
    RollbackPlan,
    StrictModel,
    ValidationResult,
    VerificationResult,
    utc_now,
)
from cost_engine.pricing import price_catalog

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import InstanceTypeDef
    from mypy_boto3_scheduler.type_defs import GetScheduleOutputTypeDef

WEEKDAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")  # in datetime.weekday() order
SCHEDULABLE_STATES = frozenset({"running", "stopped"})
HOURS_PER_WEEK = 168
STOP_TARGET_ARN = "arn:aws:scheduler:::aws-sdk:ec2:stopInstances"
START_TARGET_ARN = "arn:aws:scheduler:::aws-sdk:ec2:startInstances"
# Schedule names: 1-64 characters of [0-9a-zA-Z-_.]. Every schedule of the engine starts with this,
# followed by the instance id, so the schedules of one instance are found by prefix.
NAME_PREFIX = "ce-"
KINDS = ("stop", "start")

_TIME = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")
_GROUP = re.compile(r"[0-9a-zA-Z._-]{1,64}")
_INSTANCE_ARN = "arn:{partition}:ec2:{region}:{account}:instance/*"
# Present in some tz databases but not time zones a schedule can be evaluated in.
_NOT_ZONES = frozenset({"Factory", "localtime", "posixrules"})


@lru_cache(maxsize=1)
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) - _NOT_ZONES


class ScheduleInstanceParameters(StrictModel):
    """When the instance runs: from start_time to stop_time on each of `weekdays`, in `timezone`.
    A stop_time earlier than start_time means the on hours run past midnight into the next day."""

    timezone: str
    weekdays: list[str]
    start_time: str
    stop_time: str
    schedule_group: str = "default"

    @field_validator("timezone")
    @classmethod
    def _known_time_zone(cls, value: str) -> str:
        if value not in _time_zones():
            raise ValueError(
                f"'{value}' is not an IANA time zone name: use one such as 'Europe/Paris', 'America/New_York' or 'UTC'"
            )
        return value

    @field_validator("weekdays")
    @classmethod
    def _known_weekdays(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError(
                "no weekday given: list the days the instance runs, e.g. ['MON', 'TUE', 'WED', 'THU', 'FRI']"
            )
        days = [day.strip().upper() for day in value]
        for given, day in zip(value, days, strict=True):
            if day not in WEEKDAYS:
                raise ValueError(f"'{given}' is not a weekday: use {', '.join(WEEKDAYS)}")
        repeated = sorted({day for day in days if days.count(day) > 1}, key=WEEKDAYS.index)
        if repeated:
            raise ValueError(f"{', '.join(repeated)} listed more than once: list each weekday once")
        return sorted(days, key=WEEKDAYS.index)

    @field_validator("start_time", "stop_time")
    @classmethod
    def _time_of_day(cls, value: str) -> str:
        if not _TIME.fullmatch(value):
            raise ValueError(f"'{value}' is not a time of day: use HH:MM on a 24-hour clock, e.g. '08:00' or '19:30'")
        return value

    @field_validator("schedule_group")
    @classmethod
    def _group_name(cls, value: str) -> str:
        if not _GROUP.fullmatch(value):
            raise ValueError(
                f"'{value}' is not a schedule group name: 1-64 letters, digits, '-', '_' or '.' "
                "(leave it out to use 'default')"
            )
        return value

    @model_validator(mode="after")
    def _start_differs_from_stop(self) -> ScheduleInstanceParameters:
        if self.start_time == self.stop_time:
            raise ValueError(
                f"start_time and stop_time are both {self.start_time}: give the instance different times "
                "to start and to stop"
            )
        return self


_EXAMPLES = {
    "timezone": "'Europe/Paris'",
    "weekdays": "['MON', 'TUE', 'WED', 'THU', 'FRI']",
    "start_time": "'08:00'",
    "stop_time": "'19:00'",
    "schedule_group": "'default'",
}


def parameter_errors(error: ValidationError) -> list[str]:
    """One readable line per problem, naming the parameter and what to give instead."""
    problems = []
    for problem in error.errors():
        field = str(problem["loc"][0]) if problem["loc"] else "parameters"
        message = str(problem["msg"]).removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = f"unknown parameter: the parameters are {', '.join(ScheduleInstanceParameters.model_fields)}"
        elif problem["type"] == "missing":
            message = f"missing: give it, e.g. {_EXAMPLES.get(field, '')}"
        elif problem["type"] != "value_error":
            message = f"{message}: give it like {_EXAMPLES.get(field, '')}"
        problems.append(f"invalid parameters for schedule_instance: {field}: {message}")
    return problems


# -- the schedule's times -------------------------------------------------------------------------


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def on_minutes_per_day(params: ScheduleInstanceParameters) -> int:
    return (_minutes(params.stop_time) - _minutes(params.start_time)) % (24 * 60)


def stop_weekdays(params: ScheduleInstanceParameters) -> list[str]:
    """The days the stop fires: the same days, or the next ones when the on hours pass midnight."""
    if _minutes(params.stop_time) > _minutes(params.start_time):
        return list(params.weekdays)
    return sorted((WEEKDAYS[(WEEKDAYS.index(d) + 1) % 7] for d in params.weekdays), key=WEEKDAYS.index)


def off_hours_per_week(params: ScheduleInstanceParameters) -> float:
    return HOURS_PER_WEEK - len(params.weekdays) * on_minutes_per_day(params) / 60


def _day_field(days: list[str]) -> str:
    """Scheduler's day-of-week field. Runs of three or more days become ranges (MON-FRI); SUN, which
    cron numbers before MON, stays on its own so that no range wraps around."""
    parts: list[str] = []
    run: list[str] = []
    for day in [*(d for d in WEEKDAYS[:6] if d in days), None]:
        if day is not None and run and WEEKDAYS.index(day) == WEEKDAYS.index(run[-1]) + 1:
            run.append(day)
            continue
        if run:
            parts.append(f"{run[0]}-{run[-1]}" if len(run) >= 3 else ",".join(run))
        run = [day] if day is not None else []
    if "SUN" in days:
        parts.append("SUN")
    return ",".join(parts)


def cron_expression(hhmm: str, days: list[str]) -> str:
    hours, minutes = hhmm.split(":")
    return f"cron({int(minutes)} {int(hours)} ? * {_day_field(days)} *)"


def next_occurrence(hhmm: str, days: list[str], timezone: str, now: datetime) -> datetime:
    """The next time at `hhmm` local time on one of `days`, in `timezone`."""
    zone = zoneinfo.ZoneInfo(timezone)
    local_now = now.astimezone(zone)
    hours, minutes = hhmm.split(":")
    at = time(int(hours), int(minutes))
    for ahead in range(8):
        day = local_now.date() + timedelta(days=ahead)
        candidate = datetime.combine(day, at, tzinfo=zone)
        if WEEKDAYS[day.weekday()] in days and candidate > local_now:
            return candidate
    raise AssertionError("a listed weekday comes within eight days")


def schedule_names(instance_id: str, execution_id: str) -> dict[str, str]:
    """Names derived from the instance and the execution (without its 'exec-' prefix, to fit 64)."""
    token = execution_id.removeprefix("exec-")
    names = {kind: f"{NAME_PREFIX}{instance_id}-{token}-{kind}" for kind in KINDS}
    if any(len(name) > 64 for name in names.values()):
        raise ActionFailed(f"'{instance_id}' is too long to name a schedule after: it is not an EC2 instance id")
    return names


def _description(execution_id: str, kind: str, instance_id: str, params: ScheduleInstanceParameters) -> str:
    at = params.stop_time if kind == "stop" else params.start_time
    return (
        f"cost-engine {execution_id}: {kind} {instance_id} at {at} {params.timezone} "
        f"(on hours {params.start_time}-{params.stop_time} {','.join(params.weekdays)}; schedule_instance)"
    )


def _is_ours(schedule: GetScheduleOutputTypeDef | dict[str, Any], execution_id: str) -> bool:
    return f"cost-engine {execution_id}:" in str(schedule.get("Description") or "")


# -- the records ----------------------------------------------------------------------------------


class ScheduleSpec(StepRecord):
    """What one schedule must be: as it is created, and as verification compares it."""

    name: str
    expression: str
    target_arn: str
    input: dict[str, Any]


class ScheduleBackup(StepRecord):
    """The instance's state before it is scheduled (nothing is destroyed: this record is the backup),
    and the parameters its schedules are made from."""

    execution_id: str
    instance_id: str
    instance_type: str
    original_state: str
    hibernate: bool
    stop_mode: str
    schedule_group: str
    schedule_names: dict[str, str]
    parameters: ScheduleInstanceParameters


class ScheduleCreation(StepRecord):
    """The schedules as created, by kind ("stop", "start"), and which of them this call created."""

    execution_id: str
    instance_id: str
    schedule_group: str
    timezone: str
    hibernate: bool
    role_arn: str
    schedules: dict[str, ScheduleSpec]
    created_now: list[str]


class ScheduleRemoval(StepRecord):
    """The execution's schedules deleted, and the instance left running."""

    # None when no backup or action was recorded: no schedule was made, none is looked for.
    execution_id: str | None
    instance_id: str
    schedule_group: str
    schedule_names: list[str]
    deleted_schedules: list[str]
    state_found: str
    target_state: str


@register_executor
class ScheduleInstanceExecutor(
    Ec2InstanceReads,
    BaseExecutor[ScheduleInstanceParameters, "InstanceTypeDef", ScheduleBackup, ScheduleCreation, ScheduleRemoval],
):
    recommendation_type = RecommendationType.SCHEDULE_INSTANCE
    # Its schedules act later: the recommendation's own alarms and thresholds are watched, no defaults.
    watches = True
    savings_method = "stopped hours: the instance's cost before the schedule, against after it"
    flow = (
        "Validate → (dry run → report) → approval → record the instance's state → create the "
        "off-hours stop and start schedules → poll until both are enabled → verify their targets, "
        "times and time zone → record; Catch → rollback (delete the schedules, leave the instance "
        "running)."
    )
    rolled_back_note = "A manual rollback removed the schedules; the instance runs."
    resource_name = "EC2 instance"
    risk_level = RiskLevel.MEDIUM
    # Stopping and starting on a schedule changes run-time state, which no template declares.
    cloudformation_managed = DependencyRule.WARN
    load_balancer_targets = DependencyRule.WARN
    permissions = (
        Permission(
            (
                "ec2:DescribeInstances",
                "ec2:DescribeVolumes",
                "autoscaling:DescribeAutoScalingInstances",
                # ListSchedules supports no resource-level permission: it is granted on "*" or not at all.
                "scheduler:ListSchedules",
            )
        ),
        Permission(
            ("scheduler:CreateSchedule", "scheduler:GetSchedule", "scheduler:DeleteSchedule"),
            ("arn:{partition}:scheduler:{region}:{account}:schedule/*",),
        ),
        Permission(("scheduler:GetScheduleGroup",), ("arn:{partition}:scheduler:{region}:{account}:schedule-group/*",)),
        # Creating a schedule passes its execution role to EventBridge Scheduler.
        Permission(
            ("iam:PassRole",),
            ("arn:{partition}:iam::{account}:role/*",),
            conditions={"StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}},
        ),
        # Rollback leaves the instance running, starting it if a schedule had stopped it.
        Permission(("ec2:StartInstances",), (_INSTANCE_ARN,)),
    )

    # -- reading -------------------------------------------------------------------------------

    def _params(self, recommendation: Recommendation) -> ScheduleInstanceParameters:
        try:
            return self.parameters(recommendation)
        except ValidationError as error:
            raise ActionFailed("; ".join(parameter_errors(error))) from error

    def _role_arn(self) -> str | None:
        return self.settings.scheduler_role_arn if self.settings else None

    def _schedule(self, name: str, group: str) -> GetScheduleOutputTypeDef | None:
        try:
            return self.clients.scheduler.get_schedule(Name=name, GroupName=group)
        except ClientError as error:
            if error_code(error) == "ResourceNotFoundException":
                return None
            raise aws_failure("GetSchedule", error) from error

    def _stop_mode(self, instance: InstanceTypeDef) -> tuple[bool, str]:
        """(hibernate?, why): AWS hibernates only instances launched with hibernation configured,
        from an encrypted EBS root volume; anything else gets a plain stop."""
        instance_id = instance["InstanceId"]
        if not instance.get("HibernationOptions", {}).get("Configured"):
            return False, f"plain stop: {instance_id} was not launched with hibernation configured"
        if instance.get("RootDeviceType") != "ebs":
            return False, f"plain stop: {instance_id} has no EBS root volume, which hibernation needs"
        root = instance.get("RootDeviceName")
        volume_ids = [
            m["Ebs"]["VolumeId"]
            for m in instance.get("BlockDeviceMappings", [])
            if m.get("DeviceName") == root and "Ebs" in m
        ]
        volumes = self.clients.ec2.describe_volumes(VolumeIds=volume_ids)["Volumes"] if volume_ids else []
        if not volumes or not volumes[0].get("Encrypted"):
            return False, f"plain stop: the root volume of {instance_id} is not encrypted, which hibernation needs"
        return True, f"hibernate: {instance_id} is configured for hibernation with an encrypted EBS root volume"

    def _auto_scaling_groups(self, instance_id: str) -> list[str]:
        members = self.clients.autoscaling.describe_auto_scaling_instances(InstanceIds=[instance_id])
        return [m["AutoScalingGroupName"] for m in members.get("AutoScalingInstances", [])]

    def _engine_schedules_of(self, instance_id: str) -> list[str]:
        names: list[str] = []
        for page in self.clients.scheduler.get_paginator("list_schedules").paginate(
            NamePrefix=f"{NAME_PREFIX}{instance_id}-"
        ):
            names += [f"{s.get('GroupName', 'default')}/{s['Name']}" for s in page.get("Schedules", [])]
        return names

    def _group_exists(self, group: str) -> bool:
        try:
            self.clients.scheduler.get_schedule_group(Name=group)
        except ClientError as error:
            if error_code(error) == "ResourceNotFoundException":
                return False
            raise aws_failure("GetScheduleGroup", error) from error
        return True

    # -- validate and plan ---------------------------------------------------------------------

    def validate(self, recommendation: Recommendation) -> ValidationResult:
        # The base's opening, but for two things it does not do: parameters that do not parse are
        # refused one readable line per problem (parameter_errors) rather than with pydantic's report,
        # and a missing Scheduler role, the deployment's to fix, is the first refusal whatever else is
        # refused, a missing instance included.
        try:
            self.parameters(recommendation)
        except ValidationError as error:
            return self._invalid(parameter_errors(error))
        result = super().validate(recommendation)
        if self._role_arn():
            return result
        no_role = (
            "no EventBridge Scheduler role is configured (SCHEDULER_ROLE_ARN): deploy the stack, which creates "
            "one, or set it to a role that scheduler.amazonaws.com can assume to stop and start instances"
        )
        return result.model_copy(update={"valid": False, "errors": [no_role, *result.errors]})

    def find(self, recommendation: Recommendation, params: ScheduleInstanceParameters) -> InstanceTypeDef | None:
        return self._instance(recommendation.resource_id)

    def check(
        self, recommendation: Recommendation, params: ScheduleInstanceParameters, instance: InstanceTypeDef
    ) -> ValidationResult:
        errors: list[str] = []
        warnings: list[str] = []
        instance_id = recommendation.resource_id
        state = instance["State"]["Name"]
        if state not in SCHEDULABLE_STATES:
            errors.append(f"instance {instance_id} is '{state}': only running or stopped instances are scheduled")
        for group in self._auto_scaling_groups(instance_id):
            errors.append(
                f"instance {instance_id} belongs to Auto Scaling group '{group}', which would replace it when a "
                "schedule stops it: schedule the group's capacity instead (scheduled scaling actions)"
            )
        if not self._group_exists(params.schedule_group):
            errors.append(
                f"schedule group '{params.schedule_group}' does not exist in {recommendation.region}: create it, "
                "or leave schedule_group out to use 'default'"
            )
        else:
            existing = self._engine_schedules_of(instance_id)
            if existing:
                warnings.append(
                    f"instance {instance_id} already has cost-engine schedules ({', '.join(existing)}): "
                    "they keep firing alongside the new ones; roll back their executions if they are replaced"
                )
        if state == "stopped":
            warnings.append(
                f"instance {instance_id} is stopped now: the start schedule will run it from {params.start_time} "
                f"on {','.join(params.weekdays)}"
            )
        hibernate, why = self._stop_mode(instance)
        if not hibernate and instance.get("HibernationOptions", {}).get("Configured"):
            warnings.append(why)
        return ValidationResult(
            valid=not errors, errors=errors, warnings=warnings, risk_level=self.risk_level, estimated_duration=2
        )

    def _monthly_savings(self, instance_type: str, params: ScheduleInstanceParameters) -> tuple[float | None, str]:
        catalog = price_catalog()
        hourly = catalog.ec2_hourly.get(instance_type)
        off_week = off_hours_per_week(params)
        off_month = off_week / HOURS_PER_WEEK * catalog.hours_per_month
        if hourly is None:
            return None, ""
        basis = (
            f"{catalog.basis}: {instance_type} at ${hourly}/h x {off_month:.1f} h/month stopped "
            f"({off_week:g} of {HOURS_PER_WEEK} h a week, on a {catalog.hours_per_month} h month); its EBS volumes "
            "still cost while it is stopped, so no storage is counted as saved"
        )
        return round(hourly * off_month, 2), basis

    def _schedule_specs(
        self, instance_id: str, execution_id: str, params: ScheduleInstanceParameters, hibernate: bool
    ) -> dict[str, ScheduleSpec]:
        """What each schedule must be, by kind: as it is created, and as verification compares it."""
        names = schedule_names(instance_id, execution_id)
        stop_input: dict[str, Any] = {"InstanceIds": [instance_id]}
        if hibernate:
            stop_input["Hibernate"] = True
        return {
            "stop": ScheduleSpec(
                name=names["stop"],
                expression=cron_expression(params.stop_time, stop_weekdays(params)),
                target_arn=STOP_TARGET_ARN,
                input=stop_input,
            ),
            "start": ScheduleSpec(
                name=names["start"],
                expression=cron_expression(params.start_time, params.weekdays),
                target_arn=START_TARGET_ARN,
                input={"InstanceIds": [instance_id]},
            ),
        }

    def _foreign_schedules(self, specs: dict[str, ScheduleSpec], group: str, execution_id: str) -> list[str]:
        foreign = []
        for spec in specs.values():
            existing = self._schedule(spec.name, group)
            if existing is not None and not _is_ours(existing, execution_id):
                foreign.append(spec.name)
        return foreign

    def plan(self, recommendation: Recommendation, execution_id: str) -> ExecutionPlan:
        params = self._params(recommendation)
        instance_id = recommendation.resource_id
        instance = self._require_instance(instance_id)
        instance_type = instance["InstanceType"]
        state = instance["State"]["Name"]
        hibernate, why = self._stop_mode(instance)
        specs = self._schedule_specs(instance_id, execution_id, params, hibernate)
        foreign = self._foreign_schedules(specs, params.schedule_group, execution_id)
        if foreign:
            raise ActionFailed(
                f"schedule(s) {', '.join(foreign)} already exist in group '{params.schedule_group}' and were not "
                "created by this execution: they are left alone; delete them or use another schedule_group"
            )
        savings, basis = self._monthly_savings(instance_type, params)
        if savings is None:
            savings = recommendation.estimated_monthly_savings
            basis = f"no catalog price for {instance_type}: the recommendation's own estimate"
        elif state == "stopped":
            basis += "; the instance is stopped now, so this is against running it around the clock"
        now = utc_now()
        next_stop = next_occurrence(params.stop_time, stop_weekdays(params), params.timezone, now)
        next_start = next_occurrence(params.start_time, params.weekdays, params.timezone, now)
        stop_verb = "Hibernate" if hibernate else "Stop"
        days = ",".join(params.weekdays)
        return ExecutionPlan(
            summary=(
                f"Run EC2 instance {instance_id} ({instance_type}, {state}) only "
                f"{params.start_time}-{params.stop_time} on {days} ({params.timezone}); {why}"
            ),
            actions=[
                f"Record the state of {instance_id} ({state}); nothing is destroyed",
                f"Create schedule '{specs['stop'].name}' in group '{params.schedule_group}': "
                f"{specs['stop'].expression} in {params.timezone} → ec2:StopInstances "
                f"{json.dumps(specs['stop'].input)} ({stop_verb.lower()}; next {next_stop.isoformat()})",
                f"Create schedule '{specs['start'].name}' in group '{params.schedule_group}': "
                f"{specs['start'].expression} in {params.timezone} → ec2:StartInstances "
                f"{json.dumps(specs['start'].input)} (next {next_start.isoformat()})",
                "Wait until both schedules are enabled",
                "Verify each schedule's target, input, expression, time zone and role",
            ],
            backup=[f"The state of {instance_id} ({state}) and its type; no AMI is needed, nothing is destroyed"],
            rollback_plan=RollbackPlan(
                execution_id=execution_id,
                rollback_steps=[
                    f"Delete schedules '{specs['stop'].name}' and '{specs['start'].name}'",
                    f"Start {instance_id} if a schedule stopped it, and wait until it is running",
                ],
                estimated_duration=3,
                risk_level=RiskLevel.LOW,
                requires_approval=False,
            ),
            estimated_monthly_savings=savings,
            savings_basis=basis,
            resource={
                "instance_id": instance_id,
                "instance_type": instance_type,
                "state": state,
                "hibernate": hibernate,
                "stop_mode": why,
                "schedule_group": params.schedule_group,
                "timezone": params.timezone,
                "schedules": {
                    kind: spec.model_dump(include={"name", "expression", "input"}) for kind, spec in specs.items()
                },
                "off_hours_per_week": off_hours_per_week(params),
                "next_stop": next_stop.isoformat(),
                "next_start": next_start.isoformat(),
            },
        )

    # -- backup --------------------------------------------------------------------------------

    def backup(self, recommendation: Recommendation, execution_id: str) -> ScheduleBackup:
        params = self._params(recommendation)
        instance_id = recommendation.resource_id
        instance = self._require_instance(instance_id)
        hibernate, why = self._stop_mode(instance)
        return ScheduleBackup(
            execution_id=execution_id,
            instance_id=instance_id,
            instance_type=instance["InstanceType"],
            original_state=instance["State"]["Name"],
            hibernate=hibernate,
            stop_mode=why,
            schedule_group=params.schedule_group,
            schedule_names=schedule_names(instance_id, execution_id),
            # Every parameter set, so that the record keeps the defaults too (only what was set is stored).
            parameters=ScheduleInstanceParameters.model_validate(params.model_dump()),
        )

    def backup_ready(self, recommendation: Recommendation, backup: ScheduleBackup) -> bool:
        return True  # a record, ready as soon as it is written

    # -- act -----------------------------------------------------------------------------------

    def apply(self, recommendation: Recommendation, backup: ScheduleBackup) -> ScheduleCreation:
        role_arn = self._role_arn()
        if not role_arn:
            raise ActionFailed("no EventBridge Scheduler role is configured (SCHEDULER_ROLE_ARN)")
        params = backup.parameters
        execution_id = backup.execution_id
        instance_id = backup.instance_id
        group = backup.schedule_group
        specs = self._schedule_specs(instance_id, execution_id, params, backup.hibernate)
        created: list[str] = []
        for kind, spec in specs.items():
            existing = self._schedule(spec.name, group)
            if existing is not None:
                # A retried step finds what it already made; someone else's schedule is never adopted.
                if not _is_ours(existing, execution_id):
                    raise ActionFailed(
                        f"schedule {group}/{spec.name} exists and was not created by {execution_id}: left alone"
                    )
                continue
            try:
                self.clients.scheduler.create_schedule(
                    Name=spec.name,
                    GroupName=group,
                    Description=_description(execution_id, kind, instance_id, params),
                    ScheduleExpression=spec.expression,
                    ScheduleExpressionTimezone=params.timezone,
                    FlexibleTimeWindow={"Mode": "OFF"},
                    State="ENABLED",
                    Target={"Arn": spec.target_arn, "RoleArn": role_arn, "Input": json.dumps(spec.input)},
                    # Scheduler's own idempotency key, for a request retried by the SDK.
                    ClientToken=f"{execution_id.removeprefix('exec-')}-{kind}",
                )
            except ClientError as error:
                if error_code(error) != "ConflictException":  # created meanwhile: checked below and in verify
                    raise aws_failure("CreateSchedule", error) from error
            created.append(spec.name)
        return ScheduleCreation(
            execution_id=execution_id,
            instance_id=instance_id,
            schedule_group=group,
            timezone=params.timezone,
            hibernate=backup.hibernate,
            role_arn=role_arn,
            schedules=specs,
            created_now=created,
        )

    def apply_done(self, recommendation: Recommendation, action: ScheduleCreation) -> bool:
        for spec in action.schedules.values():
            schedule = self._schedule(spec.name, action.schedule_group)
            if schedule is None or not _is_ours(schedule, action.execution_id):
                raise ActionFailed(f"schedule {action.schedule_group}/{spec.name} is missing after creation")
            if schedule.get("State") != "ENABLED":
                return False
        return True

    def verify(self, recommendation: Recommendation, action: ScheduleCreation) -> VerificationResult:
        checks: list[str] = []
        failures: list[str] = []
        group = action.schedule_group
        for spec in action.schedules.values():
            schedule = self._schedule(spec.name, group)
            where = f"schedule {group}/{spec.name}"
            if schedule is None:
                failures.append(f"{where} does not exist")
                continue
            target = schedule.get("Target", {})
            try:
                actual_input = json.loads(target.get("Input") or "null")
            except ValueError:
                actual_input = target.get("Input")
            comparisons = [
                ("state", schedule.get("State"), "ENABLED"),
                ("target", target.get("Arn"), spec.target_arn),
                ("input", actual_input, spec.input),
                ("expression", schedule.get("ScheduleExpression"), spec.expression),
                ("time zone", schedule.get("ScheduleExpressionTimezone"), action.timezone),
                ("flexible time window", schedule.get("FlexibleTimeWindow", {}).get("Mode"), "OFF"),
                ("role", target.get("RoleArn"), action.role_arn),
            ]
            wrong = [
                f"{what} is {actual!r}, expected {expected!r}"
                for what, actual, expected in comparisons
                if actual != expected
            ]
            if wrong:
                failures.append(f"{where}: " + "; ".join(wrong))
            else:
                checks.append(
                    f"{where} is enabled: {spec.expression} in {action.timezone} → "
                    f"{spec.target_arn.rsplit(':', 1)[-1]} {json.dumps(spec.input)}"
                )
        instance = self._instance(action.instance_id)
        state = "gone" if instance is None else instance["State"]["Name"]
        (failures if state in GONE_STATES or state == "gone" else checks).append(
            f"instance {action.instance_id} is {state}"
        )
        return VerificationResult(passed=not failures, checks=checks, failures=failures)

    def expected_savings(self, recommendation: Recommendation, backup: ScheduleBackup) -> float | None:
        savings, _ = self._monthly_savings(backup.instance_type, backup.parameters)
        return savings if savings is not None else recommendation.estimated_monthly_savings

    # -- rollback ------------------------------------------------------------------------------

    def _delete_ours(self, names: list[str], group: str, execution_id: str) -> list[str]:
        """Delete the schedules of this execution among `names`; others of the same name stay."""
        deleted = []
        for name in names:
            schedule = self._schedule(name, group)
            if schedule is None or not _is_ours(schedule, execution_id):
                continue
            try:
                self.clients.scheduler.delete_schedule(Name=name, GroupName=group)
            except ClientError as error:
                if error_code(error) != "ResourceNotFoundException":
                    raise aws_failure("DeleteSchedule", error) from error
            deleted.append(name)
        return deleted

    def _start_if_stopped(self, instance_id: str) -> str:
        instance = self._require_instance(instance_id)
        state = instance["State"]["Name"]
        if state in GONE_STATES:
            raise ActionFailed(f"instance {instance_id} is {state}: its schedules are removed, it cannot run again")
        if state == "stopped":
            try:
                self.clients.ec2.start_instances(InstanceIds=[instance_id])
            except ClientError as error:
                raise aws_failure("StartInstances", error) from error
        return state

    def rollback(
        self,
        recommendation: Recommendation,
        backup: ScheduleBackup | None,
        action: ScheduleCreation | None,
    ) -> ScheduleRemoval:
        instance_id = recommendation.resource_id
        recorded = backup if backup is not None else action
        execution_id = None if recorded is None else recorded.execution_id
        group = "default" if recorded is None else recorded.schedule_group
        # Without a backup the acting phase never reached the schedules: there is nothing to delete.
        names = list(schedule_names(instance_id, execution_id).values()) if execution_id else []
        deleted = self._delete_ours(names, group, execution_id) if execution_id else []
        state_found = self._start_if_stopped(instance_id)
        return ScheduleRemoval(
            execution_id=execution_id,
            instance_id=instance_id,
            schedule_group=group,
            schedule_names=names,
            deleted_schedules=deleted,
            state_found=state_found,
            target_state="running",
        )

    def rollback_done(self, recommendation: Recommendation, rollback: ScheduleRemoval) -> bool:
        execution_id = rollback.execution_id
        if execution_id and self._delete_ours(rollback.schedule_names, rollback.schedule_group, execution_id):
            return False  # one had been (re)created meanwhile: deleted now, checked again next time
        state = self._start_if_stopped(rollback.instance_id)
        return state == "running"
