"""Execution records. Every status change is a conditional write on the status it expects."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from botocore.exceptions import ClientError

from cost_engine.errors import Conflict, InvalidRequest, NotFound, StatusConflict
from cost_engine.models import ExecutionRecord, ExecutionStatus, SavingsMeasurement, utc_now
from cost_engine.savings import best
from cost_engine.stores.dynamo import (
    batch_get,
    decode_cursor,
    encode_cursor,
    from_item,
    is_conditional_failure,
    item_at_failure,
    sortable_time,
    table,
    to_item,
)
from cost_engine.topology import EXECUTIONS_TABLE, IndexName
from cost_engine.transitions import FINAL_STATES, check_transition

# How often a measurement's write is tried again when another measurement was written in between.
MEASUREMENT_WRITE_ATTEMPTS = 5

TASK_TOKEN_ATTRIBUTE = "approval_task_token"
# Carried while the execution is not final, the key of the sparse index the sweeper reads. One value
# for all: the executions in flight at once are few, and the sweeper reads them all.
UNFINISHED_ATTRIBUTE = "unfinished"
UNFINISHED = "unfinished"
# How many executions' customers a store remembers (see ExecutionStore._customers).
CUSTOMERS_KEPT = 1024


@dataclass(frozen=True)
class Page:
    items: list[ExecutionRecord]
    next_cursor: str | None


def _customer_status(customer_id: str, status: ExecutionStatus) -> str:
    return f"{customer_id}#{status.value}"


def execution_not_found(execution_id: str) -> NotFound:
    """The answer for an unknown execution, and for one the caller may not see (cost_engine.access)."""
    return NotFound(f"execution '{execution_id}' does not exist")


# Called with the record before and after each status change that was written.
TransitionObserver = Callable[[ExecutionRecord, ExecutionRecord], None]


def chain_observers(*observers: TransitionObserver | None) -> TransitionObserver:
    """One observer calling each given one in order."""
    chosen = [observer for observer in observers if observer is not None]

    def observe(before: ExecutionRecord, after: ExecutionRecord) -> None:
        for observer in chosen:
            observer(before, after)

    return observe


class ExecutionStore:
    def __init__(self, table_name: str, region: str, on_transition: TransitionObserver | None = None) -> None:
        self._table = table(table_name, region)
        self.on_transition = on_transition
        # The customer of each execution this store has read or written, which never changes: a status
        # change writes it into `customer_status` without reading the record first. The oldest go first.
        self._customers: dict[str, str] = {}

    def _remember(self, item: dict[str, Any]) -> None:
        self._customers[str(item["execution_id"])] = str(item["customer_id"])
        if len(self._customers) > CUSTOMERS_KEPT:
            del self._customers[next(iter(self._customers))]

    def _customer_of(self, execution_id: str) -> str:
        return self._customers.get(execution_id) or self.get(execution_id).customer_id

    def create(self, record: ExecutionRecord) -> None:
        item = to_item(record)
        item["created_at"] = sortable_time(record.created_at)
        item["customer_status"] = _customer_status(record.customer_id, record.status)
        if record.status not in FINAL_STATES:
            item[UNFINISHED_ATTRIBUTE] = UNFINISHED
        # An index key may be absent (a sparse index) but never null: DynamoDB refuses that.
        for index in EXECUTIONS_TABLE.indexes:
            if item.get(index.partition_key) is None:
                item.pop(index.partition_key, None)
        try:
            self._table.put_item(Item=item, ConditionExpression="attribute_not_exists(execution_id)")
        except ClientError as error:
            if is_conditional_failure(error):
                raise Conflict(f"execution {record.execution_id} already exists") from None
            raise
        self._remember(item)

    def get(self, execution_id: str) -> ExecutionRecord:
        item = self._table.get_item(Key={"execution_id": execution_id}, ConsistentRead=True).get("Item")
        if item is None:
            raise execution_not_found(execution_id)
        self._remember(item)
        return ExecutionRecord.model_validate(from_item(item))

    def task_token(self, execution_id: str) -> str | None:
        # The id too, so that an execution without a token still reads as an item.
        item = self._table.get_item(
            Key={"execution_id": execution_id},
            ConsistentRead=True,
            ProjectionExpression="execution_id, #t",
            ExpressionAttributeNames={"#t": TASK_TOKEN_ATTRIBUTE},
        ).get("Item")
        if item is None:
            raise execution_not_found(execution_id)
        token = item.get(TASK_TOKEN_ATTRIBUTE)
        return str(token) if token else None

    def transition(
        self,
        execution_id: str,
        new_status: ExecutionStatus,
        *,
        expected: ExecutionStatus | Iterable[ExecutionStatus],
        changes: dict[str, Any] | None = None,
        remove: Iterable[str] = (),
    ) -> ExecutionRecord:
        """Change the status from one of `expected` to `new_status`, with `changes`, atomically.

        Raises `InvalidTransition` if the model forbids the change, `StatusConflict` if the
        stored status is no longer one of `expected` (someone else wrote first).
        """
        expected_set = {expected} if isinstance(expected, ExecutionStatus) else set(expected)
        for old in expected_set:
            check_transition(old, new_status)
        final = new_status in FINAL_STATES
        removed = [*remove, UNFINISHED_ATTRIBUTE] if final else list(remove)
        # The status goes last: DynamoDB applies an update atomically, but the local emulator applies
        # its actions one by one, and a reader that sees the new status must see the rest with it.
        values = {
            "updated_at": utc_now(),
            **(changes or {}),
            **({} if final else {UNFINISHED_ATTRIBUTE: UNFINISHED}),
            "customer_status": _customer_status(self._customer_of(execution_id), new_status),
            "status": new_status,
        }
        # One write, which returns the record it replaced: the change observed (from -> to) is the one
        # written, and the record after it is that one with these values.
        written = {name: to_item(value) for name, value in values.items()}
        old_item = self._write(execution_id, written, expected_set, removed, f"become '{new_status.value}'", "ALL_OLD")
        new_item = {name: value for name, value in {**old_item, **written}.items() if name not in removed}
        before = ExecutionRecord.model_validate(from_item(old_item))
        after = ExecutionRecord.model_validate(from_item(new_item))
        if self.on_transition is not None:
            self.on_transition(before, after)
        return after

    def update(
        self,
        execution_id: str,
        *,
        expected: ExecutionStatus | Iterable[ExecutionStatus],
        changes: dict[str, Any],
        remove: Iterable[str] = (),
    ) -> ExecutionRecord:
        """Record `changes` while the status is still one of `expected`, without changing it."""
        expected_set = {expected} if isinstance(expected, ExecutionStatus) else set(expected)
        written = {name: to_item(value) for name, value in {"updated_at": utc_now(), **changes}.items()}
        new_item = self._write(execution_id, written, expected_set, list(remove), "be updated", "ALL_NEW")
        return ExecutionRecord.model_validate(from_item(new_item))

    def _write(
        self,
        execution_id: str,
        written: dict[str, Any],
        expected: set[ExecutionStatus],
        remove: list[str],
        intent: str,
        returning: Literal["ALL_OLD", "ALL_NEW"],
    ) -> dict[str, Any]:
        """Set `written` (item values) and remove `remove` while the status is one of `expected`; the
        item before the write (ALL_OLD) or after it (ALL_NEW)."""
        names = {"#status": "status"}
        attribute_values: dict[str, Any] = {}
        sets = []
        for i, (name, value) in enumerate(written.items()):
            names[f"#f{i}"] = name
            attribute_values[f":v{i}"] = value
            sets.append(f"#f{i} = :v{i}")
        removes = []
        for i, name in enumerate(remove):
            names[f"#r{i}"] = name
            removes.append(f"#r{i}")
        expected_keys = []
        for i, status in enumerate(sorted(expected, key=lambda s: s.value)):
            attribute_values[f":e{i}"] = status.value
            expected_keys.append(f":e{i}")
        expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        try:
            result = self._table.update_item(
                Key={"execution_id": execution_id},
                UpdateExpression=expression,
                ConditionExpression=f"attribute_exists(execution_id) AND #status IN ({', '.join(expected_keys)})",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=attribute_values,
                ReturnValues=returning,
                # A refusal tells what the record is instead, without reading it again.
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            if not is_conditional_failure(error):
                raise
            current = item_at_failure(error)
            if current is None:
                raise execution_not_found(execution_id) from None
            wanted = ", ".join(sorted(s.value for s in expected))
            raise StatusConflict(
                f"execution {execution_id} is '{current['status']}', not '{wanted}': "
                f"it cannot {intent} (another change came first)"
            ) from None
        item = dict(result["Attributes"])
        self._remember(item)
        return item

    def list_by_customer(
        self, customer_id: str, status: ExecutionStatus | None, limit: int, cursor: str | None
    ) -> Page:
        if status is None:
            index, key, value = IndexName.CUSTOMER_CREATED, "customer_id", customer_id
        else:
            index, key, value = (
                IndexName.CUSTOMER_STATUS_CREATED,
                "customer_status",
                _customer_status(customer_id, status),
            )
        keys, next_cursor = self._query_keys(index, key, value, limit, cursor)
        items = [ExecutionRecord.model_validate(from_item(item)) for item in batch_get(self._table, keys)]
        # The index is eventually consistent and the records are read after it: one whose status moved
        # on since is left out of a listing by status, as the index itself will leave it out.
        return Page(
            items=[record for record in items if status is None or record.status == status],
            next_cursor=next_cursor,
        )

    def find_by_approval(self, approval_id: str) -> ExecutionRecord | None:
        """The execution whose approval link has this id, read consistently; None if there is none."""
        keys, _ = self._query_keys(IndexName.APPROVAL, "approval_id", approval_id, 1, None)
        return self.get(str(keys[0]["execution_id"])) if keys else None

    def unfinished_ids(self, page_size: int = 100) -> Iterator[str]:
        """The ids of the executions that are not final, oldest first, from the sparse index (no Scan).
        The index is eventually consistent: read each record before acting on it."""
        request: dict[str, Any] = {
            "IndexName": IndexName.UNFINISHED,
            "KeyConditionExpression": "#k = :v",
            "ExpressionAttributeNames": {"#k": UNFINISHED_ATTRIBUTE},
            "ExpressionAttributeValues": {":v": UNFINISHED},
            "Limit": page_size,
        }
        while True:
            result = self._table.query(**request)
            yield from (str(item["execution_id"]) for item in result.get("Items", []))
            if "LastEvaluatedKey" not in result:
                return
            request["ExclusiveStartKey"] = result["LastEvaluatedKey"]

    def _query_keys(
        self, index_name: str, key: str, value: str, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The table keys of a page of an index (newest first), and the cursor of the next page."""
        request: dict[str, Any] = {
            "IndexName": index_name,
            "KeyConditionExpression": "#k = :v",
            "ExpressionAttributeNames": {"#k": key},
            "ExpressionAttributeValues": {":v": value},
            "ScanIndexForward": False,  # newest first
            "Limit": limit,
        }
        # A page's last key holds the table key and the index keys: nothing else is a valid cursor.
        index = next(i for i in EXECUTIONS_TABLE.indexes if i.name == index_name)
        start = decode_cursor(cursor, frozenset({EXECUTIONS_TABLE.partition_key, index.partition_key, index.sort_key}))
        if start:
            if start[key] != value:
                # Another listing's cursor (another customer's, or another status filter): DynamoDB
                # would refuse a start key outside the query, and it must not page someone else's list.
                raise InvalidRequest(
                    "cursor belongs to another listing (another customer or status): pass next_cursor from the "
                    "previous page of this same listing"
                )
            request["ExclusiveStartKey"] = start
        result = self._table.query(**request)
        keys = [
            {EXECUTIONS_TABLE.partition_key: item[EXECUTIONS_TABLE.partition_key]} for item in result.get("Items", [])
        ]
        return keys, encode_cursor(result.get("LastEvaluatedKey"))

    def clear_task_token(self, execution_id: str) -> None:
        """Forget the task token once the wait it completes is over, whatever the status is now."""
        self._table.update_item(
            Key={"execution_id": execution_id},
            UpdateExpression="REMOVE #t",
            ExpressionAttributeNames={"#t": TASK_TOKEN_ATTRIBUTE},
            ConditionExpression="attribute_exists(execution_id)",
        )

    def store_task_token(self, execution_id: str, token: str) -> None:
        try:
            self._table.update_item(
                Key={"execution_id": execution_id},
                UpdateExpression="SET #t = :t",
                ExpressionAttributeNames={"#t": TASK_TOKEN_ATTRIBUTE},
                ExpressionAttributeValues={":t": token},
                ConditionExpression="attribute_exists(execution_id)",
            )
        except ClientError as error:
            if is_conditional_failure(error):
                raise execution_not_found(execution_id) from None
            raise

    def add_measurement(self, record: ExecutionRecord, measurement: SavingsMeasurement) -> ExecutionRecord:
        """Add a savings measurement to a completed execution (`record`, as its caller read it) and make
        the best of its measurements its actual saving, in one write conditioned on the measurements
        read: a measurement written in between (a scheduled one and one asked for at once) makes it
        read the record again and write again."""
        execution_id = record.execution_id
        for attempt in range(MEASUREMENT_WRITE_ATTEMPTS):
            if attempt:
                record = self.get(execution_id)
            if record.status != ExecutionStatus.COMPLETED:
                raise StatusConflict(
                    f"execution {execution_id} is '{record.status.value}': only a completed execution's saving"
                    " can be measured"
                )
            measurements = [*record.measurements, measurement]
            chosen = best(measurements)
            values: dict[str, Any] = {
                ":m": to_item(measurements),
                ":a": to_item(chosen.monthly_savings if chosen else None),
                ":u": to_item(utc_now()),
                ":completed": ExecutionStatus.COMPLETED.value,
                ":count": len(record.measurements),
            }
            try:
                answer = self._table.update_item(
                    Key={"execution_id": execution_id},
                    UpdateExpression="SET #m = :m, #a = :a, #u = :u",
                    # The measurements as read (a record written before they existed has none).
                    ConditionExpression="#s = :completed AND (attribute_not_exists(#m) OR size(#m) = :count)",
                    ExpressionAttributeNames={
                        "#m": "measurements",
                        "#a": "actual_savings",
                        "#u": "updated_at",
                        "#s": "status",
                    },
                    ExpressionAttributeValues=values,
                    ReturnValues="ALL_NEW",
                )
            except ClientError as error:
                if is_conditional_failure(error):
                    continue  # another measurement came in (or the status changed): read again
                raise
            return ExecutionRecord.model_validate(from_item(answer["Attributes"]))
        raise Conflict(f"execution {execution_id}'s measurements kept changing: try again")
