"""The safety limits' shared state in DynamoDB: acting slots, the queue waiting for them, and one
lock per resource. Every claim is a conditional write, and every claim has a lease, so what an
execution that died holds is freed by time, not held forever.

- `slots` / `slot-NN`: held by the execution changing a resource with it (`holder`, `lease_until`).
- `queue` / `<queued_at>#<execution_id>`: executions waiting for a slot, oldest first; each entry's
  lease is renewed while its execution keeps asking, so a dead waiter stops counting.
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
from cost_engine.stores.dynamo import table

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


def _conditional_failure(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def resource_scope(account_id: str, region: str, resource_id: str) -> str:
    return f"resource#{account_id}#{region}#{resource_id}"


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
                if not _conditional_failure(error):
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
            if _conditional_failure(error):
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
            if not _conditional_failure(error):
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
    ) -> SlotClaim:
        """Take a free slot if no live waiter queued earlier would be passed over; else stay queued."""
        now = self._clock()
        slots = self._slots(max_slots)
        mine = next(
            (i for i, item in slots.items() if item.get("holder") == execution_id and self._held(item, now)), None
        )
        if mine is not None:  # a retried step that already took one (still within its lease)
            return SlotClaim(mine, 0, self._acting(slots, now))
        queue_key = f"{queued_at}#{execution_id}"
        self._table.put_item(
            Item={
                "scope": QUEUE,
                "key": queue_key,
                "execution_id": execution_id,
                "lease_until": int(now + queue_lease_seconds),
            }
        )
        ahead = self._live_waiters_before(queue_key, now)
        free = [i for i in range(max_slots) if not self._held(slots.get(i), now)]
        reclaimed: list[tuple[int, str]] = []
        if ahead >= len(free):
            # A slot whose holder has finished (its release was lost) is free now, not at its lease's end.
            for slot, item in sorted(slots.items()):
                if not self._held(item, now):
                    continue
                holder = str(item["holder"])
                # A slot's holder always has a record (it claims from its own step): missing is finished.
                if is_finished(holder) in (True, None) and self._free(slot, holder):
                    free.append(slot)
                    reclaimed.append((slot, holder))
        acting = max_slots - len(free)
        if ahead >= len(free):
            return SlotClaim(None, ahead, acting, tuple(reclaimed))
        # Waiters ahead take the first free slots; this one tries the rest, in order.
        for slot in free[ahead:]:
            try:
                self._table.update_item(
                    Key={"scope": SLOTS, "key": _slot_key(slot)},
                    UpdateExpression="SET holder = :me, lease_until = :lease, taken_at = :now",
                    ConditionExpression="attribute_not_exists(holder) OR lease_until < :now",
                    ExpressionAttributeValues={
                        ":me": execution_id,
                        ":lease": int(now + slot_lease_seconds),
                        ":now": int(now),
                    },
                )
            except ClientError as error:
                if _conditional_failure(error):
                    continue
                raise
            self._table.delete_item(Key={"scope": QUEUE, "key": queue_key})
            return SlotClaim(slot, 0, acting + 1, tuple(reclaimed))
        return SlotClaim(None, ahead, max_slots, tuple(reclaimed))

    def release_slot(self, execution_id: str) -> int | None:
        """Free the slot `execution_id` holds (and its queue entry); the slot's number, or None."""
        released = None
        for item in self._query(SLOTS):
            if item.get("holder") != execution_id:
                continue
            try:
                self._table.update_item(
                    Key={"scope": SLOTS, "key": item["key"]},
                    UpdateExpression="REMOVE holder, lease_until",
                    ConditionExpression="holder = :me",
                    ExpressionAttributeValues={":me": execution_id},
                )
                released = int(str(item["key"]).removeprefix("slot-"))
            except ClientError as error:
                if not _conditional_failure(error):
                    raise
        for item in self._query(QUEUE):
            if item.get("execution_id") == execution_id:
                self._table.delete_item(Key={"scope": QUEUE, "key": item["key"]})
        return released

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
            if _conditional_failure(error):
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


def _slot_key(slot: int) -> str:
    return f"slot-{slot:03d}"
