"""rightsize_database: an oversized DB instance resized, and a refusal; and terminate_instance on an
idle DB instance, deleted after a snapshot (the RDS side of that type shares this scenario's database
set-up)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from local_runtime.demo import Demo

ORDER = 20
TITLE = "RDS: terminate_instance on an idle DB, rightsize_database"


def _create_database(rds: Any, identifier: str, instance_class: str, note: str, **extra: Any) -> str:
    rds.create_db_instance(
        DBInstanceIdentifier=identifier,
        DBInstanceClass=instance_class,
        Engine="postgres",
        MasterUsername="app",
        MasterUserPassword="demo-only-password",
        AllocatedStorage=100,
        Tags=[{"Key": "team", "Value": "data"}],
        **extra,
    )
    print(f"  seeded {identifier:<20} {instance_class:<14} {note}")
    return identifier


def _database(rds: Any, identifier: str) -> dict[str, Any] | None:
    found = rds.describe_db_instances(Filters=[{"Name": "db-instance-id", "Values": [identifier]}])["DBInstances"]
    return found[0] if found else None


def _snapshot_status(rds: Any, snapshot_id: str) -> str:
    found = rds.describe_db_snapshots(SnapshotType="manual")["DBSnapshots"]
    return next((s["Status"] for s in found if s["DBSnapshotIdentifier"] == snapshot_id), "missing")


def run(demo: Demo) -> None:
    rds = demo.runtime.client("rds")
    idle = _create_database(rds, "legacy-reports-db", "db.t3.large", "no connections for 30 days")
    orders = _create_database(rds, "orders-db", "db.m5.xlarge", "CPU below 10% for 14 days")
    billing = _create_database(
        rds, "billing-db", "db.t3.medium", "idle, but deletion protection is on", DeletionProtection=True
    )

    print("\n1. Execute: delete legacy-reports-db after a snapshot (high risk: a person approves)")
    execution = demo.run(demo.recommend("terminate_instance", idle, 95.0), auto_approve=True)
    demo.show_plan(execution)
    snapshot_id = (execution.get("backup") or {}).get("snapshot_id", "")
    snapshot = _snapshot_status(rds, snapshot_id)
    demo.record(
        "rds terminate: execute",
        execution,
        "completed",
        f"DB {'gone' if _database(rds, idle) is None else 'still there'}, snapshot {snapshot_id} {snapshot}, "
        f"saves ${execution['expected_savings']}/month",
        _database(rds, idle) is None and snapshot == "available",
    )

    print("\n2. Execute: resize orders-db from db.m5.xlarge to db.m5.large, applied immediately")
    recommendation = demo.recommend(
        "rightsize_database", orders, 125.0, {"target_instance_class": "db.m5.large", "apply_immediately": True}
    )
    execution = demo.run(recommendation, auto_approve=True)
    demo.show_plan(execution)
    database = _database(rds, orders) or {}
    demo.record(
        "rds rightsize: immediately",
        execution,
        "completed",
        f"DB is {database.get('DBInstanceClass')} ({database.get('DBInstanceStatus')}), "
        f"saves ${execution['expected_savings']}/month",
        database.get("DBInstanceClass") == "db.m5.large" and database.get("DBInstanceStatus") == "available",
    )

    print("\n3. A refusal: delete billing-db, which has deletion protection")
    execution = demo.run(demo.recommend("terminate_instance", billing, 50.0), auto_approve=True)
    print(f"     reason: {execution['error_message']}")
    database = _database(rds, billing) or {}
    demo.record(
        "rds terminate: refusal",
        execution,
        "failed",
        f"DB {database.get('DBInstanceStatus', 'gone')}",
        database.get("DBInstanceStatus") == "available",
    )
