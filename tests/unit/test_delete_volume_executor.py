"""DeleteVolumeExecutor against emulated EC2 and CloudTrail: what it refuses, what it plans, and
snapshot → delete → verify → recreate called step by step, without a state machine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from cost_engine.aws import AwsClients
from cost_engine.ec2_instances import EXECUTION_TAG, RESTORED_FOR_TAG
from cost_engine.errors import ActionFailed
from cost_engine.executors.delete_volume import SOURCE_VOLUME_TAG, DeleteVolumeExecutor, VolumeDeletion
from cost_engine.models import Recommendation, RecommendationType, new_execution_id
from cost_engine.pricing import price_catalog
from local_runtime.emulations import cloudtrail_volume_events
from tests.unit.conftest import ACCOUNT_ID, REGION

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import SnapshotTypeDef, VolumeTypeDef

AMI_ID = "ami-12c6146b"
ZONE = f"{REGION}b"


def recommendation_for(volume_id: str, **parameters: Any) -> Recommendation:
    return Recommendation(
        customer_id="acme-corp",
        type=RecommendationType.DELETE_VOLUME,
        account_id=ACCOUNT_ID,
        region=REGION,
        resource_id=volume_id,
        parameters=parameters,
        estimated_monthly_savings=9.0,
    )


@pytest.fixture
def ec2(aws: None) -> EC2Client:
    cloudtrail_volume_events.patch_moto()  # moto has no CloudTrail LookupEvents of its own
    return boto3.client("ec2", region_name=REGION)


@pytest.fixture
def executor(ec2: EC2Client) -> DeleteVolumeExecutor:
    return DeleteVolumeExecutor(AwsClients(REGION))


def create_volume(ec2: EC2Client, **settings: Any) -> str:
    request: dict[str, Any] = {
        "AvailabilityZone": ZONE,
        "Size": 100,
        "VolumeType": "gp3",
        "Iops": 4000,
        "Throughput": 250,
        "TagSpecifications": [
            {"ResourceType": "volume", "Tags": [{"Key": "Name", "Value": "old-data"}, {"Key": "team", "Value": "bi"}]}
        ],
        **settings,
    }
    return ec2.create_volume(**{k: v for k, v in request.items() if v is not None})["VolumeId"]


def launch(ec2: EC2Client) -> str:
    placement: Any = {"AvailabilityZone": ZONE}
    instance = ec2.run_instances(ImageId=AMI_ID, InstanceType="t3.micro", MinCount=1, MaxCount=1, Placement=placement)
    return instance["Instances"][0]["InstanceId"]


def describe(ec2: EC2Client, volume_id: str) -> VolumeTypeDef:
    return ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]


def snapshots_of(ec2: EC2Client, execution_id: str) -> list[SnapshotTypeDef]:
    return ec2.describe_snapshots(Filters=[{"Name": f"tag:{EXECUTION_TAG}", "Values": [execution_id]}])["Snapshots"]


def volume_exists(ec2: EC2Client, volume_id: str) -> bool:
    return any(v["VolumeId"] == volume_id for v in ec2.describe_volumes()["Volumes"])


def detached_days_ago(volume_id: str, instance_id: str, days: float) -> None:
    """CloudTrail history as if the volume had been detached that long ago."""
    when = datetime.now(UTC) - timedelta(days=days)
    cloudtrail_volume_events.record_volume_event(
        ACCOUNT_ID, REGION, "AttachVolume", volume_id, instance_id, when - timedelta(days=30)
    )
    cloudtrail_volume_events.record_volume_event(ACCOUNT_ID, REGION, "DetachVolume", volume_id, instance_id, when)


# -- validate ---------------------------------------------------------------------------------------


def test_a_volume_never_attached_in_cloudtrails_90_days_is_valid_with_a_note(
    ec2: EC2Client, executor: DeleteVolumeExecutor
) -> None:
    volume_id = create_volume(ec2)

    result = executor.validate(recommendation_for(volume_id))

    assert result.valid
    assert result.errors == []
    assert result.warnings == [
        f"no AttachVolume or DetachVolume of {volume_id} in CloudTrail's 90 days of event history: treated as "
        "detached for at least 90 days"
    ]


def test_an_attached_volume_is_refused_and_the_instance_named(ec2: EC2Client, executor: DeleteVolumeExecutor) -> None:
    # Given a volume attached to an instance
    volume_id = create_volume(ec2)
    instance_id = launch(ec2)
    ec2.attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device="/dev/sdf")

    result = executor.validate(recommendation_for(volume_id))

    assert not result.valid
    assert result.errors == [
        f"volume {volume_id} is attached to instance {instance_id}: only unattached volumes are deleted; "
        "detach it first if it really is unused"
    ]


def test_a_volume_detached_more_recently_than_min_days_detached_is_refused(
    ec2: EC2Client, executor: DeleteVolumeExecutor
) -> None:
    # Given a volume detached yesterday
    volume_id = create_volume(ec2)
    instance_id = launch(ec2)
    detached_days_ago(volume_id, instance_id, 1.2)

    # When its deletion is validated with the default of 7 days, and with 1 day
    refused = executor.validate(recommendation_for(volume_id))
    allowed = executor.validate(recommendation_for(volume_id, min_days_detached=1))

    # Then 7 days refuses it, saying until when it was attached, to what, and what to do
    assert not refused.valid
    assert len(refused.errors) == 1
    error = refused.errors[0]
    assert f"was attached to instance {instance_id} until" in error
    assert "DetachVolume in CloudTrail, 1 day(s) ago" in error
    assert "less than min_days_detached=7 days" in error
    assert "lower parameters.min_days_detached" in error
    assert allowed.valid


def test_a_volume_detached_through_the_api_just_now_is_refused(ec2: EC2Client, executor: DeleteVolumeExecutor) -> None:
    # Given a volume attached and detached through the EC2 API (recorded by CloudTrail)
    volume_id = create_volume(ec2)
    instance_id = launch(ec2)
    ec2.attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device="/dev/sdf")
    ec2.detach_volume(VolumeId=volume_id, InstanceId=instance_id)

    result = executor.validate(recommendation_for(volume_id, min_days_detached=3))

    assert not result.valid
    assert "0 day(s) ago" in result.errors[0]


def test_a_volume_detached_longer_ago_than_min_days_detached_is_valid(
    ec2: EC2Client, executor: DeleteVolumeExecutor
) -> None:
    volume_id = create_volume(ec2)
    detached_days_ago(volume_id, launch(ec2), 10)

    result = executor.validate(recommendation_for(volume_id, min_days_detached=7))

    assert result.valid
    assert result.warnings == []


def test_min_days_detached_zero_does_not_look_at_the_history(ec2: EC2Client, executor: DeleteVolumeExecutor) -> None:
    volume_id = create_volume(ec2)
    instance_id = launch(ec2)
    ec2.attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device="/dev/sdf")
    ec2.detach_volume(VolumeId=volume_id, InstanceId=instance_id)

    assert executor.validate(recommendation_for(volume_id, min_days_detached=0)).valid


def test_an_unknown_volume_is_refused(executor: DeleteVolumeExecutor) -> None:
    result = executor.validate(recommendation_for("vol-0123456789abcdef0"))

    assert not result.valid
    assert result.errors == [f"EBS volume vol-0123456789abcdef0 does not exist in {REGION}"]


@pytest.mark.parametrize(
    "parameters",
    [{"min_days_detached": -1}, {"min_days_detached": 91}, {"min_days": 7}],
    ids=["negative", "beyond-cloudtrail-history", "unknown-name"],
)
def test_invalid_parameters_are_refused(
    ec2: EC2Client, executor: DeleteVolumeExecutor, parameters: dict[str, Any]
) -> None:
    result = executor.validate(recommendation_for(create_volume(ec2), **parameters))

    assert not result.valid
    assert "invalid parameters for delete_volume" in result.errors[0]


def test_an_encrypted_volume_warns_that_its_key_is_needed_to_restore(
    ec2: EC2Client, executor: DeleteVolumeExecutor
) -> None:
    volume_id = create_volume(ec2, Encrypted=True)

    result = executor.validate(recommendation_for(volume_id))

    assert result.valid
    assert any("encrypted with KMS key" in w and "policy must let the engine use it" in w for w in result.warnings)


# -- plan -------------------------------------------------------------------------------------------


def test_the_plan_prices_the_volume_less_its_snapshot(ec2: EC2Client, executor: DeleteVolumeExecutor) -> None:
    volume_id = create_volume(ec2)

    plan = executor.plan(recommendation_for(volume_id), new_execution_id())

    catalog = price_catalog()
    assert plan.estimated_monthly_savings == pytest.approx(
        (catalog.volume_monthly("gp3", 100) or 0) - catalog.snapshot_monthly(100)
    )
    assert plan.savings_basis.startswith(catalog.basis)
    assert volume_id in plan.summary
    assert "4000 IOPS" in plan.summary
    assert "250 MiB/s" in plan.summary
    assert plan.resource["availability_zone"] == ZONE
    assert plan.resource["tags"] == {"Name": "old-data", "team": "bi"}
    assert describe(ec2, volume_id)["State"] == "available"
    assert ec2.describe_snapshots(Filters=[{"Name": "volume-id", "Values": [volume_id]}])["Snapshots"] == []


def test_a_volume_type_missing_from_the_catalog_falls_back_to_the_recommendations_estimate(
    ec2: EC2Client, executor: DeleteVolumeExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    volume_id = create_volume(ec2)
    monkeypatch.delitem(price_catalog().ebs_gb_month, "gp3")

    plan = executor.plan(recommendation_for(volume_id), new_execution_id())

    assert plan.estimated_monthly_savings == 9.0
    assert "recommendation's own estimate" in plan.savings_basis


# -- backup, delete, verify ------------------------------------------------------------------------


def test_backup_delete_verify_and_savings(ec2: EC2Client, executor: DeleteVolumeExecutor) -> None:
    # Given an unattached, encrypted gp3 volume with provisioned performance and tags
    volume_id = create_volume(ec2, Encrypted=True)
    original = describe(ec2, volume_id)
    recommendation = recommendation_for(volume_id)
    execution_id = new_execution_id()

    # When it is backed up (twice, as a retried step would), then deleted (twice)
    backup = executor.backup(recommendation, execution_id)
    again = executor.backup(recommendation, execution_id)
    assert executor.backup_ready(recommendation, backup)
    action = executor.apply(recommendation, backup)
    retried = executor.apply(recommendation, backup)

    # Then one snapshot, tagged with the execution, holds the volume, and its settings are recorded
    snapshots = snapshots_of(ec2, execution_id)
    assert [s["SnapshotId"] for s in snapshots] == [backup.snapshot_id] == [again.snapshot_id]
    tags = {t["Key"]: t["Value"] for t in snapshots[0]["Tags"]}
    assert tags[EXECUTION_TAG] == execution_id
    assert tags[SOURCE_VOLUME_TAG] == volume_id
    assert executor.stored(backup)["volume"] == {
        "volume_type": "gp3",
        "size_gb": 100,
        "iops": 4000,
        "throughput": 250,
        "encrypted": True,
        "kms_key_id": original["KmsKeyId"],
        "availability_zone": ZONE,
        "multi_attach_enabled": False,
        "tags": {"Name": "old-data", "team": "bi"},
    }
    # and the volume is gone, the retry having found nothing left to do
    assert not volume_exists(ec2, volume_id)
    assert action.state_before == "available"
    assert retried.state_before == "gone"
    assert executor.apply_done(recommendation, action)
    verification = executor.verify(recommendation, action)
    assert verification.passed, verification.failures
    assert executor.expected_savings(recommendation, backup) == pytest.approx(
        (price_catalog().volume_monthly("gp3", 100) or 0) - price_catalog().snapshot_monthly(100)
    )


def test_a_volume_attached_after_validation_is_not_deleted(ec2: EC2Client, executor: DeleteVolumeExecutor) -> None:
    volume_id = create_volume(ec2)
    recommendation = recommendation_for(volume_id)
    backup = executor.backup(recommendation, new_execution_id())
    ec2.attach_volume(VolumeId=volume_id, InstanceId=launch(ec2), Device="/dev/sdf")

    with pytest.raises(ActionFailed, match="after validation: it is left in place"):
        executor.apply(recommendation, backup)

    assert describe(ec2, volume_id)["State"] == "in-use"


def test_verification_fails_while_the_volume_still_exists(ec2: EC2Client, executor: DeleteVolumeExecutor) -> None:
    volume_id = create_volume(ec2)
    recommendation = recommendation_for(volume_id)
    backup = executor.backup(recommendation, new_execution_id())

    result = executor.verify(
        recommendation,
        VolumeDeletion(deleted_volume_id=volume_id, state_before="available", snapshot_id=backup.snapshot_id),
    )

    assert not result.passed
    assert result.failures == [f"volume {volume_id} is available"]


# -- rollback ---------------------------------------------------------------------------------------


def test_rollback_recreates_the_volume_with_the_recorded_settings_once(
    ec2: EC2Client, executor: DeleteVolumeExecutor
) -> None:
    # Given a deleted volume and its backup
    volume_id = create_volume(ec2, Encrypted=True)
    original = describe(ec2, volume_id)
    recommendation = recommendation_for(volume_id)
    execution_id = new_execution_id()
    backup = executor.backup(recommendation, execution_id)
    action = executor.apply(recommendation, backup)

    # When it is rolled back (twice, as a retried step would)
    rollback = executor.rollback(recommendation, backup, action)
    retried = executor.rollback(recommendation, backup, action)

    # Then one volume is created from the snapshot, with the original's settings and tags
    assert rollback == retried
    assert rollback.recreated is True
    assert rollback.replaces_volume_id == volume_id
    assert executor.rollback_done(recommendation, rollback)
    restored = ec2.describe_volumes(Filters=[{"Name": f"tag:{RESTORED_FOR_TAG}", "Values": [execution_id]}])["Volumes"]
    assert [v["VolumeId"] for v in restored] == [rollback.volume_id]
    volume = restored[0]
    assert volume["SnapshotId"] == backup.snapshot_id
    for field in ("VolumeType", "Size", "Iops", "Throughput", "Encrypted", "KmsKeyId", "AvailabilityZone"):
        assert volume.get(field) == original.get(field), field
    tags = {t["Key"]: t["Value"] for t in volume["Tags"]}
    assert tags["Name"] == "old-data"
    assert tags["team"] == "bi"
    assert tags[SOURCE_VOLUME_TAG] == volume_id


def test_rollback_of_a_gp2_volume_does_not_ask_for_iops(ec2: EC2Client, executor: DeleteVolumeExecutor) -> None:
    # gp2's IOPS follow its size; passing them to CreateVolume is refused by AWS.
    volume_id = create_volume(ec2, VolumeType="gp2", Iops=None, Throughput=None)
    recommendation = recommendation_for(volume_id)
    backup = executor.backup(recommendation, new_execution_id())
    executor.apply(recommendation, backup)

    rollback = executor.rollback(recommendation, backup, None)

    assert describe(ec2, rollback.volume_id)["VolumeType"] == "gp2"


def test_rollback_before_the_deletion_leaves_the_original_as_it_is(
    ec2: EC2Client, executor: DeleteVolumeExecutor
) -> None:
    volume_id = create_volume(ec2)
    recommendation = recommendation_for(volume_id)
    backup = executor.backup(recommendation, new_execution_id())

    rollback = executor.rollback(recommendation, backup, None)

    assert executor.stored(rollback) == {"volume_id": volume_id, "recreated": False}
    assert executor.rollback_done(recommendation, rollback)
    assert [v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]] == [volume_id]
