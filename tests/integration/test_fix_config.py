"""fix_config end to end: the real state machine on the local runtime, driven through the API, with
the emulated CloudWatch Logs, EC2 and S3 checked afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from local_runtime.client import ApiClient, ApiError
from local_runtime.runtime import LocalRuntime
from tests.integration.conftest import DRY_RUN, step_events

ACTING_STEPS = [
    ("backup", "before"),
    ("backup", "after"),
    ("check_backup", "before"),
    ("act", "before"),
    ("act", "after"),
    ("check_action", "before"),
    ("verify", "before"),
    ("record", "before"),
]


@pytest.fixture
def logs(runtime: LocalRuntime) -> Any:
    return runtime.client("logs")


@pytest.fixture
def s3(runtime: LocalRuntime) -> Any:
    return runtime.client("s3")


@pytest.fixture
def log_group(logs: Any) -> str:
    name = f"payments-api-{uuid.uuid4().hex[:8]}"
    logs.create_log_group(logGroupName=name)
    return name


@pytest.fixture
def fix(recommend: Callable[..., str]) -> Callable[..., str]:
    """Registers a fix_config recommendation: fix(resource_id, setting=..., ...)."""

    def register(resource_id: str, **parameters: Any) -> str:
        return recommend(resource_id, type="fix_config", parameters=parameters, estimated_monthly_savings=8.0)

    return register


def run(api: ApiClient, recommendation_id: str, **options: Any) -> dict[str, Any]:
    return api.wait_for(api.execute(recommendation_id, **options)["execution_id"])


def retention(logs: Any, name: str) -> int | None:
    groups = logs.describe_log_groups(logGroupNamePrefix=name)["logGroups"]
    days: int | None = next(g for g in groups if g["logGroupName"] == name).get("retentionInDays")
    return days


def instance_tags(ec2: Any, instance_id: str) -> dict[str, str]:
    instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return {t["Key"]: t["Value"] for t in instance.get("Tags", [])}


def monitoring(ec2: Any, instance_id: str) -> str:
    instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return str(instance["Monitoring"]["State"])


def events(api: ApiClient, execution_id: str) -> list[str]:
    return [event["event_type"] for event in api.logs(execution_id)["events"]]


# -- log retention ----------------------------------------------------------------------------------


def test_dry_run_reports_the_plan_and_changes_nothing(
    api: ApiClient, logs: Any, log_group: str, fix: Callable[..., str]
) -> None:
    execution = run(api, fix(log_group, setting="log_retention", retention_in_days=30), dry_run=True)

    assert execution["status"] == "completed"
    plan = execution["plan"]
    assert plan["summary"] == f"Set the retention of CloudWatch Logs group {log_group} from never expire to 30 days"
    assert plan["rollback_plan"]["rollback_steps"] == [
        f"Set the retention of CloudWatch Logs group {log_group} back to exactly never expire"
    ]
    assert plan["estimated_monthly_savings"] == 8.0
    assert retention(logs, log_group) is None
    assert step_events(events(api, execution["execution_id"])) == DRY_RUN


def test_execution_sets_the_retention_and_records_that_it_never_expired(
    api: ApiClient, logs: Any, log_group: str, fix: Callable[..., str]
) -> None:
    execution = run(api, fix(log_group, setting="log_retention", retention_in_days=30), auto_approve=True)

    assert execution["status"] == "completed", execution["error_message"]
    assert retention(logs, log_group) == 30
    assert execution["backup"]["previous"] == {"retention_in_days": None}
    assert execution["verification"]["checks"] == [f"retention of CloudWatch Logs group {log_group} is 30 days"]
    assert execution["expected_savings"] == 8.0


@pytest.mark.parametrize(("step", "when"), ACTING_STEPS, ids=lambda value: str(value))
def test_a_failure_in_any_acting_step_restores_the_previous_retention_exactly(
    api: ApiClient, logs: Any, runtime: LocalRuntime, log_group: str, fix: Callable[..., str], step: str, when: str
) -> None:
    # Given a group keeping 10 years, and a step that will fail
    logs.put_retention_policy(logGroupName=log_group, retentionInDays=3653)
    runtime.faults.inject(step, when=when)

    execution = run(api, fix(log_group, setting="log_retention", retention_in_days=90), auto_approve=True)

    assert execution["status"] == "rolled_back"
    assert "InjectedFault" in execution["error_message"]
    assert retention(logs, log_group) == 3653


def test_manual_rollback_of_a_retention_makes_the_group_never_expire_again(
    api: ApiClient, logs: Any, log_group: str, fix: Callable[..., str]
) -> None:
    execution_id = run(api, fix(log_group, setting="log_retention", retention_in_days=14), auto_approve=True)[
        "execution_id"
    ]
    assert retention(logs, log_group) == 14

    api.rollback(execution_id)
    execution = api.wait_for(execution_id, frozenset({"rolled_back", "rollback_failed"}))

    assert execution["status"] == "rolled_back"
    assert retention(logs, log_group) is None


# -- detailed monitoring ----------------------------------------------------------------------------


def test_detailed_monitoring_is_turned_on_and_a_failure_turns_it_off_again(
    api: ApiClient,
    ec2: Any,
    runtime: LocalRuntime,
    launch_instance: Callable[..., str],
    fix: Callable[..., str],
) -> None:
    instance_id = launch_instance("t3.micro")
    recommendation_id = fix(instance_id, setting="detailed_monitoring", detailed_monitoring=True)

    completed = run(api, recommendation_id, auto_approve=True)
    assert completed["status"] == "completed", completed["error_message"]
    assert monitoring(ec2, instance_id) == "enabled"
    ec2.unmonitor_instances(InstanceIds=[instance_id])

    runtime.faults.inject("verify", when="before")
    failed = run(api, recommendation_id, auto_approve=True)

    assert failed["status"] == "rolled_back"
    assert monitoring(ec2, instance_id) == "disabled"


# -- tags -------------------------------------------------------------------------------------------


def test_required_tags_are_set_and_a_manual_rollback_restores_exactly_the_previous_tags(
    api: ApiClient, ec2: Any, launch_instance: Callable[..., str], fix: Callable[..., str]
) -> None:
    # Given an instance tagged Name=web, team=data, and a baseline that changes team and adds cost-center
    instance_id = launch_instance("t3.micro", name="web")
    recommendation_id = fix(instance_id, setting="tags", tags={"team": "payments", "cost-center": "cc-42"})

    # When it is executed
    execution = run(api, recommendation_id, auto_approve=True)

    # Then the tags are set, with no direct savings
    assert execution["status"] == "completed", execution["error_message"]
    assert instance_tags(ec2, instance_id) == {"Name": "web", "team": "payments", "cost-center": "cc-42"}
    assert execution["expected_savings"] == 0.0
    assert execution["backup"]["previous"] == {"tags": {"team": "data", "cost-center": None}}

    # When a rollback is asked for, then the old value is back and the absent tag is absent again
    api.rollback(execution["execution_id"])
    rolled_back = api.wait_for(execution["execution_id"], frozenset({"rolled_back", "rollback_failed"}))
    assert rolled_back["status"] == "rolled_back"
    assert instance_tags(ec2, instance_id) == {"Name": "web", "team": "data"}
    with pytest.raises(ApiError) as refused:
        api.rollback(execution["execution_id"])
    assert refused.value.status_code == 409


@pytest.mark.parametrize(("step", "when"), [("act", "after"), ("record", "before")], ids=lambda value: str(value))
def test_a_failure_after_tagging_a_bucket_restores_its_tags_exactly(
    api: ApiClient, s3: Any, runtime: LocalRuntime, fix: Callable[..., str], step: str, when: str
) -> None:
    bucket = f"acme-reports-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [{"Key": "team", "Value": "bi"}]})
    runtime.faults.inject(step, when=when)

    execution = run(api, fix(bucket, setting="tags", tags={"cost-center": "cc-42"}), auto_approve=True)

    assert execution["status"] == "rolled_back"
    assert s3.get_bucket_tagging(Bucket=bucket)["TagSet"] == [{"Key": "team", "Value": "bi"}]


# -- refusals -------------------------------------------------------------------------------------


def assert_refused(execution: dict[str, Any], message: str) -> None:
    assert execution["status"] == "failed"
    assert execution["validation"]["valid"] is False
    assert message in execution["error_message"]
    assert execution["backup"] is None


def test_an_unknown_log_group_is_refused(api: ApiClient, fix: Callable[..., str]) -> None:
    execution = run(api, fix("no-such-group", setting="log_retention", retention_in_days=30), auto_approve=True)

    assert_refused(execution, "CloudWatch Logs group no-such-group does not exist")


def test_a_retention_cloudwatch_logs_would_refuse_is_refused_when_registered_and_nothing_changes(
    api: ApiClient, logs: Any, log_group: str, fix: Callable[..., str]
) -> None:
    with pytest.raises(ApiError) as refused:
        fix(log_group, setting="log_retention", retention_in_days=45)

    assert refused.value.status_code == 422
    assert "CloudWatch Logs accepts a retention of 1, 3, 5, 7, 14, 30, 60, 90" in refused.value.body["message"]
    assert retention(logs, log_group) is None


def test_an_aws_tag_key_is_refused_when_registered_and_nothing_changes(
    api: ApiClient, ec2: Any, launch_instance: Callable[..., str], fix: Callable[..., str]
) -> None:
    instance_id = launch_instance("t3.micro", name="web")

    with pytest.raises(ApiError) as refused:
        fix(instance_id, setting="tags", tags={"aws:cost-center": "cc-42"})

    assert refused.value.status_code == 422
    assert "starts with 'aws:', which AWS reserves for its own tags" in refused.value.body["message"]
    assert instance_tags(ec2, instance_id) == {"Name": "web", "team": "data"}


def test_an_already_compliant_resource_is_refused_with_nothing_to_change(
    api: ApiClient, logs: Any, log_group: str, fix: Callable[..., str]
) -> None:
    logs.put_retention_policy(logGroupName=log_group, retentionInDays=30)

    execution = run(api, fix(log_group, setting="log_retention", retention_in_days=30), auto_approve=True)

    assert_refused(execution, "already matches the baseline (30 days): nothing to change")
    assert retention(logs, log_group) == 30
