"""Conversions between the models and DynamoDB items, and the opaque pagination cursor."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import boto3
from botocore.config import Config
from pydantic_core import to_jsonable_python

from cost_engine.errors import InvalidRequest

# One SDK retry absorbs a blip, as for the engine's other clients (cost_engine.aws): the state
# machines' retries, Lambda's and the sweeper's own rounds outlast an outage, while the SDK's default of
# ten attempts for DynamoDB would hold every call of a step for about 25 seconds before it failed.
_CONFIG = Config(retries={"total_max_attempts": 2, "mode": "standard"})


def table(name: str, region: str) -> Any:
    return boto3.resource("dynamodb", region_name=region, config=_CONFIG).Table(name)


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
