"""The local runtime's emulation of how AWS paces EBS volume modifications (moto completes them at once
and accepts the next one straight away)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import boto3
import pytest
from botocore.exceptions import ClientError

from local_runtime.emulations import ebs_modifications
from tests.unit.conftest import REGION

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client


@pytest.fixture
def ec2(aws: None) -> Iterator[EC2Client]:
    with ebs_modifications.emulated():
        yield boto3.client("ec2", region_name=REGION)


@pytest.fixture
def volume_id(ec2: EC2Client) -> str:
    return ec2.create_volume(AvailabilityZone=f"{REGION}a", Size=100, VolumeType="gp2")["VolumeId"]


def states(ec2: EC2Client, volume_id: str) -> list[str]:
    return [
        m["ModificationState"]
        for m in ec2.describe_volumes_modifications(VolumeIds=[volume_id])["VolumesModifications"]
    ]


def test_a_modification_is_reported_modifying_then_optimizing_then_completed(ec2: EC2Client, volume_id: str) -> None:
    started = ec2.modify_volume(VolumeId=volume_id, VolumeType="gp3")["VolumeModification"]

    seen = [states(ec2, volume_id) for _ in range(4)]

    assert started["ModificationState"] == "modifying"
    assert "EndTime" not in started
    assert seen == [["modifying"], ["optimizing"], ["completed"], ["completed"]]
    completed = ec2.describe_volumes_modifications(VolumeIds=[volume_id])["VolumesModifications"][0]
    assert completed["Progress"] == 100
    assert "EndTime" in completed


def test_a_volume_being_modified_cannot_be_modified_again(ec2: EC2Client, volume_id: str) -> None:
    ec2.modify_volume(VolumeId=volume_id, VolumeType="gp3")

    with pytest.raises(ClientError) as refused:
        ec2.modify_volume(VolumeId=volume_id, VolumeType="gp2")

    assert refused.value.response["Error"]["Code"] == "IncorrectModificationState"
    assert "cannot be modified in modification state MODIFYING" in refused.value.response["Error"]["Message"]


def test_a_completed_modification_still_blocks_the_next_for_six_hours(ec2: EC2Client, volume_id: str) -> None:
    ec2.modify_volume(VolumeId=volume_id, VolumeType="gp3")
    ebs_modifications.elapse(volume_id, hours=5.9)

    with pytest.raises(ClientError) as refused:
        ec2.modify_volume(VolumeId=volume_id, VolumeType="gp2")

    assert refused.value.response["Error"]["Code"] == "VolumeModificationRateExceeded"
    assert "Wait at least 6 hours between modifications" in refused.value.response["Error"]["Message"]
    assert ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["VolumeType"] == "gp3"


def test_six_hours_later_the_volume_can_be_modified_again(ec2: EC2Client, volume_id: str) -> None:
    ec2.modify_volume(VolumeId=volume_id, VolumeType="gp3")
    ebs_modifications.elapse(volume_id, hours=6)

    ec2.modify_volume(VolumeId=volume_id, VolumeType="gp2")

    assert ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["VolumeType"] == "gp2"
    assert states(ec2, volume_id) == ["completed", "modifying"]


def test_a_dry_run_is_answered_as_before(ec2: EC2Client, volume_id: str) -> None:
    with pytest.raises(ClientError) as answered:
        ec2.modify_volume(VolumeId=volume_id, VolumeType="gp3", DryRun=True)

    assert answered.value.response["Error"]["Code"] == "DryRunOperation"
    assert states(ec2, volume_id) == []


def test_without_the_emulation_moto_answers_as_it_did(aws: None) -> None:
    # Given the emulation was installed and then undone
    with ebs_modifications.emulated():
        pass
    ec2 = boto3.client("ec2", region_name=REGION)
    volume_id = ec2.create_volume(AvailabilityZone=f"{REGION}a", Size=10, VolumeType="gp2")["VolumeId"]

    ec2.modify_volume(VolumeId=volume_id, VolumeType="gp3")
    ec2.modify_volume(VolumeId=volume_id, VolumeType="gp2")

    assert states(ec2, volume_id) == ["completed", "completed"]
