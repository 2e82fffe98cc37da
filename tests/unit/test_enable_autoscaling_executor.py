"""EnableAutoscalingExecutor against emulated EC2 and Auto Scaling: what it refuses, what it builds
from the instance, and that a rollback removes everything it made and leaves the original running."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from cost_engine.aws import AwsClients
from cost_engine.ec2_instances import EXECUTION_TAG, SOURCE_INSTANCE_TAG
from cost_engine.errors import ActionFailed
from cost_engine.executors.enable_autoscaling import EnableAutoscalingExecutor, names_for
from cost_engine.models import Recommendation, RecommendationType, new_execution_id
from tests.unit.conftest import ACCOUNT_ID, REGION

if TYPE_CHECKING:
    from mypy_boto3_autoscaling import AutoScalingClient
    from mypy_boto3_ec2 import EC2Client

AMI_ID = "ami-12c6146b"
USER_DATA = "#!/bin/bash\nsystemctl start nginx\n"
SIZES = {"min_size": 1, "max_size": 4, "desired_capacity": 2}
TRACKING = {"metric": "ASGAverageCPUUtilization", "target_value": 50.0}


@dataclass
class Account:
    ec2: EC2Client
    autoscaling: AutoScalingClient
    subnet_id: str
    security_group_id: str
    other_vpc_subnet_id: str


@pytest.fixture
def account(aws: None) -> Account:
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.40.1.0/24", AvailabilityZone="us-east-1a")["Subnet"]
    group = ec2.create_security_group(GroupName="web", Description="web", VpcId=vpc)["GroupId"]
    other_vpc = ec2.create_vpc(CidrBlock="10.41.0.0/16")["Vpc"]["VpcId"]
    other = ec2.create_subnet(VpcId=other_vpc, CidrBlock="10.41.1.0/24")["Subnet"]["SubnetId"]
    return Account(ec2, boto3.client("autoscaling", region_name=REGION), subnet["SubnetId"], group, other)


@pytest.fixture
def executor(aws: None) -> EnableAutoscalingExecutor:
    return EnableAutoscalingExecutor(AwsClients(REGION))


def launch_web_server(account: Account, instance_type: Any = "t3.medium") -> str:
    return account.ec2.run_instances(
        ImageId=AMI_ID,
        InstanceType=instance_type,
        MinCount=1,
        MaxCount=1,
        SubnetId=account.subnet_id,
        SecurityGroupIds=[account.security_group_id],
        UserData=USER_DATA,
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "web-1"}, {"Key": "team", "Value": "shop"}]}
        ],
    )["Instances"][0]["InstanceId"]


def recommendation_for(instance_id: str, **parameters: Any) -> Recommendation:
    return Recommendation(
        customer_id="acme-corp",
        type=RecommendationType.ENABLE_AUTOSCALING,
        account_id=ACCOUNT_ID,
        region=REGION,
        resource_id=instance_id,
        parameters={**SIZES, "target_tracking": TRACKING, **parameters},
        estimated_monthly_savings=42.0,
    )


def state(account: Account, instance_id: str) -> str:
    instance = account.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return instance["State"]["Name"]


def groups(account: Account) -> list[str]:
    return [g["AutoScalingGroupName"] for g in account.autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"]]


def templates(account: Account) -> list[str]:
    return [t["LaunchTemplateName"] for t in account.ec2.describe_launch_templates()["LaunchTemplates"]]


def own_images(account: Account) -> list[str]:
    return [i["ImageId"] for i in account.ec2.describe_images(Owners=["self"])["Images"]]


def enable(executor: EnableAutoscalingExecutor, recommendation: Recommendation, execution_id: str) -> dict[str, Any]:
    backup = executor.backup(recommendation, execution_id)
    assert executor.backup_ready(recommendation, backup)
    return {"backup": backup, "action": executor.apply(recommendation, backup)}


# -- validate -------------------------------------------------------------------------------------


def test_a_running_standalone_instance_is_valid_with_a_reminder_to_retire_it(
    account: Account, executor: EnableAutoscalingExecutor
) -> None:
    instance_id = launch_web_server(account)

    result = executor.validate(recommendation_for(instance_id))

    assert result.valid, result.errors
    assert result.warnings == [
        f"instance {instance_id} keeps running (and costing) next to the group: move its traffic to the group "
        "(e.g. a load balancer) and retire it when ready"
    ]


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        ({"min_size": 3, "desired_capacity": 2, "max_size": 4}, "min_size=3, desired_capacity=2, max_size=4"),
        ({"min_size": 0, "desired_capacity": 5, "max_size": 4}, "0 ≤ min_size ≤ desired_capacity ≤ max_size"),
        ({"min_size": 0, "desired_capacity": 0, "max_size": 0}, "max_size"),
        ({"min_size": -1}, "min_size"),
    ],
)
def test_invalid_sizes_are_refused_with_what_is_wrong(
    account: Account, executor: EnableAutoscalingExecutor, sizes: dict[str, int], message: str
) -> None:
    result = executor.validate(recommendation_for(launch_web_server(account), **sizes))

    assert not result.valid
    assert message in result.errors[0]


@pytest.mark.parametrize(
    "tracking",
    [
        {"metric": "ASGAverageCPUUtilization", "target_value": 150},
        {"metric": "ASGAverageCPUUtilization", "target_value": 0},
        {"metric": "ALBRequestCountPerTarget", "target_value": 100},
    ],
)
def test_an_impossible_target_is_refused(
    account: Account, executor: EnableAutoscalingExecutor, tracking: dict[str, Any]
) -> None:
    result = executor.validate(recommendation_for(launch_web_server(account), target_tracking=tracking))

    assert not result.valid
    assert "target_tracking" in result.errors[0]


def test_an_instance_already_in_a_group_is_refused(account: Account, executor: EnableAutoscalingExecutor) -> None:
    account.autoscaling.create_launch_configuration(
        LaunchConfigurationName="lc", ImageId=AMI_ID, InstanceType="t3.medium"
    )
    account.autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="existing",
        LaunchConfigurationName="lc",
        MinSize=1,
        MaxSize=1,
        VPCZoneIdentifier=account.subnet_id,
    )
    member = account.autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"][0]["Instances"][0]["InstanceId"]

    result = executor.validate(recommendation_for(member))

    assert not result.valid
    assert f"instance {member} already belongs to Auto Scaling group 'existing'" in result.errors[0]


def test_a_stopped_or_unknown_instance_is_refused(account: Account, executor: EnableAutoscalingExecutor) -> None:
    instance_id = launch_web_server(account)
    account.ec2.stop_instances(InstanceIds=[instance_id])

    stopped = executor.validate(recommendation_for(instance_id))
    unknown = executor.validate(recommendation_for("i-0123456789abcdef0"))

    assert not stopped.valid
    assert f"instance {instance_id} is 'stopped'" in stopped.errors[0]
    assert unknown.errors == [f"EC2 instance i-0123456789abcdef0 does not exist in {REGION}"]


def test_subnets_of_another_vpc_are_refused(account: Account, executor: EnableAutoscalingExecutor) -> None:
    result = executor.validate(recommendation_for(launch_web_server(account), subnets=[account.other_vpc_subnet_id]))

    assert not result.valid
    assert f"subnet {account.other_vpc_subnet_id} is in" in result.errors[0]


def test_a_second_group_from_the_same_instance_is_refused(
    account: Account, executor: EnableAutoscalingExecutor
) -> None:
    instance_id = launch_web_server(account)
    recommendation = recommendation_for(instance_id)
    enable(executor, recommendation, new_execution_id())

    result = executor.validate(recommendation)

    assert not result.valid
    assert "was already made from" in result.errors[0]


def test_instance_store_volumes_are_a_warning(account: Account, executor: EnableAutoscalingExecutor) -> None:
    result = executor.validate(recommendation_for(launch_web_server(account, "m5d.large")))

    assert result.valid
    assert any("instance-store volumes" in warning for warning in result.warnings)


# -- plan -----------------------------------------------------------------------------------------


def test_the_plan_names_what_will_be_created_and_uses_the_recommendations_estimate(
    account: Account, executor: EnableAutoscalingExecutor
) -> None:
    instance_id = launch_web_server(account)

    plan = executor.plan(recommendation_for(instance_id), "exec-1")

    names = names_for(instance_id, "exec-1")
    assert names.group in plan.summary
    assert plan.estimated_monthly_savings == 42.0
    assert plan.savings_basis.startswith("the recommendation's own estimate")
    assert plan.resource["group_at_desired_monthly_usd"] == pytest.approx(2 * plan.resource["instance_monthly_usd"])
    assert plan.resource["subnets"] == [account.subnet_id]
    assert any(names.policy in step for step in plan.rollback_plan.rollback_steps)


# -- backup, apply, verify ------------------------------------------------------------------------


def test_the_group_is_built_from_the_instance_and_verified_healthy(
    account: Account, executor: EnableAutoscalingExecutor
) -> None:
    # Given a standalone web server
    instance_id = launch_web_server(account)
    recommendation = recommendation_for(instance_id)
    execution_id = new_execution_id()

    # When the executor backs it up and builds the group
    done = enable(executor, recommendation, execution_id)
    action = done["action"]

    # Then the launch template carries the instance's configuration and the backup AMI
    names = names_for(instance_id, execution_id)
    version = account.ec2.describe_launch_template_versions(
        LaunchTemplateName=names.launch_template, Versions=["$Default"]
    )["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    assert version["ImageId"] == done["backup"].image_id
    assert version["InstanceType"] == "t3.medium"
    assert version["SecurityGroupIds"] == [account.security_group_id]
    assert base64.b64decode(version["UserData"]).decode() == USER_DATA
    instance_tags = {t["Key"]: t["Value"] for t in version["TagSpecifications"][0]["Tags"]}
    assert instance_tags == {
        "Name": "web-1",
        "team": "shop",
        EXECUTION_TAG: execution_id,
        SOURCE_INSTANCE_TAG: instance_id,
    }
    # and the group has the asked sizes, its instances and the target-tracking policy
    group = account.autoscaling.describe_auto_scaling_groups(
        AutoScalingGroupNames=[names.group],
    )["AutoScalingGroups"][0]
    assert (group["MinSize"], group["DesiredCapacity"], group["MaxSize"]) == (1, 2, 4)
    assert group["VPCZoneIdentifier"] == account.subnet_id
    assert executor.apply_done(recommendation, action) is True
    verification = executor.verify(recommendation, action)
    assert verification.passed, verification.failures
    assert "target-tracking policy" in " ".join(verification.checks)
    # and the original keeps running
    assert state(account, instance_id) == "running"
    assert executor.expected_savings(recommendation, done["backup"]) == 42.0


def test_a_repeated_backup_and_apply_create_nothing_twice(
    account: Account, executor: EnableAutoscalingExecutor
) -> None:
    instance_id = launch_web_server(account)
    recommendation = recommendation_for(instance_id)
    execution_id = new_execution_id()
    first = enable(executor, recommendation, execution_id)

    second = enable(executor, recommendation, execution_id)

    assert second["backup"].image_id == first["backup"].image_id
    assert second["action"].launch_template_id == first["action"].launch_template_id
    assert len(own_images(account)) == 1
    assert len(templates(account)) == 1
    assert groups(account) == [names_for(instance_id, execution_id).group]
    assert len(account.autoscaling.describe_policies()["ScalingPolicies"]) == 1


def test_a_group_with_desired_zero_is_done_at_once(account: Account, executor: EnableAutoscalingExecutor) -> None:
    recommendation = recommendation_for(launch_web_server(account), min_size=0, desired_capacity=0, max_size=2)

    action = enable(executor, recommendation, new_execution_id())["action"]

    assert executor.apply_done(recommendation, action) is True
    assert executor.verify(recommendation, action).passed


def test_verification_fails_when_the_policy_is_missing(account: Account, executor: EnableAutoscalingExecutor) -> None:
    recommendation = recommendation_for(launch_web_server(account))
    action = enable(executor, recommendation, new_execution_id())["action"]
    account.autoscaling.delete_policy(AutoScalingGroupName=action.group, PolicyName=action.policy)

    verification = executor.verify(recommendation, action)

    assert not verification.passed
    assert "target-tracking policy" in verification.failures[0]


# -- rollback -------------------------------------------------------------------------------------


def test_rollback_removes_everything_created_and_the_original_runs(
    account: Account, executor: EnableAutoscalingExecutor
) -> None:
    # Given a completed group
    instance_id = launch_web_server(account)
    recommendation = recommendation_for(instance_id)
    done = enable(executor, recommendation, new_execution_id())
    image_id = done["backup"].image_id
    snapshots = [
        m["Ebs"]["SnapshotId"]
        for m in account.ec2.describe_images(ImageIds=[image_id])["Images"][0]["BlockDeviceMappings"]
    ]
    members = [
        i["InstanceId"] for i in account.autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"][0]["Instances"]
    ]

    # When it is rolled back and polled until done
    rollback = executor.rollback(recommendation, done["backup"], done["action"])
    while not executor.rollback_done(recommendation, rollback):
        pass

    # Then no group, policy, template, AMI or snapshot of the execution is left, and the original runs
    assert groups(account) == []
    assert account.autoscaling.describe_policies()["ScalingPolicies"] == []
    assert templates(account) == []
    assert own_images(account) == []
    remaining = {s["SnapshotId"] for s in account.ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert remaining.isdisjoint(snapshots)
    assert {state(account, m) for m in members} == {"terminated"}
    assert state(account, instance_id) == "running"
    assert len(rollback.removed) == 2


def test_rollback_after_a_crash_inside_apply_finds_what_was_made_by_name(
    account: Account, executor: EnableAutoscalingExecutor
) -> None:
    # Given the launch template was made but the step died before recording anything
    instance_id = launch_web_server(account)
    recommendation = recommendation_for(instance_id)
    backup = executor.backup(recommendation, new_execution_id())
    executor._create_launch_template(backup)

    rollback = executor.rollback(recommendation, backup, None)
    while not executor.rollback_done(recommendation, rollback):
        pass

    assert templates(account) == []
    assert own_images(account) == []


def test_rollback_starts_the_original_again_if_something_stopped_it(
    account: Account, executor: EnableAutoscalingExecutor
) -> None:
    instance_id = launch_web_server(account)
    recommendation = recommendation_for(instance_id)
    done = enable(executor, recommendation, new_execution_id())
    account.ec2.stop_instances(InstanceIds=[instance_id])

    rollback = executor.rollback(recommendation, done["backup"], done["action"])
    while not executor.rollback_done(recommendation, rollback):
        pass

    assert state(account, instance_id) == "running"


def test_rollback_before_the_backup_has_nothing_to_remove(
    account: Account, executor: EnableAutoscalingExecutor
) -> None:
    instance_id = launch_web_server(account)
    recommendation = recommendation_for(instance_id)

    rollback = executor.rollback(recommendation, None, None)

    assert executor.rollback_done(recommendation, rollback) is True
    assert rollback.removed == []


def test_rollback_says_so_when_the_original_was_terminated_by_something_else(
    account: Account, executor: EnableAutoscalingExecutor
) -> None:
    instance_id = launch_web_server(account)
    recommendation = recommendation_for(instance_id)
    done = enable(executor, recommendation, new_execution_id())
    account.ec2.terminate_instances(InstanceIds=[instance_id])

    rollback = executor.rollback(recommendation, done["backup"], done["action"])

    with pytest.raises(ActionFailed, match="never stops or terminates it"):
        executor.rollback_done(recommendation, rollback)
    assert groups(account) == []


def test_permissions_scope_group_actions_to_the_engines_groups() -> None:
    for permission in EnableAutoscalingExecutor.permissions:
        mutating = [a for a in permission.actions if a.startswith("autoscaling:") and ":Describe" not in a]
        if mutating:
            assert permission.resources == (
                "arn:{partition}:autoscaling:{region}:{account}:autoScalingGroup:*:autoScalingGroupName/cost-engine-*",
            )
            assert permission.conditions
    pass_role = next(p for p in EnableAutoscalingExecutor.permissions if "iam:PassRole" in p.actions)
    assert pass_role.conditions == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}
