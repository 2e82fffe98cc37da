"""The request models refuse what the engine must never act on, with messages that say why."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from cost_engine.models import (
    ApprovalDecision,
    ExecutionRequest,
    Recommendation,
    RecommendationType,
    SafeId,
)

# "0123456789" in Arabic-Indic digits: digits to Unicode, not to AWS.
ARABIC_INDIC_DIGITS = str.maketrans("0123456789", "".join(chr(0x0660 + d) for d in range(10)))
SAFE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # ASCII only, whole string (fullmatch)


def recommendation_fields(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "customer_id": "acme-corp",
        "type": "terminate_instance",
        "account_id": "123456789012",
        "region": "us-east-1",
        "resource_id": "i-0123456789abcdef0",
        "estimated_monthly_savings": 70.08,
    }
    return {**fields, **overrides}


def error_locations(error: ValidationError) -> set[str]:
    return {".".join(str(part) for part in e["loc"]) for e in error.errors()}


# -- Recommendation -------------------------------------------------------------------------------


def test_a_well_formed_recommendation_is_accepted_as_given() -> None:
    # Given the fields of a recommendation from the recommendation engine
    fields = recommendation_fields(recommendation_id="rec-42", parameters={"acknowledge_instance_store_loss": True})

    # When it is parsed
    recommendation = Recommendation.model_validate(fields)

    # Then every field is kept
    assert recommendation.recommendation_id == "rec-42"
    assert recommendation.type is RecommendationType.TERMINATE_INSTANCE
    assert recommendation.parameters == {"acknowledge_instance_store_loss": True}
    assert recommendation.estimated_monthly_savings == 70.08


def test_a_recommendation_without_an_id_gets_a_new_unique_one() -> None:
    # Given two recommendations sent without a recommendation_id
    first = Recommendation.model_validate(recommendation_fields())
    second = Recommendation.model_validate(recommendation_fields())

    # Then each gets its own id, itself a safe id
    assert first.recommendation_id != second.recommendation_id
    for recommendation in (first, second):
        assert re.fullmatch(r"rec-[0-9a-f]{32}", recommendation.recommendation_id)


def test_an_unknown_field_is_refused_rather_than_ignored() -> None:
    # Given a recommendation with a misspelt field
    fields = recommendation_fields(estimated_monthly_saving=10.0)

    # Then it is refused, naming the field
    with pytest.raises(ValidationError) as refused:
        Recommendation.model_validate(fields)
    assert "estimated_monthly_saving" in error_locations(refused.value)


def test_an_unknown_recommendation_type_is_refused() -> None:
    with pytest.raises(ValidationError) as refused:
        Recommendation.model_validate(recommendation_fields(type="delete_everything"))

    assert error_locations(refused.value) == {"type"}


@pytest.mark.parametrize(
    "account_id",
    ["12345678901", "1234567890123", "12345678901a", "", "123456789012\n", " 123456789012"],
)
def test_a_malformed_account_id_is_refused(account_id: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Recommendation.model_validate(recommendation_fields(account_id=account_id))

    assert error_locations(refused.value) == {"account_id"}


@pytest.mark.parametrize("region", ["US-EAST-1", "us-east", "useast1", "us-east-1 ", "us-east-1; rm -rf", ""])
def test_a_malformed_region_is_refused(region: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Recommendation.model_validate(recommendation_fields(region=region))

    assert error_locations(refused.value) == {"region"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("account_id", "123456789012".translate(ARABIC_INDIC_DIGITS)),
        ("region", "us-east-1".translate(ARABIC_INDIC_DIGITS)),
    ],
)
def test_account_ids_and_regions_in_non_ascii_digits_are_refused(field: str, value: str) -> None:
    with pytest.raises(ValidationError):
        Recommendation.model_validate(recommendation_fields(**{field: value}))


@pytest.mark.parametrize(
    "unsafe_id",
    [
        "rec\n42",  # control character: log injection
        "rec\x00",
        "rec 42",  # space
        "../etc/passwd",  # path traversal
        "rec/../42",
        "rec'42",  # quotes
        'rec"42',
        "-rec",  # must start with a letter or digit
        "",
        "r" * 65,  # over-long
    ],
)
@pytest.mark.parametrize("field", ["recommendation_id", "customer_id"])
def test_an_unsafe_id_is_refused(field: str, unsafe_id: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Recommendation.model_validate(recommendation_fields(**{field: unsafe_id}))

    assert error_locations(refused.value) == {field}


@pytest.mark.parametrize("resource_id", ["i-0abc def", "i-0abc\n", "i-0abc'", "", "*i-0abc", "-i-0abc"])
def test_an_unsafe_resource_id_is_refused(resource_id: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Recommendation.model_validate(recommendation_fields(resource_id=resource_id))

    assert error_locations(refused.value) == {"resource_id"}


def test_negative_savings_are_refused() -> None:
    with pytest.raises(ValidationError) as refused:
        Recommendation.model_validate(recommendation_fields(estimated_monthly_savings=-0.01))

    assert error_locations(refused.value) == {"estimated_monthly_savings"}


def test_infinite_savings_from_a_json_body_are_refused() -> None:
    # Given a JSON body whose savings overflow a float
    body = json.dumps(recommendation_fields(estimated_monthly_savings=0))
    body = body.replace('"estimated_monthly_savings": 0', '"estimated_monthly_savings": 1e400')

    # Then it is refused like any other invalid savings
    with pytest.raises(ValidationError):
        Recommendation.model_validate_json(body)


# -- SafeId (property) ------------------------------------------------------------------------------

safe_id_candidates = st.one_of(
    st.text(max_size=80),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,70}", fullmatch=True),
    st.text(alphabet="aZ9._-/ '\"\n\x00\u00e9\u0661", max_size=70),  # near misses: unsafe and non-ASCII
)


@given(candidate=safe_id_candidates)
def test_a_string_is_a_safe_id_exactly_when_it_is_short_and_of_the_safe_alphabet(candidate: str) -> None:
    try:
        TypeAdapter(SafeId).validate_python(candidate)
        accepted = True
    except ValidationError:
        accepted = False

    assert accepted == (SAFE_ID_PATTERN.fullmatch(candidate) is not None and len(candidate) <= 64)


# -- ExecutionRequest and ApprovalDecision ----------------------------------------------------------


def test_a_scheduled_time_without_a_time_zone_is_refused_with_a_hint() -> None:
    # Given a scheduled time with no zone: 22:00 where?
    with pytest.raises(ValidationError) as refused:
        ExecutionRequest.model_validate({"recommendation_id": "rec-42", "scheduled_time": "2026-12-01T22:00:00"})

    # Then the message says what is missing and shows a correct value
    message = str(refused.value)
    assert "scheduled_time needs a time zone" in message
    assert "2026-12-01T22:00:00Z" in message


def test_a_scheduled_time_with_a_time_zone_is_accepted() -> None:
    request = ExecutionRequest.model_validate({"recommendation_id": "rec-42", "scheduled_time": "2026-12-01T22:00:00Z"})

    assert request.scheduled_time == datetime(2026, 12, 1, 22, tzinfo=UTC)


@pytest.mark.parametrize("approver", ["", "   "])
def test_an_approval_without_an_approver_is_refused(approver: str) -> None:
    with pytest.raises(ValidationError) as refused:
        ApprovalDecision.model_validate({"approver": approver})

    assert error_locations(refused.value) == {"approver"}


def test_an_approver_name_is_kept_without_surrounding_spaces() -> None:
    decision = ApprovalDecision.model_validate({"approver": "  alice@example.com ", "comment": "ok"})

    assert decision.approver == "alice@example.com"
