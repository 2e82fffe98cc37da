"""The REST API: thin routes over cost_engine.service; errors become JSON in one place."""

# No `from __future__ import annotations` here: Powertools reads the route signatures through the
# tracer's wrappers, which only works with evaluated annotations.

import json
import re
from typing import Annotated, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Body, Form, Header, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from cost_engine.access import Caller, Role, api_key_principal
from cost_engine.api_models import (
    API_SECURITY,
    HIDDEN_RECORD_FIELDS,
    SECURITY_SCHEMES,
    ExecutionLogs,
    ExecutionPage,
    ExecutionView,
    error_responses,
    html_responses,
    json_response,
    with_public_approval_pages,
)
from cost_engine.api_views import status_view
from cost_engine.approval_page import PAGE_HEADERS, outcome_page, review_page
from cost_engine.context import EngineContext
from cost_engine.errors import (
    AccessDenied,
    Conflict,
    DeniedByBusinessRules,
    EngineError,
    InvalidParameters,
    InvalidRequest,
    NotFound,
    UnsupportedType,
)
from cost_engine.formats import ImportRequest
from cost_engine.formats import import_recommendation as to_recommendation
from cost_engine.models import (
    ApprovalDecision,
    ExecutionRecord,
    ExecutionRequest,
    ExecutionStatus,
    MeasureRequest,
    Recommendation,
    SavingsMeasurement,
)
from cost_engine.request_body import refusal as body_refusal
from cost_engine.service import ExecutionService, LinkOutcome
from cost_engine.settings import load_settings
from cost_engine.stores.executions import execution_not_found
from cost_engine.stores.recommendations import recommendation_not_found
from cost_engine.tracing import engine_tracer

logger = Logger()
tracer = engine_tracer()
metrics = Metrics()
app = APIGatewayRestResolver(enable_validation=True)
API_TITLE = "Cost Execution Engine API"
# An Idempotency-Key header: printable, short, and safe in a log line.
IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
API_VERSION = "0.1.0"
API_DESCRIPTION = (
    "Register cost-optimization recommendations and carry them out safely: validate, approve, back up, act, "
    "verify, measure, and roll back. Every route but the approval pages needs SigV4-signed requests "
    "(IAM authorization) from a principal the deployment grants roles per customer (viewer reads, operator "
    "registers, executes, cancels and rolls back, approver approves and rejects); another customer's "
    "recommendations and executions answer 404. The approval pages are authorized by the signature in their link."
)
# Checked at cold start; the context, kept for the life of the instance, makes its stores and AWS
# clients on first use.
service = ExecutionService(EngineContext.from_settings(load_settings()))


def _caller() -> Caller:
    """The authenticated caller, with its roles: on AWS the IAM principal API Gateway checked (SigV4),
    locally the name of the API key the local server checked."""
    identity = app.current_event.request_context.identity
    if identity.user_arn:
        principal: str | None = f"iam:{identity.user_arn}"
    else:
        principal = api_key_principal(identity.api_key_id) if identity.api_key_id else None
    return service.ctx.settings.access_policy.caller(principal)


def _execution(execution_id: str, role: Role) -> tuple[Caller, ExecutionRecord]:
    """The execution, if the caller holds `role` for its customer (404 if it holds none there)."""
    caller = _caller()
    record = service.get(execution_id)
    caller.require(role, record.customer_id, hidden=execution_not_found(execution_id))
    return caller, record


def _recommendation(recommendation_id: str, role: Role) -> tuple[Caller, Recommendation]:
    caller = _caller()
    recommendation = service.get_recommendation(recommendation_id)
    caller.require(role, recommendation.customer_id, hidden=recommendation_not_found(recommendation_id))
    return caller, recommendation


def _view(record: ExecutionRecord) -> dict[str, Any]:
    return status_view(record, service.ctx.audit)


def _error(status: int, code: str, message: str, details: list[dict[str, Any]] | None = None) -> Response[Any]:
    body: dict[str, Any] = {"error": code, "message": message}
    if details:
        body["details"] = details
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=body)


# Far below API Gateway's 10 MB: a recommendation is stored as one DynamoDB item (at most 400 KB),
# and no request of this API needs more than a few kilobytes.
MAX_BODY_BYTES = 256 * 1024


def oversized_body(event: dict[str, Any]) -> dict[str, Any] | None:
    """The 413 answer to a body over MAX_BODY_BYTES, checked before routing: the routes' own
    validation would otherwise parse it first and answer 422."""
    body = event.get("body") or ""
    # The size the client sent: a base64 body (binary media) counts as its decoded length.
    size = len(body) * 3 // 4 if event.get("isBase64Encoded") else len(body.encode())
    if size <= MAX_BODY_BYTES:
        return None
    message = (
        f"the request body is {size} bytes; at most {MAX_BODY_BYTES} bytes are accepted "
        "(a recommendation's parameters fit in a few kilobytes)"
    )
    return {
        "statusCode": 413,
        "headers": {"Content-Type": content_types.APPLICATION_JSON},
        "body": json.dumps({"error": "body_too_large", "message": message}),
        "isBase64Encoded": False,
    }


# -- recommendations ------------------------------------------------------------------------------


@app.post(
    "/recommendations",
    responses={
        201: json_response("registered", Recommendation),
        200: json_response("the same recommendation was already registered", Recommendation),
        **error_responses(403, 400, 409, 413, 422),
    },
)
@tracer.capture_method
def register_recommendation(recommendation: Annotated[Recommendation, Body()]) -> Response[Any]:
    _caller().require_for_new(Role.OPERATOR, recommendation.customer_id)
    stored, created = service.register_recommendation(recommendation)
    return Response(
        status_code=201 if created else 200,
        content_type=content_types.APPLICATION_JSON,
        body=stored.model_dump(mode="json"),
    )


@app.post(
    "/recommendations/import",
    responses={
        201: json_response("mapped and registered", Recommendation),
        200: json_response("the same recommendation was already registered", Recommendation),
        **error_responses(403, 400, 409, 413, 422),
    },
)
@tracer.capture_method
def import_recommendation(request: Annotated[ImportRequest, Body()]) -> Response[Any]:
    """Register a Cost Optimization Hub or Compute Optimizer recommendation, mapped to the engine's types."""
    _caller().require_for_new(Role.OPERATOR, request.customer_id)
    stored, created = service.register_recommendation(
        to_recommendation(request.format, request.recommendation, request.customer_id)
    )
    return Response(
        status_code=201 if created else 200,
        content_type=content_types.APPLICATION_JSON,
        body=stored.model_dump(mode="json"),
    )


@app.get(
    "/recommendations/<recommendation_id>",
    responses={200: json_response("the recommendation", Recommendation), **error_responses(403, 404)},
)
@tracer.capture_method
def get_recommendation(recommendation_id: str) -> dict[str, Any]:
    return _recommendation(recommendation_id, Role.VIEWER)[1].model_dump(mode="json")


# -- executions -----------------------------------------------------------------------------------


@app.post(
    "/executions/execute",
    responses={
        202: json_response("started (or scheduled)", ExecutionView),
        200: json_response("a repeat of an accepted request (same Idempotency-Key): that execution", ExecutionView),
        **error_responses(400, 403, 404, 409, 413, 422),
    },
)
@tracer.capture_method
def execute(
    request: Annotated[ExecutionRequest, Body()],
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            pattern=IDEMPOTENCY_KEY.pattern,
            description="Repeat a request safely: the same key and body return the same execution (200)",
        ),
    ] = None,
) -> Response[Any]:
    key = idempotency_key
    caller, _ = _recommendation(request.recommendation_id, Role.OPERATOR)
    record, created = service.execute_once(request, caller.principal, key)
    if created:
        metrics.add_metric(name="ExecutionsStarted", unit=MetricUnit.Count, value=1)
    return Response(
        # 200: a repeat of a request already accepted (same Idempotency-Key): the same execution.
        status_code=202 if created else 200,
        content_type=content_types.APPLICATION_JSON,
        body=_view(record),
        headers={"Location": f"/executions/{record.execution_id}"},
    )


@app.get(
    "/executions",
    responses={200: json_response("a page, newest first", ExecutionPage), **error_responses(403, 400, 422)},
)
@tracer.capture_method
def list_executions(
    customer_id: Annotated[str, Query(min_length=1, max_length=64)],
    status: Annotated[ExecutionStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> dict[str, Any]:
    if not _caller().sees(customer_id):
        # As for a customer without executions: whether another customer exists is not told.
        return {"items": [], "next_cursor": None}
    page = service.list_executions(customer_id, status, limit, cursor)
    return {
        "items": [record.model_dump(mode="json", exclude=set(HIDDEN_RECORD_FIELDS)) for record in page.items],
        "next_cursor": page.next_cursor,
    }


@app.get(
    "/executions/<execution_id>",
    responses={200: json_response("the execution", ExecutionView), **error_responses(403, 404)},
)
@tracer.capture_method
def get_execution(execution_id: str) -> dict[str, Any]:
    return _view(_execution(execution_id, Role.VIEWER)[1])


@app.get(
    "/executions/<execution_id>/logs",
    responses={200: json_response("audit events and step history", ExecutionLogs), **error_responses(403, 404)},
)
@tracer.capture_method
def get_execution_logs(execution_id: str) -> dict[str, Any]:
    _execution(execution_id, Role.VIEWER)
    events = service.logs(execution_id)
    return {
        "execution_id": execution_id,
        "events": [event.model_dump(mode="json") for event in events],
        "history": service.history(execution_id),
    }


@app.post(
    "/executions/<execution_id>/cancel",
    responses={
        200: json_response("cancelled", ExecutionView),
        202: json_response("cancel requested while acting: it rolls back, then ends cancelled", ExecutionView),
        **error_responses(403, 404, 409),
    },
)
@tracer.capture_method
def cancel_execution(execution_id: str) -> Response[Any]:
    caller, _ = _execution(execution_id, Role.OPERATOR)
    record = service.cancel(execution_id, caller.principal)
    # 202 when the cancel is a request to the acting steps (they roll back, then it ends cancelled).
    return Response(
        status_code=200 if record.status == ExecutionStatus.CANCELLED else 202,
        content_type=content_types.APPLICATION_JSON,
        body=_view(record),
    )


@app.post(
    "/executions/<execution_id>/rollback",
    responses={202: json_response("rolling back", ExecutionView), **error_responses(403, 404, 409)},
)
@tracer.capture_method
def rollback_execution(execution_id: str) -> Response[Any]:
    caller, _ = _execution(execution_id, Role.OPERATOR)
    record = service.rollback(execution_id, caller.principal)
    return Response(status_code=202, content_type=content_types.APPLICATION_JSON, body=_view(record))


@app.post(
    "/executions/<execution_id>/measure",
    responses={
        200: json_response("the measurement, also kept on the execution", SavingsMeasurement),
        **error_responses(403, 400, 404, 409, 413, 422),
    },
)
@tracer.capture_method
def measure_execution(execution_id: str, request: Annotated[MeasureRequest, Body()]) -> dict[str, Any]:
    caller, _ = _execution(execution_id, Role.OPERATOR)
    measurement = service.measure_savings(execution_id, caller.principal, request.window_days)
    return measurement.model_dump(mode="json")


@app.post(
    "/executions/<execution_id>/approve",
    responses={200: json_response("approved", ExecutionView), **error_responses(403, 400, 404, 409, 413, 422)},
)
@tracer.capture_method
def approve_execution(execution_id: str, decision: Annotated[ApprovalDecision, Body()]) -> dict[str, Any]:
    caller, record = _execution(execution_id, Role.APPROVER)
    caller.check_four_eyes(record, service.ctx.settings.approval_policy)
    return _view(service.decide(execution_id, decision, approve=True, actor=caller.principal, record=record))


@app.post(
    "/executions/<execution_id>/reject",
    responses={200: json_response("rejected", ExecutionView), **error_responses(403, 400, 404, 409, 413, 422)},
)
@tracer.capture_method
def reject_execution(execution_id: str, decision: Annotated[ApprovalDecision, Body()]) -> dict[str, Any]:
    caller, record = _execution(execution_id, Role.APPROVER)
    return _view(service.decide(execution_id, decision, approve=False, actor=caller.principal, record=record))


# -- the contract --------------------------------------------------------------------------------


def openapi_document() -> str:
    """The OpenAPI document of these routes, generated from their signatures and pydantic models."""
    return with_public_approval_pages(
        app.get_openapi_json_schema(
            title=API_TITLE,
            version=API_VERSION,
            description=API_DESCRIPTION,
            security_schemes=SECURITY_SCHEMES,
            security=API_SECURITY,
        )
    )


@app.get("/openapi.json", include_in_schema=False)
@tracer.capture_method
def get_openapi() -> Response[Any]:
    return Response(status_code=200, content_type=content_types.APPLICATION_JSON, body=openapi_document())


# -- the approval page: public routes, where the link's signature stands in for IAM ----------------


# What an approval link can lead to besides the page itself; each is a page that changes nothing.
LINK_PAGES = {
    403: "the link was altered or cut (its signature does not match)",
    404: "no approval has this id (or a newer request replaced it)",
    409: "already decided: the page says by whom",
    410: "the link expired with the approval's deadline",
}


def _html(status: int, page: str) -> Response[Any]:
    return Response(status_code=status, content_type="text/html; charset=utf-8", body=page, headers=PAGE_HEADERS)


def _outcome(outcome: LinkOutcome) -> Response[Any]:
    return _html(outcome.status_code, outcome_page(outcome.title, outcome.message, outcome.record))


@app.get(
    "/approvals/<approval_id>",
    responses={
        **html_responses({**LINK_PAGES, 200: "the review page (reading changes nothing)"}),
        **error_responses(),
    },
)
@tracer.capture_method
def approval_page(
    approval_id: str,
    expires: Annotated[str | None, Query(description="the link's expiry, as the link gives it")] = None,
    signature: Annotated[str | None, Query(description="the link's signature, as the link gives it")] = None,
) -> Response[Any]:
    # Mail scanners and link previews open every link: this route only reads.
    outcome = service.open_link(approval_id, expires, signature)
    if not outcome.decidable or outcome.record is None:
        return _outcome(outcome)
    return _html(200, review_page(outcome.record, approval_id, expires or "", signature or ""))


@app.post(
    "/approvals/<approval_id>",
    responses={
        **html_responses({**LINK_PAGES, 200: "decided", 400: "the form lacks a decision or a name"}),
        **error_responses(413),
    },
)
@tracer.capture_method
def approval_decision(
    approval_id: str,
    decision: Annotated[str | None, Form(description="approve or reject (the button used)")] = None,
    approver: Annotated[str | None, Form(description="the approver's name or email, up to 128 characters")] = None,
    comment: Annotated[str | None, Form(description="an optional comment, up to 1024 characters")] = None,
    expires: Annotated[str | None, Form(description="the link's expiry, as the page carries it")] = None,
    signature: Annotated[str | None, Form(description="the link's signature, as the page carries it")] = None,
    plan_hash: Annotated[
        str | None, Form(description="the hash of the plan the page showed: a plan that moved since is not decided")
    ] = None,
) -> Response[Any]:
    event = app.current_event
    if decision not in ("approve", "reject"):
        return _html(400, outcome_page("Nothing was decided", "Use the Approve or Reject button on the page."))
    try:
        decided = ApprovalDecision(approver=approver or "", comment=comment or "", plan_hash=plan_hash or None)
    except ValidationError:
        return _html(
            400,
            outcome_page(
                "Nothing was decided",
                "Give your name or email (up to 128 characters) and a comment of at most 1024 characters, "
                "then use the button again.",
            ),
        )
    identity = event.request_context.identity
    source = f"link:{identity.source_ip or 'unknown'} {(event.headers.get('user-agent') or '')[:120]}".strip()
    outcome = service.decide_by_link(
        approval_id,
        expires,
        signature,
        decided,
        approve=decision == "approve",
        source=source,
    )
    metrics.add_metric(name="ApprovalLinkDecisions", unit=MetricUnit.Count, value=1)
    return _outcome(outcome)


# -- errors: the one place where exceptions become HTTP responses -----------------------------------


@app.exception_handler(RequestValidationError)  # type: ignore[untyped-decorator]
def handle_validation_error(error: RequestValidationError) -> Response[Any]:
    problems = error.errors()
    if any(p.get("type") == "json_invalid" for p in problems):
        return _error(400, "invalid_json", "the request body is not valid JSON")
    details = [
        {"field": ".".join(str(part) for part in p.get("loc", ())[1:]) or "body", "problem": str(p.get("msg", ""))}
        for p in problems
    ]
    message = "; ".join(f"{d['field']}: {d['problem']}" for d in details)
    return _error(422, "invalid_request", f"the request is not valid: {message}", details)


@app.exception_handler(EngineError)  # type: ignore[untyped-decorator]
def handle_engine_error(error: EngineError) -> Response[Any]:
    if isinstance(error, NotFound):
        return _error(404, error.code.value, error.message)
    if isinstance(error, Conflict):
        return _error(409, error.code.value, error.message)
    if isinstance(error, DeniedByBusinessRules | AccessDenied):
        return _error(403, error.code.value, error.message)
    if isinstance(error, UnsupportedType | InvalidParameters):
        return _error(422, error.code.value, error.message)
    if isinstance(error, InvalidRequest):
        return _error(400, error.code.value, error.message)
    logger.exception("engine error")
    return _error(500, error.code.value, error.message)


@app.not_found
def handle_unknown_route(error: NotFoundError) -> Response[Any]:
    return _error(404, "not_found", f"no such endpoint: {app.current_event.http_method} {app.current_event.path}")


@app.exception_handler(Exception)  # type: ignore[untyped-decorator]
def handle_unexpected(error: Exception) -> Response[Any]:
    logger.exception("unexpected error")
    return _error(500, "internal_error", "the engine failed unexpectedly; the error is in its logs")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    metrics.add_metric(name="ApiRequests", unit=MetricUnit.Count, value=1)
    return oversized_body(event) or body_refusal(event) or app.resolve(event, context)
