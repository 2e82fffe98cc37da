"""`fix_config`: bring one setting of a resource to the baseline the recommendation gives.

Three settings, chosen by `parameters.setting`: a CloudWatch Logs group's retention, an EC2
instance's detailed monitoring, and required (cost-allocation) tags on an EC2 instance, an EBS volume
or an S3 bucket. Each is handled the same way: the values the baseline touches are read and recorded
before the change, the baseline is written, and a rollback writes the recorded values back ("never
expire" and "tag absent" included). Writing is idempotent: it reads first and changes only what
differs, so a retried step never acts twice.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Generic, Literal, TypeVar

from botocore.exceptions import ClientError
from pydantic import AfterValidator, Field, RootModel, StrictBool, StrictInt, ValidationError, field_validator

from cost_engine.aws import AwsClients, aws_failure, error_code
from cost_engine.cost_scope import CLOUDWATCH, CostScope
from cost_engine.ec2_reads import find_instance, find_volume, tag_map
from cost_engine.errors import ActionFailed
from cost_engine.executors.base import BaseExecutor, Permission, StepRecord
from cost_engine.executors.registry import register_executor
from cost_engine.models import (
    ExecutionPlan,
    Recommendation,
    RecommendationType,
    RiskLevel,
    RollbackPlan,
    StrictModel,
    ValidationResult,
    VerificationResult,
)
from cost_engine.prechecks import DryRunProbe, Resource, ResourceKind

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import TagTypeDef

# The only values PutRetentionPolicy accepts (CloudWatch Logs API reference); no policy = never expire.
LOG_RETENTION_DAYS = (
    *(1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545),
    *(731, 1096, 1827, 2192, 2557, 2922, 3288, 3653),
)
# AWS tag rules (Tagging AWS resources, "Tag naming limits and requirements"), as EC2 and S3 share them.
MAX_TAGS_PER_RESOURCE = 50
MAX_TAG_KEY_LENGTH = 128
MAX_TAG_VALUE_LENGTH = 256
TAG_PUNCTUATION = frozenset(" _.:/=+-@")
RESERVED_TAG_PREFIX = "aws:"
MONITORING_STATES = frozenset({"running", "stopped", "pending", "stopping"})
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")

_INSTANCE_ARN = "arn:{partition}:ec2:{region}:{account}:instance/*"
_VOLUME_ARN = "arn:{partition}:ec2:{region}:{account}:volume/*"
_LOG_GROUP_ARN = "arn:{partition}:logs:{region}:{account}:log-group:*"
# S3 bucket ARNs carry neither region nor account.
_BUCKET_ARN = "arn:{partition}:s3:::*"


# -- parameters ----------------------------------------------------------------------------------


def _tag_text(text: str) -> bool:
    """Letters, digits and spaces in any script, and _ . : / = + - @ (what every service accepts)."""
    return all(char.isalnum() or char in TAG_PUNCTUATION for char in text)


def _valid_tag_key(key: str) -> str:
    if not 1 <= len(key) <= MAX_TAG_KEY_LENGTH:
        raise ValueError(f"tag key {key!r} must be 1 to {MAX_TAG_KEY_LENGTH} characters long")
    if key.lower().startswith(RESERVED_TAG_PREFIX):
        raise ValueError(f"tag key {key!r} starts with 'aws:', which AWS reserves for its own tags")
    if not _tag_text(key):
        raise ValueError(f"tag key {key!r} may hold only letters, digits, spaces and _ . : / = + - @")
    return key


def _valid_tag_value(value: str) -> str:
    if len(value) > MAX_TAG_VALUE_LENGTH:
        raise ValueError(f"tag value {value[:20]!r}… is longer than {MAX_TAG_VALUE_LENGTH} characters")
    if not _tag_text(value):
        raise ValueError(f"tag value {value!r} may hold only letters, digits, spaces and _ . : / = + - @")
    return value


TagKey = Annotated[str, AfterValidator(_valid_tag_key)]
TagValue = Annotated[str, AfterValidator(_valid_tag_value)]


class LogRetentionBaseline(StrictModel):
    """A CloudWatch Logs group keeps its events this many days (resource_id: the group's name or ARN)."""

    setting: Literal["log_retention"]
    retention_in_days: StrictInt

    @field_validator("retention_in_days")
    @classmethod
    def _accepted_by_cloudwatch_logs(cls, value: int) -> int:
        if value not in LOG_RETENTION_DAYS:
            raise ValueError(
                f"CloudWatch Logs accepts a retention of {', '.join(map(str, LOG_RETENTION_DAYS))} days only"
            )
        return value


class DetailedMonitoringBaseline(StrictModel):
    """An EC2 instance's 1-minute CloudWatch metrics on or off (resource_id: the instance id)."""

    setting: Literal["detailed_monitoring"]
    detailed_monitoring: StrictBool


class RequiredTagsBaseline(StrictModel):
    """Tags an EC2 instance (i-…), an EBS volume (vol-…) or an S3 bucket (its name) must carry."""

    setting: Literal["tags"]
    tags: dict[TagKey, TagValue] = Field(min_length=1, max_length=MAX_TAGS_PER_RESOURCE)


Baseline = Annotated[
    LogRetentionBaseline | DetailedMonitoringBaseline | RequiredTagsBaseline, Field(discriminator="setting")
]


class FixConfigParameters(RootModel[Baseline]):
    """Parameters of `fix_config`: one baseline, told apart by `setting`."""


SettingName = Literal["log_retention", "detailed_monitoring", "tags"]


# -- the values and the records --------------------------------------------------------------------


class RetentionValues(StepRecord):
    """A log group's retention; None: its events never expire."""

    retention_in_days: int | None


class MonitoringValues(StepRecord):
    """Whether an instance's detailed monitoring is on (and billed)."""

    detailed_monitoring: bool


class TagValues(StepRecord):
    """The baseline's tags of a resource; None: the tag is absent (which is not empty)."""

    tags: dict[str, str | None]


# Told apart by their one field, which each requires.
Values = RetentionValues | MonitoringValues | TagValues


class ConfigBackup(StepRecord):
    """The values the baseline sets as they were before the change (what a rollback writes back), and
    the baseline's."""

    execution_id: str
    setting: SettingName
    resource_id: str
    previous: Values
    target: Values


class ConfigChange(StepRecord):
    setting: SettingName
    resource_id: str
    target: Values
    # False when the resource already held the target (a retried step).
    changed: bool


class ConfigRestore(StepRecord):
    resource_id: str
    # False when the execution stopped before the previous values were recorded: nothing was changed.
    restored: bool
    values: Values | None = None
    changed: bool | None = None


# -- the settings ----------------------------------------------------------------------------------

D = TypeVar("D")  # the resource as a setting describes it: a log group, an instance, a tag set
V = TypeVar("V", bound=StepRecord)  # the values a setting reads and writes


class Setting(ABC, Generic[D, V]):
    """One kind of configuration of one resource: read the values the baseline touches, write values.

    Values are small models of the same shape for the current state, the baseline and the record
    kept for a rollback, so "compliant", "done" and "restored" are all an equality test.
    """

    describes: str
    # The resource in a refusal or a failure ("EC2 instance i-1 does not exist").
    name: str

    def __init__(self, clients: AwsClients, resource_id: str) -> None:
        self.clients = clients
        self.resource_id = resource_id

    def unusable_id(self) -> str | None:
        """Why resource_id cannot name such a resource here (checked before AWS is asked); None when it can."""
        return None

    @abstractmethod
    def describe(self) -> D | None:
        """The resource as it is now; None when it does not exist."""

    def locate(self) -> Located[D] | None:
        """The resource with this setting, when resource_id names one that exists here."""
        if self.unusable_id() is not None:
            return None
        resource = self.describe()
        return None if resource is None else Located(self, resource)

    def missing(self) -> str:
        """Why a resource that `locate` did not find is refused."""
        return self.unusable_id() or f"{self.name} does not exist in {self.clients.region}"

    def problems(self, resource: D) -> list[str]:
        """Why the resource, which exists, cannot be configured now; empty when it can."""
        return []

    @abstractmethod
    def read(self) -> V:
        """The current values of what the baseline sets."""

    @abstractmethod
    def write(self, values: V, current: V) -> None:
        """Make the resource hold `values`, changing only what differs from `current`."""

    def facts(self) -> dict[str, Any]:
        """What the plan shows about the resource besides the values."""
        return {}


@dataclass(frozen=True)
class Located(Generic[D]):
    """A setting of a resource that exists, with the resource as validation described it."""

    setting: Setting[D, Any]
    resource: D

    def problems(self) -> list[str]:
        return self.setting.problems(self.resource)


class LogRetention(Setting[dict[str, Any], RetentionValues]):
    describes = "retention of CloudWatch Logs group"

    def __init__(self, clients: AwsClients, resource_id: str, account_id: str, logs: Any) -> None:
        super().__init__(clients, resource_id)
        self.logs = logs
        self.account_id = account_id
        self.group_name = _log_group_name(resource_id)
        self.name = f"CloudWatch Logs group {self.group_name}"

    def _group(self) -> dict[str, Any] | None:
        pages = self.clients.logs.get_paginator("describe_log_groups").paginate(logGroupNamePrefix=self.group_name)
        try:
            for page in pages:
                for group in page.get("logGroups", []):
                    if group["logGroupName"] == self.group_name:
                        return dict(group)
        except ClientError as error:
            raise aws_failure("DescribeLogGroups", error) from error
        return None

    def unusable_id(self) -> str | None:
        if self.resource_id.startswith("arn:"):
            parts = self.resource_id.split(":")
            if parts[3:5] != [self.clients.region, self.account_id]:
                return (
                    f"log group ARN {self.resource_id} is not in {self.clients.region} of account "
                    f"{self.account_id}, where the recommendation says the group is"
                )
        return None

    def describe(self) -> dict[str, Any] | None:
        return self._group()

    def read(self) -> RetentionValues:
        group = self._group()
        if group is None:
            raise ActionFailed(f"{self.name} does not exist")
        # No retentionInDays means the events never expire.
        return RetentionValues(retention_in_days=group.get("retentionInDays"))

    def write(self, values: RetentionValues, current: RetentionValues) -> None:
        days = values.retention_in_days
        if days == current.retention_in_days:
            return
        try:
            if days is None:
                self.clients.logs.delete_retention_policy(logGroupName=self.group_name)
            else:
                self.clients.logs.put_retention_policy(logGroupName=self.group_name, retentionInDays=days)
        except ClientError as error:
            raise aws_failure("PutRetentionPolicy" if days else "DeleteRetentionPolicy", error) from error

    def facts(self) -> dict[str, Any]:
        group = self._group() or {}
        return {"log_group_name": self.group_name, "stored_bytes": group.get("storedBytes")}


class DetailedMonitoring(Setting[dict[str, Any], MonitoringValues]):
    describes = "detailed monitoring of EC2 instance"

    def __init__(self, clients: AwsClients, resource_id: str) -> None:
        super().__init__(clients, resource_id)
        self.name = f"EC2 instance {resource_id}"

    def _instance(self) -> dict[str, Any] | None:
        instance = find_instance(self.clients, self.resource_id)
        return None if instance is None else dict(instance)

    def _monitoring_state(self) -> str:
        instance = self._instance()
        if instance is None:
            raise ActionFailed(f"{self.name} does not exist")
        return str(instance.get("Monitoring", {}).get("State", "disabled"))

    def unusable_id(self) -> str | None:
        if not self.resource_id.startswith("i-"):
            return f"detailed_monitoring applies to an EC2 instance id (i-…), not to {self.resource_id}"
        return None

    def describe(self) -> dict[str, Any] | None:
        return self._instance()

    def problems(self, instance: dict[str, Any]) -> list[str]:
        state = instance["State"]["Name"]
        if state not in MONITORING_STATES:
            return [f"instance {self.resource_id} is '{state}': its monitoring can no longer be changed"]
        monitoring = instance.get("Monitoring", {}).get("State", "disabled")
        if monitoring in ("pending", "disabling"):
            return [f"the monitoring of {self.resource_id} is changing right now ({monitoring}): retry in a minute"]
        return []

    def read(self) -> MonitoringValues:
        # On while AWS still bills it ("disabling"), off until it does ("pending"): so a change is done
        # only when it has settled.
        return MonitoringValues(detailed_monitoring=self._monitoring_state() in ("enabled", "disabling"))

    def write(self, values: MonitoringValues, current: MonitoringValues) -> None:
        state = self._monitoring_state()
        wanted = values.detailed_monitoring
        try:
            if wanted and state not in ("enabled", "pending"):
                self.clients.ec2.monitor_instances(InstanceIds=[self.resource_id])
            elif not wanted and state not in ("disabled", "disabling"):
                self.clients.ec2.unmonitor_instances(InstanceIds=[self.resource_id])
        except ClientError as error:
            raise aws_failure("MonitorInstances" if wanted else "UnmonitorInstances", error) from error


class RequiredTags(Setting[dict[str, str], TagValues]):
    """Tags of an EC2 instance, an EBS volume or an S3 bucket, told apart by the resource id."""

    def __init__(self, clients: AwsClients, resource_id: str, keys: list[str], s3: Any) -> None:
        super().__init__(clients, resource_id)
        self.keys = keys
        self.s3 = s3
        if resource_id.startswith("i-"):
            self.kind = "EC2 instance"
        elif resource_id.startswith("vol-"):
            self.kind = "EBS volume"
        else:
            self.kind = "S3 bucket"
        self.describes = f"tags of {self.kind}"
        self.name = f"{self.kind} {resource_id}"

    def _all_tags(self) -> dict[str, str] | None:
        """Every tag of the resource, or None when it does not exist."""
        if self.kind == "S3 bucket":
            return self._bucket_tags()
        if self.kind == "EC2 instance":
            instance = find_instance(self.clients, self.resource_id)
            if instance is None or instance["State"]["Name"] in ("shutting-down", "terminated"):
                return None
            return tag_map(instance.get("Tags", []))
        volume = find_volume(self.clients, self.resource_id)
        return None if volume is None else tag_map(volume.get("Tags", []))

    def _bucket_tags(self) -> dict[str, str] | None:
        try:
            tag_set = self.clients.s3.get_bucket_tagging(Bucket=self.resource_id)["TagSet"]
        except ClientError as error:
            code = error_code(error)
            if code == "NoSuchTagSet":
                return {}
            if code in ("NoSuchBucket", "InvalidBucketName"):
                return None
            raise aws_failure("GetBucketTagging", error) from error
        return {t["Key"]: t["Value"] for t in tag_set}

    def unusable_id(self) -> str | None:
        if self.kind == "S3 bucket" and not BUCKET_NAME.match(self.resource_id):
            return (
                f"{self.resource_id} is neither an EC2 instance id (i-…), an EBS volume id (vol-…) nor an S3 "
                "bucket name: tags are set on those only"
            )
        return None

    def describe(self) -> dict[str, str] | None:
        return self._all_tags()

    def problems(self, tags: dict[str, str]) -> list[str]:
        problems = []
        if self.kind == "S3 bucket" and any(k.startswith(RESERVED_TAG_PREFIX) for k in tags):
            problems.append(
                f"bucket {self.resource_id} carries AWS's own aws: tags, which PutBucketTagging (it replaces the "
                "whole set) cannot write back: tag this bucket by hand"
            )
        # AWS's own tags do not count towards the limit.
        user_keys = {k for k in tags if not k.startswith(RESERVED_TAG_PREFIX)} | set(self.keys)
        if len(user_keys) > MAX_TAGS_PER_RESOURCE:
            problems.append(
                f"{self.kind} {self.resource_id} would carry {len(user_keys)} tags, more than the "
                f"{MAX_TAGS_PER_RESOURCE} AWS allows"
            )
        return problems

    def read(self) -> TagValues:
        tags = self._all_tags()
        if tags is None:
            raise ActionFailed(f"{self.name} does not exist")
        # None: the tag is absent (which a rollback restores by removing it), not empty.
        return TagValues(tags={key: tags.get(key) for key in self.keys})

    def write(self, values: TagValues, current: TagValues) -> None:
        changed = {k: v for k, v in values.tags.items() if current.tags.get(k) != v}
        if not changed:
            return
        if self.kind == "S3 bucket":
            self._write_bucket_tags(changed)
            return
        to_set: list[TagTypeDef] = [{"Key": k, "Value": v} for k, v in changed.items() if v is not None]
        to_remove: list[TagTypeDef] = [{"Key": k} for k, v in changed.items() if v is None]
        try:
            if to_set:
                self.clients.ec2.create_tags(Resources=[self.resource_id], Tags=to_set)
            if to_remove:
                self.clients.ec2.delete_tags(Resources=[self.resource_id], Tags=to_remove)
        except ClientError as error:
            raise aws_failure("CreateTags" if to_set else "DeleteTags", error) from error

    def _write_bucket_tags(self, changed: dict[str, str | None]) -> None:
        # PutBucketTagging replaces the whole set: start from the bucket's tags now, so tags that
        # others set meanwhile are kept.
        tags = self._bucket_tags() or {}
        for key, value in changed.items():
            if value is None:
                tags.pop(key, None)
            else:
                tags[key] = value
        try:
            if tags:
                self.clients.s3.put_bucket_tagging(
                    Bucket=self.resource_id, Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]}
                )
            else:
                self.clients.s3.delete_bucket_tagging(Bucket=self.resource_id)
        except ClientError as error:
            raise aws_failure("PutBucketTagging", error) from error

    def facts(self) -> dict[str, Any]:
        return {"kind": self.kind}


def _log_group_name(resource_id: str) -> str:
    """A log group's name from its name or its ARN.

    The ARN form matters: a recommendation's resource_id cannot start with '/', as most group
    names (/aws/lambda/…) do.
    """
    if resource_id.startswith("arn:") and ":log-group:" in resource_id:
        name = resource_id.split(":log-group:", 1)[1]
        return name[:-2] if name.endswith(":*") else name
    return resource_id


def _shown(values: Values) -> str:
    match values:
        case RetentionValues():
            days = values.retention_in_days
            return "never expire" if days is None else f"{days} days"
        case MonitoringValues():
            return "on" if values.detailed_monitoring else "off"
        case TagValues():
            return ", ".join(f"{k}={'(absent)' if v is None else repr(v)}" for k, v in values.tags.items())


# -- the executor ----------------------------------------------------------------------------------


@register_executor
class FixConfigExecutor(BaseExecutor[FixConfigParameters, Located[Any], ConfigBackup, ConfigChange, ConfigRestore]):
    recommendation_type = RecommendationType.FIX_CONFIG
    savings_method = (
        "the setting's cost before and after: a log group's stored bytes, an instance's detailed "
        "monitoring metrics (CloudWatch); tags save nothing and are not measured"
    )
    billing_service = CLOUDWATCH
    flow = (
        "Validate (not already compliant) → (dry run → report) → approval → record the previous "
        "values → apply the baseline → poll → verify compliance → record; Catch → rollback (write "
        "the previous values back exactly)."
    )
    risk_level = RiskLevel.LOW
    permissions = (
        # Describe calls of EC2 support no resource-level permissions.
        Permission(("ec2:DescribeInstances", "ec2:DescribeVolumes")),
        Permission(
            # ListTagsForResource: the group's tags, for the common pre-checks.
            (
                "logs:DescribeLogGroups",
                "logs:PutRetentionPolicy",
                "logs:DeleteRetentionPolicy",
                "logs:ListTagsForResource",
            ),
            (_LOG_GROUP_ARN,),
        ),
        Permission(("ec2:MonitorInstances", "ec2:UnmonitorInstances"), (_INSTANCE_ARN,)),
        # Tagging existing resources is the change itself here, so no tag-on-create condition applies.
        Permission(("ec2:CreateTags", "ec2:DeleteTags"), (_INSTANCE_ARN, _VOLUME_ARN)),
        # DeleteBucketTagging is authorized by s3:PutBucketTagging.
        Permission(("s3:GetBucketTagging", "s3:PutBucketTagging"), (_BUCKET_ARN,)),
    )

    def _baseline(self, recommendation: Recommendation) -> Baseline:
        return self.parameters(recommendation).root

    def _setting(self, recommendation: Recommendation, baseline: Baseline) -> Setting[Any, Any]:
        resource_id = recommendation.resource_id
        match baseline:
            case LogRetentionBaseline():
                return LogRetention(self.clients, resource_id, recommendation.account_id, self.clients.logs)
            case DetailedMonitoringBaseline():
                return DetailedMonitoring(self.clients, resource_id)
            case RequiredTagsBaseline():
                return RequiredTags(self.clients, resource_id, list(baseline.tags), self.clients.s3)

    @staticmethod
    def _target(baseline: Baseline) -> Values:
        match baseline:
            case LogRetentionBaseline():
                return RetentionValues(retention_in_days=baseline.retention_in_days)
            case DetailedMonitoringBaseline():
                return MonitoringValues(detailed_monitoring=baseline.detailed_monitoring)
            case RequiredTagsBaseline():
                return TagValues(tags=dict(baseline.tags))

    # -- validate and plan ---------------------------------------------------------------------

    def resource(self, recommendation: Recommendation) -> Resource:
        resource_id = recommendation.resource_id
        try:
            log_group = isinstance(self._baseline(recommendation), LogRetentionBaseline)
        except ValidationError:
            log_group = False  # validate() refuses the parameters, with what to fix
        if log_group:
            return Resource(ResourceKind.LOG_GROUP, _log_group_name(resource_id))
        if resource_id.startswith("i-"):
            return Resource(ResourceKind.EC2_INSTANCE, resource_id)
        if resource_id.startswith("vol-"):
            return Resource(ResourceKind.EBS_VOLUME, resource_id)
        return Resource(ResourceKind.S3_BUCKET, resource_id)

    def dry_run_probes(self, recommendation: Recommendation) -> tuple[DryRunProbe, ...]:
        resource_id, ec2 = recommendation.resource_id, self.clients.ec2
        try:
            baseline = self._baseline(recommendation)
        except ValidationError:
            return ()  # validate() refuses the parameters, with what to fix
        match baseline:
            case DetailedMonitoringBaseline() if resource_id.startswith("i-"):
                turn = ec2.monitor_instances if baseline.detailed_monitoring else ec2.unmonitor_instances
                action = "ec2:MonitorInstances" if baseline.detailed_monitoring else "ec2:UnmonitorInstances"
                return (DryRunProbe(action, lambda: turn(InstanceIds=[resource_id], DryRun=True)),)
            case RequiredTagsBaseline() if resource_id.startswith(("i-", "vol-")):
                tags: list[TagTypeDef] = [{"Key": key, "Value": value} for key, value in baseline.tags.items()]
                return (
                    DryRunProbe(
                        "ec2:CreateTags", lambda: ec2.create_tags(Resources=[resource_id], Tags=tags, DryRun=True)
                    ),
                )
        return ()

    def validate(self, recommendation: Recommendation) -> ValidationResult:
        # The base's opening, but a refused baseline says each problem where it is, without pydantic's
        # header and links: a baseline is written by hand, and this is what its author reads.
        try:
            self.parameters(recommendation)
        except ValidationError as error:
            return self._invalid([f"invalid parameters for {self.recommendation_type.value}: {_readable(error)}"])
        return super().validate(recommendation)

    def find(self, recommendation: Recommendation, params: FixConfigParameters) -> Located[Any] | None:
        return self._setting(recommendation, params.root).locate()

    def not_found(self, recommendation: Recommendation) -> str:
        # What the resource is depends on the setting (and on the resource id, for tags), and an id
        # that cannot name one here is refused as such.
        return self._setting(recommendation, self._baseline(recommendation)).missing()

    def check(
        self, recommendation: Recommendation, params: FixConfigParameters, located: Located[Any]
    ) -> ValidationResult:
        problems = located.problems()
        if problems:
            return self._invalid(problems)
        setting = located.setting
        current = setting.read()
        if current == self._target(params.root):
            what = f"{setting.describes} {recommendation.resource_id}"
            return self._invalid([f"{what} already matches the baseline ({_shown(current)}): nothing to change"])
        return ValidationResult(valid=True, risk_level=self.risk_level, estimated_duration=1)

    def _savings(self, recommendation: Recommendation, baseline: Baseline) -> tuple[float | None, str]:
        estimate = recommendation.estimated_monthly_savings
        match baseline:
            case RequiredTagsBaseline():
                return 0.0, "tags save nothing by themselves: they make the resource's cost attributable"
            case LogRetentionBaseline():
                return estimate, (
                    "the recommendation's own estimate: the price catalog has no CloudWatch Logs storage price "
                    "(and how much stored data is older than the retention is not known here)"
                )
            case DetailedMonitoringBaseline():
                return estimate, (
                    "the recommendation's own estimate: the price catalog has no CloudWatch metric price "
                    "(detailed monitoring publishes 7 metrics per instance, about $2.10 per instance-month)"
                )

    def plan(self, recommendation: Recommendation, execution_id: str) -> ExecutionPlan:
        baseline = self._baseline(recommendation)
        setting = self._setting(recommendation, baseline)
        current = setting.read()
        target = self._target(baseline)
        savings, basis = self._savings(recommendation, baseline)
        what = f"{setting.describes} {recommendation.resource_id}"
        return ExecutionPlan(
            summary=f"Set the {what} from {_shown(current)} to {_shown(target)}",
            actions=[
                f"Record the current {what}: {_shown(current)}",
                f"Set it to {_shown(target)}",
                "Verify from AWS that it now complies",
            ],
            backup=[f"the previous values, recorded in the execution: {_shown(current)}"],
            rollback_plan=RollbackPlan(
                execution_id=execution_id,
                rollback_steps=[f"Set the {what} back to exactly {_shown(current)}"],
                estimated_duration=1,
                risk_level=RiskLevel.LOW,
                requires_approval=False,
            ),
            estimated_monthly_savings=savings,
            savings_basis=basis,
            resource={
                "resource_id": recommendation.resource_id,
                "setting": baseline.setting,
                "current": current.model_dump(mode="json"),
                "target": target.model_dump(mode="json"),
                **setting.facts(),
            },
        )

    # -- backup --------------------------------------------------------------------------------

    def backup(self, recommendation: Recommendation, execution_id: str) -> ConfigBackup:
        baseline = self._baseline(recommendation)
        setting = self._setting(recommendation, baseline)
        # Recorded before anything changes; a retried backup step reads the same untouched values.
        return ConfigBackup(
            execution_id=execution_id,
            setting=baseline.setting,
            resource_id=recommendation.resource_id,
            previous=setting.read(),
            target=self._target(baseline),
        )

    def backup_ready(self, recommendation: Recommendation, backup: ConfigBackup) -> bool:
        return True  # the record is the backup: nothing to wait for

    # -- act -----------------------------------------------------------------------------------

    def apply(self, recommendation: Recommendation, backup: ConfigBackup) -> ConfigChange:
        setting = self._setting(recommendation, self._baseline(recommendation))
        current = setting.read()
        setting.write(backup.target, current)
        return ConfigChange(
            setting=backup.setting,
            resource_id=recommendation.resource_id,
            target=backup.target,
            changed=current != backup.target,
        )

    def apply_done(self, recommendation: Recommendation, action: ConfigChange) -> bool:
        setting = self._setting(recommendation, self._baseline(recommendation))
        return bool(setting.read() == action.target)

    def verify(self, recommendation: Recommendation, action: ConfigChange) -> VerificationResult:
        setting = self._setting(recommendation, self._baseline(recommendation))
        current = setting.read()
        line = f"{setting.describes} {recommendation.resource_id} is {_shown(current)}"
        if current == action.target:
            return VerificationResult(passed=True, checks=[line])
        return VerificationResult(passed=False, failures=[f"{line}, not {_shown(action.target)}"])

    def cost_scope(self, recommendation: Recommendation, action: Any) -> CostScope:
        # CloudWatch bills a log group and an instance's metrics under the resource they are about.
        return CostScope(self.savings_method, self.billing_service, (recommendation.resource_id,))

    def expected_savings(self, recommendation: Recommendation, backup: ConfigBackup) -> float | None:
        return self._savings(recommendation, self._baseline(recommendation))[0]

    # -- rollback ------------------------------------------------------------------------------

    def rollback(
        self,
        recommendation: Recommendation,
        backup: ConfigBackup | None,
        action: ConfigChange | None,
    ) -> ConfigRestore:
        if backup is None:
            # The change is made only after the previous values are recorded: nothing was changed.
            return ConfigRestore(resource_id=recommendation.resource_id, restored=False)
        setting = self._setting(recommendation, self._baseline(recommendation))
        current = setting.read()
        setting.write(backup.previous, current)
        return ConfigRestore(
            resource_id=recommendation.resource_id,
            restored=True,
            values=backup.previous,
            changed=current != backup.previous,
        )

    def rollback_done(self, recommendation: Recommendation, rollback: ConfigRestore) -> bool:
        if not rollback.restored or rollback.values is None:
            return True
        setting = self._setting(recommendation, self._baseline(recommendation))
        return bool(setting.read() == rollback.values)


def _readable(error: ValidationError) -> str:
    """Each problem with where it is, without pydantic's links."""
    return "; ".join(
        f"{'.'.join(str(part) for part in problem['loc']) or 'parameters'}: {problem['msg']}"
        for problem in error.errors(include_url=False)
    )
