"""The API's response bodies as models, for its OpenAPI document.

The handler builds its answers from the records (`cost_engine.api_views.status_view` and the like); these
models describe the same shapes, field for field, and the integration tests validate live answers
against them with extra fields forbidden, so the document cannot drift from what the API returns.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from aws_lambda_powertools.event_handler.openapi.models import APIKey, APIKeyIn, SecurityScheme
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from pydantic import BaseModel, ConfigDict, Field, create_model

from cost_engine.models import (
    ApprovalState,
    AuditEvent,
    ExecutionRecord,
    ExecutionResult,
    Recommendation,
    RollbackResult,
)
from cost_engine.topology import APPROVAL_PAGE_PATH

# Who may call: either scheme, as the API is served. The approval pages need neither (see below).
SECURITY_SCHEMES: dict[str, SecurityScheme] = {
    "localApiKey": APIKey.model_validate(
        {
            "in": APIKeyIn.header,
            "name": "x-api-key",
            "description": "the local runtime (`make serve`): the key it was started with (API_KEY, local-dev-key)",
        }
    ),
    "sigv4": APIKey.model_validate(
        {
            "in": APIKeyIn.header,
            "name": "Authorization",
            "description": "on AWS: IAM authorization, requests signed with AWS Signature Version 4",
            "openapi_extensions": {"x-amazon-apigateway-authtype": "awsSigv4"},
        }
    ),
}
API_SECURITY: list[dict[str, list[str]]] = [{"localApiKey": []}, {"sigv4": []}]


def with_public_approval_pages(document: str) -> str:
    """The document with the approval pages' operations open to anyone: the signature in their
    link stands in for credentials (OpenAPI says so with an empty `security`)."""
    parsed = json.loads(document)
    for path, operations in parsed.get("paths", {}).items():
        if path.startswith(APPROVAL_PAGE_PATH + "/"):
            for operation in operations.values():
                operation["security"] = []
    return json.dumps(parsed)


# Record fields the API never shows: internal bookkeeping of the steps and of idempotent requests.
HIDDEN_RECORD_FIELDS = frozenset({"poll_attempts", "request_fingerprint"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(_Strict):
    """Every error: a stable code, what to fix, and per-field problems for a request that fails validation."""

    error: str
    message: str
    details: list[dict[str, Any]] | None = None


# The newest steps a status read shows: enough for a whole execution's steps as a rule, and a bound on
# what each poll of a status reads however long the log grows (GET /executions/{id}/logs has them all).
STATUS_STEPS = 50


class StepView(_Strict):
    event: str
    at: datetime
    actor: str
    key: str = Field(description="the event's key in the log: unique, and in the order the events happened")


# An execution as listed: the record without its bookkeeping fields.
ExecutionSummary: type[BaseModel] = create_model(
    "ExecutionSummary",
    __base__=_Strict,
    **{  # type: ignore[call-overload]
        name: (field.annotation, field)
        for name, field in ExecutionRecord.model_fields.items()
        if name not in HIDDEN_RECORD_FIELDS
    },
)


class ExecutionView(ExecutionSummary):
    """An execution with how far it got, its pending approval, its outcome and its steps."""

    progress_percent: int
    pending_approval: ApprovalState | None
    result: ExecutionResult | None
    rollback_result: RollbackResult | None
    steps: list[StepView] = Field(description=f"the newest steps, oldest first (at most {STATUS_STEPS})")
    earlier_steps: bool = Field(description="whether the execution has earlier steps than these (see its logs)")


class ExecutionPage(_Strict):
    items: list[ExecutionSummary]
    next_cursor: str | None


class ExecutionLogs(_Strict):
    execution_id: str
    events: list[AuditEvent]
    # The state machine runs step by step: {run, at, event, state | result | error, cause}.
    history: list[dict[str, Any]]


def json_response(description: str, model: type[BaseModel]) -> OpenAPIResponse:
    return {"description": description, "content": {"application/json": {"model": model}}}


def error_responses(*codes: int) -> dict[int, OpenAPIResponse]:
    """The errors a route may answer with; 422 always (every route validates its parameters), and
    415 with 413: a route that reads a body reads JSON only."""
    meaning = {
        400: "malformed JSON (also: a key twice in one object, nesting deeper than 20 levels), a bad header "
        "or cursor, or a value out of range (the message says what to fix)",
        403: "the caller lacks the role this needs for the customer (the message names it), requested the "
        "execution it would approve (four eyes), or the customer's business rules do not allow this change "
        "(the message names the rule)",
        404: "no such recommendation or execution",
        409: "the execution's state does not allow this now (the message says why and what to do instead)",
        413: "the body is larger than the API accepts (the message gives the limit)",
        415: "the body is not JSON (send it with Content-Type: application/json)",
        422: "the body or a parameter fails validation, e.g. a value out of range (the message names each field)",
    }
    media = {415} if 413 in codes else set()
    return {code: json_response(meaning[code], ErrorBody) for code in sorted({*codes, *media, 422})}


def html_responses(meanings: dict[int, str]) -> dict[int, OpenAPIResponse]:
    """The approval pages: HTML for people, whatever the outcome."""
    return {
        code: {"description": meaning, "content": {"text/html": {"schema": {"type": "string"}}}}
        for code, meaning in meanings.items()
    }


__all__ = [
    "ErrorBody",
    "ExecutionLogs",
    "ExecutionPage",
    "ExecutionSummary",
    "ExecutionView",
    "Recommendation",
    "StepView",
    "error_responses",
    "html_responses",
    "json_response",
]
