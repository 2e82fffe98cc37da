"""RecommendationStore against emulated DynamoDB: registering is idempotent, ids are never reused."""

from __future__ import annotations

from datetime import timedelta

import boto3
import pytest

from cost_engine.errors import Conflict, NotFound
from cost_engine.models import Recommendation, RecommendationType
from cost_engine.stores.recommendations import RecommendationStore
from cost_engine.topology import RECOMMENDATIONS_TABLE
from tests.unit.conftest import ACCOUNT_ID, REGION


@pytest.fixture
def store(tables: None) -> RecommendationStore:
    return RecommendationStore(RECOMMENDATIONS_TABLE.local_name, REGION)


@pytest.fixture
def recommendation() -> Recommendation:
    return Recommendation(
        recommendation_id="rec-42",
        customer_id="acme-corp",
        type=RecommendationType.TERMINATE_INSTANCE,
        account_id=ACCOUNT_ID,
        region=REGION,
        resource_id="i-0123456789abcdef0",
        parameters={"acknowledge_instance_store_loss": True, "threshold": 0.25},
        estimated_monthly_savings=70.0,
    )


def test_a_registered_recommendation_reads_back_unchanged(
    store: RecommendationStore, recommendation: Recommendation
) -> None:
    stored, created = store.register(recommendation)

    assert created is True
    assert stored == recommendation
    assert store.get("rec-42") == recommendation


def test_registering_the_same_recommendation_again_is_harmless(
    store: RecommendationStore, recommendation: Recommendation
) -> None:
    # Given a registered recommendation
    store.register(recommendation)

    # When it is sent again (a client retry), a moment later
    resent = recommendation.model_copy(update={"created_at": recommendation.created_at + timedelta(seconds=5)})
    stored, created = store.register(resent)

    # Then nothing new is created and the first registration is what is returned
    assert created is False
    assert stored == recommendation


def test_a_different_recommendation_under_a_registered_id_is_a_conflict(
    store: RecommendationStore, recommendation: Recommendation
) -> None:
    # Given a registered recommendation
    store.register(recommendation)

    # When another resource is sent under the same id
    with pytest.raises(Conflict, match="register it under a new recommendation_id"):
        store.register(recommendation.model_copy(update={"resource_id": "i-0fedcba9876543210"}))

    # Then the registered one is unchanged
    assert store.get("rec-42").resource_id == "i-0123456789abcdef0"


def test_an_unknown_recommendation_is_not_found_with_how_to_register_it(store: RecommendationStore) -> None:
    with pytest.raises(NotFound) as refused:
        store.get("rec-missing")

    assert (
        refused.value.message == "recommendation 'rec-missing' does not exist: register it with POST /recommendations"
    )


def test_a_recommendation_is_read_from_the_table_once(tables: None, recommendation: Recommendation) -> None:
    # Given a recommendation registered elsewhere (the API), and a store that counts its reads
    RecommendationStore(RECOMMENDATIONS_TABLE.local_name, REGION).register(recommendation)
    reads: list[str] = []
    session = boto3.DEFAULT_SESSION
    assert session is not None
    session.events.register("before-call.dynamodb", lambda model, **_: reads.append(model.name))
    store = RecommendationStore(RECOMMENDATIONS_TABLE.local_name, REGION)

    # When every step of an execution reads it
    read = [store.get("rec-42") for _ in range(5)]

    # Then it came from the table once (it never changes once registered), the same each time
    assert reads == ["GetItem"]
    assert read == [recommendation] * 5


def test_what_a_caller_changes_in_its_recommendation_is_not_kept(
    store: RecommendationStore, recommendation: Recommendation
) -> None:
    store.register(recommendation)

    store.get("rec-42").parameters["threshold"] = 0.9
    recommendation.parameters["threshold"] = 0.8

    assert store.get("rec-42").parameters == {"acknowledge_instance_store_loss": True, "threshold": 0.25}
