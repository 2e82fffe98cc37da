"""The common pre-checks on the real state machines: refused before anything is touched, with the
reason; warnings carried to the approver; stale and denied requests refused at once (4xx)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from local_runtime.client import ApiClient, ApiError
from local_runtime.runtime import LocalRuntime
from tests.integration.conftest import backup_images, deployed_with, instance_state, terminate_recommendation


def prechecked(api: ApiClient, execution_id: str) -> dict[str, Any]:
    found = [e for e in api.logs(execution_id)["events"] if e["event_type"] == "prechecked"]
    assert len(found) == 1, found
    return dict(found[0]["detail"])


def test_an_instance_tagged_protected_is_refused_and_touches_nothing(
    api: ApiClient, ec2: Any, launch_instance: Callable[..., str], recommend: Callable[..., str]
) -> None:
    instance_id = launch_instance()
    ec2.create_tags(Resources=[instance_id], Tags=[{"Key": "cost-engine:protected", "Value": "owner says no"}])

    execution = api.run(recommend(instance_id), approver="lead@example.com")

    assert execution["status"] == "failed"
    assert "tagged cost-engine:protected=owner says no" in execution["error_message"]
    assert instance_state(ec2, instance_id) == "running"
    assert backup_images(ec2, execution["execution_id"]) == []
    detail = prechecked(api, execution["execution_id"])
    assert detail["passed"] is False
    assert detail["resource"] == {"kind": "EC2 instance", "id": instance_id}


def test_a_customers_deny_tags_refuse_a_production_instance_but_not_another_customers(
    api: ApiClient, ec2: Any, launch_instance: Callable[..., str], customer_id: str
) -> None:
    instance_id = launch_instance()
    ec2.create_tags(Resources=[instance_id], Tags=[{"Key": "env", "Value": "prod"}])
    other_customer = f"cust-{uuid.uuid4().hex[:10]}"

    with deployed_with(business_rules={"customers": {customer_id: {"deny_tags": {"env": ["prod", "staging"]}}}}):
        refused = api.run(
            api.register(terminate_recommendation(customer_id, instance_id))["recommendation_id"],
            approver="lead@example.com",
        )
        dry_run = api.run(
            api.register(terminate_recommendation(other_customer, instance_id))["recommendation_id"], dry_run=True
        )

    assert refused["status"] == "failed"
    assert f"business rules of customer {customer_id} deny (deny_tags)" in refused["error_message"]
    assert "env=prod" in refused["error_message"]
    assert instance_state(ec2, instance_id) == "running"
    assert dry_run["status"] == "completed"  # the same instance passes under the other customer's (no) rules


def test_a_customers_allow_tags_refuse_an_instance_without_them(
    api: ApiClient, ec2: Any, launch_instance: Callable[..., str], recommend: Callable[..., str], customer_id: str
) -> None:
    untagged, tagged = launch_instance(), launch_instance()
    ec2.create_tags(Resources=[tagged], Tags=[{"Key": "cost-engine:managed", "Value": "yes"}])

    with deployed_with(business_rules={"customers": {customer_id: {"allow_tags": {"cost-engine:managed": ["*"]}}}}):
        refused = api.run(recommend(untagged), dry_run=True)
        allowed = api.run(recommend(tagged), dry_run=True)

    assert refused["status"] == "failed"
    assert "has none of the tags the business rules" in refused["error_message"]
    assert allowed["status"] == "completed"


def test_a_denied_type_or_account_is_refused_at_once_with_403_and_nothing_is_created(
    api: ApiClient, launch_instance: Callable[..., str], recommend: Callable[..., str], customer_id: str
) -> None:
    recommendation_id = recommend(launch_instance())

    for rules, rule_name in (
        ({"customers": {customer_id: {"deny_types": ["terminate_instance"]}}}, "deny_types"),
        ({"default": {"allow_accounts": ["000000000000"]}}, "allow_accounts"),
    ):
        with deployed_with(business_rules=rules), pytest.raises(ApiError) as refused:
            api.execute(recommendation_id)

        assert refused.value.status_code == 403
        assert refused.value.body["error"] == "denied_by_business_rules"
        assert rule_name in refused.value.body["message"]
    assert api.list(customer_id)["items"] == []


def test_a_stale_recommendation_is_refused_with_409_and_nothing_is_created(
    api: ApiClient, launch_instance: Callable[..., str], recommend: Callable[..., str], customer_id: str
) -> None:
    from cost_engine.models import utc_now

    made = (utc_now() - timedelta(days=45)).isoformat()
    recommendation_id = recommend(launch_instance(), created_at=made)

    with pytest.raises(ApiError) as refused:
        api.execute(recommendation_id)

    assert refused.value.status_code == 409
    assert refused.value.body["error"] == "recommendation_stale"
    assert "made 45 days ago" in refused.value.body["message"]
    assert "get a fresh one" in refused.value.body["message"]
    assert api.list(customer_id)["items"] == []


def test_an_instance_of_a_cloudformation_stack_is_refused_termination_but_only_warned_for_a_schedule(
    runtime: LocalRuntime, api: ApiClient, ec2: Any, amazon_image_id: str, customer_id: str
) -> None:
    stack_name = f"app-{uuid.uuid4().hex[:8]}"
    template = {
        "Resources": {
            "Server": {
                "Type": "AWS::EC2::Instance",
                "Properties": {"ImageId": amazon_image_id, "InstanceType": "t3.small"},
            }
        }
    }
    cloudformation = runtime.client("cloudformation")
    cloudformation.create_stack(StackName=stack_name, TemplateBody=json.dumps(template))
    resources = cloudformation.describe_stack_resources(StackName=stack_name)["StackResources"]
    instance_id = resources[0]["PhysicalResourceId"]

    terminate = api.run(
        api.register(terminate_recommendation(customer_id, instance_id))["recommendation_id"],
        approver="lead@example.com",
    )
    schedule = api.run(
        api.register(
            terminate_recommendation(
                customer_id,
                instance_id,
                type="schedule_instance",
                parameters={
                    "timezone": "UTC",
                    "weekdays": ["MON", "TUE", "WED", "THU", "FRI"],
                    "start_time": "07:00",
                    "stop_time": "20:00",
                },
            )
        )["recommendation_id"],
        dry_run=True,
    )

    assert terminate["status"] == "failed"
    assert f"belongs to CloudFormation stack {stack_name}" in terminate["error_message"]
    assert "template" in terminate["error_message"]
    assert instance_state(ec2, instance_id) == "running"
    assert prechecked(api, terminate["execution_id"])["cloudformation_stack"] == stack_name
    assert schedule["status"] == "completed", schedule.get("error_message")
    assert any(f"CloudFormation stack {stack_name}" in w for w in schedule["validation"]["warnings"])


def test_an_instance_behind_a_load_balancer_is_refused_termination_with_the_target_group_named(
    runtime: LocalRuntime, api: ApiClient, ec2: Any, launch_instance: Callable[..., str], recommend: Callable[..., str]
) -> None:
    instance_id = launch_instance()
    vpc_id = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["VpcId"]
    elbv2 = runtime.client("elbv2")
    group_name = f"web-{uuid.uuid4().hex[:8]}"
    group = elbv2.create_target_group(Name=group_name, Protocol="HTTP", Port=80, VpcId=vpc_id, TargetType="instance")
    group_arn = group["TargetGroups"][0]["TargetGroupArn"]
    elbv2.register_targets(TargetGroupArn=group_arn, Targets=[{"Id": instance_id}])
    try:
        execution = api.run(recommend(instance_id), approver="lead@example.com")
    finally:
        elbv2.deregister_targets(TargetGroupArn=group_arn, Targets=[{"Id": instance_id}])
        elbv2.delete_target_group(TargetGroupArn=group_arn)

    assert execution["status"] == "failed"
    assert f"registered with target group {group_name}" in execution["error_message"]
    assert "deregister it first" in execution["error_message"]
    assert instance_state(ec2, instance_id) == "running"
    assert prechecked(api, execution["execution_id"])["load_balancers"] == [f"target group {group_name}"]


def test_passing_prechecks_are_recorded_with_what_was_looked_at(
    api: ApiClient, launch_instance: Callable[..., str], recommend: Callable[..., str]
) -> None:
    instance_id = launch_instance()

    execution = api.run(recommend(instance_id), dry_run=True)

    assert execution["status"] == "completed"
    detail = prechecked(api, execution["execution_id"])
    assert detail["passed"] is True
    assert detail["errors"] == []
    # The local runtime's emulated AWS enforces no IAM, and its functions run as no role; EC2's DryRun
    # answers there too.
    assert detail["permissions"].startswith("permissions not simulated")
    assert detail["dry_run_permitted"] == ["ec2:CreateImage", "ec2:TerminateInstances"]


def test_a_recommendation_for_another_account_is_refused_before_anything_is_touched(
    api: ApiClient, ec2: Any, launch_instance: Callable[..., str], recommend: Callable[..., str]
) -> None:
    instance_id = launch_instance()  # the same id exists here, but the recommendation is about another account's

    execution = api.run(recommend(instance_id, account_id="999999999999"), approver="lead@example.com")

    assert execution["status"] == "failed"
    assert "is for account 999999999999, but the engine acts in account" in execution["error_message"]
    assert instance_state(ec2, instance_id) == "running"
    assert backup_images(ec2, execution["execution_id"]) == []


def test_a_cursor_from_another_customers_listing_gets_400_and_shows_nothing_of_theirs(
    api: ApiClient, launch_instance: Callable[..., str], recommend: Callable[..., str], customer_id: str
) -> None:
    for _ in range(2):
        api.run(recommend(launch_instance()), dry_run=True)
    cursor = api.list(customer_id, limit=1)["next_cursor"]
    assert cursor

    response = api.request("GET", "/executions", params={"customer_id": "cust-someone-else", "cursor": cursor})

    assert response.status_code == 400
    assert "cursor belongs to another listing" in response.json()["message"]


def test_a_change_ec2_refuses_on_a_dry_run_is_refused_before_anything_is_touched(
    runtime: LocalRuntime, api: ApiClient, ec2: Any, launch_instance: Callable[..., str], recommend: Callable[..., str]
) -> None:
    instance_id = launch_instance()
    # EC2 answers the engine's DryRun of TerminateInstances as it does for a role without the permission
    # (or under an SCP that denies it).
    runtime.aws_requests.fail("ec2", "TerminateInstances", code="UnauthorizedOperation", status=403, dry_run=True)
    mark = runtime.aws_requests.mark()

    execution = api.run(recommend(instance_id), approver="lead@example.com")

    assert execution["status"] == "failed"
    assert "may not ec2:TerminateInstances on EC2 instance" in execution["error_message"]
    assert "UnauthorizedOperation, asked with DryRun" in execution["error_message"]
    assert instance_state(ec2, instance_id) == "running"
    assert backup_images(ec2, execution["execution_id"]) == []
    detail = prechecked(api, execution["execution_id"])
    assert detail["dry_run_permitted"] == ["ec2:CreateImage"]
    # The only TerminateInstances request AWS saw was the refused dry run.
    asked = [r for r in runtime.aws_requests.since(mark) if r.operation == "TerminateInstances"]
    assert [r.status for r in asked] == [403]
