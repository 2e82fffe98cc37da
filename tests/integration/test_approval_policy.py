"""The approval policy on the real state machines: the request's auto_approve is a wish, the policy
decides, and the decision and its reason are recorded with the execution."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from local_runtime.client import ApiClient
from local_runtime.runtime import LocalRuntime
from tests.integration.conftest import MANUAL_ONLY_CUSTOMER


@pytest.fixture
def log_group(runtime: LocalRuntime) -> str:
    name = f"orders-api-{uuid.uuid4().hex[:8]}"
    runtime.client("logs").create_log_group(logGroupName=name)
    return name


def retention(runtime: LocalRuntime, name: str) -> int | None:
    groups = runtime.client("logs").describe_log_groups(logGroupNamePrefix=name)["logGroups"]
    days: int | None = groups[0].get("retentionInDays")
    return days


def events(api: ApiClient, execution_id: str) -> list[dict[str, Any]]:
    return list(api.logs(execution_id)["events"])


def test_a_low_risk_change_with_auto_approve_is_approved_by_the_policy_with_its_reason(
    api: ApiClient, runtime: LocalRuntime, recommend: Callable[..., str], log_group: str
) -> None:
    recommendation = recommend(
        log_group, type="fix_config", parameters={"setting": "log_retention", "retention_in_days": 30}
    )
    execution = api.wait_for(api.execute(recommendation, auto_approve=True)["execution_id"])

    assert execution["status"] == "completed"
    assert execution["auto_approved"] is True
    assert execution["policy"]["auto_approve"] is True
    assert execution["policy"]["risk_level"] == "low"
    assert "the policy allows low-risk fix_config" in execution["policy"]["reason"]
    approved = [e for e in events(api, execution["execution_id"]) if e["event_type"] == "approved"]
    assert [(e["actor"], e["detail"]["approver"]) for e in approved] == [("state-machine:auto_approve", "policy")]
    assert retention(runtime, log_group) == 30


def test_a_customer_whose_policy_allows_no_automatic_approval_waits_for_a_person(
    api: ApiClient, runtime: LocalRuntime, recommend: Callable[..., str], log_group: str
) -> None:
    recommendation = recommend(
        log_group,
        type="fix_config",
        customer_id=MANUAL_ONLY_CUSTOMER,
        parameters={"setting": "log_retention", "retention_in_days": 30},
    )
    execution_id = api.execute(recommendation, auto_approve=True)["execution_id"]
    waiting = api.wait_for(execution_id, frozenset({"awaiting_approval", "completed", "failed"}))

    assert waiting["status"] == "awaiting_approval"
    assert waiting["policy"]["auto_approve"] is False
    assert f"customer {MANUAL_ONLY_CUSTOMER} does not auto-approve fix_config" in waiting["policy"]["reason"]
    pending = waiting["pending_approval"]
    assert pending["approvers"] == ["finops@example.com", "lead@example.com"]
    assert pending["approvers_notified"] == runtime.approval_topic_arn
    assert pending["reason"] == waiting["policy"]["reason"]
    assert retention(runtime, log_group) is None  # nothing touched while waiting
    decided = [e for e in events(api, execution_id) if e["event_type"] == "approval_policy_decided"]
    assert len(decided) == 1
    assert decided[0]["detail"]["auto_approve"] is False

    api.approve(execution_id, "lead@example.com", "fine")
    assert api.wait_for(execution_id)["status"] == "completed"
    assert retention(runtime, log_group) == 30


def test_savings_above_the_threshold_make_a_low_risk_change_wait_for_a_person(
    api: ApiClient, recommend: Callable[..., str], log_group: str
) -> None:
    recommendation = recommend(
        log_group,
        type="fix_config",
        parameters={"setting": "log_retention", "retention_in_days": 30},
        estimated_monthly_savings=4000.0,
    )
    execution_id = api.execute(recommendation, auto_approve=True)["execution_id"]
    waiting = api.wait_for(execution_id, frozenset({"awaiting_approval", "completed", "failed"}))

    assert waiting["status"] == "awaiting_approval"
    assert waiting["policy"]["risk_level"] == "high"
    assert "above $1,000.00/month" in waiting["policy"]["reason"]
    api.reject(execution_id, "finops@example.com", "too big to auto-approve")
    assert api.wait_for(execution_id)["status"] == "rejected"
