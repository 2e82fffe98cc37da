"""The functions' environment, modelled once and checked when a function starts."""

from __future__ import annotations

import json
import os
from typing import Annotated, Any

from pydantic import BaseModel, Field, ValidationError

from cost_engine.access import AccessPolicy
from cost_engine.approval_policy import ApprovalPolicy
from cost_engine.business_rules import BusinessRulesConfig
from cost_engine.models import MAX_SETTLE_MINUTES, MAX_WINDOW_DAYS, RecommendationType
from cost_engine.periods import Period
from cost_engine.topology import LIMITS_TABLE, EnvVar

# The bounds of what a deployment may choose, defined once: the functions' settings below, the CDK
# context checks (infra/context.py DeploymentContext) and the local runtime (whose values the functions
# check at start) all use these, so a value the functions would refuse fails the synth instead.
ApprovalTimeoutSeconds = Annotated[int, Field(ge=1)]
PurchaseLimitUsd = Annotated[float, Field(gt=0, allow_inf_nan=False)]
MaxConcurrentActing = Annotated[int, Field(ge=1, le=1000)]
ResourceCooldownSeconds = Annotated[int, Field(ge=0, le=86400)]
MaxActingSeconds = Annotated[int, Field(ge=1, le=86400)]
MaxRecommendationAgeDays = Annotated[int, Field(ge=1, le=3650)]
# The windows of the scheduled savings measurements, in days (cost_engine.savings): each a whole
# number of days up to the longest window a measurement may ask for.
GuardrailSettleMinutes = Annotated[int, Field(ge=0, le=MAX_SETTLE_MINUTES)]
SavingsMeasureDays = Annotated[tuple[Annotated[int, Field(ge=1, le=MAX_WINDOW_DAYS)], ...], Field(max_length=5)]
# ...and their defaults: the seed's limits, and a first cap on what RI purchases may commit.
DEFAULT_APPROVAL_TIMEOUT_SECONDS = 86400
DEFAULT_RI_PURCHASE_LIMIT_USD = 10_000.0
DEFAULT_RI_PURCHASE_LIMIT_PER_PERIOD_USD = 20_000.0
DEFAULT_MAX_CONCURRENT_ACTING = 10
DEFAULT_RESOURCE_COOLDOWN_SECONDS = 300
DEFAULT_MAX_ACTING_SECONDS = 1800
DEFAULT_MAX_RECOMMENDATION_AGE_DAYS = 30
# The seed's window is 30 days. The first look, a week after the change, compares 6 days before it with
# 6 after: those and the day of the change are what Cost Explorer's 14 days of resource-level data still
# hold once the last day's cost is final, so the first look reads the resource's own cost.
DEFAULT_SAVINGS_MEASURE_DAYS = (6, 30)
# A quarter of an hour: three of EC2's 5-minute datapoints after the change.
DEFAULT_GUARDRAIL_SETTLE_MINUTES = 15


class Settings(BaseModel):
    executions_table: str = Field(min_length=1)
    audit_table: str = Field(min_length=1)
    recommendations_table: str = Field(min_length=1)
    limits_table: str = Field(min_length=1)
    approval_topic_arn: str | None = None
    state_machine_arns: dict[str, str] = Field(default_factory=dict)
    approval_timeout_seconds: ApprovalTimeoutSeconds = DEFAULT_APPROVAL_TIMEOUT_SECONDS
    # Each type's checks have their own budget (its executor's `polling`); a value here replaces it
    # for every type (the local runtime's waits take no time, so it counts checks its own way).
    max_poll_attempts: int | None = Field(default=None, ge=1)
    api_base_url: str | None = None
    scheduler_role_arn: str | None = None
    ri_purchase_limit_usd: PurchaseLimitUsd = DEFAULT_RI_PURCHASE_LIMIT_USD
    # What RI purchases may commit per account and period, all executions together (cost_engine.purchase_limits).
    ri_purchase_limit_per_period_usd: PurchaseLimitUsd = DEFAULT_RI_PURCHASE_LIMIT_PER_PERIOD_USD
    ri_purchase_limit_period: Period = Period.MONTH
    approval_secret_arn: str | None = None
    approval_policy: ApprovalPolicy = Field(default_factory=ApprovalPolicy)
    approver_emails: list[str] = Field(default_factory=list)
    event_bus_name: str | None = None
    region: str = "us-east-1"
    # The seed's limits (see cost_engine.limits).
    max_concurrent_acting: MaxConcurrentActing = DEFAULT_MAX_CONCURRENT_ACTING
    resource_cooldown_seconds: ResourceCooldownSeconds = DEFAULT_RESOURCE_COOLDOWN_SECONDS
    max_acting_seconds: MaxActingSeconds = DEFAULT_MAX_ACTING_SECONDS
    # The pre-checks of every execution (see cost_engine.prechecks).
    business_rules: BusinessRulesConfig = Field(default_factory=BusinessRulesConfig)
    max_recommendation_age_days: MaxRecommendationAgeDays = DEFAULT_MAX_RECOMMENDATION_AGE_DAYS
    savings_measure_days: SavingsMeasureDays = DEFAULT_SAVINGS_MEASURE_DAYS
    guardrail_settle_minutes: GuardrailSettleMinutes = DEFAULT_GUARDRAIL_SETTLE_MINUTES
    own_role_arn: str | None = None
    # Who may do what through the API (cost_engine.access).
    access_policy: AccessPolicy = Field(default_factory=AccessPolicy)
    # An executor function's own type (the others run no steps, and have none).
    recommendation_type: RecommendationType | None = None


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {
        "executions_table": env.get(EnvVar.EXECUTIONS_TABLE, ""),
        "audit_table": env.get(EnvVar.AUDIT_TABLE, ""),
        "recommendations_table": env.get(EnvVar.RECOMMENDATIONS_TABLE, ""),
        "limits_table": env.get(LIMITS_TABLE.env_var, ""),
        "approval_topic_arn": env.get(EnvVar.APPROVAL_TOPIC_ARN) or None,
        "state_machine_arns": env.get(EnvVar.STATE_MACHINE_ARNS) or "{}",
        "api_base_url": env.get(EnvVar.API_BASE_URL) or None,
        "scheduler_role_arn": env.get(EnvVar.SCHEDULER_ROLE_ARN) or None,
        "approval_secret_arn": env.get(EnvVar.APPROVAL_SECRET_ARN) or None,
        "event_bus_name": env.get(EnvVar.EVENT_BUS_NAME) or None,
        "own_role_arn": env.get(EnvVar.OWN_ROLE_ARN) or None,
        "approver_emails": [e.strip() for e in (env.get(EnvVar.APPROVER_EMAILS) or "").split(",") if e.strip()],
        "region": env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
    }
    if (days := env.get(EnvVar.SAVINGS_MEASURE_DAYS)) is not None:
        values["savings_measure_days"] = [d.strip() for d in days.split(",") if d.strip()]
    for field_name, var in (
        ("approval_timeout_seconds", EnvVar.APPROVAL_TIMEOUT_SECONDS),
        ("max_poll_attempts", EnvVar.MAX_POLL_ATTEMPTS),
        ("ri_purchase_limit_usd", EnvVar.RI_PURCHASE_LIMIT_USD),
        ("ri_purchase_limit_per_period_usd", EnvVar.RI_PURCHASE_LIMIT_PER_PERIOD_USD),
        ("ri_purchase_limit_period", EnvVar.RI_PURCHASE_LIMIT_PERIOD),
        ("max_concurrent_acting", EnvVar.MAX_CONCURRENT_ACTING),
        ("resource_cooldown_seconds", EnvVar.RESOURCE_COOLDOWN_SECONDS),
        ("max_acting_seconds", EnvVar.MAX_ACTING_SECONDS),
        ("max_recommendation_age_days", EnvVar.MAX_RECOMMENDATION_AGE_DAYS),
        ("guardrail_settle_minutes", EnvVar.GUARDRAIL_SETTLE_MINUTES),
        ("recommendation_type", EnvVar.RECOMMENDATION_TYPE),
    ):
        if env.get(var):
            values[field_name] = env[var]
    try:
        values["state_machine_arns"] = json.loads(values["state_machine_arns"])
        if env.get(EnvVar.APPROVAL_POLICY):
            values["approval_policy"] = json.loads(env[EnvVar.APPROVAL_POLICY])
        if env.get(EnvVar.BUSINESS_RULES):
            values["business_rules"] = json.loads(env[EnvVar.BUSINESS_RULES])
        if env.get(EnvVar.ACCESS_POLICY):
            values["access_policy"] = json.loads(env[EnvVar.ACCESS_POLICY])
        return Settings.model_validate(values)
    except (ValidationError, ValueError) as error:
        raise RuntimeError(f"the function's environment is incomplete or wrong: {error}") from error
