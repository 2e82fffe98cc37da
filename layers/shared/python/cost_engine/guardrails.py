"""The guardrail watch: after a change that can hurt a workload, its resource is watched for a settling
period, and a breach rolls the change back by itself.

What is watched: the CloudWatch alarms the recommendation names (one in ALARM, or one that does not
exist, trips: a guardrail that cannot be watched is not a passed one), metric thresholds (the
recommendation's, and unless it says otherwise its type's: CPU, status checks...; `datapoints`
consecutive periods beyond the threshold trip), and what the type checks through its own API (an
Auto Scaling group below its desired healthy count). Each check reads every datapoint since the watch
began, so a spike between two checks is not missed, only found at the next one. The checks come
after waits that start short and grow (`watch_waits`): a change that hurts at once is rolled back
within minutes, and a day's watch costs a few dozen checks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from cost_engine.aws import aws_failure
from cost_engine.models import MetricThreshold
from cost_engine.permissions import Permission

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient

    from cost_engine.executors.base import AnyExecutor

# What the types that change an instance or a database watch unless told otherwise: CPU pegged for a
# quarter of an hour (EC2's basic monitoring has 5-minute periods), failed status checks, RDS CPU.
EC2_INSTANCE_THRESHOLDS = (
    MetricThreshold(
        namespace="AWS/EC2",
        metric_name="CPUUtilization",
        statistic="Average",
        comparison="above",
        threshold=90,
        datapoints=3,
        period_seconds=300,
    ),
    MetricThreshold(
        namespace="AWS/EC2",
        metric_name="StatusCheckFailed",
        statistic="Maximum",
        comparison="above",
        threshold=0,
        datapoints=2,
        period_seconds=60,
    ),
)
RDS_INSTANCE_THRESHOLDS = (
    MetricThreshold(
        namespace="AWS/RDS",
        metric_name="CPUUtilization",
        statistic="Average",
        comparison="above",
        threshold=90,
        datapoints=3,
        period_seconds=60,
    ),
)

# The reads of a watch; neither call supports resource-level permissions.
GUARDRAIL_READS = Permission(("cloudwatch:DescribeAlarms", "cloudwatch:GetMetricStatistics"))


def guardrail_permissions(executor: type[AnyExecutor]) -> tuple[Permission, ...]:
    """What a type's role needs to watch its changes (its own live checks are in its permissions)."""
    return (GUARDRAIL_READS,) if executor.watches else ()


FIRST_CHECK_SECONDS = 300
LONGEST_WAIT_SECONDS = 3600


def watch_waits(settle_minutes: int) -> list[int]:
    """The waits before each check of a watch of `settle_minutes`: 5 minutes, then twice as long each
    time up to an hour, the last one cut so that the waits add up to the settling period."""
    total, wait = settle_minutes * 60, FIRST_CHECK_SECONDS
    waits: list[int] = []
    while sum(waits) < total:
        waits.append(min(wait, total - sum(waits)))
        wait = min(wait * 2, LONGEST_WAIT_SECONDS)
    return waits


@dataclass(frozen=True)
class Breach:
    guardrail: str  # what tripped
    reason: str
    datapoints: list[dict[str, Any]] = field(default_factory=list)  # [{"at": ISO time, "value": ...}]

    def as_dict(self) -> dict[str, Any]:
        return {"guardrail": self.guardrail, "reason": self.reason, "datapoints": self.datapoints}


def alarm_breaches(cloudwatch: CloudWatchClient, names: list[str]) -> list[Breach]:
    """The named alarms in ALARM, and the names no alarm has."""
    if not names:
        return []
    try:
        alarms = cloudwatch.describe_alarms(AlarmNames=names, AlarmTypes=["MetricAlarm", "CompositeAlarm"])
    except ClientError as error:
        raise aws_failure("DescribeAlarms", error) from error
    found = {a["AlarmName"]: a for a in [*alarms.get("MetricAlarms", []), *alarms.get("CompositeAlarms", [])]}
    breaches = []
    for name in names:
        alarm: Any = found.get(name)
        if alarm is None:
            breaches.append(Breach(f"alarm {name}", "no such alarm: the guardrail cannot be watched"))
        elif alarm["StateValue"] == "ALARM":
            breaches.append(
                Breach(f"alarm {name}", f"in ALARM: {alarm.get('StateReason', '')}", _alarm_datapoints(alarm))
            )
    return breaches


def _alarm_datapoints(alarm: Any) -> list[dict[str, Any]]:
    """The datapoints an alarm's state change reports (`StateReasonData.recentDatapoints`), where it has."""
    try:
        data = json.loads(alarm.get("StateReasonData") or "{}")
    except ValueError:
        return []
    start = data.get("startDate")
    return [{"at": start, "value": value} for value in data.get("recentDatapoints", [])]


def threshold_breaches(
    cloudwatch: CloudWatchClient,
    thresholds: list[tuple[MetricThreshold, dict[str, str]]],
    since: datetime,
    now: datetime,
) -> list[Breach]:
    """The thresholds (each with the dimensions it applies to) that `datapoints` consecutive periods
    since `since` went beyond, with those datapoints."""
    breaches = []
    for threshold, dimensions in thresholds:
        try:
            answer = cloudwatch.get_metric_statistics(
                Namespace=threshold.namespace,
                MetricName=threshold.metric_name,
                Dimensions=[{"Name": k, "Value": v} for k, v in dimensions.items()],
                StartTime=since - timedelta(seconds=threshold.period_seconds),
                EndTime=now + timedelta(seconds=threshold.period_seconds),
                Period=threshold.period_seconds,
                Statistics=[threshold.statistic],
            )
        except ClientError as error:
            raise aws_failure("GetMetricStatistics", error) from error
        points = sorted(answer.get("Datapoints", []), key=lambda p: p["Timestamp"])
        run: list[dict[str, Any]] = []
        for point in points:
            value = float(point[threshold.statistic])
            beyond = value > threshold.threshold if threshold.comparison == "above" else value < threshold.threshold
            run = [*run, {"at": point["Timestamp"].isoformat(), "value": value}] if beyond else []
            if len(run) >= threshold.datapoints:
                where = ", ".join(f"{k}={v}" for k, v in dimensions.items())
                breaches.append(Breach(f"{threshold.describe()} ({where})", "threshold crossed", run))
                break
    return breaches
