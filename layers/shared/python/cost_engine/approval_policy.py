"""Who decides: the policy that lets a low-risk execution be approved automatically, or not.

An execution is approved automatically only when its request asks for `auto_approve` *and* the
policy allows it. High-risk executions (the irreversible types, and anything whose savings or
one-time cost passes a threshold) always wait for a person: a customer's or a type's rules can allow
more or less than the defaults, but never the automatic approval of a high-risk change. Every
decision comes with its reason, which the execution records.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints, field_validator

from cost_engine.models import PolicyDecision, RecommendationType, RiskLevel, StrictModel

RISK_ORDER = {RiskLevel.LOW: 0, RiskLevel.MEDIUM: 1, RiskLevel.HIGH: 2}
CustomerId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


class PolicyRules(StrictModel):
    """One level of the policy. A field left out inherits from the level above."""

    # Types that may be approved automatically at all (None: every type).
    auto_approve_types: list[RecommendationType] | None = None
    # The highest risk that may be approved automatically. HIGH is not allowed: high risk always
    # waits for a person.
    max_auto_approve_risk: RiskLevel | None = None
    # Above this estimated monthly saving the change is big enough to count as high risk.
    high_risk_monthly_savings_usd: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    # Above this one-time cost (e.g. an upfront payment) the change counts as high risk.
    high_risk_one_time_cost_usd: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    # Whether the principal that requested an execution may approve it too (four eyes: not by default).
    allow_self_approval: bool | None = None

    @field_validator("max_auto_approve_risk")
    @classmethod
    def _never_high(cls, value: RiskLevel | None) -> RiskLevel | None:
        if value == RiskLevel.HIGH:
            raise ValueError("cannot be 'high': high-risk changes always wait for a person")
        return value


# What applies where the deployment's policy says nothing.
BUILT_IN_RULES = PolicyRules(
    auto_approve_types=None,
    max_auto_approve_risk=RiskLevel.MEDIUM,
    high_risk_monthly_savings_usd=1000.0,
    high_risk_one_time_cost_usd=0.0,
    allow_self_approval=False,
)


class ApprovalPolicy(StrictModel):
    """The deployment's policy: its defaults, then per type, then per customer (later levels win;
    a field a level leaves out comes from the level before, and finally from BUILT_IN_RULES)."""

    default: PolicyRules = Field(default_factory=PolicyRules)
    # Per type, for every customer.
    types: dict[RecommendationType, PolicyRules] = Field(default_factory=dict)
    customers: dict[CustomerId, PolicyRules] = Field(default_factory=dict)

    def rules_for(self, customer_id: str, recommendation_type: RecommendationType) -> PolicyRules:
        merged = BUILT_IN_RULES.model_dump()
        for level in (self.default, self.types.get(recommendation_type), self.customers.get(customer_id)):
            if level is not None:
                merged |= level.model_dump(exclude_none=True)
        return PolicyRules.model_validate(merged)


def decide(
    policy: ApprovalPolicy,
    *,
    customer_id: str,
    recommendation_type: RecommendationType,
    base_risk: RiskLevel,
    requires_human_approval: bool,
    auto_approve_requested: bool,
    estimated_monthly_savings: float | None,
    one_time_cost: float | None,
) -> PolicyDecision:
    rules = policy.rules_for(customer_id, recommendation_type)
    risk = base_risk
    risk_reasons: list[str] = []
    if requires_human_approval:
        risk = RiskLevel.HIGH
        risk_reasons.append(f"{recommendation_type.value} cannot be fully undone")
    savings_limit = rules.high_risk_monthly_savings_usd
    if savings_limit is not None and (estimated_monthly_savings or 0) > savings_limit:
        risk = RiskLevel.HIGH
        risk_reasons.append(
            f"its estimated savings (${estimated_monthly_savings:,.2f}/month) are above ${savings_limit:,.2f}/month"
        )
    cost_limit = rules.high_risk_one_time_cost_usd
    if cost_limit is not None and (one_time_cost or 0) > cost_limit:
        risk = RiskLevel.HIGH
        risk_reasons.append(f"its one-time cost (${one_time_cost:,.2f}) is above ${cost_limit:,.2f}")

    def human(reason: str) -> PolicyDecision:
        return PolicyDecision(risk_level=risk, auto_approve=False, reason=reason)

    high = f"high risk ({'; '.join(risk_reasons) or f'{recommendation_type.value} is high risk'})"
    if not auto_approve_requested:
        return human(
            "auto_approve was not requested"
            + (f" and it is {high}" if risk == RiskLevel.HIGH else "")
            + ": a person approves"
        )
    if risk == RiskLevel.HIGH:
        return human(f"{high}: a person must approve, whatever auto_approve says")
    if rules.auto_approve_types is not None and recommendation_type not in rules.auto_approve_types:
        return human(f"the policy for customer {customer_id} does not auto-approve {recommendation_type.value}")
    max_risk = rules.max_auto_approve_risk or RiskLevel.LOW
    if RISK_ORDER[risk] > RISK_ORDER[max_risk]:
        return human(
            f"{risk.value} risk is above what the policy for customer {customer_id} auto-approves ({max_risk.value})"
        )
    return PolicyDecision(
        risk_level=risk,
        auto_approve=True,
        reason=f"auto_approve was requested and the policy allows {risk.value}-risk {recommendation_type.value}",
    )
