"""The engine's own events: `Execution Status Changed` on its EventBridge bus, for other systems to follow.

Published after every status change that was written (the conditional write came first), so an
event never announces a change that did not happen. Publishing is best effort: a failure is logged
and never undoes or blocks the change; the audit log stays the record.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, Field

from cost_engine.models import ExecutionRecord, ExecutionStatus, RecommendationType
from cost_engine.topology import EVENT_SOURCE, STATUS_CHANGED_DETAIL_TYPE

logger = logging.getLogger(__name__)


class ExecutionStatusChanged(BaseModel):
    """The `detail` of an `Execution Status Changed` event (schema: docs/events/)."""

    execution_id: str
    recommendation_id: str
    customer_id: str
    recommendation_type: RecommendationType
    resource_id: str
    region: str
    old_status: ExecutionStatus
    new_status: ExecutionStatus
    changed_at: datetime
    dry_run: bool = Field(default=False, description="a dry run changes nothing: it completes with no saving")
    estimated_monthly_savings: float | None = Field(description="USD per month, as the recommendation estimated")
    expected_savings: float | None = Field(
        default=None, description="USD per month, the catalog's price difference for what was done (at completion)"
    )
    actual_savings: float | None = Field(
        description="USD per month, measured from billing data after completion; empty until measured"
    )
    error_message: str | None = None

    @classmethod
    def of(cls, before: ExecutionRecord, after: ExecutionRecord) -> ExecutionStatusChanged:
        return cls(
            execution_id=after.execution_id,
            recommendation_id=after.recommendation_id,
            customer_id=after.customer_id,
            recommendation_type=after.recommendation_type,
            resource_id=after.resource_id,
            region=after.region,
            old_status=before.status,
            new_status=after.status,
            changed_at=after.updated_at,
            dry_run=after.dry_run,
            estimated_monthly_savings=after.estimated_monthly_savings,
            expected_savings=after.expected_savings,
            actual_savings=after.actual_savings,
            error_message=after.error_message,
        )


def status_changed_schema() -> dict[str, Any]:
    return ExecutionStatusChanged.model_json_schema()


class StatusEventPublisher:
    def __init__(self, events_client: Any, bus_name: str) -> None:
        self.events = events_client
        self.bus_name = bus_name

    def __call__(self, before: ExecutionRecord, after: ExecutionRecord) -> None:
        detail = ExecutionStatusChanged.of(before, after)
        entry = {
            "Source": EVENT_SOURCE,
            "DetailType": STATUS_CHANGED_DETAIL_TYPE,
            "Detail": detail.model_dump_json(),
            "EventBusName": self.bus_name,
            "Resources": [],
        }
        try:
            result = self.events.put_events(Entries=[entry])
            if result.get("FailedEntryCount"):
                logger.warning("status event not published: %s", json.dumps(result.get("Entries")))
        except (ClientError, BotoCoreError) as error:
            logger.warning("status event not published: %s", error)
