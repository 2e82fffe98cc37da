"""`enable_autoscaling`: put the workload of a standalone EC2 instance behind an Auto Scaling group.

From the instance: an AMI and its recorded configuration (backup), then a launch template, a group
with the recommended min/max/desired in the instance's subnet (or the given ones) and a
target-tracking policy (act); verified healthy at the desired size. The standalone instance is left
running as it was: moving its traffic to the group and retiring it are the owner's next steps.
Rollback deletes everything the execution created (policy, group, launch template, AMI and its
snapshots) and makes sure the original instance runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from botocore.exceptions import ClientError
from pydantic import Field, StrictFloat, StrictInt, StringConstraints, model_validator

from cost_engine.aws import aws_failure, error_code
from cost_engine.business_rules import DependencyRule
from cost_engine.cost_scope import CostScope
from cost_engine.ec2_instances import EXECUTION_TAG, GONE_STATES, SOURCE_INSTANCE_TAG, Ec2InstanceReads, LaunchConfig
from cost_engine.errors import ActionFailed
from cost_engine.executors.base import BaseExecutor, Permission, Polling, StepRecord
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
from cost_engine.prechecks import DryRunProbe
from cost_engine.pricing import price_catalog

if TYPE_CHECKING:
    from mypy_boto3_autoscaling.type_defs import AutoScalingGroupTypeDef, ScalingPolicyTypeDef
    from mypy_boto3_ec2.type_defs import ImageTypeDef, InstanceTypeDef, TagTypeDef

NAME_PREFIX = "cost-engine-"

_INSTANCE_ARN = "arn:{partition}:ec2:{region}:{account}:instance/*"
_GROUP_ARN = "arn:{partition}:autoscaling:{region}:{account}:autoScalingGroup:*:autoScalingGroupName/cost-engine-*"
_ENGINE_TAGGED = {"StringLike": {"aws:ResourceTag/cost-engine:execution-id": "*"}}


class TargetTracking(StrictModel):
    # ALBRequestCountPerTarget also needs the load balancer's target group: not supported here.
    metric: Literal["ASGAverageCPUUtilization", "ASGAverageNetworkIn", "ASGAverageNetworkOut"] = (
        "ASGAverageCPUUtilization"
    )
    target_value: StrictFloat = Field(gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _cpu_is_a_percentage(self) -> TargetTracking:
        if self.metric == "ASGAverageCPUUtilization" and self.target_value > 100:
            raise ValueError(
                f"a CPU utilization target is a percentage: 0 < target_value ≤ 100, got {self.target_value}"
            )
        return self


class EnableAutoscalingParameters(StrictModel):
    min_size: StrictInt = Field(ge=0)
    max_size: StrictInt = Field(ge=1)
    desired_capacity: StrictInt = Field(ge=0)
    target_tracking: TargetTracking
    # Default: the instance's own subnet.
    subnets: list[Annotated[str, StringConstraints(pattern=r"^subnet-[0-9a-f]{8,17}$")]] | None = Field(
        default=None, min_length=1
    )

    @model_validator(mode="after")
    def _sizes_are_ordered(self) -> EnableAutoscalingParameters:
        if not self.min_size <= self.desired_capacity <= self.max_size:
            raise ValueError(
                "sizes must satisfy 0 ≤ min_size ≤ desired_capacity ≤ max_size and max_size ≥ 1: got "
                f"min_size={self.min_size}, desired_capacity={self.desired_capacity}, max_size={self.max_size}"
            )
        return self


class ResourceNames(StepRecord):
    """The names of what an execution creates."""

    group: str
    launch_template: str
    policy: str
    image: str


def names_for(instance_id: str, execution_id: str) -> ResourceNames:
    """What an execution creates, named after the instance and the execution: readable, unique, and
    found again by a retried step without any other record."""
    base = f"{NAME_PREFIX}{instance_id}-{execution_id}"
    return ResourceNames(
        group=base,
        launch_template=base,
        policy=f"{NAME_PREFIX}target-tracking-{execution_id}",
        image=f"{NAME_PREFIX}asg-{execution_id}",
    )


class AutoscalingBackup(StepRecord):
    """The instance's AMI and recorded configuration, which the launch template is made from."""

    execution_id: str
    instance_id: str
    original_state: str
    launch_config: LaunchConfig
    names: ResourceNames
    subnets: list[str]
    image_id: str


class AutoscalingSetup(StepRecord):
    """The group, its launch template and its policy, as made (and as asked)."""

    group: str
    launch_template_id: str
    launch_template: str
    policy: str
    image_id: str
    instance_id: str
    min_size: int
    max_size: int
    desired_capacity: int
    metric: str
    target_value: float
    subnets: list[str]


class AutoscalingRemoval(StepRecord):
    """What a rollback removed; the launch template and the AMI go in rollback_done."""

    instance_id: str
    removed: list[str]
    # Why nothing was to be removed, when the execution stopped before its backup.
    note: str | None = None
    # Recorded once there was a backup: what rollback_done deletes.
    names: ResourceNames | None = None
    image_id: str | None = None


@register_executor
class EnableAutoscalingExecutor(
    Ec2InstanceReads,
    BaseExecutor[
        EnableAutoscalingParameters, "InstanceTypeDef", AutoscalingBackup, AutoscalingSetup, AutoscalingRemoval
    ],
):
    recommendation_type = RecommendationType.ENABLE_AUTOSCALING
    watches = True
    live_guardrails = "the Auto Scaling group's healthy, in-service instances at its desired capacity"
    savings_method = "the instance's cost before, against its Auto Scaling group's instances' after"
    flow = (
        "Validate → (dry run → report) → approval → AMI of the instance → launch template, Auto "
        "Scaling group, target-tracking policy → poll until healthy at the desired size → verify "
        "→ record; Catch → rollback (delete what was created; the original keeps running)."
    )
    resource_name = "EC2 instance"
    risk_level = RiskLevel.MEDIUM
    # The AMI of the instance comes first, and can take an hour for large volumes.
    polling = Polling(first_seconds=5, longest_seconds=30, budget_seconds=2 * 3600)
    # The instance itself is left as it was; the group is new, made outside any stack.
    cloudformation_managed = DependencyRule.WARN
    permissions = (
        # Describe calls take no resource ARN.
        Permission(
            (
                "ec2:DescribeInstances",
                "ec2:DescribeInstanceAttribute",
                "ec2:DescribeInstanceTypes",
                "ec2:DescribeImages",
                "ec2:DescribeSnapshots",
                "ec2:DescribeSubnets",
                "ec2:DescribeLaunchTemplates",
                "ec2:DescribeLaunchTemplateVersions",
                "autoscaling:DescribeAutoScalingGroups",
                "autoscaling:DescribeAutoScalingInstances",
                "autoscaling:DescribePolicies",
            )
        ),
        Permission(
            ("ec2:CreateImage",),
            (_INSTANCE_ARN, "arn:{partition}:ec2:{region}::image/*", "arn:{partition}:ec2:{region}::snapshot/*"),
        ),
        Permission(
            ("ec2:CreateLaunchTemplate",),
            ("arn:{partition}:ec2:{region}:{account}:launch-template/*",),
            conditions={"StringLike": {"aws:RequestTag/cost-engine:execution-id": "*"}},
        ),
        # Tags only as part of creating the image, the launch template, or the group's instances.
        Permission(
            ("ec2:CreateTags",),
            (
                "arn:{partition}:ec2:{region}::image/*",
                "arn:{partition}:ec2:{region}:{account}:launch-template/*",
                _INSTANCE_ARN,
                "arn:{partition}:ec2:{region}:{account}:volume/*",
            ),
            conditions={"StringEquals": {"ec2:CreateAction": ["CreateImage", "CreateLaunchTemplate", "RunInstances"]}},
        ),
        # Only what this engine created (tagged with an execution id) is deleted.
        Permission(
            ("ec2:DeleteLaunchTemplate", "ec2:DeregisterImage"),
            ("arn:{partition}:ec2:{region}:{account}:launch-template/*", "arn:{partition}:ec2:{region}::image/*"),
            conditions=_ENGINE_TAGGED,
        ),
        # The AMI's snapshots cannot be tagged on creation (CreateImage tags the image), so no tag
        # condition is possible; the executor deletes only those whose description names its AMI.
        Permission(("ec2:DeleteSnapshot",), ("arn:{partition}:ec2:{region}::snapshot/*",)),
        # Creating a group from a launch template is checked as a RunInstances of its caller.
        Permission(
            ("ec2:RunInstances",),
            (
                _INSTANCE_ARN,
                "arn:{partition}:ec2:{region}::image/*",
                "arn:{partition}:ec2:{region}:{account}:launch-template/*",
                "arn:{partition}:ec2:{region}:{account}:volume/*",
                "arn:{partition}:ec2:{region}:{account}:network-interface/*",
                "arn:{partition}:ec2:{region}:{account}:subnet/*",
                "arn:{partition}:ec2:{region}:{account}:security-group/*",
                "arn:{partition}:ec2:{region}:{account}:key-pair/*",
            ),
        ),
        # The original instance is only ever started again, never stopped or changed.
        Permission(("ec2:StartInstances",), (_INSTANCE_ARN,)),
        Permission(
            ("autoscaling:CreateAutoScalingGroup", "autoscaling:CreateOrUpdateTags"),
            (_GROUP_ARN,),
            conditions={"StringLike": {"aws:RequestTag/cost-engine:execution-id": "*"}},
        ),
        Permission(
            ("autoscaling:PutScalingPolicy", "autoscaling:DeletePolicy", "autoscaling:DeleteAutoScalingGroup"),
            (_GROUP_ARN,),
            conditions=_ENGINE_TAGGED,
        ),
        # The instances of the group run with the original's instance profile.
        Permission(
            ("iam:PassRole",),
            ("arn:{partition}:iam::{account}:role/*",),
            conditions={"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
        ),
        # The first group of an account creates Auto Scaling's service-linked role.
        Permission(
            ("iam:CreateServiceLinkedRole",),
            (
                "arn:{partition}:iam::{account}:role/aws-service-role/autoscaling.amazonaws.com/"
                "AWSServiceRoleForAutoScaling*",
            ),
            conditions={"StringEquals": {"iam:AWSServiceName": "autoscaling.amazonaws.com"}},
        ),
    )

    # -- reading -------------------------------------------------------------------------------

    def _group(self, name: str) -> AutoScalingGroupTypeDef | None:
        groups = self.clients.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])
        found = groups.get("AutoScalingGroups", [])
        return found[0] if found else None

    def _policy(self, group: str, name: str) -> ScalingPolicyTypeDef | None:
        policies = self.clients.autoscaling.describe_policies(AutoScalingGroupName=group, PolicyNames=[name])
        found = policies.get("ScalingPolicies", [])
        return found[0] if found else None

    def _launch_template_id(self, name: str) -> str | None:
        try:
            templates = self.clients.ec2.describe_launch_templates(LaunchTemplateNames=[name])["LaunchTemplates"]
        except ClientError as error:
            if error_code(error).startswith("InvalidLaunchTemplateName.NotFound"):
                return None
            raise aws_failure("DescribeLaunchTemplates", error) from error
        return templates[0]["LaunchTemplateId"] if templates else None

    def _engine_groups_from(self, instance_id: str) -> list[str]:
        groups = self.clients.autoscaling.describe_auto_scaling_groups(
            Filters=[{"Name": f"tag:{SOURCE_INSTANCE_TAG}", "Values": [instance_id]}]
        )["AutoScalingGroups"]
        return [g["AutoScalingGroupName"] for g in groups]

    def _engine_templates_from(self, instance_id: str) -> list[str]:
        templates = self.clients.ec2.describe_launch_templates(
            Filters=[{"Name": f"tag:{SOURCE_INSTANCE_TAG}", "Values": [instance_id]}]
        )["LaunchTemplates"]
        return [t["LaunchTemplateName"] for t in templates]

    # -- validate and plan ---------------------------------------------------------------------

    def dry_run_probes(self, recommendation: Recommendation) -> tuple[DryRunProbe, ...]:
        return (self._backup_image_probe(recommendation.resource_id),)

    def find(self, recommendation: Recommendation, params: EnableAutoscalingParameters) -> InstanceTypeDef | None:
        return self._instance(recommendation.resource_id)

    def check(
        self, recommendation: Recommendation, params: EnableAutoscalingParameters, instance: InstanceTypeDef
    ) -> ValidationResult:
        instance_id = recommendation.resource_id
        errors: list[str] = []
        warnings: list[str] = []
        state = instance["State"]["Name"]
        if state != "running":
            errors.append(
                f"instance {instance_id} is '{state}': a group is built from a running instance, so that its "
                "image and configuration are those in service"
            )
        for member in self.clients.autoscaling.describe_auto_scaling_instances(InstanceIds=[instance_id]).get(
            "AutoScalingInstances", []
        ):
            errors.append(
                f"instance {instance_id} already belongs to Auto Scaling group '{member['AutoScalingGroupName']}': "
                "change that group's sizes and policies instead"
            )
        # The names an execution creates start with the instance's id: a leftover of an earlier
        # execution (not rolled back) would make a second group of the same workload.
        for group in self._engine_groups_from(instance_id):
            errors.append(
                f"Auto Scaling group '{group}' was already made from {instance_id} by this engine: roll back that "
                "execution (or delete the group) before making another"
            )
        for template in self._engine_templates_from(instance_id):
            errors.append(
                f"launch template '{template}' was already made from {instance_id} by this engine: roll back that "
                "execution (or delete the template) first"
            )
        if instance.get("RootDeviceType") == "instance-store":
            errors.append(f"instance {instance_id} has an instance-store root device: no image can be made for a group")
        vpc_id = instance.get("VpcId")
        if not instance.get("SubnetId"):
            errors.append(f"instance {instance_id} is not in a VPC subnet: an Auto Scaling group needs subnets")
        elif params.subnets:
            errors += self._subnet_errors(params.subnets, vpc_id)
        if self._instance_store_gb(instance["InstanceType"]):
            warnings.append(
                f"instance type {instance['InstanceType']} has instance-store volumes: their data is not in the "
                "image, so the group's instances start with empty instance stores"
            )
        data_volumes = [
            m for m in instance.get("BlockDeviceMappings", []) if m.get("DeviceName") != instance.get("RootDeviceName")
        ]
        if data_volumes:
            warnings.append(
                f"instance {instance_id} has {len(data_volumes)} data volume(s): each instance of the group starts "
                "with its own copy as of the backup, so the workload must not keep state it needs on local disks"
            )
        warnings.append(
            f"instance {instance_id} keeps running (and costing) next to the group: move its traffic to the group "
            "(e.g. a load balancer) and retire it when ready"
        )
        if errors:
            return self._invalid(errors, warnings)
        return ValidationResult(valid=True, warnings=warnings, risk_level=self.risk_level, estimated_duration=15)

    def _subnet_errors(self, subnets: list[str], vpc_id: str | None) -> list[str]:
        try:
            described = self.clients.ec2.describe_subnets(SubnetIds=subnets)["Subnets"]
        except ClientError as error:
            if error_code(error).startswith("InvalidSubnetID"):
                return [f"subnets {', '.join(subnets)}: at least one does not exist ({error_code(error)})"]
            raise aws_failure("DescribeSubnets", error) from error
        return [
            f"subnet {s['SubnetId']} is in {s.get('VpcId')}, but the instance's security groups are in {vpc_id}: "
            "give subnets of the instance's VPC"
            for s in described
            if s.get("VpcId") != vpc_id
        ]

    def _cost_note(self, instance_type: str, desired: int) -> tuple[str, dict[str, float]]:
        monthly = price_catalog().instance_monthly(instance_type)
        if monthly is None:
            return f"no catalog price for {instance_type}", {}
        return (
            f"at desired capacity the group costs ${desired * monthly:,.2f}/month ({desired} x ${monthly:,.2f}, "
            f"{price_catalog().basis}) next to ${monthly:,.2f}/month for the standalone instance until it is retired",
            {"instance_monthly_usd": monthly, "group_at_desired_monthly_usd": round(desired * monthly, 2)},
        )

    def plan(self, recommendation: Recommendation, execution_id: str) -> ExecutionPlan:
        params = self.parameters(recommendation)
        instance_id = recommendation.resource_id
        instance = self._require_instance(instance_id)
        instance_type = instance["InstanceType"]
        names = names_for(instance_id, execution_id)
        subnets = params.subnets or [str(instance.get("SubnetId"))]
        tracking = params.target_tracking
        note, costs = self._cost_note(instance_type, params.desired_capacity)
        return ExecutionPlan(
            summary=(
                f"Put {instance_id} ({instance_type}) behind Auto Scaling group '{names.group}' "
                f"(min {params.min_size}, desired {params.desired_capacity}, max {params.max_size}), "
                f"target tracking {tracking.metric} at {tracking.target_value}"
            ),
            actions=[
                f"Record the configuration of {instance_id} and create AMI '{names.image}' of it without reboot",
                "Wait until the AMI is available",
                f"Create launch template '{names.launch_template}' from the AMI and the recorded type, security "
                "groups, key pair, instance profile, tags, user data and monitoring",
                f"Create Auto Scaling group '{names.group}' in {', '.join(subnets)} with min {params.min_size}, "
                f"desired {params.desired_capacity}, max {params.max_size}",
                f"Add target-tracking policy '{names.policy}': {tracking.metric} at {tracking.target_value}",
                f"Wait until {params.desired_capacity} instance(s) are InService and Healthy, and verify",
                f"Leave {instance_id} running as it is",
            ],
            backup=[f"AMI of {instance_id} and its recorded configuration (used by the launch template)"],
            rollback_plan=RollbackPlan(
                execution_id=execution_id,
                rollback_steps=[
                    f"Delete scaling policy '{names.policy}'",
                    f"Force-delete group '{names.group}' (terminating its instances) and wait until it is gone",
                    f"Delete launch template '{names.launch_template}'",
                    f"Deregister AMI '{names.image}' and delete its snapshots",
                    f"Make sure {instance_id} is running, as it was",
                ],
                estimated_duration=10,
                risk_level=RiskLevel.LOW,
                requires_approval=False,
            ),
            estimated_monthly_savings=recommendation.estimated_monthly_savings,
            savings_basis=(
                "the recommendation's own estimate: what the group saves depends on how often it scales in and on "
                f"retiring the standalone instance, which the engine cannot know; {note}"
            ),
            resource={
                "instance_id": instance_id,
                "instance_type": instance_type,
                "subnets": subnets,
                "names": names.model_dump(mode="json"),
                **costs,
            },
        )

    # -- backup --------------------------------------------------------------------------------

    def backup(self, recommendation: Recommendation, execution_id: str) -> AutoscalingBackup:
        params = self.parameters(recommendation)
        instance_id = recommendation.resource_id
        instance = self._require_instance(instance_id)
        config = self._launch_config(instance)
        names = names_for(instance_id, execution_id)
        # A launch template needs an image: an AMI of this instance carries its software and
        # configuration, so that the group's instances serve what it serves. It is also what a
        # person would relaunch from. A retried step finds the one it started.
        image_id = self._backup_image(
            instance_id,
            execution_id,
            name=names.image,
            description=f"Image of {instance_id} for its Auto Scaling group ({execution_id})",
        )
        return AutoscalingBackup(
            execution_id=execution_id,
            instance_id=instance_id,
            original_state=instance["State"]["Name"],
            launch_config=config,
            names=names,
            # Validation refuses an instance outside a VPC subnet.
            subnets=params.subnets or [str(config.subnet_id)],
            image_id=image_id,
        )

    def backup_ready(self, recommendation: Recommendation, backup: AutoscalingBackup) -> bool:
        return self._image_ready(backup.image_id, label="AMI", then="nothing else was created")

    # -- act -----------------------------------------------------------------------------------

    def _create_launch_template(self, backup: AutoscalingBackup) -> str:
        config = backup.launch_config
        execution_id = backup.execution_id
        engine_tags: list[TagTypeDef] = [
            {"Key": EXECUTION_TAG, "Value": execution_id},
            {"Key": SOURCE_INSTANCE_TAG, "Value": backup.instance_id},
        ]
        instance_tags: list[TagTypeDef] = [
            {"Key": k, "Value": v} for k, v in config.tags.items() if not k.startswith("cost-engine:")
        ]
        tag_specs = [
            {"ResourceType": "instance", "Tags": instance_tags + engine_tags},
            {"ResourceType": "volume", "Tags": engine_tags},
        ]
        data: dict[str, Any] = {
            "ImageId": backup.image_id,
            "InstanceType": config.instance_type,
            "EbsOptimized": config.ebs_optimized,
            "Monitoring": {"Enabled": config.detailed_monitoring},
            "TagSpecifications": tag_specs,
        }
        if config.security_group_ids:
            data["SecurityGroupIds"] = config.security_group_ids
        if config.key_name:
            data["KeyName"] = config.key_name
        if config.iam_instance_profile_arn:
            data["IamInstanceProfile"] = {"Arn": config.iam_instance_profile_arn}
        if config.user_data_base64:
            data["UserData"] = config.user_data_base64  # a launch template takes it base64-encoded
        try:
            created = self.clients.ec2.create_launch_template(
                LaunchTemplateName=backup.names.launch_template,
                VersionDescription=f"from {backup.instance_id} ({execution_id})",
                LaunchTemplateData=data,  # type: ignore[arg-type]
                TagSpecifications=[{"ResourceType": "launch-template", "Tags": engine_tags}],
            )
        except ClientError as error:
            raise aws_failure("CreateLaunchTemplate", error) from error
        return created["LaunchTemplate"]["LaunchTemplateId"]

    def apply(self, recommendation: Recommendation, backup: AutoscalingBackup) -> AutoscalingSetup:
        params = self.parameters(recommendation)
        names = backup.names
        execution_id = backup.execution_id
        # Each piece is looked for before it is made, so a retried step carries on where it stopped.
        template_id = self._launch_template_id(names.launch_template) or self._create_launch_template(backup)
        if self._group(names.group) is None:
            try:
                self.clients.autoscaling.create_auto_scaling_group(
                    AutoScalingGroupName=names.group,
                    LaunchTemplate={"LaunchTemplateId": template_id, "Version": "$Default"},
                    MinSize=params.min_size,
                    MaxSize=params.max_size,
                    DesiredCapacity=params.desired_capacity,
                    VPCZoneIdentifier=",".join(backup.subnets),
                    HealthCheckType="EC2",
                    Tags=[
                        {
                            "Key": key,
                            "Value": value,
                            "PropagateAtLaunch": False,
                            "ResourceId": names.group,
                            "ResourceType": "auto-scaling-group",
                        }
                        for key, value in ((EXECUTION_TAG, execution_id), (SOURCE_INSTANCE_TAG, backup.instance_id))
                    ],
                )
            except ClientError as error:
                if error_code(error) != "AlreadyExists":
                    raise aws_failure("CreateAutoScalingGroup", error) from error
        tracking = params.target_tracking
        if self._policy(names.group, names.policy) is None:
            try:
                self.clients.autoscaling.put_scaling_policy(
                    AutoScalingGroupName=names.group,
                    PolicyName=names.policy,
                    PolicyType="TargetTrackingScaling",
                    TargetTrackingConfiguration={
                        "PredefinedMetricSpecification": {"PredefinedMetricType": tracking.metric},
                        "TargetValue": tracking.target_value,
                    },
                )
            except ClientError as error:
                raise aws_failure("PutScalingPolicy", error) from error
        return AutoscalingSetup(
            group=names.group,
            launch_template_id=template_id,
            launch_template=names.launch_template,
            policy=names.policy,
            image_id=backup.image_id,
            instance_id=backup.instance_id,
            min_size=params.min_size,
            max_size=params.max_size,
            desired_capacity=params.desired_capacity,
            metric=tracking.metric,
            target_value=tracking.target_value,
            subnets=backup.subnets,
        )

    @staticmethod
    def _healthy(group: AutoScalingGroupTypeDef) -> list[str]:
        return [
            i["InstanceId"]
            for i in group.get("Instances", [])
            if i.get("LifecycleState") == "InService" and i.get("HealthStatus") == "Healthy"
        ]

    def apply_done(self, recommendation: Recommendation, action: AutoscalingSetup) -> bool:
        group = self._group(action.group)
        if group is None:
            raise ActionFailed(f"Auto Scaling group '{action.group}' is gone")
        return len(self._healthy(group)) >= action.desired_capacity

    def verify(self, recommendation: Recommendation, action: AutoscalingSetup) -> VerificationResult:
        checks: list[str] = []
        failures: list[str] = []

        def check(ok: bool, text: str) -> None:
            (checks if ok else failures).append(text)

        group = self._group(action.group)
        if group is None:
            return VerificationResult(passed=False, failures=[f"group '{action.group}' does not exist"])
        check(
            (group["MinSize"], group["MaxSize"]) == (action.min_size, action.max_size),
            f"group '{action.group}' has min {group['MinSize']} and max {group['MaxSize']} "
            f"(asked {action.min_size}..{action.max_size})",
        )
        # The policy may already have moved the desired capacity within min..max.
        desired = group["DesiredCapacity"]
        healthy = self._healthy(group)
        check(
            action.min_size <= desired <= action.max_size and len(healthy) == desired,
            f"{len(healthy)} instance(s) InService and Healthy for a desired capacity of {desired}",
        )
        policy = self._policy(action.group, action.policy)
        tracking = (policy or {}).get("TargetTrackingConfiguration", {})
        metric = tracking.get("PredefinedMetricSpecification", {}).get("PredefinedMetricType")
        check(
            policy is not None and metric == action.metric and tracking.get("TargetValue") == action.target_value,
            f"target-tracking policy '{action.policy}': {metric} at {tracking.get('TargetValue')}",
        )
        versions = self.clients.ec2.describe_launch_template_versions(
            LaunchTemplateId=action.launch_template_id, Versions=["$Default"]
        )["LaunchTemplateVersions"]
        image = versions[0].get("LaunchTemplateData", {}).get("ImageId") if versions else None
        check(image == action.image_id, f"launch template '{action.launch_template}' launches {image}")
        original = self._instance(action.instance_id)
        state = original["State"]["Name"] if original else "gone"
        check(state == "running", f"the original instance {action.instance_id} is {state}")
        return VerificationResult(passed=not failures, checks=checks, failures=failures)

    def cost_scope(self, recommendation: Recommendation, action: Any) -> CostScope:
        # The group's instances come and go: after the change the cost is the group's, by the tag AWS
        # puts on each of them (a cost allocation tag once activated).
        group = action.group if isinstance(action, AutoscalingSetup) else None
        tags = {"aws:autoscaling:groupName": (group,)} if group else {}
        return CostScope(self.savings_method, self.billing_service, (recommendation.resource_id,), tags=tags)

    def guardrail_dimensions(self, recommendation: Recommendation, action: Any, namespace: str) -> dict[str, str]:
        if namespace == "AWS/AutoScaling" and isinstance(action, AutoscalingSetup):
            return {"AutoScalingGroupName": action.group}
        return super().guardrail_dimensions(recommendation, action, namespace)

    def guardrail_breaches(self, recommendation: Recommendation, action: Any) -> list[str]:
        """The group below its desired count of healthy, in-service instances."""
        if not isinstance(action, AutoscalingSetup):
            return []
        groups = self.clients.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[action.group])[
            "AutoScalingGroups"
        ]
        if not groups:
            return [f"Auto Scaling group {action.group} is gone"]
        group = groups[0]
        healthy = [
            i
            for i in group.get("Instances", [])
            if i.get("LifecycleState") == "InService" and i.get("HealthStatus") == "Healthy"
        ]
        if len(healthy) < group["DesiredCapacity"]:
            return [
                f"Auto Scaling group {action.group} has {len(healthy)} healthy in-service instance(s), "
                f"below its desired {group['DesiredCapacity']}"
            ]
        return []

    def expected_savings(self, recommendation: Recommendation, backup: AutoscalingBackup) -> float | None:
        # See the plan's savings_basis: only the recommendation can say how often the group scales in.
        return recommendation.estimated_monthly_savings

    # -- rollback ------------------------------------------------------------------------------

    def rollback(
        self,
        recommendation: Recommendation,
        backup: AutoscalingBackup | None,
        action: AutoscalingSetup | None,
    ) -> AutoscalingRemoval:
        instance_id = recommendation.resource_id
        if backup is None:
            # The backup step records its AMI before anything else is made: nothing was created.
            return AutoscalingRemoval(
                instance_id=instance_id,
                removed=[],
                note="the execution stopped before its backup: nothing was created",
            )
        names = backup.names
        removed: list[str] = []
        group = self._group(names.group)
        if group is not None:
            try:
                if self._policy(names.group, names.policy) is not None:
                    self.clients.autoscaling.delete_policy(AutoScalingGroupName=names.group, PolicyName=names.policy)
                    removed.append(f"scaling policy {names.policy}")
                if group.get("Status") != "Delete in progress":
                    self.clients.autoscaling.delete_auto_scaling_group(
                        AutoScalingGroupName=names.group, ForceDelete=True
                    )
                removed.append(f"Auto Scaling group {names.group} (force delete)")
            except ClientError as error:
                raise aws_failure("rollback of the Auto Scaling group", error) from error
        # The launch template, the AMI and its snapshots go once the group (and its instances) are
        # gone, in rollback_done: the group refers to the template until then.
        return AutoscalingRemoval(instance_id=instance_id, removed=removed, names=names, image_id=backup.image_id)

    def _snapshots_of(self, instance_id: str, image_id: str, image: ImageTypeDef | None) -> set[str]:
        mappings = image.get("BlockDeviceMappings", []) if image else []
        snapshots = {m["Ebs"]["SnapshotId"] for m in mappings if m.get("Ebs", {}).get("SnapshotId")}
        # After a deregistration the image is gone: CreateImage describes its snapshots like this.
        described = self.clients.ec2.describe_snapshots(
            OwnerIds=["self"],
            Filters=[{"Name": "description", "Values": [f"Created by CreateImage({instance_id}) for {image_id}*"]}],
        )["Snapshots"]
        return snapshots | {s["SnapshotId"] for s in described}

    def rollback_done(self, recommendation: Recommendation, rollback: AutoscalingRemoval) -> bool:
        names, image_id = rollback.names, rollback.image_id
        if names is not None and image_id is not None:  # recorded together, once there was a backup
            if self._group(names.group) is not None:
                return False  # AWS is terminating its instances
            try:
                template_id = self._launch_template_id(names.launch_template)
                if template_id is not None:
                    self.clients.ec2.delete_launch_template(LaunchTemplateId=template_id)
                image = self._image(image_id)
                snapshots = self._snapshots_of(rollback.instance_id, image_id, image)
                if image is not None:
                    self.clients.ec2.deregister_image(ImageId=image_id)
                for snapshot_id in sorted(snapshots):
                    self.clients.ec2.delete_snapshot(SnapshotId=snapshot_id)
            except ClientError as error:
                raise aws_failure("rollback of the launch template and AMI", error) from error
        return self._original_running(rollback.instance_id)

    def _original_running(self, instance_id: str) -> bool:
        instance = self._instance(instance_id)
        state = instance["State"]["Name"] if instance else "gone"
        if state in GONE_STATES or instance is None:
            raise ActionFailed(
                f"the original instance {instance_id} is {state}; this execution never stops or terminates it, "
                "so something else did: relaunch it from its own backups"
            )
        if state == "stopped":
            self.clients.ec2.start_instances(InstanceIds=[instance_id])
        return state == "running"
