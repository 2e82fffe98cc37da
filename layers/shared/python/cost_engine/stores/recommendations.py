"""Registered recommendations: what executions are started from."""

from __future__ import annotations

from botocore.exceptions import ClientError

from cost_engine.errors import Conflict, NotFound
from cost_engine.models import Recommendation
from cost_engine.stores.dynamo import from_item, is_conditional_failure, table, to_item

_COMPARED = {"created_at"}
# How many recommendations a store keeps once read (see RecommendationStore._known).
RECOMMENDATIONS_KEPT = 256


def recommendation_not_found(recommendation_id: str) -> NotFound:
    """The answer for an unknown recommendation, and for one the caller may not see (cost_engine.access)."""
    return NotFound(f"recommendation '{recommendation_id}' does not exist: register it with POST /recommendations")


class RecommendationStore:
    def __init__(self, table_name: str, region: str) -> None:
        self._table = table(table_name, region)
        # A recommendation never changes once registered (a different one under its id is refused), and
        # every step of an execution reads its own: each is read from the table once. The oldest go first.
        self._known: dict[str, Recommendation] = {}

    def register(self, recommendation: Recommendation) -> tuple[Recommendation, bool]:
        """Store a new recommendation. Registering the same one again is harmless; a different
        recommendation under an existing id is refused. Returns (stored, created)."""
        try:
            self._table.put_item(
                Item=to_item(recommendation), ConditionExpression="attribute_not_exists(recommendation_id)"
            )
            self._keep(recommendation)
            return recommendation, True
        except ClientError as error:
            if not is_conditional_failure(error):
                raise
        existing = self.get(recommendation.recommendation_id)
        if existing.model_dump(exclude=_COMPARED) != recommendation.model_dump(exclude=_COMPARED):
            raise Conflict(
                f"recommendation '{recommendation.recommendation_id}' is already registered with different "
                "content: register it under a new recommendation_id"
            )
        return existing, False

    def get(self, recommendation_id: str) -> Recommendation:
        known = self._known.get(recommendation_id)
        if known is None:
            item = self._table.get_item(Key={"recommendation_id": recommendation_id}, ConsistentRead=True).get("Item")
            if item is None:
                raise recommendation_not_found(recommendation_id)
            known = self._keep(Recommendation.model_validate(from_item(item)))
        # A copy: what a caller changes in its own is not kept.
        return known.model_copy(deep=True)

    def _keep(self, recommendation: Recommendation) -> Recommendation:
        kept = recommendation.model_copy(deep=True)
        self._known[kept.recommendation_id] = kept
        if len(self._known) > RECOMMENDATIONS_KEPT:
            del self._known[next(iter(self._known))]
        return kept
