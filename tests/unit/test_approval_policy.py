"""The approval policy: who decides, and the reason recorded with the decision."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from cost_engine.approval_policy import ApprovalPolicy, decide
from cost_engine.models import PolicyDecision, RecommendationType, RiskLevel
from cost_engine.settings import load_settings
from cost_engine.topology import LIMITS_TABLE, EnvVar

T = RecommendationType


def decision(
    policy: ApprovalPolicy | None = None,
    *,
    customer_id: str = "acme",
    recommendation_type: RecommendationType = T.FIX_CONFIG,
    base_risk: RiskLevel = RiskLevel.LOW,
    requires_human_approval: bool = False,
    auto_approve_requested: bool = True,
    savings: float | None = 50.0,
    one_time_cost: float | None = None,
) -> PolicyDecision:
    return decide(
        policy or ApprovalPolicy(),
        customer_id=customer_id,
        recommendation_type=recommendation_type,
        base_risk=base_risk,
        requires_human_approval=requires_human_approval,
        auto_approve_requested=auto_approve_requested,
        estimated_monthly_savings=savings,
        one_time_cost=one_time_cost,
    )


def test_a_low_or_medium_risk_change_is_approved_automatically_when_asked_for() -> None:
    for risk in (RiskLevel.LOW, RiskLevel.MEDIUM):
        result = decision(base_risk=risk)
        assert result.auto_approve is True
        assert result.risk_level == risk
        assert "auto_approve was requested" in result.reason


def test_without_auto_approve_a_person_decides_whatever_the_risk() -> None:
    result = decision(auto_approve_requested=False)
    assert result.auto_approve is False
    assert "not requested" in result.reason


def test_a_type_that_cannot_be_undone_always_waits_for_a_person() -> None:
    result = decision(recommendation_type=T.TERMINATE_INSTANCE, base_risk=RiskLevel.HIGH, requires_human_approval=True)
    assert (result.auto_approve, result.risk_level) == (False, RiskLevel.HIGH)
    assert "terminate_instance cannot be fully undone" in result.reason
    assert "a person must approve" in result.reason


def test_savings_above_the_threshold_make_the_change_high_risk() -> None:
    result = decision(savings=1500.0)
    assert (result.auto_approve, result.risk_level) == (False, RiskLevel.HIGH)
    assert "$1,500.00/month" in result.reason
    assert decision(savings=1000.0).auto_approve is True  # at the threshold is not above it


def test_any_one_time_cost_makes_the_change_high_risk_by_default() -> None:
    result = decision(one_time_cost=120.0)
    assert (result.auto_approve, result.risk_level) == (False, RiskLevel.HIGH)
    assert "one-time cost ($120.00)" in result.reason


def test_a_customer_policy_can_limit_the_types_that_are_approved_automatically() -> None:
    policy = ApprovalPolicy.model_validate({"customers": {"bank": {"auto_approve_types": ["fix_config"]}}})
    assert decision(policy, customer_id="bank", recommendation_type=T.FIX_CONFIG).auto_approve is True
    held = decision(policy, customer_id="bank", recommendation_type=T.DELETE_VOLUME)
    assert held.auto_approve is False
    assert "customer bank does not auto-approve delete_volume" in held.reason
    # Other customers keep the defaults.
    assert decision(policy, customer_id="acme", recommendation_type=T.DELETE_VOLUME).auto_approve is True


def test_a_customer_policy_can_lower_the_highest_risk_approved_automatically() -> None:
    policy = ApprovalPolicy.model_validate({"customers": {"bank": {"max_auto_approve_risk": "low"}}})
    held = decision(policy, customer_id="bank", base_risk=RiskLevel.MEDIUM)
    assert held.auto_approve is False
    assert "medium risk is above" in held.reason
    assert decision(policy, customer_id="bank", base_risk=RiskLevel.LOW).auto_approve is True


def test_type_rules_apply_to_every_customer_and_a_customer_rule_comes_last() -> None:
    policy = ApprovalPolicy.model_validate(
        {
            "types": {"rightsize_database": {"high_risk_monthly_savings_usd": 100}},
            "customers": {"acme": {"high_risk_monthly_savings_usd": 5000}},
        }
    )
    assert (
        decision(policy, customer_id="other", recommendation_type=T.RIGHTSIZE_DATABASE, savings=200).auto_approve
        is False
    )
    assert (
        decision(policy, customer_id="acme", recommendation_type=T.RIGHTSIZE_DATABASE, savings=200).auto_approve is True
    )


def test_no_policy_may_auto_approve_high_risk() -> None:
    with pytest.raises(ValidationError, match="high-risk changes always wait for a person"):
        ApprovalPolicy.model_validate({"default": {"max_auto_approve_risk": "high"}})


def test_a_policy_with_an_unknown_field_or_type_is_refused() -> None:
    with pytest.raises(ValidationError):
        ApprovalPolicy.model_validate({"customers": {"acme": {"auto_approve_type": ["fix_config"]}}})
    with pytest.raises(ValidationError):
        ApprovalPolicy.model_validate({"types": {"delete_everything": {}}})


def test_settings_read_the_policy_and_the_approvers_from_the_environment() -> None:
    env = {
        EnvVar.EXECUTIONS_TABLE: "e",
        EnvVar.AUDIT_TABLE: "a",
        EnvVar.RECOMMENDATIONS_TABLE: "r",
        LIMITS_TABLE.env_var: "l",
        EnvVar.APPROVAL_POLICY: json.dumps({"customers": {"bank": {"auto_approve_types": []}}}),
        EnvVar.APPROVER_EMAILS: "finops@example.com, lead@example.com,",
    }
    settings = load_settings(env)
    assert settings.approval_policy.customers["bank"].auto_approve_types == []
    assert settings.approver_emails == ["finops@example.com", "lead@example.com"]


def test_a_broken_policy_in_the_environment_stops_the_function_with_the_reason() -> None:
    env = {
        EnvVar.EXECUTIONS_TABLE: "e",
        EnvVar.AUDIT_TABLE: "a",
        EnvVar.RECOMMENDATIONS_TABLE: "r",
        LIMITS_TABLE.env_var: "l",
        EnvVar.APPROVAL_POLICY: '{"default": {"max_auto_approve_risk": "high"}}',
    }
    with pytest.raises(RuntimeError, match="max_auto_approve_risk"):
        load_settings(env)


@given(
    recommendation_type=st.sampled_from(list(RecommendationType)),
    base_risk=st.sampled_from(list(RiskLevel)),
    requires_human_approval=st.booleans(),
    requested=st.booleans(),
    savings=st.none() | st.floats(min_value=0, max_value=1e7, allow_nan=False),
    cost=st.none() | st.floats(min_value=0, max_value=1e7, allow_nan=False),
    max_risk=st.none() | st.sampled_from([RiskLevel.LOW, RiskLevel.MEDIUM]),
)
def test_an_automatic_approval_is_only_ever_of_a_requested_change_below_high_risk(
    recommendation_type: RecommendationType,
    base_risk: RiskLevel,
    requires_human_approval: bool,
    requested: bool,
    savings: float | None,
    cost: float | None,
    max_risk: RiskLevel | None,
) -> None:
    policy = ApprovalPolicy.model_validate({"customers": {"acme": {"max_auto_approve_risk": max_risk}}})
    result = decision(
        policy,
        recommendation_type=recommendation_type,
        base_risk=base_risk,
        requires_human_approval=requires_human_approval,
        auto_approve_requested=requested,
        savings=savings,
        one_time_cost=cost,
    )
    assert result.reason
    if result.auto_approve:
        assert requested
        assert result.risk_level != RiskLevel.HIGH
        assert not requires_human_approval
        assert (savings or 0) <= 1000
        assert not cost


def test_a_partial_default_keeps_the_built_in_thresholds() -> None:
    policy = ApprovalPolicy.model_validate({"default": {"max_auto_approve_risk": "low"}})
    assert decision(policy, base_risk=RiskLevel.MEDIUM).auto_approve is False
    assert decision(policy, savings=5000.0).risk_level == RiskLevel.HIGH
