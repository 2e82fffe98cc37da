"""RightsizeInstanceExecutor against emulated EC2 and Auto Scaling: what it refuses, what it plans,
and backup → stop → change → start → verify → roll back called step by step, without a state machine."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from cost_engine.aws import AwsClients
from cost_engine.errors import ActionFailed
from cost_engine.executors.rightsize_instance import (
    InstanceTypeBackup,
    InstanceTypeChange,
    RightsizeInstanceExecutor,
)
from cost_engine.models import Recommendation, RecommendationType, new_execution_id
from cost_engine.pricing import price_catalog
from local_runtime.emulations import ec2_capacity
from local_runtime.runtime import LocalRuntime
from tests.unit.conftest import ACCOUNT_ID, REGION

if TYPE_CHECKING:
    from mypy_boto3_autoscaling import AutoScalingClient
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.literals import InstanceTypeType
    from mypy_boto3_ec2.type_defs import InstanceTypeDef

AMI_ID = "ami-12c6146b"  # x86_64, HVM, EBS-backed: an image moto registers in every region
PARAVIRTUAL_AMI_ID = "ami-8104a4f8"  # x86_64, paravirtual, EBS-backed


def recommendation_for(instance_id: str, target: str | None = "m5.large", **parameters: Any) -> Recommendation:
    if target is not None:
        parameters["target_instance_type"] = target
    return Recommendation(
        customer_id="acme-corp",
        type=RecommendationType.RIGHTSIZE_INSTANCE,
        account_id=ACCOUNT_ID,
        region=REGION,
        resource_id=instance_id,
        parameters=parameters,
        estimated_monthly_savings=200.0,
    )


@pytest.fixture
def ec2(aws: None) -> EC2Client:
    return boto3.client("ec2", region_name=REGION)


@pytest.fixture
def autoscaling(aws: None) -> AutoScalingClient:
    return boto3.client("autoscaling", region_name=REGION)


@pytest.fixture
def executor(aws: None) -> RightsizeInstanceExecutor:
    return RightsizeInstanceExecutor(AwsClients(REGION))


@pytest.fixture
def no_capacity() -> Iterator[Callable[..., ec2_capacity.Shortage]]:
    """The local runtime's capacity emulation, installed in this process; every shortage ends with the test."""
    ec2_capacity.install(LocalRuntime())
    yield ec2_capacity.no_capacity_for
    ec2_capacity.restore_capacity()


def launch(
    ec2: EC2Client, instance_type: InstanceTypeType = "m5.2xlarge", *, image_id: str = AMI_ID, **extra: Any
) -> str:
    return ec2.run_instances(ImageId=image_id, InstanceType=instance_type, MinCount=1, MaxCount=1, **extra)[
        "Instances"
    ][0]["InstanceId"]


def describe(ec2: EC2Client, instance_id: str) -> InstanceTypeDef:
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def type_and_state(ec2: EC2Client, instance_id: str) -> tuple[str, str]:
    instance = describe(ec2, instance_id)
    return instance["InstanceType"], instance["State"]["Name"]


def poll(check: Callable[[], bool], limit: int = 10) -> int:
    """Call a check step as the state machine does until it says done; the number of calls."""
    for calls in range(1, limit + 1):
        if check():
            return calls
    raise AssertionError(f"not done after {limit} checks")


# -- validate ---------------------------------------------------------------------------------------


def test_a_running_oversized_instance_may_be_downsized_with_the_downtime_pointed_out(
    ec2: EC2Client, executor: RightsizeInstanceExecutor
) -> None:
    instance_id = launch(ec2)
    public_ip = describe(ec2, instance_id)["PublicIpAddress"]

    result = executor.validate(recommendation_for(instance_id))

    assert result.valid, result.errors
    assert result.warnings == [
        f"instance {instance_id} is running: it is stopped for the change and started again "
        "(downtime of a few minutes)",
        f"instance {instance_id} has no Elastic IP: its public IP {public_ip} changes when it is started again",
    ]


def test_an_instance_with_an_elastic_ip_keeps_its_address_so_only_the_downtime_is_a_warning(
    ec2: EC2Client, executor: RightsizeInstanceExecutor
) -> None:
    instance_id = launch(ec2)
    allocation = ec2.allocate_address(Domain="vpc")["AllocationId"]
    ec2.associate_address(InstanceId=instance_id, AllocationId=allocation)

    result = executor.validate(recommendation_for(instance_id))

    assert result.valid
    assert len(result.warnings) == 1
    assert "downtime" in result.warnings[0]


def test_a_stopped_instance_may_be_resized_without_warnings(
    ec2: EC2Client, executor: RightsizeInstanceExecutor
) -> None:
    instance_id = launch(ec2)
    ec2.stop_instances(InstanceIds=[instance_id])

    result = executor.validate(recommendation_for(instance_id))

    assert result.valid
    assert result.warnings == []


def test_an_unknown_instance_is_refused(executor: RightsizeInstanceExecutor) -> None:
    result = executor.validate(recommendation_for("i-0123456789abcdef0"))

    assert not result.valid
    assert result.errors == [f"EC2 instance i-0123456789abcdef0 does not exist in {REGION}"]


def test_a_terminated_instance_is_refused(ec2: EC2Client, executor: RightsizeInstanceExecutor) -> None:
    instance_id = launch(ec2)
    ec2.terminate_instances(InstanceIds=[instance_id])

    result = executor.validate(recommendation_for(instance_id))

    assert not result.valid
    assert f"instance {instance_id} is 'terminated': only running or stopped instances are resized" in result.errors


def test_the_type_the_instance_already_has_is_refused(ec2: EC2Client, executor: RightsizeInstanceExecutor) -> None:
    instance_id = launch(ec2, "m5.large")

    result = executor.validate(recommendation_for(instance_id, "m5.large"))

    assert not result.valid
    assert result.errors == [f"instance {instance_id} is already m5.large: there is nothing to change"]


def test_a_type_ec2_does_not_know_is_refused(ec2: EC2Client, executor: RightsizeInstanceExecutor) -> None:
    instance_id = launch(ec2)

    result = executor.validate(recommendation_for(instance_id, "m5.huge"))

    assert not result.valid
    assert result.errors == [f"instance type 'm5.huge' is not known to EC2 in {REGION}"]


@pytest.mark.parametrize(
    "parameters", [{}, {"target_instance_type": "M5 Large"}, {"target_instance_type": "m5.large", "size": 2}]
)
def test_missing_malformed_or_unknown_parameters_are_refused(
    ec2: EC2Client, executor: RightsizeInstanceExecutor, parameters: dict[str, Any]
) -> None:
    result = executor.validate(recommendation_for(launch(ec2), None, **parameters))

    assert not result.valid
    assert result.errors[0].startswith("invalid parameters for rightsize_instance")


def test_an_arm64_type_for_an_x86_64_image_is_refused(ec2: EC2Client, executor: RightsizeInstanceExecutor) -> None:
    instance_id = launch(ec2)

    result = executor.validate(recommendation_for(instance_id, "m6g.large"))

    assert not result.valid
    assert result.errors == [
        f"instance {instance_id} runs a x86_64 image, but m6g.large supports only arm64: choose a x86_64 instance type"
    ]


def test_a_paravirtual_instance_cannot_move_to_an_hvm_only_type(
    ec2: EC2Client, executor: RightsizeInstanceExecutor
) -> None:
    instance_id = launch(ec2, "m1.small", image_id=PARAVIRTUAL_AMI_ID)

    result = executor.validate(recommendation_for(instance_id, "m4.large"))

    assert not result.valid
    assert f"instance {instance_id} uses paravirtual virtualization, but m4.large supports only hvm" in result.errors


def test_a_xen_instance_without_ena_and_unconfirmed_nvme_drivers_cannot_move_to_a_nitro_type(
    ec2: EC2Client, executor: RightsizeInstanceExecutor
) -> None:
    # Given a t2.large (Xen: no ENA, EBS not on NVMe) and a Nitro target that requires both
    instance_id = launch(ec2, "t2.large")

    result = executor.validate(recommendation_for(instance_id, "m5.large"))

    # Then both missing pieces are named, with what to do about each
    assert not result.valid
    assert len(result.errors) == 2
    assert "m5.large requires ENA networking, but instance" in result.errors[0]
    assert "set its enaSupport attribute first" in result.errors[0]
    assert "m5.large presents EBS volumes as NVMe devices, but t2.large does not" in result.errors[1]
    assert "set parameters.nvme_drivers_installed=true" in result.errors[1]


def test_a_xen_instance_with_ena_enabled_and_nvme_drivers_confirmed_may_move_to_a_nitro_type(
    ec2: EC2Client, executor: RightsizeInstanceExecutor
) -> None:
    instance_id = launch(ec2, "t2.large")
    ec2.stop_instances(InstanceIds=[instance_id])
    ec2.modify_instance_attribute(InstanceId=instance_id, Attribute="enaSupport", Value="true")

    result = executor.validate(recommendation_for(instance_id, "m5.large", nvme_drivers_installed=True))

    assert result.valid, result.errors


def test_a_nitro_instance_may_move_to_another_nitro_type_without_any_statement(
    ec2: EC2Client, executor: RightsizeInstanceExecutor
) -> None:
    # An instance running on an ENA/NVMe-only type already has both drivers, whatever its attributes say
    result = executor.validate(recommendation_for(launch(ec2, "c5.xlarge"), "m5.large"))

    assert result.valid, result.errors


def test_a_running_instance_with_instance_store_volumes_is_refused(
    ec2: EC2Client, executor: RightsizeInstanceExecutor
) -> None:
    instance_id = launch(ec2, "m5d.large")

    result = executor.validate(recommendation_for(instance_id, "m5.large"))

    assert not result.valid
    assert result.errors == [
        f"instance {instance_id} (m5d.large) has instance-store volumes, whose data is lost when it is stopped "
        "for the change: move that data to EBS first, or stop the instance yourself once it can go"
    ]


def test_a_stopped_instance_store_instance_has_nothing_left_to_lose_and_may_be_resized(
    ec2: EC2Client, executor: RightsizeInstanceExecutor
) -> None:
    instance_id = launch(ec2, "m5d.large")
    ec2.stop_instances(InstanceIds=[instance_id])

    assert executor.validate(recommendation_for(instance_id, "m5.large")).valid


def test_an_instance_store_root_is_refused(
    ec2: EC2Client, executor: RightsizeInstanceExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # moto reports every instance as EBS-backed: the root device type is set on what EC2 answers
    instance_id = launch(ec2)
    describe_instances = executor.clients.ec2.describe_instances

    def instance_store_root(**kwargs: Any) -> Any:
        answer = describe_instances(**kwargs)
        answer["Reservations"][0]["Instances"][0]["RootDeviceType"] = "instance-store"
        return answer

    monkeypatch.setattr(executor.clients.ec2, "describe_instances", instance_store_root)

    result = executor.validate(recommendation_for(instance_id))

    assert not result.valid
    assert "has an instance-store root device: it cannot be stopped" in result.errors[0]


def test_a_member_of_an_auto_scaling_group_is_refused(
    ec2: EC2Client, autoscaling: AutoScalingClient, executor: RightsizeInstanceExecutor
) -> None:
    ec2.create_launch_template(
        LaunchTemplateName="web-template", LaunchTemplateData={"ImageId": AMI_ID, "InstanceType": "m5.2xlarge"}
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

    result = executor.validate(recommendation_for(instance_id))

    assert not result.valid
    assert len(result.errors) == 1
    assert "belongs to Auto Scaling group 'web-asg'" in result.errors[0]
    assert "change the type there instead" in result.errors[0]


def test_a_running_instance_with_stop_protection_is_refused(
    ec2: EC2Client, executor: RightsizeInstanceExecutor
) -> None:
    instance_id = launch(ec2)
    ec2.modify_instance_attribute(InstanceId=instance_id, DisableApiStop={"Value": True})

    result = executor.validate(recommendation_for(instance_id))

    assert not result.valid
    assert "has stop protection (DisableApiStop) on" in result.errors[0]


def test_a_type_not_offered_in_the_instances_availability_zone_is_refused(
    ec2: EC2Client, executor: RightsizeInstanceExecutor
) -> None:
    # Given an m4.large in us-east-1e, a zone without m5 capacity at all
    vpc_id = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet_id = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.0.1.0/24", AvailabilityZone=f"{REGION}e")["Subnet"][
        "SubnetId"
    ]
    instance_id = launch(ec2, "m4.large", SubnetId=subnet_id)
    ec2.stop_instances(InstanceIds=[instance_id])
    ec2.modify_instance_attribute(InstanceId=instance_id, Attribute="enaSupport", Value="true")

    result = executor.validate(recommendation_for(instance_id, "m5.large", nvme_drivers_installed=True))

    assert not result.valid
    assert result.errors == [f"instance type m5.large is not offered in {REGION}e, where instance {instance_id} runs"]


def test_an_upsize_is_allowed_and_its_extra_cost_is_a_warning(
    ec2: EC2Client, executor: RightsizeInstanceExecutor
) -> None:
    catalog = price_catalog()
    instance_id = launch(ec2, "m5.large")

    result = executor.validate(recommendation_for(instance_id, "m5.xlarge"))

    extra = (catalog.instance_monthly("m5.xlarge") or 0) - (catalog.instance_monthly("m5.large") or 0)
    assert result.valid
    assert f"m5.xlarge costs ${extra:,.2f} a month more than m5.large: this is an upsize" in result.warnings


# -- plan -------------------------------------------------------------------------------------------


def test_the_plan_of_a_running_instance_saves_the_price_difference_and_needs_no_ami(
    ec2: EC2Client, executor: RightsizeInstanceExecutor
) -> None:
    catalog = price_catalog()
    instance_id = launch(ec2)

    plan = executor.plan(recommendation_for(instance_id), new_execution_id())

    expected = (catalog.ec2_hourly["m5.2xlarge"] - catalog.ec2_hourly["m5.large"]) * catalog.hours_per_month
    assert plan.estimated_monthly_savings == pytest.approx(expected, abs=0.01)
    assert plan.savings_basis == catalog.basis
    assert plan.summary == f"Change EC2 instance {instance_id} from m5.2xlarge to m5.large (running)"
    assert any("Stop" in action for action in plan.actions)
    assert plan.backup[0].startswith("No AMI: a type change destroys nothing")
    assert plan.resource["target_instance_type"] == "m5.large"


def test_the_plan_of_a_stopped_instance_saves_no_compute(ec2: EC2Client, executor: RightsizeInstanceExecutor) -> None:
    instance_id = launch(ec2)
    ec2.stop_instances(InstanceIds=[instance_id])

    plan = executor.plan(recommendation_for(instance_id), new_execution_id())

    assert plan.estimated_monthly_savings == 0.0
    assert plan.savings_basis.startswith("the instance is stopped")
    assert not any("Stop" in action or "Start" in action for action in plan.actions)


def test_without_a_catalog_price_the_plan_falls_back_to_the_recommendations_estimate(
    ec2: EC2Client, executor: RightsizeInstanceExecutor
) -> None:
    assert "m5.8xlarge" not in price_catalog().ec2_hourly
    instance_id = launch(ec2, "m5.8xlarge")

    plan = executor.plan(recommendation_for(instance_id), new_execution_id())

    assert plan.estimated_monthly_savings == 200.0
    assert plan.savings_basis == "no catalog price for m5.8xlarge: the recommendation's own estimate"


# -- backup, change, verify -------------------------------------------------------------------------


def change(
    executor: RightsizeInstanceExecutor, recommendation: Recommendation
) -> tuple[InstanceTypeBackup, InstanceTypeChange]:
    """Backup and apply as the state machine would run them: (backup, action)."""
    backup = executor.backup(recommendation, new_execution_id())
    assert executor.backup_ready(recommendation, backup) is True
    return backup, executor.apply(recommendation, backup)


def test_a_running_instance_is_stopped_changed_and_started_again(
    ec2: EC2Client, executor: RightsizeInstanceExecutor
) -> None:
    instance_id = launch(ec2)
    recommendation = recommendation_for(instance_id)

    backup, action = change(executor, recommendation)
    stopped = type_and_state(ec2, instance_id)
    poll(lambda: executor.apply_done(recommendation, action))

    assert backup.original_type == "m5.2xlarge"
    assert backup.original_state == "running"
    assert stopped == ("m5.2xlarge", "stopped")
    assert type_and_state(ec2, instance_id) == ("m5.large", "running")
    verification = executor.verify(recommendation, action)
    assert verification.passed, verification.failures
    assert "status checks: system ok, instance ok" in verification.checks


def test_a_repeated_apply_does_not_stop_the_instance_twice(
    ec2: EC2Client, executor: RightsizeInstanceExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    instance_id = launch(ec2)
    recommendation = recommendation_for(instance_id)
    backup, _ = change(executor, recommendation)
    stops: list[Any] = []
    monkeypatch.setattr(executor.clients.ec2, "stop_instances", lambda **kwargs: stops.append(kwargs))

    again = executor.apply(recommendation, backup)

    assert stops == []
    assert again.state_before == "stopped"


def test_a_stopped_instance_gets_the_new_type_and_stays_stopped(
    ec2: EC2Client, executor: RightsizeInstanceExecutor
) -> None:
    instance_id = launch(ec2)
    ec2.stop_instances(InstanceIds=[instance_id])
    recommendation = recommendation_for(instance_id)

    backup, action = change(executor, recommendation)
    poll(lambda: executor.apply_done(recommendation, action))

    assert type_and_state(ec2, instance_id) == ("m5.large", "stopped")
    assert executor.verify(recommendation, action).passed
    assert executor.expected_savings(recommendation, backup) == 0.0


def test_no_capacity_for_the_new_type_fails_the_change_with_the_instance_stopped(
    ec2: EC2Client, executor: RightsizeInstanceExecutor, no_capacity: Callable[..., ec2_capacity.Shortage]
) -> None:
    instance_id = launch(ec2)
    recommendation = recommendation_for(instance_id)
    no_capacity(instance_type="m5.large")

    _, action = change(executor, recommendation)
    with pytest.raises(ActionFailed) as failed:
        poll(lambda: executor.apply_done(recommendation, action))

    assert "InsufficientInstanceCapacity" in failed.value.message
    assert f"StartInstances of {instance_id} as m5.large failed: InsufficientInstanceCapacity" in failed.value.message
    assert type_and_state(ec2, instance_id) == ("m5.large", "stopped")


def test_failing_status_checks_after_the_change_fail_it(
    ec2: EC2Client, executor: RightsizeInstanceExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an instance that does not boot on its new type (moto's status checks always pass)
    instance_id = launch(ec2)
    recommendation = recommendation_for(instance_id)
    impaired = {"SystemStatus": {"Status": "ok"}, "InstanceStatus": {"Status": "impaired"}}
    monkeypatch.setattr(
        executor.clients.ec2, "describe_instance_status", lambda **kwargs: {"InstanceStatuses": [impaired]}
    )

    _, action = change(executor, recommendation)
    with pytest.raises(ActionFailed) as failed:
        poll(lambda: executor.apply_done(recommendation, action))

    assert "fails its status checks after the type change (system ok, instance impaired)" in failed.value.message


def test_a_type_changed_by_someone_else_meanwhile_fails_the_change(
    ec2: EC2Client, executor: RightsizeInstanceExecutor
) -> None:
    instance_id = launch(ec2)
    recommendation = recommendation_for(instance_id)
    _, action = change(executor, recommendation)
    ec2.modify_instance_attribute(InstanceId=instance_id, InstanceType={"Value": "c5.large"})

    with pytest.raises(ActionFailed) as failed:
        executor.apply_done(recommendation, action)

    assert "is now c5.large, neither m5.2xlarge nor m5.large" in failed.value.message


def test_verify_fails_when_the_instance_is_not_in_its_original_state(
    ec2: EC2Client, executor: RightsizeInstanceExecutor
) -> None:
    instance_id = launch(ec2)
    recommendation = recommendation_for(instance_id)
    _, action = change(executor, recommendation)
    poll(lambda: executor.apply_done(recommendation, action))
    ec2.stop_instances(InstanceIds=[instance_id])

    verification = executor.verify(recommendation, action)

    assert not verification.passed
    assert verification.failures == [f"instance {instance_id} is stopped (it was running)"]


def test_savings_are_measured_from_the_recorded_types(ec2: EC2Client, executor: RightsizeInstanceExecutor) -> None:
    catalog = price_catalog()
    instance_id = launch(ec2)
    recommendation = recommendation_for(instance_id)
    backup, _ = change(executor, recommendation)

    savings = executor.expected_savings(recommendation, backup)

    assert savings == round(
        (catalog.instance_monthly("m5.2xlarge") or 0) - (catalog.instance_monthly("m5.large") or 0), 2
    )


# -- roll back --------------------------------------------------------------------------------------


def test_rollback_of_a_completed_change_restores_the_original_type_running(
    ec2: EC2Client, executor: RightsizeInstanceExecutor
) -> None:
    instance_id = launch(ec2)
    recommendation = recommendation_for(instance_id)
    backup, action = change(executor, recommendation)
    poll(lambda: executor.apply_done(recommendation, action))

    rollback = executor.rollback(recommendation, backup, action)
    poll(lambda: executor.rollback_done(recommendation, rollback))

    assert type_and_state(ec2, instance_id) == ("m5.2xlarge", "running")


def test_rollback_of_a_stopped_instance_restores_the_type_and_leaves_it_stopped(
    ec2: EC2Client, executor: RightsizeInstanceExecutor
) -> None:
    instance_id = launch(ec2)
    ec2.stop_instances(InstanceIds=[instance_id])
    recommendation = recommendation_for(instance_id)
    backup, action = change(executor, recommendation)
    poll(lambda: executor.apply_done(recommendation, action))

    rollback = executor.rollback(recommendation, backup, action)
    poll(lambda: executor.rollback_done(recommendation, rollback))

    assert type_and_state(ec2, instance_id) == ("m5.2xlarge", "stopped")


def test_rollback_after_a_start_without_capacity_runs_the_original_type_again(
    ec2: EC2Client, executor: RightsizeInstanceExecutor, no_capacity: Callable[..., ec2_capacity.Shortage]
) -> None:
    instance_id = launch(ec2)
    recommendation = recommendation_for(instance_id)
    no_capacity(instance_type="m5.large")
    backup, action = change(executor, recommendation)
    with pytest.raises(ActionFailed):
        poll(lambda: executor.apply_done(recommendation, action))

    rollback = executor.rollback(recommendation, backup, action)
    poll(lambda: executor.rollback_done(recommendation, rollback))

    assert type_and_state(ec2, instance_id) == ("m5.2xlarge", "running")


def test_rollback_that_cannot_start_the_instance_says_it_is_stopped_and_why(
    ec2: EC2Client, executor: RightsizeInstanceExecutor, no_capacity: Callable[..., ec2_capacity.Shortage]
) -> None:
    # Given no capacity at all for this instance, whatever its type
    instance_id = launch(ec2)
    recommendation = recommendation_for(instance_id)
    no_capacity(instance_id=instance_id)
    backup, action = change(executor, recommendation)
    with pytest.raises(ActionFailed):
        poll(lambda: executor.apply_done(recommendation, action))

    # (the instance is stopped already: the rollback's first step is the change back and the start)
    with pytest.raises(ActionFailed) as failed:
        executor.rollback(recommendation, backup, action)

    assert failed.value.message.startswith(
        f"instance {instance_id} is stopped with its original type m5.2xlarge and could not be started again"
    )
    assert "InsufficientInstanceCapacity" in failed.value.message
    assert type_and_state(ec2, instance_id) == ("m5.2xlarge", "stopped")


def test_rollback_before_anything_was_recorded_touches_nothing(
    ec2: EC2Client, executor: RightsizeInstanceExecutor
) -> None:
    instance_id = launch(ec2)
    recommendation = recommendation_for(instance_id)

    rollback = executor.rollback(recommendation, None, None)

    assert executor.stored(rollback) == {"instance_id": instance_id, "restore": False}
    assert executor.rollback_done(recommendation, rollback) is True
    assert type_and_state(ec2, instance_id) == ("m5.2xlarge", "running")


def test_a_repeated_rollback_call_carries_on_from_the_real_state(
    ec2: EC2Client, executor: RightsizeInstanceExecutor
) -> None:
    instance_id = launch(ec2)
    recommendation = recommendation_for(instance_id)
    backup, action = change(executor, recommendation)
    poll(lambda: executor.apply_done(recommendation, action))

    first = executor.rollback(recommendation, backup, action)
    second = executor.rollback(recommendation, backup, action)
    poll(lambda: executor.rollback_done(recommendation, second))

    assert first == second
    assert type_and_state(ec2, instance_id) == ("m5.2xlarge", "running")
