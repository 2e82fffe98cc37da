"""The local runtime's emulation of EventBridge Scheduler firing a universal target (moto stores
schedules but never fires them), and of EC2 hibernating on a stop that asks for it."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.exceptions import ClientError, ParamValidationError

from cost_engine.aws import AwsClients
from local_runtime.emulations import scheduler_targets
from local_runtime.emulations.scheduler_targets import TargetRefused, fire_schedule
from tests.unit.conftest import REGION

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_scheduler import EventBridgeSchedulerClient

AMI_ID = "ami-12c6146b"
STOP = "arn:aws:scheduler:::aws-sdk:ec2:stopInstances"
START = "arn:aws:scheduler:::aws-sdk:ec2:startInstances"


class Clients:
    """A client factory, as the LocalRuntime is one."""

    def client(self, service: str) -> Any:
        return boto3.client(service, region_name=REGION)  # type: ignore[call-overload]


@pytest.fixture
def hibernation_emulated(aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The emulation installed for this test only: moto's plain StopInstances comes back afterwards."""
    from moto.ec2.responses.instances import InstanceResponse

    monkeypatch.setattr(InstanceResponse, "stop_instances", InstanceResponse.stop_instances)
    scheduler_targets.install(None)


@pytest.fixture
def ec2(hibernation_emulated: None) -> EC2Client:
    return boto3.client("ec2", region_name=REGION)


@pytest.fixture
def scheduler(aws: None) -> EventBridgeSchedulerClient:
    return boto3.client("scheduler", region_name=REGION)


@pytest.fixture
def iam(aws: None) -> IAMClient:
    return boto3.client("iam", region_name=REGION)


def trust(service: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
        }
    )


@pytest.fixture
def role_arn(iam: IAMClient) -> str:
    return iam.create_role(RoleName="scheduler-ec2", AssumeRolePolicyDocument=trust("scheduler.amazonaws.com"))["Role"][
        "Arn"
    ]


def launch(ec2: EC2Client, *, hibernation: bool = False) -> str:
    return ec2.run_instances(
        ImageId=AMI_ID,
        InstanceType="t3.large",
        MinCount=1,
        MaxCount=1,
        HibernationOptions={"Configured": hibernation},
        BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 20, "Encrypted": True}}],
    )["Instances"][0]["InstanceId"]


def describe(ec2: EC2Client, instance_id: str) -> Any:
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def schedule(
    scheduler: EventBridgeSchedulerClient,
    name: str,
    arn: str,
    role_arn: str,
    payload: dict[str, Any] | None = None,
    **extra: Any,
) -> None:
    target: dict[str, Any] = {"Arn": arn, "RoleArn": role_arn}
    if payload is not None:
        target["Input"] = json.dumps(payload)
    scheduler.create_schedule(
        Name=name,
        ScheduleExpression="cron(0 19 ? * MON-FRI *)",
        ScheduleExpressionTimezone="Europe/Paris",
        FlexibleTimeWindow={"Mode": "OFF"},
        Target=target,  # type: ignore[arg-type]
        **extra,
    )


def test_firing_a_stop_schedule_stops_its_instance(
    ec2: EC2Client, scheduler: EventBridgeSchedulerClient, role_arn: str
) -> None:
    # Given a running instance and a schedule that stops it
    instance_id = launch(ec2)
    schedule(scheduler, "stop-dev", STOP, role_arn, {"InstanceIds": [instance_id]})

    # When the schedule fires
    fired = fire_schedule(AwsClients(REGION), "stop-dev")

    # Then EC2 was called as the target says, and the instance is stopped, not hibernated
    assert (fired.service, fired.operation, fired.input) == ("ec2", "StopInstances", {"InstanceIds": [instance_id]})
    assert fired.response["StoppingInstances"][0]["InstanceId"] == instance_id
    instance = describe(ec2, instance_id)
    assert instance["State"]["Name"] == "stopped"
    assert instance["StateReason"]["Code"] == "Client.UserInitiatedShutdown"


def test_firing_a_start_schedule_starts_its_instance(
    ec2: EC2Client, scheduler: EventBridgeSchedulerClient, role_arn: str
) -> None:
    instance_id = launch(ec2)
    ec2.stop_instances(InstanceIds=[instance_id])
    schedule(scheduler, "start-dev", START, role_arn, {"InstanceIds": [instance_id]})

    fire_schedule(Clients(), "start-dev")

    assert describe(ec2, instance_id)["State"]["Name"] == "running"


def test_a_stop_with_hibernate_hibernates_an_instance_configured_for_it(
    ec2: EC2Client, scheduler: EventBridgeSchedulerClient, role_arn: str
) -> None:
    instance_id = launch(ec2, hibernation=True)
    schedule(scheduler, "hibernate-dev", STOP, role_arn, {"InstanceIds": [instance_id], "Hibernate": True})

    fire_schedule(Clients(), "hibernate-dev")

    instance = describe(ec2, instance_id)
    assert instance["State"]["Name"] == "stopped"
    assert instance["StateReason"] == {
        "Code": "Client.UserInitiatedHibernate",
        "Message": "Client.UserInitiatedHibernate: User initiated hibernate",
    }


def test_a_stop_with_hibernate_is_a_plain_stop_for_an_instance_not_configured_for_it(
    ec2: EC2Client, scheduler: EventBridgeSchedulerClient, role_arn: str
) -> None:
    instance_id = launch(ec2, hibernation=False)
    schedule(scheduler, "stop-dev", STOP, role_arn, {"InstanceIds": [instance_id], "Hibernate": True})

    fire_schedule(Clients(), "stop-dev")

    assert describe(ec2, instance_id)["StateReason"]["Code"] == "Client.UserInitiatedShutdown"


def test_a_schedule_in_its_own_group_is_fired_from_there(
    ec2: EC2Client, scheduler: EventBridgeSchedulerClient, role_arn: str
) -> None:
    instance_id = launch(ec2)
    scheduler.create_schedule_group(Name="office-hours")
    schedule(scheduler, "stop-dev", STOP, role_arn, {"InstanceIds": [instance_id]}, GroupName="office-hours")

    fired = fire_schedule(Clients(), "stop-dev", group="office-hours")

    assert fired.group == "office-hours"
    assert describe(ec2, instance_id)["State"]["Name"] == "stopped"


@pytest.mark.parametrize(
    ("arn", "refusal"),
    [
        ("arn:aws:sqs:us-east-1:123456789012:reports", "only universal targets"),
        ("arn:aws:scheduler:::aws-sdk:ec2:describeInstances", "'ec2:describeInstances' only reads"),
        ("arn:aws:scheduler:::aws-sdk:ec2:rebootEverything", "'ec2' has no API action 'rebootEverything'"),
        ("arn:aws:scheduler:::aws-sdk:notaservice:stopInstances", "'notaservice' is not an AWS SDK service name"),
    ],
    ids=["templated-target", "read-only-action", "unknown-action", "unknown-service"],
)
def test_targets_scheduler_would_not_invoke_are_refused_and_nothing_happens(
    ec2: EC2Client, scheduler: EventBridgeSchedulerClient, role_arn: str, arn: str, refusal: str
) -> None:
    instance_id = launch(ec2)
    schedule(scheduler, "odd", arn, role_arn, {"InstanceIds": [instance_id]})

    with pytest.raises(TargetRefused, match=refusal):
        fire_schedule(Clients(), "odd")

    assert describe(ec2, instance_id)["State"]["Name"] == "running"


def test_a_disabled_schedule_does_not_fire(
    ec2: EC2Client, scheduler: EventBridgeSchedulerClient, role_arn: str
) -> None:
    instance_id = launch(ec2)
    schedule(scheduler, "paused", STOP, role_arn, {"InstanceIds": [instance_id]}, State="DISABLED")

    with pytest.raises(TargetRefused, match="is DISABLED: Scheduler does not invoke it"):
        fire_schedule(Clients(), "paused")

    assert describe(ec2, instance_id)["State"]["Name"] == "running"


def test_a_role_that_does_not_exist_or_does_not_trust_scheduler_stops_the_call(
    ec2: EC2Client, scheduler: EventBridgeSchedulerClient, iam: IAMClient
) -> None:
    instance_id = launch(ec2)
    lambda_role = iam.create_role(RoleName="for-lambda", AssumeRolePolicyDocument=trust("lambda.amazonaws.com"))
    schedule(scheduler, "untrusted", STOP, lambda_role["Role"]["Arn"], {"InstanceIds": [instance_id]})
    schedule(scheduler, "missing", STOP, "arn:aws:iam::123456789012:role/gone", {"InstanceIds": [instance_id]})

    with pytest.raises(TargetRefused, match="its trust policy does not allow it"):
        fire_schedule(Clients(), "untrusted")
    with pytest.raises(TargetRefused, match="the role does not exist"):
        fire_schedule(Clients(), "missing")

    assert describe(ec2, instance_id)["State"]["Name"] == "running"


def test_the_targets_own_errors_come_back_as_the_service_answered(
    ec2: EC2Client, scheduler: EventBridgeSchedulerClient, role_arn: str
) -> None:
    schedule(scheduler, "wrong-key", STOP, role_arn, {"InstanceId": "i-0123456789abcdef0"})
    schedule(scheduler, "gone", STOP, role_arn, {"InstanceIds": ["i-0123456789abcdef0"]})

    with pytest.raises(ParamValidationError, match="InstanceIds"):
        fire_schedule(Clients(), "wrong-key")
    with pytest.raises(ClientError, match=r"InvalidInstanceID\.NotFound"):
        fire_schedule(Clients(), "gone")


def test_a_schedule_that_does_not_exist_is_reported_by_the_scheduler_api(aws: None) -> None:
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        fire_schedule(Clients(), "nothing-here")
