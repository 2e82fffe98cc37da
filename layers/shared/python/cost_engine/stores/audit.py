"""The append-only audit log of each execution: events are only ever added, never changed.

Within `batched()` (a state machine task), events are kept and written together, up to 25 in one
BatchWriteItem, when the task asks (`flush`: before each status change, so the log is complete
before the status says so, and at once after an AWS call that changed something) and when the
block ends, failed or not. Each event has its own time and id in its key, so the log reads in the
order the events happened however they were written.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from cost_engine.errors import TransientError
from cost_engine.models import AuditEvent, utc_now
from cost_engine.stores.dynamo import from_item, sortable_time, table, to_item


class AuditStep(BaseModel):
    """An event without its detail: what happened, when and by whom (an execution's steps), and its
    key in the log (time and id: unique, and in the order the events happened)."""

    event_type: str
    timestamp: datetime
    actor: str
    event_key: str


# The attributes of an AuditStep, as a read names them (`timestamp` is a reserved word).
_STEP_ATTRIBUTES = {f"#{name}": name for name in AuditStep.model_fields}
_STEP_PROJECTION: dict[str, Any] = {
    "ProjectionExpression": ", ".join(_STEP_ATTRIBUTES),
    "ExpressionAttributeNames": _STEP_ATTRIBUTES,
}


# BatchWriteItem's most items per request, and how often unprocessed ones are sent again.
BATCH_SIZE = 25
UNPROCESSED_ATTEMPTS = 5


class AuditStore:
    def __init__(self, table_name: str, region: str) -> None:
        self._table = table(table_name, region)
        # The events kept to be written together, in the current context (a task), if batching.
        self._pending: ContextVar[list[dict[str, Any]] | None] = ContextVar(f"audit_pending_{id(self)}", default=None)

    @contextmanager
    def batched(self) -> Iterator[None]:
        """Within the block, appended events are written together (see the module's note)."""
        if self._pending.get() is not None:  # already batching: the outer block writes them
            yield
            return
        token = self._pending.set([])
        try:
            yield
        finally:
            try:
                self.flush()
            finally:
                self._pending.reset(token)

    def flush(self) -> None:
        """Write the kept events now."""
        pending = self._pending.get()
        if not pending:
            return
        items, pending[:] = list(pending), []
        for start in range(0, len(items), BATCH_SIZE):
            self._write_batch(items[start : start + BATCH_SIZE])

    def _write_batch(self, items: list[dict[str, Any]]) -> None:
        if len(items) == 1:  # one put is the same request, and keeps its overwrite guard
            self._table.put_item(Item=items[0], ConditionExpression="attribute_not_exists(event_key)")
            return
        client = self._table.meta.client
        requests: dict[str, Any] = {self._table.name: [{"PutRequest": {"Item": item}} for item in items]}
        for attempt in range(UNPROCESSED_ATTEMPTS):
            answer = client.batch_write_item(RequestItems=requests)
            requests = answer.get("UnprocessedItems") or {}
            if not requests:
                return
            time.sleep(0.05 * 2**attempt)  # throttled: DynamoDB asks to send the rest again, later
        raise TransientError(f"{sum(len(r) for r in requests.values())} audit events were not written")

    def append(
        self, execution_id: str, event_type: str, actor: str, detail: dict[str, Any] | None = None
    ) -> AuditEvent:
        event = AuditEvent(
            execution_id=execution_id,
            timestamp=utc_now(),
            event_id=uuid.uuid4().hex[:12],
            event_type=event_type,
            actor=actor,
            detail=detail or {},
        )
        item = to_item(event)
        item["event_key"] = f"{sortable_time(event.timestamp)}#{event.event_id}"
        pending = self._pending.get()
        if pending is not None:
            pending.append(item)
            return event
        # The condition makes a put that would overwrite an existing event fail instead (a batched
        # put has none: its key's random id is what keeps it from meeting another event's).
        self._table.put_item(Item=item, ConditionExpression="attribute_not_exists(event_key)")
        return event

    def events(self, execution_id: str) -> list[AuditEvent]:
        """All events of an execution, oldest first."""
        return [AuditEvent.model_validate(from_item(item)) for item in self._items(execution_id, {})]

    def latest_steps(self, execution_id: str, count: int) -> tuple[list[AuditStep], bool]:
        """The newest `count` steps of an execution, oldest first, and whether it has earlier ones.

        One query from the newest end that stops after `count + 1` events: what it reads (and is
        billed) does not grow with the log, so a client can poll an execution's status cheaply."""
        result = self._table.query(
            KeyConditionExpression="execution_id = :e",
            ExpressionAttributeValues={":e": execution_id},
            ConsistentRead=True,
            ScanIndexForward=False,
            Limit=count + 1,
            **_STEP_PROJECTION,
        )
        items = result.get("Items", [])
        newest = [AuditStep.model_validate(item) for item in items[:count]]
        return newest[::-1], len(items) > count

    def _items(self, execution_id: str, options: dict[str, Any]) -> list[dict[str, Any]]:
        request: dict[str, Any] = {
            "KeyConditionExpression": "execution_id = :e",
            "ExpressionAttributeValues": {":e": execution_id},
            "ConsistentRead": True,
            **options,
        }
        items: list[dict[str, Any]] = []
        while True:
            result = self._table.query(**request)
            items += result.get("Items", [])
            if "LastEvaluatedKey" not in result:
                return items
            request["ExclusiveStartKey"] = result["LastEvaluatedKey"]
