"""RightsizeDatabaseExecutor against emulated RDS (with the local runtime's pending-modifications
emulation): what it refuses, what it plans, and both the immediate and the maintenance-window change,
step by step without a state machine."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from cost_engine.aws import AwsClients
from cost_engine.ec2_instances import EXECUTION_TAG
from cost_engine.executors.rightsize_database import (
    DatabaseClassBackup,
    DatabaseClassChange,
    DatabaseClassRestore,
    RightsizeDatabaseExecutor,
)
from cost_engine.models import Recommendation, RecommendationType, new_execution_id
from cost_engine.pricing import price_catalog
from local_runtime.emulations.rds_pending_modifications import patch, run_maintenance_window, unpatch
from tests.unit.conftest import ACCOUNT_ID, REGION

if TYPE_CHECKING:
    from mypy_boto3_rds import RDSClient
    from mypy_boto3_rds.type_defs import DBInstanceTypeDef

WINDOW = "sun:03:00-sun:03:30"


def recommendation_for(identifier: str, **parameters: Any) -> Recommendation:
    return Recommendation(
        customer_id="acme-corp",
        type=RecommendationType.RIGHTSIZE_DATABASE,
        account_id=ACCOUNT_ID,
        region=REGION,
        resource_id=identifier,
        parameters=parameters,
        estimated_monthly_savings=55.0,
    )


@pytest.fixture
def rds(aws: None) -> Iterator[RDSClient]:
    patch()
    yield boto3.client("rds", region_name=REGION)
    unpatch()


@pytest.fixture
def executor(aws: None) -> RightsizeDatabaseExecutor:
    return RightsizeDatabaseExecutor(AwsClients(REGION))


def create_database(rds: RDSClient, identifier: str = "orders-db", **extra: Any) -> str:
    request: dict[str, Any] = {
        "DBInstanceIdentifier": identifier,
        "DBInstanceClass": "db.m5.xlarge",
        "Engine": "mysql",
        "MasterUsername": "admin",
        "MasterUserPassword": "not-a-secret-1",
        "AllocatedStorage": 100,
        "PreferredMaintenanceWindow": WINDOW,
        **extra,
    }
    rds.create_db_instance(**request)
    return identifier


def describe(rds: RDSClient, identifier: str) -> DBInstanceTypeDef:
    return rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]


def pending_class(rds: RDSClient, identifier: str) -> str | None:
    return describe(rds, identifier).get("PendingModifiedValues", {}).get("DBInstanceClass")


# -- validate ---------------------------------------------------------------------------------------


def test_a_smaller_known_class_is_valid(rds: RDSClient, executor: RightsizeDatabaseExecutor) -> None:
    result = executor.validate(recommendation_for(create_database(rds), target_instance_class="db.m5.large"))

    assert result.valid, result.errors
    assert result.warnings == []


def test_the_target_class_is_required(rds: RDSClient, executor: RightsizeDatabaseExecutor) -> None:
    result = executor.validate(recommendation_for(create_database(rds)))

    assert not result.valid
    assert "invalid parameters for rightsize_database" in result.errors[0]
    assert "target_instance_class" in result.errors[0]


def test_a_malformed_class_is_refused(rds: RDSClient, executor: RightsizeDatabaseExecutor) -> None:
    result = executor.validate(recommendation_for(create_database(rds), target_instance_class="m5.large"))

    assert not result.valid
    assert "target_instance_class" in result.errors[0]


def test_the_current_class_is_refused(rds: RDSClient, executor: RightsizeDatabaseExecutor) -> None:
    identifier = create_database(rds)

    result = executor.validate(recommendation_for(identifier, target_instance_class="db.m5.xlarge"))

    assert result.errors == [f"DB instance {identifier} is already db.m5.xlarge: nothing to change"]


def test_a_class_not_offered_is_refused(rds: RDSClient, executor: RightsizeDatabaseExecutor) -> None:
    # moto lists no orderable options for mysql, so the price catalog decides here.
    result = executor.validate(recommendation_for(create_database(rds), target_instance_class="db.zz9.huge"))

    assert not result.valid
    assert len(result.errors) == 1
    assert result.errors[0].startswith("db.zz9.huge is not offered for mysql")


def test_a_stopped_database_is_refused(rds: RDSClient, executor: RightsizeDatabaseExecutor) -> None:
    identifier = create_database(rds)
    rds.stop_db_instance(DBInstanceIdentifier=identifier)

    result = executor.validate(recommendation_for(identifier, target_instance_class="db.m5.large"))

    assert result.errors == [f"DB instance {identifier} is 'stopped': only an available DB instance is resized"]


def test_a_database_with_pending_modifications_is_refused_and_they_are_listed(
    rds: RDSClient, executor: RightsizeDatabaseExecutor
) -> None:
    identifier = create_database(rds)
    rds.modify_db_instance(DBInstanceIdentifier=identifier, DBInstanceClass="db.r5.large", ApplyImmediately=False)

    result = executor.validate(recommendation_for(identifier, target_instance_class="db.m5.large"))

    assert not result.valid
    assert len(result.errors) == 1
    assert f"DB instance {identifier} has pending modifications (DBInstanceClass=db.r5.large)" in result.errors[0]


def test_an_unknown_database_is_refused(executor: RightsizeDatabaseExecutor) -> None:
    result = executor.validate(recommendation_for("no-such-db", target_instance_class="db.m5.large"))

    assert result.errors == [f"RDS DB instance no-such-db does not exist in {REGION}"]


def test_applying_immediately_is_pointed_out(rds: RDSClient, executor: RightsizeDatabaseExecutor) -> None:
    result = executor.validate(
        recommendation_for(create_database(rds), target_instance_class="db.m5.large", apply_immediately=True)
    )

    assert result.valid
    assert len(result.warnings) == 1
    assert "unavailable for a few minutes" in result.warnings[0]


# -- plan -------------------------------------------------------------------------------------------


def test_the_plan_says_the_change_waits_for_the_maintenance_window_by_default(
    rds: RDSClient, executor: RightsizeDatabaseExecutor
) -> None:
    catalog = price_catalog()
    identifier = create_database(rds)

    plan = executor.plan(recommendation_for(identifier, target_instance_class="db.m5.large"), new_execution_id())

    assert f"in the maintenance window {WINDOW}" in plan.summary
    assert any("ApplyImmediately=false" in action and WINDOW in action for action in plan.actions)
    assert plan.resource["takes_effect"] == f"in the maintenance window {WINDOW} (UTC)"
    expected = (catalog.rds_hourly["db.m5.xlarge"] - catalog.rds_hourly["db.m5.large"]) * catalog.hours_per_month
    assert plan.estimated_monthly_savings == pytest.approx(expected, abs=0.01)


def test_the_plan_of_a_multi_az_database_counts_both_instances(
    rds: RDSClient, executor: RightsizeDatabaseExecutor
) -> None:
    catalog = price_catalog()
    identifier = create_database(rds, MultiAZ=True)

    plan = executor.plan(
        recommendation_for(identifier, target_instance_class="db.m5.large", apply_immediately=True),
        new_execution_id(),
    )

    assert "immediately" in plan.summary
    expected = 2 * (catalog.rds_hourly["db.m5.xlarge"] - catalog.rds_hourly["db.m5.large"]) * catalog.hours_per_month
    assert plan.estimated_monthly_savings == pytest.approx(expected, abs=0.01)


def test_without_catalog_prices_the_plan_falls_back_to_the_recommendations_estimate(
    rds: RDSClient, executor: RightsizeDatabaseExecutor
) -> None:
    identifier = create_database(rds, DBInstanceClass="db.x2g.xlarge")

    plan = executor.plan(recommendation_for(identifier, target_instance_class="db.x2g.large"), new_execution_id())

    assert plan.estimated_monthly_savings == 55.0
    assert plan.savings_basis == "no catalog price for db.x2g.xlarge, db.x2g.large: the recommendation's own estimate"


# -- backup, change, verify, roll back ----------------------------------------------------------------


def test_backup_takes_a_tagged_snapshot_once_and_records_the_original_class(
    rds: RDSClient, executor: RightsizeDatabaseExecutor
) -> None:
    execution_id = new_execution_id()
    recommendation = recommendation_for(create_database(rds), target_instance_class="db.m5.large")

    backup = executor.backup(recommendation, execution_id)
    again = executor.backup(recommendation, execution_id)

    assert again.snapshot_id == backup.snapshot_id
    [snapshot] = rds.describe_db_snapshots(SnapshotType="manual")["DBSnapshots"]
    assert {"Key": EXECUTION_TAG, "Value": execution_id} in snapshot.get("TagList", [])
    assert backup.original_instance_class == "db.m5.xlarge"
    assert executor.backup_ready(recommendation, backup) is True


def changed(
    executor: RightsizeDatabaseExecutor, recommendation: Recommendation
) -> tuple[DatabaseClassBackup, DatabaseClassChange]:
    backup = executor.backup(recommendation, new_execution_id())
    assert executor.backup_ready(recommendation, backup)
    return backup, executor.apply(recommendation, backup)


def test_applied_immediately_the_class_changes_now(rds: RDSClient, executor: RightsizeDatabaseExecutor) -> None:
    identifier = create_database(rds)
    recommendation = recommendation_for(identifier, target_instance_class="db.m5.large", apply_immediately=True)

    _, action = changed(executor, recommendation)

    assert describe(rds, identifier)["DBInstanceClass"] == "db.m5.large"
    assert action.takes_effect == "immediately"
    assert executor.apply_done(recommendation, action) is True
    verification = executor.verify(recommendation, action)
    assert verification.passed, verification.failures


def test_by_default_the_change_is_pending_until_the_maintenance_window(
    rds: RDSClient, executor: RightsizeDatabaseExecutor
) -> None:
    identifier = create_database(rds)
    recommendation = recommendation_for(identifier, target_instance_class="db.m5.large")

    _, action = changed(executor, recommendation)

    # Then AWS shows it pending, the class is unchanged until the window, and the record says when
    assert describe(rds, identifier)["DBInstanceClass"] == "db.m5.xlarge"
    assert pending_class(rds, identifier) == "db.m5.large"
    assert action.takes_effect == f"in the maintenance window {WINDOW} (UTC)"
    assert executor.apply_done(recommendation, action) is True
    verification = executor.verify(recommendation, action)
    assert verification.passed, verification.failures
    assert any("db.m5.large pending" in check and WINDOW in check for check in verification.checks)

    run_maintenance_window(identifier)
    assert describe(rds, identifier)["DBInstanceClass"] == "db.m5.large"
    assert executor.verify(recommendation, action).passed


def test_a_repeated_apply_does_not_ask_twice(
    rds: RDSClient, executor: RightsizeDatabaseExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    identifier = create_database(rds)
    recommendation = recommendation_for(identifier, target_instance_class="db.m5.large")
    backup, _ = changed(executor, recommendation)
    calls: list[dict[str, Any]] = []
    original_modify = executor.clients.rds.modify_db_instance

    def counting_modify(**kwargs: Any) -> Any:
        calls.append(kwargs)
        return original_modify(**kwargs)

    monkeypatch.setattr(executor.clients.rds, "modify_db_instance", counting_modify)

    executor.apply(recommendation, backup)

    assert calls == []
    assert pending_class(rds, identifier) == "db.m5.large"


def test_verify_fails_when_the_class_is_not_the_target(rds: RDSClient, executor: RightsizeDatabaseExecutor) -> None:
    identifier = create_database(rds)
    recommendation = recommendation_for(identifier, target_instance_class="db.m5.large")
    _, action = changed(executor, recommendation)
    rds.modify_db_instance(DBInstanceIdentifier=identifier, DBInstanceClass="db.m5.xlarge", ApplyImmediately=False)

    verification = executor.verify(recommendation, action)

    assert not verification.passed
    assert verification.failures == [f"DB instance {identifier} is db.m5.xlarge, not db.m5.large"]


def test_rollback_of_an_immediate_change_returns_to_the_original_class(
    rds: RDSClient, executor: RightsizeDatabaseExecutor
) -> None:
    identifier = create_database(rds)
    recommendation = recommendation_for(identifier, target_instance_class="db.m5.large", apply_immediately=True)
    backup, action = changed(executor, recommendation)

    rollback = executor.rollback(recommendation, backup, action)

    assert isinstance(rollback, DatabaseClassRestore)
    assert rollback.takes_effect == "immediately"
    assert executor.rollback_done(recommendation, rollback) is True
    assert describe(rds, identifier)["DBInstanceClass"] == "db.m5.xlarge"


def test_rollback_of_a_pending_change_cancels_it(rds: RDSClient, executor: RightsizeDatabaseExecutor) -> None:
    identifier = create_database(rds)
    recommendation = recommendation_for(identifier, target_instance_class="db.m5.large")
    backup, action = changed(executor, recommendation)

    rollback = executor.rollback(recommendation, backup, action)

    assert executor.rollback_done(recommendation, rollback) is True
    assert pending_class(rds, identifier) is None
    run_maintenance_window(identifier)
    assert describe(rds, identifier)["DBInstanceClass"] == "db.m5.xlarge"


def test_rollback_after_the_window_schedules_the_original_class_for_the_next_window(
    rds: RDSClient, executor: RightsizeDatabaseExecutor
) -> None:
    identifier = create_database(rds)
    recommendation = recommendation_for(identifier, target_instance_class="db.m5.large")
    backup, action = changed(executor, recommendation)
    run_maintenance_window(identifier)

    rollback = executor.rollback(recommendation, backup, action)

    assert isinstance(rollback, DatabaseClassRestore)
    assert rollback.takes_effect == f"in the maintenance window {WINDOW} (UTC)"
    assert executor.rollback_done(recommendation, rollback) is True
    assert pending_class(rds, identifier) == "db.m5.xlarge"
    run_maintenance_window(identifier)
    assert describe(rds, identifier)["DBInstanceClass"] == "db.m5.xlarge"


def test_rollback_before_any_change_changes_nothing(rds: RDSClient, executor: RightsizeDatabaseExecutor) -> None:
    identifier = create_database(rds)
    recommendation = recommendation_for(identifier, target_instance_class="db.m5.large")
    backup = executor.backup(recommendation, new_execution_id())

    rollback = executor.rollback(recommendation, backup, None)

    assert isinstance(rollback, DatabaseClassRestore)
    assert rollback.takes_effect == "nothing to undo: already db.m5.xlarge"
    assert executor.rollback_done(recommendation, rollback) is True
    assert describe(rds, identifier)["DBInstanceClass"] == "db.m5.xlarge"
    assert pending_class(rds, identifier) is None


def test_the_savings_are_the_class_price_difference(rds: RDSClient, executor: RightsizeDatabaseExecutor) -> None:
    catalog = price_catalog()
    recommendation = recommendation_for(create_database(rds), target_instance_class="db.m5.large")
    backup = executor.backup(recommendation, new_execution_id())

    savings = executor.expected_savings(recommendation, backup)

    expected = (catalog.rds_hourly["db.m5.xlarge"] - catalog.rds_hourly["db.m5.large"]) * catalog.hours_per_month
    assert savings == pytest.approx(expected, abs=0.01)
