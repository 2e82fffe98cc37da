"""Conversions between the models and DynamoDB items, and the opaque pagination cursor."""

from __future__ import annotations

import base64
import binascii
import json
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import boto3
from boto3.dynamodb.types import TypeDeserializer
from botocore.config import Config
from botocore.exceptions import ClientError
from pydantic_core import to_jsonable_python

from cost_engine.errors import InvalidRequest, TransientError

# One SDK retry absorbs a blip, as for the engine's other clients (cost_engine.aws): the state
# machines' retries, Lambda's and the sweeper's own rounds outlast an outage, while the SDK's default of
# ten attempts for DynamoDB would hold every call of a step for about 25 seconds before it failed.
_CONFIG = Config(retries={"total_max_attempts": 2, "mode": "standard"})


def table(name: str, region: str) -> Any:
    return boto3.resource("dynamodb", region_name=region, config=_CONFIG).Table(name)


def is_conditional_failure(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def item_at_failure(error: ClientError) -> dict[str, Any] | None:
    """The item as it was when a write asked for ReturnValuesOnConditionCheckFailure=ALL_OLD failed
    its condition, None if there was none: what the writer learns without reading it again. The error
    carries it in DynamoDB's wire form, which the resource layer only converts in answers."""
    answer: dict[str, Any] = dict(error.response)
    raw = answer.get("Item")
    if not raw:
        return None
    deserializer = TypeDeserializer()
    return {name: deserializer.deserialize(value) for name, value in raw.items()}


# BatchGetItem's limit: a page of a listing (at most 100 items) is read in one request.
BATCH_GET_MAX_KEYS = 100
# Keys DynamoDB leaves unprocessed (throttled) are asked for again this many times, after a pause
# that doubles each time from the first; then the read fails as one worth retrying.
BATCH_GET_ATTEMPTS = 4
BATCH_GET_FIRST_PAUSE_SECONDS = 0.05


def batch_get(table_resource: Any, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The items of `keys` that exist, in the order of `keys`, read by BatchGetItem (eventually
    consistent, as the index that named them)."""
    key_names = sorted(keys[0]) if keys else []

    def identity(item: dict[str, Any]) -> tuple[str, ...]:
        return tuple(str(item[name]) for name in key_names)

    found: dict[tuple[str, ...], dict[str, Any]] = {}
    for start in range(0, len(keys), BATCH_GET_MAX_KEYS):
        request: dict[str, Any] = {table_resource.name: {"Keys": keys[start : start + BATCH_GET_MAX_KEYS]}}
        for attempt in range(BATCH_GET_ATTEMPTS):
            if attempt:
                time.sleep(BATCH_GET_FIRST_PAUSE_SECONDS * 2 ** (attempt - 1))
            answer = table_resource.meta.client.batch_get_item(RequestItems=request)
            for item in answer.get("Responses", {}).get(table_resource.name, []):
                found[identity(item)] = item
            request = answer.get("UnprocessedKeys") or {}
            if not request:
                break
        else:
            raise TransientError(f"DynamoDB left {table_resource.name} items unread (throttled): try again")
    return [found[identity(key)] for key in keys if identity(key) in found]


def sortable_time(value: datetime) -> str:
    """A fixed-width UTC timestamp, so that string order is time order in sort keys."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def to_item(value: Any) -> Any:
    """Models, datetimes and enums to JSON values, and floats to Decimal as DynamoDB needs."""
    return json.loads(json.dumps(to_jsonable_python(value)), parse_float=Decimal)


def from_item(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: from_item(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_item(v) for v in value]
    return value


def encode_cursor(last_evaluated_key: dict[str, Any] | None) -> str | None:
    if not last_evaluated_key:
        return None
    raw = json.dumps(from_item(last_evaluated_key), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, key_names: frozenset[str]) -> dict[str, Any] | None:
    """The start key a cursor stands for; refused unless it holds exactly the listing's `key_names`."""
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidRequest("cursor is not one this API returned: pass next_cursor from the previous page") from None
    if not isinstance(value, dict) or set(value) != key_names or not all(isinstance(v, str) for v in value.values()):
        raise InvalidRequest("cursor is not one this API returned: pass next_cursor from the previous page")
    return value
