"""Registered recommendations: what executions are started from."""

from __future__ import annotations

from botocore.exceptions import ClientError

from cost_engine.errors import Conflict, NotFound
from cost_engine.models import Recommendation
from cost_engine.stores.dynamo import from_item, table, to_item

_COMPARED = {"created_at"}


def recommendation_not_found(recommendation_id: str) -> NotFound:
    """The answer for an unknown recommendation, and for one the caller may not see (cost_engine.access)."""
    return NotFound(f"recommendation '{recommendation_id}' does not exist: register it with POST /recommendations")


class RecommendationStore:
    def __init__(self, table_name: str, region: str) -> None:
        self._table = table(table_name, region)

    def register(self, recommendation: Recommendation) -> tuple[Recommendation, bool]:
        """Store a new recommendation. Registering the same one again is harmless; a different
        recommendation under an existing id is refused. Returns (stored, created)."""
        try:
            self._table.put_item(
                Item=to_item(recommendation), ConditionExpression="attribute_not_exists(recommendation_id)"
            )
            return recommendation, True
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
        existing = self.get(recommendation.recommendation_id)
        if existing.model_dump(exclude=_COMPARED) != recommendation.model_dump(exclude=_COMPARED):
            raise Conflict(
                f"recommendation '{recommendation.recommendation_id}' is already registered with different "
                "content: register it under a new recommendation_id"
            )
        return existing, False

    def get(self, recommendation_id: str) -> Recommendation:
        item = self._table.get_item(Key={"recommendation_id": recommendation_id}, ConsistentRead=True).get("Item")
        if item is None:
            raise recommendation_not_found(recommendation_id)
        return Recommendation.model_validate(from_item(item))
