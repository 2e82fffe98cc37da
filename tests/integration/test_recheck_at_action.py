"""Safety judged at the moment of action, not of the request, on the real state machines.

An execution can wait days for its approval. Whatever the pre-checks and a type's validation refuse,
if it comes true while the execution waits (the resource protected, put behind a load balancer or in
an Auto Scaling group, a rule changed, the permission gone), the execution ends `failed` when it is
approved, with the reason and with nothing changed; an approval holds for the plan it was given for.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from local_runtime.client import ApiClient, ApiError
from local_runtime.runtime import ACCOUNT_ID, LocalRuntime
from tests.integration.conftest import (
    backup_images,
    deployed_with,
    instance_state,
    restored_instances,
    terminate_recommendation,
)

APPROVER = "lead@example.com"
OFFICE_HOURS: dict[str, Any] = {
    "timezone": "UTC",
    "weekdays": ["MON", "TUE", "WED", "THU", "FRI"],
    "start_time": "08:00",
    "stop_time": "19:00",
}
PROTECTED = {"Key": "cost-engine:protected", "Value": "owner said no while it waited"}


def changing_calls(api: ApiClient, execution_id: str) -> list[str]:
    """Every request the execution sent to AWS that changes something (its audit trail's aws_call)."""
    return [
        f"{e['detail']['service']}:{e['detail']['operation']}"
        for e in api.logs(execution_id)["events"]
        if e["event_type"] == "aws_call"
    ]


def rechecks(api: ApiClient, execution_id: str) -> list[dict[str, Any]]:
    return [dict(e["detail"]) for e in api.logs(execution_id)["events"] if e["event_type"] == "rechecked"]


def awaiting(api: ApiClient, recommendation_id: str) -> str:
    execution_id = str(api.execute(recommendation_id)["execution_id"])
    waiting = api.wait_for(execution_id, frozenset({"awaiting_approval", "failed", "completed"}))
    assert waiting["status"] == "awaiting_approval", waiting.get("error_message")
    return execution_id


def approved_and_ended(api: ApiClient, execution_id: str) -> dict[str, Any]:
    api.approve(execution_id, APPROVER)
    return api.wait_for(execution_id, timeout=90)


# -- every type: a change while it waits for approval refuses it before anything is touched ------------


@dataclass
class Case:
    """One type's resource and how it is protected while the execution waits."""

    recommendation: dict[str, Any]
    protect: Callable[[], None]
    # What the resource looks like, read before and after: "nothing was touched" is checked on it.
    look: Callable[[], Any]
    unprotect: Callable[[], Any] = lambda: None


CaseMaker = Callable[[str], Case]


@pytest.fixture
def cases(
    runtime: LocalRuntime, ec2: Any, launch_instance: Callable[..., str], network: dict[str, str]
) -> dict[str, CaseMaker]:
    rds, s3, logs = runtime.client("rds"), runtime.client("s3"), runtime.client("logs")

    def body(customer_id: str, type_: str, resource_id: str, **parameters: Any) -> dict[str, Any]:
        return terminate_recommendation(customer_id, resource_id, type=type_, parameters=parameters)

    def instance(type_: str, instance_type: str = "m5.large", **parameters: Any) -> CaseMaker:
        def make(customer_id: str) -> Case:
            instance_id = launch_instance(instance_type)
            return Case(
                body(customer_id, type_, instance_id, **parameters),
                lambda: ec2.create_tags(Resources=[instance_id], Tags=[PROTECTED]),
                lambda: (
                    ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["InstanceType"]
                    + "/"
                    + instance_state(ec2, instance_id)
                ),
            )

        return make

    def volume(type_: str, volume_type: str, **parameters: Any) -> CaseMaker:
        def make(customer_id: str) -> Case:
            volume_id = ec2.create_volume(AvailabilityZone="us-east-1a", Size=100, VolumeType=volume_type)["VolumeId"]
            return Case(
                body(customer_id, type_, volume_id, **parameters),
                lambda: ec2.create_tags(Resources=[volume_id], Tags=[PROTECTED]),
                lambda: {(v["State"], v["VolumeType"]) for v in ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"]},
            )

        return make

    def database(customer_id: str) -> Case:
        identifier = f"db-{uuid.uuid4().hex[:8]}"
        created = rds.create_db_instance(
            DBInstanceIdentifier=identifier,
            DBInstanceClass="db.m5.xlarge",
            Engine="postgres",
            MasterUsername="app",
            MasterUserPassword="test-only-password",
            AllocatedStorage=100,
        )["DBInstance"]
        return Case(
            body(customer_id, "rightsize_database", identifier, target_instance_class="db.m5.large"),
            lambda: rds.add_tags_to_resource(ResourceName=created["DBInstanceArn"], Tags=[PROTECTED]),
            lambda: [
                (d["DBInstanceClass"], d["DBInstanceStatus"])
                for d in rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"]
            ],
        )

    def bucket(customer_id: str) -> Case:
        name = f"logs-{uuid.uuid4().hex[:10]}"
        s3.create_bucket(Bucket=name)

        def lifecycle() -> Any:
            try:
                return s3.get_bucket_lifecycle_configuration(Bucket=name)["Rules"]
            except s3.exceptions.ClientError:
                return None

        return Case(
            body(
                customer_id,
                "optimize_storage",
                name,
                prefix="logs/",
                transitions=[{"days": 30, "storage_class": "STANDARD_IA"}],
            ),
            lambda: s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": [PROTECTED]}),
            lifecycle,
        )

    def log_group(customer_id: str) -> Case:
        name = f"app-{uuid.uuid4().hex[:10]}"
        logs.create_log_group(logGroupName=name)
        return Case(
            body(customer_id, "fix_config", name, setting="log_retention", retention_in_days=30),
            lambda: logs.tag_log_group(logGroupName=name, tags={PROTECTED["Key"]: PROTECTED["Value"]}),
            lambda: [g.get("retentionInDays") for g in logs.describe_log_groups(logGroupNamePrefix=name)["logGroups"]],
        )

    def reserved_instances(customer_id: str) -> Case:
        # A purchase changes no existing resource: what changes while it waits is the customer's rules.
        rules = deployed_with(
            business_rules={"customers": {customer_id: {"deny_types": ["purchase_reserved_instances"]}}}
        )
        return Case(
            body(
                customer_id,
                "purchase_reserved_instances",
                "m5.large",
                instance_type="m5.large",
                product_description="Linux/UNIX",
                tenancy="default",
                term="1yr",
                offering_type="No Upfront",
                instance_count=1,
            ),
            rules.__enter__,
            lambda: len(ec2.describe_reserved_instances()["ReservedInstances"]),
            lambda: rules.__exit__(None, None, None),
        )

    return {
        "terminate_instance": instance("terminate_instance"),
        "delete_volume": volume("delete_volume", "gp3"),
        "schedule_instance": instance("schedule_instance", **OFFICE_HOURS),
        "rightsize_instance": instance("rightsize_instance", "m5.2xlarge", target_instance_type="m5.large"),
        "rightsize_database": database,
        "migrate_to_spot": instance("migrate_to_spot"),
        "purchase_reserved_instances": reserved_instances,
        "enable_autoscaling": instance(
            "enable_autoscaling",
            min_size=1,
            max_size=2,
            desired_capacity=1,
            target_tracking={"metric": "ASGAverageCPUUtilization", "target_value": 50.0},
        ),
        "optimize_storage": bucket,
        "fix_config": log_group,
    }


@pytest.mark.parametrize(
    "recommendation_type",
    [
        "terminate_instance",
        "delete_volume",
        "schedule_instance",
        "rightsize_instance",
        "rightsize_database",
        "migrate_to_spot",
        "purchase_reserved_instances",
        "enable_autoscaling",
        "optimize_storage",
        "fix_config",
    ],
)
def test_a_resource_protected_while_waiting_for_approval_is_refused_at_approval_and_untouched(
    recommendation_type: str, api: ApiClient, cases: dict[str, CaseMaker], customer_id: str
) -> None:
    # Given an execution of this type waiting for a person, its pre-checks passed at the request
    case = cases[recommendation_type](customer_id)
    execution_id = awaiting(api, api.register(case.recommendation)["recommendation_id"])
    before = case.look()

    # When the resource is protected (the RI purchase: the type denied) and then the change approved
    case.protect()
    try:
        ended = approved_and_ended(api, execution_id)
    finally:
        case.unprotect()

    # Then it ends failed with the reason, and nothing was changed: not the resource, no AWS change at all
    assert ended["status"] == "failed", ended
    assert "refused before the backup" in ended["error_message"]
    assert case.look() == before
    assert changing_calls(api, execution_id) == []
    (recheck,) = rechecks(api, execution_id)
    assert recheck["passed"] is False
    assert recheck["moment"] == "before the backup"


# -- every refusal the pre-checks know, coming true while a termination waits -------------------------


def _target_group(runtime: LocalRuntime, ec2: Any, instance_id: str) -> Callable[[], Any]:
    vpc_id = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["VpcId"]
    elbv2 = runtime.client("elbv2")
    name = f"web-{uuid.uuid4().hex[:8]}"
    group_arn = elbv2.create_target_group(Name=name, Protocol="HTTP", Port=80, VpcId=vpc_id, TargetType="instance")[
        "TargetGroups"
    ][0]["TargetGroupArn"]
    elbv2.register_targets(TargetGroupArn=group_arn, Targets=[{"Id": instance_id}])

    def undo() -> None:
        elbv2.deregister_targets(TargetGroupArn=group_arn, Targets=[{"Id": instance_id}])
        elbv2.delete_target_group(TargetGroupArn=group_arn)

    return undo


def _auto_scaling_group(runtime: LocalRuntime, ec2: Any, instance_id: str, subnet_id: str) -> Callable[[], Any]:
    image_id = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["ImageId"]
    name = f"adopted-{uuid.uuid4().hex[:8]}"
    ec2.create_launch_template(LaunchTemplateName=name, LaunchTemplateData={"ImageId": image_id})
    autoscaling = runtime.client("autoscaling")
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName=name,
        LaunchTemplate={"LaunchTemplateName": name, "Version": "$Latest"},
        MinSize=0,
        MaxSize=2,
        DesiredCapacity=0,
        VPCZoneIdentifier=subnet_id,
    )
    autoscaling.attach_instances(InstanceIds=[instance_id], AutoScalingGroupName=name)
    return lambda: None


REFUSALS: dict[str, tuple[Callable[..., Any], str]] = {
    # name: (what happens while the execution waits, what the refusal says)
    "protected tag": (
        lambda c: c.ec2.create_tags(Resources=[c.instance_id], Tags=[PROTECTED]),
        "tagged cost-engine:protected",
    ),
    "deny_tags rule": (
        lambda c: c.rules({"deny_tags": {"env": ["prod"]}}, tag={"Key": "env", "Value": "prod"}),
        "deny (deny_tags)",
    ),
    "allow_tags rule": (lambda c: c.rules({"allow_tags": {"cost-engine:managed": ["*"]}}), "has none of the tags"),
    "denied type": (lambda c: c.rules({"deny_types": ["terminate_instance"]}), "deny terminate_instance (deny_types)"),
    "denied account": (
        lambda c: c.rules({"deny_accounts": [ACCOUNT_ID]}),
        f"deny changes in account {ACCOUNT_ID} (deny_accounts)",
    ),
    "stale now": (lambda c: c.deploy(max_recommendation_age_days=5), "the engine acts only on recommendations from"),
    "cloudformation stack": (
        lambda c: c.ec2.create_tags(
            Resources=[c.instance_id], Tags=[{"Key": "aws:cloudformation:stack-name", "Value": "adopted-stack"}]
        ),
        "belongs to CloudFormation stack adopted-stack",
    ),
    "load balancer target": (
        lambda c: c.undo.append(_target_group(c.runtime, c.ec2, c.instance_id)),
        "deregister it first",
    ),
    "auto scaling group": (
        lambda c: c.undo.append(_auto_scaling_group(c.runtime, c.ec2, c.instance_id, c.subnet_id)),
        "Auto Scaling group",
    ),
    "permission gone": (
        lambda c: c.runtime.aws_requests.fail(
            "ec2", "TerminateInstances", code="UnauthorizedOperation", status=403, dry_run=True
        ),
        "may not ec2:TerminateInstances",
    ),
}


@dataclass
class Waiting:
    """A termination waiting for its approval, and ways to change its world meanwhile."""

    runtime: LocalRuntime
    ec2: Any
    instance_id: str
    subnet_id: str
    customer_id: str
    undo: list[Callable[[], Any]]

    def deploy(self, **settings: Any) -> None:
        changed = deployed_with(**settings)
        changed.__enter__()
        self.undo.append(lambda: changed.__exit__(None, None, None))

    def rules(self, rules: dict[str, Any], tag: dict[str, str] | None = None) -> None:
        if tag:
            self.ec2.create_tags(Resources=[self.instance_id], Tags=[tag])
        self.deploy(business_rules={"customers": {self.customer_id: rules}})


@pytest.mark.parametrize("refusal", list(REFUSALS))
def test_every_precheck_refusal_that_comes_true_while_waiting_refuses_the_approved_termination(
    refusal: str,
    runtime: LocalRuntime,
    api: ApiClient,
    ec2: Any,
    launch_instance: Callable[..., str],
    network: dict[str, str],
    customer_id: str,
) -> None:
    from cost_engine.models import utc_now

    # Given a termination (of a ten-day-old recommendation) waiting for a person, every check passed
    instance_id = launch_instance()
    made = (utc_now() - timedelta(days=10)).isoformat()
    recommendation = terminate_recommendation(customer_id, instance_id, created_at=made)
    execution_id = awaiting(api, api.register(recommendation)["recommendation_id"])
    world = Waiting(runtime, ec2, instance_id, network["subnet_id"], customer_id, [])
    change, reason = REFUSALS[refusal]

    # When what the pre-checks refuse comes true, and then a person approves
    try:
        change(world)
        ended = approved_and_ended(api, execution_id)
    finally:
        for undo in reversed(world.undo):
            undo()

    # Then the execution fails with that reason, and the instance was not touched: no image, no change
    assert ended["status"] == "failed", ended
    assert reason in ended["error_message"]
    assert "refused before the backup" in ended["error_message"]
    assert instance_state(ec2, instance_id) == "running"
    assert backup_images(ec2, execution_id) == []
    assert changing_calls(api, execution_id) == []


# -- right before the change itself, after the backup --------------------------------------------------


def held_before_change(runtime: LocalRuntime, api: ApiClient, customer_id: str, instance_id: str) -> tuple[str, Any]:
    """A termination approved by a person, backed up, and held just before its change."""
    execution_id = awaiting(api, api.register(terminate_recommendation(customer_id, instance_id))["recommendation_id"])
    hold = runtime.faults.hold("act", execution_id=execution_id)
    api.approve(execution_id, APPROVER)
    assert hold.reached.wait(60), "the change was never reached"
    return execution_id, hold


def test_a_resource_protected_during_the_backup_is_refused_before_the_change_and_only_the_backup_remains(
    runtime: LocalRuntime, api: ApiClient, ec2: Any, launch_instance: Callable[..., str], customer_id: str
) -> None:
    # Given an approved termination whose backup is done, held just before its change
    instance_id = launch_instance()
    execution_id, hold = held_before_change(runtime, api, customer_id, instance_id)

    # When the instance is protected now (a backup can take long on AWS), and the execution goes on
    ec2.create_tags(Resources=[instance_id], Tags=[PROTECTED])
    hold.release()
    ended = api.wait_for(execution_id, timeout=90)

    # Then it fails before changing anything: the instance runs as it was, never stopped or relaunched;
    # the backup image stays, recorded, and nothing else was asked of AWS
    assert ended["status"] == "failed", ended
    assert "refused before the change" in ended["error_message"]
    assert "tagged cost-engine:protected" in ended["error_message"]
    assert instance_state(ec2, instance_id) == "running"
    assert restored_instances(ec2, execution_id) == []
    assert [image["ImageId"] for image in backup_images(ec2, execution_id)] == [ended["backup"]["image_id"]]
    assert changing_calls(api, execution_id) == ["ec2:CreateImage"]
    assert [r["moment"] for r in rechecks(api, execution_id)] == ["before the backup", "before the change"]
    assert ended["rollback"]["nothing_changed"] is True


def test_a_change_retried_after_it_went_through_is_not_refused_by_the_recheck(
    runtime: LocalRuntime, api: ApiClient, ec2: Any, launch_instance: Callable[..., str], customer_id: str
) -> None:
    # Given an approved termination held before its change, and DynamoDB throttling the write that
    # records the termination: the step terminates, then fails with an error worth retrying
    instance_id = launch_instance()
    execution_id, hold = held_before_change(runtime, api, customer_id, instance_id)
    runtime.aws_requests.fail(
        "dynamodb", "UpdateItem", code="ProvisionedThroughputExceededException", status=400, passes=1
    )

    # When the step runs, and is retried
    hold.release()
    ended = api.wait_for(execution_id, timeout=90)

    # Then the retry does not take the terminated instance for a change made by someone else: the
    # re-check ran once, before the change, and the execution completed
    assert ended["status"] == "completed", ended.get("error_message")
    assert instance_state(ec2, instance_id) == "terminated"
    assert [r["moment"] for r in rechecks(api, execution_id)] == ["before the backup", "before the change"]
    assert changing_calls(api, execution_id).count("ec2:TerminateInstances") == 1


# -- an approval is bound to its plan -------------------------------------------------------------------


def test_a_plan_that_moved_while_waiting_is_not_carried_out_on_the_old_approval(
    api: ApiClient, ec2: Any, launch_instance: Callable[..., str], customer_id: str
) -> None:
    # Given a termination waiting for a person, whose plan records the instance's tags
    instance_id = launch_instance()
    execution_id = awaiting(api, api.register(terminate_recommendation(customer_id, instance_id))["recommendation_id"])

    # When a tag no rule cares about is added (what would be relaunched on rollback changed), then approved
    ec2.create_tags(Resources=[instance_id], Tags=[{"Key": "owner", "Value": "new-team"}])
    ended = approved_and_ended(api, execution_id)

    # Then the approval does not stretch to the new plan: nothing is touched, and the reason says what moved
    assert ended["status"] == "failed", ended
    assert "the plan is no longer the one that was approved (resource.tags changed since)" in ended["error_message"]
    assert "execute the recommendation again" in ended["error_message"]
    assert instance_state(ec2, instance_id) == "running"
    assert changing_calls(api, execution_id) == []
    (recheck,) = rechecks(api, execution_id)
    assert recheck["plan_changes"] == ["resource.tags"]


def test_a_decision_is_recorded_for_the_plan_shown_and_refused_for_any_other(
    api: ApiClient, launch_instance: Callable[..., str], customer_id: str
) -> None:
    from cost_engine.models import ExecutionPlan

    # Given a termination waiting for a person: the API shows the plan and the hash the approval is for
    execution_id = awaiting(
        api, api.register(terminate_recommendation(customer_id, launch_instance()))["recommendation_id"]
    )
    waiting = api.status(execution_id)
    plan_hash = waiting["pending_approval"]["plan_hash"]
    assert plan_hash == ExecutionPlan.model_validate(waiting["plan"]).fingerprint()

    # When a decision names another plan, it is refused and changes nothing
    other = "sha256:" + "0" * 64
    with pytest.raises(ApiError) as refused:
        api._json("POST", f"/executions/{execution_id}/approve", json={"approver": APPROVER, "plan_hash": other})
    assert refused.value.status_code == 409
    assert refused.value.body["error"] == "plan_changed"
    assert api.status(execution_id)["status"] == "awaiting_approval"

    # And a decision for the plan shown is taken, with the plan in the approval record and the log
    api._json("POST", f"/executions/{execution_id}/reject", json={"approver": APPROVER, "plan_hash": plan_hash})
    rejected = api.wait_for(execution_id)
    assert rejected["status"] == "rejected"
    assert rejected["approval"]["plan_hash"] == plan_hash
    (decided,) = [e for e in api.logs(execution_id)["events"] if e["event_type"] == "rejected"]
    assert decided["detail"]["plan_hash"] == plan_hash
