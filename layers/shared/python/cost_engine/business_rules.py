"""What a deployment allows the engine to change, per customer: its business rules (the allow and
deny lists by type, account and tag, and what a CloudFormation stack means for a change). The
settings read them and the pre-checks apply them (cost_engine.prechecks); this module depends on
neither."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from cost_engine.models import AccountId, RecommendationType, StrictModel

CustomerId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
TagKey = Annotated[str, StringConstraints(min_length=1, max_length=128)]
TagValue = Annotated[str, StringConstraints(max_length=256)]
ANY_VALUE = "*"


class DependencyRule(StrEnum):
    """What a dependency means for a type's change."""

    REFUSE = "refuse"
    WARN = "warn"
    IGNORE = "ignore"


class BusinessRules(StrictModel):
    """A customer's rules for what the engine may change. A field left out sets no rule."""

    # Only these types may run (None: every type).
    allow_types: list[RecommendationType] | None = None
    deny_types: list[RecommendationType] | None = None
    allow_accounts: list[AccountId] | None = None
    deny_accounts: list[AccountId] | None = None
    # The resource must carry one of these tags (key → accepted values, "*" for any value).
    # At least one tag: an empty map would read as "no rule" to some and "nothing allowed" to others.
    allow_tags: dict[TagKey, list[TagValue]] | None = Field(default=None, min_length=1)
    # A resource carrying one of these tags is refused (key → values, "*" for any value).
    deny_tags: dict[TagKey, list[TagValue]] | None = None
    # What a resource of a CloudFormation stack means for every type: "refuse" it, "warn" and go on
    # (the customer accepts the drift), or "ignore" it. Left out: each type's own rule (refused by
    # the types that change what a template declares, a warning for schedule_instance).
    cloudformation_managed: DependencyRule | None = None


class BusinessRulesConfig(StrictModel):
    """The deployment's rules: `default` for every customer, then each customer's own. A customer's
    allow lists replace the default's; deny lists add up (a denial never gets lost by being more
    specific)."""

    default: BusinessRules = Field(default_factory=BusinessRules)
    customers: dict[CustomerId, BusinessRules] = Field(default_factory=dict)

    def for_customer(self, customer_id: str) -> BusinessRules:
        own = self.customers.get(customer_id) or BusinessRules()
        default = self.default

        def either(name: str) -> Any:
            value = getattr(own, name)
            return value if value is not None else getattr(default, name)

        def both_lists(name: str) -> list[Any]:
            return [*(getattr(default, name) or []), *(getattr(own, name) or [])]

        deny_tags: dict[str, list[str]] = {}
        for level in (default.deny_tags, own.deny_tags):
            for key, values in (level or {}).items():
                deny_tags.setdefault(key, []).extend(values)
        return BusinessRules(
            allow_types=either("allow_types"),
            deny_types=both_lists("deny_types"),
            allow_accounts=either("allow_accounts"),
            deny_accounts=both_lists("deny_accounts"),
            allow_tags=either("allow_tags"),
            deny_tags=deny_tags,
            cloudformation_managed=either("cloudformation_managed"),
        )
