"""The RI purchase limit per account and period over the real ledger in emulated DynamoDB: what an
approval reserves, what is refused and why, that two approvals at once cannot both pass a limit
with room for one, how periods begin and end, and when a reservation is released or kept."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from cost_engine.errors import ActionFailed, TransientError
from cost_engine.models import (
    ExecutionPlan,
    ExecutionRecord,
    ExecutionStatus,
    RecommendationType,
    RiskLevel,
    RollbackPlan,
    new_execution_id,
)
from cost_engine.periods import Period, period_of
from cost_engine.purchase_limits import PeriodPurchaseLimitReached, PurchaseLimits
from cost_engine.settings import Settings
from cost_engine.stores.purchase_ledger import EntryState, PurchaseLedgerStore
from cost_engine.topology import LIMITS_TABLE
from local_runtime.emulations import dynamodb_atomic_writes
from tests.unit.conftest import ACCOUNT_ID, REGION

S = ExecutionStatus
DEC_15 = datetime(2026, 12, 15, 12, 0, tzinfo=UTC)
JAN_2 = datetime(2027, 1, 2, 9, 0, tzinfo=UTC)
CAP = 3_000.0


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Executions:
    """The records the limits look up, by id."""

    def __init__(self) -> None:
        self.records: dict[str, ExecutionRecord] = {}

    def add(self, cost: float, status: ExecutionStatus = S.AWAITING_APPROVAL, **fields: Any) -> ExecutionRecord:
        record = ExecutionRecord(
            execution_id=new_execution_id(),
            recommendation_id="rec-ri",
            customer_id="acme-corp",
            recommendation_type=RecommendationType.PURCHASE_RESERVED_INSTANCES,
            resource_id="m5.large",
            region=REGION,
            account_id=ACCOUNT_ID,
            status=status,
            plan=ExecutionPlan(
                summary="buy",
                actions=[],
                backup=[],
                rollback_plan=RollbackPlan(
                    execution_id="x", rollback_steps=[], estimated_duration=0, risk_level=RiskLevel.HIGH
                ),
                estimated_monthly_savings=40.0,
                savings_basis="test",
                one_time_cost=cost,
            ),
            **fields,
        )
        self.records[record.execution_id] = record
        return record

    def end(self, record: ExecutionRecord, status: ExecutionStatus, **fields: Any) -> ExecutionRecord:
        ended = record.model_copy(update={"status": status, **fields})
        self.records[record.execution_id] = ended
        return ended

    def get(self, execution_id: str) -> ExecutionRecord:
        return self.records[execution_id]


@pytest.fixture
def clock() -> Clock:
    return Clock(DEC_15)


@pytest.fixture
def executions() -> Executions:
    return Executions()


@pytest.fixture
def store(tables: None) -> PurchaseLedgerStore:
    return PurchaseLedgerStore(LIMITS_TABLE.local_name, REGION)


@pytest.fixture
def limits(store: PurchaseLedgerStore, executions: Executions, clock: Clock) -> PurchaseLimits:
    settings = Settings(
        executions_table="unused",
        audit_table="unused",
        recommendations_table="unused",
        limits_table=LIMITS_TABLE.local_name,
        ri_purchase_limit_per_period_usd=CAP,
    )
    return PurchaseLimits(store, settings, executions, clock)  # type: ignore[arg-type]


def committed(limits: PurchaseLimits, at: datetime = DEC_15) -> float:
    return limits.ledger(ACCOUNT_ID, at)[1].committed_cents / 100


def end(
    limits: PurchaseLimits, executions: Executions, record: ExecutionRecord, status: ExecutionStatus, **f: Any
) -> None:
    """The status change that ends the execution, as the execution store announces it."""
    limits.on_transition(record, executions.end(record, status, **f))


# -- periods ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "moment", "key", "start", "end"),
    [
        (Period.MONTH, DEC_15, "2026-12", datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
        (Period.QUARTER, DEC_15, "2026-Q4", datetime(2026, 10, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
        (Period.YEAR, DEC_15, "2026", datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
        (Period.WEEK, DEC_15, "2026-W51", datetime(2026, 12, 14, tzinfo=UTC), datetime(2026, 12, 21, tzinfo=UTC)),
        (Period.DAY, DEC_15, "2026-12-15", datetime(2026, 12, 15, tzinfo=UTC), datetime(2026, 12, 16, tzinfo=UTC)),
    ],
)
def test_a_period_is_named_and_bounded_in_utc(
    kind: Period, moment: datetime, key: str, start: datetime, end: datetime
) -> None:
    span = period_of(moment, kind)

    assert (span.key, span.start, span.end) == (key, start, end)
    assert period_of(end, kind).start == end
    assert span.previous().end == start


def test_the_last_instant_of_a_month_and_the_first_of_the_next_are_different_periods() -> None:
    last = period_of(datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), Period.MONTH)
    first = period_of(datetime(2027, 1, 1, tzinfo=UTC), Period.MONTH)

    assert (last.key, first.key, first.previous().key) == ("2026-12", "2027-01", "2026-12")


# -- at approval -----------------------------------------------------------------------------------


def test_approvals_are_reserved_until_the_next_one_would_pass_the_limit_which_is_refused_naming_everything(
    limits: PurchaseLimits, executions: Executions
) -> None:
    first, second, third = (executions.add(1_000.0) for _ in range(3))
    over = executions.add(1_000.01)

    limits.reserve(first)
    limits.reserve(second)
    with pytest.raises(PeriodPurchaseLimitReached) as refused:
        limits.reserve(over)
    limits.reserve(third)  # exactly at the limit still fits

    message = refused.value.message
    assert f"approving execution {over.execution_id} would commit $1,000.01" in message
    assert f"in account {ACCOUNT_ID} in the month 2026-12, above the limit of $3,000.00 per month" in message
    assert "(ri_purchase_limit_per_period_usd)" in message
    assert "$2,000.00 is already committed by exec-" in message
    for earlier in (first, second):
        assert f"{earlier.execution_id} ($1,000.00, approved, not bought yet)" in message
    assert "the execution still waits for a decision: reject it" in message
    assert "the next month starts (2027-01-01T00:00:00Z)" in message
    assert committed(limits) == 3_000.0


def test_approving_the_same_execution_twice_counts_it_once(limits: PurchaseLimits, executions: Executions) -> None:
    record = executions.add(2_000.0)

    limits.reserve(record)
    limits.reserve(record)

    assert committed(limits) == 2_000.0


def test_of_approvals_at_the_same_instant_only_as_many_as_fit_are_reserved(
    limits: PurchaseLimits, executions: Executions, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given DynamoDB's atomic conditional writes (moto alone checks, then writes) and ten approvals
    # of $1,000 each against a limit of $3,000
    from moto.dynamodb.models import DynamoDBBackend

    for name in dynamodb_atomic_writes.WRITES:  # undone after the test
        monkeypatch.setattr(DynamoDBBackend, name, getattr(DynamoDBBackend, name))
    dynamodb_atomic_writes.install(None)
    records = [executions.add(1_000.0) for _ in range(10)]
    start = threading.Barrier(len(records))
    reserved: list[str] = []
    refused: list[str] = []

    def approve(record: ExecutionRecord) -> None:
        start.wait()
        try:
            limits.reserve(record)
            reserved.append(record.execution_id)
        except PeriodPurchaseLimitReached:
            refused.append(record.execution_id)

    # When they all reserve at once
    threads = [threading.Thread(target=approve, args=(record,)) for record in records]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then three fit, seven are refused, and the ledger holds exactly the three
    assert (len(reserved), len(refused)) == (3, 7)
    _, ledger = limits.ledger(ACCOUNT_ID)
    assert sorted(e.execution_id for e in ledger.entries) == sorted(reserved)
    assert ledger.committed_cents == 300_000


def test_what_was_committed_last_month_does_not_count_in_this_one(
    limits: PurchaseLimits, executions: Executions, clock: Clock
) -> None:
    december = executions.add(3_000.0)
    limits.reserve(december)
    end(limits, executions, december, S.COMPLETED, action={"reserved_instances_id": "ri-1"})

    clock.now = JAN_2
    january = executions.add(3_000.0)
    limits.reserve(january)

    assert committed(limits, DEC_15) == 3_000.0
    assert committed(limits, JAN_2) == 3_000.0


def test_a_quarterly_limit_counts_the_months_of_the_quarter_together(
    limits: PurchaseLimits, executions: Executions, clock: Clock
) -> None:
    limits.settings.ri_purchase_limit_period = Period.QUARTER
    clock.now = datetime(2026, 10, 5, tzinfo=UTC)
    limits.reserve(executions.add(2_000.0))

    clock.now = DEC_15
    with pytest.raises(PeriodPurchaseLimitReached, match=r"in the quarter 2026-Q4, above the limit of \$3,000.00"):
        limits.reserve(executions.add(2_000.0))


# -- released or kept -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "fields"),
    [
        (S.REJECTED, {}),
        (S.EXPIRED, {}),
        (S.CANCELLED, {}),
        (S.FAILED, {}),
        (S.ROLLED_BACK, {"backup": {"offering": {}}, "rollback": {"purchased": False}}),
    ],
    ids=["rejected", "expired", "cancelled", "failed-before-backup", "rolled-back-before-buying"],
)
def test_an_execution_that_ends_without_buying_frees_its_share(
    limits: PurchaseLimits, executions: Executions, status: ExecutionStatus, fields: dict[str, Any]
) -> None:
    record = executions.add(3_000.0, S.APPROVED)
    limits.reserve(record)

    end(limits, executions, record, status, **fields)

    assert committed(limits) == 0.0
    limits.reserve(executions.add(3_000.0))


@pytest.mark.parametrize(
    ("status", "fields"),
    [
        (S.COMPLETED, {"action": {"reserved_instances_id": "ri-1"}}),
        (
            S.ROLLBACK_FAILED,
            {"backup": {"o": 1}, "action": {"reserved_instances_id": "ri-1"}, "rollback": {"purchased": True}},
        ),
        (S.ROLLED_BACK, {"backup": {"o": 1}, "rollback": {"purchased": True}}),
        # Backed up, then the rollback itself failed: whether it bought is unknown, so it stays counted.
        (S.ROLLBACK_FAILED, {"backup": {"o": 1}}),
    ],
    ids=["completed", "bought-then-failed", "bought-and-later-sold", "unknown"],
)
def test_an_execution_that_bought_or_may_have_stays_counted(
    limits: PurchaseLimits, executions: Executions, status: ExecutionStatus, fields: dict[str, Any]
) -> None:
    record = executions.add(3_000.0, S.EXECUTING)
    limits.reserve(record)

    end(limits, executions, record, status, **fields)

    _, ledger = limits.ledger(ACCOUNT_ID)
    assert [(e.execution_id, e.state) for e in ledger.entries] == [(record.execution_id, EntryState.BOUGHT)]
    with pytest.raises(PeriodPurchaseLimitReached):
        limits.reserve(executions.add(1.0))


def test_approved_last_month_and_ended_this_month_without_buying_frees_last_months_share(
    limits: PurchaseLimits, executions: Executions, clock: Clock
) -> None:
    record = executions.add(3_000.0, S.APPROVED)
    limits.reserve(record)
    clock.now = JAN_2

    end(limits, executions, record, S.FAILED)

    assert committed(limits, DEC_15) == 0.0


def test_a_reservation_whose_release_was_lost_is_dropped_when_it_stands_in_the_way(
    limits: PurchaseLimits, executions: Executions
) -> None:
    # Given an approval that reserved just after a rejection of the same execution was written (so
    # the rejection's release found nothing to release)
    raced = executions.add(3_000.0)
    limits.reserve(raced)
    executions.end(raced, S.REJECTED)

    # When another purchase is approved
    later = executions.add(3_000.0)
    limits.reserve(later)

    # Then the rejected one's share was dropped for it
    _, ledger = limits.ledger(ACCOUNT_ID)
    assert [e.execution_id for e in ledger.entries] == [later.execution_id]


# -- before buying ---------------------------------------------------------------------------------


def test_before_buying_the_reservation_holds_and_a_lower_price_frees_the_difference(
    limits: PurchaseLimits, executions: Executions
) -> None:
    record = executions.add(2_000.0, S.APPROVED)
    limits.reserve(record)

    assert limits.confirm(ACCOUNT_ID, record.execution_id, 2_000.0) == "2026-12"
    assert limits.confirm(ACCOUNT_ID, record.execution_id, 1_500.0) == "2026-12"
    assert committed(limits) == 1_500.0


def test_before_buying_a_higher_price_that_does_not_fit_buys_nothing(
    limits: PurchaseLimits, executions: Executions
) -> None:
    record = executions.add(2_000.0, S.APPROVED)
    limits.reserve(record)
    limits.reserve(executions.add(1_000.0))

    with pytest.raises(
        ActionFailed, match=r"now costs \$2,000.50 instead of the \$2,000.00 approved.*nothing was bought"
    ):
        limits.confirm(ACCOUNT_ID, record.execution_id, 2_000.50)
    assert committed(limits) == 3_000.0


def test_before_buying_a_reservation_that_is_gone_buys_nothing(limits: PurchaseLimits) -> None:
    with pytest.raises(ActionFailed, match=r"exec-gone holds no reservation .* \(none in 2026-12 or 2026-11\)"):
        limits.confirm(ACCOUNT_ID, "exec-gone", 100.0)


def test_approved_last_month_and_bought_this_month_counts_this_month_if_it_fits(
    limits: PurchaseLimits, executions: Executions, clock: Clock
) -> None:
    approved_in_december = executions.add(2_000.0, S.APPROVED)
    limits.reserve(approved_in_december)
    clock.now = JAN_2

    assert limits.confirm(ACCOUNT_ID, approved_in_december.execution_id, 2_000.0) == "2027-01"
    assert (committed(limits, DEC_15), committed(limits, JAN_2)) == (0.0, 2_000.0)

    late = executions.add(2_000.0, S.APPROVED)
    clock.now = DEC_15
    limits.reserve(late)
    clock.now = JAN_2
    with pytest.raises(ActionFailed, match=r"was approved in 2026-12, and its \$2,000.00 does not fit"):
        limits.confirm(ACCOUNT_ID, late.execution_id, 2_000.0)


# -- one purchase at a time per account and region -------------------------------------------------


def test_a_second_purchase_waits_for_the_first_to_finish_buying_and_tagging_before_it_looks_for_its_own(
    limits: PurchaseLimits, executions: Executions, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given one purchase inside the account's purchase lock (bought, not tagged yet)
    first, second = executions.add(1_000.0, S.EXECUTING), executions.add(1_000.0, S.EXECUTING)
    second_refused, first_done = threading.Event(), threading.Event()
    order: list[str] = []

    def refused_then_wait(_seconds: float) -> None:
        second_refused.set()
        first_done.wait(timeout=30)

    monkeypatch.setattr("cost_engine.purchase_limits.time.sleep", refused_then_wait)

    def second_purchase() -> None:
        with limits.purchasing(ACCOUNT_ID, REGION, second.execution_id):
            order.append("second")

    with limits.purchasing(ACCOUNT_ID, REGION, first.execution_id):
        # When a second purchase in the same account and region asks for its turn
        waiting = threading.Thread(target=second_purchase)
        waiting.start()
        # Then it is refused while the first holds the lock
        assert second_refused.wait(timeout=30)
        assert order == []
        order.append("first")
    first_done.set()
    waiting.join(timeout=30)
    # and goes once the first is done
    assert order == ["first", "second"]


def test_a_purchase_lock_held_by_an_execution_that_has_ended_is_taken_over(
    limits: PurchaseLimits, executions: Executions
) -> None:
    died, next_one = executions.add(1_000.0, S.EXECUTING), executions.add(1_000.0, S.EXECUTING)
    held = limits.purchasing(ACCOUNT_ID, REGION, died.execution_id)
    held.__enter__()  # its step died inside: the lock is never released
    executions.end(died, S.FAILED)

    with limits.purchasing(ACCOUNT_ID, REGION, next_one.execution_id):
        entered = True
    assert entered


def test_a_purchase_that_waits_past_its_turn_fails_as_transient_and_buys_nothing(
    limits: PurchaseLimits, executions: Executions, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder, late = executions.add(1_000.0, S.EXECUTING), executions.add(1_000.0, S.EXECUTING)
    ticks = iter(range(0, 10_000, 10))
    monkeypatch.setattr("cost_engine.purchase_limits.time.monotonic", lambda: float(next(ticks)))
    monkeypatch.setattr("cost_engine.purchase_limits.time.sleep", lambda _seconds: None)

    with (
        limits.purchasing(ACCOUNT_ID, REGION, holder.execution_id),
        pytest.raises(TransientError) as waited,
        limits.purchasing(ACCOUNT_ID, REGION, late.execution_id),
    ):
        pytest.fail("entered while another purchase held the lock")
    assert holder.execution_id in str(waited.value)
    assert "nothing was bought" in str(waited.value)


def test_purchases_in_other_regions_do_not_wait_for_each_other(limits: PurchaseLimits, executions: Executions) -> None:
    here, there = executions.add(1_000.0, S.EXECUTING), executions.add(1_000.0, S.EXECUTING)
    with (
        limits.purchasing(ACCOUNT_ID, REGION, here.execution_id),
        limits.purchasing(ACCOUNT_ID, "eu-west-1", there.execution_id),
    ):
        both = True
    assert both
