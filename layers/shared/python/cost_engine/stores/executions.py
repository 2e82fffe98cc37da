"""Execution records. Every status change is a conditional write on the status it expects."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from cost_engine.errors import Conflict, InvalidRequest, NotFound, StatusConflict
from cost_engine.models import ExecutionRecord, ExecutionStatus, utc_now
from cost_engine.stores.dynamo import decode_cursor, encode_cursor, from_item, sortable_time, table, to_item
from cost_engine.topology import EXECUTIONS_TABLE, IndexName
from cost_engine.transitions import FINAL_STATES, check_transition

TASK_TOKEN_ATTRIBUTE = "approval_task_token"
# Carried while the execution is not final, the key of the sparse index the sweeper reads. One value
# for all: the executions in flight at once are few, and the sweeper reads them all.
UNFINISHED_ATTRIBUTE = "unfinished"
UNFINISHED = "unfinished"


@dataclass(frozen=True)
class Page:
    items: list[ExecutionRecord]
    next_cursor: str | None


def _customer_status(customer_id: str, status: ExecutionStatus) -> str:
    return f"{customer_id}#{status.value}"


def _is_conditional_failure(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


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
            if _is_conditional_failure(error):
                raise Conflict(f"execution {record.execution_id} already exists") from None
            raise

    def _raw(self, execution_id: str) -> dict[str, Any]:
        item = self._table.get_item(Key={"execution_id": execution_id}, ConsistentRead=True).get("Item")
        if item is None:
            raise execution_not_found(execution_id)
        return dict(item)

    def get(self, execution_id: str) -> ExecutionRecord:
        return ExecutionRecord.model_validate(from_item(self._raw(execution_id)))

    def task_token(self, execution_id: str) -> str | None:
        token = self._raw(execution_id).get(TASK_TOKEN_ATTRIBUTE)
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
        while True:
            record = self.get(execution_id)
            # The status goes last: DynamoDB applies an update atomically, but the local emulator applies
            # its actions one by one, and a reader that sees the new status must see the rest with it.
            values = {
                **(changes or {}),
                **({} if final else {UNFINISHED_ATTRIBUTE: UNFINISHED}),
                "customer_status": _customer_status(record.customer_id, new_status),
                "status": new_status,
            }
            # Conditioned on the status just read, so that the change observed (from -> to) is the one
            # written; read again when another writer moved it on to a status still in `expected`
            # (statuses only move forward, so this ends).
            condition = {record.status} if record.status in expected_set else expected_set
            try:
                after = self._update(execution_id, values, condition, removed, intent=f"become '{new_status.value}'")
            except StatusConflict:
                if condition != expected_set and self.get(execution_id).status in expected_set:
                    continue
                raise
            if self.on_transition is not None:
                self.on_transition(record, after)
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
        return self._update(execution_id, changes, expected_set, remove, intent="be updated")

    def _update(
        self,
        execution_id: str,
        values: dict[str, Any],
        expected: set[ExecutionStatus],
        remove: Iterable[str],
        intent: str,
    ) -> ExecutionRecord:
        values = {"updated_at": utc_now(), **values}
        names = {"#status": "status"}
        attribute_values: dict[str, Any] = {}
        sets = []
        for i, (name, value) in enumerate(values.items()):
            names[f"#f{i}"] = name
            attribute_values[f":v{i}"] = to_item(value)
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
                ReturnValues="ALL_NEW",
            )
        except ClientError as error:
            if not _is_conditional_failure(error):
                raise
            current = self.get(execution_id).status  # raises NotFound when it never existed
            wanted = ", ".join(sorted(s.value for s in expected))
            raise StatusConflict(
                f"execution {execution_id} is '{current.value}', not '{wanted}': "
                f"it cannot {intent} (another change came first)"
            ) from None
        return ExecutionRecord.model_validate(from_item(result["Attributes"]))

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
        return self._query(index, key, value, limit, cursor)

    def find_by_approval(self, approval_id: str) -> ExecutionRecord | None:
        """The execution whose approval link has this id, read consistently; None if there is none."""
        page = self._query(IndexName.APPROVAL, "approval_id", approval_id, 1, None)
        return self.get(page.items[0].execution_id) if page.items else None

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

    def _query(self, index: str, key: str, value: str, limit: int, cursor: str | None) -> Page:
        request: dict[str, Any] = {
            "IndexName": index,
            "KeyConditionExpression": "#k = :v",
            "ExpressionAttributeNames": {"#k": key},
            "ExpressionAttributeValues": {":v": value},
            "ScanIndexForward": False,  # newest first
            "Limit": limit,
        }
        # A page's last key holds the table key and the index keys: nothing else is a valid cursor.
        index_keys = next(i for i in EXECUTIONS_TABLE.indexes if i.name == index)
        start = decode_cursor(
            cursor,
            frozenset({EXECUTIONS_TABLE.partition_key, index_keys.partition_key, index_keys.sort_key}),
        )
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
        items = [ExecutionRecord.model_validate(from_item(item)) for item in result.get("Items", [])]
        return Page(items=items, next_cursor=encode_cursor(result.get("LastEvaluatedKey")))

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
            if _is_conditional_failure(error):
                raise execution_not_found(execution_id) from None
            raise
