"""The engine's errors. Each carries a stable code; the API maps them to HTTP statuses in one place."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any

# Step Functions' answers to a task token whose wait is over (answered, timed out, or its run ended).
TASK_WAIT_OVER_ERRORS = frozenset({"TaskTimedOut", "TaskDoesNotExist", "InvalidToken"})


class ErrorCode(StrEnum):
    INVALID_REQUEST = "invalid_request"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    STATUS_CONFLICT = "status_conflict"
    INVALID_TRANSITION = "invalid_transition"
    UNSUPPORTED_TYPE = "unsupported_type"
    INVALID_PARAMETERS = "invalid_parameters"
    UNMAPPABLE_RECOMMENDATION = "unmappable_recommendation"
    TRANSIENT = "transient"
    ACTION_FAILED = "action_failed"
    CANCELLED = "cancelled"
    ACTING_TIME_LIMIT = "acting_time_limit"
    RESOURCE_BUSY = "resource_busy"
    RECOMMENDATION_STALE = "recommendation_stale"
    DENIED_BY_BUSINESS_RULES = "denied_by_business_rules"
    REFUSED_AT_ACTION = "refused_at_action"
    PLAN_CHANGED = "plan_changed"
    ACCESS_DENIED = "access_denied"
    SELF_APPROVAL_REFUSED = "self_approval_refused"
    APPROVAL_REFUSED = "approval_refused"
    PURCHASE_LIMIT_REACHED = "purchase_limit_reached"


class EngineError(Exception):
    code: ErrorCode = ErrorCode.ACTION_FAILED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(EngineError):
    code = ErrorCode.INVALID_REQUEST


class NotFound(EngineError):
    code = ErrorCode.NOT_FOUND


class Conflict(EngineError):
    code = ErrorCode.CONFLICT


class RecommendationStale(Conflict):
    """Too old to act on: the resource may have changed since."""

    code = ErrorCode.RECOMMENDATION_STALE


class ApprovalRefused(Conflict):
    """The type refuses to be approved now (`BaseExecutor.before_approval`): nothing is decided and
    the execution keeps waiting for a decision."""

    code = ErrorCode.APPROVAL_REFUSED


class DeniedByBusinessRules(EngineError):
    """The customer's business rules do not allow this change."""

    code = ErrorCode.DENIED_BY_BUSINESS_RULES


class AccessDenied(EngineError):
    """The caller sees the customer but lacks the role this needs (cost_engine.access)."""

    code = ErrorCode.ACCESS_DENIED


class SelfApprovalRefused(AccessDenied):
    """Four eyes: the principal that requested an execution may not approve it."""

    code = ErrorCode.SELF_APPROVAL_REFUSED


class InvalidTransition(Conflict):
    code = ErrorCode.INVALID_TRANSITION


class StatusConflict(Conflict):
    """A conditional status write lost: the status it expected no longer holds."""

    code = ErrorCode.STATUS_CONFLICT


class UnsupportedType(InvalidRequest):
    code = ErrorCode.UNSUPPORTED_TYPE


class InvalidParameters(InvalidRequest):
    """The recommendation's parameters do not fit its type."""

    code = ErrorCode.INVALID_PARAMETERS


class TransientError(EngineError):
    """Worth retrying (throttling, a 5xx of AWS); the state machines retry it with backoff."""

    code = ErrorCode.TRANSIENT


class ActionFailed(EngineError):
    """An acting step could not do what it had to: the state machine rolls back."""

    code = ErrorCode.ACTION_FAILED


class GuardrailBreached(ActionFailed):
    """A guardrail tripped while the change settled: the state machine rolls it back."""


class CancelRequested(EngineError):
    """Someone cancelled while the resource was being changed: the state machine rolls back, and
    the execution ends `cancelled` (not retried: Retry lists only transient errors)."""

    code = ErrorCode.CANCELLED


class RefusedAtAction(EngineError):
    """The re-check at the moment of action refused the change: the resource, the rules or the plan
    changed while the execution waited. Nothing was changed (not retried: Retry lists only transient
    errors)."""

    code = ErrorCode.REFUSED_AT_ACTION


class PlanChanged(Conflict):
    """A decision for a plan other than the one the execution would carry out now."""

    code = ErrorCode.PLAN_CHANGED


class UnmappableRecommendation(InvalidParameters):
    """A recommendation in another tool's format that the engine cannot turn into one of its types."""

    code = ErrorCode.UNMAPPABLE_RECOMMENDATION


def validation_problems(errors: Iterable[Mapping[str, Any]], prefix: str = "", whole: str = "(all)") -> str:
    """pydantic's errors as one readable line: `<prefix><field path>: <message>; …`. pydantic prefixes
    the messages of custom validators with "Value error, ": noise to a reader."""
    return "; ".join(
        f"{prefix}{'.'.join(str(part) for part in e['loc']) or whole}: {str(e['msg']).removeprefix('Value error, ')}"
        for e in errors
    )


def cause_message(cause: str | None) -> str:
    """What a caught error's Cause says, for an audit log or a person. A Lambda function's error
    arrives as JSON with its type, its message and its stack trace (the function's file paths and
    lines): its message is kept (its type when it has none), never the trace."""
    if not cause:
        return ""
    try:
        parsed = json.loads(cause)
    except ValueError:
        return cause
    if isinstance(parsed, dict) and {"errorMessage", "errorType", "stackTrace"} & set(parsed):
        return str(parsed.get("errorMessage") or parsed.get("errorType") or "")
    return cause
