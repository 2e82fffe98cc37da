"""Reading `Recommendation Approved` events: what is accepted, and what is refused with which reason."""

from __future__ import annotations

from typing import Any

import pytest

from cost_engine.models import RecommendationType
from cost_engine.service import execution_id_for_key
from cost_engine.triggers import MalformedEvent, idempotency_key, parse_recommendation_approved


def event(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "version": "0",
        "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
        "detail-type": "Recommendation Approved",
        "source": "upstream.recommendation-engine",
        "account": "123456789012",
        "time": "2026-11-27T10:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": {
            "recommendation_id": "rec-42",
            "customer_id": "acme",
            "type": "terminate_instance",
            "account_id": "123456789012",
            "region": "us-east-1",
            "resource_id": "i-0123456789abcdef0",
            "estimated_monthly_savings": 70,
        },
    }
    return {**base, **overrides}


def test_an_approved_recommendation_event_is_read_into_the_recommendation() -> None:
    parsed = parse_recommendation_approved(event())
    assert parsed.source == "upstream.recommendation-engine"
    assert parsed.detail.recommendation_id == "rec-42"
    assert parsed.detail.type is RecommendationType.TERMINATE_INSTANCE


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        (
            {"detail-type": "Recommendation Rejected"},
            "detail-type is 'Recommendation Rejected', not 'Recommendation Approved'",
        ),
        ({"detail": {"customer_id": "acme"}}, "detail.type: Field required"),
        ({"detail": "rec-42"}, "detail"),
        ({"source": None}, "source"),
    ],
    ids=["other-detail-type", "incomplete-recommendation", "detail-not-an-object", "no-source"],
)
def test_what_is_not_a_valid_approved_recommendation_is_refused_with_the_reason(
    overrides: dict[str, Any], reason: str
) -> None:
    with pytest.raises(MalformedEvent, match=reason):
        parse_recommendation_approved(event(**overrides))


def test_a_recommendation_gets_one_execution_id_however_often_it_is_announced() -> None:
    key = idempotency_key("rec-42")
    assert execution_id_for_key(key) == execution_id_for_key(idempotency_key("rec-42"))
    assert execution_id_for_key(key) != execution_id_for_key(idempotency_key("rec-43"))
    assert execution_id_for_key(key).startswith("exec-")
    assert len(execution_id_for_key(key)) == len("exec-") + 32
