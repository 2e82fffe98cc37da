"""`terminate_instance` for an EC2 instance: back up to an AMI with the launch configuration,
terminate, verify; rollback relaunches an instance from that AMI with the recorded configuration,
or, when the original instance was never terminated, makes sure it is in the state it was in."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from cost_engine.aws import aws_failure
from cost_engine.ec2_instances import (
    GONE_STATES,
    RESTORED_FOR_TAG,
    SOURCE_INSTANCE_TAG,
    Ec2InstanceReads,
    LaunchConfig,
)
from cost_engine.ec2_reads import tag_map
from cost_engine.errors import ActionFailed
from cost_engine.executors.base import BaseExecutor, Permission, StepRecord
from cost_engine.models import (
    ExecutionPlan,
    Recommendation,
    RecommendationType,
    RiskLevel,
    RollbackPlan,
    TerminateInstanceParameters,
    ValidationResult,
    VerificationResult,
)
from cost_engine.pricing import price_catalog

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import InstanceTypeDef

    from cost_engine.prechecks import DryRunProbe


TERMINABLE_STATES = frozenset({"running", "stopped"})
_INSTANCE_ARN = "arn:{partition}:ec2:{region}:{account}:instance/*"


class InstanceVolume(StepRecord):
    """An EBS volume of the instance, as the savings count it."""

    volume_id: str
    device: str
    size_gb: int
    volume_type: str
    delete_on_termination: bool


class Ec2Backup(StepRecord):
    """The instance's backup AMI, with what a relaunch from it needs."""

    execution_id: str
    instance_id: str
    original_state: str
    launch_config: LaunchConfig
    volumes: list[InstanceVolume]
    image_id: str


class Ec2Termination(StepRecord):
    terminated_instance_id: str
    state_before: str
    image_id: str


class Ec2Restore(StepRecord):
    """The instance rolled back to: relaunched from the backup AMI, or the original, never terminated."""

    instance_id: str
    relaunched: bool
    from_image_id: str | None = None
    replaces_instance_id: str | None = None
    target_state: str


class Ec2InstanceTermination(
    Ec2InstanceReads,
    BaseExecutor[TerminateInstanceParameters, "InstanceTypeDef", Ec2Backup, Ec2Termination, Ec2Restore],
):
    """An EC2 instance: AMI backup with the launch configuration, terminate, relaunch on rollback.
    A strategy of TerminateInstanceExecutor, not registered itself."""

    recommendation_type = RecommendationType.TERMINATE_INSTANCE
    resource_name = "EC2 instance"
    risk_level = RiskLevel.HIGH
    permissions = (
        Permission(
            (
                "ec2:DescribeInstances",
                "ec2:DescribeInstanceAttribute",
                "ec2:DescribeInstanceTypes",
                "ec2:DescribeImages",
                "ec2:DescribeVolumes",
                "autoscaling:DescribeAutoScalingInstances",
            )
        ),
        Permission(
            ("ec2:CreateImage",),
            (
                _INSTANCE_ARN,
                "arn:{partition}:ec2:{region}::image/*",
                "arn:{partition}:ec2:{region}::snapshot/*",
            ),
        ),
        Permission(
            ("ec2:CreateTags",),
            (
                "arn:{partition}:ec2:{region}::image/*",
                "arn:{partition}:ec2:{region}::snapshot/*",
                _INSTANCE_ARN,
                "arn:{partition}:ec2:{region}:{account}:volume/*",
                "arn:{partition}:ec2:{region}:{account}:network-interface/*",
            ),
            conditions={"StringEquals": {"ec2:CreateAction": ["CreateImage", "RunInstances"]}},
        ),
        Permission(("ec2:TerminateInstances", "ec2:StartInstances", "ec2:StopInstances"), (_INSTANCE_ARN,)),
        Permission(
            ("ec2:RunInstances",),
            (
                _INSTANCE_ARN,
                "arn:{partition}:ec2:{region}::image/*",
                "arn:{partition}:ec2:{region}:{account}:volume/*",
                "arn:{partition}:ec2:{region}:{account}:network-interface/*",
                "arn:{partition}:ec2:{region}:{account}:subnet/*",
                "arn:{partition}:ec2:{region}:{account}:security-group/*",
                "arn:{partition}:ec2:{region}:{account}:key-pair/*",
            ),
        ),
        # Relaunching an instance with its instance profile passes the profile's role to EC2.
        Permission(
            ("iam:PassRole",),
            ("arn:{partition}:iam::{account}:role/*",),
            conditions={"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
        ),
    )

    # -- reading -------------------------------------------------------------------------------

    def _volumes(self, instance: InstanceTypeDef) -> list[InstanceVolume]:
        mappings = [m for m in instance.get("BlockDeviceMappings", []) if "Ebs" in m]
        volume_ids = [m["Ebs"]["VolumeId"] for m in mappings]
        if not volume_ids:
            return []
        described = {v["VolumeId"]: v for v in self.clients.ec2.describe_volumes(VolumeIds=volume_ids)["Volumes"]}
        return [
            InstanceVolume(
                volume_id=m["Ebs"]["VolumeId"],
                device=m.get("DeviceName", ""),
                size_gb=int(described.get(m["Ebs"]["VolumeId"], {}).get("Size", 0)),
                volume_type=str(described.get(m["Ebs"]["VolumeId"], {}).get("VolumeType", "gp2")),
                delete_on_termination=bool(m["Ebs"].get("DeleteOnTermination", True)),
            )
            for m in mappings
        ]

    # -- validate and plan ---------------------------------------------------------------------

    def dry_run_probes(self, recommendation: Recommendation) -> tuple[DryRunProbe, ...]:
        return (self._backup_image_probe(recommendation.resource_id), self._terminate_probe(recommendation.resource_id))

    def find(self, recommendation: Recommendation, params: TerminateInstanceParameters) -> InstanceTypeDef | None:
        return self._instance(recommendation.resource_id)

    def check(
        self, recommendation: Recommendation, params: TerminateInstanceParameters, instance: InstanceTypeDef
    ) -> ValidationResult:
        errors: list[str] = []
        warnings: list[str] = []
        instance_id = recommendation.resource_id
        state = instance["State"]["Name"]
        if state not in TERMINABLE_STATES:
            errors.append(f"instance {instance_id} is '{state}': only running or stopped instances are terminated")
        groups = self.clients.autoscaling.describe_auto_scaling_instances(InstanceIds=[instance_id])
        for member in groups.get("AutoScalingInstances", []):
            errors.append(
                f"instance {instance_id} belongs to Auto Scaling group '{member['AutoScalingGroupName']}', "
                "which would replace it: lower the group's desired capacity instead"
            )
        protection = self.clients.ec2.describe_instance_attribute(
            InstanceId=instance_id, Attribute="disableApiTermination"
        )
        if protection.get("DisableApiTermination", {}).get("Value"):
            errors.append(
                f"instance {instance_id} has termination protection (DisableApiTermination) on: "
                "turn it off deliberately if the instance really should go"
            )
        if instance.get("RootDeviceType") == "instance-store":
            errors.append(f"instance {instance_id} has an instance-store root device: no AMI backup is possible")
        store_gb = self._instance_store_gb(instance["InstanceType"])
        if store_gb:
            loss = (
                f"instance type {instance['InstanceType']} has instance-store volumes whose data is lost "
                "at termination and is not part of the AMI backup"
            )
            if params.acknowledge_instance_store_loss:
                warnings.append(loss + " (acknowledged in the recommendation)")
            else:
                errors.append(loss + ": set parameters.acknowledge_instance_store_loss=true if that data can go")
        for volume in self._volumes(instance):
            if not volume.delete_on_termination:
                warnings.append(
                    f"volume {volume.volume_id} has DeleteOnTermination=false: it stays (and keeps costing) "
                    "after the instance is gone"
                )
        return ValidationResult(
            valid=not errors,
            errors=errors,
            warnings=warnings,
            risk_level=self.risk_level,
            estimated_duration=10,
        )

    def _monthly_savings(self, state: str, instance_type: str, volumes: list[InstanceVolume]) -> float | None:
        catalog = price_catalog()
        # A stopped instance costs nothing for compute; its volumes cost in both states.
        compute = catalog.instance_monthly(instance_type) if state == "running" else 0.0
        if compute is None:
            return None
        storage = 0.0
        for volume in volumes:
            if volume.delete_on_termination:
                storage += catalog.volume_monthly(volume.volume_type, volume.size_gb) or 0.0
        backup_cost = catalog.snapshot_monthly(sum(v.size_gb for v in volumes))
        return round(compute + storage - backup_cost, 2)

    def plan(self, recommendation: Recommendation, execution_id: str) -> ExecutionPlan:
        instance = self._require_instance(recommendation.resource_id)
        instance_id = recommendation.resource_id
        instance_type = instance["InstanceType"]
        state = instance["State"]["Name"]
        volumes = self._volumes(instance)
        savings = self._monthly_savings(state, instance_type, volumes)
        basis = price_catalog().basis
        if savings is None:
            savings = recommendation.estimated_monthly_savings
            basis = f"no catalog price for {instance_type}: the recommendation's own estimate"
        total_gb = sum(v.size_gb for v in volumes)
        return ExecutionPlan(
            summary=f"Terminate EC2 instance {instance_id} ({instance_type}, {state}) after an AMI backup",
            actions=[
                f"Create AMI 'cost-engine-{execution_id}' of {instance_id} without reboot and record its "
                "launch configuration (type, subnet, security groups, key pair, instance profile, tags, user data)",
                "Wait until the AMI is available",
                f"Terminate {instance_id}",
                "Wait until the instance is terminated",
                "Verify the instance is terminated and the AMI is available",
            ],
            backup=[f"AMI of {instance_id} with snapshots of its {len(volumes)} EBS volume(s), {total_gb} GiB"],
            rollback_plan=RollbackPlan(
                execution_id=execution_id,
                rollback_steps=[
                    "Launch a new instance from the backup AMI with the recorded type, subnet, security groups, "
                    "key pair, instance profile, tags and user data",
                    "Wait until it is running (stopped again if the original was stopped)",
                ],
                estimated_duration=10,
                risk_level=RiskLevel.MEDIUM,
                requires_approval=False,
            ),
            estimated_monthly_savings=savings,
            savings_basis=basis,
            resource={
                "instance_id": instance_id,
                "instance_type": instance_type,
                "state": state,
                "volumes": [v.model_dump(mode="json") for v in volumes],
                "tags": tag_map(instance.get("Tags", [])),
            },
        )

    # -- backup --------------------------------------------------------------------------------

    def backup(self, recommendation: Recommendation, execution_id: str) -> Ec2Backup:
        instance_id = recommendation.resource_id
        instance = self._require_instance(instance_id)
        launch_config = self._launch_config(instance)
        volumes = self._volumes(instance)
        image_id = self._backup_image(
            instance_id,
            execution_id,
            name=f"cost-engine-{execution_id}",
            description=f"Backup of {instance_id} before terminate_instance ({execution_id})",
        )
        return Ec2Backup(
            execution_id=execution_id,
            instance_id=instance_id,
            original_state=instance["State"]["Name"],
            launch_config=launch_config,
            volumes=volumes,
            image_id=image_id,
        )

    def backup_ready(self, recommendation: Recommendation, backup: Ec2Backup) -> bool:
        return self._image_ready(backup.image_id, label="backup AMI", then="the instance is left untouched")

    # -- act -----------------------------------------------------------------------------------

    def apply(self, recommendation: Recommendation, backup: Ec2Backup) -> Ec2Termination:
        instance_id = recommendation.resource_id
        instance = self._require_instance(instance_id)
        state = instance["State"]["Name"]
        if state not in GONE_STATES:
            try:
                self.clients.ec2.terminate_instances(InstanceIds=[instance_id])
            except ClientError as error:
                raise aws_failure("TerminateInstances", error) from error
        return Ec2Termination(terminated_instance_id=instance_id, state_before=state, image_id=backup.image_id)

    def apply_done(self, recommendation: Recommendation, action: Ec2Termination) -> bool:
        instance = self._instance(action.terminated_instance_id)
        return instance is None or instance["State"]["Name"] == "terminated"

    def verify(self, recommendation: Recommendation, action: Ec2Termination) -> VerificationResult:
        checks: list[str] = []
        failures: list[str] = []
        instance = self._instance(action.terminated_instance_id)
        state = "gone" if instance is None else instance["State"]["Name"]
        target = f"instance {action.terminated_instance_id} is {state}"
        (checks if state in ("terminated", "gone") else failures).append(target)
        image_state = self._image_state(action.image_id)
        (checks if image_state == "available" else failures).append(f"backup AMI {action.image_id} is {image_state}")
        return VerificationResult(passed=not failures, checks=checks, failures=failures)

    def expected_savings(self, recommendation: Recommendation, backup: Ec2Backup) -> float | None:
        return self._monthly_savings(backup.original_state, backup.launch_config.instance_type, backup.volumes)

    # -- rollback ------------------------------------------------------------------------------

    def _restored_instance(self, execution_id: str) -> str | None:
        reservations = self.clients.ec2.describe_instances(
            Filters=[
                {"Name": f"tag:{RESTORED_FOR_TAG}", "Values": [execution_id]},
                {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
            ]
        )["Reservations"]
        instances = [i for r in reservations for i in r.get("Instances", [])]
        return instances[0]["InstanceId"] if instances else None

    def rollback(
        self,
        recommendation: Recommendation,
        backup: Ec2Backup | None,
        action: Ec2Termination | None,
    ) -> Ec2Restore:
        instance_id = recommendation.resource_id
        original_state = "running" if backup is None else backup.original_state
        instance = self._instance(instance_id)
        if instance is not None and instance["State"]["Name"] not in GONE_STATES:
            # Never terminated: the original is still there; put it back in the state it was in.
            if original_state == "running" and instance["State"]["Name"] in ("stopping", "stopped"):
                self.clients.ec2.start_instances(InstanceIds=[instance_id])
            return Ec2Restore(instance_id=instance_id, relaunched=False, target_state=original_state)

        if backup is None:
            raise ActionFailed(
                f"instance {instance_id} is gone and no backup AMI was recorded: nothing to restore from"
            )
        restored = self._restored_instance(backup.execution_id)
        if restored is None:
            restored = self._relaunch(backup)
        return Ec2Restore(
            instance_id=restored,
            relaunched=True,
            from_image_id=backup.image_id,
            replaces_instance_id=instance_id,
            target_state=original_state,
        )

    def _relaunch(self, backup: Ec2Backup) -> str:
        config = backup.launch_config
        tags = [{"Key": k, "Value": v} for k, v in config.tags.items()]
        tags += [
            {"Key": RESTORED_FOR_TAG, "Value": backup.execution_id},
            {"Key": SOURCE_INSTANCE_TAG, "Value": backup.instance_id},
        ]
        request: dict[str, Any] = {
            "ImageId": backup.image_id,
            "InstanceType": config.instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "EbsOptimized": config.ebs_optimized,
            "Monitoring": {"Enabled": config.detailed_monitoring},
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tags}],
        }
        if config.subnet_id:
            request["SubnetId"] = config.subnet_id
        if config.security_group_ids:
            request["SecurityGroupIds"] = config.security_group_ids
        if config.key_name:
            request["KeyName"] = config.key_name
        if config.iam_instance_profile_arn:
            request["IamInstanceProfile"] = {"Arn": config.iam_instance_profile_arn}
        if config.user_data_base64:
            request["UserData"] = base64.b64decode(config.user_data_base64).decode("utf-8", "replace")
        try:
            return str(self.clients.ec2.run_instances(**request)["Instances"][0]["InstanceId"])
        except ClientError as error:
            raise aws_failure("RunInstances", error) from error

    def rollback_done(self, recommendation: Recommendation, rollback: Ec2Restore) -> bool:
        instance = self._require_instance(rollback.instance_id)
        state = instance["State"]["Name"]
        target = rollback.target_state
        if state in GONE_STATES:
            raise ActionFailed(f"restored instance {rollback.instance_id} is {state}")
        if state == target:
            return True
        if target == "stopped" and state == "running":
            self.clients.ec2.stop_instances(InstanceIds=[rollback.instance_id])
        return False
