"""RDS DB instances as the executors that act on them read them (`terminate_instance` for a DB,
`rightsize_database`): the engine's snapshots, the states, the ARNs their permissions name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from cost_engine.aws import aws_failure, error_code
from cost_engine.ec2_instances import EXECUTION_TAG
from cost_engine.errors import ActionFailed

if TYPE_CHECKING:
    from mypy_boto3_rds import RDSClient
    from mypy_boto3_rds.type_defs import DBInstanceTypeDef


SOURCE_DB_INSTANCE_TAG = "cost-engine:source-db-instance"
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

DB_ARN = "arn:{partition}:rds:{region}:{account}:db:*"
# The engine names every snapshot it makes `cost-engine-…`: it may create and restore only those.
ENGINE_DB_SNAPSHOT_ARN = "arn:{partition}:rds:{region}:{account}:snapshot:cost-engine-*"
DB_SNAPSHOT_ARN = "arn:{partition}:rds:{region}:{account}:snapshot:*"


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
