"""What a JSON request body must be before any route reads it.

Python's `json` module and pydantic's lax mode accept more than this API means: the last of two
equal keys silently wins, nesting is limited only by the interpreter's recursion, and numbers go
beyond what DynamoDB stores (which failed only at the write, as a 500). The API function checks
every body here first and refuses, with a JSON 4xx that says what to fix, what it cannot take.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from cost_engine.topology import APPROVAL_PAGE_PATH

# No request of this API nests deeper than a few levels; DynamoDB stores at most 32 in one item,
# and a recommendation's parameters sit inside its record.
MAX_DEPTH = 20
# DynamoDB's number type: 0, or a magnitude from 1e-130 to below 1e126, with 38 significant digits.
MIN_EXPONENT, MAX_EXPONENT, MAX_DIGITS = -130, 125, 38
NUMBER_RANGE = "0, or a magnitude from 1e-130 to below 1e126 with at most 38 significant digits"
JSON_MEDIA_TYPE = "application/json"
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"


class RefusedBody(Exception):
    """Why a body cannot be taken, as the status, the error code and what to fix."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def response(self) -> dict[str, Any]:
        """The API Gateway proxy response that refuses the request."""
        return {
            "statusCode": self.status,
            "headers": {"Content-Type": JSON_MEDIA_TYPE},
            "body": json.dumps({"error": self.code, "message": self.message}),
            "isBase64Encoded": False,
        }


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise _DuplicateKey(key)
        found[key] = value
    return found


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(text: str) -> Any:
    """The body as JSON, or RefusedBody raised as the reason it cannot be taken.

    Numbers with a fraction or an exponent are read as Decimal, exactly as written, so that the
    range check sees 1e400 or 1e-131 rather than a float that overflowed or underflowed."""
    try:
        return json.loads(text, object_pairs_hook=_unique_keys, parse_float=Decimal, parse_constant=_no_constants)
    except _DuplicateKey as duplicate:
        raise RefusedBody(
            400, "duplicate_key", f"the key {duplicate.key!r} appears twice in one object: send it once"
        ) from None
    except RecursionError:
        raise RefusedBody(400, "too_deep", f"the JSON body nests deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as error:
        where = f"line {error.lineno} column {error.colno}"
        raise RefusedBody(400, "invalid_json", f"the request body is not valid JSON ({where}: {error.msg})") from None
    except ValueError as error:  # NaN/Infinity, or an integer too long for Python to read
        raise RefusedBody(400, "invalid_json", f"the request body is not valid JSON ({error})") from None


def _number_fits(number: int | Decimal) -> bool:
    if isinstance(number, int):
        return len(str(abs(number))) <= MAX_DIGITS
    return number == 0 or MIN_EXPONENT <= number.adjusted() <= MAX_EXPONENT


def check_values(document: Any) -> None:
    """Refuses nesting deeper than MAX_DEPTH and numbers DynamoDB cannot store, naming where."""
    pending: list[tuple[Any, str, int]] = [(document, "", 0)]
    while pending:
        value, path, depth = pending.pop()
        if isinstance(value, dict | list):
            if depth >= MAX_DEPTH:
                raise RefusedBody(400, "too_deep", f"the JSON body nests deeper than {MAX_DEPTH} levels")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            pending.extend((child, f"{path}.{key}" if path else str(key), depth + 1) for key, child in items)
        elif isinstance(value, int | Decimal) and not isinstance(value, bool) and not _number_fits(value):
            raise RefusedBody(
                422,
                "number_out_of_range",
                f"{path or 'body'}: {value} is out of range; numbers must be {NUMBER_RANGE}",
            )


def _header(headers: Mapping[str, str] | None, name: str) -> str:
    return next((value for key, value in (headers or {}).items() if key.lower() == name), "")


def refusal(event: Mapping[str, Any]) -> dict[str, Any] | None:
    """The proxy response refusing the event's body, or None when the routes may read it.

    Bodies are JSON (a missing Content-Type is taken as JSON), but for the approval page's form:
    a browser's URL-encoded POST."""
    body = event.get("body")
    if not body:
        return None
    form = str(event.get("path", "")).startswith(APPROVAL_PAGE_PATH + "/")
    media_type = _header(event.get("headers"), "content-type").split(";")[0].strip().lower()
    accepted = (FORM_MEDIA_TYPE,) if form else ("", JSON_MEDIA_TYPE)
    try:
        if media_type not in accepted:
            raise RefusedBody(
                415,
                "unsupported_media_type",
                f"the body is {media_type or 'of no declared type'}; send it with Content-Type: {accepted[-1]}",
            )
        if form:
            return None
        if event.get("isBase64Encoded"):
            try:
                body = base64.b64decode(body, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise RefusedBody(400, "invalid_body", "the request body is not UTF-8 text") from None
        check_values(parse_json(body))
    except RefusedBody as refused:
        return refused.response()
    return None
