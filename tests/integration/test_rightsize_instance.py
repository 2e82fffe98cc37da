"""rightsize_instance end to end: the real state machine on the local runtime, driven through the API,
with the emulated EC2 checked afterwards."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cost_engine.pricing import price_catalog
from local_runtime.client import ApiClient
from local_runtime.emulations import ec2_capacity
from local_runtime.runtime import LocalRuntime
from tests.integration.conftest import (
    APPROVED_BY_POLICY,
    COMPLETED_AFTER_WATCH,
    DRY_RUN,
    ROLLED_BACK,
    step_events,
)


def type_and_state(ec2: Any, instance_id: str) -> tuple[str, str]:
    instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return str(instance["InstanceType"]), str(instance["State"]["Name"])


@pytest.fixture
def resize(recommend: Callable[..., str]) -> Callable[..., str]:
    """Registers a rightsize_instance recommendation: resize(instance_id, target)."""

    def register(instance_id: str, target: str = "m5.large", **parameters: Any) -> str:
        return recommend(
            instance_id,
            type="rightsize_instance",
            parameters={"target_instance_type": target, **parameters},
            estimated_monthly_savings=210.0,
        )

    return register


@pytest.fixture
def no_capacity() -> Iterator[Callable[..., ec2_capacity.Shortage]]:
    """Capacity shortages in the emulated EC2, all ended with the test."""
    yield ec2_capacity.no_capacity_for
    ec2_capacity.restore_capacity()


def run(api: ApiClient, recommendation_id: str, **options: Any) -> dict[str, Any]:
    return api.wait_for(api.execute(recommendation_id, **options)["execution_id"])


def events(api: ApiClient, execution_id: str) -> list[str]:
    return [event["event_type"] for event in api.logs(execution_id)["events"]]


def test_dry_run_reports_the_plan_and_changes_nothing(
    api: ApiClient, ec2: Any, launch_instance: Callable[..., str], resize: Callable[..., str]
) -> None:
    # Given an oversized running instance and a recommendation to downsize it
    instance_id = launch_instance("m5.2xlarge")

    # When a dry run is executed
    execution = run(api, resize(instance_id), dry_run=True)

    # Then it completes with the plan and the savings, and the instance is as it was
    assert execution["status"] == "completed"
    plan = execution["plan"]
    assert plan["summary"] == f"Change EC2 instance {instance_id} from m5.2xlarge to m5.large (running)"
    assert plan["backup"][0].startswith("No AMI")
    catalog = price_catalog()
    expected = (catalog.instance_monthly("m5.2xlarge") or 0) - (catalog.instance_monthly("m5.large") or 0)
    assert plan["estimated_monthly_savings"] == pytest.approx(expected)
    assert type_and_state(ec2, instance_id) == ("m5.2xlarge", "running")
    assert step_events(events(api, execution["execution_id"])) == DRY_RUN


def test_execution_changes_the_type_and_the_instance_runs_again(
    api: ApiClient, ec2: Any, launch_instance: Callable[..., str], resize: Callable[..., str]
) -> None:
    instance_id = launch_instance("m5.2xlarge")

    execution = run(api, resize(instance_id), auto_approve=True)

    assert execution["status"] == "completed", execution["error_message"]
    assert type_and_state(ec2, instance_id) == ("m5.large", "running")
    assert execution["backup"]["original_type"] == "m5.2xlarge"
    assert execution["verification"]["passed"] is True
    assert execution["expected_savings"] == pytest.approx(execution["plan"]["estimated_monthly_savings"])
    assert execution["rollback_available"] is True
    assert any("downtime" in warning for warning in execution["validation"]["warnings"])
    # A medium-risk change with modest savings: the policy lets auto_approve stand
    assert execution["auto_approved"] is True
    assert execution["policy"] == {
        "risk_level": "medium",
        "auto_approve": True,
        "reason": "auto_approve was requested and the policy allows medium-risk rightsize_instance",
    }
    logged = api.logs(execution["execution_id"])["events"]
    assert step_events([event["event_type"] for event in logged]) == [*APPROVED_BY_POLICY, *COMPLETED_AFTER_WATCH]
    [approved] = [event for event in logged if event["event_type"] == "approved"]
    assert approved["actor"] == "state-machine:auto_approve"
    assert approved["detail"]["approver"] == "policy"


def test_a_stopped_instance_gets_the_new_type_and_stays_stopped(
    api: ApiClient, ec2: Any, launch_instance: Callable[..., str], resize: Callable[..., str]
) -> None:
    instance_id = launch_instance("m5.2xlarge")
    ec2.stop_instances(InstanceIds=[instance_id])

    execution = run(api, resize(instance_id), auto_approve=True)

    assert execution["status"] == "completed", execution["error_message"]
    assert type_and_state(ec2, instance_id) == ("m5.large", "stopped")
    assert execution["expected_savings"] == 0.0


def test_no_capacity_for_the_new_type_rolls_back_to_the_original_type_running(
    api: ApiClient,
    ec2: Any,
    launch_instance: Callable[..., str],
    resize: Callable[..., str],
    no_capacity: Callable[..., ec2_capacity.Shortage],
) -> None:
    # Given EC2 has no m5.large capacity for this instance
    instance_id = launch_instance("m5.2xlarge")
    no_capacity(instance_id=instance_id, instance_type="m5.large")

    # When it is resized to m5.large
    execution = run(api, resize(instance_id), auto_approve=True)

    # Then the start fails, the execution says why, and the instance runs again as it was
    assert execution["status"] == "rolled_back"
    assert "InsufficientInstanceCapacity" in execution["error_message"]
    assert type_and_state(ec2, instance_id) == ("m5.2xlarge", "running")
    assert step_events(events(api, execution["execution_id"]))[-3:] == ROLLED_BACK[-3:]


def test_a_rollback_that_cannot_start_the_instance_fails_and_says_it_is_stopped(
    api: ApiClient,
    ec2: Any,
    launch_instance: Callable[..., str],
    resize: Callable[..., str],
    no_capacity: Callable[..., ec2_capacity.Shortage],
) -> None:
    # Given no capacity for this instance whatever its type
    instance_id = launch_instance("m5.2xlarge")
    no_capacity(instance_id=instance_id)

    execution = run(api, resize(instance_id), auto_approve=True)

    # Then the instance is back to its type, stopped, and the execution says so instead of hiding it
    assert execution["status"] == "rollback_failed"
    assert f"instance {instance_id} is stopped with its original type m5.2xlarge" in execution["error_message"]
    assert type_and_state(ec2, instance_id) == ("m5.2xlarge", "stopped")


@pytest.mark.parametrize(
    ("step", "when", "original_state"),
    [
        ("backup", "after", "running"),
        # Its backup is a record: no CheckBackup follows it, the change comes next.
        ("act", "before", "running"),
        ("act", "after", "running"),
        ("check_action", "after", "running"),
        ("verify", "before", "running"),
        ("record", "before", "running"),
        ("check_action", "after", "stopped"),
        ("record", "before", "stopped"),
    ],
)
def test_a_failure_in_an_acting_step_rolls_back_to_the_original_type_and_state(
    api: ApiClient,
    ec2: Any,
    runtime: LocalRuntime,
    launch_instance: Callable[..., str],
    resize: Callable[..., str],
    step: str,
    when: str,
    original_state: str,
) -> None:
    # Given an instance, and a step that fails (after it acted, where it acts)
    instance_id = launch_instance("m5.2xlarge")
    if original_state == "stopped":
        ec2.stop_instances(InstanceIds=[instance_id])
    runtime.faults.inject(step, when=when)

    execution = run(api, resize(instance_id), auto_approve=True)

    # Then the execution rolled back by itself and the instance is as it was
    assert execution["status"] == "rolled_back"
    assert "InjectedFault" in execution["error_message"]
    assert type_and_state(ec2, instance_id) == ("m5.2xlarge", original_state)


def test_manual_rollback_restores_the_original_type(
    api: ApiClient, ec2: Any, launch_instance: Callable[..., str], resize: Callable[..., str]
) -> None:
    instance_id = launch_instance("m5.2xlarge")
    execution_id = run(api, resize(instance_id), auto_approve=True)["execution_id"]
    assert type_and_state(ec2, instance_id) == ("m5.large", "running")

    api.rollback(execution_id)
    execution = api.wait_for(execution_id, frozenset({"rolled_back", "rollback_failed"}))

    assert execution["status"] == "rolled_back"
    assert execution["success"] is True  # the execution itself had succeeded
    assert type_and_state(ec2, instance_id) == ("m5.2xlarge", "running")


@pytest.mark.parametrize(
    ("instance_type", "target", "reason"),
    [
        ("m5.2xlarge", "m6g.large", "runs a x86_64 image, but m6g.large supports only arm64"),
        ("m5.large", "m5.large", "is already m5.large: there is nothing to change"),
        ("m5.2xlarge", "m5.huge", "instance type 'm5.huge' is not known to EC2"),
        ("m5d.large", "m5.large", "has instance-store volumes, whose data is lost when it is stopped"),
    ],
    ids=["arm64-target", "same-type", "unknown-type", "instance-store"],
)
def test_a_refused_change_says_why_and_touches_nothing(
    api: ApiClient,
    ec2: Any,
    launch_instance: Callable[..., str],
    resize: Callable[..., str],
    instance_type: str,
    target: str,
    reason: str,
) -> None:
    instance_id = launch_instance(instance_type)

    execution = run(api, resize(instance_id, target), auto_approve=True)

    assert execution["status"] == "failed"
    assert reason in execution["error_message"]
    assert execution["validation"]["valid"] is False
    assert type_and_state(ec2, instance_id) == (instance_type, "running")
    assert "backup_started" not in events(api, execution["execution_id"])


def test_a_member_of_an_auto_scaling_group_is_refused_and_untouched(
    api: ApiClient, ec2: Any, runtime: LocalRuntime, network: dict[str, str], resize: Callable[..., str]
) -> None:
    # Given an instance launched by an Auto Scaling group
    image_id = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    template = f"rightsize-{network['subnet_id']}"
    ec2.create_launch_template(
        LaunchTemplateName=template, LaunchTemplateData={"ImageId": image_id, "InstanceType": "m5.2xlarge"}
    )
    autoscaling = runtime.client("autoscaling")
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=template,
        LaunchTemplate={"LaunchTemplateName": template, "Version": "$Latest"},
        MinSize=1,
        MaxSize=1,
        DesiredCapacity=1,
        VPCZoneIdentifier=network["subnet_id"],
    )
    group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[template])["AutoScalingGroups"][0]
    instance_id = group["Instances"][0]["InstanceId"]

    execution = run(api, resize(instance_id), auto_approve=True)

    assert execution["status"] == "failed"
    assert f"belongs to Auto Scaling group '{template}'" in execution["error_message"]
    assert type_and_state(ec2, instance_id) == ("m5.2xlarge", "running")
