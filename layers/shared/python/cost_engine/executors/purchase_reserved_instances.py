"""`purchase_reserved_instances`: buy the one matching EC2 Reserved Instance offering, at most once.

A purchase cannot be undone, so this type always waits for a person (whatever `auto_approve` says),
is refused above the configured dollar cap, counts against what all of the account's purchases may
commit per period (reserved when a person approves, checked again before buying:
`cost_engine.purchase_limits`), asks AWS with `DryRun` first, and buys at most once per execution.
Its "rollback" is a manual step (sell the reservation on the RI Marketplace) that the engine records
and shows, never pretends to carry out.

`resource_id` names the steady usage the reservation covers, as the recommendation engine names it:
normally the instance type itself (`m5.large`), or the id of the fleet or group whose baseline it
covers. `parameters.instance_type` says what is bought; when `resource_id` is an instance type it
must be the same one, so that a recommendation cannot say one thing and buy another.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal

from botocore.exceptions import ClientError
from pydantic import Field, StrictInt, StringConstraints

from cost_engine.aws import aws_failure, error_code
from cost_engine.cost_scope import AMORTIZED, CostScope
from cost_engine.ec2_instances import EXECUTION_TAG
from cost_engine.errors import ActionFailed
from cost_engine.executors.base import BaseExecutor, Permission, StepRecord
from cost_engine.executors.registry import register_executor
from cost_engine.models import (
    ExecutionPlan,
    ExecutionRecord,
    Recommendation,
    RecommendationType,
    RiskLevel,
    RollbackPlan,
    StrictModel,
    ValidationResult,
    VerificationResult,
)
from cost_engine.prechecks import Resource, ResourceKind
from cost_engine.pricing import price_catalog
from cost_engine.purchase_limits import PurchaseLimits

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import FilterTypeDef, ReservedInstancesOfferingTypeDef, ReservedInstancesTypeDef

RECOMMENDATION_TAG = "cost-engine:recommendation-id"
TERM_SECONDS = {"1yr": 31_536_000, "3yr": 94_608_000}
# States in which a reservation is held or being bought: a second purchase must not follow.
HELD_STATES = ["payment-pending", "active", "queued"]
# What a retried purchase step looks for: a failed payment was this execution's attempt too.
ATTEMPTED_STATES = [*HELD_STATES, "payment-failed"]
# Slack for the clocks of the engine and of AWS when matching a purchase by its start time.
CLOCK_SLACK = timedelta(minutes=1)
_INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")


class PurchaseReservedInstancesParameters(StrictModel):
    """What to buy. Each field narrows the offering lookup, which must end with exactly one match."""

    instance_type: Annotated[str, StringConstraints(pattern=_INSTANCE_TYPE.pattern)]
    # The platform, as AWS names it: "Linux/UNIX", "Windows", "Red Hat Enterprise Linux" …
    product_description: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "Linux/UNIX"
    tenancy: Literal["default", "dedicated"] = "default"
    term: Literal["1yr", "3yr"]
    offering_type: Literal["No Upfront", "Partial Upfront", "All Upfront"]
    offering_class: Literal["standard", "convertible"] = "standard"
    # AWS lets an account buy 20 regional reservations per region per month by default.
    instance_count: StrictInt = Field(ge=1, le=20)
    # Set: a zonal reservation (capacity reserved in that zone); unset: a regional one.
    availability_zone: Annotated[str, StringConstraints(pattern=r"^[a-z]{2}(-gov)?-[a-z]+-[0-9][a-z]$")] | None = None


class Offering(StepRecord):
    """The one AWS offering that matches the parameters, as recorded before buying."""

    offering_id: str
    instance_type: str
    product_description: str
    tenancy: str
    duration_seconds: int
    offering_class: str
    offering_type: str | None
    # "Region" or "Availability Zone", as AWS names the scope.
    scope: str
    availability_zone: str | None
    upfront_usd: float
    hourly_usd: float
    currency: str


class PurchaseCost(StepRecord):
    """What the purchase costs over its whole term: upfront + recurring x term hours, x count."""

    instance_count: int
    term_hours: int
    upfront_usd: float
    hourly_usd_each: float
    recurring_usd: float
    total_usd: float


class PurchaseBackup(StepRecord):
    """Nothing is backed up: the offering and its price, recorded before buying."""

    execution_id: str
    recommendation_id: str
    nothing_to_back_up: str
    offering: Offering
    instance_count: int
    cost: PurchaseCost
    # No purchase of this execution started before it. Kept as the string datetime.isoformat() wrote
    # (a datetime field would be stored in pydantic's own form, changing the stored JSON).
    not_before: str


class Purchase(StepRecord):
    """The reservation the execution bought, or found it had already bought."""

    offering_id: str
    instance_count: int
    cost: PurchaseCost
    reversible: bool
    reserved_instances_id: str
    purchased_now: bool
    # Set when a retry found the purchase rather than made it: how it was found.
    found_by: str | None = None
    # Set when bought now: the period of the RI purchase limit it counts in.
    limit_period: str | None = None
    # Set when tagging failed (or, for a found purchase, was tried: None then means it succeeded).
    tag_error: str | None = None


class NothingBought(StepRecord):
    """The rollback of an execution that bought nothing: nothing to undo."""

    purchased: Literal[False]
    note: str


class ReservationBought(StepRecord):
    """The rollback of an execution that bought: the purchase stands, and the manual step to undo it."""

    purchased: Literal[True]
    reversible: bool
    reserved_instances_id: str
    instance_count: int
    state: str | None
    manual_step: str


PurchaseRollback = NothingBought | ReservationBought


@dataclass(frozen=True)
class PurchaseFindings:
    """What validation finds for a purchase, which changes no existing resource: the reservations
    the recommendation already bought, and the one matching offering (or why there is not one)."""

    held: list[ReservedInstancesTypeDef]
    offering: Offering | None
    why_not: str | None


def _hourly(offering: ReservedInstancesOfferingTypeDef | ReservedInstancesTypeDef | dict[str, Any]) -> float:
    """The recurring hourly charge of one reservation (AWS puts it in RecurringCharges nowadays)."""
    recurring = sum(
        float(c.get("Amount", 0.0)) for c in offering.get("RecurringCharges", []) if c.get("Frequency") == "Hourly"
    )
    return float(offering.get("UsagePrice", 0.0)) + recurring


def _offering_record(offering: ReservedInstancesOfferingTypeDef) -> Offering:
    return Offering(
        offering_id=offering["ReservedInstancesOfferingId"],
        instance_type=offering["InstanceType"],
        product_description=offering["ProductDescription"],
        tenancy=offering.get("InstanceTenancy", "default"),
        duration_seconds=int(offering["Duration"]),
        offering_class=offering.get("OfferingClass", "standard"),
        offering_type=offering.get("OfferingType"),
        scope=offering.get("Scope", "Region"),
        availability_zone=offering.get("AvailabilityZone"),
        upfront_usd=float(offering.get("FixedPrice", 0.0)),
        hourly_usd=_hourly(offering),
        currency=offering.get("CurrencyCode", "USD"),
    )


def _cost(offering: Offering, count: int) -> PurchaseCost:
    term_hours = offering.duration_seconds // 3600
    upfront = offering.upfront_usd * count
    recurring = offering.hourly_usd * term_hours * count
    return PurchaseCost(
        instance_count=count,
        term_hours=term_hours,
        upfront_usd=round(upfront, 2),
        hourly_usd_each=offering.hourly_usd,
        recurring_usd=round(recurring, 2),
        total_usd=round(upfront + recurring, 2),
    )


def _term(duration_seconds: int) -> str:
    return next((name for name, seconds in TERM_SECONDS.items() if seconds == duration_seconds), f"{duration_seconds}s")


def _describe_offering(offering: Offering, count: int) -> str:
    where = offering.availability_zone or "regional"
    return (
        f"{count} x {offering.instance_type} {offering.product_description} "
        f"{offering.offering_class} reserved instance(s), {_term(offering.duration_seconds)}, "
        f"{offering.offering_type}, {offering.tenancy} tenancy, {where}"
    )


@register_executor
class PurchaseReservedInstancesExecutor(
    BaseExecutor[PurchaseReservedInstancesParameters, PurchaseFindings, PurchaseBackup, Purchase, PurchaseRollback]
):
    recommendation_type = RecommendationType.PURCHASE_RESERVED_INSTANCES
    savings_method = (
        "commitment: the amortized cost of the instance type's usage in the account and region before, "
        "against after (the reservation's utilization and the on-demand spend it replaced)"
    )
    flow = (
        "Validate → (dry run → report) → approval by a person (always) → record the offering → "
        "DryRun, then buy at most once → poll until active → verify → record; Catch → rollback (a "
        "recorded manual step: a purchase cannot be undone)."
    )
    risk_level = RiskLevel.HIGH
    # The backup is the record of the offering: complete once written.
    backup_waits = False
    requires_human_approval = True
    permissions = (
        # Describe calls take no resource ARN.
        Permission(
            ("ec2:DescribeReservedInstancesOfferings", "ec2:DescribeReservedInstances", "ec2:DescribeInstances")
        ),
        # PurchaseReservedInstancesOffering supports no resource-level permissions either.
        Permission(("ec2:PurchaseReservedInstancesOffering",)),
        # Tags on the reservations it bought, and only the engine's own tag keys.
        Permission(
            ("ec2:CreateTags",),
            ("arn:{partition}:ec2:{region}:{account}:reserved-instances/*",),
            conditions={"ForAllValues:StringLike": {"aws:TagKeys": ["cost-engine:*"]}},
        ),
    )

    # -- reading -------------------------------------------------------------------------------

    def _limit(self) -> float | None:
        return self.settings.ri_purchase_limit_usd if self.settings is not None else None

    def _claimed_by_others(self, recommendation: Recommendation, execution_id: str) -> frozenset[str]:
        if self.settings is None:
            return frozenset()
        return self._purchase_limits().claimed_by_others(recommendation.account_id or "", execution_id)

    def _purchase_limits(self) -> PurchaseLimits:
        if self.settings is None:
            raise ActionFailed("no settings: the RI purchase limit per period cannot be checked, nothing is bought")
        return PurchaseLimits.from_settings(self.settings)

    def _offerings(self, params: PurchaseReservedInstancesParameters) -> list[ReservedInstancesOfferingTypeDef]:
        """The AWS offerings that match every parameter, in the scope asked for (regional or zonal)."""
        duration = TERM_SECONDS[params.term]
        request: dict[str, Any] = {
            "InstanceType": params.instance_type,
            "ProductDescription": params.product_description,
            "InstanceTenancy": params.tenancy,
            "OfferingClass": params.offering_class,
            "OfferingType": params.offering_type,
            "MinDuration": duration,
            "MaxDuration": duration,
            # Marketplace offerings are other customers' leftovers, with odd terms and prices.
            "IncludeMarketplace": False,
        }
        if params.availability_zone:
            request["AvailabilityZone"] = params.availability_zone
        found: list[ReservedInstancesOfferingTypeDef] = []
        try:
            pages = self.clients.ec2.get_paginator("describe_reserved_instances_offerings").paginate(**request)
            for page in pages:
                found += page.get("ReservedInstancesOfferings", [])
        except ClientError as error:
            raise aws_failure("DescribeReservedInstancesOfferings", error) from error
        wanted_scope = "Availability Zone" if params.availability_zone else "Region"
        return [
            o
            for o in found
            if o.get("Scope", "Region") == wanted_scope
            and int(o.get("Duration", 0)) == duration
            and not o.get("Marketplace")
        ]

    def _what_exists(self, params: PurchaseReservedInstancesParameters) -> str:
        """What AWS does offer for the instance type, so a refusal can say what to change."""
        try:
            request: dict[str, Any] = {"InstanceType": params.instance_type, "IncludeMarketplace": False}
            pages = self.clients.ec2.get_paginator("describe_reserved_instances_offerings").paginate(**request)
            offered = [o for page in pages for o in page.get("ReservedInstancesOfferings", [])]
        except ClientError as error:
            raise aws_failure("DescribeReservedInstancesOfferings", error) from error
        if not offered:
            return f"AWS offers no reserved instances of {params.instance_type} here: check the instance type"

        def values(key: str) -> str:
            return ", ".join(sorted({str(o.get(key)) for o in offered}))

        terms = ", ".join(sorted({_term(int(o.get("Duration", 0))) for o in offered}))
        return (
            f"offered for {params.instance_type}: product_description {values('ProductDescription')}; "
            f"tenancy {values('InstanceTenancy')}; term {terms}; offering_class {values('OfferingClass')}; "
            f"offering_type {values('OfferingType')}"
        )

    def _the_offering(self, params: PurchaseReservedInstancesParameters) -> tuple[Offering | None, str | None]:
        """(the one matching offering, None) or (None, why there is not exactly one)."""
        matches = self._offerings(params)
        wanted = (
            f"{params.instance_type} {params.product_description}, {params.tenancy} tenancy, {params.term}, "
            f"{params.offering_class}, {params.offering_type}, "
            + (f"zonal in {params.availability_zone}" if params.availability_zone else "regional")
        )
        if not matches:
            return None, f"no reserved instance offering matches ({wanted}) in {self.clients.region}: " + (
                self._what_exists(params)
            )
        if len(matches) > 1:
            ids = ", ".join(o["ReservedInstancesOfferingId"] for o in matches)
            return None, (
                f"{len(matches)} offerings match ({wanted}): {ids}: narrow the parameters "
                "(availability_zone, offering_class) until exactly one matches"
            )
        return _offering_record(matches[0]), None

    def _held_for_recommendation(self, recommendation_id: str) -> list[ReservedInstancesTypeDef]:
        return self._reserved(
            [
                {"Name": f"tag:{RECOMMENDATION_TAG}", "Values": [recommendation_id]},
                {"Name": "state", "Values": HELD_STATES},
            ]
        )

    def _reserved(
        self, filters: list[FilterTypeDef] | None = None, ids: list[str] | None = None
    ) -> list[ReservedInstancesTypeDef]:
        request: dict[str, Any] = {}
        if filters:
            request["Filters"] = filters
        if ids:
            request["ReservedInstancesIds"] = ids
        try:
            return self.clients.ec2.describe_reserved_instances(**request).get("ReservedInstances", [])
        except ClientError as error:
            if ids and error_code(error) in ("InvalidReservedInstancesId", "InvalidReservedInstancesId.NotFound"):
                return []
            raise aws_failure("DescribeReservedInstances", error) from error

    def _running_instances(self, params: PurchaseReservedInstancesParameters) -> int:
        filters: list[FilterTypeDef] = [
            {"Name": "instance-type", "Values": [params.instance_type]},
            {"Name": "instance-state-name", "Values": ["running"]},
        ]
        if params.availability_zone:
            filters.append({"Name": "availability-zone", "Values": [params.availability_zone]})
        pages = self.clients.ec2.get_paginator("describe_instances").paginate(Filters=filters)
        # Tenancy is compared here rather than filtered: every instance has it in its placement.
        return sum(
            1
            for page in pages
            for r in page.get("Reservations", [])
            for i in r.get("Instances", [])
            if i.get("Placement", {}).get("Tenancy", "default") == params.tenancy
        )

    # -- validate and plan ---------------------------------------------------------------------

    def resource(self, recommendation: Recommendation) -> Resource:
        # A purchase changes no existing resource: its resource_id names the usage it covers.
        return Resource(ResourceKind.NONE, recommendation.resource_id)

    def before_approval(self, recommendation: Recommendation, record: ExecutionRecord) -> None:
        # The account's purchases in this period, this one included, must fit under the limit.
        self._purchase_limits().reserve(record)

    def find(self, recommendation: Recommendation, params: PurchaseReservedInstancesParameters) -> PurchaseFindings:
        # Never None: a purchase has no resource that can be missing, and a missing offering is one
        # refusal among the others `check` gives.
        held = self._held_for_recommendation(recommendation.recommendation_id)
        offering, why_not = self._the_offering(params)
        return PurchaseFindings(held=held, offering=offering, why_not=why_not)

    def check(
        self, recommendation: Recommendation, params: PurchaseReservedInstancesParameters, found: PurchaseFindings
    ) -> ValidationResult:
        errors: list[str] = []
        warnings: list[str] = []
        resource = recommendation.resource_id
        if _INSTANCE_TYPE.match(resource) and resource != params.instance_type:
            errors.append(
                f"the recommendation is for {resource} but parameters.instance_type is {params.instance_type}: "
                "make them the same"
            )
        # A repeated request for the same recommendation must not buy a second time.
        for held in found.held:
            errors.append(
                f"recommendation {recommendation.recommendation_id} already bought reserved instances "
                f"{held['ReservedInstancesId']} ({held.get('InstanceCount')} x {held.get('InstanceType')}, "
                f"{held.get('State')}, execution {_tag(held, EXECUTION_TAG) or 'unknown'}): "
                "register a new recommendation to buy more"
            )
        offering = found.offering
        if offering is None:
            errors.append(str(found.why_not))
        else:
            cost = _cost(offering, params.instance_count)
            limit = self._limit()
            if limit is None:
                errors.append(
                    "no RI purchase limit is configured (ri_purchase_limit_usd): nothing is bought without one"
                )
            elif cost.total_usd > limit:
                errors.append(
                    f"the purchase would cost ${cost.total_usd:,.2f} over its term (upfront "
                    f"${cost.upfront_usd:,.2f} + ${cost.recurring_usd:,.2f} recurring), above the RI purchase "
                    f"limit of ${limit:,.2f} (ri_purchase_limit_usd): lower instance_count, choose another term or "
                    "payment option, or raise the limit"
                )
            # Alone above what all of the account's purchases may commit in a period: it never fits.
            if self.settings is not None and cost.total_usd > self.settings.ri_purchase_limit_per_period_usd:
                errors.append(
                    f"the purchase would cost ${cost.total_usd:,.2f} over its term, above the limit of "
                    f"${self.settings.ri_purchase_limit_per_period_usd:,.2f} per "
                    f"{self.settings.ri_purchase_limit_period.value} for all RI purchases of the account "
                    "(ri_purchase_limit_per_period_usd): lower instance_count, or raise the limit"
                )
            if offering.offering_class == "convertible":
                warnings.append(
                    "convertible reserved instances cannot be sold on the RI Marketplace: once bought they can "
                    "only be exchanged"
                )
        running = self._running_instances(params)
        if running < params.instance_count:
            warnings.append(
                f"only {running} running {params.instance_type} instance(s) ({params.tenancy} tenancy"
                + (f", {params.availability_zone}" if params.availability_zone else "")
                + f") for {params.instance_count} reservation(s): a reservation is paid for whether it is used or not"
            )
        if errors:
            return self._invalid(errors, warnings)
        return ValidationResult(valid=True, warnings=warnings, risk_level=self.risk_level, estimated_duration=5)

    def _monthly_savings(
        self, recommendation: Recommendation, offering: Offering, count: int
    ) -> tuple[float | None, str]:
        """Savings against on-demand, when the catalog has the comparable on-demand price."""
        catalog = price_catalog()
        # The catalog holds us-east-1 Linux, shared-tenancy prices: compare only like with like.
        comparable = (
            recommendation.region == "us-east-1"
            and offering.product_description == "Linux/UNIX"
            and offering.tenancy == "default"
        )
        on_demand = catalog.instance_monthly(offering.instance_type) if comparable else None
        if on_demand is None:
            return recommendation.estimated_monthly_savings, (
                f"no comparable catalog price for {offering.instance_type} {offering.product_description} "
                f"({offering.tenancy} tenancy) in {recommendation.region}: the recommendation's own estimate"
            )
        term_months = (offering.duration_seconds / 3600) / catalog.hours_per_month
        reserved = offering.upfront_usd / term_months + offering.hourly_usd * catalog.hours_per_month
        return round((on_demand - reserved) * count, 2), (
            f"{catalog.basis}: on-demand list price against the offering's effective monthly rate (upfront spread "
            "over the term), assuming the reserved capacity is in use all the time"
        )

    def _manual_step(self, offering: Offering, count: int, reserved_instances_id: str | None) -> str:
        target = reserved_instances_id or "<the reserved-instances id>"
        if offering.offering_class == "convertible":
            return (
                f"Convertible reserved instances {target} cannot be sold on the RI Marketplace: exchange them "
                "(GetReservedInstancesExchangeQuote / AcceptReservedInstancesExchangeQuote) for a reservation "
                "that will be used, or keep them to the end of the term"
            )
        return (
            f"Sell the remaining term of reserved instances {target} ({count} x {offering.instance_type}) on "
            "the EC2 Reserved Instance Marketplace (aws ec2 create-reserved-instances-listing "
            f"--reserved-instances-id {target} --instance-count {count} --price-schedules …); AWS allows it once "
            "they have been active for 30 days and the account is registered as a seller"
        )

    def plan(self, recommendation: Recommendation, execution_id: str) -> ExecutionPlan:
        params = self.parameters(recommendation)
        offering, why_not = self._the_offering(params)
        if offering is None:
            raise ActionFailed(str(why_not))
        cost = _cost(offering, params.instance_count)
        savings, basis = self._monthly_savings(recommendation, offering, params.instance_count)
        what = _describe_offering(offering, params.instance_count)
        price = (
            f"${cost.total_usd:,.2f} in total: ${cost.upfront_usd:,.2f} upfront + "
            f"${offering.hourly_usd}/hour x {cost.term_hours:,} hours x {params.instance_count}"
        )
        return ExecutionPlan(
            summary=f"Buy {what} (offering {offering.offering_id}) for {price}. This purchase cannot be undone.",
            actions=[
                f"Look up offering {offering.offering_id} again and check the price against the limit "
                "per purchase (limits.purchase_limit_usd, as the deployment sets it then)",
                "Check that the share of the account's RI purchase limit per period reserved at the approval "
                "still holds at that price (ri_purchase_limit_per_period_usd); buy nothing otherwise",
                f"Look for reserved instances this execution already bought (tag {EXECUTION_TAG}={execution_id}); "
                "buy only if there are none",
                f"Ask AWS with DryRun=True whether the purchase of {params.instance_count} is permitted",
                f"Purchase {what} for {price}",
                f"Tag the reservation {EXECUTION_TAG}={execution_id} and "
                f"{RECOMMENDATION_TAG}={recommendation.recommendation_id}",
                "Wait until the reservation is active (payment settled) and verify it",
            ],
            backup=[
                "Nothing to back up: a purchase changes no existing resource. The offering and its price are "
                "recorded before buying."
            ],
            rollback_plan=RollbackPlan(
                execution_id=execution_id,
                rollback_steps=[
                    "A purchase of reserved instances CANNOT be undone by the engine: AWS has no refund or cancel "
                    "call. If anything fails after the purchase, or a rollback is asked for, the engine records "
                    "this manual step and leaves the execution rollback_failed until it is done: "
                    + self._manual_step(offering, params.instance_count, None),
                    "Once the reservation is sold (retired), asking for the rollback again closes the execution as "
                    "rolled_back",
                    "If the purchase never happened, the rollback has nothing to do",
                ],
                estimated_duration=0,
                risk_level=RiskLevel.HIGH,
                requires_approval=True,
            ),
            estimated_monthly_savings=savings,
            savings_basis=basis,
            one_time_cost=cost.total_usd,
            resource={
                "covers": recommendation.resource_id,
                "offering": offering.model_dump(mode="json"),
                "cost": cost.model_dump(mode="json"),
                "reversible": False,
            },
            limits={
                "purchase_limit_usd": self._limit(),
                "purchase_limit_per_period": (
                    {
                        "usd": self.settings.ri_purchase_limit_per_period_usd,
                        "period": self.settings.ri_purchase_limit_period.value,
                    }
                    if self.settings is not None
                    else None
                ),
            },
        )

    # -- backup --------------------------------------------------------------------------------

    def backup(self, recommendation: Recommendation, execution_id: str) -> PurchaseBackup:
        params = self.parameters(recommendation)
        # Prices and offerings can change between approval and action: look again, check again.
        offering, why_not = self._the_offering(params)
        if offering is None:
            raise ActionFailed(f"{why_not}; nothing was bought")
        cost = _cost(offering, params.instance_count)
        limit = self._limit()
        if limit is None or cost.total_usd > limit:
            raise ActionFailed(
                f"the purchase would now cost ${cost.total_usd:,.2f}, above the RI purchase limit "
                f"(${limit or 0:,.2f}): nothing was bought"
            )
        return PurchaseBackup(
            execution_id=execution_id,
            recommendation_id=recommendation.recommendation_id,
            nothing_to_back_up="a purchase changes no existing resource; the offering and its price are recorded",
            offering=offering,
            instance_count=params.instance_count,
            cost=cost,
            # A purchase of this execution cannot have started before this moment.
            not_before=(datetime.now(UTC) - CLOCK_SLACK).isoformat(),
        )

    def backup_ready(self, recommendation: Recommendation, backup: PurchaseBackup) -> bool:
        return True

    # -- act -----------------------------------------------------------------------------------

    def _bought_by(
        self, backup: PurchaseBackup, claimed: frozenset[str] = frozenset()
    ) -> tuple[ReservedInstancesTypeDef | None, str]:
        """The reservation this execution bought, if any, and how it was found.

        First by the execution tag. Then, for a crash between the purchase and the tag (or between
        the purchase and the execution record), by matching an untagged reservation of the same
        offering and count that started after the backup and that no other execution recorded as
        its own in the purchase ledger (`claimed`: its tag may have failed). The account's purchase
        lock (`PurchaseLimits.purchasing`) keeps the engine's other executions from buying in
        between, so their purchases are tagged or recorded before this runs. Residual windows,
        stated honestly: an identical untagged purchase made outside the engine in the same minutes,
        or by an engine step that died before recording it and whose lease ran out, would be taken
        for ours (the safe direction: one purchase too few, never one too many); and AWS's describe
        calls are eventually consistent, so a retry within seconds of a purchase that crashed
        before tagging could miss it. The state machine's retry backoff makes that unlikely, not
        impossible.
        """
        tagged = self._reserved([{"Name": f"tag:{EXECUTION_TAG}", "Values": [backup.execution_id]}])
        if tagged:
            return tagged[0], "tag"
        offering = backup.offering
        filters: list[FilterTypeDef] = [
            {"Name": "instance-type", "Values": [offering.instance_type]},
            {"Name": "product-description", "Values": [offering.product_description]},
            {"Name": "duration", "Values": [str(offering.duration_seconds)]},
            {"Name": "scope", "Values": [offering.scope]},
            {"Name": "state", "Values": ATTEMPTED_STATES},
        ]
        if offering.availability_zone:
            filters.append({"Name": "availability-zone", "Values": [offering.availability_zone]})
        not_before = datetime.fromisoformat(backup.not_before)
        for reservation in self._reserved(filters):
            if (
                _tag(reservation, EXECUTION_TAG) is None
                and reservation["ReservedInstancesId"] not in claimed
                and reservation.get("OfferingType") == offering.offering_type
                and reservation.get("OfferingClass") == offering.offering_class
                and int(reservation.get("InstanceCount", 0)) == backup.instance_count
                and float(reservation.get("FixedPrice", -1.0)) == offering.upfront_usd
                and reservation["Start"] >= not_before
            ):
                return reservation, "matched an untagged purchase of the same offering made after the backup"
        return None, ""

    def _tag(self, reserved_instances_id: str, backup: PurchaseBackup) -> str | None:
        """Tag the reservation; a failure is returned, not raised: the execution record keeps the id,
        and a crash here is what `_bought_by`'s matching covers."""
        try:
            self.clients.ec2.create_tags(
                Resources=[reserved_instances_id],
                Tags=[
                    {"Key": EXECUTION_TAG, "Value": backup.execution_id},
                    {"Key": RECOMMENDATION_TAG, "Value": backup.recommendation_id},
                ],
            )
        except ClientError as error:
            return f"CreateTags failed: {error_code(error)}: {error}"
        return None

    def apply(self, recommendation: Recommendation, backup: PurchaseBackup) -> Purchase:
        limits = self._purchase_limits()
        with limits.purchasing(recommendation.account_id or "", recommendation.region, backup.execution_id):
            return self._buy_once(recommendation, backup, limits)

    def _buy_once(self, recommendation: Recommendation, backup: PurchaseBackup, limits: PurchaseLimits) -> Purchase:
        offering = backup.offering
        count = backup.instance_count
        existing, how = self._bought_by(backup, self._claimed_by_others(recommendation, backup.execution_id))
        if existing is not None:
            # A retried step (or a crash after buying): never buy twice.
            found = Purchase(
                offering_id=offering.offering_id,
                instance_count=count,
                cost=backup.cost,
                reversible=False,
                reserved_instances_id=existing["ReservedInstancesId"],
                purchased_now=False,
                found_by=how,
            )
            if _tag(existing, EXECUTION_TAG) is None:
                found.tag_error = self._tag(existing["ReservedInstancesId"], backup)
            return found

        # Checked again now, for the price found at the backup: what the approval reserved must still hold.
        period = limits.confirm(recommendation.account_id, backup.execution_id, backup.cost.total_usd)
        request: dict[str, Any] = {"ReservedInstancesOfferingId": offering.offering_id, "InstanceCount": count}
        try:
            self.clients.ec2.purchase_reserved_instances_offering(**request, DryRun=True)
        except ClientError as error:
            if error_code(error) != "DryRunOperation":
                if error_code(error) == "UnauthorizedOperation":
                    raise ActionFailed(
                        "the dry run of the purchase was refused (UnauthorizedOperation): the engine's role may not "
                        "buy reserved instances; nothing was bought"
                    ) from error
                raise aws_failure("PurchaseReservedInstancesOffering (DryRun)", error) from error
        else:
            raise ActionFailed("the dry run of the purchase did not answer DryRunOperation: nothing was bought")

        try:
            reserved_instances_id = self.clients.ec2.purchase_reserved_instances_offering(**request)[
                "ReservedInstancesId"
            ]
        except ClientError as error:
            raise aws_failure("PurchaseReservedInstancesOffering", error) from error
        action = Purchase(
            offering_id=offering.offering_id,
            instance_count=count,
            cost=backup.cost,
            reversible=False,
            reserved_instances_id=reserved_instances_id,
            purchased_now=True,
            limit_period=period,
        )
        limits.bought(recommendation.account_id or "", period, backup.execution_id, reserved_instances_id)
        tag_error = self._tag(reserved_instances_id, backup)
        if tag_error:
            action.tag_error = tag_error
        return action

    def _reservation(self, reserved_instances_id: str) -> ReservedInstancesTypeDef:
        found = self._reserved(ids=[reserved_instances_id])
        if not found:
            raise ActionFailed(f"reserved instances {reserved_instances_id} are not known to AWS")
        return found[0]

    def apply_done(self, recommendation: Recommendation, action: Purchase) -> bool:
        reservation = self._reservation(action.reserved_instances_id)
        state = reservation.get("State")
        if state == "payment-failed":
            raise ActionFailed(
                f"the payment for reserved instances {action.reserved_instances_id} failed: "
                "the reservation is not in effect and nothing is charged"
            )
        if state == "retired":
            raise ActionFailed(f"reserved instances {action.reserved_instances_id} are already retired")
        return state == "active"

    def verify(self, recommendation: Recommendation, action: Purchase) -> VerificationResult:
        checks: list[str] = []
        failures: list[str] = []
        reservation = self._reservation(action.reserved_instances_id)
        rid = action.reserved_instances_id
        state = reservation.get("State")
        (checks if state == "active" else failures).append(f"reserved instances {rid} are {state}")
        params = self.parameters(recommendation)
        expected = {
            "InstanceType": params.instance_type,
            "InstanceCount": params.instance_count,
            "ProductDescription": params.product_description,
            "OfferingType": params.offering_type,
            "OfferingClass": params.offering_class,
            "Duration": TERM_SECONDS[params.term],
        }
        for key, value in expected.items():
            actual = reservation.get(key)
            (checks if actual == value else failures).append(f"{key} is {actual} (expected {value})")
        tagged = _tag(reservation, EXECUTION_TAG)
        # A tag_error recorded as None (a found purchase whose tagging succeeded) reads "None", as
        # the record says; only one never recorded is an unknown reason.
        tag_error = action.tag_error if "tag_error" in action.model_fields_set else "unknown reason"
        checks.append(
            f"tagged {EXECUTION_TAG}={tagged}"
            if tagged
            else f"not tagged ({tag_error}); the execution record holds the id"
        )
        return VerificationResult(passed=not failures, checks=checks, failures=failures)

    def cost_scope(self, recommendation: Recommendation, action: Any) -> CostScope:
        # A reservation covers whatever instances of its type run: no one resource's cost.
        instance_type = self.parameters(recommendation).instance_type
        return CostScope(
            self.savings_method, self.billing_service, dimensions={"INSTANCE_TYPE": (instance_type,)}, metric=AMORTIZED
        )

    def expected_savings(self, recommendation: Recommendation, backup: PurchaseBackup) -> float | None:
        savings, _basis = self._monthly_savings(recommendation, backup.offering, backup.instance_count)
        return savings

    # -- rollback ------------------------------------------------------------------------------

    def rollback(
        self,
        recommendation: Recommendation,
        backup: PurchaseBackup | None,
        action: Purchase | None,
    ) -> PurchaseRollback:
        """Never undoes a purchase: records whether one happened and, if so, the manual step."""
        if backup is None:
            return NothingBought(
                purchased=False, note="the execution stopped before the purchase step: nothing was bought"
            )
        reservation: ReservedInstancesTypeDef | None = None
        if action is not None and action.reserved_instances_id:
            found = self._reserved(ids=[action.reserved_instances_id])
            reservation = found[0] if found else None
        if reservation is None:
            reservation, _how = self._bought_by(backup, self._claimed_by_others(recommendation, backup.execution_id))
        if reservation is None:
            return NothingBought(
                purchased=False, note="no reserved instances were bought by this execution: nothing to undo"
            )
        rid = reservation["ReservedInstancesId"]
        count = int(reservation.get("InstanceCount", backup.instance_count))
        return ReservationBought(
            purchased=True,
            reversible=False,
            reserved_instances_id=rid,
            instance_count=count,
            state=reservation.get("State"),
            manual_step=self._manual_step(backup.offering, count, rid),
        )

    def rollback_done(self, recommendation: Recommendation, rollback: PurchaseRollback) -> bool:
        """Done when there is nothing left to undo. A reservation still held leaves the execution
        `rollback_failed` rather than `rolled_back`: the money is spent and a person has to act, and
        `rolled_back` would tell them (and every report counting it) the opposite. Once the
        reservation is retired (sold, or its payment failed), asking again closes it as rolled back."""
        if isinstance(rollback, NothingBought):
            return True
        rid = rollback.reserved_instances_id
        state = self._reservation(rid).get("State")
        if state in ("retired", "payment-failed"):
            return True
        raise ActionFailed(
            f"reserved instances {rid} were bought and are {state}: the engine cannot undo a purchase. "
            f"Manual step: {rollback.manual_step}. Then ask for the rollback again to close this execution"
        )


def _tag(reservation: ReservedInstancesTypeDef | dict[str, Any], key: str) -> str | None:
    return next((str(t["Value"]) for t in reservation.get("Tags", []) if t.get("Key") == key), None)
