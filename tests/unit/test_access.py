"""The access model: roles per customer for each principal, 404 for what a caller may not see, 403
naming the role it lacks, and four eyes on approvals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from cost_engine.access import ROUTE_ROLES, AccessPolicy, Caller, Role, principal_key
from cost_engine.approval_policy import ApprovalPolicy
from cost_engine.errors import AccessDenied, NotFound, SelfApprovalRefused
from cost_engine.models import ExecutionRecord, RecommendationType
from cost_engine.settings import load_settings
from cost_engine.topology import APPROVAL_PAGE_PATH, LIMITS_TABLE, EnvVar
from tools.write_openapi import OUTPUT

OPERATOR_ROLE = "arn:aws:iam::123456789012:role/teams/FinOpsOperator"
APPROVER_ROLE = "arn:aws:iam::123456789012:role/FinOpsApprover"
ALICE_SESSION = "arn:aws:sts::123456789012:assumed-role/FinOpsOperator/alice@example.com"
BOB_SESSION = "arn:aws:sts::123456789012:assumed-role/FinOpsApprover/bob@example.com"

POLICY = AccessPolicy.model_validate(
    {
        "principals": {
            OPERATOR_ROLE: {"customers": {"acme": ["operator", "approver"], "*": ["viewer"]}},
            APPROVER_ROLE: {"customers": {"acme": ["approver"]}},
            "apikey:bank-viewer": {"customers": {"bank": ["viewer"]}},
        }
    }
)
HIDDEN = NotFound("execution 'exec-1' does not exist")


def caller(principal: str | None) -> Caller:
    return POLICY.caller(principal)


def execution(requested_by: str, customer_id: str = "acme") -> ExecutionRecord:
    return ExecutionRecord(
        execution_id="exec-1",
        recommendation_id="rec-1",
        customer_id=customer_id,
        recommendation_type=RecommendationType.RIGHTSIZE_INSTANCE,
        resource_id="i-1",
        region="us-east-1",
        requested_by=requested_by,
    )


def test_an_assumed_role_session_gets_the_roles_granted_to_its_role_whatever_the_path_and_session() -> None:
    alice = caller(f"iam:{ALICE_SESSION}")

    assert alice.roles_for("acme") == {Role.VIEWER, Role.OPERATOR, Role.APPROVER}
    assert alice.roles_for("bank") == {Role.VIEWER}
    assert principal_key(ALICE_SESSION) == principal_key(OPERATOR_ROLE)


def test_a_role_of_another_account_or_an_unknown_caller_gets_nothing() -> None:
    for principal in (
        "iam:arn:aws:sts::210987654321:assumed-role/FinOpsOperator/alice",
        "iam:arn:aws:iam::123456789012:user/mallory",
        "apikey:nobody",
        None,
    ):
        assert not caller(principal).sees("acme"), principal


def test_every_role_reads_but_only_its_own_customers() -> None:
    bob = caller(f"iam:{BOB_SESSION}")

    assert bob.sees("acme")
    bob.require(Role.VIEWER, "acme", HIDDEN)
    assert not bob.sees("bank")


def test_another_customers_execution_answers_the_not_found_an_unknown_one_gets() -> None:
    bob = caller(f"iam:{BOB_SESSION}")

    with pytest.raises(NotFound) as raised:
        bob.require(Role.APPROVER, "bank", HIDDEN)
    assert raised.value is HIDDEN


def test_a_missing_role_is_refused_naming_the_role_needed() -> None:
    viewer = caller("apikey:bank-viewer")

    with pytest.raises(AccessDenied, match="needs the operator role for customer 'bank'"):
        viewer.require(Role.OPERATOR, "bank", HIDDEN)
    with pytest.raises(AccessDenied, match="needs the operator role for customer 'bank'"):
        viewer.require_for_new(Role.OPERATOR, "bank")


def test_the_requester_cannot_approve_its_own_execution_but_another_approver_can() -> None:
    alice, bob = caller(f"iam:{ALICE_SESSION}"), caller(f"iam:{BOB_SESSION}")
    requested = execution(requested_by=alice.principal)

    with pytest.raises(SelfApprovalRefused, match="four eyes"):
        alice.check_four_eyes(requested, ApprovalPolicy())
    bob.check_four_eyes(requested, ApprovalPolicy())


def test_a_customers_approval_policy_may_allow_self_approval_for_that_customer_only() -> None:
    alice = caller(f"iam:{ALICE_SESSION}")
    policy = ApprovalPolicy.model_validate({"customers": {"acme": {"allow_self_approval": True}}})

    alice.check_four_eyes(execution(alice.principal, "acme"), policy)
    with pytest.raises(SelfApprovalRefused):
        alice.check_four_eyes(execution(alice.principal, "bank"), policy)


def test_an_exempt_principal_may_approve_what_it_requested() -> None:
    exempt = AccessPolicy.model_validate(
        {"principals": {"apikey:local-dev": {"customers": {"*": ["operator", "approver"]}, "four_eyes_exempt": True}}}
    ).caller("apikey:local-dev")

    exempt.check_four_eyes(execution(exempt.principal), ApprovalPolicy())


@pytest.mark.parametrize(
    ("principals", "problem"),
    [
        ({ALICE_SESSION: {"customers": {"acme": ["viewer"]}}}, "neither an IAM role or user ARN"),
        ({"alice": {"customers": {"acme": ["viewer"]}}}, "neither an IAM role or user ARN"),
        ({OPERATOR_ROLE: {"customers": {"acme": ["admin"]}}}, "viewer"),
        ({OPERATOR_ROLE: {"customers": {"acme": []}}}, "grants no role"),
        (
            {OPERATOR_ROLE: {"customers": {"acme": ["viewer"]}}, APPROVER_ROLE: {}},
            "Field required",
        ),
        (
            {
                OPERATOR_ROLE: {"customers": {"acme": ["viewer"]}},
                "arn:aws:iam::123456789012:role/FinOpsOperator": {"customers": {"bank": ["viewer"]}},
            },
            "named twice",
        ),
    ],
)
def test_an_access_policy_that_cannot_be_applied_is_refused(principals: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        AccessPolicy.model_validate({"principals": principals})


def test_the_functions_read_the_access_policy_from_their_environment() -> None:
    environment = {
        EnvVar.EXECUTIONS_TABLE: "e",
        EnvVar.AUDIT_TABLE: "a",
        EnvVar.RECOMMENDATIONS_TABLE: "r",
        LIMITS_TABLE.env_var: "l",
        EnvVar.ACCESS_POLICY: POLICY.model_dump_json(),
    }

    settings = load_settings(environment)

    assert settings.access_policy == POLICY
    assert not load_settings({**environment, EnvVar.ACCESS_POLICY: ""}).access_policy.principals


def test_every_route_of_the_api_but_the_approval_pages_has_the_role_it_needs() -> None:
    document = json.loads(Path(OUTPUT).read_text())
    routes = {
        (method.upper(), path)
        for path, methods in document["paths"].items()
        for method in methods
        if not path.startswith(APPROVAL_PAGE_PATH)
    }

    assert set(ROUTE_ROLES) == routes
