"""Limits over the real limits store: a new execution on a resource whose holder has just ended waits
the moment that holder's own release takes, instead of being told the resource is busy; a slot freed
by an execution that ends is handed to the oldest waiter, whose run is woken with its task token."""

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

    def add(self, status: ExecutionStatus, queued_seconds_ago: float | None = None) -> str:
        record = ExecutionRecord(
            execution_id=new_execution_id(),
            recommendation_id="rec-42",
            customer_id="acme-corp",
            recommendation_type=RecommendationType.TERMINATE_INSTANCE,
            resource_id=INSTANCE_ID,
            region=REGION,
            status=status,
            completed_at=utc_now() if status == ExecutionStatus.COMPLETED else None,
            queued_at=None if queued_seconds_ago is None else utc_now() - timedelta(seconds=queued_seconds_ago),
        )
        self.records[record.execution_id] = record
        return record.execution_id

    def get(self, execution_id: str) -> ExecutionRecord:
        return self.records[execution_id]

    def end(self, execution_id: str, status: ExecutionStatus = ExecutionStatus.COMPLETED) -> ExecutionRecord:
        """The record as its final status change writes it (long enough ago that it counts as finished)."""
        before = self.records[execution_id]
        after = before.model_copy(update={"status": status, "completed_at": utc_now() - timedelta(minutes=5)})
        after.updated_at = utc_now() - timedelta(minutes=5)
        self.records[execution_id] = after
        return after


class Wakes:
    """Step Functions as the limits wake a waiting run: which tokens were answered with which slot;
    a token listed in `over` answers that its wait is over, one in `unreachable` fails."""

    def __init__(self) -> None:
        self.woken: list[tuple[str, int]] = []
        self.over: set[str] = set()
        self.unreachable: set[str] = set()

    def __call__(self, task_token: str, slot: int) -> bool:
        if task_token in self.unreachable:
            raise ConnectionError("Step Functions could not be reached")
        if task_token in self.over:
            return False
        self.woken.append((task_token, slot))
        return True


@pytest.fixture
def store(tables: None) -> LimitsStore:
    return LimitsStore(LIMITS_TABLE.local_name, REGION)


@pytest.fixture
def executions() -> Executions:
    return Executions()


@pytest.fixture
def wakes() -> Wakes:
    return Wakes()


@pytest.fixture
def limits(store: LimitsStore, executions: Executions, wakes: Wakes) -> Limits:
    settings = Settings(
        executions_table="unused",
        audit_table=AUDIT_TABLE.local_name,
        recommendations_table="unused",
        limits_table=LIMITS_TABLE.local_name,
        max_concurrent_acting=1,
    )
    audit = AuditStore(AUDIT_TABLE.local_name, REGION)
    return Limits(store, settings, executions, audit, wakes)  # type: ignore[arg-type]


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


# -- acting slots handed over ----------------------------------------------------------------------


def token(execution_id: str) -> str:
    return f"token-of-{execution_id}"


def ask(limits: Limits, executions: Executions, execution_id: str) -> int | None:
    return limits.claim_slot(executions.get(execution_id), token(execution_id)).slot


def slot_holder(store: LimitsStore) -> Any:
    return store._table.get_item(Key={"scope": "slots", "key": "slot-000"}, ConsistentRead=True)["Item"].get("holder")


def test_an_ending_holder_hands_its_slot_to_the_oldest_waiter_and_wakes_only_its_run(
    limits: Limits, store: LimitsStore, executions: Executions, wakes: Wakes
) -> None:
    holder_id = executions.add(ExecutionStatus.APPROVED, queued_seconds_ago=30)
    older = executions.add(ExecutionStatus.APPROVED, queued_seconds_ago=20)
    newer = executions.add(ExecutionStatus.APPROVED, queued_seconds_ago=10)
    assert ask(limits, executions, holder_id) == 0
    # The newer one asks first; the older one was approved first
    assert ask(limits, executions, newer) is None
    assert ask(limits, executions, older) is None

    # When the holder ends
    before = executions.get(holder_id)
    limits.on_transition(before, executions.end(holder_id))

    # Then the older waiter holds the slot and its run alone was woken, with that slot
    assert wakes.woken == [(token(older), 0)]
    assert slot_holder(store) == older
    # The newer one still waits, now first in line
    assert limits.claim_slot(executions.get(newer), token(newer)).ahead == 0
    assert ask(limits, executions, newer) is None


def test_a_waiter_whose_run_has_ended_keeps_nobody_waiting_its_slot_is_reclaimed_for_the_next(
    limits: Limits, store: LimitsStore, executions: Executions, wakes: Wakes
) -> None:
    holder_id = executions.add(ExecutionStatus.APPROVED, queued_seconds_ago=30)
    gone = executions.add(ExecutionStatus.APPROVED, queued_seconds_ago=20)
    next_one = executions.add(ExecutionStatus.APPROVED, queued_seconds_ago=10)
    ask(limits, executions, holder_id)
    ask(limits, executions, gone)
    ask(limits, executions, next_one)
    # The first waiter's run was stopped: its wait is over
    wakes.over.add(token(gone))

    # When the holder ends, the slot goes to the first waiter, whose wake-up finds nobody
    limits.on_transition(executions.get(holder_id), executions.end(holder_id))
    assert wakes.woken == []
    assert slot_holder(store) == gone

    # Then once that waiter's record says it ended, the next hand-over reclaims its slot for the next
    executions.end(gone, ExecutionStatus.CANCELLED)
    assert [w.execution_id for w in limits.hand_over("engine:sweeper")] == [next_one]
    assert wakes.woken == [(token(next_one), 0)]
    assert slot_holder(store) == next_one


def test_a_waiter_whose_wait_timed_out_finds_the_slot_handed_to_it_when_it_asks_again(
    limits: Limits, store: LimitsStore, executions: Executions, wakes: Wakes
) -> None:
    holder_id = executions.add(ExecutionStatus.APPROVED, queued_seconds_ago=30)
    waiter = executions.add(ExecutionStatus.APPROVED, queued_seconds_ago=20)
    ask(limits, executions, holder_id)
    ask(limits, executions, waiter)
    wakes.over.add(token(waiter))  # its wait timed out just before the hand-over
    limits.on_transition(executions.get(holder_id), executions.end(holder_id))

    # When it asks again (with a new token), the slot is its own
    claim = limits.claim_slot(executions.get(waiter), "a-new-token", asked_before=True)

    assert claim.slot == 0
    assert slot_holder(store) == waiter


def test_a_waiter_asking_while_a_slot_is_handed_to_it_ends_with_one_slot(
    limits: Limits, store: LimitsStore, executions: Executions, wakes: Wakes
) -> None:
    # Two slots: one held, and a waiter in the queue
    limits.settings.max_concurrent_acting = 2
    first = executions.add(ExecutionStatus.APPROVED, queued_seconds_ago=40)
    second = executions.add(ExecutionStatus.APPROVED, queued_seconds_ago=30)
    waiter = executions.add(ExecutionStatus.APPROVED, queued_seconds_ago=20)
    ask(limits, executions, first)
    ask(limits, executions, second)
    assert ask(limits, executions, waiter) is None

    # When both slots free at once and the waiter's own ask runs while a release hands one over
    store.release_slot(first)
    store.release_slot(second)
    handed = limits.hand_over("engine:test")
    own = ask(limits, executions, waiter)

    # Then it holds exactly one slot, woken once
    held = [
        item["holder"]
        for item in store._table.query(
            KeyConditionExpression="#s = :s",
            ExpressionAttributeNames={"#s": "scope"},
            ExpressionAttributeValues={":s": "slots"},
        )["Items"]
        if item.get("holder")
    ]
    assert held == [waiter]
    assert len(handed) == 1
    assert own == handed[0].slot  # its own ask found the slot handed to it


def test_a_wake_up_that_could_not_be_sent_is_sent_again_by_the_next_hand_over(
    limits: Limits, store: LimitsStore, executions: Executions, wakes: Wakes
) -> None:
    holder_id = executions.add(ExecutionStatus.APPROVED, queued_seconds_ago=30)
    waiter = executions.add(ExecutionStatus.APPROVED, queued_seconds_ago=20)
    ask(limits, executions, holder_id)
    ask(limits, executions, waiter)
    wakes.unreachable.add(token(waiter))

    # When the holder ends while Step Functions cannot be reached: the status change stands
    limits.on_transition(executions.get(holder_id), executions.end(holder_id))
    assert wakes.woken == []
    assert slot_holder(store) == waiter  # kept for it, not given to anyone else

    # Then the next hand-over (the periodic sweep's) wakes it, once, with the slot kept for it
    wakes.unreachable.clear()
    assert [w.execution_id for w in limits.hand_over("engine:sweeper")] == [waiter]
    assert limits.hand_over("engine:sweeper") == []
    assert wakes.woken == [(token(waiter), 0)]


def test_a_free_slot_is_taken_at_once_without_joining_the_queue(
    limits: Limits, store: LimitsStore, executions: Executions, wakes: Wakes
) -> None:
    first = executions.add(ExecutionStatus.APPROVED, queued_seconds_ago=5)

    assert ask(limits, executions, first) == 0

    queue = store._table.query(
        KeyConditionExpression="#s = :q",
        ExpressionAttributeNames={"#s": "scope"},
        ExpressionAttributeValues={":q": "queue"},
    )["Items"]
    assert queue == []
    # Nobody waits, so ending hands nothing over
    limits.on_transition(executions.get(first), executions.end(first))
    assert wakes.woken == []
