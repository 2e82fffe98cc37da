"""rightsize_database end to end: the real state machine on the local runtime, driven through the API,
with the emulated RDS checked afterwards, both now and in the maintenance window."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from cost_engine.pricing import price_catalog
from local_runtime.client import ApiClient, ApiError
from local_runtime.emulations.rds_pending_modifications import run_maintenance_window
from local_runtime.runtime import LocalRuntime

WINDOW = "sun:03:00-sun:03:30"
ORIGINAL = "db.m5.xlarge"
TARGET = "db.m5.large"


@pytest.fixture
def rds(runtime: LocalRuntime) -> Any:
    return runtime.client("rds")


@pytest.fixture
def create_database(rds: Any) -> Callable[..., str]:
    def create(instance_class: str = ORIGINAL, name: str = "orders-db", **extra: Any) -> str:
        identifier = f"{name}-{uuid.uuid4().hex[:8]}"
        rds.create_db_instance(
            DBInstanceIdentifier=identifier,
            DBInstanceClass=instance_class,
            Engine="postgres",
            MasterUsername="admin",
            MasterUserPassword="not-a-secret-1",
            AllocatedStorage=100,
            PreferredMaintenanceWindow=WINDOW,
            Tags=[{"Key": "Name", "Value": name}],
            **extra,
        )
        return identifier

    return create


@pytest.fixture
def recommend_resize(recommend: Callable[..., str]) -> Callable[..., str]:
    def register(identifier: str, target: str = TARGET, **parameters: Any) -> str:
        return recommend(
            identifier,
            type="rightsize_database",
            parameters={"target_instance_class": target, **parameters},
            estimated_monthly_savings=120.0,
        )

    return register


def describe(rds: Any, identifier: str) -> dict[str, Any]:
    found: dict[str, Any] = rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]
    return found


def pending_class(rds: Any, identifier: str) -> str | None:
    pending: dict[str, str] = describe(rds, identifier).get("PendingModifiedValues", {})
    return pending.get("DBInstanceClass")


def execution_snapshots(rds: Any, execution_id: str) -> dict[str, str]:
    snapshots = rds.describe_db_snapshots(SnapshotType="manual")["DBSnapshots"]
    return {
        s["DBSnapshotIdentifier"]: s["Status"]
        for s in snapshots
        if s["DBSnapshotIdentifier"].startswith(f"cost-engine-{execution_id}")
    }


def run(api: ApiClient, recommendation_id: str, **options: Any) -> dict[str, Any]:
    return api.wait_for(api.execute(recommendation_id, **options)["execution_id"])


def test_dry_run_reports_when_the_change_would_happen_and_changes_nothing(
    api: ApiClient, rds: Any, create_database: Callable[..., str], recommend_resize: Callable[..., str]
) -> None:
    identifier = create_database()

    execution = run(api, recommend_resize(identifier), dry_run=True)

    assert execution["status"] == "completed"
    plan = execution["plan"]
    assert f"in the maintenance window {WINDOW}" in plan["summary"]
    catalog = price_catalog()
    expected = (catalog.db_instance_monthly(ORIGINAL) or 0) - (catalog.db_instance_monthly(TARGET) or 0)
    assert plan["estimated_monthly_savings"] == pytest.approx(expected)
    assert describe(rds, identifier)["DBInstanceClass"] == ORIGINAL
    assert pending_class(rds, identifier) is None
    assert execution_snapshots(rds, execution["execution_id"]) == {}


def test_applied_immediately_the_class_is_the_target_after_a_snapshot(
    api: ApiClient, rds: Any, create_database: Callable[..., str], recommend_resize: Callable[..., str]
) -> None:
    identifier = create_database()

    execution = run(api, recommend_resize(identifier, apply_immediately=True), auto_approve=True)

    assert execution["status"] == "completed", execution["error_message"]
    database = describe(rds, identifier)
    assert (database["DBInstanceClass"], database["DBInstanceStatus"]) == (TARGET, "available")
    assert pending_class(rds, identifier) is None
    assert execution_snapshots(rds, execution["execution_id"]) == {execution["backup"]["snapshot_id"]: "available"}
    assert execution["backup"]["original_instance_class"] == ORIGINAL
    assert execution["action"]["takes_effect"] == "immediately"
    assert execution["expected_savings"] == pytest.approx(execution["plan"]["estimated_monthly_savings"])


def test_by_default_the_change_is_pending_until_the_maintenance_window_runs(
    api: ApiClient, rds: Any, create_database: Callable[..., str], recommend_resize: Callable[..., str]
) -> None:
    identifier = create_database()

    execution = run(api, recommend_resize(identifier), auto_approve=True)

    # Then the execution completed with the change pending, and the record says when it happens
    assert execution["status"] == "completed", execution["error_message"]
    assert describe(rds, identifier)["DBInstanceClass"] == ORIGINAL
    assert pending_class(rds, identifier) == TARGET
    assert execution["action"]["takes_effect"] == f"in the maintenance window {WINDOW} (UTC)"
    assert any(WINDOW in check for check in execution["verification"]["checks"])

    # and once the maintenance window has run, the class is the target
    run_maintenance_window(identifier)
    assert describe(rds, identifier)["DBInstanceClass"] == TARGET
    assert pending_class(rds, identifier) is None


ACTING_STEPS = [
    ("backup", "after"),
    ("check_backup", "before"),
    ("act", "after"),
    ("check_action", "before"),
    ("verify", "before"),
    ("record", "before"),
]


@pytest.mark.parametrize("apply_immediately", [True, False], ids=["immediately", "maintenance-window"])
@pytest.mark.parametrize(("step", "when"), ACTING_STEPS)
def test_a_failure_in_an_acting_step_rolls_back_to_the_original_class(
    api: ApiClient,
    rds: Any,
    runtime: LocalRuntime,
    create_database: Callable[..., str],
    recommend_resize: Callable[..., str],
    step: str,
    when: str,
    apply_immediately: bool,
) -> None:
    # Given a DB, and a step of the acting phase that will fail
    identifier = create_database()
    runtime.faults.inject(step, when=when)

    # When it is executed
    execution = run(api, recommend_resize(identifier, apply_immediately=apply_immediately), auto_approve=True)

    # Then it rolled back by itself: the original class, and nothing left pending for the window
    assert execution["status"] == "rolled_back", execution["error_message"]
    assert "InjectedFault" in execution["error_message"]
    assert describe(rds, identifier)["DBInstanceClass"] == ORIGINAL
    assert pending_class(rds, identifier) is None
    run_maintenance_window(identifier)
    assert describe(rds, identifier)["DBInstanceClass"] == ORIGINAL


def test_manual_rollback_after_an_immediate_change_returns_to_the_original_class(
    api: ApiClient, rds: Any, create_database: Callable[..., str], recommend_resize: Callable[..., str]
) -> None:
    identifier = create_database()
    execution_id = run(api, recommend_resize(identifier, apply_immediately=True), auto_approve=True)["execution_id"]
    assert describe(rds, identifier)["DBInstanceClass"] == TARGET

    api.rollback(execution_id)
    execution = api.wait_for(execution_id, frozenset({"rolled_back", "rollback_failed"}))

    assert execution["status"] == "rolled_back", execution["error_message"]
    assert execution["rollback"]["takes_effect"] == "immediately"
    assert describe(rds, identifier)["DBInstanceClass"] == ORIGINAL
    with pytest.raises(ApiError) as refused:
        api.rollback(execution_id)
    assert refused.value.status_code == 409


def test_manual_rollback_of_a_pending_change_cancels_it(
    api: ApiClient, rds: Any, create_database: Callable[..., str], recommend_resize: Callable[..., str]
) -> None:
    identifier = create_database()
    execution_id = run(api, recommend_resize(identifier), auto_approve=True)["execution_id"]
    assert pending_class(rds, identifier) == TARGET

    api.rollback(execution_id)
    execution = api.wait_for(execution_id, frozenset({"rolled_back", "rollback_failed"}))

    assert execution["status"] == "rolled_back", execution["error_message"]
    assert pending_class(rds, identifier) is None
    run_maintenance_window(identifier)
    assert describe(rds, identifier)["DBInstanceClass"] == ORIGINAL


def test_manual_rollback_after_the_window_schedules_the_original_class_for_the_next_one(
    api: ApiClient, rds: Any, create_database: Callable[..., str], recommend_resize: Callable[..., str]
) -> None:
    identifier = create_database()
    execution_id = run(api, recommend_resize(identifier), auto_approve=True)["execution_id"]
    run_maintenance_window(identifier)

    api.rollback(execution_id)
    execution = api.wait_for(execution_id, frozenset({"rolled_back", "rollback_failed"}))

    assert execution["status"] == "rolled_back", execution["error_message"]
    assert execution["rollback"]["takes_effect"] == f"in the maintenance window {WINDOW} (UTC)"
    assert pending_class(rds, identifier) == ORIGINAL
    run_maintenance_window(identifier)
    assert describe(rds, identifier)["DBInstanceClass"] == ORIGINAL


@pytest.mark.parametrize(
    ("target", "prepare", "reason"),
    [
        (ORIGINAL, None, f"is already {ORIGINAL}: nothing to change"),
        ("db.zz9.huge", None, "db.zz9.huge is not offered for postgres"),
        (TARGET, "pending", "has pending modifications (DBInstanceClass=db.r5.large)"),
        (TARGET, "stopped", "is 'stopped': only an available DB instance is resized"),
    ],
    ids=["already-that-class", "class-not-offered", "pending-modifications", "stopped"],
)
def test_a_refusal_says_why_and_touches_nothing(
    api: ApiClient,
    rds: Any,
    create_database: Callable[..., str],
    recommend_resize: Callable[..., str],
    target: str,
    prepare: str | None,
    reason: str,
) -> None:
    identifier = create_database()
    if prepare == "pending":
        rds.modify_db_instance(DBInstanceIdentifier=identifier, DBInstanceClass="db.r5.large", ApplyImmediately=False)
    elif prepare == "stopped":
        rds.stop_db_instance(DBInstanceIdentifier=identifier)
    before = describe(rds, identifier)

    execution = run(api, recommend_resize(identifier, target=target), auto_approve=True)

    assert execution["status"] == "failed"
    assert reason in execution["error_message"]
    after = describe(rds, identifier)
    assert (after["DBInstanceClass"], after["DBInstanceStatus"], after.get("PendingModifiedValues")) == (
        before["DBInstanceClass"],
        before["DBInstanceStatus"],
        before.get("PendingModifiedValues"),
    )
    assert execution_snapshots(rds, execution["execution_id"]) == {}


def test_a_missing_target_class_is_refused_and_nothing_is_touched(
    api: ApiClient, rds: Any, create_database: Callable[..., str], recommend: Callable[..., str]
) -> None:
    identifier = create_database()

    # The API refuses it when the recommendation is registered, or validation does when it is executed.
    try:
        recommendation_id = recommend(identifier, type="rightsize_database", parameters={})
    except ApiError as refused:
        outcome, message = f"HTTP {refused.status_code}", str(refused.body["message"])
    else:
        execution = run(api, recommendation_id, auto_approve=True)
        outcome, message = execution["status"], str(execution["error_message"])

    assert outcome in ("HTTP 422", "failed")

    assert "target_instance_class" in message
    assert describe(rds, identifier)["DBInstanceClass"] == ORIGINAL
