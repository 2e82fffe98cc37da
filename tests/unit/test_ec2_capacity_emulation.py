"""The local runtime's EC2 capacity emulation: a start EC2 has no capacity for fails as on AWS."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from local_runtime.emulations import ec2_capacity
from local_runtime.runtime import LocalRuntime
from tests.unit.conftest import REGION

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.literals import InstanceTypeType

AMI_ID = "ami-12c6146b"


@pytest.fixture(autouse=True)
def installed() -> Iterator[None]:
    ec2_capacity.install(LocalRuntime())
    yield
    ec2_capacity.restore_capacity()


@pytest.fixture
def ec2(aws: None) -> EC2Client:
    # One attempt per call, so that each call meets a shortage once (boto3 retries a 500 by itself).
    return boto3.client("ec2", region_name=REGION, config=Config(retries={"total_max_attempts": 1}))


def stopped_instance(ec2: EC2Client, instance_type: InstanceTypeType = "m5.large") -> str:
    instance_id = ec2.run_instances(ImageId=AMI_ID, InstanceType=instance_type, MinCount=1, MaxCount=1)["Instances"][0][
        "InstanceId"
    ]
    ec2.stop_instances(InstanceIds=[instance_id])
    return instance_id


def state(ec2: EC2Client, instance_id: str) -> str:
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"]


def test_a_start_without_capacity_fails_with_the_error_aws_answers(ec2: EC2Client) -> None:
    # Given no m5.large capacity
    instance_id = stopped_instance(ec2, "m5.large")
    ec2_capacity.no_capacity_for(instance_type="m5.large")

    # When a stopped m5.large is started
    with pytest.raises(ClientError) as refused:
        ec2.start_instances(InstanceIds=[instance_id])

    # Then EC2 answers InsufficientInstanceCapacity with a server status, and the instance stays stopped
    assert refused.value.response["Error"]["Code"] == "InsufficientInstanceCapacity"
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert (
        "do not have sufficient m5.large capacity in the Availability Zone"
        in refused.value.response["Error"]["Message"]
    )
    assert state(ec2, instance_id) == "stopped"


def test_other_types_still_start(ec2: EC2Client) -> None:
    instance_id = stopped_instance(ec2, "m5.xlarge")
    ec2_capacity.no_capacity_for(instance_type="m5.large")

    ec2.start_instances(InstanceIds=[instance_id])

    assert state(ec2, instance_id) == "running"


def test_a_refused_start_of_several_instances_starts_none_of_them(ec2: EC2Client) -> None:
    short, fine = stopped_instance(ec2, "m5.large"), stopped_instance(ec2, "c5.large")
    ec2_capacity.no_capacity_for(instance_type="m5.large")

    with pytest.raises(ClientError):
        ec2.start_instances(InstanceIds=[fine, short])

    assert (state(ec2, fine), state(ec2, short)) == ("stopped", "stopped")


def test_a_shortage_for_one_instance_and_type_spares_that_instance_with_another_type(ec2: EC2Client) -> None:
    instance_id = stopped_instance(ec2, "m5.large")
    other = stopped_instance(ec2, "m5.large")
    ec2_capacity.no_capacity_for(instance_id=instance_id, instance_type="m5.large")

    with pytest.raises(ClientError):
        ec2.start_instances(InstanceIds=[instance_id])
    ec2.start_instances(InstanceIds=[other])
    ec2.modify_instance_attribute(InstanceId=instance_id, InstanceType={"Value": "m5.xlarge"})
    ec2.start_instances(InstanceIds=[instance_id])

    assert (state(ec2, other), state(ec2, instance_id)) == ("running", "running")


def test_a_shortage_for_some_starts_ends_by_itself(ec2: EC2Client) -> None:
    instance_id = stopped_instance(ec2)
    shortage = ec2_capacity.no_capacity_for(instance_type="m5.large", times=2)

    failures = 0
    for _ in range(2):
        with pytest.raises(ClientError):
            ec2.start_instances(InstanceIds=[instance_id])
        failures += 1
    ec2.start_instances(InstanceIds=[instance_id])

    assert (failures, shortage.hits) == (2, 2)
    assert state(ec2, instance_id) == "running"


def test_restoring_capacity_ends_every_shortage(ec2: EC2Client) -> None:
    instance_id = stopped_instance(ec2)
    ec2_capacity.no_capacity_for(instance_type="m5.large")
    ec2_capacity.no_capacity_for(instance_id=instance_id)

    ec2_capacity.restore_capacity()
    ec2.start_instances(InstanceIds=[instance_id])

    assert state(ec2, instance_id) == "running"


def test_starting_an_instance_that_already_runs_is_not_refused(ec2: EC2Client) -> None:
    instance_id = stopped_instance(ec2)
    ec2.start_instances(InstanceIds=[instance_id])
    shortage = ec2_capacity.no_capacity_for(instance_type="m5.large")

    ec2.start_instances(InstanceIds=[instance_id])

    assert shortage.hits == 0
    assert state(ec2, instance_id) == "running"


def test_installing_twice_patches_once() -> None:
    from moto.ec2.models.instances import InstanceBackend

    patched = InstanceBackend.start_instances

    ec2_capacity.install(LocalRuntime())

    assert InstanceBackend.start_instances is patched


def test_a_shortage_needs_an_instance_type_or_id_and_a_positive_count() -> None:
    with pytest.raises(ValueError, match="instance_type or the instance_id"):
        ec2_capacity.no_capacity_for()
    with pytest.raises(ValueError, match="times is at least 1"):
        ec2_capacity.no_capacity_for(instance_type="m5.large", times=0)
