"""terminate_instance on an RDS DB instance, end to end: the real state machine on the local runtime,
driven through the API, with the emulated RDS checked afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from cost_engine.pricing import price_catalog
from local_runtime.client import ApiClient, ApiError
from local_runtime.runtime import LocalRuntime
from tests.integration.conftest import ROLLED_BACK, step_events

STORAGE_GB = 40


@pytest.fixture
def rds(runtime: LocalRuntime) -> Any:
    return runtime.client("rds")


@pytest.fixture
def db_network(ec2: Any, rds: Any) -> dict[str, str]:
    """A DB subnet group and a security group of their own."""
    suffix = uuid.uuid4().hex[:8]
    vpc = ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.40.{i}.0/24", AvailabilityZone=f"us-east-1{zone}")["Subnet"][
            "SubnetId"
        ]
        for i, zone in ((1, "a"), (2, "b"))
    ]
    subnet_group = f"db-subnets-{suffix}"
    rds.create_db_subnet_group(DBSubnetGroupName=subnet_group, DBSubnetGroupDescription="test", SubnetIds=subnets)
    group = ec2.create_security_group(GroupName=f"db-{suffix}", Description="databases", VpcId=vpc)["GroupId"]
    return {"subnet_group": subnet_group, "security_group_id": group}


@pytest.fixture
def create_database(rds: Any, db_network: dict[str, str]) -> Callable[..., str]:
    def create(instance_class: str = "db.t3.large", name: str = "idle-db", **extra: Any) -> str:
        identifier = f"{name}-{uuid.uuid4().hex[:8]}"
        rds.create_db_instance(
            DBInstanceIdentifier=identifier,
            DBInstanceClass=instance_class,
            Engine="mysql",
            MasterUsername="admin",
            MasterUserPassword="not-a-secret-1",
            AllocatedStorage=STORAGE_GB,
            DBSubnetGroupName=db_network["subnet_group"],
            VpcSecurityGroupIds=[db_network["security_group_id"]],
            Port=3307,
            Tags=[{"Key": "Name", "Value": name}, {"Key": "team", "Value": "data"}],
            **extra,
        )
        return identifier

    return create


def database(rds: Any, identifier: str) -> dict[str, Any] | None:
    found = rds.describe_db_instances(Filters=[{"Name": "db-instance-id", "Values": [identifier]}])["DBInstances"]
    return found[0] if found else None


def execution_snapshots(rds: Any, execution_id: str) -> dict[str, str]:
    """The engine's snapshots of one execution: identifier → status."""
    snapshots = rds.describe_db_snapshots(SnapshotType="manual")["DBSnapshots"]
    return {
        s["DBSnapshotIdentifier"]: s["Status"]
        for s in snapshots
        if s["DBSnapshotIdentifier"].startswith(f"cost-engine-{execution_id}")
    }


def assert_back_as_it_was(rds: Any, identifier: str, db_network: dict[str, str]) -> dict[str, Any]:
    restored = database(rds, identifier)
    assert restored is not None, f"{identifier} is gone"
    assert restored["DBInstanceStatus"] == "available"
    assert restored["DBInstanceClass"] == "db.t3.large"
    assert restored["DBSubnetGroup"]["DBSubnetGroupName"] == db_network["subnet_group"]
    assert [g["VpcSecurityGroupId"] for g in restored["VpcSecurityGroups"]] == [db_network["security_group_id"]]
    assert restored["Endpoint"]["Port"] == 3307
    tags = {t["Key"]: t["Value"] for t in restored["TagList"]}
    assert tags["team"] == "data"
    return restored


def test_dry_run_reports_the_plan_and_changes_nothing(
    api: ApiClient, rds: Any, create_database: Callable[..., str], recommend: Callable[..., str]
) -> None:
    # Given an idle DB with a recommendation to delete it
    identifier = create_database()

    # When a dry run is executed
    execution = api.wait_for(api.execute(recommend(identifier), dry_run=True)["execution_id"])

    # Then it completes with a plan priced from the catalog, and the DB is untouched
    assert execution["status"] == "completed"
    plan = execution["plan"]
    assert any(f"Delete {identifier}" in action for action in plan["actions"])
    catalog = price_catalog()
    expected = round(
        (catalog.db_instance_monthly("db.t3.large") or 0)
        + (catalog.db_storage_monthly("gp2", STORAGE_GB) or 0)
        - catalog.db_snapshot_monthly(STORAGE_GB),
        2,
    )
    assert plan["estimated_monthly_savings"] == pytest.approx(expected)
    assert (database(rds, identifier) or {}).get("DBInstanceStatus") == "available"
    assert execution_snapshots(rds, execution["execution_id"]) == {}


def test_execution_deletes_the_database_and_keeps_its_snapshots(
    api: ApiClient, rds: Any, create_database: Callable[..., str], recommend: Callable[..., str]
) -> None:
    identifier = create_database(name="old-reports")

    # When its deletion is executed and a person approves it through the API
    execution = api.run(recommend(identifier), approver="lead@example.com", comment="unused since the migration")

    # Then the DB is gone, the backup and the final snapshot are available, and the record says so
    assert execution["status"] == "completed", execution["error_message"]
    assert execution["auto_approved"] is False
    assert execution["approval"]["approver_name"] == "lead@example.com"
    assert execution["approval"]["decided_via"] == "api"
    assert execution["policy"]["risk_level"] == "high"
    assert database(rds, identifier) is None
    backup = execution["backup"]
    assert execution_snapshots(rds, execution["execution_id"]) == {
        backup["snapshot_id"]: "available",
        backup["final_snapshot_id"]: "available",
    }
    assert backup["restore_config"]["instance_class"] == "db.t3.large"
    assert backup["restore_config"]["tags"]["Name"] == "old-reports"
    assert execution["verification"]["passed"] is True
    assert execution["expected_savings"] == pytest.approx(execution["plan"]["estimated_monthly_savings"])


@pytest.mark.parametrize(
    ("step", "when"),
    [
        ("backup", "after"),
        ("check_backup", "before"),
        ("act", "after"),
        ("check_action", "before"),
        ("verify", "before"),
        ("record", "before"),
    ],
)
def test_a_failure_in_an_acting_step_rolls_back_to_the_original_database(
    api: ApiClient,
    rds: Any,
    runtime: LocalRuntime,
    create_database: Callable[..., str],
    recommend: Callable[..., str],
    db_network: dict[str, str],
    step: str,
    when: str,
) -> None:
    # Given a DB, and a step of the acting phase that will fail
    identifier = create_database()
    runtime.faults.inject(step, when=when)

    # When it is executed and approved
    execution = api.run(recommend(identifier), approver="lead@example.com")

    # Then the execution rolled back by itself, and the DB is there again as it was
    assert execution["status"] == "rolled_back", execution["error_message"]
    assert "InjectedFault" in execution["error_message"]
    assert_back_as_it_was(rds, identifier, db_network)
    events = [event["event_type"] for event in api.logs(execution["execution_id"])["events"]]
    assert step_events(events)[-3:] == ROLLED_BACK[-3:]


def test_once_deleted_a_failure_restores_the_database_from_the_final_snapshot(
    api: ApiClient,
    rds: Any,
    runtime: LocalRuntime,
    create_database: Callable[..., str],
    recommend: Callable[..., str],
    db_network: dict[str, str],
) -> None:
    identifier = create_database()
    runtime.faults.inject("verify", when="before")

    execution = api.run(recommend(identifier), approver="lead@example.com")

    assert execution["status"] == "rolled_back"
    assert execution["rollback"]["restored"] is True
    assert execution["rollback"]["from_snapshot_id"] == execution["backup"]["final_snapshot_id"]
    restored = assert_back_as_it_was(rds, identifier, db_network)
    tags = {t["Key"]: t["Value"] for t in restored["TagList"]}
    assert tags["cost-engine:restored-for-execution"] == execution["execution_id"]


def test_manual_rollback_restores_a_deleted_database(
    api: ApiClient,
    rds: Any,
    create_database: Callable[..., str],
    recommend: Callable[..., str],
    db_network: dict[str, str],
) -> None:
    # Given a completed deletion
    identifier = create_database()
    execution_id = api.run(recommend(identifier), approver="lead@example.com")["execution_id"]
    assert database(rds, identifier) is None

    # When a rollback is asked for
    api.rollback(execution_id)
    execution = api.wait_for(execution_id, frozenset({"rolled_back", "rollback_failed"}))

    # Then the DB is restored under its own identifier with its configuration
    assert execution["status"] == "rolled_back", execution["error_message"]
    assert execution["success"] is True
    assert_back_as_it_was(rds, identifier, db_network)
    with pytest.raises(ApiError) as refused:
        api.rollback(execution_id)
    assert refused.value.status_code == 409


def test_a_database_with_deletion_protection_is_refused_and_untouched(
    api: ApiClient, rds: Any, create_database: Callable[..., str], recommend: Callable[..., str]
) -> None:
    identifier = create_database(DeletionProtection=True)

    execution = api.run(recommend(identifier), approver="lead@example.com")

    assert execution["status"] == "failed"
    assert "deletion protection on" in execution["error_message"]
    assert (database(rds, identifier) or {}).get("DBInstanceStatus") == "available"
    assert execution_snapshots(rds, execution["execution_id"]) == {}


def test_the_source_of_a_read_replica_is_refused_and_untouched(
    api: ApiClient, rds: Any, create_database: Callable[..., str], recommend: Callable[..., str]
) -> None:
    identifier = create_database()
    replica = f"{identifier}-replica"
    rds.create_db_instance_read_replica(DBInstanceIdentifier=replica, SourceDBInstanceIdentifier=identifier)

    execution = api.run(recommend(identifier), approver="lead@example.com")

    assert execution["status"] == "failed"
    assert f"source of read replica(s) {replica}" in execution["error_message"]
    assert database(rds, identifier) is not None
    assert database(rds, replica) is not None
    assert execution_snapshots(rds, execution["execution_id"]) == {}


def test_a_database_that_does_not_exist_is_refused(api: ApiClient, recommend: Callable[..., str]) -> None:
    execution = api.run(recommend("no-such-database"), approver="lead@example.com")

    assert execution["status"] == "failed"
    assert "RDS DB instance no-such-database does not exist" in execution["error_message"]
