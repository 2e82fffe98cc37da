"""`terminate_instance`: an idle EC2 instance or RDS DB instance is removed after a backup.

One registered executor, two strategies chosen by the resource id:
- an EC2 instance id (`i-…`): back up to an AMI with the launch configuration, terminate, verify;
  rollback relaunches an instance from that AMI with the recorded configuration, or, when the
  original instance was never terminated, makes sure it is in the state it was in;
- anything else is an RDS DB instance identifier: back up to a manual DB snapshot with the
  configuration a restore needs, delete (with a final snapshot), verify; rollback restores the DB
  under its own identifier from the snapshot with the recorded configuration.
"""

from __future__ import annotations

import base64
import re
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from pydantic import ValidationError

from cost_engine.aws import aws_failure, error_code
from cost_engine.business_rules import DependencyRule
from cost_engine.ec2_instances import (
    EXECUTION_TAG,
    GONE_STATES,
    RESTORED_FOR_TAG,
    SOURCE_INSTANCE_TAG,
    Ec2InstanceReads,
)
from cost_engine.ec2_reads import tag_map
from cost_engine.errors import ActionFailed
from cost_engine.executors.base import BaseExecutor, Permission
from cost_engine.executors.registry import register_executor
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
from cost_engine.prechecks import DryRunProbe, Resource, ResourceKind
from cost_engine.pricing import price_catalog

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import InstanceTypeDef
    from mypy_boto3_rds import RDSClient
    from mypy_boto3_rds.type_defs import DBInstanceTypeDef

    from cost_engine.aws import AwsClients
    from cost_engine.settings import Settings

TERMINABLE_STATES = frozenset({"running", "stopped"})
SOURCE_DB_INSTANCE_TAG = "cost-engine:source-db-instance"

# EC2 instance ids are `i-` and 8 or 17 hex digits; a DB identifier may also start with "i-".
EC2_INSTANCE_ID = re.compile(r"^i-(?:[0-9a-f]{8}|[0-9a-f]{17})$")

DELETABLE_DB_STATES = frozenset({"available", "stopped"})
# DB instance states from which nothing the engine does leads back to service.
FAILED_DB_STATES = frozenset(
    {
        "failed",
        "incompatible-restore",
        "incompatible-parameters",
        "incompatible-network",
        "incompatible-option-group",
        "restore-error",
        "storage-full",
        "inaccessible-encryption-credentials",
    }
)

_INSTANCE_ARN = "arn:{partition}:ec2:{region}:{account}:instance/*"
DB_ARN = "arn:{partition}:rds:{region}:{account}:db:*"
# The engine names every snapshot it makes `cost-engine-…`: it may create and restore only those.
ENGINE_DB_SNAPSHOT_ARN = "arn:{partition}:rds:{region}:{account}:snapshot:cost-engine-*"
DB_SNAPSHOT_ARN = "arn:{partition}:rds:{region}:{account}:snapshot:*"


# -- RDS access shared by the DB executors -----------------------------------------------------------


def backup_snapshot_id(execution_id: str) -> str:
    """The execution's DB snapshot: named after it, so a retried step finds the one it started."""
    return f"cost-engine-{execution_id}"


def pending_instance_class(database: DBInstanceTypeDef) -> str | None:
    return database.get("PendingModifiedValues", {}).get("DBInstanceClass")


def tags_of(database: DBInstanceTypeDef) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in database.get("TagList", []) if not t["Key"].startswith("aws:")}


class RdsDatabases:
    """The reads and the snapshot handling every executor acting on an RDS DB instance needs."""

    def __init__(self, rds: RDSClient, region: str) -> None:
        self.rds = rds
        self.region = region

    def get(self, identifier: str) -> DBInstanceTypeDef | None:
        try:
            databases = self.rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"]
        except ClientError as error:
            if error_code(error) in ("DBInstanceNotFound", "DBInstanceNotFoundFault", "InvalidParameterValue"):
                return None
            raise aws_failure("DescribeDBInstances", error) from error
        return databases[0] if databases else None

    def require(self, identifier: str) -> DBInstanceTypeDef:
        database = self.get(identifier)
        if database is None:
            raise ActionFailed(f"RDS DB instance {identifier} does not exist in {self.region}")
        return database

    def snapshot_status(self, snapshot_id: str) -> str:
        """The snapshot's status, or "missing"."""
        try:
            snapshots = self.rds.describe_db_snapshots(DBSnapshotIdentifier=snapshot_id)["DBSnapshots"]
        except ClientError as error:
            if error_code(error) in ("DBSnapshotNotFound", "DBSnapshotNotFoundFault"):
                return "missing"
            raise aws_failure("DescribeDBSnapshots", error) from error
        return str(snapshots[0]["Status"]) if snapshots else "missing"

    def ensure_backup_snapshot(self, identifier: str, execution_id: str, purpose: str) -> str:
        """The execution's manual DB snapshot of `identifier`: started once, found again on a retry."""
        snapshot_id = backup_snapshot_id(execution_id)
        if self.snapshot_status(snapshot_id) != "missing":
            return snapshot_id
        try:
            # Tagged as it is created, so what it is for is visible in the account.
            self.rds.create_db_snapshot(
                DBInstanceIdentifier=identifier,
                DBSnapshotIdentifier=snapshot_id,
                Tags=[
                    {"Key": EXECUTION_TAG, "Value": execution_id},
                    {"Key": SOURCE_DB_INSTANCE_TAG, "Value": identifier},
                    {"Key": "cost-engine:purpose", "Value": purpose},
                ],
            )
        except ClientError as error:
            if error_code(error) not in ("DBSnapshotAlreadyExists", "DBSnapshotAlreadyExistsFault"):
                raise aws_failure("CreateDBSnapshot", error) from error
        return snapshot_id

    def snapshot_ready(self, snapshot_id: str, identifier: str) -> bool:
        """True once the snapshot is available; raises if it failed, since nothing may go ahead then."""
        status = self.snapshot_status(snapshot_id)
        if status in ("failed", "error", "missing", "deleted"):
            raise ActionFailed(
                f"backup DB snapshot {snapshot_id} is '{status}': DB instance {identifier} is left untouched"
            )
        return status == "available"


# -- EC2 ------------------------------------------------------------------------------------------------


class Ec2InstanceTermination(Ec2InstanceReads, BaseExecutor):
    """An EC2 instance: AMI backup with the launch configuration, terminate, relaunch on rollback."""

    parameters_model = TerminateInstanceParameters
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

    def _volumes(self, instance: InstanceTypeDef) -> list[dict[str, Any]]:
        mappings = [m for m in instance.get("BlockDeviceMappings", []) if "Ebs" in m]
        volume_ids = [m["Ebs"]["VolumeId"] for m in mappings]
        if not volume_ids:
            return []
        described = {v["VolumeId"]: v for v in self.clients.ec2.describe_volumes(VolumeIds=volume_ids)["Volumes"]}
        return [
            {
                "volume_id": m["Ebs"]["VolumeId"],
                "device": m.get("DeviceName", ""),
                "size_gb": int(described.get(m["Ebs"]["VolumeId"], {}).get("Size", 0)),
                "volume_type": str(described.get(m["Ebs"]["VolumeId"], {}).get("VolumeType", "gp2")),
                "delete_on_termination": bool(m["Ebs"].get("DeleteOnTermination", True)),
            }
            for m in mappings
        ]

    # -- validate and plan ---------------------------------------------------------------------

    def dry_run_probes(self, recommendation: Recommendation) -> tuple[DryRunProbe, ...]:
        return (self._backup_image_probe(recommendation.resource_id), self._terminate_probe(recommendation.resource_id))

    def validate(self, recommendation: Recommendation) -> ValidationResult:
        errors: list[str] = []
        warnings: list[str] = []
        try:
            params = TerminateInstanceParameters.model_validate(recommendation.parameters)
        except ValidationError as error:
            return self._invalid([f"invalid parameters for terminate_instance: {error}"])
        instance_id = recommendation.resource_id
        instance = self._instance(instance_id)
        if instance is None:
            return self._invalid([f"EC2 instance {instance_id} does not exist in {recommendation.region}"])

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
            if not volume["delete_on_termination"]:
                warnings.append(
                    f"volume {volume['volume_id']} has DeleteOnTermination=false: it stays (and keeps costing) "
                    "after the instance is gone"
                )
        return ValidationResult(
            valid=not errors,
            errors=errors,
            warnings=warnings,
            risk_level=self.risk_level,
            estimated_duration=10,
        )

    def _monthly_savings(self, state: str, instance_type: str, volumes: list[dict[str, Any]]) -> float | None:
        catalog = price_catalog()
        # A stopped instance costs nothing for compute; its volumes cost in both states.
        compute = catalog.instance_monthly(instance_type) if state == "running" else 0.0
        if compute is None:
            return None
        storage = 0.0
        for volume in volumes:
            if volume["delete_on_termination"]:
                storage += catalog.volume_monthly(volume["volume_type"], volume["size_gb"]) or 0.0
        backup_cost = catalog.snapshot_monthly(sum(v["size_gb"] for v in volumes))
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
        total_gb = sum(v["size_gb"] for v in volumes)
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
                "volumes": volumes,
                "tags": tag_map(instance.get("Tags", [])),
            },
        )

    # -- backup --------------------------------------------------------------------------------

    def backup(self, recommendation: Recommendation, execution_id: str) -> dict[str, Any]:
        instance_id = recommendation.resource_id
        instance = self._require_instance(instance_id)
        record = {
            "execution_id": execution_id,
            "instance_id": instance_id,
            "original_state": instance["State"]["Name"],
            "launch_config": self._launch_config(instance),
            "volumes": self._volumes(instance),
        }
        record["image_id"] = self._backup_image(
            instance_id,
            execution_id,
            name=f"cost-engine-{execution_id}",
            description=f"Backup of {instance_id} before terminate_instance ({execution_id})",
        )
        return record

    def backup_ready(self, recommendation: Recommendation, backup: dict[str, Any]) -> bool:
        return self._image_ready(backup["image_id"], label="backup AMI", then="the instance is left untouched")

    # -- act -----------------------------------------------------------------------------------

    def apply(self, recommendation: Recommendation, backup: dict[str, Any]) -> dict[str, Any]:
        instance_id = recommendation.resource_id
        instance = self._require_instance(instance_id)
        state = instance["State"]["Name"]
        if state not in GONE_STATES:
            try:
                self.clients.ec2.terminate_instances(InstanceIds=[instance_id])
            except ClientError as error:
                raise aws_failure("TerminateInstances", error) from error
        return {"terminated_instance_id": instance_id, "state_before": state, "image_id": backup["image_id"]}

    def apply_done(self, recommendation: Recommendation, action: dict[str, Any]) -> bool:
        instance = self._instance(action["terminated_instance_id"])
        return instance is None or instance["State"]["Name"] == "terminated"

    def verify(self, recommendation: Recommendation, action: dict[str, Any]) -> VerificationResult:
        checks: list[str] = []
        failures: list[str] = []
        instance = self._instance(action["terminated_instance_id"])
        state = "gone" if instance is None else instance["State"]["Name"]
        target = f"instance {action['terminated_instance_id']} is {state}"
        (checks if state in ("terminated", "gone") else failures).append(target)
        image_state = self._image_state(action["image_id"])
        (checks if image_state == "available" else failures).append(f"backup AMI {action['image_id']} is {image_state}")
        return VerificationResult(passed=not failures, checks=checks, failures=failures)

    def measure_savings(self, recommendation: Recommendation, backup: dict[str, Any]) -> float | None:
        return self._monthly_savings(
            backup["original_state"], backup["launch_config"]["instance_type"], backup["volumes"]
        )

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
        backup: dict[str, Any] | None,
        action: dict[str, Any] | None,
    ) -> dict[str, Any]:
        instance_id = recommendation.resource_id
        original_state = (backup or {}).get("original_state", "running")
        instance = self._instance(instance_id)
        if instance is not None and instance["State"]["Name"] not in GONE_STATES:
            # Never terminated: the original is still there; put it back in the state it was in.
            if original_state == "running" and instance["State"]["Name"] in ("stopping", "stopped"):
                self.clients.ec2.start_instances(InstanceIds=[instance_id])
            return {"instance_id": instance_id, "relaunched": False, "target_state": original_state}

        if not backup or not backup.get("image_id"):
            raise ActionFailed(
                f"instance {instance_id} is gone and no backup AMI was recorded: nothing to restore from"
            )
        execution_id = backup["execution_id"]
        restored = self._restored_instance(execution_id)
        if restored is None:
            restored = self._relaunch(backup, execution_id)
        return {
            "instance_id": restored,
            "relaunched": True,
            "from_image_id": backup["image_id"],
            "replaces_instance_id": instance_id,
            "target_state": original_state,
        }

    def _relaunch(self, backup: dict[str, Any], execution_id: str) -> str:
        config = backup["launch_config"]
        tags = [{"Key": k, "Value": v} for k, v in config["tags"].items()]
        tags += [
            {"Key": RESTORED_FOR_TAG, "Value": execution_id},
            {"Key": SOURCE_INSTANCE_TAG, "Value": backup["instance_id"]},
        ]
        request: dict[str, Any] = {
            "ImageId": backup["image_id"],
            "InstanceType": config["instance_type"],
            "MinCount": 1,
            "MaxCount": 1,
            "EbsOptimized": config["ebs_optimized"],
            "Monitoring": {"Enabled": config["detailed_monitoring"]},
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tags}],
        }
        if config.get("subnet_id"):
            request["SubnetId"] = config["subnet_id"]
        if config.get("security_group_ids"):
            request["SecurityGroupIds"] = config["security_group_ids"]
        if config.get("key_name"):
            request["KeyName"] = config["key_name"]
        if config.get("iam_instance_profile_arn"):
            request["IamInstanceProfile"] = {"Arn": config["iam_instance_profile_arn"]}
        if config.get("user_data_base64"):
            request["UserData"] = base64.b64decode(config["user_data_base64"]).decode("utf-8", "replace")
        try:
            return str(self.clients.ec2.run_instances(**request)["Instances"][0]["InstanceId"])
        except ClientError as error:
            raise aws_failure("RunInstances", error) from error

    def rollback_done(self, recommendation: Recommendation, rollback: dict[str, Any]) -> bool:
        instance = self._require_instance(rollback["instance_id"])
        state = instance["State"]["Name"]
        target = rollback["target_state"]
        if state in GONE_STATES:
            raise ActionFailed(f"restored instance {rollback['instance_id']} is {state}")
        if state == target:
            return True
        if target == "stopped" and state == "running":
            self.clients.ec2.stop_instances(InstanceIds=[rollback["instance_id"]])
        return False


# -- RDS ------------------------------------------------------------------------------------------------


class RdsInstanceTermination(BaseExecutor):
    """An RDS DB instance: manual snapshot with the restore configuration, delete, restore on rollback."""

    parameters_model = TerminateInstanceParameters
    risk_level = RiskLevel.HIGH
    permissions = (
        Permission(("rds:DescribeDBInstances",), (DB_ARN,)),
        Permission(("rds:DescribeDBSnapshots",), (DB_ARN, DB_SNAPSHOT_ARN)),
        Permission(("rds:CreateDBSnapshot",), (DB_ARN, ENGINE_DB_SNAPSHOT_ARN)),
        # Tags given to CreateDBSnapshot and RestoreDBInstanceFromDBSnapshot need AddTagsToResource.
        Permission(("rds:AddTagsToResource",), (DB_ARN, ENGINE_DB_SNAPSHOT_ARN)),
        Permission(("rds:DeleteDBInstance", "rds:StopDBInstance"), (DB_ARN,)),
        Permission(
            ("rds:RestoreDBInstanceFromDBSnapshot",),
            (
                DB_ARN,
                ENGINE_DB_SNAPSHOT_ARN,
                "arn:{partition}:rds:{region}:{account}:og:*",
                "arn:{partition}:rds:{region}:{account}:pg:*",
                "arn:{partition}:rds:{region}:{account}:subgrp:*",
            ),
        ),
    )

    def __init__(self, clients: AwsClients, settings: Settings | None = None) -> None:
        super().__init__(clients, settings)
        self.databases = RdsDatabases(clients.rds, clients.region)

    # -- validate and plan ---------------------------------------------------------------------

    def validate(self, recommendation: Recommendation) -> ValidationResult:
        try:
            TerminateInstanceParameters.model_validate(recommendation.parameters)
        except ValidationError as error:
            return self._invalid([f"invalid parameters for terminate_instance: {error}"])
        identifier = recommendation.resource_id
        database = self.databases.get(identifier)
        if database is None:
            return self._invalid([f"RDS DB instance {identifier} does not exist in {recommendation.region}"])

        errors: list[str] = []
        status = database["DBInstanceStatus"]
        if status not in DELETABLE_DB_STATES:
            errors.append(f"DB instance {identifier} is '{status}': only available or stopped DB instances are deleted")
        if cluster := database.get("DBClusterIdentifier"):
            errors.append(
                f"DB instance {identifier} is a member of DB cluster '{cluster}': a cluster's instances are "
                "removed through the cluster, and a DB snapshot of one member cannot restore it"
            )
        if replicas := database.get("ReadReplicaDBInstanceIdentifiers"):
            errors.append(
                f"DB instance {identifier} is the source of read replica(s) {', '.join(replicas)}: deleting it "
                "would turn them into standalone DB instances; delete or promote the replicas first"
            )
        if source := database.get("ReadReplicaSourceDBInstanceIdentifier"):
            errors.append(
                f"DB instance {identifier} is a read replica of '{source}': a snapshot restore would bring it back "
                "as a standalone DB instance, not as a replica; remove the replica deliberately"
            )
        if database.get("DeletionProtection"):
            errors.append(
                f"DB instance {identifier} has deletion protection on: turn it off deliberately if the DB "
                "really should go"
            )
        return ValidationResult(valid=not errors, errors=errors, risk_level=self.risk_level, estimated_duration=20)

    def _monthly_savings(self, status: str, config: dict[str, Any]) -> float | None:
        catalog = price_catalog()
        multi_az = bool(config["multi_az"])
        # A stopped DB instance is not billed for its class; its storage is billed in both states.
        compute = catalog.db_instance_monthly(config["instance_class"], multi_az) if status == "available" else 0.0
        if compute is None:
            return None
        # Multi-AZ storage is billed for both copies.
        storage = (catalog.db_storage_monthly(config["storage_type"], config["allocated_storage_gb"]) or 0.0) * (
            2 if multi_az else 1
        )
        backup_cost = catalog.db_snapshot_monthly(config["allocated_storage_gb"])
        return round(compute + storage - backup_cost, 2)

    def plan(self, recommendation: Recommendation, execution_id: str) -> ExecutionPlan:
        identifier = recommendation.resource_id
        database = self.databases.require(identifier)
        config = self._restore_config(database)
        status = database["DBInstanceStatus"]
        savings = self._monthly_savings(status, config)
        basis = price_catalog().basis
        if savings is None:
            savings = recommendation.estimated_monthly_savings
            basis = f"no catalog price for {config['instance_class']}: the recommendation's own estimate"
        snapshot_id = backup_snapshot_id(execution_id)
        return ExecutionPlan(
            summary=(
                f"Delete RDS DB instance {identifier} ({config['instance_class']}, {config['engine']}, {status}) "
                "after a manual DB snapshot"
            ),
            actions=[
                f"Create manual DB snapshot '{snapshot_id}' of {identifier} and record its configuration (class, "
                "engine, subnet group, parameter group, option group, VPC security groups, Multi-AZ, storage type, "
                "port, public accessibility, tags)",
                "Wait until the snapshot is available",
                f"Delete {identifier} with a final snapshot '{snapshot_id}-final' (its automated backups go with it)",
                "Wait until the DB instance is gone",
                "Verify the DB instance is gone and both snapshots are available",
            ],
            backup=[
                f"Manual DB snapshot of {identifier}, {config['allocated_storage_gb']} GiB, kept after the deletion",
                "Final DB snapshot taken at the deletion, with every write up to then",
            ],
            rollback_plan=RollbackPlan(
                execution_id=execution_id,
                rollback_steps=[
                    f"Restore {identifier} under the same identifier from the final snapshot (or, without it, the "
                    "backup snapshot) with the recorded class, subnet group, parameter and option groups, VPC "
                    "security groups, Multi-AZ, storage type, port, public accessibility and tags",
                    "Wait until it is available (stopped again if the original was stopped)",
                ],
                estimated_duration=30,
                risk_level=RiskLevel.MEDIUM,
                requires_approval=False,
            ),
            estimated_monthly_savings=savings,
            savings_basis=basis,
            resource={"db_instance_identifier": identifier, "status": status, **config},
        )

    # -- backup --------------------------------------------------------------------------------

    def _restore_config(self, database: DBInstanceTypeDef) -> dict[str, Any]:
        parameter_groups = [g["DBParameterGroupName"] for g in database.get("DBParameterGroups", [])]
        option_groups = [g["OptionGroupName"] for g in database.get("OptionGroupMemberships", [])]
        return {
            "instance_class": database["DBInstanceClass"],
            "engine": database["Engine"],
            "engine_version": database.get("EngineVersion"),
            "allocated_storage_gb": int(database.get("AllocatedStorage", 0)),
            "db_subnet_group_name": database.get("DBSubnetGroup", {}).get("DBSubnetGroupName"),
            "db_parameter_group_name": parameter_groups[0] if parameter_groups else None,
            "option_group_name": option_groups[0] if option_groups else None,
            "vpc_security_group_ids": [g["VpcSecurityGroupId"] for g in database.get("VpcSecurityGroups", [])],
            "multi_az": bool(database.get("MultiAZ", False)),
            "availability_zone": database.get("AvailabilityZone"),
            "storage_type": database.get("StorageType", "gp2"),
            "iops": database.get("Iops"),
            "port": database.get("Endpoint", {}).get("Port") or database.get("DbInstancePort"),
            "publicly_accessible": bool(database.get("PubliclyAccessible", False)),
            "copy_tags_to_snapshot": bool(database.get("CopyTagsToSnapshot", False)),
            "tags": tags_of(database),
        }

    def backup(self, recommendation: Recommendation, execution_id: str) -> dict[str, Any]:
        identifier = recommendation.resource_id
        database = self.databases.require(identifier)
        snapshot_id = self.databases.ensure_backup_snapshot(identifier, execution_id, "terminate_instance")
        return {
            "execution_id": execution_id,
            "db_instance_identifier": identifier,
            "original_status": database["DBInstanceStatus"],
            "restore_config": self._restore_config(database),
            "snapshot_id": snapshot_id,
            "final_snapshot_id": f"{snapshot_id}-final",
        }

    def backup_ready(self, recommendation: Recommendation, backup: dict[str, Any]) -> bool:
        if not self.databases.snapshot_ready(backup["snapshot_id"], recommendation.resource_id):
            return False
        # A snapshot can hold the instance in 'backing-up' for a while; it can be deleted only after.
        return self.databases.require(recommendation.resource_id)["DBInstanceStatus"] in DELETABLE_DB_STATES

    # -- act -----------------------------------------------------------------------------------

    def apply(self, recommendation: Recommendation, backup: dict[str, Any]) -> dict[str, Any]:
        identifier = recommendation.resource_id
        database = self.databases.get(identifier)
        status = "gone" if database is None else database["DBInstanceStatus"]
        if status not in ("gone", "deleting"):
            try:
                # With a final snapshot although the verified backup snapshot exists: whatever was written
                # between the backup and now is kept too, and a rollback restores from it.
                self.clients.rds.delete_db_instance(
                    DBInstanceIdentifier=identifier,
                    SkipFinalSnapshot=False,
                    FinalDBSnapshotIdentifier=backup["final_snapshot_id"],
                    # The two snapshots are the restore points; retained automated backups would only
                    # keep costing until their retention runs out.
                    DeleteAutomatedBackups=True,
                )
            except ClientError as error:
                raise aws_failure("DeleteDBInstance", error) from error
        return {
            "deleted_db_instance_identifier": identifier,
            "status_before": status,
            "snapshot_id": backup["snapshot_id"],
            "final_snapshot_id": backup["final_snapshot_id"],
        }

    def apply_done(self, recommendation: Recommendation, action: dict[str, Any]) -> bool:
        database = self.databases.get(action["deleted_db_instance_identifier"])
        if database is not None and database["DBInstanceStatus"] in FAILED_DB_STATES:
            raise ActionFailed(
                f"DB instance {action['deleted_db_instance_identifier']} is '{database['DBInstanceStatus']}' "
                "instead of being deleted"
            )
        return database is None

    def verify(self, recommendation: Recommendation, action: dict[str, Any]) -> VerificationResult:
        checks: list[str] = []
        failures: list[str] = []
        identifier = action["deleted_db_instance_identifier"]
        database = self.databases.get(identifier)
        state = "gone" if database is None else database["DBInstanceStatus"]
        (checks if database is None else failures).append(f"DB instance {identifier} is {state}")
        for label, snapshot_id in (("backup", action["snapshot_id"]), ("final", action["final_snapshot_id"])):
            status = self.databases.snapshot_status(snapshot_id)
            (checks if status == "available" else failures).append(f"{label} DB snapshot {snapshot_id} is {status}")
        return VerificationResult(passed=not failures, checks=checks, failures=failures)

    def measure_savings(self, recommendation: Recommendation, backup: dict[str, Any]) -> float | None:
        return self._monthly_savings(backup["original_status"], backup["restore_config"])

    # -- rollback ------------------------------------------------------------------------------

    def rollback(
        self,
        recommendation: Recommendation,
        backup: dict[str, Any] | None,
        action: dict[str, Any] | None,
    ) -> dict[str, Any]:
        identifier = recommendation.resource_id
        database = self.databases.get(identifier)
        original_status = (backup or {}).get("original_status", "available")
        if database is not None and database["DBInstanceStatus"] != "deleting":
            # Either never deleted (the original is still there, untouched), or restored by an
            # earlier run of this step: there is nothing to start.
            restored = bool(backup) and tags_of(database).get(RESTORED_FOR_TAG) == (backup or {}).get("execution_id")
            return {"db_instance_identifier": identifier, "restored": restored, "target_status": original_status}
        if not backup or not backup.get("snapshot_id"):
            raise ActionFailed(
                f"DB instance {identifier} is gone and no backup DB snapshot was recorded: nothing to restore from"
            )
        result: dict[str, Any] = {
            "db_instance_identifier": identifier,
            "restored": True,
            "target_status": original_status,
            "execution_id": backup["execution_id"],
            "snapshot_id": backup["snapshot_id"],
            "final_snapshot_id": backup.get("final_snapshot_id"),
            "restore_config": backup["restore_config"],
        }
        # While it is still 'deleting' the identifier is taken: rollback_done restores once it is gone.
        result["from_snapshot_id"] = self._restore(result) if database is None else None
        return result

    def _restore_source(self, rollback: dict[str, Any]) -> str:
        """The final snapshot when there is one (it has every write up to the deletion), else the backup."""
        final = rollback.get("final_snapshot_id")
        if final and self.databases.snapshot_status(final) == "available":
            return str(final)
        return str(rollback["snapshot_id"])

    def _restore(self, rollback: dict[str, Any]) -> str:
        identifier = rollback["db_instance_identifier"]
        config = rollback["restore_config"]
        snapshot_id = self._restore_source(rollback)
        tags = [{"Key": k, "Value": v} for k, v in config["tags"].items()]
        tags += [
            {"Key": RESTORED_FOR_TAG, "Value": rollback["execution_id"]},
            {"Key": SOURCE_DB_INSTANCE_TAG, "Value": identifier},
        ]
        request: dict[str, Any] = {
            "DBInstanceIdentifier": identifier,
            "DBSnapshotIdentifier": snapshot_id,
            "DBInstanceClass": config["instance_class"],
            "MultiAZ": config["multi_az"],
            "StorageType": config["storage_type"],
            "PubliclyAccessible": config["publicly_accessible"],
            "CopyTagsToSnapshot": config["copy_tags_to_snapshot"],
            "Tags": tags,
        }
        if config.get("port"):
            request["Port"] = int(config["port"])
        if config.get("iops"):
            request["Iops"] = int(config["iops"])
        if config.get("db_subnet_group_name"):
            request["DBSubnetGroupName"] = config["db_subnet_group_name"]
        if config.get("vpc_security_group_ids"):
            request["VpcSecurityGroupIds"] = config["vpc_security_group_ids"]
        if config.get("availability_zone") and not config["multi_az"]:
            request["AvailabilityZone"] = config["availability_zone"]
        # The engine's default groups are what a restore gets anyway; only custom ones are named.
        if config.get("db_parameter_group_name") and not config["db_parameter_group_name"].startswith("default."):
            request["DBParameterGroupName"] = config["db_parameter_group_name"]
        if config.get("option_group_name") and not config["option_group_name"].startswith("default:"):
            request["OptionGroupName"] = config["option_group_name"]
        try:
            self.clients.rds.restore_db_instance_from_db_snapshot(**request)
        except ClientError as error:
            # A retried step whose first restore got through finds the identifier taken by it.
            if error_code(error) not in ("DBInstanceAlreadyExists", "DBInstanceAlreadyExistsFault"):
                raise aws_failure("RestoreDBInstanceFromDBSnapshot", error) from error
        return snapshot_id

    def rollback_done(self, recommendation: Recommendation, rollback: dict[str, Any]) -> bool:
        identifier = rollback["db_instance_identifier"]
        database = self.databases.get(identifier)
        if database is None:
            if not rollback.get("restore_config"):
                raise ActionFailed(f"DB instance {identifier} is gone and there is nothing to restore it from")
            self._restore(rollback)  # the deletion finished since the rollback started
            return False
        status = database["DBInstanceStatus"]
        if status in FAILED_DB_STATES:
            raise ActionFailed(f"restored DB instance {identifier} is '{status}'")
        if not rollback.get("restored"):
            return status != "deleting"
        target = rollback["target_status"]
        if status == target:
            return True
        if target == "stopped" and status == "available":
            self.clients.rds.stop_db_instance(DBInstanceIdentifier=identifier)
        return False


# -- the registered executor ---------------------------------------------------------------------------


@register_executor
class TerminateExecutor(BaseExecutor):
    """`terminate_instance`: EC2 instance ids go to the EC2 strategy, DB identifiers to the RDS one."""

    recommendation_type = RecommendationType.TERMINATE_INSTANCE
    flow = (
        "Validate → (dry run → report) → approval → AMI backup → terminate → poll → verify → "
        "record; Catch → rollback (relaunch from the AMI)."
    )
    parameters_model = TerminateInstanceParameters
    risk_level = RiskLevel.HIGH
    load_balancer_targets = DependencyRule.REFUSE
    requires_human_approval = True
    permissions = Ec2InstanceTermination.permissions + RdsInstanceTermination.permissions

    def __init__(self, clients: AwsClients, settings: Settings | None = None) -> None:
        super().__init__(clients, settings)
        self._ec2 = Ec2InstanceTermination(clients, settings)
        self._rds = RdsInstanceTermination(clients, settings)

    def _for(self, recommendation: Recommendation) -> BaseExecutor:
        return self._ec2 if EC2_INSTANCE_ID.match(recommendation.resource_id) else self._rds

    def resource(self, recommendation: Recommendation) -> Resource:
        if EC2_INSTANCE_ID.match(recommendation.resource_id):
            return Resource(ResourceKind.EC2_INSTANCE, recommendation.resource_id)
        return Resource(ResourceKind.RDS_DB_INSTANCE, recommendation.resource_id)

    def dry_run_probes(self, recommendation: Recommendation) -> tuple[DryRunProbe, ...]:
        return self._for(recommendation).dry_run_probes(recommendation)

    def validate(self, recommendation: Recommendation) -> ValidationResult:
        return self._for(recommendation).validate(recommendation)

    def plan(self, recommendation: Recommendation, execution_id: str) -> ExecutionPlan:
        return self._for(recommendation).plan(recommendation, execution_id)

    def backup(self, recommendation: Recommendation, execution_id: str) -> dict[str, Any]:
        return self._for(recommendation).backup(recommendation, execution_id)

    def backup_ready(self, recommendation: Recommendation, backup: dict[str, Any]) -> bool:
        return self._for(recommendation).backup_ready(recommendation, backup)

    def apply(self, recommendation: Recommendation, backup: dict[str, Any]) -> dict[str, Any]:
        return self._for(recommendation).apply(recommendation, backup)

    def apply_done(self, recommendation: Recommendation, action: dict[str, Any]) -> bool:
        return self._for(recommendation).apply_done(recommendation, action)

    def verify(self, recommendation: Recommendation, action: dict[str, Any]) -> VerificationResult:
        return self._for(recommendation).verify(recommendation, action)

    def finalize(self, recommendation: Recommendation, action: dict[str, Any]) -> dict[str, Any]:
        return self._for(recommendation).finalize(recommendation, action)

    def measure_savings(self, recommendation: Recommendation, backup: dict[str, Any]) -> float | None:
        return self._for(recommendation).measure_savings(recommendation, backup)

    def rollback(
        self,
        recommendation: Recommendation,
        backup: dict[str, Any] | None,
        action: dict[str, Any] | None,
    ) -> dict[str, Any]:
        return self._for(recommendation).rollback(recommendation, backup, action)

    def rollback_done(self, recommendation: Recommendation, rollback: dict[str, Any]) -> bool:
        return self._for(recommendation).rollback_done(recommendation, rollback)
