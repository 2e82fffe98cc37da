"""enable_autoscaling end to end: the real state machine on the local runtime, driven through the API,
with the emulated EC2 and Auto Scaling checked afterwards."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from local_runtime.client import ApiClient, ApiError
from local_runtime.runtime import LocalRuntime
from tests.integration.conftest import instance_state

TYPE = "enable_autoscaling"
EXECUTION_TAG = "cost-engine:execution-id"
PARAMETERS = {
    "min_size": 1,
    "max_size": 4,
    "desired_capacity": 2,
    "target_tracking": {"metric": "ASGAverageCPUUtilization", "target_value": 55.0},
}


@pytest.fixture
def autoscaling(runtime: LocalRuntime) -> Any:
    return runtime.client("autoscaling")


@pytest.fixture
def recommend_asg(recommend: Callable[..., str]) -> Callable[..., str]:
    def register(instance_id: str, **parameters: Any) -> str:
        return recommend(
            instance_id, type=TYPE, parameters={**PARAMETERS, **parameters}, estimated_monthly_savings=35.0
        )

    return register


def created_by(ec2: Any, autoscaling: Any, execution_id: str) -> dict[str, list[str]]:
    """Everything in the account that carries the execution's tag or name."""
    tagged = [{"Name": f"tag:{EXECUTION_TAG}", "Values": [execution_id]}]
    groups = autoscaling.describe_auto_scaling_groups(Filters=tagged)["AutoScalingGroups"]
    policies = [
        p["PolicyName"] for p in autoscaling.describe_policies()["ScalingPolicies"] if execution_id in p["PolicyName"]
    ]
    return {
        "groups": [g["AutoScalingGroupName"] for g in groups],
        "policies": policies,
        "launch_templates": [
            t["LaunchTemplateName"] for t in ec2.describe_launch_templates(Filters=tagged)["LaunchTemplates"]
        ],
        "images": [i["ImageId"] for i in ec2.describe_images(Owners=["self"], Filters=tagged)["Images"]],
    }


NOTHING: dict[str, list[str]] = {"groups": [], "policies": [], "launch_templates": [], "images": []}


def test_dry_run_reports_the_plan_and_creates_nothing(
    api: ApiClient, ec2: Any, autoscaling: Any, launch_instance: Callable[..., str], recommend_asg: Callable[..., str]
) -> None:
    instance_id = launch_instance("t3.medium", name="web-1")

    execution = api.wait_for(api.execute(recommend_asg(instance_id), dry_run=True)["execution_id"])

    assert execution["status"] == "completed"
    plan = execution["plan"]
    assert "min 1, desired 2, max 4" in plan["summary"]
    assert plan["estimated_monthly_savings"] == 35.0
    assert plan["savings_basis"].startswith("the recommendation's own estimate")
    assert created_by(ec2, autoscaling, execution["execution_id"]) == NOTHING
    assert instance_state(ec2, instance_id) == "running"


def test_execution_puts_the_instance_behind_a_healthy_group_and_leaves_it_running(
    api: ApiClient,
    ec2: Any,
    autoscaling: Any,
    network: dict[str, str],
    launch_instance: Callable[..., str],
    recommend_asg: Callable[..., str],
) -> None:
    # Given a standalone web server
    instance_id = launch_instance("t3.medium", name="web-1")

    # When the recommendation is executed
    execution = api.wait_for(api.execute(recommend_asg(instance_id), auto_approve=True)["execution_id"])

    # Then a group of two healthy instances runs from the instance's image, with its policy
    assert execution["status"] == "completed", execution["error_message"]
    execution_id = execution["execution_id"]
    made = created_by(ec2, autoscaling, execution_id)
    [group_name] = made["groups"]
    group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group_name])["AutoScalingGroups"][0]
    assert (group["MinSize"], group["DesiredCapacity"], group["MaxSize"]) == (1, 2, 4)
    assert group["VPCZoneIdentifier"] == network["subnet_id"]
    assert [(i["LifecycleState"], i["HealthStatus"]) for i in group["Instances"]] == [("InService", "Healthy")] * 2
    [policy] = autoscaling.describe_policies(AutoScalingGroupName=group_name)["ScalingPolicies"]
    assert policy["TargetTrackingConfiguration"]["TargetValue"] == 55.0
    assert made["images"] == [execution["backup"]["image_id"]]
    members = ec2.describe_instances(InstanceIds=[i["InstanceId"] for i in group["Instances"]])["Reservations"]
    for member in (i for r in members for i in r["Instances"]):
        assert member["ImageId"] == execution["backup"]["image_id"]
        assert member["InstanceType"] == "t3.medium"
        assert {"Key": "Name", "Value": "web-1"} in member["Tags"]
    # and the original keeps serving
    assert instance_state(ec2, instance_id) == "running"
    assert execution["verification"]["passed"] is True
    assert execution["expected_savings"] == 35.0


@pytest.mark.parametrize(
    ("step", "when"),
    [
        ("backup", "before"),
        ("backup", "after"),
        ("check_backup", "before"),
        ("act", "before"),
        ("act", "after"),
        ("check_action", "before"),
        ("verify", "before"),
        ("record", "before"),
    ],
)
def test_a_failure_in_any_acting_step_removes_everything_created_and_the_original_runs(
    api: ApiClient,
    ec2: Any,
    autoscaling: Any,
    runtime: LocalRuntime,
    launch_instance: Callable[..., str],
    recommend_asg: Callable[..., str],
    step: str,
    when: str,
) -> None:
    instance_id = launch_instance("t3.medium", name="web-2")
    runtime.faults.inject(step, when=when)

    execution = api.wait_for(api.execute(recommend_asg(instance_id), auto_approve=True)["execution_id"])

    assert execution["status"] == "rolled_back", execution["error_message"]
    assert "InjectedFault" in execution["error_message"]
    assert created_by(ec2, autoscaling, execution["execution_id"]) == NOTHING
    assert autoscaling.describe_auto_scaling_instances(InstanceIds=[instance_id])["AutoScalingInstances"] == []
    assert instance_state(ec2, instance_id) == "running"


def test_a_transient_failure_after_building_is_retried_without_building_twice(
    api: ApiClient,
    ec2: Any,
    autoscaling: Any,
    runtime: LocalRuntime,
    launch_instance: Callable[..., str],
    recommend_asg: Callable[..., str],
) -> None:
    instance_id = launch_instance("t3.medium", name="web-3")
    runtime.faults.inject("act", when="after", error_type="TransientError")

    execution = api.wait_for(api.execute(recommend_asg(instance_id), auto_approve=True)["execution_id"])

    assert execution["status"] == "completed", execution["error_message"]
    made = created_by(ec2, autoscaling, execution["execution_id"])
    assert [len(made[kind]) for kind in ("groups", "policies", "launch_templates", "images")] == [1, 1, 1, 1]


def test_manual_rollback_removes_the_group_and_leaves_the_original_running(
    api: ApiClient, ec2: Any, autoscaling: Any, launch_instance: Callable[..., str], recommend_asg: Callable[..., str]
) -> None:
    # Given a completed execution
    instance_id = launch_instance("t3.medium", name="web-4")
    execution_id = api.wait_for(api.execute(recommend_asg(instance_id), auto_approve=True)["execution_id"])[
        "execution_id"
    ]
    group_name = created_by(ec2, autoscaling, execution_id)["groups"][0]
    members = [
        i["InstanceId"]
        for i in autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group_name])["AutoScalingGroups"][0][
            "Instances"
        ]
    ]

    # When a rollback is asked for
    api.rollback(execution_id)
    execution = api.wait_for(execution_id, frozenset({"rolled_back", "rollback_failed"}))

    # Then nothing the execution made is left, its instances are gone, and the original runs
    assert execution["status"] == "rolled_back", execution["error_message"]
    assert created_by(ec2, autoscaling, execution_id) == NOTHING
    assert {instance_state(ec2, m) for m in members} == {"terminated"}
    assert instance_state(ec2, instance_id) == "running"


def test_an_instance_already_in_a_group_is_refused_and_nothing_is_created(
    api: ApiClient, ec2: Any, autoscaling: Any, launch_instance: Callable[..., str], recommend_asg: Callable[..., str]
) -> None:
    # Given an instance the engine already put behind a group
    instance_id = launch_instance("t3.medium", name="web-5")
    first = api.wait_for(api.execute(recommend_asg(instance_id), auto_approve=True)["execution_id"])
    member = autoscaling.describe_auto_scaling_groups(
        AutoScalingGroupNames=created_by(ec2, autoscaling, first["execution_id"])["groups"]
    )["AutoScalingGroups"][0]["Instances"][0]["InstanceId"]

    # When a member of that group, and the instance itself, are recommended again
    for resource in (member, instance_id):
        execution = api.wait_for(api.execute(recommend_asg(resource), auto_approve=True)["execution_id"])

        # Then each is refused with the reason, and nothing is created
        assert execution["status"] == "failed"
        assert "already" in execution["error_message"]
        assert created_by(ec2, autoscaling, execution["execution_id"]) == NOTHING


def test_invalid_sizes_are_refused_with_the_reason_and_nothing_is_created(
    api: ApiClient, ec2: Any, autoscaling: Any, launch_instance: Callable[..., str], recommend_asg: Callable[..., str]
) -> None:
    instance_id = launch_instance("t3.medium", name="web-6")
    groups_before = autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"]

    # The API checks the parameters against the type's model when the recommendation is registered.
    with pytest.raises(ApiError) as refused:
        recommend_asg(instance_id, min_size=3, desired_capacity=2)

    assert refused.value.status_code == 422
    assert "0 ≤ min_size ≤ desired_capacity ≤ max_size" in refused.value.body["message"]
    assert autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"] == groups_before
    assert instance_state(ec2, instance_id) == "running"
