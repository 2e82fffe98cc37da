"""The seed's safety limits, applied to every type.

- **Acting slots.** At most `max_concurrent_acting` executions change resources at once across the
  deployment. An approved execution asks for a slot before its backup; without one it waits (the
  state machine's WaitForSlot) and asks again, in the order the executions were approved: none is
  dropped, none overtakes an earlier one.
- **One execution per resource.** Starting an execution takes the resource's lock; another start on
  the same resource is refused (409) until the first ends.
- **Cooldown.** When an execution that changed a resource ends, the resource stays locked for
  `resource_cooldown_seconds` (5 minutes by default) so the change can settle before the next one.
- **Acting time.** An acting phase longer than `max_acting_seconds` (30 minutes) is stopped at its
  next step, rolled back, and the execution ends `failed` with the reason.

Slots and locks are released when the execution's status becomes final (an observer of every
status change, whoever writes it). If that release is lost, or the execution died, the lease of
the slot or lock frees it; a lock whose holder has finished is taken over at once.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from cost_engine.errors import EngineError, ErrorCode, NotFound
from cost_engine.models import ExecutionRecord, Recommendation, utc_now
from cost_engine.settings import Settings
from cost_engine.stores.audit import AuditStore
from cost_engine.stores.dynamo import sortable_time
from cost_engine.stores.executions import ExecutionStore
from cost_engine.stores.limits import LimitsStore, ResourceBusy, SlotClaim, resource_scope
from cost_engine.transitions import FINAL_STATES

logger = logging.getLogger(__name__)

# How long after its end an execution's slot or lock is left to its own release before others reclaim it.
RELEASE_GRACE = timedelta(seconds=30)
# How often, and how far apart, a new lock asks again while the holder's final status change is
# releasing it (at most about two seconds in all).
JUST_ENDED_CHECKS = 8
JUST_ENDED_WAIT_SECONDS = 0.25
# Beyond the longest an execution can legitimately hold a lock: a dead execution's lock frees after this.
LEASE_MARGIN = timedelta(hours=1)


class ActingTimeLimitExceeded(EngineError):
    """The acting phase ran past the deployment's limit: the state machine rolls it back."""

    code = ErrorCode.ACTING_TIME_LIMIT


class Limits:
    def __init__(self, store: LimitsStore, settings: Settings, executions: ExecutionStore, audit: AuditStore) -> None:
        self.store = store
        self.settings = settings
        self.executions = executions
        self.audit = audit

    # -- one execution per resource ------------------------------------------------------------------

    def lock_resource(self, recommendation: Recommendation, execution_id: str, lease: timedelta) -> None:
        for attempt in range(JUST_ENDED_CHECKS):
            try:
                self.store.lock_resource(
                    resource_scope(recommendation.account_id, recommendation.region, recommendation.resource_id),
                    recommendation.resource_id,
                    execution_id,
                    int((lease + LEASE_MARGIN).total_seconds()),
                    self._is_finished,
                )
                return
            except ResourceBusy as busy:
                # A holder that has just ended is releasing the lock (and starting the cooldown) in
                # the status change that ended it, a moment after its final status was written: a
                # caller who saw that status and starts the next execution at once waits for that
                # moment instead of being told the resource is busy.
                if busy.holder is None or attempt == JUST_ENDED_CHECKS - 1 or not self._has_ended(busy.holder):
                    raise
                time.sleep(JUST_ENDED_WAIT_SECONDS)

    def _has_ended(self, execution_id: str) -> bool:
        try:
            return self.executions.get(execution_id).status in FINAL_STATES
        except NotFound:
            return False

    def release_resource(self, record: ExecutionRecord, *, cooldown: bool) -> None:
        seconds = self.settings.resource_cooldown_seconds if cooldown else 0
        scope = resource_scope(record.account_id or "", record.region, record.resource_id)
        if self.store.release_resource(scope, record.execution_id, seconds) and seconds:
            self.audit.append(
                record.execution_id,
                "resource_cooldown_started",
                "engine:limits",
                {"resource_id": record.resource_id, "seconds": seconds},
            )

    def _is_finished(self, execution_id: str) -> bool | None:
        """Whether the execution ended a while ago (its own release had time to run); None when it
        has no record (yet, or any more). Just-ended executions still count: the status change that
        ended it is releasing its slot and lock (and starting the cooldown) at this moment."""
        try:
            record = self.executions.get(execution_id)
        except NotFound:
            return None
        ended = record.completed_at or record.updated_at
        return record.status in FINAL_STATES and utc_now() - ended > RELEASE_GRACE

    # -- acting slots --------------------------------------------------------------------------------

    def claim_slot(self, record: ExecutionRecord) -> SlotClaim:
        queued_at = record.queued_at or utc_now()
        claim = self.store.claim_slot(
            record.execution_id,
            sortable_time(queued_at),
            self.settings.max_concurrent_acting,
            self._is_finished,
            slot_lease_seconds=2 * self.settings.max_acting_seconds + int(LEASE_MARGIN.total_seconds()),
            # Renewed at each ask: a waiter that stopped asking stops holding its place.
            queue_lease_seconds=3 * self.settings.slot_wait_seconds + 60,
        )
        # A slot whose release was lost was freed here: its holder's log says so, as its own release would.
        for slot, holder in claim.reclaimed:
            self.audit.append(
                holder, "slot_released", "engine:limits", {"slot": slot, "reclaimed_by": record.execution_id}
            )
        return claim

    def wait_before_asking_again(self, claim: SlotClaim) -> int:
        """The wait before the next ask: longer the further back in the queue (one slot wait per
        round of the limit ahead), so a long queue does not keep every waiter polling; at most a minute."""
        rounds = 1 + claim.ahead // self.settings.max_concurrent_acting
        return min(self.settings.slot_wait_seconds * rounds, 60)

    def check_acting_time(self, record: ExecutionRecord) -> None:
        if record.acting_started_at is None:
            return
        elapsed = (utc_now() - record.acting_started_at).total_seconds()
        if elapsed > self.settings.max_acting_seconds:
            raise ActingTimeLimitExceeded(
                f"the acting phase ran {elapsed:.0f}s, over the {self.settings.max_acting_seconds}s limit: rolled back"
            )

    # -- on every status change ----------------------------------------------------------------------

    def on_transition(self, before: ExecutionRecord, after: ExecutionRecord) -> None:
        if after.status not in FINAL_STATES or before.status in FINAL_STATES:
            return
        try:
            self._release(after)
        except Exception:  # the status change stands; a slot or lock whose holder finished is reclaimed
            logger.exception("limits not released for %s", after.execution_id)

    def _release(self, after: ExecutionRecord) -> None:
        slot = self.store.release_slot(after.execution_id)
        if slot is not None:
            self.audit.append(after.execution_id, "slot_released", "engine:limits", {"slot": slot})
        if not after.dry_run:
            # A cooldown only where something was changed (or begun to be).
            self.release_resource(after, cooldown=after.backup is not None or after.action is not None)
