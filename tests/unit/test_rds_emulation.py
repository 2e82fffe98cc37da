"""The local runtime's emulation of RDS pending modifications: a class change waits for the
maintenance window unless it is applied immediately, as on AWS."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

import boto3
import pytest

from local_runtime.emulations import rds_pending_modifications
from local_runtime.emulations.rds_pending_modifications import patch, run_maintenance_window, unpatch
from tests.unit.conftest import REGION

if TYPE_CHECKING:
    from mypy_boto3_rds import RDSClient
    from mypy_boto3_rds.type_defs import DBInstanceTypeDef


@pytest.fixture
def pending_modifications() -> Iterator[None]:
    patch()
    yield
    unpatch()


@pytest.fixture
def rds(aws: None, pending_modifications: None) -> RDSClient:
    return boto3.client("rds", region_name=REGION)


@pytest.fixture
def database(rds: RDSClient) -> str:
    rds.create_db_instance(
        DBInstanceIdentifier="orders",
        DBInstanceClass="db.m5.xlarge",
        Engine="mysql",
        MasterUsername="admin",
        MasterUserPassword="not-a-secret-1",
        AllocatedStorage=20,
    )
    return "orders"


def describe(rds: RDSClient, identifier: str) -> DBInstanceTypeDef:
    return rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]


def pending_class(rds: RDSClient, identifier: str) -> str | None:
    return describe(rds, identifier).get("PendingModifiedValues", {}).get("DBInstanceClass")


def test_a_class_change_for_the_maintenance_window_is_pending_and_not_applied(rds: RDSClient, database: str) -> None:
    rds.modify_db_instance(DBInstanceIdentifier=database, DBInstanceClass="db.m5.large", ApplyImmediately=False)

    assert describe(rds, database)["DBInstanceClass"] == "db.m5.xlarge"
    assert pending_class(rds, database) == "db.m5.large"


def test_without_apply_immediately_the_change_waits_for_the_window_as_on_aws(rds: RDSClient, database: str) -> None:
    rds.modify_db_instance(DBInstanceIdentifier=database, DBInstanceClass="db.m5.large")

    assert describe(rds, database)["DBInstanceClass"] == "db.m5.xlarge"
    assert pending_class(rds, database) == "db.m5.large"


def test_running_the_maintenance_window_applies_the_pending_class(rds: RDSClient, database: str) -> None:
    rds.modify_db_instance(DBInstanceIdentifier=database, DBInstanceClass="db.m5.large", ApplyImmediately=False)

    changed = run_maintenance_window(database)

    assert changed == [database]
    assert describe(rds, database)["DBInstanceClass"] == "db.m5.large"
    assert pending_class(rds, database) is None
    assert run_maintenance_window(database) == []


def test_applying_immediately_changes_the_class_at_once(rds: RDSClient, database: str) -> None:
    rds.modify_db_instance(DBInstanceIdentifier=database, DBInstanceClass="db.m5.large", ApplyImmediately=True)

    assert describe(rds, database)["DBInstanceClass"] == "db.m5.large"
    assert pending_class(rds, database) is None


def test_asking_for_the_current_class_again_cancels_the_pending_change(rds: RDSClient, database: str) -> None:
    rds.modify_db_instance(DBInstanceIdentifier=database, DBInstanceClass="db.m5.large", ApplyImmediately=False)

    rds.modify_db_instance(DBInstanceIdentifier=database, DBInstanceClass="db.m5.xlarge", ApplyImmediately=False)

    assert pending_class(rds, database) is None
    assert run_maintenance_window(database) == []
    assert describe(rds, database)["DBInstanceClass"] == "db.m5.xlarge"


def test_an_immediate_modification_also_applies_what_was_pending(rds: RDSClient, database: str) -> None:
    rds.modify_db_instance(DBInstanceIdentifier=database, DBInstanceClass="db.m5.large", ApplyImmediately=False)

    rds.modify_db_instance(DBInstanceIdentifier=database, BackupRetentionPeriod=3, ApplyImmediately=True)

    assert describe(rds, database)["DBInstanceClass"] == "db.m5.large"
    assert pending_class(rds, database) is None


def test_other_modifications_keep_motos_behaviour(rds: RDSClient, database: str) -> None:
    rds.modify_db_instance(DBInstanceIdentifier=database, BackupRetentionPeriod=7, ApplyImmediately=False)

    assert describe(rds, database)["BackupRetentionPeriod"] == 7
    assert pending_class(rds, database) is None


def test_installing_twice_is_harmless(rds: RDSClient, database: str) -> None:
    # Given the emulation installed a second time (the fixture installed it once)
    rds_pending_modifications.install(cast(Any, None))

    # When a class change is scheduled, then the window runs
    rds.modify_db_instance(DBInstanceIdentifier=database, DBInstanceClass="db.m5.large", ApplyImmediately=False)
    assert pending_class(rds, database) == "db.m5.large"
    run_maintenance_window(database)

    # Then it behaves exactly once, and one unpatch is enough to remove it
    assert describe(rds, database)["DBInstanceClass"] == "db.m5.large"
    unpatch()
    rds.modify_db_instance(DBInstanceIdentifier=database, DBInstanceClass="db.m5.xlarge", ApplyImmediately=False)
    assert describe(rds, database)["DBInstanceClass"] == "db.m5.xlarge"


def test_the_maintenance_window_of_one_instance_leaves_the_others_pending(rds: RDSClient, database: str) -> None:
    rds.create_db_instance(
        DBInstanceIdentifier="billing",
        DBInstanceClass="db.t3.large",
        Engine="postgres",
        MasterUsername="admin",
        MasterUserPassword="not-a-secret-1",
        AllocatedStorage=20,
    )
    rds.modify_db_instance(DBInstanceIdentifier=database, DBInstanceClass="db.m5.large", ApplyImmediately=False)
    rds.modify_db_instance(DBInstanceIdentifier="billing", DBInstanceClass="db.t3.medium", ApplyImmediately=False)

    assert run_maintenance_window("billing") == ["billing"]

    assert pending_class(rds, database) == "db.m5.large"
    assert describe(rds, "billing")["DBInstanceClass"] == "db.t3.medium"
