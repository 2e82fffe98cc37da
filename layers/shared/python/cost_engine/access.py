"""Who may do what: roles per customer for each caller, and the four-eyes rule of approvals.

A caller is a principal: on AWS the IAM principal API Gateway authenticated (SigV4), locally an API
key. The deployment's access policy grants each principal roles per customer:

- `viewer` reads (recommendations, executions, their logs and listings);
- `operator` reads, registers recommendations, executes, cancels and rolls back;
- `approver` reads, approves and rejects.

A caller without any role for a customer does not see that customer's recommendations and
executions at all (they answer 404, as if they did not exist, and its listing is empty); a caller
who sees them but lacks the role a route needs gets 403 naming that role. The principal that
requested an execution does not approve it (four eyes) unless the customer's approval policy allows
it (`allow_self_approval`) or the principal is exempt (the local runtime's single default key).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, Field, PrivateAttr, StringConstraints, field_validator, model_validator

from cost_engine.approval_policy import ApprovalPolicy
from cost_engine.errors import AccessDenied, NotFound, SelfApprovalRefused
from cost_engine.models import ExecutionRecord, StrictModel


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    APPROVER = "approver"


# The customer key that grants its roles for every customer.
EVERY_CUSTOMER = "*"
# The principal of a local API key: "apikey:<name>" (the key itself never leaves the local server).
API_KEY_PREFIX = "apikey:"
IAM_PREFIX = "iam:"

# The role each route of the API needs. The handler checks it per customer; the stack grants each
# role's routes in an IAM policy of its own (execute-api:Invoke), which a role's holders are given.
ROUTE_ROLES: dict[tuple[str, str], Role] = {
    ("GET", "/recommendations/{recommendation_id}"): Role.VIEWER,
    ("GET", "/executions"): Role.VIEWER,
    ("GET", "/executions/{execution_id}"): Role.VIEWER,
    ("GET", "/executions/{execution_id}/logs"): Role.VIEWER,
    ("POST", "/recommendations"): Role.OPERATOR,
    ("POST", "/recommendations/import"): Role.OPERATOR,
    ("POST", "/executions/execute"): Role.OPERATOR,
    ("POST", "/executions/{execution_id}/cancel"): Role.OPERATOR,
    ("POST", "/executions/{execution_id}/rollback"): Role.OPERATOR,
    ("POST", "/executions/{execution_id}/measure"): Role.OPERATOR,
    ("POST", "/executions/{execution_id}/approve"): Role.APPROVER,
    ("POST", "/executions/{execution_id}/reject"): Role.APPROVER,
}


def routes_of(role: Role) -> list[tuple[str, str]]:
    """The routes a role may call: its own, and (every role reads) the viewer's."""
    return [route for route, needed in ROUTE_ROLES.items() if needed in (role, Role.VIEWER)]


_ROLE_OR_USER_ARN = re.compile(
    r"^arn:(?P<partition>aws[\w-]*):iam::(?P<account>[0-9]{12}):(?P<kind>role|user)/(?:[^/]+/)*(?P<name>[\w+=,.@-]+)$"
)
_ASSUMED_ROLE_ARN = re.compile(
    r"^arn:(?P<partition>aws[\w-]*):sts::(?P<account>[0-9]{12}):assumed-role/(?P<name>[\w+=,.@-]+)/[^/]+$"
)
_API_KEY_NAME = r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}"


def principal_key(principal: str) -> str | None:
    """What a principal is matched on in the access policy, or None for what cannot be granted.

    An IAM role is matched on its account and name: the assumed-role ARN a caller has carries no
    path (and a session name), so a granted role ARN with a path matches its sessions too."""
    if match := re.fullmatch(API_KEY_PREFIX + _API_KEY_NAME, principal):
        return match.group(0)
    arn = principal.removeprefix(IAM_PREFIX)
    if match := _ASSUMED_ROLE_ARN.match(arn):
        return f"role:{match['partition']}:{match['account']}:{match['name']}"
    if match := _ROLE_OR_USER_ARN.match(arn):
        return f"{match['kind']}:{match['partition']}:{match['account']}:{match['name']}"
    return None


def _grantable(principal: str) -> str:
    if principal_key(principal) is None or _ASSUMED_ROLE_ARN.match(principal):
        raise ValueError(
            f"{principal!r} is neither an IAM role or user ARN (arn:aws:iam::123456789012:role/Name) "
            f"nor a local API key's name ({API_KEY_PREFIX}<name>)"
        )
    return principal


class PrincipalAccess(StrictModel):
    """What one principal may do: its roles per customer ("*": every customer; the roles add up)."""

    customers: dict[Annotated[str, StringConstraints(pattern=r"^(\*|[A-Za-z0-9][A-Za-z0-9._-]{0,63})$")], list[Role]]
    # May approve what it requested itself. Meant for a single person's local runtime (its default
    # key); a deployment allows self-approval per customer in its approval policy instead.
    four_eyes_exempt: bool = False

    @field_validator("customers")
    @classmethod
    def _some_role(cls, value: dict[str, list[Role]]) -> dict[str, list[Role]]:
        if not any(value.values()):
            raise ValueError("grants no role: give at least one customer (or '*') a role")
        return value

    def roles_for(self, customer_id: str) -> frozenset[Role]:
        roles = frozenset(self.customers.get(EVERY_CUSTOMER, [])) | frozenset(self.customers.get(customer_id, []))
        # Every role reads: an operator follows what it started, an approver sees what it decides.
        return roles | {Role.VIEWER} if roles else roles


class AccessPolicy(StrictModel):
    """The deployment's grants: principal → its roles per customer. A principal not named here may
    do nothing (every route but the approval pages answers 403)."""

    principals: dict[Annotated[str, AfterValidator(_grantable)], PrincipalAccess] = Field(default_factory=dict)
    # The grants by what a caller is matched on (principal_key): worked out once, not per request.
    _by_key: dict[str, PrincipalAccess] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _one_entry_per_principal(self) -> AccessPolicy:
        keys = [str(principal_key(name)) for name in self.principals]
        if twice := sorted({key for key in keys if keys.count(key) > 1}):
            raise ValueError(f"a principal is named twice (a role is matched on its account and name): {twice}")
        self._by_key = dict(zip(keys, self.principals.values(), strict=True))
        return self

    def caller(self, principal: str | None) -> Caller:
        """The caller of a request, with what the policy grants it (None when nothing matched)."""
        key = principal_key(principal) if principal else None
        return Caller(principal or "anonymous", self._by_key.get(key) if key is not None else None)


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: its principal (what the engine records as the actor) and its grants."""

    principal: str
    access: PrincipalAccess | None

    def roles_for(self, customer_id: str) -> frozenset[Role]:
        return self.access.roles_for(customer_id) if self.access else frozenset()

    def sees(self, customer_id: str) -> bool:
        """Any role reads: a customer the caller holds no role for is invisible to it."""
        return bool(self.roles_for(customer_id))

    def require(self, role: Role, customer_id: str, hidden: NotFound) -> None:
        """Raise `hidden` (the very 404 an unknown id gets) for a customer the caller does not see,
        and 403 naming the role when it sees the customer but lacks `role`."""
        if not self.sees(customer_id):
            raise hidden
        if role not in self.roles_for(customer_id):
            raise AccessDenied(
                f"this needs the {role.value} role for customer '{customer_id}'; {self.principal} holds "
                f"{', '.join(sorted(r.value for r in self.roles_for(customer_id)))} there"
            )

    def require_for_new(self, role: Role, customer_id: str) -> None:
        """For what does not exist yet (registering a recommendation): 403 naming the role."""
        if role not in self.roles_for(customer_id):
            raise AccessDenied(f"this needs the {role.value} role for customer '{customer_id}'")

    def check_four_eyes(self, record: ExecutionRecord, policy: ApprovalPolicy) -> None:
        """Refuse the approval of an execution by the principal that requested it, unless the
        customer's approval policy allows self-approval or the caller is exempt."""
        if record.requested_by != self.principal or (self.access and self.access.four_eyes_exempt):
            return
        if policy.rules_for(record.customer_id, record.recommendation_type).allow_self_approval:
            return
        raise SelfApprovalRefused(
            f"{self.principal} requested execution {record.execution_id} and cannot approve it too (four eyes): "
            f"another approver of customer '{record.customer_id}' decides, or the customer's approval policy "
            "allows self-approval (allow_self_approval)"
        )


def api_key_principal(name: str) -> str:
    return API_KEY_PREFIX + name


def full_access() -> PrincipalAccess:
    """Every role for every customer, four-eyes exempt: the local runtime's single default key."""
    return PrincipalAccess(customers={EVERY_CUSTOMER: list(Role)}, four_eyes_exempt=True)
