"""The local runtime's emulation of EC2 MonitorInstances / UnmonitorInstances."""

from __future__ import annotations

from typing import TYPE_CHECKING

import boto3
import pytest
from botocore.exceptions import ClientError

from local_runtime.emulations import ec2_detailed_monitoring
from tests.unit.conftest import REGION

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client


@pytest.fixture
def ec2(aws: None) -> EC2Client:
    ec2_detailed_monitoring.patch_moto()
    return boto3.client("ec2", region_name=REGION)


def launch(ec2: EC2Client) -> str:
    return ec2.run_instances(ImageId="ami-12c6146b", InstanceType="t3.micro", MinCount=1, MaxCount=1)["Instances"][0][
        "InstanceId"
    ]


def monitoring(ec2: EC2Client, instance_id: str) -> str:
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["Monitoring"]["State"]


def test_monitoring_is_turned_on_and_off_answering_the_transitional_state_as_aws(ec2: EC2Client) -> None:
    instance_id = launch(ec2)
    assert monitoring(ec2, instance_id) == "disabled"

    turned_on = ec2.monitor_instances(InstanceIds=[instance_id])["InstanceMonitorings"]
    on = monitoring(ec2, instance_id)
    turned_off = ec2.unmonitor_instances(InstanceIds=[instance_id])["InstanceMonitorings"]

    assert turned_on == [{"InstanceId": instance_id, "Monitoring": {"State": "pending"}}]
    assert on == "enabled"
    assert turned_off == [{"InstanceId": instance_id, "Monitoring": {"State": "disabling"}}]
    assert monitoring(ec2, instance_id) == "disabled"


def test_an_unknown_instance_is_refused_and_nothing_changes(ec2: EC2Client) -> None:
    instance_id = launch(ec2)

    with pytest.raises(ClientError, match=r"InvalidInstanceID\.NotFound"):
        ec2.monitor_instances(InstanceIds=[instance_id, "i-0123456789abcdef0"])

    assert monitoring(ec2, instance_id) == "disabled"


def test_a_dry_run_changes_nothing(ec2: EC2Client) -> None:
    instance_id = launch(ec2)

    with pytest.raises(ClientError, match="DryRunOperation"):
        ec2.monitor_instances(InstanceIds=[instance_id], DryRun=True)

    assert monitoring(ec2, instance_id) == "disabled"
