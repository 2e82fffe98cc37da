"""MigrateToSpotExecutor against emulated EC2 and Auto Scaling: what it refuses, what it plans, and
backup → launch spot → stop the original → verify → finalize → roll back, called step by step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from cost_engine.aws import AwsClients
from cost_engine.ec2_instances import EXECUTION_TAG, RESTORED_FOR_TAG, SOURCE_INSTANCE_TAG
from cost_engine.errors import ActionFailed
from cost_engine.executors.migrate_to_spot import SPOT_FOR_TAG, MigrateToSpotExecutor, SpotBackup, SpotMigration
from cost_engine.models import Recommendation, RecommendationType, new_execution_id
from cost_engine.pricing import price_catalog
from tests.unit.conftest import ACCOUNT_ID, REGION

if TYPE_CHECKING:
    from mypy_boto3_autoscaling import AutoScalingClient
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.literals import InstanceTypeType
    from mypy_boto3_ec2.type_defs import InstanceTypeDef

AMI_ID = "ami-12c6146b"  # an EBS-backed Amazon Linux image moto registers in every region
AZ = f"{REGION}a"
ESTIMATE = 48.5


def recommendation_for(instance_id: str, **parameters: Any) -> Recommendation:
    return Recommendation(
        customer_id="acme-corp",
        type=RecommendationType.MIGRATE_TO_SPOT,
        account_id=ACCOUNT_ID,
        region=REGION,
        resource_id=instance_id,
        parameters=parameters,
        estimated_monthly_savings=ESTIMATE,
    )


@dataclass(frozen=True)
class Network:
    subnet_id: str
    security_group_id: str


@pytest.fixture
def ec2(aws: None) -> EC2Client:
    return boto3.client("ec2", region_name=REGION)


@pytest.fixture
def autoscaling(aws: None) -> AutoScalingClient:
    return boto3.client("autoscaling", region_name=REGION)


@pytest.fixture
def executor(aws: None) -> MigrateToSpotExecutor:
    return MigrateToSpotExecutor(AwsClients(REGION))


@pytest.fixture
def network(ec2: EC2Client) -> Network:
    vpc_id = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet_id = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.0.1.0/24", AvailabilityZone=AZ)["Subnet"]["SubnetId"]
    group_id = ec2.create_security_group(GroupName="batch", Description="batch workers", VpcId=vpc_id)["GroupId"]
    return Network(subnet_id, group_id)


def launch(ec2: EC2Client, network: Network, instance_type: InstanceTypeType = "m5.large") -> str:
    """A running, tagged on-demand instance in its own subnet and security group, with user data."""
    return ec2.run_instances(
        ImageId=AMI_ID,
        InstanceType=instance_type,
        MinCount=1,
        MaxCount=1,
        SubnetId=network.subnet_id,
        SecurityGroupIds=[network.security_group_id],
        UserData="#!/bin/sh\nrun-batch\n",
        TagSpecifications=[
            {
                "ResourceType": "instance",
                "Tags": [{"Key": "Name", "Value": "batch-1"}, {"Key": "team", "Value": "data"}],
            }
        ],
    )["Instances"][0]["InstanceId"]


@pytest.fixture
def worker(ec2: EC2Client, network: Network) -> str:
    return launch(ec2, network)


def describe(ec2: EC2Client, instance_id: str) -> InstanceTypeDef:
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def state(ec2: EC2Client, instance_id: str) -> str:
    return describe(ec2, instance_id)["State"]["Name"]


def tagged(ec2: EC2Client, tag: str, execution_id: str) -> list[InstanceTypeDef]:
    reservations = ec2.describe_instances(Filters=[{"Name": f"tag:{tag}", "Values": [execution_id]}])
    return [i for r in reservations["Reservations"] for i in r["Instances"]]


def open_spot_requests(ec2: EC2Client) -> list[str]:
    requests = ec2.describe_spot_instance_requests(Filters=[{"Name": "state", "Values": ["open", "active"]}])
    return [r["SpotInstanceRequestId"] for r in requests["SpotInstanceRequests"]]


def poll(check: Callable[[], bool], limit: int = 5) -> list[bool]:
    """Call a check step as the state machine does, until it answers True."""
    answers: list[bool] = []
    while not answers or not answers[-1]:
        assert len(answers) < limit, f"still not done after {limit} checks"
        answers.append(check())
    return answers


@pytest.fixture
def spot_price_of(executor: MigrateToSpotExecutor, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Answer DescribeSpotPriceHistory as AWS does for a live market (moto answers a placeholder)."""

    def set_price(hourly: str) -> None:
        def history(**request: Any) -> dict[str, Any]:
            return {
                "SpotPriceHistory": [
                    {
                        "AvailabilityZone": AZ,
                        "InstanceType": request["InstanceTypes"][0],
                        "ProductDescription": "Linux/UNIX",
                        "SpotPrice": hourly,
                        "Timestamp": datetime.now(UTC),
                    }
                ]
            }

        monkeypatch.setattr(executor.clients.ec2, "describe_spot_price_history", history)

    return set_price


# -- validate ---------------------------------------------------------------------------------------


def test_a_running_on_demand_instance_is_valid_and_the_new_identity_is_pointed_out(
    executor: MigrateToSpotExecutor, worker: str
) -> None:
    result = executor.validate(recommendation_for(worker))

    assert result.valid
    assert result.errors == []
    assert result.risk_level == "high"
    assert len(result.warnings) == 1
    assert "new instance id and IP addresses" in result.warnings[0]
    assert "(terminate on interruption)" in result.warnings[0]


def test_an_unknown_instance_is_refused(executor: MigrateToSpotExecutor) -> None:
    result = executor.validate(recommendation_for("i-0123456789abcdef0"))

    assert not result.valid
    assert result.errors == [f"EC2 instance i-0123456789abcdef0 does not exist in {REGION}"]


def test_an_instance_that_is_already_spot_is_refused(
    ec2: EC2Client, executor: MigrateToSpotExecutor, network: Network
) -> None:
    spot_id = ec2.run_instances(
        ImageId=AMI_ID,
        InstanceType="m5.large",
        MinCount=1,
        MaxCount=1,
        SubnetId=network.subnet_id,
        InstanceMarketOptions={"MarketType": "spot"},
    )["Instances"][0]["InstanceId"]

    result = executor.validate(recommendation_for(spot_id))

    assert not result.valid
    assert result.errors == [f"instance {spot_id} is already a spot instance: there is nothing to migrate"]


def test_an_instance_of_an_auto_scaling_group_is_refused(
    ec2: EC2Client, autoscaling: AutoScalingClient, executor: MigrateToSpotExecutor
) -> None:
    ec2.create_launch_template(
        LaunchTemplateName="batch-template", LaunchTemplateData={"ImageId": AMI_ID, "InstanceType": "m5.large"}
    )
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="batch-asg",
        LaunchTemplate={"LaunchTemplateName": "batch-template", "Version": "$Latest"},
        MinSize=1,
        MaxSize=1,
        DesiredCapacity=1,
        AvailabilityZones=[AZ],
    )
    [member] = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["batch-asg"])["AutoScalingGroups"][0][
        "Instances"
    ]

    result = executor.validate(recommendation_for(member["InstanceId"]))

    assert not result.valid
    assert len(result.errors) == 1
    assert "belongs to Auto Scaling group 'batch-asg'" in result.errors[0]
    assert "mixed instances policy" in result.errors[0]


def test_an_instance_with_termination_protection_is_refused(
    ec2: EC2Client, executor: MigrateToSpotExecutor, worker: str
) -> None:
    ec2.modify_instance_attribute(InstanceId=worker, DisableApiTermination={"Value": True})

    result = executor.validate(recommendation_for(worker))

    assert not result.valid
    assert len(result.errors) == 1
    assert "termination protection (DisableApiTermination) on" in result.errors[0]


def test_an_instance_with_stop_protection_is_refused(
    ec2: EC2Client, executor: MigrateToSpotExecutor, worker: str
) -> None:
    ec2.modify_instance_attribute(InstanceId=worker, DisableApiStop={"Value": True})

    result = executor.validate(recommendation_for(worker))

    assert not result.valid
    assert len(result.errors) == 1
    assert "stop protection (DisableApiStop) on" in result.errors[0]


def test_an_instance_type_with_instance_store_is_refused(
    ec2: EC2Client, executor: MigrateToSpotExecutor, network: Network
) -> None:
    instance_id = launch(ec2, network, "m5d.large")

    result = executor.validate(recommendation_for(instance_id))

    assert not result.valid
    assert len(result.errors) == 1
    assert "m5d.large has instance-store volumes" in result.errors[0]
    assert "move that data to EBS first" in result.errors[0]


@pytest.mark.parametrize(
    "parameters",
    [
        {"max_price": 0},
        {"max_price": -0.1},
        {"max_price": "inf"},
        {"instance_interruption_behavior": "pause"},
        {"x": 1},
    ],
    ids=["zero-price", "negative-price", "infinite-price", "unknown-behaviour", "unknown-parameter"],
)
def test_invalid_parameters_are_refused(
    executor: MigrateToSpotExecutor, worker: str, parameters: dict[str, Any]
) -> None:
    result = executor.validate(recommendation_for(worker, **parameters))

    assert not result.valid
    assert "invalid parameters for migrate_to_spot" in result.errors[0]


def test_hibernation_on_interruption_needs_an_encrypted_root_volume(
    executor: MigrateToSpotExecutor, worker: str
) -> None:
    result = executor.validate(recommendation_for(worker, instance_interruption_behavior="hibernate"))

    assert not result.valid
    assert len(result.errors) == 1
    assert "unencrypted root volume" in result.errors[0]


def test_a_stopped_instance_may_migrate_but_its_replacement_will_run(
    ec2: EC2Client, executor: MigrateToSpotExecutor, worker: str
) -> None:
    ec2.stop_instances(InstanceIds=[worker])

    result = executor.validate(recommendation_for(worker))

    assert result.valid
    assert any("is stopped: the spot instance that replaces it will be running" in w for w in result.warnings)


def test_a_type_the_catalog_does_not_price_is_a_warning(
    ec2: EC2Client, executor: MigrateToSpotExecutor, network: Network
) -> None:
    assert "t2.xlarge" not in price_catalog().ec2_hourly
    instance_id = launch(ec2, network, "t2.xlarge")

    result = executor.validate(recommendation_for(instance_id))

    assert result.valid
    assert any("no price for t2.xlarge" in w for w in result.warnings)


def test_a_maximum_price_below_the_spot_market_is_refused(
    executor: MigrateToSpotExecutor, worker: str, spot_price_of: Callable[[str], None]
) -> None:
    spot_price_of("0.0400")

    refused = executor.validate(recommendation_for(worker, max_price=0.03))
    accepted = executor.validate(recommendation_for(worker, max_price=0.05))

    assert not refused.valid
    assert "max_price 0.03 USD/hour is below the current spot price" in refused.errors[0]
    assert accepted.valid


# -- plan and savings ----------------------------------------------------------------------------


def test_motos_placeholder_spot_price_is_not_used_and_the_plan_falls_back_to_the_estimate(
    executor: MigrateToSpotExecutor, worker: str
) -> None:
    # moto answers DescribeSpotPriceHistory with 0.00001 USD/hour stamped 2006-01-02 for every type.
    plan = executor.plan(recommendation_for(worker), new_execution_id())

    assert plan.estimated_monthly_savings == ESTIMATE
    assert plan.savings_basis.startswith(f"no usable spot price for m5.large in {AZ}")
    assert "dates from 2006-01-02" in plan.savings_basis
    assert plan.savings_basis.endswith("the recommendation's own estimate")


def test_with_a_live_spot_price_the_plan_saves_the_difference_to_on_demand(
    executor: MigrateToSpotExecutor, worker: str, spot_price_of: Callable[[str], None]
) -> None:
    catalog = price_catalog()
    spot_price_of("0.0350")

    plan = executor.plan(recommendation_for(worker), new_execution_id())

    expected = (catalog.ec2_hourly["m5.large"] - 0.035) * catalog.hours_per_month
    assert plan.estimated_monthly_savings == pytest.approx(expected, abs=0.01)
    assert catalog.basis in plan.savings_basis
    assert "0.0350 USD/hour in the EC2 spot price history" in plan.savings_basis
    assert plan.resource["availability_zone"] == AZ


def test_an_implausible_spot_price_is_not_trusted(
    executor: MigrateToSpotExecutor, worker: str, spot_price_of: Callable[[str], None]
) -> None:
    spot_price_of("0.5")  # above the on-demand price of an m5.large

    plan = executor.plan(recommendation_for(worker), new_execution_id())

    assert plan.estimated_monthly_savings == ESTIMATE
    assert "not a plausible spot price" in plan.savings_basis


# -- backup, launch, verify, finalize ---------------------------------------------------------------


@pytest.fixture
def execution_id() -> str:
    return new_execution_id()


def test_backup_creates_an_ami_tagged_with_the_execution_and_reuses_it_on_retry(
    ec2: EC2Client, executor: MigrateToSpotExecutor, worker: str, execution_id: str
) -> None:
    recommendation = recommendation_for(worker)

    first = executor.backup(recommendation, execution_id)
    second = executor.backup(recommendation, execution_id)

    assert second.image_id == first.image_id
    [image] = ec2.describe_images(Owners=["self"])["Images"]
    tags = {t["Key"]: t["Value"] for t in image["Tags"]}
    assert tags[EXECUTION_TAG] == execution_id
    assert tags[SOURCE_INSTANCE_TAG] == worker
    assert first.launch_config.tags == {"Name": "batch-1", "team": "data"}
    assert first.launch_config.user_data_base64
    assert executor.backup_ready(recommendation, first) is True


@dataclass
class Migration:
    recommendation: Recommendation
    backup: SpotBackup
    action: SpotMigration


@pytest.fixture
def launched(executor: MigrateToSpotExecutor, worker: str, execution_id: str) -> Migration:
    """The worker backed up, and its spot replacement launched."""
    recommendation = recommendation_for(worker)
    backup = executor.backup(recommendation, execution_id)
    assert executor.backup_ready(recommendation, backup)
    return Migration(recommendation, backup, executor.apply(recommendation, backup))


def test_apply_launches_a_spot_instance_with_the_original_configuration(
    ec2: EC2Client, network: Network, worker: str, launched: Migration
) -> None:
    spot = describe(ec2, launched.action.spot_instance_id)

    assert spot["InstanceLifecycle"] == "spot"
    assert spot["ImageId"] == launched.backup.image_id
    assert spot["InstanceType"] == "m5.large"
    assert spot["SubnetId"] == network.subnet_id
    assert [g["GroupId"] for g in spot["SecurityGroups"]] == [network.security_group_id]
    tags = {t["Key"]: t["Value"] for t in spot["Tags"]}
    assert tags["Name"] == "batch-1"
    assert tags["team"] == "data"
    assert tags[SOURCE_INSTANCE_TAG] == worker
    user_data = ec2.describe_instance_attribute(InstanceId=spot["InstanceId"], Attribute="userData")
    assert user_data["UserData"]["Value"] == launched.backup.launch_config.user_data_base64
    # The original keeps running until the spot instance has taken over.
    assert state(ec2, worker) == "running"


def test_a_repeated_apply_does_not_launch_a_second_spot_instance(
    ec2: EC2Client, executor: MigrateToSpotExecutor, execution_id: str, launched: Migration
) -> None:
    again = executor.apply(launched.recommendation, launched.backup)

    assert again.spot_instance_id == launched.action.spot_instance_id
    assert len(tagged(ec2, SPOT_FOR_TAG, execution_id)) == 1


def test_the_original_is_stopped_only_once_the_spot_instance_runs_and_then_verification_passes(
    ec2: EC2Client, executor: MigrateToSpotExecutor, worker: str, launched: Migration
) -> None:
    # When the action is polled until done
    polls = poll(lambda: executor.apply_done(launched.recommendation, launched.action))

    # Then the first check stops the original, the next sees it stopped
    assert polls == [False, True]
    assert state(ec2, worker) == "stopped"
    verification = executor.verify(launched.recommendation, launched.action)
    assert verification.passed, verification.failures
    assert f"the original {worker} is stopped" in verification.checks


def test_verification_fails_while_the_original_still_runs(
    executor: MigrateToSpotExecutor, worker: str, launched: Migration
) -> None:
    verification = executor.verify(launched.recommendation, launched.action)

    assert not verification.passed
    assert verification.failures == [f"the original {worker} is running"]


def test_an_interrupted_spot_instance_fails_the_action_and_keeps_the_original(
    ec2: EC2Client, executor: MigrateToSpotExecutor, worker: str, launched: Migration
) -> None:
    ec2.terminate_instances(InstanceIds=[launched.action.spot_instance_id])

    with pytest.raises(ActionFailed, match="is terminated before it was verified"):
        executor.apply_done(launched.recommendation, launched.action)

    assert state(ec2, worker) == "running"


def test_finalize_terminates_the_original_and_says_so(
    ec2: EC2Client, executor: MigrateToSpotExecutor, worker: str, launched: Migration
) -> None:
    poll(lambda: executor.apply_done(launched.recommendation, launched.action))

    ended = executor.finalize(launched.recommendation, launched.action)
    again = executor.finalize(launched.recommendation, launched.action)  # a retried record step

    # The action record, with the one change the `finalized` event shows: the original it ended.
    assert ended is not None
    assert again is not None
    assert (
        executor.stored(ended)
        == executor.stored(again)
        == {**executor.stored(launched.action), "ended_instance_ids": [worker]}
    )
    assert state(ec2, worker) == "terminated"
    assert state(ec2, launched.action.spot_instance_id) == "running"


def test_measured_savings_fall_back_to_the_estimate_without_a_usable_spot_price(
    executor: MigrateToSpotExecutor, launched: Migration
) -> None:
    assert executor.expected_savings(launched.recommendation, launched.backup) == ESTIMATE


# -- roll back -------------------------------------------------------------------------------------


def test_rollback_before_completion_starts_the_original_and_then_ends_the_spot_instance(
    ec2: EC2Client, executor: MigrateToSpotExecutor, worker: str, launched: Migration
) -> None:
    # Given the original was stopped for the spot instance, and verification then failed
    poll(lambda: executor.apply_done(launched.recommendation, launched.action))
    spot_id = launched.action.spot_instance_id

    rollback = executor.rollback(launched.recommendation, launched.backup, launched.action)

    # Then the original runs again, and the spot instance is ended only after that
    assert rollback.relaunched is False
    assert rollback.instance_id == worker
    assert state(ec2, worker) == "running"
    assert state(ec2, spot_id) == "running"
    assert poll(lambda: executor.rollback_done(launched.recommendation, rollback)) == [False, True]
    assert state(ec2, spot_id) == "terminated"


def test_rollback_finds_a_spot_instance_launched_by_a_step_that_crashed_before_recording_it(
    ec2: EC2Client, executor: MigrateToSpotExecutor, worker: str, launched: Migration
) -> None:
    rollback = executor.rollback(launched.recommendation, launched.backup, None)
    poll(lambda: executor.rollback_done(launched.recommendation, rollback))

    assert rollback.spot_instance_ids == [launched.action.spot_instance_id]
    assert state(ec2, launched.action.spot_instance_id) == "terminated"
    assert state(ec2, worker) == "running"


def test_rollback_without_a_backup_leaves_the_untouched_instance_as_it_is(
    ec2: EC2Client, executor: MigrateToSpotExecutor, worker: str
) -> None:
    ec2.stop_instances(InstanceIds=[worker])
    recommendation = recommendation_for(worker)

    rollback = executor.rollback(recommendation, None, None)

    assert executor.stored(rollback) == {
        "instance_id": worker,
        "relaunched": False,
        "target_state": "stopped",
        "spot_instance_ids": [],
    }
    assert executor.rollback_done(recommendation, rollback) is True
    assert state(ec2, worker) == "stopped"


@pytest.fixture
def completed(executor: MigrateToSpotExecutor, launched: Migration) -> Migration:
    """The migration carried through: spot instance verified, original terminated."""
    poll(lambda: executor.apply_done(launched.recommendation, launched.action))
    assert executor.verify(launched.recommendation, launched.action).passed
    finalized = executor.finalize(launched.recommendation, launched.action)
    assert finalized is not None
    launched.action = finalized
    return launched


def test_rollback_after_completion_relaunches_on_demand_from_the_ami_and_ends_the_spot_instance(
    ec2: EC2Client,
    executor: MigrateToSpotExecutor,
    network: Network,
    worker: str,
    execution_id: str,
    completed: Migration,
) -> None:
    rollback = executor.rollback(completed.recommendation, completed.backup, completed.action)
    repeated = executor.rollback(completed.recommendation, completed.backup, completed.action)
    polls = poll(lambda: executor.rollback_done(completed.recommendation, rollback))

    assert rollback.relaunched is True
    assert repeated.instance_id == rollback.instance_id
    [restored] = tagged(ec2, RESTORED_FOR_TAG, execution_id)
    assert restored["InstanceId"] == rollback.instance_id
    assert "InstanceLifecycle" not in restored  # on-demand again
    assert restored["ImageId"] == completed.backup.image_id
    assert restored["InstanceType"] == "m5.large"
    assert restored["SubnetId"] == network.subnet_id
    assert [g["GroupId"] for g in restored["SecurityGroups"]] == [network.security_group_id]
    tags = {t["Key"]: t["Value"] for t in restored["Tags"]}
    assert (tags["Name"], tags["team"], tags[SOURCE_INSTANCE_TAG]) == ("batch-1", "data", worker)
    assert polls == [False, True]
    assert state(ec2, restored["InstanceId"]) == "running"
    assert state(ec2, completed.action.spot_instance_id) == "terminated"


def test_ending_a_spot_instance_of_a_persistent_request_cancels_the_request_first(
    ec2: EC2Client, executor: MigrateToSpotExecutor, monkeypatch: pytest.MonkeyPatch, completed: Migration
) -> None:
    # Given the spot instance belongs to a persistent spot request, which would replace it once
    # terminated (moto's RunInstances makes no request: one is made, and DescribeInstances reports it
    # as AWS does)
    request_id = ec2.request_spot_instances(
        Type="persistent", LaunchSpecification={"ImageId": AMI_ID, "InstanceType": "m5.large"}
    )["SpotInstanceRequests"][0]["SpotInstanceRequestId"]
    spot_id = completed.action.spot_instance_id
    describe_instances = executor.clients.ec2.describe_instances

    def with_request_id(**request: Any) -> Any:
        answer = describe_instances(**request)
        for instance in (i for r in answer["Reservations"] for i in r["Instances"]):
            if instance["InstanceId"] == spot_id:
                instance["SpotInstanceRequestId"] = request_id
        return answer

    monkeypatch.setattr(executor.clients.ec2, "describe_instances", with_request_id)
    assert open_spot_requests(ec2) == [request_id]

    rollback = executor.rollback(completed.recommendation, completed.backup, completed.action)
    poll(lambda: executor.rollback_done(completed.recommendation, rollback))

    # (AWS keeps a cancelled request as "cancelled"; moto forgets it)
    assert open_spot_requests(ec2) == []
    assert state(ec2, spot_id) == "terminated"
