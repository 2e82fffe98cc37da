"""The checks every execution passes before anything is touched, whatever its type.

Each executor checks what is particular to its change (an instance's state, a volume's attachment).
These are the checks common to all of them, run by the validate step before the executor's own:

- the recommendation is not stale (older than the deployment allows);
- the customer's business rules (allow and deny lists by type, account and resource tag; a resource
  tagged `cost-engine:protected` is never touched);
- dependencies: a resource managed by a CloudFormation stack (a change outside the stack is drift,
  which the next stack update undoes or fails on), an instance registered with a load balancer
  (terminating or replacing it drops the target, stopping it makes it unhealthy);
- permissions: on AWS, the engine's own role is asked through the IAM policy simulator whether it may
  make the type's changes on this resource (an SCP or a permissions boundary can deny what the role's
  policy grants); the EC2 changes of the type are also asked with `DryRun`, which AWS answers with
  the permission it would apply (SCPs included), on the local runtime too.

Each finding is an error (the execution is refused, nothing is touched) or a warning (recorded and
shown to the approver), always with the reason.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from cost_engine.aws import AwsClients, aws_failure, error_code, is_transient
from cost_engine.business_rules import ANY_VALUE, BusinessRules, DependencyRule
from cost_engine.ec2_reads import find_instance, find_volume, tag_map
from cost_engine.models import Recommendation
from cost_engine.permissions import Permission

if TYPE_CHECKING:
    from cost_engine.executors.base import AnyExecutor

# Never touched, whatever any rule says: the owner's own opt-out, on the resource itself.
PROTECTED_TAG = "cost-engine:protected"
# CloudFormation puts this tag on the resources of a stack that support tags.
CLOUDFORMATION_STACK_TAG = "aws:cloudformation:stack-name"


class ResourceKind(StrEnum):
    EC2_INSTANCE = "EC2 instance"
    EBS_VOLUME = "EBS volume"
    RDS_DB_INSTANCE = "RDS DB instance"
    S3_BUCKET = "S3 bucket"
    LOG_GROUP = "log group"
    # A purchase: it changes no existing resource.
    NONE = "none"


_ARN_PATTERNS = {
    ResourceKind.EC2_INSTANCE: "arn:{partition}:ec2:{region}:{account}:instance/{id}",
    ResourceKind.EBS_VOLUME: "arn:{partition}:ec2:{region}:{account}:volume/{id}",
    ResourceKind.RDS_DB_INSTANCE: "arn:{partition}:rds:{region}:{account}:db:{id}",
    ResourceKind.S3_BUCKET: "arn:{partition}:s3:::{id}",
    ResourceKind.LOG_GROUP: "arn:{partition}:logs:{region}:{account}:log-group:{id}",
}


@dataclass(frozen=True)
class Resource:
    """The resource an execution changes, as the pre-checks look at it."""

    kind: ResourceKind
    # The native id: an instance or volume id, a DB identifier, a bucket or log group name.
    id: str

    def arn(self, region: str, account: str, partition: str = "aws") -> str | None:
        pattern = _ARN_PATTERNS.get(self.kind)
        return pattern.format(partition=partition, region=region, account=account, id=self.id) if pattern else None


def resource_by_id(resource_id: str) -> Resource:
    """The resource an EC2 id names; other ids need their type to tell (see BaseExecutor.resource)."""
    if resource_id.startswith("i-"):
        return Resource(ResourceKind.EC2_INSTANCE, resource_id)
    if resource_id.startswith("vol-"):
        return Resource(ResourceKind.EBS_VOLUME, resource_id)
    return Resource(ResourceKind.NONE, resource_id)


def _tag_matches(tags: dict[str, str], wanted: dict[str, list[str]]) -> str | None:
    """The first tag of `tags` that `wanted` names, as `key=value`."""
    for key, values in wanted.items():
        if key in tags and (ANY_VALUE in values or tags[key] in values):
            return f"{key}={tags[key]}"
    return None


def request_refusals(rules: BusinessRules, recommendation: Recommendation) -> list[str]:
    """What the rules refuse from the recommendation alone (no AWS call): its type and account."""
    customer, kind, account = recommendation.customer_id, recommendation.type, recommendation.account_id
    whose = f"the business rules of customer {customer}"
    refusals = []
    if kind in (rules.deny_types or []):
        refusals.append(f"{whose} deny {kind.value} (deny_types)")
    elif rules.allow_types is not None and kind not in rules.allow_types:
        allowed = ", ".join(t.value for t in rules.allow_types) or "none"
        refusals.append(f"{whose} allow only these types: {allowed} (allow_types), not {kind.value}")
    if account in (rules.deny_accounts or []):
        refusals.append(f"{whose} deny changes in account {account} (deny_accounts)")
    elif rules.allow_accounts is not None and account not in rules.allow_accounts:
        allowed = ", ".join(rules.allow_accounts) or "none"
        refusals.append(f"{whose} allow changes only in these accounts: {allowed} (allow_accounts)")
    return refusals


def tag_refusals(
    rules: BusinessRules, recommendation: Recommendation, resource: Resource, tags: dict[str, str] | None
) -> list[str]:
    """What the rules and the protected tag refuse from the resource's tags."""
    what = f"{resource.kind.value} {resource.id}"
    if tags is None:
        if rules.allow_tags:
            return [
                f"the tags of {what} could not be read, and the business rules of customer "
                f"{recommendation.customer_id} change only resources with certain tags (allow_tags)"
            ]
        return []
    refusals = []
    if PROTECTED_TAG in tags:
        refusals.append(f"{what} is tagged {PROTECTED_TAG}={tags[PROTECTED_TAG]}: the engine never changes it")
    if denied := _tag_matches(tags, rules.deny_tags or {}):
        refusals.append(
            f"{what} is tagged {denied}, which the business rules of customer {recommendation.customer_id} "
            "deny (deny_tags)"
        )
    if rules.allow_tags and not _tag_matches(tags, rules.allow_tags):
        wanted = "; ".join(f"{k}={'|'.join(v)}" for k, v in rules.allow_tags.items())
        refusals.append(
            f"{what} has none of the tags the business rules of customer {recommendation.customer_id} "
            f"require ({wanted}; allow_tags)"
        )
    return refusals


# -- reading the resource -----------------------------------------------------------------------------


def read_tags(clients: AwsClients, resource: Resource) -> dict[str, str] | None:
    """The resource's tags, or None when it has no tags to read (a purchase, or it does not exist:
    the executor's own validation says so)."""
    reading = f"reading the tags of {resource.kind.value} {resource.id}"
    try:
        match resource.kind:
            # Read through the resource itself, not DescribeTags: that answers an unknown id with no
            # tags at all, and a missing resource would pass for an untagged one.
            case ResourceKind.EC2_INSTANCE:
                instance = find_instance(clients, resource.id, action=reading)
                return None if instance is None else tag_map(instance.get("Tags", []))
            case ResourceKind.EBS_VOLUME:
                volume = find_volume(clients, resource.id, action=reading)
                return None if volume is None else tag_map(volume.get("Tags", []))
            case ResourceKind.RDS_DB_INSTANCE:
                found = clients.rds.describe_db_instances(DBInstanceIdentifier=resource.id)["DBInstances"]
                return tag_map(found[0].get("TagList", [])) if found else None
            case ResourceKind.S3_BUCKET:
                return {t["Key"]: t["Value"] for t in clients.s3.get_bucket_tagging(Bucket=resource.id)["TagSet"]}
            case ResourceKind.LOG_GROUP:
                account = clients.sts.get_caller_identity()["Account"]
                arn = resource.arn(clients.region, account)
                return dict(clients.logs.list_tags_for_resource(resourceArn=str(arn)).get("tags", {}))
            case ResourceKind.NONE:
                return None
    except ClientError as error:
        code = error_code(error)
        if code == "NoSuchTagSet":  # a bucket without tags
            return {}
        # (A missing EC2 instance or EBS volume is None already: find_instance / find_volume.)
        if code.startswith(("DBInstanceNotFound", "NoSuchBucket")) or code in ("ResourceNotFoundException",):
            return None
        raise aws_failure(reading, error) from error


def load_balancer_registrations(clients: AwsClients, instance_id: str) -> list[str]:
    """The target groups and Classic Load Balancers the instance is registered with."""
    found: list[str] = []
    try:
        for page in clients.elbv2.get_paginator("describe_target_groups").paginate():
            for group in page.get("TargetGroups", []):
                if group.get("TargetType", "instance") != "instance":
                    continue
                health = clients.elbv2.describe_target_health(TargetGroupArn=group["TargetGroupArn"])
                if any(t["Target"]["Id"] == instance_id for t in health.get("TargetHealthDescriptions", [])):
                    found.append(f"target group {group['TargetGroupName']}")
        for classic in clients.elb.get_paginator("describe_load_balancers").paginate():
            for balancer in classic.get("LoadBalancerDescriptions", []):
                if any(i["InstanceId"] == instance_id for i in balancer.get("Instances", [])):
                    found.append(f"Classic Load Balancer {balancer['LoadBalancerName']}")
    except ClientError as error:
        raise aws_failure(f"finding the load balancers of instance {instance_id}", error) from error
    return found


# -- permissions ----------------------------------------------------------------------------------------

_ASSUMED_ROLE = re.compile(r"^arn:(?P<partition>aws[a-z-]*):sts::(?P<account>[0-9]{12}):assumed-role/(?P<role>[^/]+)/")
_READ_ONLY = re.compile(r":(Describe|Get|List|Head|Lookup|Search|Simulate)[A-Za-z]*$")


def actions_to_simulate(
    permissions: tuple[Permission, ...], resource_arn: str, region: str, account: str, partition: str = "aws"
) -> list[str]:
    """The changing actions the executor's own policy grants on this very resource, without a
    condition: exactly what the simulator can judge from the role's policies alone (a grant with a
    tag condition would need the request's context and would look denied without it)."""
    actions: list[str] = []
    for permission in permissions:
        if permission.conditions:
            continue
        patterns = [p.format(partition=partition, region=region, account=account) for p in permission.resources]
        if not any(fnmatch.fnmatchcase(resource_arn, pattern) for pattern in patterns if pattern != "*"):
            continue
        actions += [a for a in permission.actions if not _READ_ONLY.search(a) and a not in actions]
    return actions


def permission_refusals(
    clients: AwsClients,
    permissions: tuple[Permission, ...],
    resource: Resource,
    region: str,
    role_arn: str | None = None,
) -> tuple[list[str], str]:
    """Ask the IAM policy simulator whether the engine's role may make the type's changes on the
    resource. Returns the refusals and a line saying what was checked. `role_arn` is the role as the
    stack named it (OWN_ROLE_ARN): an assumed-role ARN drops the role's path, so without it the
    role's ARN is rebuilt as one without a path."""
    identity = clients.sts.get_caller_identity()
    caller = _ASSUMED_ROLE.match(identity["Arn"])
    if caller is None:
        # Outside a role (the local runtime, whose emulated AWS does not enforce IAM): nothing to ask.
        return [], f"permissions not simulated: the engine runs as {identity['Arn']}, not as an IAM role"
    arn = resource.arn(region, caller["account"], caller["partition"])
    actions = actions_to_simulate(permissions, arn, region, caller["account"], caller["partition"]) if arn else []
    if not arn or not actions:
        return [], "permissions not simulated: no change of this type is granted on the resource itself"
    role_arn = role_arn or f"arn:{caller['partition']}:iam::{caller['account']}:role/{caller['role']}"
    try:
        pages = clients.iam.get_paginator("simulate_principal_policy").paginate(
            PolicySourceArn=role_arn, ActionNames=actions, ResourceArns=[arn]
        )
        results = [result for page in pages for result in page.get("EvaluationResults", [])]
    except ClientError as error:
        raise aws_failure(f"simulating the permissions of {role_arn}", error) from error
    refusals = [
        f"the engine's role {caller['role']} may not {r['EvalActionName']} on {arn} ({r['EvalDecision']}): "
        "a service control policy, a permissions boundary or a changed role policy denies it"
        for r in results
        if r.get("EvalDecision") != "allowed"
    ]
    return refusals, f"permissions simulated for {', '.join(actions)} on {arn}"


def precheck_permissions(executor: type[AnyExecutor]) -> tuple[Permission, ...]:
    """What an executor's role needs for these checks besides what the executor declares (each
    type declares the reads of its own resource, tags included).
    The simulation itself (iam:SimulatePrincipalPolicy on the role's own ARN) is granted by the
    stack, which knows that ARN."""
    # Tags are read with the describe calls each type already holds for its own resource.
    needed: list[Permission] = []
    if executor.load_balancer_targets != DependencyRule.IGNORE:
        # Elastic Load Balancing describe calls support no resource-level permissions.
        needed.append(
            Permission(
                (
                    "elasticloadbalancing:DescribeTargetGroups",
                    "elasticloadbalancing:DescribeTargetHealth",
                    "elasticloadbalancing:DescribeLoadBalancers",
                )
            )
        )
    return tuple(needed)


@dataclass(frozen=True)
class DryRunProbe:
    """One change of the type asked of EC2 with `DryRun=True`: AWS answers whether the caller may
    make it (DryRunOperation, or UnauthorizedOperation) and changes nothing."""

    action: str  # as IAM names it, e.g. "ec2:TerminateInstances"
    call: Callable[[], object]


# What AWS answers a permitted dry run, and a refused one.
_DRY_RUN_PERMITTED = "DryRunOperation"
_DRY_RUN_REFUSED = frozenset({"UnauthorizedOperation", "AccessDenied", "AccessDeniedException"})


def dry_run_refusals(probes: tuple[DryRunProbe, ...], resource: Resource) -> tuple[list[str], list[str]]:
    """Ask EC2 with DryRun whether the engine may make each change. Returns the refusals and the
    actions it confirmed. Other answers (the resource is missing, or in a state the change needs
    otherwise) are the type's own validation's to explain."""
    refusals: list[str] = []
    confirmed: list[str] = []
    for probe in probes:
        try:
            probe.call()
        except ClientError as error:
            code = error_code(error)
            if code == _DRY_RUN_PERMITTED:
                confirmed.append(probe.action)
            elif code in _DRY_RUN_REFUSED:
                refusals.append(
                    f"the engine may not {probe.action} on {resource.kind.value} {resource.id} ({code}, asked with "
                    "DryRun): grant it to the executor's role, or lift the policy that denies it"
                )
            elif is_transient(error):
                raise aws_failure(f"{probe.action} (DryRun)", error) from error
            continue
        # An answer without DryRunOperation means the request may have been carried out.
        refusals.append(f"{probe.action} asked with DryRun did not answer DryRunOperation: nothing more is done")
    return refusals, confirmed


# -- all of them ------------------------------------------------------------------------------------------


@dataclass
class PrecheckResult:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # What was looked at, for the audit log.
    facts: dict[str, Any] = field(default_factory=dict)


def staleness(recommendation: Recommendation, max_age: timedelta, now: datetime) -> str | None:
    """Why the recommendation is too old to act on, if it is."""
    age = now - recommendation.created_at
    if age <= max_age:
        return None
    return (
        f"recommendation {recommendation.recommendation_id} was made {age.days} days ago "
        f"({recommendation.created_at.date().isoformat()}); the engine acts only on recommendations from the "
        f"last {max_age.days} days: get a fresh one from its source, the resource may have changed since"
    )


def run_prechecks(
    executor: AnyExecutor,
    recommendation: Recommendation,
    rules: BusinessRules,
    max_age: timedelta,
    now: datetime,
    role_arn: str | None = None,
) -> PrecheckResult:
    result = PrecheckResult()
    if stale := staleness(recommendation, max_age, now):
        result.errors.append(stale)
    result.errors += request_refusals(rules, recommendation)
    if result.errors:
        return result  # refused on the request alone: AWS is not asked
    clients = executor.clients
    resource = executor.resource(recommendation)
    result.facts["resource"] = {"kind": resource.kind.value, "id": resource.id}
    if resource.kind == ResourceKind.NONE:
        return result
    tags = read_tags(clients, resource)
    result.errors += tag_refusals(rules, recommendation, resource, tags)
    if tags and (stack := tags.get(CLOUDFORMATION_STACK_TAG)):
        result.facts["cloudformation_stack"] = stack
        # The customer's rule, where it has one, applies to every type; else the type's own.
        rule = rules.cloudformation_managed or executor.cloudformation_managed
        message = (
            f"{resource.kind.value} {resource.id} belongs to CloudFormation stack {stack}: a change made outside "
            "the stack is drift, which the next stack update undoes or fails on"
        )
        if rule == DependencyRule.REFUSE:
            result.errors.append(message + "; make the change in the stack's template instead")
        elif rule == DependencyRule.WARN:
            result.warnings.append(message)
    if resource.kind == ResourceKind.EC2_INSTANCE and executor.load_balancer_targets != DependencyRule.IGNORE:
        registrations = load_balancer_registrations(clients, resource.id)
        if registrations:
            result.facts["load_balancers"] = registrations
            message = f"instance {resource.id} is registered with {', '.join(registrations)}"
            if executor.load_balancer_targets == DependencyRule.REFUSE:
                result.errors.append(
                    message + ": the change would take it out of service there; deregister it first (letting its "
                    "connections drain)"
                )
            else:
                result.warnings.append(message + ": it fails its health checks while stopped")
    refusals, checked = permission_refusals(clients, executor.permissions, resource, recommendation.region, role_arn)
    result.errors += refusals
    result.facts["permissions"] = checked
    if probes := executor.dry_run_probes(recommendation):
        refused, confirmed = dry_run_refusals(probes, resource)
        result.errors += refused
        result.facts["dry_run_permitted"] = confirmed
    return result
