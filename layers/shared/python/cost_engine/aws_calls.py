"""Every AWS call that changes something, as an `aws_call` audit event written at the moment of the call.

A botocore hook on each client the engine creates (`AwsClients`): while a step or decision runs
(`cost_engine.audit_trail.acting`), each request of a call whose operation can change a resource
(each attempt, when the SDK retries) is appended to that execution's log as soon as AWS has answered,
before the caller sees the answer. A step that crashes afterwards still leaves the call in the log,
with AWS's request id to find it in CloudTrail. Outside such a scope (tests, the CLI, the API's
reads) the hook does nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from botocore.client import BaseClient
from botocore.exceptions import BotoCoreError, ClientError
from botocore.model import OperationModel

from cost_engine.audit_trail import AWS_CALL, AuditScope, current_scope
from cost_engine.errors import TransientError

logger = logging.getLogger(__name__)

# Operations that only read. AWS names its operations by verb, so the verb decides.
READ_ONLY_PREFIXES = (
    "Describe",
    "Get",
    "List",
    "Head",
    "Lookup",
    "Search",
    "Query",
    "Scan",
    "BatchGet",
    "Simulate",
    "Estimate",
    "Filter",
    "Test",
    "Validate",
    "Preview",
    "Select",
)
# The engine's own plumbing, not a change to a resource it was asked to change: its tables, its
# state machines, who it is and its link-signing secret.
PLUMBING_SERVICES = frozenset({"dynamodb", "stepfunctions", "sts", "secretsmanager"})
# The approval request (SNS) and the status announcements (EventBridge): by operation, as an
# executor may one day change resources on these services.
PLUMBING_OPERATIONS = frozenset({("sns", "Publish"), ("events", "PutEvents")})

# Only parameters that say which resource was changed and what kind it is: that ties the call to the
# resource (and, with the request id, to CloudTrail). Every other parameter may carry secrets or free
# text (UserData, policy documents, passwords, descriptions) that the audit log, readable by whoever
# may read executions, must not hold.
IDENTIFYING_SUFFIXES = (
    "Id",
    "Ids",
    "Name",
    "Names",
    "Arn",
    "Arns",
    "Identifier",
    "Identifiers",
    "Type",
    "Types",
    "Class",
    "Bucket",
    "Key",
    "Zone",
)
# EC2's CreateTags and DeleteTags name their resources so.
IDENTIFYING_NAMES = frozenset({"Resources"})
# Names that end like an identifier but hold a secret (S3's SSECustomerKey) or a credential.
SECRET_MARKERS = ("Password", "Secret", "CustomerKey", "Token", "Credential")

# Where a call's pending audit entry waits, between its parameters and AWS's answers: botocore's
# context of the one call, so concurrent calls on one client never see each other's.
_CONTEXT_KEY = "cost_engine_audited_call"

_Scalar = str | int | float | bool


@dataclass(frozen=True)
class _PendingCall:
    scope: AuditScope
    service: str
    operation: str
    parameters: dict[str, Any]


def changes_something(service: str, operation: str, params: dict[str, Any]) -> bool:
    if service in PLUMBING_SERVICES or (service, operation) in PLUMBING_OPERATIONS:
        return False
    if operation.startswith(READ_ONLY_PREFIXES):
        return False
    # EC2's permission check: AWS answers DryRunOperation and changes nothing.
    return params.get("DryRun") is not True


def _is_identifying(name: str) -> bool:
    if any(marker in name for marker in SECRET_MARKERS):
        return False
    return name in IDENTIFYING_NAMES or name.endswith(IDENTIFYING_SUFFIXES)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, _Scalar)


def identifying_parameters(params: dict[str, Any]) -> dict[str, Any]:
    """The scalar (or list-of-scalar) parameters that name the resource; nothing nested."""
    return {
        name: list(value) if isinstance(value, list | tuple) else value
        for name, value in params.items()
        if _is_identifying(name)
        and (_is_scalar(value) or (isinstance(value, list | tuple) and all(_is_scalar(v) for v in value)))
    }


def _note_call(params: dict[str, Any], model: OperationModel, context: dict[str, Any], **_: Any) -> None:
    scope = current_scope()
    service = model.service_model.service_name
    if scope is None or not changes_something(service, model.name, params):
        return
    context[_CONTEXT_KEY] = _PendingCall(scope, service, model.name, identifying_parameters(params))


def _append(pending: _PendingCall, outcome: dict[str, Any]) -> None:
    try:
        pending.scope.audit.append(
            pending.scope.execution_id,
            AWS_CALL,
            pending.scope.actor,
            {
                "service": pending.service,
                "operation": pending.operation,
                "parameters": pending.parameters,
                **outcome,
            },
        )
        # Written at once, whatever the step keeps to write later: a change made must be in the log
        # even if the step dies right after it.
        pending.scope.audit.flush()
    except (BotoCoreError, ClientError, TransientError):
        # The call is made and cannot be unmade: failing it now would only hide its outcome from the
        # step (which might then repeat it). The function's log keeps what the audit log could not.
        logger.exception(
            "AWS call %s.%s of %s not in the audit log: %s",
            pending.service,
            pending.operation,
            pending.scope.execution_id,
            outcome,
        )


def _record_attempt(
    response_dict: dict[str, Any] | None,
    parsed_response: dict[str, Any] | None,
    context: dict[str, Any],
    exception: Exception | None,
    **_: Any,
) -> None:
    """One request of the call, answered or not. Each attempt (botocore retries a throttled or failed
    one) is an event of its own: AWS received each, and each may have changed something."""
    pending: _PendingCall | None = context.get(_CONTEXT_KEY)
    if pending is None:
        return
    outcome: dict[str, Any]
    if response_dict is None:
        # No answer (connection lost, timed out): the request may or may not have been carried out.
        outcome = {"http_status": None, "request_id": None, "error": type(exception).__name__}
    else:
        status = int(response_dict["status_code"])
        parsed = parsed_response or {}
        outcome = {"http_status": status, "request_id": parsed.get("ResponseMetadata", {}).get("RequestId")}
        if status >= 300:
            outcome["error"] = parsed.get("Error", {}).get("Code")
    _append(pending, {**outcome, "attempt": int(context.get("retries", {}).get("attempt", 1))})


def record_changes(client: BaseClient) -> None:
    """Log the calls of `client` that change something (see the module's docstring)."""
    client.meta.events.register("provide-client-params.*.*", _note_call)
    # Emitted for each request sent, as soon as AWS answered and before the caller sees the answer.
    client.meta.events.register("response-received.*.*", _record_attempt)
