"""TerminateInstanceExecutor against emulated EC2 and Auto Scaling: what it refuses, what it plans, and
backup → terminate → verify → roll back called step by step, without a state machine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
import pytest
from botocore.exceptions import ClientError

from cost_engine.aws import AwsClients
from cost_engine.ec2_instances import EXECUTION_TAG, RESTORED_FOR_TAG, SOURCE_INSTANCE_TAG
from cost_engine.errors import ActionFailed
from cost_engine.executors.terminate_instance import TerminateInstanceExecutor
from cost_engine.executors.terminate_instance.ec2 import Ec2Backup, Ec2Restore, Ec2Termination
from cost_engine.models import Recommendation, RecommendationType, new_execution_id
from cost_engine.pricing import price_catalog
from tests.unit.conftest import ACCOUNT_ID, REGION

if TYPE_CHECKING:
    from mypy_boto3_autoscaling import AutoScalingClient
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.literals import InstanceTypeType, VolumeTypeType
    from mypy_boto3_ec2.type_defs import InstanceTypeDef

AMI_ID = "ami-12c6146b"  # an EBS-backed Amazon Linux image moto registers in every region
ROOT_GB = 20
ROOT_VOLUME_TYPE: VolumeTypeType = "gp3"

RecordT = TypeVar("RecordT")


def ec2_record(kind: type[RecordT], record: object) -> RecordT:
    """A step's record, which for an instance id is the EC2 strategy's (the executor answers either)."""
    assert isinstance(record, kind)
    return record


def recommendation_for(instance_id: str, **parameters: Any) -> Recommendation:
    return Recommendation(
        customer_id="acme-corp",
        type=RecommendationType.TERMINATE_INSTANCE,
        account_id=ACCOUNT_ID,
        region=REGION,
        resource_id=instance_id,
        parameters=parameters,
    )


@pytest.fixture
def ec2(aws: None) -> EC2Client:
    return boto3.client("ec2", region_name=REGION)


@pytest.fixture
def autoscaling(aws: None) -> AutoScalingClient:
    return boto3.client("autoscaling", region_name=REGION)


@pytest.fixture
def executor(aws: None) -> TerminateInstanceExecutor:
    return TerminateInstanceExecutor(AwsClients(REGION))


def launch(
    ec2: EC2Client, instance_type: InstanceTypeType = "m5.large", *, delete_root_on_termination: bool = True
) -> str:
    instance = ec2.run_instances(
        ImageId=AMI_ID,
        InstanceType=instance_type,
        MinCount=1,
        MaxCount=1,
        BlockDeviceMappings=[
            {
                "DeviceName": "/dev/sda1",
                "Ebs": {
                    "VolumeSize": ROOT_GB,
                    "VolumeType": ROOT_VOLUME_TYPE,
                    "DeleteOnTermination": delete_root_on_termination,
                },
            }
        ],
    )["Instances"][0]
    return instance["InstanceId"]


def describe(ec2: EC2Client, instance_id: str) -> InstanceTypeDef:
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def instances_restored_for(ec2: EC2Client, execution_id: str) -> list[InstanceTypeDef]:
    reservations = ec2.describe_instances(Filters=[{"Name": f"tag:{RESTORED_FOR_TAG}", "Values": [execution_id]}])
    return [i for r in reservations["Reservations"] for i in r["Instances"]]


# -- validate ---------------------------------------------------------------------------------------


def test_a_running_instance_without_risks_is_valid(ec2: EC2Client, executor: TerminateInstanceExecutor) -> None:
    result = executor.validate(recommendation_for(launch(ec2)))

    assert result.valid
    assert result.errors == []
    assert result.warnings == []


def test_an_unknown_instance_is_refused(executor: TerminateInstanceExecutor) -> None:
    result = executor.validate(recommendation_for("i-0123456789abcdef0"))

    assert not result.valid
    assert result.errors == [f"EC2 instance i-0123456789abcdef0 does not exist in {REGION}"]


def test_an_already_terminated_instance_is_refused(ec2: EC2Client, executor: TerminateInstanceExecutor) -> None:
    instance_id = launch(ec2)
    ec2.terminate_instances(InstanceIds=[instance_id])

    result = executor.validate(recommendation_for(instance_id))

    assert not result.valid
    assert result.errors == [
        f"instance {instance_id} is 'terminated': only running or stopped instances are terminated"
    ]


def test_an_instance_of_an_auto_scaling_group_is_refused(
    ec2: EC2Client, autoscaling: AutoScalingClient, executor: TerminateInstanceExecutor
) -> None:
    # Given an instance launched by an Auto Scaling group
    ec2.create_launch_template(
        LaunchTemplateName="web-template", LaunchTemplateData={"ImageId": AMI_ID, "InstanceType": "m5.large"}
    )
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="web-asg",
        LaunchTemplate={"LaunchTemplateName": "web-template", "Version": "$Latest"},
        MinSize=1,
        MaxSize=1,
        DesiredCapacity=1,
        AvailabilityZones=[f"{REGION}a"],
    )
    instance_id = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["web-asg"])["AutoScalingGroups"][0][
        "Instances"
    ][0]["InstanceId"]

    # When its termination is validated
    result = executor.validate(recommendation_for(instance_id))

    # Then it is refused: the group would only replace it
    assert not result.valid
    assert len(result.errors) == 1
    assert "belongs to Auto Scaling group 'web-asg'" in result.errors[0]
    assert "lower the group's desired capacity instead" in result.errors[0]


def test_an_instance_with_termination_protection_is_refused(
    ec2: EC2Client, executor: TerminateInstanceExecutor
) -> None:
    # Given an instance with termination protection on. (moto 5.2.5 ignores DisableApiTermination
    # in RunInstances, so it is turned on the other way AWS offers.)
    instance_id = launch(ec2)
    ec2.modify_instance_attribute(InstanceId=instance_id, DisableApiTermination={"Value": True})

    result = executor.validate(recommendation_for(instance_id))

    assert not result.valid
    assert len(result.errors) == 1
    assert "termination protection (DisableApiTermination) on" in result.errors[0]


def test_an_instance_type_with_instance_store_is_refused_unless_the_loss_is_acknowledged(
    ec2: EC2Client, executor: TerminateInstanceExecutor
) -> None:
    # Given an m5d.large, whose local NVMe disk is not in an AMI backup
    instance_id = launch(ec2, "m5d.large")

    # When validated without, then with, the acknowledgement
    unacknowledged = executor.validate(recommendation_for(instance_id))
    acknowledged = executor.validate(recommendation_for(instance_id, acknowledge_instance_store_loss=True))

    # Then the data loss is an error at first, and a warning once acknowledged
    assert not unacknowledged.valid
    assert len(unacknowledged.errors) == 1
    assert "m5d.large has instance-store volumes whose data is lost" in unacknowledged.errors[0]
    assert "set parameters.acknowledge_instance_store_loss=true" in unacknowledged.errors[0]
    assert acknowledged.valid
    assert len(acknowledged.warnings) == 1
    assert "(acknowledged in the recommendation)" in acknowledged.warnings[0]


def test_unknown_parameters_are_refused(ec2: EC2Client, executor: TerminateInstanceExecutor) -> None:
    result = executor.validate(recommendation_for(launch(ec2), acknowledge_data_loss=True))

    assert not result.valid
    assert "invalid parameters for terminate_instance" in result.errors[0]


def test_a_volume_that_survives_termination_is_a_warning(ec2: EC2Client, executor: TerminateInstanceExecutor) -> None:
    # Given an instance whose root volume is kept at termination
    instance_id = launch(ec2, delete_root_on_termination=False)
    volume_id = describe(ec2, instance_id)["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]

    result = executor.validate(recommendation_for(instance_id))

    # Then it may go ahead, but the volume that keeps costing is pointed out
    assert result.valid
    assert result.warnings == [
        f"volume {volume_id} has DeleteOnTermination=false: it stays (and keeps costing) after the instance is gone"
    ]


# -- plan -------------------------------------------------------------------------------------------


def test_the_plan_of_a_running_instance_saves_compute_and_storage_less_the_backup(
    ec2: EC2Client, executor: TerminateInstanceExecutor
) -> None:
    catalog = price_catalog()
    instance_id = launch(ec2)

    plan = executor.plan(recommendation_for(instance_id), new_execution_id())

    compute = catalog.ec2_hourly["m5.large"] * catalog.hours_per_month
    root_volume = catalog.ebs_gb_month[ROOT_VOLUME_TYPE] * ROOT_GB
    snapshot = catalog.snapshot_gb_month * ROOT_GB
    assert plan.estimated_monthly_savings == pytest.approx(compute + root_volume - snapshot, abs=0.01)
    assert plan.savings_basis == catalog.basis
    assert plan.resource["state"] == "running"


def test_the_plan_of_a_stopped_instance_saves_no_compute(ec2: EC2Client, executor: TerminateInstanceExecutor) -> None:
    catalog = price_catalog()
    instance_id = launch(ec2)
    ec2.stop_instances(InstanceIds=[instance_id])

    plan = executor.plan(recommendation_for(instance_id), new_execution_id())

    root_volume = catalog.ebs_gb_month[ROOT_VOLUME_TYPE] * ROOT_GB
    snapshot = catalog.snapshot_gb_month * ROOT_GB
    assert plan.estimated_monthly_savings == pytest.approx(root_volume - snapshot, abs=0.01)
    assert plan.resource["state"] == "stopped"


def test_without_a_catalog_price_the_plan_falls_back_to_the_recommendations_estimate(
    ec2: EC2Client, executor: TerminateInstanceExecutor
) -> None:
    # Given an instance type the price catalog does not list
    assert "t2.xlarge" not in price_catalog().ec2_hourly
    instance_id = launch(ec2, "t2.xlarge")
    recommendation = recommendation_for(instance_id).model_copy(update={"estimated_monthly_savings": 123.45})

    plan = executor.plan(recommendation, new_execution_id())

    assert plan.estimated_monthly_savings == 123.45
    assert plan.savings_basis == "no catalog price for t2.xlarge: the recommendation's own estimate"


# -- backup, terminate, verify, roll back -------------------------------------------------------------


@dataclass(frozen=True)
class Network:
    subnet_id: str
    security_group_id: str


@pytest.fixture
def network(ec2: EC2Client) -> Network:
    vpc_id = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet_id = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.0.1.0/24", AvailabilityZone=f"{REGION}a")["Subnet"][
        "SubnetId"
    ]
    group_id = ec2.create_security_group(GroupName="web", Description="web servers", VpcId=vpc_id)["GroupId"]
    return Network(subnet_id, group_id)


@pytest.fixture
def web_server(ec2: EC2Client, network: Network) -> str:
    """A running, tagged m5.large in its own subnet and security group, with user data."""
    return ec2.run_instances(
        ImageId=AMI_ID,
        InstanceType="m5.large",
        MinCount=1,
        MaxCount=1,
        SubnetId=network.subnet_id,
        SecurityGroupIds=[network.security_group_id],
        UserData="#!/bin/sh\necho hello\n",
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "web-1"}, {"Key": "team", "Value": "shop"}]}
        ],
    )["Instances"][0]["InstanceId"]


@pytest.fixture
def execution_id() -> str:
    return new_execution_id()


def test_backup_creates_an_ami_tagged_with_the_execution(
    ec2: EC2Client, executor: TerminateInstanceExecutor, web_server: str, execution_id: str
) -> None:
    recommendation = recommendation_for(web_server)

    backup = ec2_record(Ec2Backup, executor.backup(recommendation, execution_id))

    [image] = ec2.describe_images(ImageIds=[backup.image_id])["Images"]
    tags = {t["Key"]: t["Value"] for t in image["Tags"]}
    assert tags[EXECUTION_TAG] == execution_id
    assert tags[SOURCE_INSTANCE_TAG] == web_server
    assert executor.backup_ready(recommendation, backup) is True


def test_a_backup_ami_that_is_gone_fails_the_wait_and_leaves_the_instance_untouched(
    ec2: EC2Client, executor: TerminateInstanceExecutor, web_server: str, execution_id: str
) -> None:
    recommendation = recommendation_for(web_server)
    backup = ec2_record(Ec2Backup, executor.backup(recommendation, execution_id))
    ec2.deregister_image(ImageId=backup.image_id)

    with pytest.raises(ActionFailed, match=rf"backup AMI {backup.image_id} is 'missing': the instance is left"):
        executor.backup_ready(recommendation, backup)
    [instance] = ec2.describe_instances(InstanceIds=[web_server])["Reservations"][0]["Instances"]
    assert instance["State"]["Name"] == "running"


def test_a_repeated_backup_reuses_the_ami_it_already_made(
    ec2: EC2Client, executor: TerminateInstanceExecutor, web_server: str, execution_id: str
) -> None:
    recommendation = recommendation_for(web_server)

    first = ec2_record(Ec2Backup, executor.backup(recommendation, execution_id))
    second = ec2_record(Ec2Backup, executor.backup(recommendation, execution_id))

    assert second.image_id == first.image_id
    assert len(ec2.describe_images(Owners=["self"])["Images"]) == 1


@pytest.fixture
def create_tags_denied(executor: TerminateInstanceExecutor, monkeypatch: pytest.MonkeyPatch) -> None:
    """The executor's IAM policy allows ec2:CreateTags only with ec2:CreateAction (tag on create):
    AWS refuses a standalone CreateTags call of that role."""

    def denied(**kwargs: Any) -> None:
        raise ClientError(
            {"Error": {"Code": "UnauthorizedOperation", "Message": "not authorized to perform ec2:CreateTags"}},
            "CreateTags",
        )

    monkeypatch.setattr(executor.clients.ec2, "create_tags", denied)


@pytest.mark.usefixtures("create_tags_denied")
def test_backup_works_with_tag_on_create_permission_only(
    ec2: EC2Client, executor: TerminateInstanceExecutor, web_server: str, execution_id: str
) -> None:
    recommendation = recommendation_for(web_server)

    backup = ec2_record(Ec2Backup, executor.backup(recommendation, execution_id))
    executor.backup(recommendation, execution_id)  # a retried step

    [image] = ec2.describe_images(Owners=["self"])["Images"]
    assert image["ImageId"] == backup.image_id
    assert {"Key": EXECUTION_TAG, "Value": execution_id} in image["Tags"]


@pytest.fixture
def terminated(
    ec2: EC2Client, executor: TerminateInstanceExecutor, web_server: str, execution_id: str
) -> tuple[Ec2Backup, Ec2Termination]:
    """The web server backed up and terminated by the executor: (backup, action)."""
    recommendation = recommendation_for(web_server)
    backup = ec2_record(Ec2Backup, executor.backup(recommendation, execution_id))
    assert executor.backup_ready(recommendation, backup)
    return backup, ec2_record(Ec2Termination, executor.apply(recommendation, backup))


def test_apply_terminates_the_instance_and_verify_confirms_it(
    ec2: EC2Client,
    executor: TerminateInstanceExecutor,
    web_server: str,
    terminated: tuple[Ec2Backup, Ec2Termination],
) -> None:
    _, action = terminated
    recommendation = recommendation_for(web_server)

    assert describe(ec2, web_server)["State"]["Name"] == "terminated"
    assert executor.apply_done(recommendation, action) is True
    verification = executor.verify(recommendation, action)
    assert verification.passed
    assert verification.failures == []


def test_a_repeated_apply_does_not_act_twice(
    executor: TerminateInstanceExecutor, web_server: str, terminated: tuple[Ec2Backup, Ec2Termination]
) -> None:
    backup, _ = terminated

    again = ec2_record(Ec2Termination, executor.apply(recommendation_for(web_server), backup))

    assert again.state_before == "terminated"


def test_rollback_relaunches_the_instance_from_the_ami_as_it_was(
    ec2: EC2Client,
    executor: TerminateInstanceExecutor,
    network: Network,
    web_server: str,
    execution_id: str,
    terminated: tuple[Ec2Backup, Ec2Termination],
) -> None:
    backup, action = terminated
    recommendation = recommendation_for(web_server)

    # When the terminated instance is rolled back
    rollback = ec2_record(Ec2Restore, executor.rollback(recommendation, backup, action))

    # Then a new instance runs from the backup AMI with the recorded configuration
    assert rollback.relaunched is True
    restored = describe(ec2, rollback.instance_id)
    assert restored["InstanceId"] != web_server
    assert restored["ImageId"] == backup.image_id
    assert restored["InstanceType"] == "m5.large"
    assert restored["SubnetId"] == network.subnet_id
    assert [g["GroupId"] for g in restored["SecurityGroups"]] == [network.security_group_id]
    tags = {t["Key"]: t["Value"] for t in restored["Tags"]}
    assert tags["Name"] == "web-1"
    assert tags["team"] == "shop"
    assert tags[RESTORED_FOR_TAG] == execution_id
    assert tags[SOURCE_INSTANCE_TAG] == web_server
    user_data = ec2.describe_instance_attribute(InstanceId=rollback.instance_id, Attribute="userData")
    assert user_data["UserData"]["Value"] == backup.launch_config.user_data_base64
    assert executor.rollback_done(recommendation, rollback) is True


def test_a_repeated_rollback_does_not_launch_a_second_instance(
    ec2: EC2Client,
    executor: TerminateInstanceExecutor,
    web_server: str,
    execution_id: str,
    terminated: tuple[Ec2Backup, Ec2Termination],
) -> None:
    backup, action = terminated
    recommendation = recommendation_for(web_server)

    first = ec2_record(Ec2Restore, executor.rollback(recommendation, backup, action))
    second = ec2_record(Ec2Restore, executor.rollback(recommendation, backup, action))

    assert second.instance_id == first.instance_id
    assert [i["InstanceId"] for i in instances_restored_for(ec2, execution_id)] == [first.instance_id]


def test_rollback_before_termination_keeps_the_original_instance(
    ec2: EC2Client, executor: TerminateInstanceExecutor, web_server: str, execution_id: str
) -> None:
    # Given the backup was made but the instance was never terminated (the step failed before)
    recommendation = recommendation_for(web_server)
    backup = executor.backup(recommendation, execution_id)

    rollback = executor.rollback(recommendation, backup, None)

    # Then nothing is relaunched: the original is still there, running
    assert executor.stored(rollback) == {"instance_id": web_server, "relaunched": False, "target_state": "running"}
    assert instances_restored_for(ec2, execution_id) == []
    assert executor.rollback_done(recommendation, rollback) is True


def test_rollback_of_a_stopped_instance_leaves_the_relaunched_one_stopped(
    ec2: EC2Client, executor: TerminateInstanceExecutor, web_server: str, execution_id: str
) -> None:
    # Given a stopped instance that was backed up and terminated
    ec2.stop_instances(InstanceIds=[web_server])
    recommendation = recommendation_for(web_server)
    backup = executor.backup(recommendation, execution_id)
    action = executor.apply(recommendation, backup)

    # When it is rolled back and the rollback is polled until done
    rollback = ec2_record(Ec2Restore, executor.rollback(recommendation, backup, action))
    polls = [executor.rollback_done(recommendation, rollback) for _ in range(2)]

    # Then the relaunched instance ends up stopped, as the original was
    assert polls == [False, True]
    assert describe(ec2, rollback.instance_id)["State"]["Name"] == "stopped"
