"""request_body.refusal: what the API function refuses before any route reads a body, at the edges."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from cost_engine.request_body import MAX_DEPTH, refusal


def event(
    body: str | None, content_type: str | None = "application/json", path: str = "/recommendations"
) -> dict[str, Any]:
    headers = {"Content-Type": content_type} if content_type is not None else {}
    return {"path": path, "httpMethod": "POST", "headers": headers, "body": body, "isBase64Encoded": False}


def refused(answer: dict[str, Any] | None) -> tuple[int, str]:
    assert answer is not None
    return int(answer["statusCode"]), str(json.loads(answer["body"])["error"])


def nested(levels: int) -> str:
    return '{"a": ' * (levels - 1) + "{}" + "}" * (levels - 1)


@pytest.mark.parametrize(
    "number",
    ["0", "0.0", "-0", "1e-130", "-1e-130", "9.9999999999999999999999999999999999999e125", "1" * 38, "-" + "9" * 38],
)
def test_numbers_dynamodb_stores_pass(number: str) -> None:
    assert refusal(event(f'{{"n": {number}}}')) is None


@pytest.mark.parametrize("number", ["1e-131", "1e126", "-1e126", "1e400", "1" * 39, "1" + "0" * 40])
def test_numbers_dynamodb_cannot_store_are_422(number: str) -> None:
    assert refused(refusal(event(f'{{"parameters": [{number}]}}'))) == (422, "number_out_of_range")


def test_nesting_up_to_the_limit_passes_and_one_level_more_is_400() -> None:
    assert refusal(event(nested(MAX_DEPTH))) is None
    assert refused(refusal(event(nested(MAX_DEPTH + 1)))) == (400, "too_deep")


def test_a_key_twice_in_a_nested_object_is_400_naming_it() -> None:
    answer = refusal(event('{"parameters": {"days": 1, "days": 2}}'))

    assert refused(answer) == (400, "duplicate_key")
    assert answer is not None
    assert "'days'" in json.loads(answer["body"])["message"]


@pytest.mark.parametrize("content_type", [None, "application/json", "Application/JSON; charset=utf-8"])
def test_json_with_or_without_its_content_type_passes(content_type: str | None) -> None:
    assert refusal(event("{}", content_type)) is None


def test_the_approval_form_takes_only_a_url_encoded_form() -> None:
    path = "/approvals/abc"

    assert refusal(event("decision=approve", "application/x-www-form-urlencoded", path)) is None
    assert refused(refusal(event('{"decision": "approve"}', "application/json", path))) == (
        415,
        "unsupported_media_type",
    )


def test_no_body_is_not_checked() -> None:
    assert refusal(event(None, "text/plain")) is None
    assert refusal(event("", "text/plain")) is None


def test_a_base64_body_is_checked_as_the_json_it_encodes() -> None:
    encoded = {**event(base64.b64encode(b'{"a": 1, "a": 2}').decode()), "isBase64Encoded": True}

    assert refused(refusal(encoded)) == (400, "duplicate_key")
