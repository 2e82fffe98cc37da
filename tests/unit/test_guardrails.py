"""The guardrail watch's reads, over emulated CloudWatch: how long it waits between checks, which
alarms trip it, and when a metric's datapoints cross a threshold for long enough."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from cost_engine.guardrails import EC2_INSTANCE_THRESHOLDS, alarm_breaches, threshold_breaches, watch_waits
from cost_engine.models import GuardrailSpec
from tests.unit.conftest import REGION

START = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
# The instance's CPU above 90% for three 5-minute periods.
CPU = EC2_INSTANCE_THRESHOLDS[0]
INSTANCE = {"InstanceId": "i-0123456789abcdef0"}


@pytest.fixture
def cloudwatch(aws: None) -> Any:
    return boto3.client("cloudwatch", region_name=REGION)


def cpu(cloudwatch: Any, values: list[float], every_minutes: int = 5) -> None:
    cloudwatch.put_metric_data(
        Namespace="AWS/EC2",
        MetricData=[
            {
                "MetricName": "CPUUtilization",
                "Dimensions": [{"Name": "InstanceId", "Value": INSTANCE["InstanceId"]}],
                "Timestamp": START + timedelta(minutes=every_minutes * i, seconds=30),
                "Value": value,
            }
            for i, value in enumerate(values)
        ],
    )


@pytest.mark.parametrize(
    ("minutes", "waits"),
    [
        (5, [300]),
        (15, [300, 600]),
        (20, [300, 600, 300]),
        (60, [300, 600, 1200, 1500]),
        (1440, [300, 600, 1200, 2400, *[3600] * 22, 2700]),
    ],
)
def test_a_watch_checks_after_five_minutes_then_twice_as_long_up_to_an_hour_and_ends_on_its_settling_period(
    minutes: int, waits: list[int]
) -> None:
    assert watch_waits(minutes) == waits
    assert sum(waits) == minutes * 60


def test_three_consecutive_periods_above_the_threshold_trip_it_with_those_datapoints(cloudwatch: Any) -> None:
    cpu(cloudwatch, [40, 95, 97, 99, 60])

    [breach] = threshold_breaches(cloudwatch, [(CPU, INSTANCE)], START, START + timedelta(minutes=30))

    assert breach.guardrail == (
        "AWS/EC2 CPUUtilization Average above 90 for 3 period(s) of 300s (InstanceId=i-0123456789abcdef0)"
    )
    assert [point["value"] for point in breach.datapoints] == [95, 97, 99]


def test_periods_above_the_threshold_that_a_period_below_interrupts_do_not_trip_it(cloudwatch: Any) -> None:
    cpu(cloudwatch, [95, 97, 50, 99, 96, 40])

    assert threshold_breaches(cloudwatch, [(CPU, INSTANCE)], START, START + timedelta(minutes=35)) == []


def test_a_threshold_reads_only_its_own_resource_and_a_floor_trips_below_it(cloudwatch: Any) -> None:
    cpu(cloudwatch, [95, 97, 99])
    other = {"InstanceId": "i-0fedcba9876543210"}
    floor = CPU.model_copy(update={"comparison": "below", "threshold": 99.5})

    assert threshold_breaches(cloudwatch, [(CPU, other)], START, START + timedelta(minutes=20)) == []
    [breach] = threshold_breaches(cloudwatch, [(floor, INSTANCE)], START, START + timedelta(minutes=20))
    assert "below 99.5" in breach.guardrail


def test_an_alarm_in_alarm_and_one_that_does_not_exist_trip_and_an_alarm_that_is_ok_does_not(
    cloudwatch: Any,
) -> None:
    for name in ("latency", "errors"):
        cloudwatch.put_metric_alarm(
            AlarmName=name,
            Namespace="Shop",
            MetricName=name,
            Statistic="Average",
            Period=60,
            EvaluationPeriods=1,
            Threshold=1,
            ComparisonOperator="GreaterThanThreshold",
        )
    cloudwatch.set_alarm_state(AlarmName="latency", StateValue="ALARM", StateReason="p99 above 1 s")
    cloudwatch.set_alarm_state(AlarmName="errors", StateValue="OK", StateReason="fine")

    breaches = alarm_breaches(cloudwatch, ["latency", "errors", "deleted-last-week"])

    assert [(b.guardrail, b.reason) for b in breaches] == [
        ("alarm latency", "in ALARM: p99 above 1 s"),
        ("alarm deleted-last-week", "no such alarm: the guardrail cannot be watched"),
    ]


def test_a_settling_period_longer_than_a_day_is_refused() -> None:
    with pytest.raises(ValueError, match="less than or equal to 1440"):
        GuardrailSpec(settle_minutes=1441)
