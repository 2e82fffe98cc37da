"""What a deployment chooses through the CDK context, checked when the app synthesizes."""

from __future__ import annotations

import json
import re
from typing import Annotated

from constructs import Node
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from cost_engine.access import AccessPolicy
from cost_engine.approval_policy import ApprovalPolicy
from cost_engine.business_rules import BusinessRulesConfig
from cost_engine.periods import Period
from cost_engine.settings import (
    DEFAULT_GUARDRAIL_SETTLE_MINUTES,
    DEFAULT_MAX_ACTING_SECONDS,
    DEFAULT_MAX_CONCURRENT_ACTING,
    DEFAULT_MAX_RECOMMENDATION_AGE_DAYS,
    DEFAULT_RESOURCE_COOLDOWN_SECONDS,
    DEFAULT_RI_PURCHASE_LIMIT_PER_PERIOD_USD,
    DEFAULT_RI_PURCHASE_LIMIT_USD,
    DEFAULT_SAVINGS_MEASURE_DAYS,
    ApprovalTimeoutSeconds,
    GuardrailSettleMinutes,
    MaxActingSeconds,
    MaxConcurrentActing,
    MaxRecommendationAgeDays,
    PurchaseLimitUsd,
    ResourceCooldownSeconds,
    SavingsMeasureDays,
)

# The state machines' TimeoutSeconds (topology.STATE_MACHINE_TIMEOUT_SECONDS) leaves an hour for the
# acting phase after an approval wait of at most this long.
MAX_APPROVAL_TIMEOUT_SECONDS = 24 * 3600


def _email_address(value: str) -> str:
    # Only what catches a slip (a missing "@", two addresses run together): SNS asks each address
    # to confirm its subscription anyway.
    if "@" not in value or any(character.isspace() for character in value):
        raise ValueError(f"{value!r} is not an email address")
    return value


def _https_url(value: str) -> str:
    if not re.fullmatch(r"https://[^\s/?#]+(/[^\s?#]*)?", value):
        raise ValueError(f"{value!r} is not an https:// URL without a query or fragment")
    return value.rstrip("/")


class DeploymentContext(BaseModel):
    """What a deployment chooses with `cdk deploy -c name=value` (or cdk.json's "context").

    Checked when the app synthesizes, so a typo fails there instead of in the functions on AWS. The
    field names are the context keys.
    """

    model_config = ConfigDict(frozen=True)

    # Who the approval topic mails: a list, or one comma-separated string as `-c` passes it.
    approver_emails: tuple[Annotated[str, AfterValidator(_email_address)], ...] = ()
    # cost_engine.approval_policy.ApprovalPolicy, as an object or as its JSON. Unset: its defaults.
    approval_policy: ApprovalPolicy | None = None
    # How long an approval request waits for a person; also how long its link stays valid.
    approval_timeout_seconds: Annotated[ApprovalTimeoutSeconds, Field(le=MAX_APPROVAL_TIMEOUT_SECONDS)] = (
        MAX_APPROVAL_TIMEOUT_SECONDS
    )
    # Where approval links point, e.g. a custom domain. Unset: the API's own execute-api address.
    api_base_url: Annotated[str, AfterValidator(_https_url)] | None = None
    # The safety limits (cost_engine.limits), the seed's values by default; the bounds are the
    # functions' own (cost_engine.settings), so a value the functions would refuse fails the synth instead.
    max_concurrent_acting: MaxConcurrentActing = DEFAULT_MAX_CONCURRENT_ACTING
    resource_cooldown_seconds: ResourceCooldownSeconds = DEFAULT_RESOURCE_COOLDOWN_SECONDS
    max_acting_seconds: MaxActingSeconds = DEFAULT_MAX_ACTING_SECONDS
    # cost_engine.business_rules.BusinessRulesConfig, as an object or as its JSON. Unset: no rules.
    business_rules: BusinessRulesConfig | None = None
    # What one RI purchase may cost, and what all of an account's may commit per period
    # (cost_engine.purchase_limits): the same bounds as the functions' settings.
    ri_purchase_limit_usd: PurchaseLimitUsd = DEFAULT_RI_PURCHASE_LIMIT_USD
    ri_purchase_limit_per_period_usd: PurchaseLimitUsd = DEFAULT_RI_PURCHASE_LIMIT_PER_PERIOD_USD
    ri_purchase_limit_period: Period = Period.MONTH
    # Recommendations older than this are refused (409 at execute, refused again at validation).
    max_recommendation_age_days: MaxRecommendationAgeDays = DEFAULT_MAX_RECOMMENDATION_AGE_DAYS
    # After how many days a completed execution's saving is measured from the bill (a list, or "7,30").
    savings_measure_days: SavingsMeasureDays = DEFAULT_SAVINGS_MEASURE_DAYS
    # How long a change that can hurt a workload is watched before it is complete (0: only when asked).
    guardrail_settle_minutes: GuardrailSettleMinutes = DEFAULT_GUARDRAIL_SETTLE_MINUTES
    # cost_engine.access.AccessPolicy, as an object or as its JSON: the roles per customer of each IAM
    # principal. Unset: no principal may do anything through the API but open approval links.
    access: AccessPolicy | None = None

    @field_validator("savings_measure_days", mode="before")
    @classmethod
    def _split_days(cls, value: object) -> object:
        return [d.strip() for d in value.split(",") if d.strip()] if isinstance(value, str) else value

    @field_validator("approver_emails", mode="before")
    @classmethod
    def _split_addresses(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list | tuple):
            # An address listed twice is subscribed once.
            return tuple(dict.fromkeys(str(v).strip() for v in value if str(v).strip()))
        return value

    @field_validator("approval_policy", "business_rules", "access", mode="before")
    @classmethod
    def _parse_json(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError as error:
                raise ValueError(f"not JSON ({error})") from None
        return value

    @classmethod
    def of(cls, node: Node) -> DeploymentContext:
        values = {name: node.try_get_context(name) for name in cls.model_fields}
        try:
            return cls.model_validate({name: value for name, value in values.items() if value is not None})
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}" for problem in error.errors()
            )
            raise ValueError(f"invalid CDK context (cdk -c name=value or cdk.json): {problems}") from None
