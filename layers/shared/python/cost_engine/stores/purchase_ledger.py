"""What Reserved Instance purchases commit, per account and period, in the limits table.

One item per account and period: `ri-purchases#<account>` / `<period key>`, holding `committed_cents`
(the sum) and `entries`, one per execution: its amount in cents and its state (`reserved` from the
approval until it buys, then `bought`). Every change of the sum is one conditional write together with
the entry it adds, changes or removes, so two approvals at the same instant cannot both fit under a
limit that has room for one.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from botocore.exceptions import ClientError

from cost_engine.stores.dynamo import is_conditional_failure, table

SCOPE_PREFIX = "ri-purchases#"
# A conditional write that lost to a concurrent one is tried again this many times with what is there now.
WRITE_ATTEMPTS = 5


class EntryState(StrEnum):
    RESERVED = "reserved"
    BOUGHT = "bought"


@dataclass(frozen=True)
class LedgerEntry:
    execution_id: str
    cents: int
    state: EntryState
    at: str
    # The reservation bought, once known: another execution's recovery must not take it for its own.
    reserved_instances_id: str | None = None


@dataclass(frozen=True)
class PeriodLedger:
    """One account's commitments in one period."""

    committed_cents: int
    entries: tuple[LedgerEntry, ...]

    def entry(self, execution_id: str) -> LedgerEntry | None:
        return next((e for e in self.entries if e.execution_id == execution_id), None)


def ledger_scope(account_id: str) -> str:
    return f"{SCOPE_PREFIX}{account_id}"


class PurchaseLedgerStore:
    def __init__(self, table_name: str, region: str) -> None:
        self._table = table(table_name, region)

    def read(self, account_id: str, period: str) -> PeriodLedger:
        item = self._table.get_item(Key=self._key(account_id, period), ConsistentRead=True).get("Item", {})
        entries = tuple(
            sorted(
                (
                    LedgerEntry(
                        str(execution_id),
                        int(e["cents"]),
                        EntryState(str(e["state"])),
                        str(e["at"]),
                        str(e["reserved_instances_id"]) if e.get("reserved_instances_id") else None,
                    )
                    for execution_id, e in dict(item.get("entries", {})).items()
                ),
                key=lambda entry: (entry.at, entry.execution_id),
            )
        )
        return PeriodLedger(int(item.get("committed_cents", 0)), entries)

    def reserve(self, account_id: str, period: str, execution_id: str, cents: int, cap_cents: int, at: str) -> bool:
        """Add the execution's entry if the sum stays within `cap_cents`. True if it was added now or
        was already there (a repeated approval); False if it does not fit."""
        key = self._key(account_id, period)
        # The map must exist before an entry can be set inside it.
        self._table.update_item(
            Key=key,
            UpdateExpression="SET entries = if_not_exists(entries, :none), "
            "committed_cents = if_not_exists(committed_cents, :zero)",
            ExpressionAttributeValues={":none": {}, ":zero": 0},
        )
        try:
            self._table.update_item(
                Key=key,
                UpdateExpression="SET entries.#e = :entry, committed_cents = committed_cents + :cents",
                ConditionExpression="attribute_not_exists(entries.#e) AND committed_cents <= :room",
                ExpressionAttributeNames={"#e": execution_id},
                ExpressionAttributeValues={
                    ":entry": {"cents": cents, "state": EntryState.RESERVED.value, "at": at},
                    ":cents": cents,
                    ":room": cap_cents - cents,
                },
            )
            return True
        except ClientError as error:
            if not is_conditional_failure(error):
                raise
        return self.read(account_id, period).entry(execution_id) is not None

    def change(self, account_id: str, period: str, execution_id: str, cents: int, cap_cents: int) -> bool:
        """Set a reserved entry's amount to `cents` if the sum stays within `cap_cents` (a lower amount
        always fits). False if it does not fit or the entry is not reserved."""
        for _ in range(WRITE_ATTEMPTS):
            entry = self.read(account_id, period).entry(execution_id)
            if entry is None or entry.state != EntryState.RESERVED:
                return False
            delta = cents - entry.cents
            condition = "entries.#e.cents = :old AND entries.#e.#state = :reserved"
            values: dict[str, Any] = {
                ":old": entry.cents,
                ":new": cents,
                ":delta": delta,
                ":reserved": EntryState.RESERVED.value,
            }
            if delta > 0:
                condition += " AND committed_cents <= :room"
                values[":room"] = cap_cents - delta
            try:
                self._table.update_item(
                    Key=self._key(account_id, period),
                    UpdateExpression="SET entries.#e.cents = :new, committed_cents = committed_cents + :delta",
                    ConditionExpression=condition,
                    ExpressionAttributeNames={"#e": execution_id, "#state": "state"},
                    ExpressionAttributeValues=values,
                )
                return True
            except ClientError as error:
                if not is_conditional_failure(error):
                    raise
            if delta > 0 and self.read(account_id, period).committed_cents > cap_cents - delta:
                return False
        return False

    def release(self, account_id: str, period: str, execution_id: str) -> int | None:
        """Remove the execution's entry while it is only reserved; the cents freed, or None if there
        was no such entry (none at all, or already bought)."""
        for _ in range(WRITE_ATTEMPTS):
            entry = self.read(account_id, period).entry(execution_id)
            if entry is None or entry.state != EntryState.RESERVED:
                return None
            try:
                self._table.update_item(
                    Key=self._key(account_id, period),
                    UpdateExpression="REMOVE entries.#e SET committed_cents = committed_cents - :cents",
                    ConditionExpression="entries.#e.cents = :cents AND entries.#e.#state = :reserved",
                    ExpressionAttributeNames={"#e": execution_id, "#state": "state"},
                    ExpressionAttributeValues={":cents": entry.cents, ":reserved": EntryState.RESERVED.value},
                )
                return entry.cents
            except ClientError as error:
                if not is_conditional_failure(error):
                    raise
        return None

    def mark_bought(
        self, account_id: str, period: str, execution_id: str, reserved_instances_id: str | None = None
    ) -> bool:
        """The entry's money is spent: it is never released. False if the entry is not there."""
        update = "SET entries.#e.#state = :bought"
        values: dict[str, str] = {":bought": EntryState.BOUGHT.value}
        if reserved_instances_id:
            update += ", entries.#e.reserved_instances_id = :reservation"
            values[":reservation"] = reserved_instances_id
        try:
            self._table.update_item(
                Key=self._key(account_id, period),
                UpdateExpression=update,
                ConditionExpression="attribute_exists(entries.#e)",
                ExpressionAttributeNames={"#e": execution_id, "#state": "state"},
                ExpressionAttributeValues=values,
            )
            return True
        except ClientError as error:
            if is_conditional_failure(error):
                return False
            raise

    @staticmethod
    def _key(account_id: str, period: str) -> dict[str, str]:
        return {"scope": ledger_scope(account_id), "key": period}
