"""The limit on Reserved Instance purchases per account and period (`ri_purchase_limit_per_period_usd`,
per `ri_purchase_limit_period`, a calendar month in UTC by default), on top of the per-execution cap.

- **At approval** the purchase's cost (its plan's `one_time_cost`) is reserved in the account's
  ledger for the current period, in one conditional write with the sum: an approval that would take
  the period's commitments above the limit is refused (409), naming the limit, the period, what is
  committed and by which executions; the execution keeps waiting for a decision.
- **Before buying** (the purchase step) the reservation must still be there, for the price found
  then; a reservation made in the previous period moves to the current one if it fits there.
- **Released** when the execution ends without buying (rejected, expired, cancelled, failed or rolled
  back before the purchase), as the status change that ends it happens; a reservation whose release
  was lost (an approval that raced a rejection) is dropped when it stands in another approval's way.
  What was bought stays counted in the period it was bought in, whatever happens to the execution.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

from cost_engine.errors import ActionFailed, ApprovalRefused, ErrorCode, NotFound, TransientError
from cost_engine.models import ExecutionRecord, ExecutionStatus, RecommendationType, utc_now
from cost_engine.periods import PeriodSpan, period_of
from cost_engine.settings import Settings
from cost_engine.stores.dynamo import sortable_time
from cost_engine.stores.executions import ExecutionStore
from cost_engine.stores.limits import LimitsStore, ResourceBusy, resource_scope
from cost_engine.stores.purchase_ledger import EntryState, LedgerEntry, PeriodLedger, PurchaseLedgerStore
from cost_engine.transitions import FINAL_STATES

logger = logging.getLogger(__name__)
TYPE = RecommendationType.PURCHASE_RESERVED_INSTANCES
# The lock that lets one purchase at a time buy in an account and region (see `purchasing`): the
# lease frees it when a step dies holding it; a purchase waits that long at most for its turn, well
# inside the executor function's time limit, and then fails the step as transient (retried).
PURCHASE_LOCK = "reserved-instances-purchase"
PURCHASE_LEASE_SECONDS = 120
PURCHASE_TURN_WAIT_SECONDS = 30
PURCHASE_TURN_POLL_SECONDS = 0.2


class PeriodPurchaseLimitReached(ApprovalRefused):
    """Approving would commit more to RI purchases in the account and period than the limit allows."""

    code = ErrorCode.PURCHASE_LIMIT_REACHED


def _cents(usd: float) -> int:
    return round(usd * 100)


def _usd(cents: int) -> str:
    return f"${cents / 100:,.2f}"


def may_have_bought(record: ExecutionRecord) -> bool:
    """Whether the execution may have spent the money. In doubt, yes: an amount counted once too
    often only delays another purchase, one not counted could let the limit be passed."""
    if record.rollback is not None and "purchased" in record.rollback:
        return bool(record.rollback["purchased"])
    if record.action is not None:
        return True
    # Backed up but no recorded purchase and no rollback to say whether one happened.
    return record.backup is not None


class PurchaseLimits:
    def __init__(
        self,
        store: PurchaseLedgerStore,
        settings: Settings,
        executions: ExecutionStore,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.store = store
        self.settings = settings
        self.executions = executions
        self.clock = clock

    @classmethod
    def from_settings(cls, settings: Settings) -> PurchaseLimits:
        # The engine's own tables, in the engine's region (not the recommendation's).
        return cls(
            PurchaseLedgerStore(settings.limits_table, settings.region),
            settings,
            ExecutionStore(settings.executions_table, settings.region),
        )

    def _period(self) -> PeriodSpan:
        return period_of(self.clock(), self.settings.ri_purchase_limit_period)

    @property
    def _cap_cents(self) -> int:
        return _cents(self.settings.ri_purchase_limit_per_period_usd)

    # -- at approval ---------------------------------------------------------------------------------

    def reserve(self, record: ExecutionRecord) -> None:
        """Reserve the execution's cost in its account's current period, or raise
        PeriodPurchaseLimitReached saying why and what the approver can do."""
        cost = record.plan.one_time_cost if record.plan else None
        if cost is None:
            raise ApprovalRefused(
                f"execution {record.execution_id} has no cost in its plan, so it cannot be counted against the RI "
                "purchase limit per period: nothing was approved"
            )
        account = record.account_id or ""
        period = self._period()
        cents = _cents(cost)
        at = sortable_time(self.clock())
        if self.store.reserve(account, period.key, record.execution_id, cents, self._cap_cents, at):
            return
        # A reservation of an execution that ended without buying, whose release was lost, is no commitment.
        if self._drop_released(account, period.key) and self.store.reserve(
            account, period.key, record.execution_id, cents, self._cap_cents, at
        ):
            return
        raise PeriodPurchaseLimitReached(self._refusal(record, account, period, cents))

    def _drop_released(self, account: str, period: str) -> bool:
        """Release the reservations of executions that ended without buying; whether there were any
        (released here, or by their own release at this moment: either way there is room to ask again)."""
        dropped = False
        for entry in self.store.read(account, period).entries:
            if entry.state == EntryState.RESERVED and self._ended_without_buying(entry.execution_id):
                self.store.release(account, period, entry.execution_id)
                dropped = True
        return dropped

    def _ended_without_buying(self, execution_id: str) -> bool:
        try:
            record = self.executions.get(execution_id)
        except NotFound:  # not seen to end: it stays counted (every approved execution has a record)
            return False
        return record.status in FINAL_STATES and not may_have_bought(record)

    def _refusal(self, record: ExecutionRecord, account: str, period: PeriodSpan, cents: int) -> str:
        ledger = self.store.read(account, period.key)
        kind = period.kind.value
        committed = (
            f"{_usd(ledger.committed_cents)} is already committed by "
            + ", ".join(_describe(entry) for entry in ledger.entries)
            if ledger.entries
            else "nothing is committed yet"
        )
        return (
            f"approving execution {record.execution_id} would commit {_usd(cents)} to reserved instances in account "
            f"{account} in the {kind} {period.key}, above the limit of {_usd(self._cap_cents)} per {kind} "
            f"(ri_purchase_limit_per_period_usd): {committed}. Nothing was approved and the execution still waits "
            f"for a decision: reject it, approve it again once an approved purchase ends without buying or the next "
            f"{kind} starts ({period.end:%Y-%m-%dT%H:%M:%SZ}), or raise the limit"
        )

    # -- before buying -------------------------------------------------------------------------------

    def confirm(self, account: str, execution_id: str, cost_usd: float) -> str:
        """Check the execution's reservation before it buys, for the price found now; the period it
        counts in. Raises ActionFailed (nothing is bought) when it is gone or the price no longer fits."""
        period = self._period()
        cents = _cents(cost_usd)
        current = self.store.read(account, period.key).entry(execution_id)
        if current is not None:
            if current.state == EntryState.BOUGHT or current.cents == cents:
                return period.key
            if self.store.change(account, period.key, execution_id, cents, self._cap_cents):
                return period.key
            raise ActionFailed(
                f"the purchase now costs {_usd(cents)} instead of the {_usd(current.cents)} approved, and the "
                f"difference does not fit under the limit of {_usd(self._cap_cents)} per {period.kind.value} "
                f"in {period.key} (ri_purchase_limit_per_period_usd): nothing was bought"
            )
        previous = period.previous()
        earlier = self.store.read(account, previous.key).entry(execution_id)
        if earlier is None:
            raise ActionFailed(
                f"execution {execution_id} holds no reservation under the RI purchase limit per "
                f"{period.kind.value} (none in {period.key} or {previous.key}): nothing was bought; "
                "execute the recommendation again to have the purchase approved"
            )
        # Approved in the previous period, bought in this one: it counts where the money is spent.
        if not self.store.reserve(account, period.key, execution_id, cents, self._cap_cents, earlier.at):
            raise ActionFailed(
                f"execution {execution_id} was approved in {previous.key}, and its {_usd(cents)} does not fit under "
                f"the limit of {_usd(self._cap_cents)} for {period.key} (ri_purchase_limit_per_period_usd): "
                "nothing was bought"
            )
        self.store.release(account, previous.key, execution_id)
        return period.key

    @contextmanager
    def purchasing(self, account: str, region: str, execution_id: str) -> Iterator[None]:
        """Hold the account and region's purchase lock while looking for this execution's purchase,
        buying and tagging. Between a purchase and its tag the reservation is untagged, and a
        purchase step's crash recovery takes an untagged reservation of the same offering, made
        after its backup, for its own: two executions buying the same offering at once would both
        claim the first one bought, and only one would be bought. One at a time, an untagged match
        can only be this execution's own (or one bought outside the engine)."""
        locks = LimitsStore(self.settings.limits_table, self.settings.region)
        scope = resource_scope(account, region, PURCHASE_LOCK)
        deadline = time.monotonic() + PURCHASE_TURN_WAIT_SECONDS
        while True:
            try:
                locks.lock_resource(scope, PURCHASE_LOCK, execution_id, PURCHASE_LEASE_SECONDS, self._has_ended)
                break
            except ResourceBusy as busy:
                if time.monotonic() >= deadline:
                    raise TransientError(
                        f"another reserved instances purchase in account {account} and {region} ({busy.holder}) "
                        f"held the purchase lock for {PURCHASE_TURN_WAIT_SECONDS} s: nothing was bought, try again"
                    ) from busy
                time.sleep(PURCHASE_TURN_POLL_SECONDS)
        try:
            yield
        finally:
            locks.release_resource(scope, execution_id, 0)

    def _has_ended(self, execution_id: str) -> bool | None:
        try:
            return self.executions.get(execution_id).status in FINAL_STATES
        except NotFound:
            return None

    def claimed_by_others(self, account: str, execution_id: str) -> frozenset[str]:
        """The reservations other executions recorded as theirs in this period and the last: never
        this execution's, even when their tag is missing (a tag that failed after the purchase)."""
        period = self._period()
        return frozenset(
            entry.reserved_instances_id
            for span in (period, period.previous())
            for entry in self.store.read(account, span.key).entries
            if entry.reserved_instances_id and entry.execution_id != execution_id
        )

    def bought(self, account: str, period: str, execution_id: str, reserved_instances_id: str) -> None:
        try:
            self.store.mark_bought(account, period, execution_id, reserved_instances_id)
        except Exception:  # the purchase stands; the status change that ends the execution marks it again
            logger.exception("RI purchase of %s not marked bought", execution_id)

    # -- on every status change ----------------------------------------------------------------------

    def on_transition(self, before: ExecutionRecord, after: ExecutionRecord) -> None:
        if (
            after.recommendation_type != TYPE
            or after.dry_run
            or after.status not in FINAL_STATES
            or before.status in FINAL_STATES
        ):
            return
        try:
            self._settle(after)
        except Exception:  # the status change stands; a lost release is dropped when it is in the way
            logger.exception("RI purchase reservation not settled for %s", after.execution_id)

    def _settle(self, record: ExecutionRecord) -> None:
        account = record.account_id or ""
        bought = record.status == ExecutionStatus.COMPLETED or may_have_bought(record)
        period = self._period()
        for span in (period, period.previous()):
            if self.store.read(account, span.key).entry(record.execution_id) is None:
                continue
            if bought:
                self.store.mark_bought(account, span.key, record.execution_id)
            else:
                self.store.release(account, span.key, record.execution_id)
            return

    def ledger(self, account: str, at: datetime | None = None) -> tuple[PeriodSpan, PeriodLedger]:
        """The account's commitments in the period of `at` (now by default)."""
        period = period_of(at or self.clock(), self.settings.ri_purchase_limit_period)
        return period, self.store.read(account, period.key)


def _describe(entry: LedgerEntry) -> str:
    state = "bought" if entry.state == EntryState.BOUGHT else "approved, not bought yet"
    return f"{entry.execution_id} ({_usd(entry.cents)}, {state})"
