"""The seed's safety limits, applied to every type.

- **Acting slots.** At most `max_concurrent_acting` executions change resources at once across the
  deployment. An approved execution asks for a slot before its backup; without one it waits on a task
  token (the state machine's AcquireSlot) and is woken when a slot is handed over to it: whoever
  ends an execution that held a slot hands it to the oldest waiter, in the order the executions were
  approved; none is dropped, none overtakes an earlier one, and nobody polls.
- **One execution per resource.** Starting an execution takes the resource's lock; another start on
  the same resource is refused (409) until the first ends.
- **Cooldown.** When an execution that changed a resource ends, the resource stays locked for
  `resource_cooldown_seconds` (5 minutes by default) so the change can settle before the next one.
- **Acting time.** An acting phase longer than `max_acting_seconds` (30 minutes) is stopped at its
  next step, rolled back, and the execution ends `failed` with the reason.

Slots and locks are released when the execution's status becomes final (an observer of every
status change, whoever writes it), and a freed slot is handed over at once. If that release or
hand-over is lost, or the execution died, the periodic sweep hands over again and the lease of the
slot or lock frees it; a lock or slot whose holder has finished is taken over at once.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from botocore.exceptions import ClientError

from cost_engine.aws import error_code
from cost_engine.errors import TASK_WAIT_OVER_ERRORS, EngineError, ErrorCode, NotFound
from cost_engine.models import ExecutionRecord, ExecutionStatus, Recommendation, utc_now
from cost_engine.settings import Settings
from cost_engine.stores.audit import AuditStore
from cost_engine.stores.dynamo import sortable_time
from cost_engine.stores.executions import ExecutionStore
from cost_engine.stores.limits import LimitsStore, ResourceBusy, SlotClaim, Waiter, resource_scope, waiter_key
from cost_engine.topology import SLOT_WAIT_TIMEOUT_SECONDS
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

# Wakes a waiting run with its task token and the slot handed to it: False when that wait is over
# (answered, timed out, or its run ended); any other failure raises.
Wake = Callable[[str, int], bool]


class ActingTimeLimitExceeded(EngineError):
    """The acting phase ran past the deployment's limit: the state machine rolls it back."""

    code = ErrorCode.ACTING_TIME_LIMIT


class Limits:
    def __init__(
        self, store: LimitsStore, settings: Settings, executions: ExecutionStore, audit: AuditStore, wake: Wake
    ) -> None:
        self.store = store
        self.settings = settings
        self.executions = executions
        self.audit = audit
        self.wake = wake

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

    def claim_slot(self, record: ExecutionRecord, task_token: str, asked_before: bool = False) -> SlotClaim:
        claim = self.store.claim_slot(
            record.execution_id,
            sortable_time(record.queued_at or utc_now()),
            self.settings.max_concurrent_acting,
            self._is_finished,
            slot_lease_seconds=self._slot_lease_seconds,
            # Renewed when it asks again after its wait timed out: a waiter that died stops counting.
            queue_lease_seconds=self._queue_lease_seconds,
            task_token=task_token,
            asked_before=asked_before,
        )
        self._log_reclaimed(claim.reclaimed, record.execution_id)
        return claim

    @property
    def _slot_lease_seconds(self) -> int:
        return 2 * self.settings.max_acting_seconds + int(LEASE_MARGIN.total_seconds())

    def _log_reclaimed(self, reclaimed: tuple[tuple[int, str], ...] | list[tuple[int, str]], by: str) -> None:
        # A slot whose release was lost was freed here: its holder's log says so, as its own release would.
        for slot, holder in reclaimed:
            self.audit.append(holder, "slot_released", "engine:limits", {"slot": slot, "reclaimed_by": by})

    def hand_over(self, by: str) -> list[Waiter]:
        """Give the free slots to the oldest waiters and wake their runs; the waiters woken. A waiter
        whose wait had ended keeps the slot it was given: if it died, its slot is reclaimed once it
        is found finished; if its wait timed out, it asks again and finds the slot its own. A wake-up
        that could not be sent is put back for the next hand-over, and the failure raised."""
        waiters, reclaimed = self.store.hand_over(
            self.settings.max_concurrent_acting, self._is_finished, self._slot_lease_seconds
        )
        self._log_reclaimed(reclaimed, by)
        woken: list[Waiter] = []
        for number, waiter in enumerate(waiters):
            try:
                if self.wake(waiter.task_token, waiter.slot):
                    woken.append(waiter)
            except Exception:
                for unsent in waiters[number:]:
                    self.store.put_back(unsent, self._queue_lease_seconds)
                raise
        return woken

    @property
    def _queue_lease_seconds(self) -> int:
        return SLOT_WAIT_TIMEOUT_SECONDS + int(LEASE_MARGIN.total_seconds())

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
        watching = after.status == ExecutionStatus.WATCHING and before.status != ExecutionStatus.WATCHING
        if not watching and (after.status not in FINAL_STATES or before.status in FINAL_STATES):
            return
        try:
            # A watch holds the resource's lock, not an acting slot: the slot goes to the next in line.
            self._release_slot(after)
            if not watching:
                self._release_resource(after)
        except Exception:  # the status change stands; a slot or lock whose holder finished is reclaimed
            logger.exception("limits not released for %s", after.execution_id)

    def _release_slot(self, after: ExecutionRecord) -> None:
        queue_key = waiter_key(sortable_time(after.queued_at), after.execution_id) if after.queued_at else None
        slot = self.store.release_slot(after.execution_id, queue_key)
        if slot is not None:
            self.audit.append(after.execution_id, "slot_released", "engine:limits", {"slot": slot})
            # Logged first: the next holder's `slot_acquired` follows this `slot_released`.
            self.hand_over(after.execution_id)

    def _release_resource(self, after: ExecutionRecord) -> None:
        if not after.dry_run:
            # A cooldown only where something was changed (or begun to be).
            self.release_resource(after, cooldown=after.backup is not None or after.action is not None)


def task_waker(stepfunctions: Callable[[], Any]) -> Wake:
    """Wakes a run waiting in AcquireSlot through Step Functions (SendTaskSuccess with the slot); the
    client is asked for only when there is someone to wake."""

    def wake(task_token: str, slot: int) -> bool:
        try:
            stepfunctions().send_task_success(taskToken=task_token, output=json.dumps({"slot": slot}))
        except ClientError as error:
            if error_code(error) in TASK_WAIT_OVER_ERRORS:
                return False
            raise
        return True

    return wake
