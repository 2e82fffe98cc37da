"""The common pre-checks (cost_engine.prechecks): a customer's business rules merged with the default,
what they refuse from the request and from the resource's tags, staleness, the dependencies read from
emulated AWS (CloudFormation stacks, load balancer targets), and the IAM policy simulation, stubbed
where moto's caller is not a role."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from pydantic import ValidationError

from cost_engine.aws import AwsClients
from cost_engine.business_rules import BusinessRules, BusinessRulesConfig, DependencyRule
from cost_engine.errors import ActionFailed, TransientError
from cost_engine.executors.base import AnyExecutor, Permission
from cost_engine.executors.schedule_instance import ScheduleInstanceExecutor
from cost_engine.executors.terminate_instance import TerminateInstanceExecutor
from cost_engine.models import Recommendation, RecommendationType
from cost_engine.prechecks import (
    CLOUDFORMATION_STACK_TAG,
    PROTECTED_TAG,
    DryRunProbe,
    Resource,
    ResourceKind,
    actions_to_simulate,
    dry_run_refusals,
    load_balancer_registrations,
    permission_refusals,
    read_tags,
    request_refusals,
    run_prechecks,
    staleness,
    tag_refusals,
)
from tests.unit.conftest import ACCOUNT_ID, REGION

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
MAX_AGE = timedelta(days=30)
CUSTOMER = "acme-corp"
OTHER_ACCOUNT = "210987654321"
INSTANCE_ID = "i-0123456789abcdef0"  # well-formed, and in no emulated account
AMI_ID = "ami-12c6146b"  # an image moto registers in every region
STACK_NAME = "web-stack"
TARGET_GROUP = "web-targets"

INSTANCE_ARN = f"arn:aws:ec2:{REGION}:{ACCOUNT_ID}:instance/{INSTANCE_ID}"
ASSUMED_ROLE_CALLER = f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/ExecRole/fn"
EXEC_ROLE_ARN = f"arn:aws:iam::{ACCOUNT_ID}:role/ExecRole"
# What TerminateInstanceExecutor's policy grants on an instance itself, without a condition, that changes it.
TERMINATE_INSTANCE_ACTIONS = [
    "ec2:CreateImage",
    "ec2:TerminateInstances",
    "ec2:StartInstances",
    "ec2:StopInstances",
    "ec2:RunInstances",
]


def recommendation(
    kind: RecommendationType = RecommendationType.TERMINATE_INSTANCE,
    resource_id: str = INSTANCE_ID,
    *,
    account_id: str = ACCOUNT_ID,
    created_at: datetime = NOW,
) -> Recommendation:
    return Recommendation(
        customer_id=CUSTOMER,
        type=kind,
        account_id=account_id,
        region=REGION,
        resource_id=resource_id,
        created_at=created_at,
    )


def instance(resource_id: str = INSTANCE_ID) -> Resource:
    return Resource(ResourceKind.EC2_INSTANCE, resource_id)


@contextmanager
def stubbed(client: BaseClient) -> Iterator[Stubber]:
    """The client answers only what the test queues, and every queued answer must be asked for."""
    with Stubber(client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def answer_caller(stubber: Stubber, caller_arn: str) -> None:
    stubber.add_response("get_caller_identity", {"UserId": "AROAEXAMPLE:fn", "Account": ACCOUNT_ID, "Arn": caller_arn})


def answer_simulation(
    stubber: Stubber, decisions: dict[str, str], *, role_arn: str = EXEC_ROLE_ARN, resource_arn: str = INSTANCE_ARN
) -> None:
    stubber.add_response(
        "simulate_principal_policy",
        {
            "EvaluationResults": [
                {"EvalActionName": action, "EvalResourceName": resource_arn, "EvalDecision": decision}
                for action, decision in decisions.items()
            ],
            "IsTruncated": False,
        },
        {"PolicySourceArn": role_arn, "ActionNames": list(decisions), "ResourceArns": [resource_arn]},
    )


@pytest.fixture
def clients(aws: None) -> AwsClients:
    return AwsClients(REGION)


@pytest.fixture
def ec2(aws: None) -> EC2Client:
    return boto3.client("ec2", region_name=REGION)


def launch(ec2: EC2Client, tags: dict[str, str] | None = None) -> str:
    tag_specifications: Any = (
        [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}] if tags else []
    )
    return ec2.run_instances(
        ImageId=AMI_ID, InstanceType="t3.micro", MinCount=1, MaxCount=1, TagSpecifications=tag_specifications
    )["Instances"][0]["InstanceId"]


@pytest.fixture
def stack_instance(aws: None) -> str:
    """An EC2 instance of a CloudFormation stack (moto tags it with the stack's name, as AWS does)."""
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    template = {
        "Resources": {
            "Web": {"Type": "AWS::EC2::Instance", "Properties": {"ImageId": AMI_ID, "InstanceType": "t3.micro"}}
        }
    }
    cloudformation.create_stack(StackName=STACK_NAME, TemplateBody=json.dumps(template))
    resources = cloudformation.describe_stack_resources(StackName=STACK_NAME)["StackResources"]
    return str(next(r["PhysicalResourceId"] for r in resources if r["ResourceType"] == "AWS::EC2::Instance"))


def register_in_target_group(ec2: EC2Client, instance_id: str, name: str = TARGET_GROUP) -> None:
    elbv2 = boto3.client("elbv2", region_name=REGION)
    vpc_id = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    group_arn = elbv2.create_target_group(Name=name, Protocol="HTTP", Port=80, VpcId=vpc_id, TargetType="instance")[
        "TargetGroups"
    ][0]["TargetGroupArn"]
    elbv2.register_targets(TargetGroupArn=group_arn, Targets=[{"Id": instance_id}])


# -- BusinessRulesConfig.for_customer --------------------------------------------------------------------


def test_a_customers_allow_lists_replace_the_defaults() -> None:
    # Given a default that allows two types and one account, and a customer with narrower lists of its own
    config = BusinessRulesConfig(
        default=BusinessRules(
            allow_types=[RecommendationType.TERMINATE_INSTANCE, RecommendationType.SCHEDULE_INSTANCE],
            allow_accounts=[ACCOUNT_ID],
            allow_tags={"env": ["dev"]},
        ),
        customers={
            CUSTOMER: BusinessRules(
                allow_types=[RecommendationType.SCHEDULE_INSTANCE],
                allow_accounts=[OTHER_ACCOUNT],
                allow_tags={"team": ["*"]},
            ),
            "quiet-corp": BusinessRules(),
        },
    )

    # When each customer's rules are merged
    own = config.for_customer(CUSTOMER)
    inherited = config.for_customer("quiet-corp")

    # Then the customer's own allow lists win outright, and a customer without any keeps the default's
    assert own.allow_types == [RecommendationType.SCHEDULE_INSTANCE]
    assert own.allow_accounts == [OTHER_ACCOUNT]
    assert own.allow_tags == {"team": ["*"]}
    assert inherited.allow_types == [RecommendationType.TERMINATE_INSTANCE, RecommendationType.SCHEDULE_INSTANCE]
    assert inherited.allow_accounts == [ACCOUNT_ID]
    assert inherited.allow_tags == {"env": ["dev"]}


def test_deny_lists_of_the_default_and_the_customer_add_up() -> None:
    config = BusinessRulesConfig(
        default=BusinessRules(
            deny_types=[RecommendationType.DELETE_VOLUME],
            deny_accounts=[ACCOUNT_ID],
            deny_tags={"env": ["prod"]},
        ),
        customers={
            CUSTOMER: BusinessRules(
                deny_types=[RecommendationType.FIX_CONFIG],
                deny_accounts=[OTHER_ACCOUNT],
                deny_tags={"env": ["staging"], "team": ["*"]},
            )
        },
    )

    rules = config.for_customer(CUSTOMER)

    assert rules.deny_types == [RecommendationType.DELETE_VOLUME, RecommendationType.FIX_CONFIG]
    assert rules.deny_accounts == [ACCOUNT_ID, OTHER_ACCOUNT]
    assert rules.deny_tags == {"env": ["prod", "staging"], "team": ["*"]}


def test_merging_a_customers_rules_leaves_the_configuration_unchanged() -> None:
    # A merge that extended the default's own lists would deny more with every call.
    config = BusinessRulesConfig(
        default=BusinessRules(deny_tags={"env": ["prod"]}, deny_types=[RecommendationType.DELETE_VOLUME]),
        customers={CUSTOMER: BusinessRules(deny_tags={"env": ["staging"]}, deny_types=[RecommendationType.FIX_CONFIG])},
    )

    first = config.for_customer(CUSTOMER)
    second = config.for_customer(CUSTOMER)

    assert first == second
    assert config.default.deny_tags == {"env": ["prod"]}
    assert config.default.deny_types == [RecommendationType.DELETE_VOLUME]


@pytest.mark.parametrize(
    ("own", "expected"),
    [
        (DependencyRule.WARN, DependencyRule.WARN),
        (DependencyRule.IGNORE, DependencyRule.IGNORE),
        (None, DependencyRule.REFUSE),
    ],
)
def test_a_customers_cloudformation_rule_overrides_the_default(
    own: DependencyRule | None, expected: DependencyRule
) -> None:
    config = BusinessRulesConfig(
        default=BusinessRules(cloudformation_managed=DependencyRule.REFUSE),
        customers={CUSTOMER: BusinessRules(cloudformation_managed=own)},
    )

    assert config.for_customer(CUSTOMER).cloudformation_managed == expected


def test_an_unknown_customer_gets_the_default_rules() -> None:
    default = BusinessRules(
        allow_types=[RecommendationType.SCHEDULE_INSTANCE],
        deny_types=[RecommendationType.DELETE_VOLUME],
        allow_accounts=[ACCOUNT_ID],
        deny_accounts=[OTHER_ACCOUNT],
        allow_tags={"env": ["dev"]},
        deny_tags={"env": ["prod"]},
        cloudformation_managed=DependencyRule.WARN,
    )
    config = BusinessRulesConfig(
        default=default, customers={CUSTOMER: BusinessRules(deny_types=[RecommendationType.FIX_CONFIG])}
    )

    assert config.for_customer("someone-else") == default


@pytest.mark.parametrize(
    "config",
    [
        pytest.param({"default": {"allow_types": ["terminate_everything"]}}, id="unknown type"),
        pytest.param({"customers": {CUSTOMER: {"deny_types": ["nuke"]}}}, id="unknown type of a customer"),
        pytest.param({"default": {"deny_accounts": ["12345"]}}, id="short account id"),
        pytest.param({"customers": {CUSTOMER: {"allow_accounts": ["12345678901a"]}}}, id="account id with a letter"),
        pytest.param({"default": {"deny_type": ["delete_volume"]}}, id="unknown field of the rules"),
        pytest.param({"defaults": {}}, id="unknown field of the config"),
        pytest.param({"default": {"cloudformation_managed": "sometimes"}}, id="unknown dependency rule"),
        pytest.param({"customers": {"acme corp": {}}}, id="customer id with a space"),
        pytest.param({"default": {"allow_tags": {}}}, id="allow_tags naming no tag"),
    ],
)
def test_an_invalid_configuration_is_refused(config: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        BusinessRulesConfig.model_validate(config)


# -- request_refusals -------------------------------------------------------------------------------------


def test_an_empty_account_allow_list_refuses_every_account_and_says_so() -> None:
    refusals = request_refusals(BusinessRules(allow_accounts=[]), recommendation())

    assert refusals == [
        f"the business rules of customer {CUSTOMER} allow changes only in these accounts: none (allow_accounts)"
    ]


def test_rules_without_lists_refuse_no_request() -> None:
    assert request_refusals(BusinessRules(), recommendation()) == []


def test_a_denied_type_is_refused_naming_the_customer_and_the_rule() -> None:
    rules = BusinessRules(deny_types=[RecommendationType.TERMINATE_INSTANCE])

    refusals = request_refusals(rules, recommendation(RecommendationType.TERMINATE_INSTANCE))

    assert refusals == [f"the business rules of customer {CUSTOMER} deny terminate_instance (deny_types)"]
    assert request_refusals(rules, recommendation(RecommendationType.SCHEDULE_INSTANCE)) == []


def test_a_type_outside_allow_types_is_refused_naming_the_customer_and_the_rule() -> None:
    rules = BusinessRules(allow_types=[RecommendationType.SCHEDULE_INSTANCE, RecommendationType.DELETE_VOLUME])

    refusals = request_refusals(rules, recommendation(RecommendationType.TERMINATE_INSTANCE))

    assert len(refusals) == 1
    assert f"customer {CUSTOMER}" in refusals[0]
    assert "(allow_types)" in refusals[0]
    assert "schedule_instance, delete_volume" in refusals[0]
    assert refusals[0].endswith("not terminate_instance")
    assert request_refusals(rules, recommendation(RecommendationType.SCHEDULE_INSTANCE)) == []


@pytest.mark.parametrize("kind", list(RecommendationType))
def test_an_empty_allow_types_allows_no_type(kind: RecommendationType) -> None:
    refusals = request_refusals(BusinessRules(allow_types=[]), recommendation(kind))

    assert refusals == [
        f"the business rules of customer {CUSTOMER} allow only these types: none (allow_types), not {kind.value}"
    ]


def test_a_denied_account_is_refused_naming_the_customer_and_the_rule() -> None:
    rules = BusinessRules(deny_accounts=[ACCOUNT_ID])

    refusals = request_refusals(rules, recommendation(account_id=ACCOUNT_ID))

    assert refusals == [
        f"the business rules of customer {CUSTOMER} deny changes in account {ACCOUNT_ID} (deny_accounts)"
    ]
    assert request_refusals(rules, recommendation(account_id=OTHER_ACCOUNT)) == []


def test_an_account_outside_allow_accounts_is_refused_naming_the_customer_and_the_rule() -> None:
    rules = BusinessRules(allow_accounts=[OTHER_ACCOUNT])

    refusals = request_refusals(rules, recommendation(account_id=ACCOUNT_ID))

    assert len(refusals) == 1
    assert f"customer {CUSTOMER}" in refusals[0]
    assert "(allow_accounts)" in refusals[0]
    assert OTHER_ACCOUNT in refusals[0]
    assert request_refusals(rules, recommendation(account_id=OTHER_ACCOUNT)) == []


def test_a_refused_type_and_a_refused_account_are_both_reported() -> None:
    rules = BusinessRules(deny_types=[RecommendationType.TERMINATE_INSTANCE], allow_accounts=[OTHER_ACCOUNT])

    refusals = request_refusals(rules, recommendation())

    assert len(refusals) == 2
    assert "(deny_types)" in refusals[0]
    assert "(allow_accounts)" in refusals[1]


# -- tag_refusals -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rules",
    [
        pytest.param(BusinessRules(), id="no rules"),
        pytest.param(BusinessRules(allow_tags={"team": ["*"]}), id="allow_tags satisfied"),
        pytest.param(BusinessRules(cloudformation_managed=DependencyRule.IGNORE), id="dependencies ignored"),
    ],
)
def test_the_protected_tag_always_refuses(rules: BusinessRules) -> None:
    tags = {PROTECTED_TAG: "true", "team": "web"}

    refusals = tag_refusals(rules, recommendation(), instance(), tags)

    assert refusals == [
        f"EC2 instance {INSTANCE_ID} is tagged {PROTECTED_TAG}=true: the engine never changes it",
    ]


@pytest.mark.parametrize(
    ("deny_tags", "tags", "refused_tag"),
    [
        pytest.param({"env": ["prod"]}, {"env": "prod"}, "env=prod", id="listed value"),
        pytest.param({"env": ["staging", "prod"]}, {"env": "prod"}, "env=prod", id="one of several values"),
        pytest.param({"env": ["*"]}, {"env": "anything"}, "env=anything", id="any value"),
        pytest.param({"env": ["prod"]}, {"env": "dev"}, None, id="another value"),
        pytest.param({"env": ["*"]}, {"team": "web"}, None, id="another key"),
    ],
)
def test_deny_tags_refuse_a_resource_carrying_a_denied_tag(
    deny_tags: dict[str, list[str]], tags: dict[str, str], refused_tag: str | None
) -> None:
    refusals = tag_refusals(BusinessRules(deny_tags=deny_tags), recommendation(), instance(), tags)

    expected = (
        [
            f"EC2 instance {INSTANCE_ID} is tagged {refused_tag}, which the business rules of customer {CUSTOMER} "
            "deny (deny_tags)"
        ]
        if refused_tag
        else []
    )
    assert refusals == expected


@pytest.mark.parametrize(
    "tags",
    [{"team": "web"}, {"env": "dev", "other": "x"}, {"env": "test"}],
)
def test_a_resource_with_an_allowed_tag_passes_allow_tags(tags: dict[str, str]) -> None:
    rules = BusinessRules(allow_tags={"team": ["*"], "env": ["dev", "test"]})

    assert tag_refusals(rules, recommendation(), instance(), tags) == []


@pytest.mark.parametrize("tags", [{}, {"env": "prod"}, {"owner": "web"}])
def test_a_resource_without_an_allowed_tag_is_refused_by_allow_tags(tags: dict[str, str]) -> None:
    rules = BusinessRules(allow_tags={"team": ["*"], "env": ["dev", "test"]})

    refusals = tag_refusals(rules, recommendation(), instance(), tags)

    assert refusals == [
        f"EC2 instance {INSTANCE_ID} has none of the tags the business rules of customer {CUSTOMER} require "
        "(team=*; env=dev|test; allow_tags)"
    ]


def test_unreadable_tags_are_refused_when_the_rules_require_tags() -> None:
    rules = BusinessRules(allow_tags={"team": ["*"]})

    refusals = tag_refusals(rules, recommendation(), instance(), None)

    assert len(refusals) == 1
    assert f"the tags of EC2 instance {INSTANCE_ID} could not be read" in refusals[0]
    assert f"customer {CUSTOMER}" in refusals[0]
    assert "(allow_tags)" in refusals[0]


@pytest.mark.parametrize(
    "rules",
    [BusinessRules(), BusinessRules(deny_tags={"env": ["*"]})],
    ids=["no rules", "deny_tags only"],
)
def test_unreadable_tags_are_not_refused_without_allow_tags(rules: BusinessRules) -> None:
    assert tag_refusals(rules, recommendation(), instance(), None) == []


# -- staleness ----------------------------------------------------------------------------------------------


def test_a_recommendation_exactly_at_the_age_limit_is_not_stale() -> None:
    assert staleness(recommendation(created_at=NOW - MAX_AGE), MAX_AGE, NOW) is None


def test_a_recommendation_one_second_over_the_age_limit_is_stale_with_its_age_and_date() -> None:
    stale = recommendation(created_at=NOW - MAX_AGE - timedelta(seconds=1))

    reason = staleness(stale, MAX_AGE, NOW)

    assert reason is not None
    assert reason.startswith(f"recommendation {stale.recommendation_id} was made 30 days ago (2026-01-30);")
    assert "last 30 days" in reason


# -- reading tags from emulated AWS --------------------------------------------------------------------------


def test_read_tags_of_an_ec2_instance(clients: AwsClients, ec2: EC2Client) -> None:
    instance_id = launch(ec2, {"team": "web", PROTECTED_TAG: "true"})

    assert read_tags(clients, instance(instance_id)) == {"team": "web", PROTECTED_TAG: "true"}


def test_read_tags_of_an_ebs_volume(clients: AwsClients, ec2: EC2Client) -> None:
    volume_id = ec2.create_volume(
        AvailabilityZone=f"{REGION}a",
        Size=8,
        TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": "env", "Value": "prod"}]}],
    )["VolumeId"]

    assert read_tags(clients, Resource(ResourceKind.EBS_VOLUME, volume_id)) == {"env": "prod"}


def test_read_tags_of_an_rds_db_instance(clients: AwsClients) -> None:
    boto3.client("rds", region_name=REGION).create_db_instance(
        DBInstanceIdentifier="orders-db",
        DBInstanceClass="db.t3.micro",
        Engine="postgres",
        MasterUsername="admin_user",
        MasterUserPassword="not-a-real-password",
        AllocatedStorage=20,
        Tags=[{"Key": "env", "Value": "prod"}, {"Key": "team", "Value": "orders"}],
    )

    assert read_tags(clients, Resource(ResourceKind.RDS_DB_INSTANCE, "orders-db")) == {"env": "prod", "team": "orders"}


def test_read_tags_of_an_s3_bucket_with_and_without_tags(clients: AwsClients) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="tagged-bucket")
    s3.put_bucket_tagging(Bucket="tagged-bucket", Tagging={"TagSet": [{"Key": "env", "Value": "dev"}]})
    s3.create_bucket(Bucket="tagless-bucket")

    assert read_tags(clients, Resource(ResourceKind.S3_BUCKET, "tagged-bucket")) == {"env": "dev"}
    assert read_tags(clients, Resource(ResourceKind.S3_BUCKET, "tagless-bucket")) == {}


def test_read_tags_of_a_log_group(clients: AwsClients) -> None:
    boto3.client("logs", region_name=REGION).create_log_group(
        logGroupName="/aws/lambda/orders", tags={"team": "orders"}
    )

    assert read_tags(clients, Resource(ResourceKind.LOG_GROUP, "/aws/lambda/orders")) == {"team": "orders"}


@pytest.mark.parametrize(
    "resource",
    [
        pytest.param(Resource(ResourceKind.S3_BUCKET, "no-such-bucket-here"), id="bucket"),
        pytest.param(Resource(ResourceKind.RDS_DB_INSTANCE, "no-such-db"), id="DB instance"),
        pytest.param(Resource(ResourceKind.NONE, "purchase-1"), id="purchase"),
    ],
)
def test_read_tags_of_a_missing_resource_or_a_purchase_is_none(clients: AwsClients, resource: Resource) -> None:
    assert read_tags(clients, resource) is None


@pytest.mark.parametrize(
    "resource",
    [instance(INSTANCE_ID), Resource(ResourceKind.EBS_VOLUME, "vol-0123456789abcdef0")],
    ids=["instance", "volume"],
)
def test_read_tags_of_a_missing_instance_or_volume_is_none(clients: AwsClients, resource: Resource) -> None:
    assert read_tags(clients, resource) is None


def test_read_tags_of_a_log_group_that_aws_does_not_find_is_none() -> None:
    # moto answers {} for a missing log group; AWS answers ResourceNotFoundException.
    clients = AwsClients(REGION)
    with stubbed(clients.sts) as sts, stubbed(clients.logs) as logs:
        answer_caller(sts, ASSUMED_ROLE_CALLER)
        logs.add_client_error("list_tags_for_resource", "ResourceNotFoundException", http_status_code=400)

        assert read_tags(clients, Resource(ResourceKind.LOG_GROUP, "/aws/lambda/gone")) is None


def test_read_tags_fails_the_step_when_aws_refuses_to_answer() -> None:
    clients = AwsClients(REGION)
    with stubbed(clients.s3) as s3:
        s3.add_client_error("get_bucket_tagging", "AccessDenied", http_status_code=403)

        with pytest.raises(ActionFailed, match="reading the tags of S3 bucket locked-bucket failed: AccessDenied"):
            read_tags(clients, Resource(ResourceKind.S3_BUCKET, "locked-bucket"))


# -- load balancer registrations ----------------------------------------------------------------------------


def test_an_instance_in_a_target_group_is_found_by_the_groups_name(clients: AwsClients, ec2: EC2Client) -> None:
    instance_id = launch(ec2)
    register_in_target_group(ec2, instance_id)

    assert load_balancer_registrations(clients, instance_id) == [f"target group {TARGET_GROUP}"]


def test_an_instance_in_no_target_group_has_no_registrations(clients: AwsClients, ec2: EC2Client) -> None:
    registered, unregistered = launch(ec2), launch(ec2)
    register_in_target_group(ec2, registered)

    assert load_balancer_registrations(clients, unregistered) == []


def test_an_instance_behind_a_classic_load_balancer_is_found_by_its_name(clients: AwsClients, ec2: EC2Client) -> None:
    instance_id = launch(ec2)
    elb = boto3.client("elb", region_name=REGION)
    elb.create_load_balancer(
        LoadBalancerName="legacy-web",
        Listeners=[{"Protocol": "HTTP", "LoadBalancerPort": 80, "InstancePort": 80}],
        AvailabilityZones=[f"{REGION}a"],
    )
    elb.register_instances_with_load_balancer(LoadBalancerName="legacy-web", Instances=[{"InstanceId": instance_id}])

    assert load_balancer_registrations(clients, instance_id) == ["Classic Load Balancer legacy-web"]


# -- run_prechecks against emulated AWS ----------------------------------------------------------------------


def test_terminate_refuses_an_instance_of_a_cloudformation_stack(clients: AwsClients, stack_instance: str) -> None:
    result = run_prechecks(
        TerminateInstanceExecutor(clients), recommendation(resource_id=stack_instance), BusinessRules(), MAX_AGE, NOW
    )

    assert len(result.errors) == 1
    assert f"EC2 instance {stack_instance} belongs to CloudFormation stack {STACK_NAME}" in result.errors[0]
    assert "make the change in the stack's template instead" in result.errors[0]
    assert result.warnings == []


def test_schedule_only_warns_about_an_instance_of_a_cloudformation_stack(
    clients: AwsClients, stack_instance: str
) -> None:
    rec = recommendation(RecommendationType.SCHEDULE_INSTANCE, stack_instance)

    result = run_prechecks(ScheduleInstanceExecutor(clients), rec, BusinessRules(), MAX_AGE, NOW)

    assert result.errors == []
    assert len(result.warnings) == 1
    assert f"belongs to CloudFormation stack {STACK_NAME}" in result.warnings[0]


def test_a_customer_warn_rule_turns_terminates_stack_refusal_into_a_warning(
    clients: AwsClients, stack_instance: str
) -> None:
    rules = BusinessRulesConfig(
        customers={CUSTOMER: BusinessRules(cloudformation_managed=DependencyRule.WARN)}
    ).for_customer(CUSTOMER)

    result = run_prechecks(
        TerminateInstanceExecutor(clients), recommendation(resource_id=stack_instance), rules, MAX_AGE, NOW
    )

    assert result.errors == []
    assert len(result.warnings) == 1
    assert f"belongs to CloudFormation stack {STACK_NAME}" in result.warnings[0]


def test_a_customer_ignore_rule_silences_the_stack_but_still_records_it(
    clients: AwsClients, stack_instance: str
) -> None:
    rules = BusinessRules(cloudformation_managed=DependencyRule.IGNORE)

    result = run_prechecks(
        TerminateInstanceExecutor(clients), recommendation(resource_id=stack_instance), rules, MAX_AGE, NOW
    )

    assert result.errors == []
    assert result.warnings == []
    assert result.facts["cloudformation_stack"] == STACK_NAME


def test_terminate_refuses_a_target_group_member(clients: AwsClients, ec2: EC2Client) -> None:
    instance_id = launch(ec2)
    register_in_target_group(ec2, instance_id)

    result = run_prechecks(
        TerminateInstanceExecutor(clients), recommendation(resource_id=instance_id), BusinessRules(), MAX_AGE, NOW
    )

    assert len(result.errors) == 1
    assert f"instance {instance_id} is registered with target group {TARGET_GROUP}" in result.errors[0]
    assert "deregister it first" in result.errors[0]
    assert result.warnings == []


def test_schedule_only_warns_about_a_target_group_member(clients: AwsClients, ec2: EC2Client) -> None:
    instance_id = launch(ec2)
    register_in_target_group(ec2, instance_id)
    rec = recommendation(RecommendationType.SCHEDULE_INSTANCE, instance_id)

    result = run_prechecks(ScheduleInstanceExecutor(clients), rec, BusinessRules(), MAX_AGE, NOW)

    assert result.errors == []
    assert result.warnings == [
        f"instance {instance_id} is registered with target group {TARGET_GROUP}: it fails its health checks while "
        "stopped"
    ]


def test_a_protected_instance_is_refused(clients: AwsClients, ec2: EC2Client) -> None:
    instance_id = launch(ec2, {PROTECTED_TAG: "yes"})
    rec = recommendation(RecommendationType.SCHEDULE_INSTANCE, instance_id)

    result = run_prechecks(ScheduleInstanceExecutor(clients), rec, BusinessRules(), MAX_AGE, NOW)

    assert result.errors == [f"EC2 instance {instance_id} is tagged {PROTECTED_TAG}=yes: the engine never changes it"]


def test_a_plain_instance_passes_every_check(clients: AwsClients, ec2: EC2Client) -> None:
    instance_id = launch(ec2, {"team": "web"})

    result = run_prechecks(
        TerminateInstanceExecutor(clients), recommendation(resource_id=instance_id), BusinessRules(), MAX_AGE, NOW
    )

    assert result.errors == []
    assert result.warnings == []


@pytest.mark.parametrize(
    ("rules", "created_at", "reason"),
    [
        pytest.param(BusinessRules(), NOW - MAX_AGE - timedelta(seconds=1), "was made 30 days ago", id="stale"),
        pytest.param(
            BusinessRules(deny_types=[RecommendationType.TERMINATE_INSTANCE]), NOW, "(deny_types)", id="denied type"
        ),
    ],
)
def test_a_request_refused_on_its_own_makes_no_aws_call(
    rules: BusinessRules, created_at: datetime, reason: str
) -> None:
    # Given clients that answer no call at all (each would raise), for an instance that exists nowhere
    clients = AwsClients(REGION)
    executor = TerminateInstanceExecutor(clients)
    services = (
        clients.ec2,
        clients.rds,
        clients.s3,
        clients.logs,
        clients.sts,
        clients.elbv2,
        clients.elb,
        clients.iam,
    )
    with ExitStack() as stack:
        for client in services:
            stack.enter_context(stubbed(client))

        # When the pre-checks run
        result = run_prechecks(executor, recommendation(created_at=created_at), rules, MAX_AGE, NOW)

    # Then the request is refused on its own, and nothing about the resource was looked at
    assert len(result.errors) == 1
    assert reason in result.errors[0]
    assert result.facts == {}


def test_the_facts_record_the_resource_its_stack_load_balancers_and_permissions(
    clients: AwsClients, ec2: EC2Client, stack_instance: str
) -> None:
    register_in_target_group(ec2, stack_instance)

    result = run_prechecks(
        TerminateInstanceExecutor(clients), recommendation(resource_id=stack_instance), BusinessRules(), MAX_AGE, NOW
    )

    assert result.facts == {
        "resource": {"kind": "EC2 instance", "id": stack_instance},
        "cloudformation_stack": STACK_NAME,
        "load_balancers": [f"target group {TARGET_GROUP}"],
        "permissions": f"permissions not simulated: the engine runs as arn:aws:sts::{ACCOUNT_ID}:user/moto, "
        "not as an IAM role",
        # moto answers EC2's DryRun as AWS does for a permitted change.
        "dry_run_permitted": ["ec2:CreateImage", "ec2:TerminateInstances"],
    }
    assert len(result.errors) == 2  # the stack and the target group


def test_the_facts_of_an_rds_db_instance_name_its_kind(clients: AwsClients) -> None:
    result = run_prechecks(
        TerminateInstanceExecutor(clients), recommendation(resource_id="orders-db"), BusinessRules(), MAX_AGE, NOW
    )

    assert result.facts["resource"] == {"kind": "RDS DB instance", "id": "orders-db"}
    assert "load_balancers" not in result.facts


# -- permissions -----------------------------------------------------------------------------------------------


def test_the_actions_simulated_for_an_instance_are_the_unconditional_changes_granted_on_it() -> None:
    actions = actions_to_simulate(TerminateInstanceExecutor.permissions, INSTANCE_ARN, REGION, ACCOUNT_ID)

    assert "ec2:TerminateInstances" in actions
    assert not [a for a in actions if a.split(":")[1].startswith("Describe")]
    conditioned = {a for p in TerminateInstanceExecutor.permissions if p.conditions for a in p.actions}
    assert conditioned == {"ec2:CreateTags", "iam:PassRole"}
    assert not conditioned & set(actions)
    assert actions == TERMINATE_INSTANCE_ACTIONS


def test_reads_granted_on_the_resource_itself_are_not_simulated() -> None:
    # TerminateInstanceExecutor grants rds:DescribeDBInstances and rds:DescribeDBSnapshots on the DB itself.
    db_arn = f"arn:aws:rds:{REGION}:{ACCOUNT_ID}:db:orders-db"

    actions = actions_to_simulate(TerminateInstanceExecutor.permissions, db_arn, REGION, ACCOUNT_ID)

    assert actions == [
        "rds:CreateDBSnapshot",
        "rds:AddTagsToResource",
        "rds:DeleteDBInstance",
        "rds:StopDBInstance",
        "rds:RestoreDBInstanceFromDBSnapshot",
    ]


def test_an_action_granted_twice_is_simulated_once() -> None:
    arn_pattern = "arn:{partition}:ec2:{region}:{account}:instance/*"
    permissions = (
        Permission(("ec2:StopInstances", "ec2:GetConsoleOutput"), (arn_pattern,)),
        Permission(("ec2:StopInstances", "ec2:StartInstances"), (arn_pattern,)),
    )

    assert actions_to_simulate(permissions, INSTANCE_ARN, REGION, ACCOUNT_ID) == [
        "ec2:StopInstances",
        "ec2:StartInstances",
    ]


@pytest.mark.parametrize(
    "arn",
    [
        "arn:aws:s3:::some-bucket",
        f"arn:aws:ec2:{REGION}:{OTHER_ACCOUNT}:instance/{INSTANCE_ID}",
        f"arn:aws:ec2:eu-west-1:{ACCOUNT_ID}:instance/{INSTANCE_ID}",
    ],
    ids=["another service", "another account", "another region"],
)
def test_no_actions_are_simulated_on_an_arn_no_permission_names(arn: str) -> None:
    assert actions_to_simulate(TerminateInstanceExecutor.permissions, arn, REGION, ACCOUNT_ID) == []


def test_permissions_are_not_simulated_outside_a_role(clients: AwsClients) -> None:
    # moto's caller is an IAM user, as the local runtime's is.
    refusals, checked = permission_refusals(clients, TerminateInstanceExecutor.permissions, instance(), REGION)

    assert refusals == []
    assert checked.startswith("permissions not simulated")


def test_an_action_the_simulator_denies_is_refused_with_its_decision() -> None:
    clients = AwsClients(REGION)
    decisions = dict.fromkeys(TERMINATE_INSTANCE_ACTIONS, "allowed") | {"ec2:TerminateInstances": "explicitDeny"}
    with stubbed(clients.sts) as sts, stubbed(clients.iam) as iam:
        answer_caller(sts, ASSUMED_ROLE_CALLER)
        answer_simulation(iam, decisions)

        refusals, checked = permission_refusals(clients, TerminateInstanceExecutor.permissions, instance(), REGION)

    assert len(refusals) == 1
    assert refusals[0].startswith(
        f"the engine's role ExecRole may not ec2:TerminateInstances on {INSTANCE_ARN} (explicitDeny):"
    )
    assert checked == f"permissions simulated for {', '.join(TERMINATE_INSTANCE_ACTIONS)} on {INSTANCE_ARN}"


def test_an_all_allowed_simulation_refuses_nothing() -> None:
    clients = AwsClients(REGION)
    with stubbed(clients.sts) as sts, stubbed(clients.iam) as iam:
        answer_caller(sts, ASSUMED_ROLE_CALLER)
        answer_simulation(iam, dict.fromkeys(TERMINATE_INSTANCE_ACTIONS, "allowed"))

        refusals, checked = permission_refusals(clients, TerminateInstanceExecutor.permissions, instance(), REGION)

    assert refusals == []
    assert checked.startswith("permissions simulated for ec2:CreateImage")


def test_a_denied_simulation_refuses_the_execution_in_run_prechecks(clients: AwsClients, ec2: EC2Client) -> None:
    # Given an instance read from emulated EC2, and a role the simulator says may not terminate it
    instance_id = launch(ec2)
    instance_arn = f"arn:aws:ec2:{REGION}:{ACCOUNT_ID}:instance/{instance_id}"
    decisions = dict.fromkeys(TERMINATE_INSTANCE_ACTIONS, "allowed") | {"ec2:TerminateInstances": "implicitDeny"}
    executor: AnyExecutor = TerminateInstanceExecutor(clients)
    with stubbed(clients.sts) as sts, stubbed(clients.iam) as iam:
        answer_caller(sts, ASSUMED_ROLE_CALLER)
        answer_simulation(iam, decisions, resource_arn=instance_arn)

        result = run_prechecks(executor, recommendation(resource_id=instance_id), BusinessRules(), MAX_AGE, NOW)

    assert len(result.errors) == 1
    assert "may not ec2:TerminateInstances" in result.errors[0]
    assert "(implicitDeny)" in result.errors[0]
    assert result.facts["permissions"].startswith("permissions simulated for")


def test_permissions_are_simulated_in_the_callers_partition() -> None:
    region = "us-gov-west-1"
    clients = AwsClients(region)
    gov_instance_arn = f"arn:aws-us-gov:ec2:{region}:{ACCOUNT_ID}:instance/{INSTANCE_ID}"
    decisions = dict.fromkeys(TERMINATE_INSTANCE_ACTIONS, "allowed") | {"ec2:TerminateInstances": "explicitDeny"}
    with stubbed(clients.sts) as sts, Stubber(clients.iam) as iam:
        answer_caller(sts, f"arn:aws-us-gov:sts::{ACCOUNT_ID}:assumed-role/ExecRole/fn")
        answer_simulation(
            iam, decisions, role_arn=f"arn:aws-us-gov:iam::{ACCOUNT_ID}:role/ExecRole", resource_arn=gov_instance_arn
        )

        refusals, _ = permission_refusals(clients, TerminateInstanceExecutor.permissions, instance(), region)

    assert len(refusals) == 1
    assert "may not ec2:TerminateInstances" in refusals[0]


def test_the_role_the_stack_named_is_simulated_with_its_path() -> None:
    # The assumed-role ARN the function sees has no path; the stack's OWN_ROLE_ARN has it.
    clients = AwsClients(REGION)
    role_with_path = f"arn:aws:iam::{ACCOUNT_ID}:role/cost-engine/ExecRole"
    with stubbed(clients.sts) as sts, stubbed(clients.iam) as iam:
        answer_caller(sts, ASSUMED_ROLE_CALLER)
        answer_simulation(iam, dict.fromkeys(TERMINATE_INSTANCE_ACTIONS, "allowed"), role_arn=role_with_path)

        refusals, checked = permission_refusals(
            clients, TerminateInstanceExecutor.permissions, instance(), REGION, role_arn=role_with_path
        )

    assert refusals == []
    assert checked.startswith("permissions simulated for")


def test_read_tags_of_a_stack_instance_name_its_stack(stack_instance: str) -> None:
    tags = read_tags(AwsClients(REGION), instance(stack_instance))

    assert tags is not None
    assert tags[CLOUDFORMATION_STACK_TAG] == STACK_NAME


# -- DryRun ------------------------------------------------------------------------------------------------------


def answers(code: str, status: int = 400) -> DryRunProbe:
    """A probe whose call AWS answers with the error `code`."""

    def call() -> object:
        response: Any = {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
        raise ClientError(response, "X")

    return DryRunProbe(f"ec2:{code}Probe", call)


def test_a_dry_run_answered_dry_run_operation_confirms_the_permission() -> None:
    refusals, confirmed = dry_run_refusals((answers("DryRunOperation", 412),), instance())

    assert refusals == []
    assert confirmed == ["ec2:DryRunOperationProbe"]


@pytest.mark.parametrize("code", ["UnauthorizedOperation", "AccessDenied"])
def test_a_dry_run_refused_names_the_action_and_the_resource(code: str) -> None:
    refusals, confirmed = dry_run_refusals((answers(code, 403),), instance())

    assert confirmed == []
    assert refusals == [
        f"the engine may not ec2:{code}Probe on EC2 instance {INSTANCE_ID} ({code}, asked with DryRun): grant it to "
        "the executor's role, or lift the policy that denies it"
    ]


def test_a_dry_run_that_is_carried_out_instead_refuses_the_execution() -> None:
    refusals, _ = dry_run_refusals((DryRunProbe("ec2:TerminateInstances", lambda: {}),), instance())

    assert refusals == ["ec2:TerminateInstances asked with DryRun did not answer DryRunOperation: nothing more is done"]


def test_a_throttled_dry_run_is_retried_and_a_missing_resource_is_left_to_the_types_validation() -> None:
    with pytest.raises(TransientError):
        dry_run_refusals((answers("RequestLimitExceeded", 503),), instance())

    assert dry_run_refusals((answers("InvalidInstanceID.NotFound"),), instance()) == ([], [])


def test_the_dry_runs_of_a_termination_are_asked_of_ec2_for_real(clients: AwsClients, ec2: EC2Client) -> None:
    instance_id = ec2.run_instances(ImageId="ami-12c6146b", InstanceType="t3.micro", MinCount=1, MaxCount=1)[
        "Instances"
    ][0]["InstanceId"]
    probes = TerminateInstanceExecutor(clients).dry_run_probes(recommendation(resource_id=instance_id))

    refusals, confirmed = dry_run_refusals(probes, instance(instance_id))

    assert (refusals, confirmed) == ([], ["ec2:CreateImage", "ec2:TerminateInstances"])
    state = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state == "running"
    assert ec2.describe_images(Owners=["self"])["Images"] == []
