"""LimitsStore against emulated DynamoDB: resource locks with leases and cooldowns, and acting slots
given out in queue order. A fake clock moves time, so leases expire without sleeping."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from boto3.dynamodb.conditions import Key
from hypothesis import given, settings
from hypothesis import strategies as st
from moto import mock_aws

from cost_engine.stores.dynamo import sortable_time, table
from cost_engine.stores.limits import SLOTS, LimitsStore, ResourceBusy, SlotClaim, resource_scope
from cost_engine.topology import LIMITS_TABLE
from local_runtime.provision import table_definition
from tests.unit.conftest import ACCOUNT_ID, REGION

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
INSTANCE_ID = "i-0123456789abcdef0"
SCOPE = resource_scope(ACCOUNT_ID, REGION, INSTANCE_ID)
LOCK_LEASE = 3600
SLOT_LEASE = 7200
QUEUE_LEASE = 120


class FakeClock:
    """Epoch seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = T0.timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def never_finished(execution_id: str) -> bool:
    return False


def always_finished(execution_id: str) -> bool:
    return True


def queued_at(seconds_after_t0: int) -> str:
    return sortable_time(T0 + timedelta(seconds=seconds_after_t0))


def slot_holders() -> dict[int, str]:
    """What the table says: slot number to holder, for every slot with a holder (leases aside)."""
    items = table(LIMITS_TABLE.local_name, REGION).query(KeyConditionExpression=Key("scope").eq(SLOTS))["Items"]
    return {int(str(item["key"]).removeprefix("slot-")): str(item["holder"]) for item in items if "holder" in item}


def acting_now(max_slots: int) -> int:
    """How many of the first `max_slots` slots have a holder (no slot lease runs out in these tests)."""
    return sum(1 for slot in slot_holders() if slot < max_slots)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tables: None, clock: FakeClock) -> LimitsStore:
    return LimitsStore(LIMITS_TABLE.local_name, REGION, clock=clock)


def lock(
    store: LimitsStore, execution_id: str, scope: str = SCOPE, is_finished: Callable[[str], bool] = never_finished
) -> None:
    store.lock_resource(scope, INSTANCE_ID, execution_id, LOCK_LEASE, is_finished)


def claim(
    store: LimitsStore,
    execution_id: str,
    queued: str,
    max_slots: int,
    is_finished: Callable[[str], bool] = never_finished,
) -> SlotClaim:
    # As every ask but a run's first is: after its wait timed out (its earlier entry, if any, goes).
    return store.claim_slot(
        execution_id, queued, max_slots, is_finished, SLOT_LEASE, QUEUE_LEASE, token(execution_id), asked_before=True
    )


def token(execution_id: str) -> str:
    return f"token-of-{execution_id}"


# -- one execution per resource ---------------------------------------------------------------------


def test_a_second_execution_on_a_locked_resource_is_refused_naming_the_holder(store: LimitsStore) -> None:
    lock(store, "exec-a")

    with pytest.raises(ResourceBusy, match=rf"resource {INSTANCE_ID} already has an active execution \(exec-a\)"):
        lock(store, "exec-b")


def test_the_holder_locking_its_resource_again_succeeds(store: LimitsStore) -> None:
    lock(store, "exec-a")

    # When the same execution asks again (a retried start)
    lock(store, "exec-a")

    # Then it still has the resource
    with pytest.raises(ResourceBusy, match=r"\(exec-a\)"):
        lock(store, "exec-b")


def test_after_a_release_with_cooldown_others_are_refused_until_it_passes(store: LimitsStore, clock: FakeClock) -> None:
    lock(store, "exec-a")
    assert store.release_resource(SCOPE, "exec-a", cooldown_seconds=300) is True

    # A second before the cooldown ends, the resource is still cooling down
    clock.advance(299)
    with pytest.raises(
        ResourceBusy, match=r"cooling down after exec-a changed it: try again after 2026-03-01T09:05:00Z"
    ):
        lock(store, "exec-b")

    # When it ends, the next execution gets the resource
    clock.advance(1)
    lock(store, "exec-b")
    with pytest.raises(ResourceBusy, match=r"\(exec-b\)"):
        lock(store, "exec-c")


def test_a_release_without_cooldown_frees_the_resource_at_once(store: LimitsStore) -> None:
    lock(store, "exec-a")

    assert store.release_resource(SCOPE, "exec-a", cooldown_seconds=0) is True

    lock(store, "exec-b")


def test_a_lock_released_between_a_refused_write_and_the_read_after_it_is_taken(
    store: LimitsStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given exec-a holds the resource, and ends with no cooldown in the next second, just after
    # exec-b's write was refused and before exec-b reads who holds it
    lock(store, "exec-a")
    table_ = store._table
    read = table_.get_item

    def released_first(**kwargs: object) -> object:
        monkeypatch.setattr(table_, "get_item", read)
        clock.advance(1)
        assert store.release_resource(SCOPE, "exec-a", cooldown_seconds=0) is True
        return read(**kwargs)

    monkeypatch.setattr(table_, "get_item", released_first)

    # When exec-b asks for it, then it gets it (not "cooling down" until the second it was freed)
    lock(store, "exec-b")
    with pytest.raises(ResourceBusy, match=r"\(exec-b\)"):
        lock(store, "exec-c")


def test_a_lock_whose_lease_ran_out_is_taken_over(store: LimitsStore, clock: FakeClock) -> None:
    lock(store, "exec-a")

    # Up to the end of its lease the holder keeps it
    clock.advance(LOCK_LEASE)
    with pytest.raises(ResourceBusy, match=r"\(exec-a\)"):
        lock(store, "exec-b")

    # After, another execution takes it, and the old holder's release no longer frees it
    clock.advance(1)
    lock(store, "exec-b")
    assert store.release_resource(SCOPE, "exec-a", cooldown_seconds=0) is False
    with pytest.raises(ResourceBusy, match=r"\(exec-b\)"):
        lock(store, "exec-c")


def test_a_lock_whose_holder_has_finished_is_taken_over_within_its_lease(store: LimitsStore) -> None:
    lock(store, "exec-a")

    # When the holder is finished (its release was lost), well within its lease
    lock(store, "exec-b", is_finished=lambda execution_id: execution_id == "exec-a")

    # Then the resource belongs to the new execution
    with pytest.raises(ResourceBusy, match=r"\(exec-b\)"):
        lock(store, "exec-c")


def test_a_release_by_an_execution_that_does_not_hold_the_lock_changes_nothing(store: LimitsStore) -> None:
    lock(store, "exec-a")

    assert store.release_resource(SCOPE, "exec-b", cooldown_seconds=300) is False

    # The holder keeps the resource, and its own release (without cooldown) frees it at once:
    # the stranger's release started no cooldown.
    with pytest.raises(ResourceBusy, match=r"\(exec-a\)"):
        lock(store, "exec-c")
    assert store.release_resource(SCOPE, "exec-a", cooldown_seconds=0) is True
    lock(store, "exec-c")


def test_releasing_a_resource_nobody_locked_returns_false_and_leaves_it_free(store: LimitsStore) -> None:
    assert store.release_resource(SCOPE, "exec-a", cooldown_seconds=300) is False

    lock(store, "exec-b")


def test_the_same_resource_id_in_other_accounts_or_regions_does_not_block(store: LimitsStore) -> None:
    lock(store, "exec-a")

    lock(store, "exec-b", scope=resource_scope("210987654321", REGION, INSTANCE_ID))
    lock(store, "exec-c", scope=resource_scope(ACCOUNT_ID, "eu-west-1", INSTANCE_ID))

    with pytest.raises(ResourceBusy, match=r"\(exec-a\)"):
        lock(store, "exec-d")


# -- acting slots -----------------------------------------------------------------------------------


def test_two_slots_go_to_the_first_two_executions_and_the_third_waits_for_a_release(store: LimitsStore) -> None:
    assert claim(store, "exec-a", queued_at(1), max_slots=2) == SlotClaim(slot=0, ahead=0, acting=1)
    assert claim(store, "exec-b", queued_at(2), max_slots=2) == SlotClaim(slot=1, ahead=0, acting=2)

    # The third has none: nobody waits ahead of it, and two are acting
    assert claim(store, "exec-c", queued_at(3), max_slots=2) == SlotClaim(slot=None, ahead=0, acting=2)
    assert acting_now(2) == 2

    # When the first releases, the third gets the freed slot
    assert store.release_slot("exec-a") == 0
    assert acting_now(2) == 1
    assert claim(store, "exec-c", queued_at(3), max_slots=2) == SlotClaim(slot=0, ahead=0, acting=2)
    assert slot_holders() == {0: "exec-c", 1: "exec-b"}


def test_a_waiter_reports_how_many_live_waiters_are_ahead_of_it(store: LimitsStore) -> None:
    claim(store, "exec-a", queued_at(1), max_slots=1)

    assert claim(store, "exec-b", queued_at(2), max_slots=1) == SlotClaim(slot=None, ahead=0, acting=1)
    assert claim(store, "exec-c", queued_at(3), max_slots=1) == SlotClaim(slot=None, ahead=1, acting=1)


def test_a_freed_slot_goes_to_the_earliest_waiter_even_when_a_later_one_asks_first(store: LimitsStore) -> None:
    claim(store, "exec-a", queued_at(1), max_slots=1)
    claim(store, "exec-b", queued_at(2), max_slots=1)
    claim(store, "exec-c", queued_at(3), max_slots=1)
    store.release_slot("exec-a")

    # When the later waiter asks first, it is refused: the earlier one is ahead of it
    assert claim(store, "exec-c", queued_at(3), max_slots=1) == SlotClaim(slot=None, ahead=1, acting=0)

    # Then the earlier one gets the slot
    assert claim(store, "exec-b", queued_at(2), max_slots=1).slot == 0
    assert claim(store, "exec-c", queued_at(3), max_slots=1) == SlotClaim(slot=None, ahead=0, acting=1)


def test_a_later_waiter_takes_a_free_slot_after_those_left_for_the_waiters_ahead(store: LimitsStore) -> None:
    claim(store, "exec-a", queued_at(1), max_slots=2)
    claim(store, "exec-b", queued_at(2), max_slots=2)
    claim(store, "exec-c", queued_at(3), max_slots=2)
    claim(store, "exec-d", queued_at(4), max_slots=2)
    store.release_slot("exec-a")
    store.release_slot("exec-b")

    # When the later waiter asks first, with one waiter ahead and two slots free
    later = claim(store, "exec-d", queued_at(4), max_slots=2)

    # Then it takes the second free slot, leaving the first to the earlier waiter
    assert later == SlotClaim(slot=1, ahead=0, acting=1)
    assert claim(store, "exec-c", queued_at(3), max_slots=2) == SlotClaim(slot=0, ahead=0, acting=2)


def test_a_waiter_that_stopped_asking_no_longer_holds_its_place(store: LimitsStore, clock: FakeClock) -> None:
    claim(store, "exec-a", queued_at(1), max_slots=1)
    claim(store, "exec-b", queued_at(2), max_slots=1)
    claim(store, "exec-c", queued_at(3), max_slots=1)
    store.release_slot("exec-a")

    # While exec-b's place is leased, exec-c waits behind it
    clock.advance(QUEUE_LEASE)
    assert claim(store, "exec-c", queued_at(3), max_slots=1).slot is None

    # When exec-b has not asked again past its queue lease, exec-c (which kept asking) goes first
    clock.advance(1)
    assert claim(store, "exec-c", queued_at(3), max_slots=1) == SlotClaim(slot=0, ahead=0, acting=1)


def test_a_slot_whose_lease_ran_out_is_reclaimed(store: LimitsStore, clock: FakeClock) -> None:
    claim(store, "exec-a", queued_at(1), max_slots=1)

    clock.advance(SLOT_LEASE)
    assert claim(store, "exec-b", queued_at(2), max_slots=1).slot is None

    # After its lease, the slot is free again, and the old holder's release does not free it
    clock.advance(1)
    assert claim(store, "exec-b", queued_at(2), max_slots=1) == SlotClaim(slot=0, ahead=0, acting=1)
    assert store.release_slot("exec-a") is None
    assert slot_holders() == {0: "exec-b"}


def test_a_holder_asking_again_after_its_lease_ran_out_takes_the_slot_anew_so_nobody_shares_it(
    store: LimitsStore, clock: FakeClock
) -> None:
    claim(store, "exec-a", queued_at(1), max_slots=1)
    clock.advance(SLOT_LEASE + 1)

    # A late retry of exec-a's step: it gets the slot back only by renewing the lease...
    assert claim(store, "exec-a", queued_at(1), max_slots=1).slot == 0
    # ...so exec-b, asking right after, cannot take the same slot.
    assert claim(store, "exec-b", queued_at(2), max_slots=1).slot is None
    assert slot_holders() == {0: "exec-a"}


def test_a_slot_whose_holder_has_finished_is_reclaimed_when_none_is_free(store: LimitsStore) -> None:
    claim(store, "exec-a", queued_at(1), max_slots=1)

    # When the holder has finished (its release was lost), well within its lease
    got = claim(store, "exec-b", queued_at(2), max_slots=1, is_finished=lambda execution_id: execution_id == "exec-a")

    # Then the waiter takes its slot, and says whose it freed (for that holder's audit log)
    assert got == SlotClaim(slot=0, ahead=0, acting=1, reclaimed=((0, "exec-a"),))
    assert slot_holders() == {0: "exec-b"}


def test_a_finished_holders_slot_is_kept_while_another_slot_is_free(store: LimitsStore) -> None:
    claim(store, "exec-a", queued_at(1), max_slots=2)

    got = claim(store, "exec-b", queued_at(2), max_slots=2, is_finished=always_finished)

    assert got == SlotClaim(slot=1, ahead=0, acting=2)
    assert slot_holders() == {0: "exec-a", 1: "exec-b"}


def test_the_holder_claiming_again_keeps_its_slot_and_takes_no_second(store: LimitsStore) -> None:
    first = claim(store, "exec-a", queued_at(1), max_slots=2)

    # When the step is retried
    again = claim(store, "exec-a", queued_at(1), max_slots=2)

    # Then it has the same one slot, and the other is still free
    assert again == first == SlotClaim(slot=0, ahead=0, acting=1)
    assert slot_holders() == {0: "exec-a"}
    assert claim(store, "exec-b", queued_at(2), max_slots=2).slot == 1


def test_releasing_a_slot_also_removes_the_executions_place_in_the_queue(store: LimitsStore) -> None:
    claim(store, "exec-a", queued_at(1), max_slots=1)
    claim(store, "exec-b", queued_at(2), max_slots=1)
    assert claim(store, "exec-c", queued_at(3), max_slots=1).ahead == 1

    # When the waiter ahead ends while still waiting: it held no slot
    assert store.release_slot("exec-b") is None

    # Then nobody waits ahead of exec-c, and it gets the next free slot
    assert claim(store, "exec-c", queued_at(3), max_slots=1).ahead == 0
    store.release_slot("exec-a")
    assert claim(store, "exec-c", queued_at(3), max_slots=1).slot == 0


def test_releasing_when_holding_nothing_returns_none_and_frees_nothing(store: LimitsStore) -> None:
    claim(store, "exec-a", queued_at(1), max_slots=1)

    assert store.release_slot("exec-b") is None

    assert slot_holders() == {0: "exec-a"}
    assert acting_now(1) == 1


EXECUTION_IDS = [f"exec-{name}" for name in "abcde"]

# (release?, which execution, seconds that pass before it): short waits, so slot leases never run out
# while queue leases (of waiters that stop asking) may.
slot_requests = st.tuples(st.booleans(), st.integers(0, len(EXECUTION_IDS) - 1), st.integers(0, 60))


@settings(max_examples=40, deadline=None)
@given(
    max_slots=st.integers(1, 3),
    queue_order=st.permutations(range(len(EXECUTION_IDS))),
    requests=st.lists(slot_requests, max_size=25),
)
def test_slots_go_in_queue_order_never_over_the_limit_and_never_two_to_one_execution(
    max_slots: int, queue_order: list[int], requests: list[tuple[bool, int, int]]
) -> None:
    with mock_aws():
        boto3.client("dynamodb", region_name=REGION).create_table(**table_definition(LIMITS_TABLE))
        clock = FakeClock()
        store = LimitsStore(LIMITS_TABLE.local_name, REGION, clock=clock)
        # The expected state: each holder's slot, and when each waiter last asked.
        holding: dict[str, int] = {}
        last_asked: dict[str, float] = {}

        for release, which, wait in requests:
            clock.advance(wait)
            execution_id = EXECUTION_IDS[which]
            if release:
                assert store.release_slot(execution_id) == holding.pop(execution_id, None)
                last_asked.pop(execution_id, None)
            elif execution_id in holding:
                assert claim(store, execution_id, queued_at(queue_order[which]), max_slots) == SlotClaim(
                    holding[execution_id], 0, len(holding)
                )
            else:
                last_asked[execution_id] = clock.now
                ahead = sum(
                    1
                    for waiter, asked in last_asked.items()
                    if queue_order[EXECUTION_IDS.index(waiter)] < queue_order[which]
                    and asked + QUEUE_LEASE >= clock.now
                )
                free = sorted(set(range(max_slots)) - set(holding.values()))
                expected = SlotClaim(None, ahead, max_slots - len(free))
                if ahead < len(free):  # the waiters ahead are left the first free slots
                    expected = SlotClaim(free[ahead], 0, len(holding) + 1)
                    holding[execution_id] = free[ahead]
                    del last_asked[execution_id]
                assert claim(store, execution_id, queued_at(queue_order[which]), max_slots) == expected

            holders = slot_holders()
            assert len(holders) <= max_slots
            assert len(set(holders.values())) == len(holders)
            assert holders == {slot: execution_id for execution_id, slot in holding.items()}
            assert acting_now(max_slots) == len(holding)
