"""OptimizeStorageExecutor against emulated EC2 and S3: gp2 → gp3 on a volume, lifecycle and
Intelligent-Tiering on a bucket, what each refuses, and backup → apply → verify → roll back called step
by step, without a state machine."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.exceptions import ClientError

from cost_engine.aws import AwsClients
from cost_engine.errors import ActionFailed
from cost_engine.executors.optimize_storage import (
    EbsBackup,
    EbsChange,
    OptimizeStorageExecutor,
    OptimizeStorageParameters,
    S3Backup,
    gp3_target,
    rule_problems,
)
from cost_engine.executors.optimize_storage import ebs as optimize_storage_ebs
from cost_engine.models import Recommendation, RecommendationType, new_execution_id
from cost_engine.pricing import price_catalog
from local_runtime.emulations import ebs_modifications, s3_intelligent_tiering
from tests.unit.conftest import ACCOUNT_ID, REGION

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.literals import VolumeTypeType
    from mypy_boto3_ec2.type_defs import VolumeTypeDef

BUCKET = "acme-app-logs"
EXISTING_RULE = {
    "ID": "expire-tmp",
    "Filter": {"Prefix": "tmp/"},
    "Status": "Enabled",
    "Expiration": {"Days": 7},
}
TRANSITIONS = [{"days": 30, "storage_class": "STANDARD_IA"}, {"days": 90, "storage_class": "GLACIER"}]


def recommendation_for(resource_id: str, savings: float | None = 12.5, **parameters: Any) -> Recommendation:
    return Recommendation(
        customer_id="acme-corp",
        type=RecommendationType.OPTIMIZE_STORAGE,
        account_id=ACCOUNT_ID,
        region=REGION,
        resource_id=resource_id,
        parameters=parameters,
        estimated_monthly_savings=savings,
    )


@pytest.fixture
def emulated_aws(aws: None) -> Iterator[None]:
    """moto with the local runtime's emulations of EBS modification pacing and Intelligent-Tiering."""
    with ebs_modifications.emulated(), s3_intelligent_tiering.emulated():
        yield


@pytest.fixture
def ec2(emulated_aws: None) -> EC2Client:
    return boto3.client("ec2", region_name=REGION)


@pytest.fixture
def s3(emulated_aws: None) -> Any:
    return boto3.client("s3", region_name=REGION)


@pytest.fixture
def executor(emulated_aws: None) -> OptimizeStorageExecutor:
    return OptimizeStorageExecutor(AwsClients(REGION))


def create_volume(ec2: EC2Client, size_gb: int = 100, volume_type: VolumeTypeType = "gp2", **extra: Any) -> str:
    return ec2.create_volume(AvailabilityZone=f"{REGION}a", Size=size_gb, VolumeType=volume_type, **extra)["VolumeId"]


def volume(ec2: EC2Client, volume_id: str) -> VolumeTypeDef:
    return ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]


def lifecycle_rules(s3: Any, bucket: str = BUCKET) -> list[dict[str, Any]] | None:
    """The bucket's lifecycle rules, or None when it has no lifecycle configuration."""
    try:
        rules: list[dict[str, Any]] = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    except s3.exceptions.ClientError as error:
        if error.response["Error"]["Code"] != "NoSuchLifecycleConfiguration":
            raise
        return None
    return rules


def tiering_ids(s3: Any, bucket: str = BUCKET) -> list[str]:
    listed = s3.list_bucket_intelligent_tiering_configurations(Bucket=bucket)
    return [c["Id"] for c in listed.get("IntelligentTieringConfigurationList", [])]


@pytest.fixture
def bucket(s3: Any) -> str:
    """A bucket of large log objects and no lifecycle configuration."""
    s3.create_bucket(Bucket=BUCKET)
    for number in range(3):
        s3.put_object(Bucket=BUCKET, Key=f"logs/2026/{number}.log.gz", Body=b"x" * 200_000)
    return BUCKET


# -- gp3 performance -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size_gb", "iops", "throughput"),
    [(8, 3000, 128), (170, 3000, 128), (171, 3000, 250), (1500, 4500, 250), (6000, 16000, 250)],
    ids=["8-GiB-bursts", "170-GiB", "171-GiB-needs-250-MiB/s", "1500-GiB-baseline-above-3000", "capped-at-16000"],
)
def test_gp3_gets_at_least_the_iops_and_throughput_the_gp2_volume_had(size_gb: int, iops: int, throughput: int) -> None:
    target = gp3_target(size_gb)

    assert (target.iops, target.throughput) == (iops, throughput)
    assert f"{size_gb} GiB" in target.explanation


def test_requested_gp3_performance_above_the_need_is_kept() -> None:
    target = gp3_target(100, iops=6000, throughput=300)

    assert (target.iops, target.throughput) == (6000, 300)


# -- volume: validate and plan -------------------------------------------------------------------------


def test_a_gp2_volume_is_valid_attached_or_not(ec2: EC2Client, executor: OptimizeStorageExecutor) -> None:
    detached = create_volume(ec2)
    attached = create_volume(ec2)
    instance_id = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="t3.micro")[
        "Instances"
    ][0]["InstanceId"]
    ec2.attach_volume(VolumeId=attached, InstanceId=instance_id, Device="/dev/sdf")

    for volume_id in (detached, attached):
        result = executor.validate(recommendation_for(volume_id))
        assert result.valid, result.errors
        assert result.errors == []


@pytest.mark.parametrize(
    ("volume_type", "extra", "reason"),
    [
        ("gp3", {}, "is already gp3: there is nothing to change"),
        ("io1", {"Iops": 1000}, "is io1: optimize_storage moves gp2 volumes to gp3 only"),
    ],
)
def test_a_volume_that_is_not_gp2_is_refused(
    ec2: EC2Client, executor: OptimizeStorageExecutor, volume_type: VolumeTypeType, extra: dict[str, Any], reason: str
) -> None:
    volume_id = create_volume(ec2, volume_type=volume_type, **extra)

    result = executor.validate(recommendation_for(volume_id))

    assert not result.valid
    assert len(result.errors) == 1
    assert result.errors[0].startswith(f"volume {volume_id} {reason}")


def test_an_unknown_volume_is_refused(executor: OptimizeStorageExecutor) -> None:
    result = executor.validate(recommendation_for("vol-0123456789abcdef0"))

    assert not result.valid
    assert result.errors == [f"EBS volume vol-0123456789abcdef0 does not exist in {REGION}"]


def test_a_volume_modified_less_than_six_hours_ago_is_refused_with_the_time_it_can_be_done(
    ec2: EC2Client, executor: OptimizeStorageExecutor
) -> None:
    # Given a gp2 volume grown two hours ago (its modification has completed since)
    volume_id = create_volume(ec2, size_gb=100)
    ec2.modify_volume(VolumeId=volume_id, Size=120)
    ebs_modifications.elapse(volume_id, hours=2)

    result = executor.validate(recommendation_for(volume_id))

    # Then it is refused until six hours after that modification started
    started = ec2.describe_volumes_modifications(VolumeIds=[volume_id])["VolumesModifications"][0]["StartTime"]
    assert not result.valid
    assert result.errors == [
        f"volume {volume_id} was last modified at {started.isoformat()}: AWS allows one modification of a volume "
        f"every six hours, so this can be done from {(started + timedelta(hours=6)).isoformat()}"
    ]


def test_a_volume_being_modified_is_refused(ec2: EC2Client, executor: OptimizeStorageExecutor) -> None:
    volume_id = create_volume(ec2)
    ec2.modify_volume(VolumeId=volume_id, Size=150)

    result = executor.validate(recommendation_for(volume_id))

    assert not result.valid
    assert f"volume {volume_id} is still being modified ('modifying'" in result.errors[0]
    assert "once it has completed" in result.errors[0]


def test_a_volume_modified_more_than_six_hours_ago_is_valid(ec2: EC2Client, executor: OptimizeStorageExecutor) -> None:
    volume_id = create_volume(ec2, size_gb=100)
    ec2.modify_volume(VolumeId=volume_id, Size=120)
    ebs_modifications.elapse(volume_id, hours=7)

    assert executor.validate(recommendation_for(volume_id)).valid


def test_requested_iops_below_what_the_volume_has_is_refused(ec2: EC2Client, executor: OptimizeStorageExecutor) -> None:
    volume_id = create_volume(ec2, size_gb=2000)  # 6,000 IOPS as gp2

    result = executor.validate(recommendation_for(volume_id, iops=4000))

    assert not result.valid
    assert result.errors[0].startswith(f"parameters.iops 4000 is below the 6,000 IOPS volume {volume_id} can deliver")


def test_a_volume_the_engine_may_not_modify_is_refused(
    ec2: EC2Client, executor: OptimizeStorageExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a role without ec2:ModifyVolume: AWS answers the DryRun with UnauthorizedOperation
    volume_id = create_volume(ec2)

    def unauthorized(**request: Any) -> None:
        assert request["DryRun"] is True
        raise ClientError({"Error": {"Code": "UnauthorizedOperation", "Message": "not authorized"}}, "ModifyVolume")

    monkeypatch.setattr(executor.clients.ec2, "modify_volume", unauthorized)

    result = executor.validate(recommendation_for(volume_id))

    assert not result.valid
    assert result.errors[0].startswith(f"the engine's role may not modify volume {volume_id} (ec2:ModifyVolume)")


def test_bucket_parameters_on_a_volume_are_refused(ec2: EC2Client, executor: OptimizeStorageExecutor) -> None:
    volume_id = create_volume(ec2)

    result = executor.validate(recommendation_for(volume_id, transitions=TRANSITIONS))

    assert not result.valid
    assert result.errors == [f"parameters transitions do not apply to EBS volume {volume_id}: they are for S3 buckets"]


def test_the_volume_plan_explains_the_performance_and_falls_back_for_unpriced_gp3_throughput(
    ec2: EC2Client, executor: OptimizeStorageExecutor
) -> None:
    volume_id = create_volume(ec2, size_gb=100)

    plan = executor.plan(recommendation_for(volume_id, savings=1.5), new_execution_id())

    assert plan.resource["target"] == {"volume_type": "gp3", "iops": 3000, "throughput": 128}
    assert "baseline of 300 IOPS" in plan.resource["performance_basis"]
    assert "bursting to 3,000" in plan.resource["performance_basis"]
    # 128 MiB/s is 3 MiB/s above what gp3 includes, and the catalog has no price for it yet
    assert plan.estimated_monthly_savings == 1.5
    assert plan.savings_basis == (
        "no catalog price for gp3 throughput above 125 MiB/s (3 MiB/s needed): the recommendation's own estimate"
    )
    assert any("six hours" in step for step in plan.rollback_plan.rollback_steps)


@dataclass(frozen=True)
class CatalogWithGp3Performance:
    """The price catalog once it lists gp3 performance prices (reported as missing)."""

    ebs_gb_month: dict[str, float]
    ebs_gp3_iops_month: float = 0.005
    ebs_gp3_throughput_mibps_month: float = 0.04
    basis: str = "catalog with gp3 performance prices"

    def volume_monthly(self, volume_type: str, size_gb: int) -> float | None:
        return round(self.ebs_gb_month[volume_type] * size_gb, 2)


def test_with_gp3_performance_prices_the_savings_come_from_the_catalog(
    ec2: EC2Client, executor: OptimizeStorageExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = CatalogWithGp3Performance(ebs_gb_month=price_catalog().ebs_gb_month)
    monkeypatch.setattr(optimize_storage_ebs, "price_catalog", lambda: catalog)
    volume_id = create_volume(ec2, size_gb=500)  # needs 250 MiB/s: 125 above the gp3 baseline

    plan = executor.plan(recommendation_for(volume_id), new_execution_id())

    storage = (catalog.ebs_gb_month["gp2"] - catalog.ebs_gb_month["gp3"]) * 500
    assert plan.estimated_monthly_savings == pytest.approx(storage - 125 * 0.04, abs=0.01)
    assert plan.savings_basis == catalog.basis


# -- volume: backup, apply, verify, roll back ----------------------------------------------------------


@pytest.fixture
def modified(ec2: EC2Client, executor: OptimizeStorageExecutor) -> tuple[str, EbsBackup, EbsChange]:
    """A 500 GiB gp2 volume, backed up and modified by the executor: (volume id, backup, action)."""
    volume_id = create_volume(ec2, size_gb=500)
    recommendation = recommendation_for(volume_id)
    backup = executor.backup(recommendation, new_execution_id())
    assert isinstance(backup, EbsBackup)
    assert executor.backup_ready(recommendation, backup)
    action = executor.apply(recommendation, backup)
    assert isinstance(action, EbsChange)
    return volume_id, backup, action


def test_apply_waits_for_the_modification_then_verify_finds_gp3_with_the_performance(
    ec2: EC2Client, executor: OptimizeStorageExecutor, modified: tuple[str, EbsBackup, EbsChange]
) -> None:
    volume_id, backup, action = modified
    recommendation = recommendation_for(volume_id)

    # The modification is reported 'modifying', then 'optimizing', when the new type is in service
    assert executor.apply_done(recommendation, action) is False
    assert executor.apply_done(recommendation, action) is True
    verification = executor.verify(recommendation, action)

    assert verification.passed, verification.failures
    described = volume(ec2, volume_id)
    assert (described["VolumeType"], described["Iops"], described["Throughput"]) == ("gp3", 3000, 250)
    assert executor.stored(backup)["original"] == {
        "volume_type": "gp2",
        "size_gb": 500,
        "iops": None,
        "throughput": None,
    }


def test_a_repeated_apply_does_not_modify_twice(
    ec2: EC2Client, executor: OptimizeStorageExecutor, modified: tuple[str, EbsBackup, EbsChange]
) -> None:
    volume_id, backup, _ = modified

    again = executor.apply(recommendation_for(volume_id), backup)

    assert isinstance(again, EbsChange)
    assert again.already_requested is True
    assert len(ec2.describe_volumes_modifications(VolumeIds=[volume_id])["VolumesModifications"]) == 1


def test_a_rollback_within_six_hours_fails_and_says_when_to_ask_again(
    ec2: EC2Client, executor: OptimizeStorageExecutor, modified: tuple[str, EbsBackup, EbsChange]
) -> None:
    volume_id, backup, action = modified
    recommendation = recommendation_for(volume_id)
    while not executor.apply_done(recommendation, action):
        pass
    started = ec2.describe_volumes_modifications(VolumeIds=[volume_id])["VolumesModifications"][0]["StartTime"]

    with pytest.raises(ActionFailed) as refused:
        executor.rollback(recommendation, backup, action)

    assert f"AWS does not allow volume {volume_id} to be modified back to gp2 yet" in refused.value.message
    assert f"ask for the rollback again after {(started + timedelta(hours=6)).isoformat()}" in refused.value.message
    assert volume(ec2, volume_id)["VolumeType"] == "gp3"


def test_after_six_hours_the_rollback_returns_the_volume_to_gp2(
    ec2: EC2Client, executor: OptimizeStorageExecutor, modified: tuple[str, EbsBackup, EbsChange]
) -> None:
    volume_id, backup, action = modified
    recommendation = recommendation_for(volume_id)
    ebs_modifications.elapse(volume_id, hours=6)

    rollback = executor.rollback(recommendation, backup, action)
    done = [executor.rollback_done(recommendation, rollback) for _ in range(2)]

    assert rollback.restored is True
    assert done == [False, True]  # 'modifying', then 'optimizing'
    assert volume(ec2, volume_id)["VolumeType"] == "gp2"
    assert volume(ec2, volume_id)["Size"] == 500


def test_a_rollback_before_any_change_touches_nothing(ec2: EC2Client, executor: OptimizeStorageExecutor) -> None:
    volume_id = create_volume(ec2)
    recommendation = recommendation_for(volume_id)
    backup = executor.backup(recommendation, new_execution_id())

    rollback = executor.rollback(recommendation, backup, None)

    assert rollback.restored is False
    assert executor.rollback_done(recommendation, rollback) is True
    assert ec2.describe_volumes_modifications(VolumeIds=[volume_id])["VolumesModifications"] == []


def test_the_measured_savings_of_a_volume_match_the_plan(
    executor: OptimizeStorageExecutor, modified: tuple[str, EbsBackup, EbsChange]
) -> None:
    volume_id, backup, _ = modified
    recommendation = recommendation_for(volume_id, savings=9.0)

    assert (
        executor.expected_savings(recommendation, backup)
        == executor.plan(recommendation, "x").estimated_monthly_savings
    )


# -- bucket: what AWS would reject ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parameters", "problem"),
    [
        (
            {"transitions": [{"days": 10, "storage_class": "STANDARD_IA"}]},
            "transitions: STANDARD_IA after 10 days would be rejected by AWS: objects must stay at least 30 days",
        ),
        (
            {"noncurrent_version_transitions": [{"days": 7, "storage_class": "ONEZONE_IA"}]},
            "noncurrent_version_transitions: ONEZONE_IA after 7 days would be rejected by AWS",
        ),
        (
            {"transitions": [{"days": 30, "storage_class": "GLACIER"}, {"days": 60, "storage_class": "STANDARD_IA"}]},
            "transitions: GLACIER after 30 days then STANDARD_IA after 60 days: S3 only moves objects to colder",
        ),
        (
            {"transitions": [{"days": 30, "storage_class": "STANDARD_IA"}, {"days": 45, "storage_class": "GLACIER"}]},
            "transitions: GLACIER after 45 days comes less than 30 days after STANDARD_IA (day 30)",
        ),
        (
            {"intelligent_tiering": {"id": "archive", "archive_days": 30}},
            "intelligent_tiering.archive_days 30: AWS allows 90 to 730 days for the Archive Access tier",
        ),
        (
            {"intelligent_tiering": {"id": "archive", "archive_days": 200, "deep_archive_days": 180}},
            "intelligent_tiering.deep_archive_days must be more than archive_days",
        ),
    ],
    ids=[
        "IA-before-30-days",
        "noncurrent-IA-before-30-days",
        "warmer-after-colder",
        "glacier-too-soon-after-IA",
        "archive-too-soon",
        "deep-archive-before-archive",
    ],
)
def test_a_rule_aws_would_reject_is_refused(parameters: dict[str, Any], problem: str) -> None:
    problems = rule_problems(OptimizeStorageParameters.model_validate(parameters))

    assert len(problems) == 1
    assert problems[0].startswith(problem)


def test_a_valid_rule_has_no_problems() -> None:
    parameters = OptimizeStorageParameters.model_validate(
        {
            "transitions": TRANSITIONS,
            "intelligent_tiering": {"id": "archive", "archive_days": 90, "deep_archive_days": 180},
        }
    )

    assert rule_problems(parameters) == []


# -- bucket: validate and plan ----------------------------------------------------------------------------


def test_a_bucket_with_large_objects_and_a_valid_rule_is_valid(bucket: str, executor: OptimizeStorageExecutor) -> None:
    result = executor.validate(recommendation_for(bucket, transitions=TRANSITIONS, prefix="logs/"))

    assert result.valid, result.errors
    assert result.warnings == []


def test_an_unknown_bucket_is_refused(s3: Any, executor: OptimizeStorageExecutor) -> None:
    result = executor.validate(recommendation_for("no-such-bucket-here", transitions=TRANSITIONS))

    assert not result.valid
    assert result.errors == ["S3 bucket no-such-bucket-here does not exist"]


def test_a_bucket_in_another_region_is_refused(s3: Any, executor: OptimizeStorageExecutor) -> None:
    s3.create_bucket(Bucket="acme-eu-archive", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})

    result = executor.validate(recommendation_for("acme-eu-archive", transitions=TRANSITIONS))

    assert result.errors == [f"S3 bucket acme-eu-archive is in eu-west-1, but the recommendation is for {REGION}"]


def test_an_existing_rule_with_the_same_id_is_a_conflict(
    s3: Any, bucket: str, executor: OptimizeStorageExecutor
) -> None:
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [EXISTING_RULE]})

    result = executor.validate(recommendation_for(bucket, rule_id="expire-tmp", transitions=TRANSITIONS))

    assert not result.valid
    assert result.errors == [
        f"bucket {bucket} already has a lifecycle rule 'expire-tmp': choose another parameters.rule_id "
        "(existing rules are never replaced)"
    ]


def test_an_existing_intelligent_tiering_configuration_with_the_same_id_is_a_conflict(
    s3: Any, bucket: str, executor: OptimizeStorageExecutor
) -> None:
    s3.put_bucket_intelligent_tiering_configuration(
        Bucket=bucket,
        Id="archive",
        IntelligentTieringConfiguration={
            "Id": "archive",
            "Status": "Enabled",
            "Tierings": [{"Days": 90, "AccessTier": "ARCHIVE_ACCESS"}],
        },
    )

    result = executor.validate(recommendation_for(bucket, intelligent_tiering={"id": "archive", "archive_days": 120}))

    assert not result.valid
    assert "already has an Intelligent-Tiering configuration 'archive'" in result.errors[0]


def test_nothing_to_add_and_volume_parameters_on_a_bucket_are_refused(
    bucket: str, executor: OptimizeStorageExecutor
) -> None:
    nothing = executor.validate(recommendation_for(bucket))
    misplaced = executor.validate(recommendation_for(bucket, transitions=TRANSITIONS, iops=3000))

    assert nothing.errors[0].startswith("nothing to add: give parameters.transitions")
    assert misplaced.errors == [f"parameters iops do not apply to S3 bucket {bucket}: they are for EBS volumes"]


def test_mostly_small_objects_make_the_savings_doubtful(s3: Any, executor: OptimizeStorageExecutor) -> None:
    s3.create_bucket(Bucket="acme-thumbnails")
    for number in range(4):
        s3.put_object(Bucket="acme-thumbnails", Key=f"thumbs/{number}.png", Body=b"x" * 2_000)

    result = executor.validate(recommendation_for("acme-thumbnails", transitions=TRANSITIONS))

    assert result.valid
    assert result.warnings == [
        "4 of 4 sampled objects in the bucket are smaller than 128 KiB: S3 lifecycle does not transition them by "
        "default, IA classes bill them as 128 KiB and Intelligent-Tiering keeps them in its Frequent Access tier, "
        "so the savings are doubtful"
    ]


def test_an_archive_configuration_without_intelligent_tiering_objects_is_a_warning(
    bucket: str, executor: OptimizeStorageExecutor
) -> None:
    result = executor.validate(recommendation_for(bucket, intelligent_tiering={"id": "archive", "archive_days": 90}))

    assert result.valid
    assert any("only acts on objects stored in INTELLIGENT_TIERING" in w for w in result.warnings)


def test_the_bucket_plan_keeps_the_existing_rules_and_uses_the_recommendations_estimate(
    s3: Any, bucket: str, executor: OptimizeStorageExecutor
) -> None:
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [EXISTING_RULE]})

    plan = executor.plan(recommendation_for(bucket, savings=42.0, transitions=TRANSITIONS, prefix="logs/"), "x")

    assert plan.estimated_monthly_savings == 42.0
    assert "no S3 storage-class prices" in plan.savings_basis
    assert "keep the existing rule(s) expire-tmp unchanged" in plan.actions[1]
    assert plan.rollback_plan.rollback_steps[0] == "Put back the recorded lifecycle configuration exactly (1 rule(s))"


# -- bucket: backup, apply, verify, roll back ----------------------------------------------------------------


def test_apply_merges_the_new_rule_with_the_existing_ones_and_verify_confirms_it(
    s3: Any, bucket: str, executor: OptimizeStorageExecutor
) -> None:
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [EXISTING_RULE]})
    recommendation = recommendation_for(bucket, transitions=TRANSITIONS, prefix="logs/")
    backup = executor.backup(recommendation, new_execution_id())

    action = executor.apply(recommendation, backup)

    rules = lifecycle_rules(s3)
    assert rules is not None
    assert [r["ID"] for r in rules] == ["expire-tmp", "cost-engine-storage-tiering"]
    assert rules[0] == EXISTING_RULE
    assert rules[1]["Transitions"] == [
        {"Days": 30, "StorageClass": "STANDARD_IA"},
        {"Days": 90, "StorageClass": "GLACIER"},
    ]
    assert executor.apply_done(recommendation, action)
    assert executor.verify(recommendation, action).passed


def test_a_repeated_apply_does_not_add_the_rule_twice(bucket: str, s3: Any, executor: OptimizeStorageExecutor) -> None:
    recommendation = recommendation_for(bucket, transitions=TRANSITIONS)
    backup = executor.backup(recommendation, new_execution_id())

    executor.apply(recommendation, backup)
    executor.apply(recommendation, backup)

    assert [r["ID"] for r in lifecycle_rules(s3) or []] == ["cost-engine-storage-tiering"]


def test_rollback_deletes_the_lifecycle_configuration_when_there_was_none(
    s3: Any, bucket: str, executor: OptimizeStorageExecutor
) -> None:
    recommendation = recommendation_for(
        bucket, transitions=TRANSITIONS, intelligent_tiering={"id": "archive", "archive_days": 90}
    )
    backup = executor.backup(recommendation, new_execution_id())
    action = executor.apply(recommendation, backup)
    assert tiering_ids(s3) == ["archive"]

    rollback = executor.rollback(recommendation, backup, action)

    assert isinstance(backup, S3Backup)
    assert backup.lifecycle is None
    assert lifecycle_rules(s3) is None
    assert tiering_ids(s3) == []
    assert executor.rollback_done(recommendation, rollback) is True


def test_rollback_puts_back_the_exact_previous_configuration(
    s3: Any, bucket: str, executor: OptimizeStorageExecutor
) -> None:
    existing = [
        EXISTING_RULE,
        {**EXISTING_RULE, "ID": "archive-old", "Filter": {"Prefix": "old/"}, "Expiration": {"Days": 400}},
    ]
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": existing})
    before = lifecycle_rules(s3)
    recommendation = recommendation_for(bucket, transitions=TRANSITIONS, prefix="logs/")
    backup = executor.backup(recommendation, new_execution_id())
    action = executor.apply(recommendation, backup)

    rollback = executor.rollback(recommendation, backup, action)

    assert lifecycle_rules(s3) == before
    assert executor.rollback_done(recommendation, rollback) is True


def test_a_rollback_before_the_apply_changes_nothing(s3: Any, bucket: str, executor: OptimizeStorageExecutor) -> None:
    recommendation = recommendation_for(bucket, transitions=TRANSITIONS)
    backup = executor.backup(recommendation, new_execution_id())

    rollback = executor.rollback(recommendation, backup, None)

    assert rollback.restored is False
    assert lifecycle_rules(s3) is None


def test_the_executor_declares_exactly_the_aws_actions_it_uses() -> None:
    actions = {a for p in OptimizeStorageExecutor.permissions for a in p.actions}

    assert actions == {
        "ec2:DescribeVolumes",
        "ec2:DescribeVolumesModifications",
        "ec2:ModifyVolume",
        "s3:ListBucket",
        "s3:GetBucketLocation",
        "s3:GetBucketVersioning",
        "s3:GetLifecycleConfiguration",
        "s3:PutLifecycleConfiguration",
        "s3:GetIntelligentTieringConfiguration",
        "s3:PutIntelligentTieringConfiguration",
        "s3:GetBucketTagging",  # the common pre-checks read the bucket's tags
    }
    modify = next(p for p in OptimizeStorageExecutor.permissions if "ec2:ModifyVolume" in p.actions)
    assert modify.resources == ("arn:{partition}:ec2:{region}:{account}:volume/*",)
