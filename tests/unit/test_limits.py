"""Limits over the real limits store: a new execution on a resource whose holder has just ended waits
the moment that holder's own release takes, instead of being told the resource is busy."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest

from cost_engine.limits import JUST_ENDED_CHECKS, Limits
from cost_engine.models import (
    ExecutionRecord,
    ExecutionStatus,
    Recommendation,
    RecommendationType,
    new_execution_id,
    utc_now,
)
from cost_engine.settings import Settings
from cost_engine.stores.audit import AuditStore
from cost_engine.stores.limits import LimitsStore, ResourceBusy, resource_scope
from cost_engine.topology import AUDIT_TABLE, LIMITS_TABLE
from tests.unit.conftest import ACCOUNT_ID, REGION

INSTANCE_ID = "i-0123456789abcdef0"
SCOPE = resource_scope(ACCOUNT_ID, REGION, INSTANCE_ID)
LEASE = timedelta(hours=1)


class Executions:
    """The executions the limits look up: each holder's record, by id."""

    def __init__(self) -> None:
        self.records: dict[str, ExecutionRecord] = {}

    def add(self, status: ExecutionStatus) -> str:
        record = ExecutionRecord(
            execution_id=new_execution_id(),
            recommendation_id="rec-42",
            customer_id="acme-corp",
            recommendation_type=RecommendationType.TERMINATE_INSTANCE,
            resource_id=INSTANCE_ID,
            region=REGION,
            status=status,
            completed_at=utc_now() if status == ExecutionStatus.COMPLETED else None,
        )
        self.records[record.execution_id] = record
        return record.execution_id

    def get(self, execution_id: str) -> ExecutionRecord:
        return self.records[execution_id]


@pytest.fixture
def store(tables: None) -> LimitsStore:
    return LimitsStore(LIMITS_TABLE.local_name, REGION)


@pytest.fixture
def executions() -> Executions:
    return Executions()


@pytest.fixture
def limits(store: LimitsStore, executions: Executions) -> Limits:
    settings = Settings(
        executions_table="unused",
        audit_table=AUDIT_TABLE.local_name,
        recommendations_table="unused",
        limits_table=LIMITS_TABLE.local_name,
    )
    return Limits(store, settings, executions, AuditStore(AUDIT_TABLE.local_name, REGION))  # type: ignore[arg-type]


def recommendation() -> Recommendation:
    return Recommendation(
        customer_id="acme-corp",
        type=RecommendationType.TERMINATE_INSTANCE,
        account_id=ACCOUNT_ID,
        region=REGION,
        resource_id=INSTANCE_ID,
    )


def holder(store: LimitsStore) -> Any:
    return store._table.get_item(Key={"scope": SCOPE, "key": "lock"}, ConsistentRead=True)["Item"].get("holder")


def test_a_lock_whose_holder_just_ended_is_taken_once_the_holders_release_has_run(
    limits: Limits, store: LimitsStore, executions: Executions
) -> None:
    # Given a lock whose holder's final status is written, its release still to come
    ended = executions.add(ExecutionStatus.PENDING)
    limits.lock_resource(recommendation(), ended, LEASE)
    executions.records[ended] = executions.records[ended].model_copy(
        update={"status": ExecutionStatus.COMPLETED, "completed_at": utc_now()}
    )
    release = threading.Timer(0.3, store.release_resource, args=(SCOPE, ended, 0))
    release.start()

    # When the next execution locks the resource at once
    successor = executions.add(ExecutionStatus.PENDING)
    limits.lock_resource(recommendation(), successor, LEASE)
    release.join()

    # Then it got the lock after the release, not a "busy" answer
    assert holder(store) == successor


def test_a_lock_whose_holder_is_still_running_is_refused_at_once_naming_it(
    limits: Limits, executions: Executions, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = executions.add(ExecutionStatus.EXECUTING)
    limits.lock_resource(recommendation(), running, LEASE)
    waits: list[float] = []
    monkeypatch.setattr("cost_engine.limits.time.sleep", waits.append)

    with pytest.raises(ResourceBusy) as busy:
        limits.lock_resource(recommendation(), executions.add(ExecutionStatus.PENDING), LEASE)

    assert busy.value.holder == running
    assert waits == []


def test_a_holder_that_ended_but_never_releases_is_reported_busy_after_a_bounded_wait(
    limits: Limits, executions: Executions, monkeypatch: pytest.MonkeyPatch
) -> None:
    ended = executions.add(ExecutionStatus.PENDING)
    limits.lock_resource(recommendation(), ended, LEASE)
    executions.records[ended] = executions.records[ended].model_copy(
        update={"status": ExecutionStatus.COMPLETED, "completed_at": utc_now()}
    )
    waits: list[float] = []
    monkeypatch.setattr("cost_engine.limits.time.sleep", waits.append)

    with pytest.raises(ResourceBusy):
        limits.lock_resource(recommendation(), executions.add(ExecutionStatus.PENDING), LEASE)

    assert len(waits) == JUST_ENDED_CHECKS - 1
