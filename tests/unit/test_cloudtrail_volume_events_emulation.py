"""The local runtime's emulation of CloudTrail LookupEvents for EBS AttachVolume / DetachVolume."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.exceptions import ClientError

from local_runtime.emulations import cloudtrail_volume_events
from tests.unit.conftest import ACCOUNT_ID, REGION

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

ZONE = f"{REGION}a"


@pytest.fixture
def ec2(aws: None) -> EC2Client:
    cloudtrail_volume_events.patch_moto()
    return boto3.client("ec2", region_name=REGION)


@pytest.fixture
def cloudtrail(ec2: EC2Client) -> Any:
    return boto3.client("cloudtrail", region_name=REGION)


def volume_and_instance(ec2: EC2Client) -> tuple[str, str]:
    volume_id = ec2.create_volume(AvailabilityZone=ZONE, Size=8)["VolumeId"]
    placement: Any = {"AvailabilityZone": ZONE}
    instance = ec2.run_instances(
        ImageId="ami-12c6146b", InstanceType="t3.micro", MinCount=1, MaxCount=1, Placement=placement
    )
    return volume_id, instance["Instances"][0]["InstanceId"]


def events_of(cloudtrail: Any, volume_id: str, **request: Any) -> list[dict[str, Any]]:
    attributes = [{"AttributeKey": "ResourceName", "AttributeValue": volume_id}]
    events: list[dict[str, Any]] = cloudtrail.lookup_events(LookupAttributes=attributes, **request)["Events"]
    return events


def test_attach_and_detach_calls_are_found_newest_first_with_the_volume_and_instance(
    ec2: EC2Client, cloudtrail: Any
) -> None:
    # Given a volume attached to an instance, then detached, through the EC2 API
    volume_id, instance_id = volume_and_instance(ec2)
    ec2.attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device="/dev/sdf")
    ec2.detach_volume(VolumeId=volume_id, InstanceId=instance_id)

    # When CloudTrail's history is looked up by the volume id
    events = events_of(cloudtrail, volume_id)

    # Then both calls are there, newest first, naming the volume and the instance
    assert [e["EventName"] for e in events] == ["DetachVolume", "AttachVolume"]
    assert events[0]["EventTime"] >= events[1]["EventTime"]
    assert events[0]["EventSource"] == "ec2.amazonaws.com"
    assert {(r["ResourceType"], r["ResourceName"]) for r in events[0]["Resources"]} == {
        ("AWS::EC2::Volume", volume_id),
        ("AWS::EC2::Instance", instance_id),
    }
    assert '"eventName": "DetachVolume"' in events[0]["CloudTrailEvent"]


def test_a_refused_or_dry_run_call_is_not_recorded(ec2: EC2Client, cloudtrail: Any) -> None:
    volume_id, instance_id = volume_and_instance(ec2)
    with pytest.raises(ClientError, match="DryRunOperation"):
        ec2.attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device="/dev/sdf", DryRun=True)
    with pytest.raises(ClientError):
        ec2.detach_volume(VolumeId=volume_id, InstanceId=instance_id)  # it is not attached

    assert events_of(cloudtrail, volume_id) == []


def test_a_lookup_answers_only_for_the_named_resource_and_time_range(ec2: EC2Client, cloudtrail: Any) -> None:
    volume_id, instance_id = volume_and_instance(ec2)
    other_volume, _ = volume_and_instance(ec2)
    now = datetime.now(UTC)
    for days in (100, 20, 2):
        cloudtrail_volume_events.record_volume_event(
            ACCOUNT_ID, REGION, "DetachVolume", volume_id, instance_id, now - timedelta(days=days)
        )

    everything_kept = events_of(cloudtrail, volume_id)
    last_week = events_of(cloudtrail, volume_id, StartTime=now - timedelta(days=7))

    # Events older than CloudTrail's 90 days are gone, as on AWS
    assert len(everything_kept) == 2
    assert len(last_week) == 1
    assert events_of(cloudtrail, other_volume) == []


def test_a_lookup_pages_through_many_events(ec2: EC2Client, cloudtrail: Any) -> None:
    volume_id, instance_id = volume_and_instance(ec2)
    for hours in range(5):
        cloudtrail_volume_events.record_volume_event(
            ACCOUNT_ID, REGION, "AttachVolume", volume_id, instance_id, datetime.now(UTC) - timedelta(hours=hours)
        )
    attributes = [{"AttributeKey": "ResourceName", "AttributeValue": volume_id}]

    first = cloudtrail.lookup_events(LookupAttributes=attributes, MaxResults=3)
    second = cloudtrail.lookup_events(LookupAttributes=attributes, MaxResults=3, NextToken=first["NextToken"])

    assert len(first["Events"]) == 3
    assert len(second["Events"]) == 2
    assert "NextToken" not in second


def test_more_than_one_lookup_attribute_is_refused_as_on_aws(ec2: EC2Client, cloudtrail: Any) -> None:
    attributes = [
        {"AttributeKey": "EventName", "AttributeValue": "DetachVolume"},
        {"AttributeKey": "ResourceName", "AttributeValue": "vol-1"},
    ]

    with pytest.raises(ClientError, match="InvalidLookupAttributesException"):
        cloudtrail.lookup_events(LookupAttributes=attributes)


def test_the_history_is_reset_with_moto(cloudtrail: Any) -> None:
    # Each test's account is new: nothing recorded by an earlier test is found.
    assert cloudtrail.lookup_events()["Events"] == []
