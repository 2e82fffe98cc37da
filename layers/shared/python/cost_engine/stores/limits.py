"""The safety limits' shared state in DynamoDB: acting slots, the queue waiting for them, and one
lock per resource. Every claim is a conditional write, and every claim has a lease, so what an
execution that died holds is freed by time, not held forever.

- `slots` / `slot-NN`: held by the execution changing a resource with it (`holder`, `lease_until`).
- `queue` / `<queued_at>#<execution_id>`: executions waiting for a slot, oldest first, each with the
  task token its state machine waits on (a freed slot is handed over to the oldest and its run woken
  with that token); each entry's lease is renewed when its execution asks again (after its wait
  timed out), so a dead waiter stops counting.
- `resource#<account>#<region>#<id>` / `lock`: the execution that has the resource (`holder`,
  `lease_until`), and after one changed it, `cooldown_until`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError

from cost_engine.errors import Conflict, ErrorCode
from cost_engine.stores.dynamo import is_conditional_failure, table

SLOTS = "slots"
# How long a resource lock may name an execution that has no record yet (its start is creating it).
MISSING_HOLDER_GRACE_SECONDS = 120
QUEUE = "queue"
LOCK = "lock"


class ResourceBusy(Conflict):
    """Another execution has the resource, or it is cooling down after a change."""

    code = ErrorCode.RESOURCE_BUSY

    def __init__(self, message: str, holder: str | None = None) -> None:
        super().__init__(message)
        # The execution that has it (None: cooling down).
        self.holder = holder


def resource_scope(account_id: str, region: str, resource_id: str) -> str:
    return f"resource#{account_id}#{region}#{resource_id}"


@dataclass(frozen=True)
class Waiter:
    """An execution a freed slot was handed over to: its run is woken with `task_token`."""

    execution_id: str
    queue_key: str
    task_token: str
    slot: int


@dataclass(frozen=True)
class SlotClaim:
    """The outcome of asking for a slot: the slot taken, or how many wait ahead."""

    slot: int | None
    ahead: int
    acting: int
    # Slots freed on the way because their holder had finished: (slot, holder).
    reclaimed: tuple[tuple[int, str], ...] = ()


class LimitsStore:
    def __init__(self, table_name: str, region: str, clock: Callable[[], float] = time.time) -> None:
        self._table = table(table_name, region)
        self._clock = clock

    # -- resource locks --------------------------------------------------------------------------

    def lock_resource(
        self,
        scope: str,
        resource_id: str,
        execution_id: str,
        lease_seconds: int,
        is_finished: Callable[[str], bool | None],
    ) -> None:
        """Give the resource to `execution_id`, or raise ResourceBusy saying who has it or until when
        it cools down. A lock whose holder has finished (its release was lost) or whose lease ran out
        is taken over. `is_finished` answers None for an execution that has no record."""
        for _ in range(3):
            now = self._clock()
            try:
                self._table.update_item(
                    Key={"scope": scope, "key": LOCK},
                    UpdateExpression="SET holder = :me, lease_until = :lease, locked_at = :now",
                    ConditionExpression=(
                        "(attribute_not_exists(holder) OR holder = :me OR lease_until < :now)"
                        " AND (attribute_not_exists(cooldown_until) OR cooldown_until <= :now OR holder = :me)"
                    ),
                    ExpressionAttributeValues={
                        ":me": execution_id,
                        ":lease": int(now + lease_seconds),
                        ":now": int(now),
                    },
                )
                return
            except ClientError as error:
                if not is_conditional_failure(error):
                    raise
            current = self._table.get_item(Key={"scope": scope, "key": LOCK}, ConsistentRead=True).get("Item", {})
            holder = current.get("holder")
            finished = is_finished(str(holder)) if holder else False
            # No record for the holder: it is being created right now (the lock comes first), or its
            # start died in between; only a lock old enough for the second case is taken over.
            abandoned = finished is None and now - int(current.get("locked_at", now)) > MISSING_HOLDER_GRACE_SECONDS
            if holder and (finished or abandoned):
                self._drop_holder(scope, str(holder))
                continue
            if holder:
                raise ResourceBusy(
                    f"resource {resource_id} already has an active execution ({holder}): wait for it to end, "
                    "or cancel it first",
                    holder=str(holder),
                )
            cooldown_until = int(current.get("cooldown_until", 0))
            if cooldown_until <= int(self._clock()):
                # The holder released it between the refused write and this read (a cooldown of 0, or
                # one that has just passed): the next write, with the time now, takes it.
                continue
            until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(cooldown_until))
            raise ResourceBusy(
                f"resource {resource_id} is cooling down after {current.get('last_holder', 'an execution')} changed "
                f"it: try again after {until}"
            )
        raise ResourceBusy(f"resource {resource_id} is busy: try again shortly")

    def release_resource(self, scope: str, execution_id: str, cooldown_seconds: int) -> bool:
        """Free the resource if `execution_id` has it, starting its cooldown. False if it had not."""
        now = self._clock()
        try:
            self._table.update_item(
                Key={"scope": scope, "key": LOCK},
                UpdateExpression="SET cooldown_until = :until, last_holder = :me REMOVE holder, lease_until",
                ConditionExpression="holder = :me",
                ExpressionAttributeValues={":me": execution_id, ":until": int(now + cooldown_seconds)},
            )
            return True
        except ClientError as error:
            if is_conditional_failure(error):
                return False
            raise

    def _drop_holder(self, scope: str, holder: str) -> None:
        try:
            self._table.update_item(
                Key={"scope": scope, "key": LOCK},
                UpdateExpression="REMOVE holder, lease_until",
                ConditionExpression="holder = :old",
                ExpressionAttributeValues={":old": holder},
            )
        except ClientError as error:
            if not is_conditional_failure(error):
                raise

    # -- acting slots ------------------------------------------------------------------------------

    def claim_slot(
        self,
        execution_id: str,
        queued_at: str,
        max_slots: int,
        is_finished: Callable[[str], bool | None],
        slot_lease_seconds: int,
        queue_lease_seconds: int,
        task_token: str,
        asked_before: bool = False,
    ) -> SlotClaim:
        """Take a free slot if no live waiter queued earlier would be passed over; else join the queue
        with the task token a freed slot's hand-over wakes the run with."""
        now = self._clock()
        slots = self._slots(max_slots)
        mine = next(
            (i for i, item in slots.items() if item.get("holder") == execution_id and self._held(item, now)), None
        )
        queue_key = waiter_key(queued_at, execution_id)
        if mine is not None:  # a retried ask, or one that a hand-over answered while it asked again
            self._delete_waiter(queue_key)
            return SlotClaim(mine, 0, self._acting(slots, now))
        free = [i for i in range(max_slots) if not self._held(slots.get(i), now)]
        if free and self._live_waiters_before(queue_key, now) == 0:
            # Nobody waits ahead: take a slot without queueing (the usual case, three requests).
            slot = self._take_first(free, execution_id, now, slot_lease_seconds)
            if slot is not None:
                if asked_before:  # the entry of its earlier ask, whose wait timed out, goes
                    self._delete_waiter(queue_key)
                return SlotClaim(slot, 0, max_slots - len(free) + 1)
        # Queued before looking again: a holder releasing meanwhile either sees this entry (and hands
        # its slot over) or has freed the slot before the second look below (and this ask takes it).
        self._table.put_item(
            Item={
                "scope": QUEUE,
                "key": queue_key,
                "execution_id": execution_id,
                "task_token": task_token,
                "lease_until": int(now + queue_lease_seconds),
            }
        )
        slots = self._slots(max_slots)
        ahead = self._live_waiters_before(queue_key, now)
        free = [i for i in range(max_slots) if not self._held(slots.get(i), now)]
        reclaimed: list[tuple[int, str]] = []
        if ahead >= len(free):
            reclaimed = self._reclaim_finished(slots, now, is_finished)
            free += [slot for slot, _ in reclaimed]
        acting = max_slots - len(free)
        if ahead >= len(free):
            return SlotClaim(None, ahead, acting, tuple(reclaimed))
        # Waiters ahead take the first free slots; this one tries the rest, in order.
        slot = self._take_first(free[ahead:], execution_id, now, slot_lease_seconds)
        if slot is None:
            return SlotClaim(None, ahead, max_slots, tuple(reclaimed))
        # Its queue entry is the right to wake it: a release handing a slot over at this moment
        # takes the entry first or finds it gone, so the execution never ends up with two slots.
        if not self._delete_waiter(queue_key, task_token):
            self._free(slot, execution_id)
            return SlotClaim(None, 0, acting, tuple(reclaimed))
        return SlotClaim(slot, 0, acting + 1, tuple(reclaimed))

    def hand_over(
        self,
        max_slots: int,
        is_finished: Callable[[str], bool | None],
        slot_lease_seconds: int,
    ) -> tuple[list[Waiter], list[tuple[int, str]]]:
        """Give the free slots to the oldest live waiters, in queue order, one each: the waiters to
        wake (their queue entries taken: nobody else wakes them), and the slots freed on the way from
        holders that had finished. An entry put back after a wake-up that could not be sent names
        its slot, and is woken with that slot again."""
        now = self._clock()
        waiters = [item for item in self._query(QUEUE) if int(item.get("lease_until", 0)) >= now]
        if not waiters:
            return [], []
        slots = self._slots(max_slots)
        held = {str(item["holder"]): i for i, item in slots.items() if self._held(item, now)}
        free = [i for i in range(max_slots) if not self._held(slots.get(i), now)]
        reclaimed: list[tuple[int, str]] = []
        if len(free) < len(waiters):
            reclaimed = self._reclaim_finished(slots, now, is_finished)
            free += [slot for slot, _ in reclaimed]
        woken: list[Waiter] = []
        for item in waiters:  # oldest first: the queue's sort key starts with the approval time
            execution_id, token, key = str(item["execution_id"]), str(item.get("task_token", "")), str(item["key"])
            again = item.get("slot") is not None and held.get(execution_id) == int(item["slot"])
            if again:
                slot = int(item["slot"])
            elif execution_id in held:
                continue  # it took a slot of its own this moment; its own ask wakes it
            else:
                taken = self._take_first(free, execution_id, now, slot_lease_seconds)
                if taken is None:
                    continue
                slot = taken
                free.remove(slot)
            if not token or not self._delete_waiter(key, token):
                # Its own ask took its entry first (and a slot with it): this one is not its.
                if not again:
                    self._free(slot, execution_id)
                    free.append(slot)
                continue
            woken.append(Waiter(execution_id, key, token, slot))
        return woken, reclaimed

    def put_back(self, waiter: Waiter, lease_seconds: int) -> None:
        """A wake-up that could not be sent: the entry goes back, naming the slot kept for it, for
        the next hand-over (the periodic sweep's, at the latest) to send again."""
        self._table.put_item(
            Item={
                "scope": QUEUE,
                "key": waiter.queue_key,
                "execution_id": waiter.execution_id,
                "task_token": waiter.task_token,
                "slot": waiter.slot,
                "lease_until": int(self._clock() + lease_seconds),
            }
        )

    def _take_first(self, free: list[int], execution_id: str, now: float, lease_seconds: int) -> int | None:
        for slot in free:
            try:
                self._table.update_item(
                    Key={"scope": SLOTS, "key": _slot_key(slot)},
                    UpdateExpression="SET holder = :me, lease_until = :lease, taken_at = :now",
                    ConditionExpression="attribute_not_exists(holder) OR lease_until < :now",
                    ExpressionAttributeValues={
                        ":me": execution_id,
                        ":lease": int(now + lease_seconds),
                        ":now": int(now),
                    },
                )
            except ClientError as error:
                if is_conditional_failure(error):
                    continue
                raise
            return slot
        return None

    def _reclaim_finished(
        self, slots: dict[int, dict[str, Any]], now: float, is_finished: Callable[[str], bool | None]
    ) -> list[tuple[int, str]]:
        """A slot whose holder has finished (its release was lost) is free now, not at its lease's end."""
        reclaimed: list[tuple[int, str]] = []
        for slot, item in sorted(slots.items()):
            if not self._held(item, now):
                continue
            holder = str(item["holder"])
            # A slot's holder always has a record (it asks from its own step): missing is finished.
            if is_finished(holder) in (True, None) and self._free(slot, holder):
                reclaimed.append((slot, holder))
        return reclaimed

    def _delete_waiter(self, queue_key: str, task_token: str | None = None) -> bool:
        """Remove a queue entry (only if it still holds `task_token`, when given): whether it did."""
        if task_token is None:
            self._table.delete_item(Key={"scope": QUEUE, "key": queue_key})
            return True
        try:
            self._table.delete_item(
                Key={"scope": QUEUE, "key": queue_key},
                ConditionExpression="task_token = :token",
                ExpressionAttributeValues={":token": task_token},
            )
        except ClientError as error:
            if not is_conditional_failure(error):
                raise
            return False
        return True

    def release_slot(self, execution_id: str, queue_key: str | None = None) -> int | None:
        """Free every slot `execution_id` holds (one, unless a race left it two) and its queue entry
        (when it still waits); the number of the slot it acted with (the lowest), or None."""
        released: list[int] = []
        for item in self._query(SLOTS):
            slot = int(str(item["key"]).removeprefix("slot-"))
            if item.get("holder") == execution_id and self._free(slot, execution_id):
                released.append(slot)
        if not released:  # it ended while waiting: its place in the queue goes
            keys = (
                [queue_key]
                if queue_key is not None
                else [str(item["key"]) for item in self._query(QUEUE) if item.get("execution_id") == execution_id]
            )
            for key in keys:
                self._delete_waiter(key)
        return min(released) if released else None

    def _free(self, slot: int, holder: str) -> bool:
        try:
            self._table.update_item(
                Key={"scope": SLOTS, "key": _slot_key(slot)},
                UpdateExpression="REMOVE holder, lease_until",
                ConditionExpression="holder = :old",
                ExpressionAttributeValues={":old": holder},
            )
            return True
        except ClientError as error:
            if is_conditional_failure(error):
                return False
            raise

    def _slots(self, max_slots: int) -> dict[int, dict[str, Any]]:
        slots: dict[int, dict[str, Any]] = {}
        for item in self._query(SLOTS):
            number = int(str(item["key"]).removeprefix("slot-"))
            if number < max_slots:
                slots[number] = item
        return slots

    @staticmethod
    def _held(item: dict[str, Any] | None, now: float) -> bool:
        return bool(item and item.get("holder") and int(item.get("lease_until", 0)) >= now)

    def _acting(self, slots: dict[int, dict[str, Any]], now: float) -> int:
        return sum(1 for item in slots.values() if self._held(item, now))

    def _live_waiters_before(self, queue_key: str, now: float) -> int:
        count = 0
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": Key("scope").eq(QUEUE) & Key("key").lt(queue_key),
            "FilterExpression": Attr("lease_until").gte(int(now)),
            "Select": "COUNT",
            "ConsistentRead": True,
        }
        while True:
            page = self._table.query(**kwargs)
            count += int(page["Count"])
            if "LastEvaluatedKey" not in page:
                return count
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _query(self, scope: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"KeyConditionExpression": Key("scope").eq(scope), "ConsistentRead": True}
        while True:
            page = self._table.query(**kwargs)
            items.extend(page["Items"])
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def waiter_key(queued_at: str, execution_id: str) -> str:
    """An execution's place in the queue for a slot: in the order of its approval (`queued_at`, sortable)."""
    return f"{queued_at}#{execution_id}"


def _slot_key(slot: int) -> str:
    return f"slot-{slot:03d}"
