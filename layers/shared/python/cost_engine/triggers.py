"""Executions started by events: the upstream engine's `Recommendation Approved` (docs/events.md).

The event's detail is a recommendation in the engine's own schema. It is registered (a repeat is a
no-op) and executed once: the execution's idempotency key is the recommendation id, so an event
delivered twice, or announced twice, finds the first execution and starts nothing new.

An event that cannot be handled raises: Lambda retries the asynchronous invocation, then hands the
event, with the error, to the trigger's dead-letter queue. Nothing is registered or started for a
malformed event, because everything is checked before the first write.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.parser.models import EventBridgeModel

from cost_engine.errors import InvalidRequest
from cost_engine.eventbridge import parse_event
from cost_engine.models import ExecutionRecord, ExecutionRequest, Recommendation
from cost_engine.service import ExecutionService
from cost_engine.topology import RECOMMENDATION_APPROVED_DETAIL_TYPE


class RecommendationApprovedEvent(EventBridgeModel):
    detail: Recommendation


class MalformedEvent(InvalidRequest):
    """The event is not a Recommendation Approved event the engine can act on."""


def recommendation_approved_schema() -> dict[str, Any]:
    """The JSON Schema of the event's detail (docs/events/), generated from the model that reads it."""
    return Recommendation.model_json_schema()


def idempotency_key(recommendation_id: str) -> str:
    return f"recommendation-approved:{recommendation_id}"


def parse_recommendation_approved(event: Any) -> RecommendationApprovedEvent:
    return parse_event(
        RecommendationApprovedEvent,
        event,
        RECOMMENDATION_APPROVED_DETAIL_TYPE,
        MalformedEvent,
        "a Recommendation Approved event with a valid recommendation",
    )


def handle_recommendation_approved(service: ExecutionService, event: Any) -> tuple[ExecutionRecord, bool]:
    """Register the event's recommendation and execute it once; returns (execution, started now)."""
    parsed = parse_recommendation_approved(event)
    recommendation, _ = service.register_recommendation(parsed.detail)
    # Approved upstream, so the engine is asked to go ahead without a second person; its own
    # approval policy still holds what is high risk or irreversible for a person here.
    request = ExecutionRequest(recommendation_id=recommendation.recommendation_id, auto_approve=True)
    return service.execute_once(request, f"event:{parsed.source}", idempotency_key(recommendation.recommendation_id))
