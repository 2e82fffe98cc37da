"""TerminateInstanceExecutor on an RDS DB instance, against emulated RDS: what it refuses, what it plans, and
snapshot → delete → verify → restore called step by step, without a state machine."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

import boto3
import pytest

from cost_engine.aws import AwsClients
from cost_engine.ec2_instances import EXECUTION_TAG, RESTORED_FOR_TAG
from cost_engine.executors.terminate_instance import TerminateInstanceExecutor
from cost_engine.executors.terminate_instance.rds import RdsBackup, RdsDeletion, RdsRestore
from cost_engine.models import Recommendation, RecommendationType, new_execution_id
from cost_engine.pricing import price_catalog
from cost_engine.rds_databases import SOURCE_DB_INSTANCE_TAG
from tests.unit.conftest import ACCOUNT_ID, REGION

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_rds import RDSClient
    from mypy_boto3_rds.type_defs import DBInstanceTypeDef

STORAGE_GB = 50

RecordT = TypeVar("RecordT")


def rds_record(kind: type[RecordT], record: object) -> RecordT:
    """A step's record, which for a DB identifier is the RDS strategy's (the executor answers either)."""
    assert isinstance(record, kind)
    return record


def recommendation_for(identifier: str, **parameters: Any) -> Recommendation:
    return Recommendation(
        customer_id="acme-corp",
        type=RecommendationType.TERMINATE_INSTANCE,
        account_id=ACCOUNT_ID,
        region=REGION,
        resource_id=identifier,
        parameters=parameters,
        estimated_monthly_savings=42.0,
    )


@pytest.fixture
def rds(aws: None) -> RDSClient:
    return boto3.client("rds", region_name=REGION)


@pytest.fixture
def ec2(aws: None) -> EC2Client:
    return boto3.client("ec2", region_name=REGION)


@pytest.fixture
def executor(aws: None) -> TerminateInstanceExecutor:
    return TerminateInstanceExecutor(AwsClients(REGION))


@pytest.fixture
def execution_id() -> str:
    return new_execution_id()


def create_database(rds: RDSClient, identifier: str = "reporting-db", **extra: Any) -> str:
    request: dict[str, Any] = {
        "DBInstanceIdentifier": identifier,
        "DBInstanceClass": "db.m5.large",
        "Engine": "postgres",
        "MasterUsername": "admin",
        "MasterUserPassword": "not-a-secret-1",
        "AllocatedStorage": STORAGE_GB,
        "StorageType": "gp3",
        "Tags": [{"Key": "Name", "Value": identifier}, {"Key": "team", "Value": "analytics"}],
        **extra,
    }
    rds.create_db_instance(**request)
    return identifier


def describe(rds: RDSClient, identifier: str) -> DBInstanceTypeDef | None:
    found = rds.describe_db_instances(Filters=[{"Name": "db-instance-id", "Values": [identifier]}])["DBInstances"]
    return found[0] if found else None


@pytest.fixture
def configured_database(rds: RDSClient, ec2: EC2Client) -> str:
    """A DB with its own subnet group, security group and parameter group, on a custom port."""
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.9.{i}.0/24", AvailabilityZone=f"{REGION}{zone}")["Subnet"][
            "SubnetId"
        ]
        for i, zone in ((1, "a"), (2, "b"))
    ]
    rds.create_db_subnet_group(DBSubnetGroupName="analytics", DBSubnetGroupDescription="analytics", SubnetIds=subnets)
    group = ec2.create_security_group(GroupName="db", Description="databases", VpcId=vpc)["GroupId"]
    rds.create_db_parameter_group(
        DBParameterGroupName="analytics-pg", DBParameterGroupFamily="postgres13", Description="tuned"
    )
    return create_database(
        rds,
        DBSubnetGroupName="analytics",
        VpcSecurityGroupIds=[group],
        DBParameterGroupName="analytics-pg",
        Port=6543,
        MultiAZ=True,
    )


# -- which strategy ----------------------------------------------------------------------------------


def test_an_identifier_that_merely_starts_with_i_dash_is_treated_as_a_database(
    rds: RDSClient, executor: TerminateInstanceExecutor
) -> None:
    identifier = create_database(rds, "i-reporting")

    result = executor.validate(recommendation_for(identifier))

    assert result.valid, result.errors


# -- validate ---------------------------------------------------------------------------------------


def test_an_available_database_without_risks_is_valid(rds: RDSClient, executor: TerminateInstanceExecutor) -> None:
    result = executor.validate(recommendation_for(create_database(rds)))

    assert result.valid
    assert result.errors == []


def test_a_stopped_database_is_valid(rds: RDSClient, executor: TerminateInstanceExecutor) -> None:
    identifier = create_database(rds)
    rds.stop_db_instance(DBInstanceIdentifier=identifier)

    assert executor.validate(recommendation_for(identifier)).valid


def test_an_unknown_database_is_refused(executor: TerminateInstanceExecutor) -> None:
    result = executor.validate(recommendation_for("no-such-db"))

    assert not result.valid
    assert result.errors == [f"RDS DB instance no-such-db does not exist in {REGION}"]


def test_a_database_with_deletion_protection_is_refused(rds: RDSClient, executor: TerminateInstanceExecutor) -> None:
    identifier = create_database(rds, DeletionProtection=True)

    result = executor.validate(recommendation_for(identifier))

    assert not result.valid
    assert result.errors == [
        f"DB instance {identifier} has deletion protection on: turn it off deliberately if the DB really should go"
    ]


def test_the_source_of_read_replicas_is_refused(rds: RDSClient, executor: TerminateInstanceExecutor) -> None:
    identifier = create_database(rds)
    rds.create_db_instance_read_replica(DBInstanceIdentifier="reporting-replica", SourceDBInstanceIdentifier=identifier)

    result = executor.validate(recommendation_for(identifier))

    assert not result.valid
    assert len(result.errors) == 1
    assert "is the source of read replica(s) reporting-replica" in result.errors[0]
    assert "delete or promote the replicas first" in result.errors[0]


def test_a_member_of_a_cluster_is_refused(rds: RDSClient, executor: TerminateInstanceExecutor) -> None:
    rds.create_db_cluster(
        DBClusterIdentifier="aurora-main",
        Engine="aurora-postgresql",
        MasterUsername="admin",
        MasterUserPassword="not-a-secret-1",
    )
    rds.create_db_instance(
        DBInstanceIdentifier="aurora-main-1",
        DBInstanceClass="db.r5.large",
        Engine="aurora-postgresql",
        DBClusterIdentifier="aurora-main",
    )

    result = executor.validate(recommendation_for("aurora-main-1"))

    assert not result.valid
    assert any("member of DB cluster 'aurora-main'" in error for error in result.errors)


def test_unknown_parameters_are_refused(rds: RDSClient, executor: TerminateInstanceExecutor) -> None:
    result = executor.validate(recommendation_for(create_database(rds), skip_snapshot=True))

    assert not result.valid
    assert "invalid parameters for terminate_instance" in result.errors[0]


# -- plan -------------------------------------------------------------------------------------------


def test_the_plan_saves_the_class_and_storage_less_the_snapshot(
    rds: RDSClient, executor: TerminateInstanceExecutor
) -> None:
    catalog = price_catalog()
    identifier = create_database(rds)

    plan = executor.plan(recommendation_for(identifier), new_execution_id())

    compute = catalog.rds_hourly["db.m5.large"] * catalog.hours_per_month
    storage = catalog.rds_storage_gb_month["gp3"] * STORAGE_GB
    snapshot = catalog.rds_snapshot_gb_month * STORAGE_GB
    assert plan.estimated_monthly_savings == pytest.approx(compute + storage - snapshot, abs=0.01)
    assert plan.savings_basis == catalog.basis
    assert any("Delete reporting-db" in action for action in plan.actions)


def test_the_plan_of_a_multi_az_database_counts_both_copies(
    rds: RDSClient, executor: TerminateInstanceExecutor, configured_database: str
) -> None:
    catalog = price_catalog()

    plan = executor.plan(recommendation_for(configured_database), new_execution_id())

    compute = 2 * catalog.rds_hourly["db.m5.large"] * catalog.hours_per_month
    storage = 2 * catalog.rds_storage_gb_month["gp3"] * STORAGE_GB
    snapshot = catalog.rds_snapshot_gb_month * STORAGE_GB
    assert plan.estimated_monthly_savings == pytest.approx(compute + storage - snapshot, abs=0.01)


def test_without_a_catalog_price_the_plan_falls_back_to_the_recommendations_estimate(
    rds: RDSClient, executor: TerminateInstanceExecutor
) -> None:
    assert "db.x2g.large" not in price_catalog().rds_hourly
    identifier = create_database(rds, DBInstanceClass="db.x2g.large")

    plan = executor.plan(recommendation_for(identifier), new_execution_id())

    assert plan.estimated_monthly_savings == 42.0
    assert plan.savings_basis == "no catalog price for db.x2g.large: the recommendation's own estimate"


# -- backup, delete, verify, restore -------------------------------------------------------------------


def test_backup_takes_a_tagged_snapshot_and_records_the_restore_configuration(
    rds: RDSClient, executor: TerminateInstanceExecutor, configured_database: str, execution_id: str
) -> None:
    recommendation = recommendation_for(configured_database)

    backup = rds_record(RdsBackup, executor.backup(recommendation, execution_id))

    [snapshot] = rds.describe_db_snapshots(DBSnapshotIdentifier=backup.snapshot_id)["DBSnapshots"]
    tags = {t["Key"]: t["Value"] for t in snapshot.get("TagList", [])}
    assert tags[EXECUTION_TAG] == execution_id
    assert tags[SOURCE_DB_INSTANCE_TAG] == configured_database
    config = backup.restore_config
    assert config.instance_class == "db.m5.large"
    assert config.db_subnet_group_name == "analytics"
    assert config.db_parameter_group_name == "analytics-pg"
    assert config.port == 6543
    assert config.multi_az is True
    assert config.storage_type == "gp3"
    assert config.tags == {"Name": configured_database, "team": "analytics"}
    assert executor.backup_ready(recommendation, backup) is True


def test_a_repeated_backup_reuses_the_snapshot_it_already_made(
    rds: RDSClient, executor: TerminateInstanceExecutor, execution_id: str
) -> None:
    recommendation = recommendation_for(create_database(rds))

    first = rds_record(RdsBackup, executor.backup(recommendation, execution_id))
    second = rds_record(RdsBackup, executor.backup(recommendation, execution_id))

    assert second.snapshot_id == first.snapshot_id
    assert len(rds.describe_db_snapshots(SnapshotType="manual")["DBSnapshots"]) == 1


@pytest.fixture
def deleted(
    rds: RDSClient, executor: TerminateInstanceExecutor, configured_database: str, execution_id: str
) -> tuple[RdsBackup, RdsDeletion]:
    """The configured DB backed up and deleted by the executor: (backup, action)."""
    recommendation = recommendation_for(configured_database)
    backup = rds_record(RdsBackup, executor.backup(recommendation, execution_id))
    assert executor.backup_ready(recommendation, backup)
    return backup, rds_record(RdsDeletion, executor.apply(recommendation, backup))


def test_apply_deletes_the_database_with_a_final_snapshot_and_verify_confirms_it(
    rds: RDSClient,
    executor: TerminateInstanceExecutor,
    configured_database: str,
    deleted: tuple[RdsBackup, RdsDeletion],
) -> None:
    backup, action = deleted
    recommendation = recommendation_for(configured_database)

    assert describe(rds, configured_database) is None
    assert executor.apply_done(recommendation, action) is True
    verification = executor.verify(recommendation, action)
    assert verification.passed, verification.failures
    snapshots = {s["DBSnapshotIdentifier"] for s in rds.describe_db_snapshots(SnapshotType="manual")["DBSnapshots"]}
    assert snapshots == {backup.snapshot_id, backup.final_snapshot_id}


def test_a_repeated_apply_does_not_act_twice(
    executor: TerminateInstanceExecutor, configured_database: str, deleted: tuple[RdsBackup, RdsDeletion]
) -> None:
    backup, _ = deleted

    again = rds_record(RdsDeletion, executor.apply(recommendation_for(configured_database), backup))

    assert again.status_before == "gone"


def test_rollback_restores_the_database_under_its_identifier_as_it_was(
    rds: RDSClient,
    executor: TerminateInstanceExecutor,
    configured_database: str,
    execution_id: str,
    deleted: tuple[RdsBackup, RdsDeletion],
) -> None:
    backup, action = deleted
    recommendation = recommendation_for(configured_database)

    rollback = rds_record(RdsRestore, executor.rollback(recommendation, backup, action))

    assert rollback.restored is True
    assert rollback.from_snapshot_id == backup.final_snapshot_id
    restored = describe(rds, configured_database)
    assert restored is not None
    assert restored["DBInstanceClass"] == "db.m5.large"
    assert restored["DBSubnetGroup"]["DBSubnetGroupName"] == "analytics"
    assert [g["DBParameterGroupName"] for g in restored["DBParameterGroups"]] == ["analytics-pg"]
    security_groups = [g["VpcSecurityGroupId"] for g in restored["VpcSecurityGroups"]]
    assert security_groups == backup.restore_config.vpc_security_group_ids
    assert restored["Endpoint"]["Port"] == 6543
    assert restored["MultiAZ"] is True
    tags = {t["Key"]: t["Value"] for t in restored.get("TagList", [])}
    assert tags["team"] == "analytics"
    assert tags[RESTORED_FOR_TAG] == execution_id
    assert executor.rollback_done(recommendation, rollback) is True


def test_a_repeated_rollback_does_not_restore_twice(
    rds: RDSClient,
    executor: TerminateInstanceExecutor,
    configured_database: str,
    deleted: tuple[RdsBackup, RdsDeletion],
) -> None:
    backup, action = deleted
    recommendation = recommendation_for(configured_database)

    executor.rollback(recommendation, backup, action)
    second = rds_record(RdsRestore, executor.rollback(recommendation, backup, action))

    assert second.restored is True
    assert len(rds.describe_db_instances()["DBInstances"]) == 1
    assert executor.rollback_done(recommendation, second) is True


def test_rollback_before_the_deletion_keeps_the_original_database(
    rds: RDSClient, executor: TerminateInstanceExecutor, execution_id: str
) -> None:
    identifier = create_database(rds)
    recommendation = recommendation_for(identifier)
    backup = executor.backup(recommendation, execution_id)

    rollback = executor.rollback(recommendation, backup, None)

    assert executor.stored(rollback) == {
        "db_instance_identifier": identifier,
        "restored": False,
        "target_status": "available",
    }
    assert executor.rollback_done(recommendation, rollback) is True
    database = describe(rds, identifier)
    assert database is not None
    assert RESTORED_FOR_TAG not in {t["Key"] for t in database.get("TagList", [])}


def test_rollback_of_a_stopped_database_leaves_the_restored_one_stopped(
    rds: RDSClient, executor: TerminateInstanceExecutor, execution_id: str
) -> None:
    identifier = create_database(rds)
    rds.stop_db_instance(DBInstanceIdentifier=identifier)
    recommendation = recommendation_for(identifier)
    backup = executor.backup(recommendation, execution_id)
    action = executor.apply(recommendation, backup)

    rollback = executor.rollback(recommendation, backup, action)
    polls = [executor.rollback_done(recommendation, rollback) for _ in range(2)]

    assert polls == [False, True]
    database = describe(rds, identifier)
    assert database is not None
    assert database["DBInstanceStatus"] == "stopped"


def test_a_stopped_database_saves_only_its_storage(rds: RDSClient, executor: TerminateInstanceExecutor) -> None:
    catalog = price_catalog()
    identifier = create_database(rds)
    rds.stop_db_instance(DBInstanceIdentifier=identifier)
    recommendation = recommendation_for(identifier)
    backup = executor.backup(recommendation, new_execution_id())

    savings = executor.expected_savings(recommendation, backup)

    storage = catalog.rds_storage_gb_month["gp3"] * STORAGE_GB
    assert savings == pytest.approx(storage - catalog.rds_snapshot_gb_month * STORAGE_GB, abs=0.01)
