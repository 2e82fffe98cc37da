"""The append-only audit log of each execution: events are only ever added, never changed."""

from __future__ import annotations

import uuid
from typing import Any

from cost_engine.models import AuditEvent, utc_now
from cost_engine.stores.dynamo import from_item, sortable_time, table, to_item


class AuditStore:
    def __init__(self, table_name: str, region: str) -> None:
        self._table = table(table_name, region)

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
        # The condition makes a put that would overwrite an existing event fail instead.
        self._table.put_item(Item=item, ConditionExpression="attribute_not_exists(event_key)")
        return event

    def events(self, execution_id: str) -> list[AuditEvent]:
        """All events of an execution, oldest first."""
        request: dict[str, Any] = {
            "KeyConditionExpression": "execution_id = :e",
            "ExpressionAttributeValues": {":e": execution_id},
            "ConsistentRead": True,
        }
        events: list[AuditEvent] = []
        while True:
            result = self._table.query(**request)
            events += [AuditEvent.model_validate(from_item(item)) for item in result.get("Items", [])]
            if "LastEvaluatedKey" not in result:
                return events
            request["ExclusiveStartKey"] = result["LastEvaluatedKey"]
