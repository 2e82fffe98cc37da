"""cost_engine.ec2_reads against emulated EC2: an instance or volume that exists is found, an id that
names nothing or is no id at all reads as None, any other refusal fails the step; and tag lists as dicts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.stub import Stubber

from cost_engine.aws import AwsClients
from cost_engine.ec2_reads import find_instance, find_volume, require_volume, tag_map
from cost_engine.errors import ActionFailed, TransientError
from tests.unit.conftest import REGION

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

AMI_ID = "ami-12c6146b"  # an image moto registers in every region
ZONE = f"{REGION}a"
UNKNOWN_INSTANCE_ID = "i-0123456789abcdef0"  # well-formed, and in no emulated account
UNKNOWN_VOLUME_ID = "vol-0123456789abcdef0"


@pytest.fixture
def ec2(aws: None) -> EC2Client:
    return boto3.client("ec2", region_name=REGION)


@pytest.fixture
def clients(aws: None) -> AwsClients:
    return AwsClients(REGION)


@pytest.fixture
def stubbed_ec2() -> Iterator[tuple[AwsClients, Stubber]]:
    """EC2 answers only what the test queues (moto answers every unknown id with NotFound, never with
    the Malformed or InvalidParameterValue codes AWS gives an ill-formed one)."""
    clients = AwsClients(REGION)
    with Stubber(clients.ec2) as stubber:
        yield clients, stubber
        stubber.assert_no_pending_responses()


def launch(ec2: EC2Client) -> str:
    tags: Any = [{"ResourceType": "instance", "Tags": [{"Key": "team", "Value": "web"}]}]
    reservation = ec2.run_instances(
        ImageId=AMI_ID, InstanceType="t3.micro", MinCount=1, MaxCount=1, TagSpecifications=tags
    )
    return reservation["Instances"][0]["InstanceId"]


def create_volume(ec2: EC2Client) -> str:
    tags: Any = [{"ResourceType": "volume", "Tags": [{"Key": "env", "Value": "prod"}]}]
    return ec2.create_volume(AvailabilityZone=ZONE, Size=8, TagSpecifications=tags)["VolumeId"]


Find = Callable[[AwsClients, str], object]


def test_an_existing_instance_is_found(clients: AwsClients, ec2: EC2Client) -> None:
    instance_id = launch(ec2)

    instance = find_instance(clients, instance_id)

    assert instance is not None
    assert instance["InstanceId"] == instance_id
    assert tag_map(instance.get("Tags", [])) == {"team": "web"}


def test_an_existing_volume_is_found(clients: AwsClients, ec2: EC2Client) -> None:
    volume_id = create_volume(ec2)

    volume = find_volume(clients, volume_id)

    assert volume is not None
    assert volume["VolumeId"] == volume_id
    assert tag_map(volume.get("Tags", [])) == {"env": "prod"}
    assert require_volume(clients, volume_id)["VolumeId"] == volume_id


@pytest.mark.parametrize(
    ("find", "resource_id"),
    [
        pytest.param(find_instance, UNKNOWN_INSTANCE_ID, id="unknown instance"),
        pytest.param(find_instance, "not-an-instance-id", id="malformed instance"),
        pytest.param(find_volume, UNKNOWN_VOLUME_ID, id="unknown volume"),
        pytest.param(find_volume, "not-a-volume-id", id="malformed volume"),
    ],
)
def test_an_id_that_names_nothing_reads_as_none(clients: AwsClients, find: Find, resource_id: str) -> None:
    assert find(clients, resource_id) is None


@pytest.mark.parametrize(
    ("find", "operation", "code"),
    [
        (find_instance, "describe_instances", "InvalidInstanceID.NotFound"),
        (find_instance, "describe_instances", "InvalidInstanceID.Malformed"),
        (find_volume, "describe_volumes", "InvalidVolume.NotFound"),
        (find_volume, "describe_volumes", "InvalidVolumeID.Malformed"),
        # What EC2 answers for a volume id that is not vol-…
        (find_volume, "describe_volumes", "InvalidParameterValue"),
    ],
)
def test_aws_answering_that_the_id_names_nothing_reads_as_none(
    stubbed_ec2: tuple[AwsClients, Stubber], find: Find, operation: str, code: str
) -> None:
    clients, stubber = stubbed_ec2
    stubber.add_client_error(operation, code, http_status_code=400)

    assert find(clients, "zzz") is None


@pytest.mark.parametrize(
    ("find", "operation", "code", "status", "raised", "named"),
    [
        (find_instance, "describe_instances", "UnauthorizedOperation", 403, ActionFailed, "DescribeInstances"),
        (find_volume, "describe_volumes", "RequestLimitExceeded", 503, TransientError, "DescribeVolumes"),
    ],
)
def test_any_other_refusal_fails_the_step_naming_the_call(
    stubbed_ec2: tuple[AwsClients, Stubber],
    find: Find,
    operation: str,
    code: str,
    status: int,
    raised: type[Exception],
    named: str,
) -> None:
    clients, stubber = stubbed_ec2
    stubber.add_client_error(operation, code, http_status_code=status)

    with pytest.raises(raised, match=f"^{named} failed: {code}"):
        find(clients, "zzz")


def test_a_failure_is_reported_as_the_callers_action(stubbed_ec2: tuple[AwsClients, Stubber]) -> None:
    clients, stubber = stubbed_ec2
    stubber.add_client_error("describe_instances", "UnauthorizedOperation", http_status_code=403)

    with pytest.raises(ActionFailed, match=r"^reading the tags of EC2 instance i-1 failed: UnauthorizedOperation"):
        find_instance(clients, "i-1", action="reading the tags of EC2 instance i-1")


def test_a_required_volume_that_does_not_exist_fails_the_step(clients: AwsClients) -> None:
    with pytest.raises(ActionFailed, match=f"^EBS volume {UNKNOWN_VOLUME_ID} does not exist in {REGION}$"):
        require_volume(clients, UNKNOWN_VOLUME_ID)


# -- tags ------------------------------------------------------------------------------------------


def test_tag_map_turns_an_aws_tag_list_into_a_dict() -> None:
    assert tag_map([{"Key": "team", "Value": "web"}, {"Key": "env", "Value": ""}]) == {"team": "web", "env": ""}


def test_tag_map_of_no_tags_is_empty() -> None:
    assert tag_map([]) == {}
