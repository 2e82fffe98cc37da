"""The guardrail watch end to end: after a rightsizing the real state machine watches the instance
(the emulated CloudWatch's alarms and metrics), rolls the change back by itself when a guardrail
trips, and completes when the watch passes; the watch holds the resource's lock, not an acting slot."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from cli.__main__ import EXIT_OK
from local_runtime.client import ApiClient, ApiError
from local_runtime.runtime import LocalRuntime
from tests.integration.conftest import (
    APPROVED_BY_A_PERSON,
    COMPLETED_AFTER_WATCH,
    ROLLED_BACK,
    WATCHED,
    deployed_with,
    step_events,
)
from tests.integration.test_cli import cli


@pytest.fixture
def cloudwatch(runtime: LocalRuntime) -> Any:
    return runtime.client("cloudwatch")


@pytest.fixture
def resize(recommend: Callable[..., str]) -> Callable[..., str]:
    """Registers a rightsize_instance recommendation with its guardrails: resize(instance_id, guardrails)."""

    def register(instance_id: str, guardrails: dict[str, Any] | None = None) -> str:
        fields: dict[str, Any] = {"guardrails": guardrails} if guardrails is not None else {}
        return recommend(
            instance_id,
            type="rightsize_instance",
            parameters={"target_instance_type": "m5.large"},
            estimated_monthly_savings=210.0,
            **fields,
        )

    return register


def cpu_now(cloudwatch: Any, instance_id: str, percent: float) -> None:
    """The instance's CPU as CloudWatch receives it now."""
    cloudwatch.put_metric_data(
        Namespace="AWS/EC2",
        MetricData=[
            {
                "MetricName": "CPUUtilization",
                "Dimensions": [{"Name": "InstanceId", "Value": instance_id}],
                "Timestamp": datetime.now(UTC),
                "Value": percent,
                "Unit": "Percent",
            }
        ],
    )


def instance_type(ec2: Any, instance_id: str) -> str:
    return str(ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["InstanceType"])


def watching(api: ApiClient, runtime: LocalRuntime, recommendation_id: str) -> tuple[str, Any]:
    """An execution approved by a person and held at the first check of its watch."""
    execution_id = api.execute(recommendation_id)["execution_id"]
    waiting = api.wait_for(execution_id, frozenset({"awaiting_approval", "failed", "completed"}))
    assert waiting["status"] == "awaiting_approval", waiting.get("error_message")
    held = runtime.faults.hold("check_guardrails", execution_id=execution_id)
    api.approve(execution_id, "finops@example.com")
    assert held.reached.wait(60), "the watch's first check was never reached"
    return execution_id, held


def events(api: ApiClient, execution_id: str) -> list[str]:
    return [event["event_type"] for event in api.logs(execution_id)["events"]]


def test_an_alarm_that_goes_to_alarm_while_the_change_settles_rolls_it_back_with_the_reason(
    api: ApiClient,
    runtime: LocalRuntime,
    ec2: Any,
    cloudwatch: Any,
    launch_instance: Callable[..., str],
    resize: Callable[..., str],
) -> None:
    # Given a rightsizing watched for 15 minutes with an alarm of the workload's latency
    instance_id = launch_instance("m5.2xlarge")
    alarm = f"checkout-latency-{instance_id}"
    cloudwatch.put_metric_alarm(
        AlarmName=alarm,
        Namespace="Shop",
        MetricName="Latency",
        Statistic="Average",
        Period=60,
        EvaluationPeriods=1,
        Threshold=500,
        ComparisonOperator="GreaterThanThreshold",
    )
    execution_id, held = watching(api, runtime, resize(instance_id, {"settle_minutes": 15, "alarms": [alarm]}))
    record = api.status(execution_id)
    assert record["status"] == "watching"
    assert instance_type(ec2, instance_id) == "m5.large"
    code, out, _ = cli(runtime, "status", execution_id)
    assert code == EXIT_OK
    assert f"  watch     watching the change until {record['watch_until']}" in out

    # When the alarm goes to ALARM during the watch
    reason_data = {"startDate": datetime.now(UTC).isoformat(), "recentDatapoints": [812.0]}
    cloudwatch.set_alarm_state(
        AlarmName=alarm, StateValue="ALARM", StateReason="latency above 500 ms", StateReasonData=json.dumps(reason_data)
    )
    held.release()
    execution = api.wait_for(execution_id)

    # Then the change is rolled back by itself, and the record says which guardrail tripped and on what
    assert execution["status"] == "rolled_back", execution["error_message"]
    assert instance_type(ec2, instance_id) == "m5.2xlarge"
    assert f"alarm {alarm}" in execution["error_message"]
    assert "latency above 500 ms" in execution["error_message"]
    assert execution["guardrails"]["passed"] is False
    [breach] = execution["guardrails"]["breaches"]
    assert breach["guardrail"] == f"alarm {alarm}"
    assert breach["datapoints"] == [{"at": reason_data["startDate"], "value": 812.0}]
    code, out, _ = cli(runtime, "status", execution_id)
    assert code == EXIT_OK
    assert f"  watch     breached: alarm {alarm}: in ALARM: latency above 500 ms" in out
    assert step_events(events(api, execution_id)) == [
        *APPROVED_BY_A_PERSON,
        *WATCHED,
        "guardrail_breached",
        *ROLLED_BACK,
    ]


def test_a_metric_beyond_its_threshold_while_the_change_settles_rolls_it_back_with_the_datapoints(
    api: ApiClient,
    runtime: LocalRuntime,
    ec2: Any,
    cloudwatch: Any,
    launch_instance: Callable[..., str],
    resize: Callable[..., str],
) -> None:
    # Given a rightsizing whose recommendation watches the instance's CPU at one-minute periods
    instance_id = launch_instance("m5.2xlarge")
    threshold = {
        "namespace": "AWS/EC2",
        "metric_name": "CPUUtilization",
        "statistic": "Maximum",
        "comparison": "above",
        "threshold": 95,
        "datapoints": 1,
        "period_seconds": 60,
    }
    execution_id, held = watching(api, runtime, resize(instance_id, {"settle_minutes": 30, "thresholds": [threshold]}))

    # When the smaller instance's CPU is pegged
    cpu_now(cloudwatch, instance_id, 99.5)
    held.release()
    execution = api.wait_for(execution_id)

    # Then it is rolled back, with the threshold and the datapoint that crossed it
    assert execution["status"] == "rolled_back", execution["error_message"]
    assert instance_type(ec2, instance_id) == "m5.2xlarge"
    [breach] = execution["guardrails"]["breaches"]
    assert breach["guardrail"] == (
        f"AWS/EC2 CPUUtilization Maximum above 95 for 1 period(s) of 60s (InstanceId={instance_id})"
    )
    assert [point["value"] for point in breach["datapoints"]] == [99.5]
    assert "threshold crossed" in execution["error_message"]


def test_a_watch_that_passes_completes_holding_the_resource_but_not_an_acting_slot(
    api: ApiClient,
    runtime: LocalRuntime,
    ec2: Any,
    cloudwatch: Any,
    launch_instance: Callable[..., str],
    resize: Callable[..., str],
) -> None:
    # Given one acting slot, and a rightsizing watched with the type's own thresholds, held in its watch
    instance_id, other_id = launch_instance("m5.2xlarge"), launch_instance("m5.2xlarge")
    with deployed_with(max_concurrent_acting=1):
        execution_id, held = watching(api, runtime, resize(instance_id, {"settle_minutes": 20}))
        record = api.status(execution_id)
        assert record["status"] == "watching"
        assert record["watch_until"] > record["watch_started_at"]

        # When another execution asks for the same instance, and another for another instance
        with pytest.raises(ApiError) as busy:
            api.execute(resize(instance_id), auto_approve=True)
        other = api.wait_for(api.execute(resize(other_id), auto_approve=True)["execution_id"])

        # Then the same instance is refused while it is watched, and the other acts in the freed slot
        assert busy.value.status_code == 409
        assert execution_id in busy.value.body["message"]
        assert other["status"] == "completed", other["error_message"]

        # and when the watch's checks find the CPU well below the threshold, the execution completes
        cpu_now(cloudwatch, instance_id, 41.0)
        held.release()
        execution = api.wait_for(execution_id)
    assert execution["status"] == "completed", execution["error_message"]
    assert instance_type(ec2, instance_id) == "m5.large"
    assert execution["guardrails"]["passed"] is True
    assert execution["guardrails"]["breaches"] == []
    # 20 minutes: checks after 5 minutes, 10 more (the wait doubles), and the 5 left
    assert execution["guardrails"]["checks"] == 3
    assert step_events(events(api, execution_id)) == [*APPROVED_BY_A_PERSON, *COMPLETED_AFTER_WATCH]
    [started] = [e for e in api.logs(execution_id)["events"] if e["event_type"] == "watch_started"]
    assert started["detail"]["settle_minutes"] == 20
    assert any("CPUUtilization" in watched for watched in started["detail"]["watched"])


def test_a_cancel_while_the_change_is_watched_rolls_it_back_and_ends_cancelled(
    api: ApiClient,
    runtime: LocalRuntime,
    ec2: Any,
    launch_instance: Callable[..., str],
    resize: Callable[..., str],
) -> None:
    instance_id = launch_instance("m5.2xlarge")
    execution_id, held = watching(api, runtime, resize(instance_id, {"settle_minutes": 60}))

    api.cancel(execution_id)
    held.release()
    execution = api.wait_for(execution_id)

    assert execution["status"] == "cancelled", execution["error_message"]
    assert execution["rollback_executed"] is True
    assert instance_type(ec2, instance_id) == "m5.2xlarge"
    assert "cancel_honoured" in events(api, execution_id)
