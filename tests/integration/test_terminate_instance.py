"""terminate_instance end to end: the real state machine on the local runtime, driven through the API,
with the emulated EC2 checked afterwards."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from cost_engine.pricing import price_catalog
from local_runtime.client import ApiClient, ApiError
from local_runtime.runtime import LocalRuntime
from tests.integration.conftest import (
    APPROVED_BY_A_PERSON,
    AWAITING_A_PERSON,
    COMPLETED,
    DRY_RUN,
    ROLLED_BACK,
    backup_images,
    instance_state,
    restored_instances,
    step_events,
)


def _root_volume_gb(ec2: Any, instance_id: str) -> int:
    instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    volume_id = instance["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    return int(ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["Size"])


def test_dry_run_reports_the_plan_and_changes_nothing(
    api: ApiClient, ec2: Any, launch_instance: Callable[..., str], recommend: Callable[..., str]
) -> None:
    # Given a running idle instance with a recommendation to terminate it
    instance_id = launch_instance("m5.large")
    recommendation_id = recommend(instance_id)

    # When a dry run is executed
    started = api.execute(recommendation_id, dry_run=True)
    execution = api.wait_for(started["execution_id"])

    # Then it completes with a plan, and the instance and the account are untouched
    assert execution["status"] == "completed"
    assert execution["dry_run"] is True
    plan = execution["plan"]
    assert any(instance_id in action and "Terminate" in action for action in plan["actions"])
    assert plan["rollback_plan"]["rollback_steps"]
    catalog = price_catalog()
    volume_gb = _root_volume_gb(ec2, instance_id)
    expected = round(
        (catalog.instance_monthly("m5.large") or 0)
        + (catalog.volume_monthly("gp2", volume_gb) or 0)
        - catalog.snapshot_monthly(volume_gb),
        2,
    )
    assert plan["estimated_monthly_savings"] == pytest.approx(expected)
    assert instance_state(ec2, instance_id) == "running"
    assert backup_images(ec2, execution["execution_id"]) == []
    assert execution["rollback_available"] is False
    events = [event["event_type"] for event in api.logs(execution["execution_id"])["events"]]
    assert step_events(events) == DRY_RUN


def test_a_dry_run_cannot_be_rolled_back(
    api: ApiClient, launch_instance: Callable[..., str], recommend: Callable[..., str]
) -> None:
    execution = api.wait_for(api.execute(recommend(launch_instance()), dry_run=True)["execution_id"])

    with pytest.raises(ApiError) as refused:
        api.rollback(execution["execution_id"])

    assert refused.value.status_code == 409
    assert "dry run" in refused.value.body["message"]


def test_execution_terminates_the_instance_and_keeps_an_ami_backup(
    api: ApiClient, ec2: Any, launch_instance: Callable[..., str], recommend: Callable[..., str]
) -> None:
    # Given a running instance and its recommendation
    instance_id = launch_instance("m5.large", name="batch-7")
    recommendation_id = recommend(instance_id)

    # When it is executed and a person approves it through the API
    execution = api.run(recommendation_id, approver="lead@example.com", comment="idle for a month")

    # Then the instance is terminated, an AMI of it is available, and the record says so
    assert execution["status"] == "completed", execution["error_message"]
    assert execution["success"] is True
    assert execution["auto_approved"] is False
    assert execution["approval"]["approver_name"] == "lead@example.com"
    assert execution["approval"]["decided_via"] == "api"
    assert instance_state(ec2, instance_id) == "terminated"
    images = backup_images(ec2, execution["execution_id"])
    assert [image["State"] for image in images] == ["available"]
    assert execution["backup"]["image_id"] == images[0]["ImageId"]
    launch_config = execution["backup"]["launch_config"]
    assert launch_config["instance_type"] == "m5.large"
    assert launch_config["tags"]["Name"] == "batch-7"
    assert execution["rollback_available"] is True
    assert execution["expected_savings"] == pytest.approx(execution["plan"]["estimated_monthly_savings"])
    assert execution["verification"]["passed"] is True
    assert execution["result"]["success"] is True
    assert execution["result"]["expected_savings"] == execution["expected_savings"]
    events = api.logs(execution["execution_id"])["events"]
    assert step_events([event["event_type"] for event in events]) == [*APPROVED_BY_A_PERSON, *COMPLETED]
    [approved] = [event for event in events if event["event_type"] == "approved"]
    # The recorded approver is the caller (the default key); the body's name is shown beside it.
    assert approved["actor"] == "approver:apikey:local-dev"
    assert approved["detail"]["name"] == "lead@example.com"
    assert approved["detail"]["comment"] == "idle for a month"
    assert approved["detail"]["via"] == "api"


@pytest.mark.parametrize(
    ("step", "when"),
    [("verify", "before"), ("act", "after"), ("check_action", "before"), ("record", "before")],
    ids=["verify-crashes", "act-crashes-after-terminating", "polling-crashes", "record-crashes"],
)
def test_a_failure_after_the_backup_rolls_back_and_the_instance_runs_again(
    api: ApiClient,
    ec2: Any,
    runtime: LocalRuntime,
    launch_instance: Callable[..., str],
    recommend: Callable[..., str],
    network: dict[str, str],
    step: str,
    when: str,
) -> None:
    # Given an instance, and a step that will fail once the instance has been backed up
    instance_id = launch_instance("t3.large", name="reporting")
    recommendation_id = recommend(instance_id)
    runtime.faults.inject(step, when=when)

    # When it is executed and approved
    execution = api.run(recommendation_id, approver="lead@example.com")

    # Then the execution rolled back by itself and says why
    assert execution["status"] == "rolled_back"
    assert execution["success"] is False
    assert execution["rollback_executed"] is True
    assert "InjectedFault" in execution["error_message"]
    # and an instance with the original configuration runs again, relaunched from the backup AMI
    restored = restored_instances(ec2, execution["execution_id"])
    assert len(restored) == 1
    instance = restored[0]
    assert instance["State"]["Name"] == "running"
    assert instance["ImageId"] == execution["backup"]["image_id"]
    assert instance["InstanceType"] == "t3.large"
    assert instance["SubnetId"] == network["subnet_id"]
    assert [g["GroupId"] for g in instance["SecurityGroups"]] == [network["security_group_id"]]
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert tags["Name"] == "reporting"
    assert tags["cost-engine:source-instance-id"] == instance_id
    events = [event["event_type"] for event in api.logs(execution["execution_id"])["events"]]
    assert step_events(events)[-3:] == ROLLED_BACK[-3:]
    assert "rollback_started" in events


def test_a_failure_before_terminating_leaves_the_original_instance_running(
    api: ApiClient, ec2: Any, runtime: LocalRuntime, launch_instance: Callable[..., str], recommend: Callable[..., str]
) -> None:
    # Given the terminate step fails before it acts
    instance_id = launch_instance()
    runtime.faults.inject("act", when="before")

    execution = api.run(recommend(instance_id), approver="lead@example.com")

    # Then nothing needed relaunching: the original is still running
    assert execution["status"] == "rolled_back"
    assert execution["rollback"]["relaunched"] is False
    assert instance_state(ec2, instance_id) == "running"
    assert restored_instances(ec2, execution["execution_id"]) == []


def test_manual_rollback_restores_a_completed_execution(
    api: ApiClient, ec2: Any, launch_instance: Callable[..., str], recommend: Callable[..., str]
) -> None:
    # Given a completed termination
    instance_id = launch_instance("m5.large", name="old-api")
    execution_id = api.run(recommend(instance_id), approver="lead@example.com")["execution_id"]
    assert instance_state(ec2, instance_id) == "terminated"

    # When a rollback is asked for
    accepted = api.rollback(execution_id)
    execution = api.wait_for(execution_id, frozenset({"rolled_back", "rollback_failed"}))

    # Then the instance is relaunched from the backup and the execution records it
    assert accepted["status"] == "rolling_back"
    assert execution["status"] == "rolled_back"
    assert execution["success"] is True  # the execution itself had succeeded
    assert execution["rollback_executed"] is True
    assert execution["rollback_available"] is False
    restored = restored_instances(ec2, execution_id)
    assert [(i["InstanceType"], i["State"]["Name"]) for i in restored] == [("m5.large", "running")]
    assert execution["rollback"]["instance_id"] == restored[0]["InstanceId"]
    assert execution["rollback_result"]["success"] is True
    assert execution["rollback_result"]["restored"]["instance_id"] == restored[0]["InstanceId"]

    # and a second rollback is refused: there is nothing left to undo
    with pytest.raises(ApiError) as refused:
        api.rollback(execution_id)
    assert refused.value.status_code == 409


def test_validation_refuses_a_protected_instance_and_touches_nothing(
    api: ApiClient, ec2: Any, launch_instance: Callable[..., str], recommend: Callable[..., str]
) -> None:
    instance_id = launch_instance()
    ec2.modify_instance_attribute(InstanceId=instance_id, DisableApiTermination={"Value": True})

    execution = api.run(recommend(instance_id), approver="lead@example.com")

    assert execution["status"] == "failed"
    assert "termination protection" in execution["error_message"]
    assert execution["validation"]["valid"] is False
    assert instance_state(ec2, instance_id) == "running"
    assert backup_images(ec2, execution["execution_id"]) == []


def test_validation_refuses_an_instance_that_does_not_exist(api: ApiClient, recommend: Callable[..., str]) -> None:
    execution = api.run(recommend("i-0123456789abcdef0"), approver="lead@example.com")

    assert execution["status"] == "failed"
    assert "does not exist" in execution["error_message"]


def test_without_auto_approve_the_execution_waits_for_a_person_and_then_acts(
    api: ApiClient, ec2: Any, launch_instance: Callable[..., str], recommend: Callable[..., str]
) -> None:
    instance_id = launch_instance()
    execution_id = api.execute(recommend(instance_id))["execution_id"]

    waiting = api.wait_for(execution_id, frozenset({"awaiting_approval", "failed"}))
    assert waiting["status"] == "awaiting_approval"
    assert waiting["pending_approval"]["deadline"]
    assert instance_state(ec2, instance_id) == "running"
    assert "task_token" not in str(waiting)
    assert "approval_task_token" not in waiting

    api.approve(execution_id, "lead@example.com", "agreed")
    execution = api.wait_for(execution_id)

    assert execution["status"] == "completed"
    assert execution["approval"]["approver_name"] == "lead@example.com"
    assert execution["approval"]["decided_via"] == "api"
    assert execution["auto_approved"] is False
    assert execution["policy"]["auto_approve"] is False
    assert "auto_approve was not requested" in execution["policy"]["reason"]
    assert instance_state(ec2, instance_id) == "terminated"


def test_auto_approve_on_terminate_instance_waits_for_a_person_and_records_the_policy_reason(
    api: ApiClient, ec2: Any, launch_instance: Callable[..., str], recommend: Callable[..., str]
) -> None:
    # Given a running instance
    instance_id = launch_instance()

    # When its termination is executed with auto_approve
    execution_id = api.execute(recommend(instance_id), auto_approve=True)["execution_id"]

    # Then the policy holds it for a person: nothing is backed up or terminated, and it says why
    waiting = api.wait_for(execution_id, frozenset({"awaiting_approval", "failed", "completed"}))
    assert waiting["status"] == "awaiting_approval"
    assert waiting["auto_approve_requested"] is True
    assert waiting["auto_approved"] is False
    policy = waiting["policy"]
    assert policy["risk_level"] == "high"
    assert policy["auto_approve"] is False
    assert "terminate_instance cannot be fully undone" in policy["reason"]
    assert "a person must approve, whatever auto_approve says" in policy["reason"]
    # (the type alone decides: the savings are well under the policy's threshold)
    assert waiting["plan"]["estimated_monthly_savings"] < 1000
    assert "savings" not in policy["reason"]
    assert waiting["approval"]["risk_level"] == "high"
    assert waiting["approval"]["reason"] == policy["reason"]
    assert instance_state(ec2, instance_id) == "running"
    assert backup_images(ec2, execution_id) == []
    events = api.logs(execution_id)["events"]
    assert step_events([event["event_type"] for event in events]) == AWAITING_A_PERSON
    [decided] = [event for event in events if event["event_type"] == "approval_policy_decided"]
    assert decided["detail"] == policy

    # When a person approves it
    api.approve(execution_id, "lead@example.com", "checked with the team")
    execution = api.wait_for(execution_id)

    # Then it goes ahead on their word, not the request's
    assert execution["status"] == "completed", execution["error_message"]
    assert execution["auto_approved"] is False
    assert execution["approval"]["approver_name"] == "lead@example.com"
    assert execution["approval"]["decided_via"] == "api"
    assert instance_state(ec2, instance_id) == "terminated"


def test_rejection_ends_the_execution_and_changes_nothing(
    api: ApiClient, ec2: Any, launch_instance: Callable[..., str], recommend: Callable[..., str]
) -> None:
    instance_id = launch_instance()
    execution_id = api.execute(recommend(instance_id))["execution_id"]
    api.wait_for(execution_id, frozenset({"awaiting_approval"}))

    api.reject(execution_id, "lead@example.com", "still needed by the team")
    execution = api.wait_for(execution_id)

    assert execution["status"] == "rejected"
    assert "still needed" in execution["error_message"]
    assert instance_state(ec2, instance_id) == "running"
    assert backup_images(ec2, execution_id) == []


def test_a_second_conflicting_decision_is_refused(
    api: ApiClient, ec2: Any, launch_instance: Callable[..., str], recommend: Callable[..., str]
) -> None:
    instance_id = launch_instance()
    execution_id = api.execute(recommend(instance_id))["execution_id"]
    api.wait_for(execution_id, frozenset({"awaiting_approval"}))
    api.approve(execution_id, "first@example.com")

    with pytest.raises(ApiError) as refused:
        api.reject(execution_id, "second@example.com")

    assert refused.value.status_code == 409
    execution = api.wait_for(execution_id)
    assert execution["status"] == "completed"
    assert execution["approval"]["approver_name"] == "first@example.com"


def test_cancel_while_awaiting_approval_stops_it_before_anything_changes(
    api: ApiClient, ec2: Any, launch_instance: Callable[..., str], recommend: Callable[..., str]
) -> None:
    instance_id = launch_instance()
    execution_id = api.execute(recommend(instance_id))["execution_id"]
    api.wait_for(execution_id, frozenset({"awaiting_approval"}))

    cancelled = api.cancel(execution_id)

    assert cancelled["status"] == "cancelled"
    with pytest.raises(ApiError) as refused:
        api.approve(execution_id, "late@example.com")
    assert refused.value.status_code == 409
    assert instance_state(ec2, instance_id) == "running"
    assert api.status(execution_id)["status"] == "cancelled"


def test_executions_are_listed_by_customer_newest_first_and_filtered_by_status(
    api: ApiClient, launch_instance: Callable[..., str], recommend: Callable[..., str], customer_id: str
) -> None:
    recommendation_id = recommend(launch_instance())
    ids = [api.wait_for(api.execute(recommendation_id, dry_run=True)["execution_id"])["execution_id"] for _ in range(3)]

    first_page = api.list(customer_id, limit=2)
    second_page = api.list(customer_id, limit=2, cursor=first_page["next_cursor"])

    listed = [e["execution_id"] for e in first_page["items"] + second_page["items"]]
    assert listed == list(reversed(ids))
    assert second_page["next_cursor"] is None
    assert len(api.list(customer_id, status="completed")["items"]) == 3
    assert api.list(customer_id, status="failed")["items"] == []


def test_a_transient_error_is_retried_and_the_execution_still_completes(
    api: ApiClient, ec2: Any, runtime: LocalRuntime, launch_instance: Callable[..., str], recommend: Callable[..., str]
) -> None:
    # Given the terminate step fails twice with an error worth retrying (as on throttling)
    instance_id = launch_instance()
    fault = runtime.faults.inject("act", when="before", times=2, error_type="TransientError")

    execution = api.run(recommend(instance_id), approver="lead@example.com")

    # Then the state machine retried it with backoff and the execution completed once
    assert fault.hits == 2
    assert execution["status"] == "completed"
    assert instance_state(ec2, instance_id) == "terminated"
    events = [event["event_type"] for event in api.logs(execution["execution_id"])["events"]]
    assert events.count("action_started") == 1


def test_a_recommendation_for_another_account_is_refused_and_nothing_is_touched(
    api: ApiClient, ec2: Any, launch_instance: Callable[..., str], recommend: Callable[..., str]
) -> None:
    instance_id = launch_instance()

    execution = api.run(recommend(instance_id, account_id="210987654321"), approver="lead@example.com")

    assert execution["status"] == "failed"
    assert "account 210987654321" in execution["error_message"]
    assert instance_state(ec2, instance_id) == "running"
