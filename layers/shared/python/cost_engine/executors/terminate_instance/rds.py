"""`terminate_instance` for an RDS DB instance: back up to a manual DB snapshot with the
configuration a restore needs, delete (with a final snapshot), verify; rollback restores the DB under
its own identifier from the snapshot with the recorded configuration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from pydantic import Field

from cost_engine.aws import aws_failure, error_code
from cost_engine.ec2_instances import RESTORED_FOR_TAG
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
from cost_engine.rds_databases import (
    DB_ARN,
    DB_SNAPSHOT_ARN,
    DELETABLE_DB_STATES,
    ENGINE_DB_SNAPSHOT_ARN,
    FAILED_DB_STATES,
    SOURCE_DB_INSTANCE_TAG,
    RdsDatabases,
    backup_snapshot_id,
    tags_of,
)

if TYPE_CHECKING:
    from mypy_boto3_rds.type_defs import DBInstanceTypeDef

    from cost_engine.aws import AwsClients
    from cost_engine.settings import Settings


class RestoreConfig(StepRecord):
    """What a DB restored from the snapshot must have to be the same DB again."""

    instance_class: str
    engine: str
    engine_version: str | None = None
    allocated_storage_gb: int
    db_subnet_group_name: str | None = None
    db_parameter_group_name: str | None = None
    option_group_name: str | None = None
    vpc_security_group_ids: list[str] = Field(default_factory=list)
    multi_az: bool = False
    availability_zone: str | None = None
    storage_type: str = "gp2"
    iops: int | None = None
    port: int | None = None
    publicly_accessible: bool = False
    copy_tags_to_snapshot: bool = False
    tags: dict[str, str] = Field(default_factory=dict)


@dataclass(frozen=True)
class RestorePoint:
    """What a restore of the DB starts from: the execution's snapshots and the recorded configuration."""

    execution_id: str
    snapshot_id: str
    final_snapshot_id: str | None
    config: RestoreConfig


class RdsBackup(StepRecord):
    """The DB's manual snapshot, the final snapshot its deletion will take, and the restore configuration."""

    execution_id: str
    db_instance_identifier: str
    original_status: str
    restore_config: RestoreConfig
    snapshot_id: str
    final_snapshot_id: str

    def restore_point(self) -> RestorePoint:
        return RestorePoint(self.execution_id, self.snapshot_id, self.final_snapshot_id, self.restore_config)


class RdsDeletion(StepRecord):
    deleted_db_instance_identifier: str
    status_before: str
    snapshot_id: str
    final_snapshot_id: str


class RdsRestore(StepRecord):
    """The DB rolled back to: restored from a snapshot (the restore fields are set), or the original,
    never deleted."""

    db_instance_identifier: str
    restored: bool
    target_status: str
    execution_id: str | None = None
    snapshot_id: str | None = None
    final_snapshot_id: str | None = None
    restore_config: RestoreConfig | None = None
    # The snapshot a restore started from; None while the original was still 'deleting' (rollback_done
    # restores once it is gone).
    from_snapshot_id: str | None = None

    def restore_point(self) -> RestorePoint | None:
        if self.execution_id is None or self.snapshot_id is None or self.restore_config is None:
            return None
        return RestorePoint(self.execution_id, self.snapshot_id, self.final_snapshot_id, self.restore_config)


class RdsInstanceTermination(
    BaseExecutor[TerminateInstanceParameters, "DBInstanceTypeDef", RdsBackup, RdsDeletion, RdsRestore]
):
    """An RDS DB instance: manual snapshot with the restore configuration, delete, restore on rollback.
    A strategy of TerminateInstanceExecutor, not registered itself."""

    recommendation_type = RecommendationType.TERMINATE_INSTANCE
    resource_name = "RDS DB instance"
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

    def find(self, recommendation: Recommendation, params: TerminateInstanceParameters) -> DBInstanceTypeDef | None:
        return self.databases.get(recommendation.resource_id)

    def check(
        self, recommendation: Recommendation, params: TerminateInstanceParameters, database: DBInstanceTypeDef
    ) -> ValidationResult:
        identifier = recommendation.resource_id
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

    def _monthly_savings(self, status: str, config: RestoreConfig) -> float | None:
        catalog = price_catalog()
        multi_az = config.multi_az
        # A stopped DB instance is not billed for its class; its storage is billed in both states.
        compute = catalog.db_instance_monthly(config.instance_class, multi_az) if status == "available" else 0.0
        if compute is None:
            return None
        # Multi-AZ storage is billed for both copies.
        storage = (catalog.db_storage_monthly(config.storage_type, config.allocated_storage_gb) or 0.0) * (
            2 if multi_az else 1
        )
        backup_cost = catalog.db_snapshot_monthly(config.allocated_storage_gb)
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
            basis = f"no catalog price for {config.instance_class}: the recommendation's own estimate"
        snapshot_id = backup_snapshot_id(execution_id)
        return ExecutionPlan(
            summary=(
                f"Delete RDS DB instance {identifier} ({config.instance_class}, {config.engine}, {status}) "
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
                f"Manual DB snapshot of {identifier}, {config.allocated_storage_gb} GiB, kept after the deletion",
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
            resource={"db_instance_identifier": identifier, "status": status, **config.model_dump(mode="json")},
        )

    # -- backup --------------------------------------------------------------------------------

    def _restore_config(self, database: DBInstanceTypeDef) -> RestoreConfig:
        parameter_groups = [g["DBParameterGroupName"] for g in database.get("DBParameterGroups", [])]
        option_groups = [g["OptionGroupName"] for g in database.get("OptionGroupMemberships", [])]
        return RestoreConfig(
            instance_class=database["DBInstanceClass"],
            engine=database["Engine"],
            engine_version=database.get("EngineVersion"),
            allocated_storage_gb=int(database.get("AllocatedStorage", 0)),
            db_subnet_group_name=database.get("DBSubnetGroup", {}).get("DBSubnetGroupName"),
            db_parameter_group_name=parameter_groups[0] if parameter_groups else None,
            option_group_name=option_groups[0] if option_groups else None,
            vpc_security_group_ids=[g["VpcSecurityGroupId"] for g in database.get("VpcSecurityGroups", [])],
            multi_az=bool(database.get("MultiAZ", False)),
            availability_zone=database.get("AvailabilityZone"),
            storage_type=database.get("StorageType", "gp2"),
            iops=database.get("Iops"),
            port=database.get("Endpoint", {}).get("Port") or database.get("DbInstancePort"),
            publicly_accessible=bool(database.get("PubliclyAccessible", False)),
            copy_tags_to_snapshot=bool(database.get("CopyTagsToSnapshot", False)),
            tags=tags_of(database),
        )

    def backup(self, recommendation: Recommendation, execution_id: str) -> RdsBackup:
        identifier = recommendation.resource_id
        database = self.databases.require(identifier)
        snapshot_id = self.databases.ensure_backup_snapshot(identifier, execution_id, "terminate_instance")
        return RdsBackup(
            execution_id=execution_id,
            db_instance_identifier=identifier,
            original_status=database["DBInstanceStatus"],
            restore_config=self._restore_config(database),
            snapshot_id=snapshot_id,
            final_snapshot_id=f"{snapshot_id}-final",
        )

    def backup_ready(self, recommendation: Recommendation, backup: RdsBackup) -> bool:
        if not self.databases.snapshot_ready(backup.snapshot_id, recommendation.resource_id):
            return False
        # A snapshot can hold the instance in 'backing-up' for a while; it can be deleted only after.
        return self.databases.require(recommendation.resource_id)["DBInstanceStatus"] in DELETABLE_DB_STATES

    # -- act -----------------------------------------------------------------------------------

    def apply(self, recommendation: Recommendation, backup: RdsBackup) -> RdsDeletion:
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
                    FinalDBSnapshotIdentifier=backup.final_snapshot_id,
                    # The two snapshots are the restore points; retained automated backups would only
                    # keep costing until their retention runs out.
                    DeleteAutomatedBackups=True,
                )
            except ClientError as error:
                raise aws_failure("DeleteDBInstance", error) from error
        return RdsDeletion(
            deleted_db_instance_identifier=identifier,
            status_before=status,
            snapshot_id=backup.snapshot_id,
            final_snapshot_id=backup.final_snapshot_id,
        )

    def apply_done(self, recommendation: Recommendation, action: RdsDeletion) -> bool:
        database = self.databases.get(action.deleted_db_instance_identifier)
        if database is not None and database["DBInstanceStatus"] in FAILED_DB_STATES:
            raise ActionFailed(
                f"DB instance {action.deleted_db_instance_identifier} is '{database['DBInstanceStatus']}' "
                "instead of being deleted"
            )
        return database is None

    def verify(self, recommendation: Recommendation, action: RdsDeletion) -> VerificationResult:
        checks: list[str] = []
        failures: list[str] = []
        identifier = action.deleted_db_instance_identifier
        database = self.databases.get(identifier)
        state = "gone" if database is None else database["DBInstanceStatus"]
        (checks if database is None else failures).append(f"DB instance {identifier} is {state}")
        for label, snapshot_id in (("backup", action.snapshot_id), ("final", action.final_snapshot_id)):
            status = self.databases.snapshot_status(snapshot_id)
            (checks if status == "available" else failures).append(f"{label} DB snapshot {snapshot_id} is {status}")
        return VerificationResult(passed=not failures, checks=checks, failures=failures)

    def expected_savings(self, recommendation: Recommendation, backup: RdsBackup) -> float | None:
        return self._monthly_savings(backup.original_status, backup.restore_config)

    # -- rollback ------------------------------------------------------------------------------

    def rollback(
        self,
        recommendation: Recommendation,
        backup: RdsBackup | None,
        action: RdsDeletion | None,
    ) -> RdsRestore:
        identifier = recommendation.resource_id
        database = self.databases.get(identifier)
        original_status = "available" if backup is None else backup.original_status
        if database is not None and database["DBInstanceStatus"] != "deleting":
            # Either never deleted (the original is still there, untouched), or restored by an
            # earlier run of this step: there is nothing to start.
            restored = backup is not None and tags_of(database).get(RESTORED_FOR_TAG) == backup.execution_id
            return RdsRestore(db_instance_identifier=identifier, restored=restored, target_status=original_status)
        if backup is None:
            raise ActionFailed(
                f"DB instance {identifier} is gone and no backup DB snapshot was recorded: nothing to restore from"
            )
        # While it is still 'deleting' the identifier is taken: rollback_done restores once it is gone.
        from_snapshot_id = self._restore(identifier, backup.restore_point()) if database is None else None
        return RdsRestore(
            db_instance_identifier=identifier,
            restored=True,
            target_status=original_status,
            execution_id=backup.execution_id,
            snapshot_id=backup.snapshot_id,
            final_snapshot_id=backup.final_snapshot_id,
            restore_config=backup.restore_config,
            from_snapshot_id=from_snapshot_id,
        )

    def _restore_source(self, point: RestorePoint) -> str:
        """The final snapshot when there is one (it has every write up to the deletion), else the backup."""
        final = point.final_snapshot_id
        if final and self.databases.snapshot_status(final) == "available":
            return final
        return point.snapshot_id

    def _restore(self, identifier: str, point: RestorePoint) -> str:
        config = point.config
        snapshot_id = self._restore_source(point)
        tags = [{"Key": k, "Value": v} for k, v in config.tags.items()]
        tags += [
            {"Key": RESTORED_FOR_TAG, "Value": point.execution_id},
            {"Key": SOURCE_DB_INSTANCE_TAG, "Value": identifier},
        ]
        request: dict[str, Any] = {
            "DBInstanceIdentifier": identifier,
            "DBSnapshotIdentifier": snapshot_id,
            "DBInstanceClass": config.instance_class,
            "MultiAZ": config.multi_az,
            "StorageType": config.storage_type,
            "PubliclyAccessible": config.publicly_accessible,
            "CopyTagsToSnapshot": config.copy_tags_to_snapshot,
            "Tags": tags,
        }
        if config.port:
            request["Port"] = config.port
        if config.iops:
            request["Iops"] = config.iops
        if config.db_subnet_group_name:
            request["DBSubnetGroupName"] = config.db_subnet_group_name
        if config.vpc_security_group_ids:
            request["VpcSecurityGroupIds"] = config.vpc_security_group_ids
        if config.availability_zone and not config.multi_az:
            request["AvailabilityZone"] = config.availability_zone
        # The engine's default groups are what a restore gets anyway; only custom ones are named.
        if config.db_parameter_group_name and not config.db_parameter_group_name.startswith("default."):
            request["DBParameterGroupName"] = config.db_parameter_group_name
        if config.option_group_name and not config.option_group_name.startswith("default:"):
            request["OptionGroupName"] = config.option_group_name
        try:
            self.clients.rds.restore_db_instance_from_db_snapshot(**request)
        except ClientError as error:
            # A retried step whose first restore got through finds the identifier taken by it.
            if error_code(error) not in ("DBInstanceAlreadyExists", "DBInstanceAlreadyExistsFault"):
                raise aws_failure("RestoreDBInstanceFromDBSnapshot", error) from error
        return snapshot_id

    def rollback_done(self, recommendation: Recommendation, rollback: RdsRestore) -> bool:
        identifier = rollback.db_instance_identifier
        database = self.databases.get(identifier)
        if database is None:
            point = rollback.restore_point()
            if point is None:
                raise ActionFailed(f"DB instance {identifier} is gone and there is nothing to restore it from")
            self._restore(identifier, point)  # the deletion finished since the rollback started
            return False
        status = database["DBInstanceStatus"]
        if status in FAILED_DB_STATES:
            raise ActionFailed(f"restored DB instance {identifier} is '{status}'")
        if not rollback.restored:
            return status != "deleting"
        target = rollback.target_status
        if status == target:
            return True
        if target == "stopped" and status == "available":
            self.clients.rds.stop_db_instance(DBInstanceIdentifier=identifier)
        return False
