"""An approval is bound to the plan it was given for: the plan's fingerprint, and what moved."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from cost_engine.approval_page import review_page
from cost_engine.models import (
    ApprovalDecision,
    ApprovalState,
    ExecutionPlan,
    ExecutionRecord,
    RecommendationType,
    RiskLevel,
    RollbackPlan,
    utc_now,
)


def plan(**resource: Any) -> ExecutionPlan:
    return ExecutionPlan(
        summary="terminate i-0abc",
        actions=["create an AMI", "terminate"],
        backup=["AMI"],
        rollback_plan=RollbackPlan(
            execution_id="exec-1", rollback_steps=["relaunch"], estimated_duration=5, risk_level=RiskLevel.HIGH
        ),
        estimated_monthly_savings=70.0,
        savings_basis="catalog",
        resource={"instance_id": "i-0abc", "state": "running", "tags": {"team": "data"}, **resource},
    )


def test_the_same_plan_made_again_has_the_same_fingerprint_whatever_the_order_of_its_keys() -> None:
    first = plan()
    again = plan(tags={"team": "data"}, state="running")

    assert first.fingerprint() == again.fingerprint()
    assert first.fingerprint().startswith("sha256:")
    assert first.differences(again) == []


def test_a_plan_whose_resource_moved_has_another_fingerprint_and_says_where() -> None:
    approved = plan()
    now = plan(tags={"team": "data", "owner": "new-team"}, state="stopped")

    assert approved.fingerprint() != now.fingerprint()
    assert approved.differences(now) == ["resource.state", "resource.tags"]


def test_a_plan_with_other_savings_or_steps_differs_at_the_top() -> None:
    approved = plan()
    now = approved.model_copy(update={"estimated_monthly_savings": 90.0, "actions": ["terminate"]})

    assert approved.differences(now) == ["actions", "estimated_monthly_savings"]


@pytest.mark.parametrize("bad", ["abc", "sha256:" + "0" * 63, "sha256:" + "G" * 64, "md5:" + "0" * 32])
def test_a_decision_naming_a_malformed_plan_hash_is_refused(bad: str) -> None:
    with pytest.raises(ValidationError, match="plan_hash"):
        ApprovalDecision(approver="lead@example.com", plan_hash=bad)


def test_the_approval_page_shows_and_posts_the_plan_the_decision_is_for() -> None:
    shown = plan()
    now = utc_now()
    record = ExecutionRecord(
        execution_id="exec-1",
        recommendation_id="rec-1",
        customer_id="acme",
        recommendation_type=RecommendationType.TERMINATE_INSTANCE,
        resource_id="i-0abc",
        region="us-east-1",
        plan=shown,
        approval=ApprovalState(requested_at=now, deadline=now, plan_hash=shown.fingerprint()),
    )

    page = review_page(record, "appr-1", "1796293038", "sig")

    assert f'<code id="plan-hash">{shown.fingerprint()}</code>' in page
    assert f'<input type="hidden" name="plan_hash" value="{shown.fingerprint()}">' in page
    assert "<li><code>state</code>: &quot;running&quot;</li>" in page
    assert "<li><code>tags</code>: {&quot;team&quot;: &quot;data&quot;}</li>" in page


def test_a_limit_the_deployment_changes_while_the_plan_waits_does_not_move_the_plan() -> None:
    # The limits are checked again when acting; a new limit is not a new plan to approve.
    before = plan().model_copy(update={"limits": {"purchase_limit_usd": 10_000.0}})
    after = plan().model_copy(update={"limits": {"purchase_limit_usd": 50_000.0}})

    assert before.fingerprint() == after.fingerprint()
    assert before.differences(after) == []
    assert plan(state="stopped").model_copy(update={"limits": before.limits}).differences(before) == ["resource.state"]
