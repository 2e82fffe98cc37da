"""FixConfigExecutor against emulated CloudWatch Logs, EC2 and S3: the baselines it accepts and
refuses, and record → apply → verify → restore called step by step, without a state machine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import boto3
import pytest
from pydantic import ValidationError

from cost_engine.aws import AwsClients
from cost_engine.executors.fix_config import LOG_RETENTION_DAYS, ConfigBackup, FixConfigExecutor, FixConfigParameters
from cost_engine.models import Recommendation, RecommendationType, new_execution_id
from local_runtime.emulations import ec2_detailed_monitoring
from tests.unit.conftest import ACCOUNT_ID, REGION

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

AMI_ID = "ami-12c6146b"
LOG_GROUP = "payments-api"


def recommendation_for(resource_id: str, **parameters: Any) -> Recommendation:
    return Recommendation(
        customer_id="acme-corp",
        type=RecommendationType.FIX_CONFIG,
        account_id=ACCOUNT_ID,
        region=REGION,
        resource_id=resource_id,
        parameters=parameters,
        estimated_monthly_savings=12.5,
    )


@pytest.fixture
def ec2(aws: None) -> EC2Client:
    ec2_detailed_monitoring.patch_moto()  # moto has no MonitorInstances / UnmonitorInstances of its own
    return boto3.client("ec2", region_name=REGION)


@pytest.fixture
def logs(aws: None) -> Any:
    return boto3.client("logs", region_name=REGION)


@pytest.fixture
def s3(aws: None) -> Any:
    return boto3.client("s3", region_name=REGION)


@pytest.fixture
def executor(ec2: EC2Client) -> FixConfigExecutor:
    return FixConfigExecutor(AwsClients(REGION))


def launch(ec2: EC2Client, tags: dict[str, str] | None = None) -> str:
    tag_list: Any = [{"Key": k, "Value": v} for k, v in (tags or {"Name": "web-1"}).items()]
    instance = ec2.run_instances(
        ImageId=AMI_ID,
        InstanceType="t3.micro",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": tag_list}],
    )
    return instance["Instances"][0]["InstanceId"]


def retention(logs: Any, name: str = LOG_GROUP) -> int | None:
    groups = logs.describe_log_groups(logGroupNamePrefix=name)["logGroups"]
    days: int | None = next(g for g in groups if g["logGroupName"] == name).get("retentionInDays")
    return days


def instance_tags(ec2: EC2Client, instance_id: str) -> dict[str, str]:
    instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


def monitoring(ec2: EC2Client, instance_id: str) -> str:
    instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return str(instance["Monitoring"]["State"])


def run_to_completion(executor: FixConfigExecutor, recommendation: Recommendation) -> ConfigBackup:
    """backup → apply → verify, as the state machine calls them; returns the backup."""
    backup = executor.backup(recommendation, new_execution_id())
    assert executor.backup_ready(recommendation, backup)
    action = executor.apply(recommendation, backup)
    assert executor.apply_done(recommendation, action)
    verification = executor.verify(recommendation, action)
    assert verification.passed, verification.failures
    return backup


def roll_back(executor: FixConfigExecutor, recommendation: Recommendation, backup: ConfigBackup) -> None:
    rollback = executor.rollback(recommendation, backup, None)
    assert executor.rollback_done(recommendation, rollback)


# -- parameters -------------------------------------------------------------------------------------


def test_the_parameters_are_one_baseline_told_apart_by_setting() -> None:
    retention_baseline = FixConfigParameters.model_validate({"setting": "log_retention", "retention_in_days": 30})
    tags_baseline = FixConfigParameters.model_validate({"setting": "tags", "tags": {"cost-center": "cc-42"}})

    assert retention_baseline.root.setting == "log_retention"
    assert tags_baseline.root.setting == "tags"


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"setting": "log_retention", "retention_in_days": 31}, "accepts a retention of 1, 3, 5, 7, 14, 30"),
        ({"setting": "log_retention", "retention_in_days": 30, "extra": 1}, "Extra inputs are not permitted"),
        ({"setting": "tags", "tags": {"aws:createdBy": "me"}}, "'aws:', which AWS reserves"),
        ({"setting": "tags", "tags": {"AWS:owner": "me"}}, "'aws:', which AWS reserves"),
        ({"setting": "tags", "tags": {"k" * 129: "v"}}, "1 to 128 characters"),
        ({"setting": "tags", "tags": {"team": "v" * 257}}, "longer than 256 characters"),
        ({"setting": "tags", "tags": {"cost#center": "x"}}, "only letters, digits, spaces and _ . : / = + - @"),
        ({"setting": "tags", "tags": {}}, "at least 1 item"),
        ({"setting": "detailed_monitoring"}, "Field required"),
        ({"setting": "encryption"}, "does not match any of the expected tags"),
        ({}, "Unable to extract tag using discriminator 'setting'"),
    ],
    ids=[
        "retention-not-accepted-by-aws",
        "unknown-field",
        "aws-prefix",
        "aws-prefix-any-case",
        "key-too-long",
        "value-too-long",
        "invalid-character",
        "no-tags",
        "monitoring-without-value",
        "unknown-setting",
        "no-setting",
    ],
)
def test_invalid_baselines_are_refused_with_the_reason(parameters: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace(".", r"\.").replace("+", r"\+")):
        FixConfigParameters.model_validate(parameters)


def test_tag_keys_and_values_in_any_script_with_the_allowed_punctuation_are_accepted() -> None:
    tags = {"Kostenstelle": "Münch 42", "app/tier": "web=front+back@eu_1.0", "空": ""}

    baseline = FixConfigParameters.model_validate({"setting": "tags", "tags": tags})

    assert baseline.root.setting == "tags"


def test_every_retention_cloudwatch_logs_accepts_is_accepted() -> None:
    for days in LOG_RETENTION_DAYS:
        FixConfigParameters.model_validate({"setting": "log_retention", "retention_in_days": days})


def test_a_refused_baseline_is_a_validation_error_naming_the_field(executor: FixConfigExecutor, logs: Any) -> None:
    logs.create_log_group(logGroupName=LOG_GROUP)

    result = executor.validate(recommendation_for(LOG_GROUP, setting="log_retention", retention_in_days=10))

    assert not result.valid
    assert result.errors[0].startswith("invalid parameters for fix_config: log_retention.retention_in_days:")
    assert retention(logs) is None


# -- log retention ----------------------------------------------------------------------------------


def test_log_retention_is_set_and_a_rollback_makes_the_group_never_expire_again(
    executor: FixConfigExecutor, logs: Any
) -> None:
    # Given a log group whose events never expire
    logs.create_log_group(logGroupName=LOG_GROUP)
    recommendation = recommendation_for(LOG_GROUP, setting="log_retention", retention_in_days=30)

    # When the baseline is validated, planned and applied
    assert executor.validate(recommendation).valid
    plan = executor.plan(recommendation, new_execution_id())
    backup = run_to_completion(executor, recommendation)

    # Then "never expire" was recorded and the group now keeps 30 days
    assert plan.summary == f"Set the retention of CloudWatch Logs group {LOG_GROUP} from never expire to 30 days"
    assert plan.estimated_monthly_savings == 12.5
    assert "recommendation's own estimate" in plan.savings_basis
    assert executor.stored(backup)["previous"] == {"retention_in_days": None}
    assert retention(logs) == 30
    assert executor.expected_savings(recommendation, backup) == 12.5

    # and a rollback removes the retention policy again
    roll_back(executor, recommendation, backup)
    assert retention(logs) is None


def test_a_previous_retention_is_restored_exactly(executor: FixConfigExecutor, logs: Any) -> None:
    logs.create_log_group(logGroupName=LOG_GROUP)
    logs.put_retention_policy(logGroupName=LOG_GROUP, retentionInDays=3653)
    recommendation = recommendation_for(LOG_GROUP, setting="log_retention", retention_in_days=90)

    backup = run_to_completion(executor, recommendation)
    assert retention(logs) == 90
    roll_back(executor, recommendation, backup)

    assert retention(logs) == 3653


def test_a_log_group_is_also_found_by_its_arn(executor: FixConfigExecutor, logs: Any) -> None:
    # A resource_id may not start with "/", as /aws/lambda/… names do: the ARN names such a group.
    name = "/aws/lambda/payments"
    logs.create_log_group(logGroupName=name)
    arn = f"arn:aws:logs:{REGION}:{ACCOUNT_ID}:log-group:{name}"

    run_to_completion(executor, recommendation_for(arn, setting="log_retention", retention_in_days=14))

    assert retention(logs, name) == 14


def test_a_log_group_arn_of_another_region_is_refused(executor: FixConfigExecutor, logs: Any) -> None:
    logs.create_log_group(logGroupName=LOG_GROUP)  # the same name here must not be mistaken for it
    arn = f"arn:aws:logs:eu-west-1:{ACCOUNT_ID}:log-group:{LOG_GROUP}"

    result = executor.validate(recommendation_for(arn, setting="log_retention", retention_in_days=30))

    assert result.errors == [
        f"log group ARN {arn} is not in {REGION} of account {ACCOUNT_ID}, where the recommendation says the group is"
    ]


def test_an_already_compliant_log_group_is_refused(executor: FixConfigExecutor, logs: Any) -> None:
    logs.create_log_group(logGroupName=LOG_GROUP)
    logs.put_retention_policy(logGroupName=LOG_GROUP, retentionInDays=30)

    result = executor.validate(recommendation_for(LOG_GROUP, setting="log_retention", retention_in_days=30))

    assert not result.valid
    assert result.errors == [
        f"retention of CloudWatch Logs group {LOG_GROUP} already matches the baseline (30 days): nothing to change"
    ]


def test_an_unknown_log_group_is_refused(executor: FixConfigExecutor, logs: Any) -> None:
    logs.create_log_group(logGroupName=f"{LOG_GROUP}-other")  # a longer name with the same prefix

    result = executor.validate(recommendation_for(LOG_GROUP, setting="log_retention", retention_in_days=30))

    assert result.errors == [f"CloudWatch Logs group {LOG_GROUP} does not exist in {REGION}"]


def test_a_retried_apply_does_not_change_anything_twice(executor: FixConfigExecutor, logs: Any) -> None:
    logs.create_log_group(logGroupName=LOG_GROUP)
    recommendation = recommendation_for(LOG_GROUP, setting="log_retention", retention_in_days=7)
    backup = executor.backup(recommendation, new_execution_id())

    first = executor.apply(recommendation, backup)
    second = executor.apply(recommendation, backup)

    assert first.changed is True
    assert second.changed is False
    assert retention(logs) == 7


# -- detailed monitoring ----------------------------------------------------------------------------


def test_detailed_monitoring_is_turned_off_and_a_rollback_turns_it_on_again(
    ec2: EC2Client, executor: FixConfigExecutor
) -> None:
    # Given an instance with detailed monitoring on
    instance_id = launch(ec2)
    ec2.monitor_instances(InstanceIds=[instance_id])
    recommendation = recommendation_for(instance_id, setting="detailed_monitoring", detailed_monitoring=False)

    # When the baseline "off" is applied
    assert executor.validate(recommendation).valid
    plan = executor.plan(recommendation, new_execution_id())
    backup = run_to_completion(executor, recommendation)

    # Then it is off, "on" was recorded, and a rollback turns it on again
    assert "about $2.10 per instance-month" in plan.savings_basis
    assert executor.stored(backup)["previous"] == {"detailed_monitoring": True}
    assert monitoring(ec2, instance_id) == "disabled"
    roll_back(executor, recommendation, backup)
    assert monitoring(ec2, instance_id) == "enabled"


def test_monitoring_already_as_the_baseline_says_is_refused(ec2: EC2Client, executor: FixConfigExecutor) -> None:
    instance_id = launch(ec2)

    result = executor.validate(
        recommendation_for(instance_id, setting="detailed_monitoring", detailed_monitoring=False)
    )

    assert result.errors == [
        f"detailed monitoring of EC2 instance {instance_id} already matches the baseline (off): nothing to change"
    ]


def test_monitoring_of_something_other_than_an_instance_is_refused(executor: FixConfigExecutor) -> None:
    result = executor.validate(recommendation_for(LOG_GROUP, setting="detailed_monitoring", detailed_monitoring=True))

    assert result.errors == [f"detailed_monitoring applies to an EC2 instance id (i-…), not to {LOG_GROUP}"]


def test_monitoring_of_a_terminated_instance_is_refused(ec2: EC2Client, executor: FixConfigExecutor) -> None:
    instance_id = launch(ec2)
    ec2.terminate_instances(InstanceIds=[instance_id])

    result = executor.validate(recommendation_for(instance_id, setting="detailed_monitoring", detailed_monitoring=True))

    assert result.errors == [f"instance {instance_id} is 'terminated': its monitoring can no longer be changed"]


# -- tags -------------------------------------------------------------------------------------------


def test_required_tags_are_set_on_an_instance_and_a_rollback_restores_exactly_what_was_there(
    ec2: EC2Client, executor: FixConfigExecutor
) -> None:
    # Given an instance with a wrong cost-center, no owner, and an unrelated Name
    instance_id = launch(ec2, {"Name": "web-1", "cost-center": "unknown"})
    recommendation = recommendation_for(instance_id, setting="tags", tags={"cost-center": "cc-42", "owner": "payments"})

    # When the required tags are applied
    assert executor.validate(recommendation).valid
    plan = executor.plan(recommendation, new_execution_id())
    backup = run_to_completion(executor, recommendation)

    # Then they are set, saving nothing directly, and what was there is recorded (absent included)
    assert instance_tags(ec2, instance_id) == {"Name": "web-1", "cost-center": "cc-42", "owner": "payments"}
    assert executor.stored(backup)["previous"] == {"tags": {"cost-center": "unknown", "owner": None}}
    assert plan.estimated_monthly_savings == 0.0
    assert "cost attributable" in plan.savings_basis
    assert executor.expected_savings(recommendation, backup) == 0.0

    # and a rollback puts back the old value and removes the tag that was absent
    roll_back(executor, recommendation, backup)
    assert instance_tags(ec2, instance_id) == {"Name": "web-1", "cost-center": "unknown"}


def test_a_tag_that_had_an_empty_value_is_restored_empty_not_removed(
    ec2: EC2Client, executor: FixConfigExecutor
) -> None:
    instance_id = launch(ec2, {"owner": ""})
    recommendation = recommendation_for(instance_id, setting="tags", tags={"owner": "payments"})

    backup = run_to_completion(executor, recommendation)
    roll_back(executor, recommendation, backup)

    assert instance_tags(ec2, instance_id) == {"owner": ""}


def test_required_tags_on_an_ebs_volume(ec2: EC2Client, executor: FixConfigExecutor) -> None:
    volume_id = ec2.create_volume(AvailabilityZone=f"{REGION}a", Size=10)["VolumeId"]
    recommendation = recommendation_for(volume_id, setting="tags", tags={"cost-center": "cc-42"})

    backup = run_to_completion(executor, recommendation)
    tagged = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0].get("Tags", [])
    roll_back(executor, recommendation, backup)

    assert tagged == [{"Key": "cost-center", "Value": "cc-42"}]
    assert ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0].get("Tags", []) == []


def test_required_tags_on_an_s3_bucket_keep_its_other_tags(s3: Any, executor: FixConfigExecutor) -> None:
    # Given a bucket with one tag (PutBucketTagging replaces the whole set)
    s3.create_bucket(Bucket="acme-reports")
    s3.put_bucket_tagging(Bucket="acme-reports", Tagging={"TagSet": [{"Key": "team", "Value": "bi"}]})
    recommendation = recommendation_for("acme-reports", setting="tags", tags={"cost-center": "cc-42"})

    backup = run_to_completion(executor, recommendation)
    tagged = s3.get_bucket_tagging(Bucket="acme-reports")["TagSet"]
    roll_back(executor, recommendation, backup)

    assert sorted((t["Key"], t["Value"]) for t in tagged) == [("cost-center", "cc-42"), ("team", "bi")]
    assert s3.get_bucket_tagging(Bucket="acme-reports")["TagSet"] == [{"Key": "team", "Value": "bi"}]


def test_a_bucket_that_had_no_tags_has_none_again_after_a_rollback(s3: Any, executor: FixConfigExecutor) -> None:
    s3.create_bucket(Bucket="acme-raw")
    recommendation = recommendation_for("acme-raw", setting="tags", tags={"cost-center": "cc-42"})

    backup = run_to_completion(executor, recommendation)
    roll_back(executor, recommendation, backup)

    with pytest.raises(s3.exceptions.ClientError, match="NoSuchTagSet"):
        s3.get_bucket_tagging(Bucket="acme-raw")


def test_tags_already_in_place_are_refused(ec2: EC2Client, executor: FixConfigExecutor) -> None:
    instance_id = launch(ec2, {"cost-center": "cc-42"})

    result = executor.validate(recommendation_for(instance_id, setting="tags", tags={"cost-center": "cc-42"}))

    assert result.errors == [
        f"tags of EC2 instance {instance_id} already matches the baseline (cost-center='cc-42'): nothing to change"
    ]


@pytest.mark.parametrize(
    ("resource_id", "message"),
    [
        ("i-0123456789abcdef0", f"EC2 instance i-0123456789abcdef0 does not exist in {REGION}"),
        ("vol-0123456789abcdef0", f"EBS volume vol-0123456789abcdef0 does not exist in {REGION}"),
        ("no-such-bucket", f"S3 bucket no-such-bucket does not exist in {REGION}"),
        ("Not_A_Bucket", "Not_A_Bucket is neither an EC2 instance id (i-…), an EBS volume id (vol-…) nor an S3"),
    ],
    ids=["instance", "volume", "bucket", "not-a-resource-id"],
)
def test_tags_on_an_unknown_resource_are_refused(
    ec2: EC2Client, s3: Any, executor: FixConfigExecutor, resource_id: str, message: str
) -> None:
    result = executor.validate(recommendation_for(resource_id, setting="tags", tags={"cost-center": "cc-42"}))

    assert not result.valid
    assert result.errors[0].startswith(message)


def test_more_than_fifty_tags_in_all_are_refused(ec2: EC2Client, executor: FixConfigExecutor) -> None:
    instance_id = launch(ec2, {f"k{i}": "v" for i in range(49)})

    result = executor.validate(recommendation_for(instance_id, setting="tags", tags={"a": "1", "b": "2"}))

    assert result.errors == [f"EC2 instance {instance_id} would carry 51 tags, more than the 50 AWS allows"]
    assert len(instance_tags(ec2, instance_id)) == 49


# -- rollback without a record ----------------------------------------------------------------------


def test_a_rollback_before_anything_was_recorded_changes_nothing(executor: FixConfigExecutor, logs: Any) -> None:
    logs.create_log_group(logGroupName=LOG_GROUP)
    recommendation = recommendation_for(LOG_GROUP, setting="log_retention", retention_in_days=30)

    rollback = executor.rollback(recommendation, None, None)

    assert executor.stored(rollback) == {"resource_id": LOG_GROUP, "restored": False}
    assert executor.rollback_done(recommendation, rollback)
    assert retention(logs) is None
