"""Who may decide, through the real HTTP API with several API keys: roles per customer, another
customer's things answering 404, a missing role 403 naming it, and four eyes on approvals."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from cost_engine.approval_policy import ApprovalPolicy
from local_runtime.client import ApiClient, ApiError
from local_runtime.runtime import LocalRuntime
from tests.integration.conftest import CUSTOMER_A, CUSTOMER_B, deployed_with, terminate_recommendation

AWAITING = frozenset({"awaiting_approval"})


@pytest.fixture
def as_key(runtime: LocalRuntime) -> Callable[[str], ApiClient]:
    return lambda key: ApiClient(runtime.api_url, key)


def refused(call: Callable[[], Any]) -> ApiError:
    with pytest.raises(ApiError) as raised:
        call()
    return raised.value


def waiting_for_approval(client: ApiClient, recommendation_id: str) -> str:
    execution_id = str(client.execute(recommendation_id)["execution_id"])
    client.wait_for(execution_id, AWAITING)
    return execution_id


def test_a_viewer_reads_its_customer_but_executing_answers_403_naming_the_operator_role(
    as_key: Callable[[str], ApiClient], launch_instance: Callable[..., str]
) -> None:
    # Given a recommendation of customer A, registered by A's operator
    operator, viewer = as_key("operator-a-key"), as_key("viewer-a-key")
    recommendation_id = operator.register(terminate_recommendation(CUSTOMER_A, launch_instance()))["recommendation_id"]

    # When A's viewer reads it and asks to execute it
    seen = viewer.request("GET", f"/recommendations/{recommendation_id}")
    error = refused(lambda: viewer.execute(recommendation_id, dry_run=True))

    # Then it reads, and the execution is refused with the role it needs
    assert seen.status_code == 200
    assert error.status_code == 403
    assert error.body["error"] == "access_denied"
    assert f"needs the operator role for customer '{CUSTOMER_A}'" in error.body["message"]
    assert (
        refused(lambda: viewer.register(terminate_recommendation(CUSTOMER_A, "i-0123456789abcdef0"))).status_code == 403
    )


def test_an_operator_cannot_approve_what_it_started(
    as_key: Callable[[str], ApiClient], launch_instance: Callable[..., str]
) -> None:
    operator = as_key("operator-a-key")
    recommendation_id = operator.register(terminate_recommendation(CUSTOMER_A, launch_instance()))["recommendation_id"]
    execution_id = waiting_for_approval(operator, recommendation_id)

    error = refused(lambda: operator.approve(execution_id, "Olivia"))

    assert error.status_code == 403
    assert f"needs the approver role for customer '{CUSTOMER_A}'" in error.body["message"]
    assert operator.status(execution_id)["status"] == "awaiting_approval"
    assert operator.cancel(execution_id)["status"] == "cancelled"


def test_another_customers_execution_and_recommendation_answer_404_and_its_listing_is_empty(
    api: ApiClient, as_key: Callable[[str], ApiClient], launch_instance: Callable[..., str]
) -> None:
    # Given an execution of customer B, started by B's operator
    customer_b = as_key("operator-b-key")
    recommendation_id = customer_b.register(terminate_recommendation(CUSTOMER_B, launch_instance()))[
        "recommendation_id"
    ]
    execution_id = customer_b.execute(recommendation_id, dry_run=True)["execution_id"]
    customer_b.wait_for(execution_id)

    # When A's keys ask for it in every way
    lead_a = as_key("lead-a-key")
    unknown_id = "exec-" + "0" * 32
    answers = {
        "status": refused(lambda: lead_a.status(execution_id)),
        "logs": refused(lambda: lead_a.logs(execution_id)),
        "cancel": refused(lambda: lead_a.cancel(execution_id)),
        "rollback": refused(lambda: lead_a.rollback(execution_id)),
        "approve": refused(lambda: lead_a.approve(execution_id, "Lea")),
        "reject": refused(lambda: lead_a.reject(execution_id, "Lea")),
    }

    # Then each answers as an unknown execution does: B's things are not told apart from nothing
    unknown = refused(lambda: lead_a.status(unknown_id))
    assert unknown.body == {"error": "not_found", "message": f"execution '{unknown_id}' does not exist"}
    for route, error in answers.items():
        assert (error.status_code, error.body) == (
            404,
            {**unknown.body, "message": f"execution '{execution_id}' does not exist"},
        ), route
    recommendation = refused(lambda: lead_a.recommendation(recommendation_id))
    execute = refused(lambda: lead_a.execute(recommendation_id, dry_run=True))
    assert recommendation.status_code == execute.status_code == 404
    assert recommendation.body == execute.body
    assert lead_a.list(CUSTOMER_B) == {"items": [], "next_cursor": None}
    assert execution_id in {item["execution_id"] for item in api.list(CUSTOMER_B)["items"]}
    registering = refused(lambda: lead_a.register(terminate_recommendation(CUSTOMER_B, "i-0123456789abcdef0")))
    assert registering.status_code == 403


def test_four_eyes_the_requester_cannot_approve_its_own_execution_another_approver_can(
    as_key: Callable[[str], ApiClient], launch_instance: Callable[..., str]
) -> None:
    # Given an execution that A's lead (operator and approver) requested
    lead, approver = as_key("lead-a-key"), as_key("approver-a-key")
    recommendation_id = lead.register(terminate_recommendation(CUSTOMER_A, launch_instance()))["recommendation_id"]
    execution_id = waiting_for_approval(lead, recommendation_id)

    # When the lead approves it, then another approver does, naming themselves in the body
    own = refused(lambda: lead.approve(execution_id, "Lea Lead"))
    approver.approve(execution_id, "Bob (FinOps)", "second pair of eyes")

    # Then the lead is refused, and the recorded approver is the caller, the name only shown
    assert own.status_code == 403
    assert own.body["error"] == "self_approval_refused"
    execution = approver.wait_for(execution_id)
    assert execution["status"] == "completed"
    assert execution["requested_by"] == "apikey:lead-a"
    approval = execution["approval"]
    assert (approval["decided_by"], approval["approver_name"], approval["decided_via"]) == (
        "apikey:approver-a",
        "Bob (FinOps)",
        "api",
    )
    approved = next(e for e in approver.logs(execution_id)["events"] if e["event_type"] == "approved")
    assert approved["actor"] == "approver:apikey:approver-a"
    assert approved["detail"]["name"] == "Bob (FinOps)"


def test_a_customers_policy_may_let_the_requester_approve_and_the_requester_may_always_reject(
    as_key: Callable[[str], ApiClient], launch_instance: Callable[..., str]
) -> None:
    lead = as_key("lead-a-key")
    allowed = lead.register(terminate_recommendation(CUSTOMER_A, launch_instance()))["recommendation_id"]
    withdrawn = lead.register(terminate_recommendation(CUSTOMER_A, launch_instance()))["recommendation_id"]
    allowed_id, withdrawn_id = waiting_for_approval(lead, allowed), waiting_for_approval(lead, withdrawn)

    with deployed_with(
        approval_policy=ApprovalPolicy.model_validate({"customers": {CUSTOMER_A: {"allow_self_approval": True}}})
    ):
        assert lead.approve(allowed_id, "Lea Lead")["status"] == "approved"
    assert lead.reject(withdrawn_id, "Lea Lead", "not now")["status"] == "rejected"
    assert lead.wait_for(allowed_id)["approval"]["decided_by"] == "apikey:lead-a"


def test_the_default_key_still_does_everything_including_approving_its_own_execution(
    api: ApiClient, launch_instance: Callable[..., str]
) -> None:
    recommendation_id = api.register(terminate_recommendation(CUSTOMER_B, launch_instance()))["recommendation_id"]

    execution = api.run(recommendation_id, approver="lead@example.com")

    assert execution["status"] == "completed"
    assert execution["requested_by"] == execution["approval"]["decided_by"] == "apikey:local-dev"
    assert execution["approval"]["approver_name"] == "lead@example.com"
