"""migrate_to_spot end to end: the real state machine on the local runtime, driven through the API,
with the emulated EC2 checked afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from local_runtime.client import ApiClient
from local_runtime.runtime import LocalRuntime
from tests.integration.conftest import ROLLED_BACK, backup_images, instance_state, restored_instances, step_events

SPOT_FOR_TAG = "cost-engine:spot-for-execution"
ESTIMATE = 45.0
# Spot instances can be reclaimed: every migration waits for a person, who approves it here.
APPROVER = "lead@example.com"


def spot_instances(ec2: Any, execution_id: str) -> list[dict[str, Any]]:
    """The spot instances an execution launched, in any state."""
    reservations = ec2.describe_instances(Filters=[{"Name": f"tag:{SPOT_FOR_TAG}", "Values": [execution_id]}])
    return [i for r in reservations["Reservations"] for i in r["Instances"]]


def describe(ec2: Any, instance_id: str) -> dict[str, Any]:
    instance: dict[str, Any] = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return instance


def tags_of(instance: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


@pytest.fixture
def recommend_spot(recommend: Callable[..., str]) -> Callable[..., str]:
    def register(resource_id: str, **fields: Any) -> str:
        return recommend(resource_id, type="migrate_to_spot", estimated_monthly_savings=ESTIMATE, **fields)

    return register


def test_dry_run_reports_the_plan_and_changes_nothing(
    api: ApiClient, ec2: Any, launch_instance: Callable[..., str], recommend_spot: Callable[..., str]
) -> None:
    # Given a running on-demand batch worker with a recommendation to move it to spot
    instance_id = launch_instance("m5.large", name="batch-worker")

    # When a dry run is executed
    execution = api.run(recommend_spot(instance_id), dry_run=True)

    # Then it completes with a plan and the account is untouched
    assert execution["status"] == "completed"
    plan = execution["plan"]
    assert plan["summary"].startswith(f"Replace on-demand EC2 instance {instance_id}")
    assert any("Launch a spot instance" in action for action in plan["actions"])
    assert plan["rollback_plan"]["rollback_steps"]
    # moto's spot price history is a placeholder, so the recommendation's estimate is used, and said so
    assert plan["estimated_monthly_savings"] == ESTIMATE
    assert "no usable spot price for m5.large" in plan["savings_basis"]
    assert instance_state(ec2, instance_id) == "running"
    assert backup_images(ec2, execution["execution_id"]) == []
    assert spot_instances(ec2, execution["execution_id"]) == []


def test_execution_leaves_a_running_spot_instance_of_the_same_configuration_and_ends_the_original(
    api: ApiClient,
    ec2: Any,
    network: dict[str, str],
    launch_instance: Callable[..., str],
    recommend_spot: Callable[..., str],
) -> None:
    # Given a running on-demand batch worker
    instance_id = launch_instance("c5.large", name="batch-worker", UserData="#!/bin/sh\nrun-queue\n")

    # When its migration is executed and a person approves it through the API
    execution = api.run(recommend_spot(instance_id, parameters={"max_price": 0.06}), approver=APPROVER)

    # Then a spot instance with the original's configuration runs, and the original is terminated
    assert execution["status"] == "completed", execution["error_message"]
    assert execution["auto_approved"] is False
    assert execution["approval"]["approver_name"] == APPROVER
    assert execution["approval"]["decided_via"] == "api"
    assert execution["policy"]["risk_level"] == "high"
    [spot] = spot_instances(ec2, execution["execution_id"])
    assert spot["State"]["Name"] == "running"
    assert spot["InstanceLifecycle"] == "spot"
    assert spot["InstanceType"] == "c5.large"
    assert spot["SubnetId"] == network["subnet_id"]
    assert [g["GroupId"] for g in spot["SecurityGroups"]] == [network["security_group_id"]]
    assert tags_of(spot)["Name"] == "batch-worker"
    assert tags_of(spot)["team"] == "data"
    user_data = ec2.describe_instance_attribute(InstanceId=spot["InstanceId"], Attribute="userData")
    assert user_data["UserData"]["Value"] == execution["backup"]["launch_config"]["user_data_base64"]
    assert instance_state(ec2, instance_id) == "terminated"
    # and the record says what was launched, verified and ended, with the backup kept for a rollback
    assert execution["action"]["spot_instance_id"] == spot["InstanceId"]
    assert execution["action"]["ended_instance_ids"] == [instance_id]
    assert execution["verification"]["passed"] is True
    assert [image["State"] for image in backup_images(ec2, execution["execution_id"])] == ["available"]
    assert execution["rollback_available"] is True
    assert execution["expected_savings"] == ESTIMATE
    events = [event["event_type"] for event in api.logs(execution["execution_id"])["events"]]
    # The original instance is ended only once the spot instance has passed its guardrail watch.
    assert step_events(events)[-6:] == [
        "action_done",
        "verified",
        "watch_started",
        "guardrails_passed",
        "finalized",
        "completed",
    ]


@pytest.mark.parametrize(
    ("step", "when"),
    [
        ("backup", "before"),
        ("check_backup", "before"),
        ("act", "before"),
        ("check_action", "before"),
        ("verify", "before"),
        ("record", "before"),
    ],
    ids=[
        "backup-fails",
        "backup-check-fails",
        "launch-fails",
        "polling-fails",
        "verify-fails",
        "record-fails-before-finalize",
    ],
)
def test_a_failing_step_rolls_back_the_original_runs_and_no_spot_instance_is_left(
    api: ApiClient,
    ec2: Any,
    runtime: LocalRuntime,
    launch_instance: Callable[..., str],
    recommend_spot: Callable[..., str],
    step: str,
    when: str,
) -> None:
    # Given a batch worker, and a step of its migration that will fail
    instance_id = launch_instance("m5.large", name="batch-worker")
    runtime.faults.inject(step, when=when)

    # When the migration is executed and approved
    execution = api.run(recommend_spot(instance_id), approver=APPROVER)

    # Then it rolled back by itself and says why
    assert execution["status"] == "rolled_back"
    assert execution["success"] is False
    assert "InjectedFault" in execution["error_message"]
    # and the original runs again, with no spot instance of this execution left running
    assert instance_state(ec2, instance_id) == "running"
    assert [i["State"]["Name"] for i in spot_instances(ec2, execution["execution_id"])] in ([], ["terminated"])
    assert restored_instances(ec2, execution["execution_id"]) == []
    events = [event["event_type"] for event in api.logs(execution["execution_id"])["events"]]
    assert step_events(events)[-3:] == ROLLED_BACK[-3:]


def test_a_crash_after_the_spot_launch_ends_the_spot_instance_it_launched(
    api: ApiClient,
    ec2: Any,
    runtime: LocalRuntime,
    launch_instance: Callable[..., str],
    recommend_spot: Callable[..., str],
) -> None:
    instance_id = launch_instance("m5.large", name="batch-worker")
    runtime.faults.inject("act", when="after")

    execution = api.run(recommend_spot(instance_id), approver=APPROVER)

    assert execution["status"] == "rolled_back"
    [spot] = spot_instances(ec2, execution["execution_id"])
    assert spot["State"]["Name"] == "terminated"
    assert execution["rollback"]["spot_instance_ids"] == [spot["InstanceId"]]
    assert instance_state(ec2, instance_id) == "running"


def test_manual_rollback_after_success_relaunches_on_demand_from_the_ami_and_ends_the_spot_instance(
    api: ApiClient,
    ec2: Any,
    network: dict[str, str],
    launch_instance: Callable[..., str],
    recommend_spot: Callable[..., str],
) -> None:
    # Given a completed migration: the original is terminated, a spot instance runs
    instance_id = launch_instance("m5.large", name="batch-worker")
    execution_id = api.run(recommend_spot(instance_id), approver=APPROVER)["execution_id"]
    [spot] = spot_instances(ec2, execution_id)
    assert instance_state(ec2, instance_id) == "terminated"

    # When a rollback is asked for
    api.rollback(execution_id)
    execution = api.wait_for(execution_id, frozenset({"rolled_back", "rollback_failed"}))

    # Then an on-demand instance with the original configuration runs from the backup AMI
    assert execution["status"] == "rolled_back", execution["error_message"]
    assert execution["success"] is True  # the execution itself had succeeded
    [restored] = restored_instances(ec2, execution_id)
    assert restored["State"]["Name"] == "running"
    assert "InstanceLifecycle" not in restored
    assert restored["ImageId"] == execution["backup"]["image_id"]
    assert restored["InstanceType"] == "m5.large"
    assert restored["SubnetId"] == network["subnet_id"]
    assert tags_of(restored)["Name"] == "batch-worker"
    # and the spot instance is ended
    assert instance_state(ec2, spot["InstanceId"]) == "terminated"


# -- refusals -------------------------------------------------------------------------------------


def assert_refused_and_untouched(ec2: Any, execution: dict[str, Any], reason: str) -> None:
    assert execution["status"] == "failed"
    assert execution["validation"]["valid"] is False
    assert reason in execution["error_message"]
    assert backup_images(ec2, execution["execution_id"]) == []
    assert spot_instances(ec2, execution["execution_id"]) == []


def test_an_instance_that_is_already_spot_is_refused(
    api: ApiClient, ec2: Any, launch_instance: Callable[..., str], recommend_spot: Callable[..., str]
) -> None:
    spot_id = launch_instance("m5.large", InstanceMarketOptions={"MarketType": "spot"})

    execution = api.run(recommend_spot(spot_id), approver=APPROVER)

    assert_refused_and_untouched(ec2, execution, "is already a spot instance")
    assert instance_state(ec2, spot_id) == "running"


def test_an_auto_scaling_group_member_is_refused(
    api: ApiClient, ec2: Any, runtime: LocalRuntime, network: dict[str, str], recommend_spot: Callable[..., str]
) -> None:
    autoscaling = runtime.client("autoscaling")
    name = f"workers-{uuid.uuid4().hex[:6]}"
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    ec2.create_launch_template(
        LaunchTemplateName=name, LaunchTemplateData={"ImageId": image, "InstanceType": "m5.large"}
    )
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=name,
        LaunchTemplate={"LaunchTemplateName": name, "Version": "$Latest"},
        MinSize=1,
        MaxSize=1,
        DesiredCapacity=1,
        VPCZoneIdentifier=network["subnet_id"],
    )
    [member] = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"][0][
        "Instances"
    ]

    execution = api.run(recommend_spot(member["InstanceId"]), approver=APPROVER)

    assert_refused_and_untouched(ec2, execution, f"belongs to Auto Scaling group '{name}'")
    assert instance_state(ec2, member["InstanceId"]) == "running"


def test_an_instance_with_termination_protection_is_refused(
    api: ApiClient, ec2: Any, launch_instance: Callable[..., str], recommend_spot: Callable[..., str]
) -> None:
    instance_id = launch_instance("m5.large")
    ec2.modify_instance_attribute(InstanceId=instance_id, DisableApiTermination={"Value": True})

    execution = api.run(recommend_spot(instance_id), approver=APPROVER)

    assert_refused_and_untouched(ec2, execution, "termination protection")
    assert instance_state(ec2, instance_id) == "running"


def test_an_instance_store_type_is_refused(
    api: ApiClient, ec2: Any, launch_instance: Callable[..., str], recommend_spot: Callable[..., str]
) -> None:
    instance_id = launch_instance("m5d.large")

    execution = api.run(recommend_spot(instance_id), approver=APPROVER)

    assert_refused_and_untouched(ec2, execution, "m5d.large has instance-store volumes")
    assert instance_state(ec2, instance_id) == "running"


def test_an_instance_that_does_not_exist_is_refused(
    api: ApiClient, ec2: Any, recommend_spot: Callable[..., str]
) -> None:
    execution = api.run(recommend_spot("i-0123456789abcdef0"), approver=APPROVER)

    assert_refused_and_untouched(ec2, execution, "EC2 instance i-0123456789abcdef0 does not exist")
