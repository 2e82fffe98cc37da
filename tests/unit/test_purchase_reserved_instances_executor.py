"""PurchaseReservedInstancesExecutor against emulated EC2 (moto plus the local runtime's RI emulation):
what it refuses, what it shows before buying, and that it buys at most once whatever is retried."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.exceptions import ClientError

from cost_engine.aws import AwsClients
from cost_engine.ec2_instances import EXECUTION_TAG
from cost_engine.errors import ActionFailed
from cost_engine.executors.purchase_reserved_instances import (
    RECOMMENDATION_TAG,
    PurchaseBackup,
    PurchaseReservedInstancesExecutor,
    ReservationBought,
)
from cost_engine.models import (
    ExecutionRecord,
    ExecutionStatus,
    Recommendation,
    RecommendationType,
    RiskLevel,
    new_execution_id,
)
from cost_engine.pricing import price_catalog
from cost_engine.purchase_limits import PeriodPurchaseLimitReached, PurchaseLimits
from cost_engine.settings import Settings
from cost_engine.stores.purchase_ledger import EntryState
from cost_engine.topology import EXECUTIONS_TABLE, LIMITS_TABLE
from local_runtime.emulations import reserved_instances
from tests.unit.conftest import ACCOUNT_ID, REGION

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

LIMIT = 10_000.0
PER_PERIOD_LIMIT = 20_000.0
M5_LARGE_1YR_NO_UPFRONT = {
    "instance_type": "m5.large",
    "product_description": "Linux/UNIX",
    "tenancy": "default",
    "term": "1yr",
    "offering_type": "No Upfront",
    "instance_count": 2,
}


def recommendation_for(resource_id: str = "m5.large", **parameters: Any) -> Recommendation:
    return Recommendation(
        customer_id="acme-corp",
        type=RecommendationType.PURCHASE_RESERVED_INSTANCES,
        account_id=ACCOUNT_ID,
        region=REGION,
        resource_id=resource_id,
        parameters={**M5_LARGE_1YR_NO_UPFRONT, **parameters},
        estimated_monthly_savings=50.0,
    )


@pytest.fixture
def ec2(aws: None) -> EC2Client:
    reserved_instances.install(None)
    return boto3.client("ec2", region_name=REGION)


@pytest.fixture
def executor(ec2: EC2Client, tables: None) -> PurchaseReservedInstancesExecutor:
    settings = Settings(
        executions_table=EXECUTIONS_TABLE.local_name,
        audit_table="audit",
        recommendations_table="recs",
        limits_table=LIMITS_TABLE.local_name,
        ri_purchase_limit_usd=LIMIT,
        ri_purchase_limit_per_period_usd=PER_PERIOD_LIMIT,
    )
    return PurchaseReservedInstancesExecutor(AwsClients(REGION), settings)


def approval_of(
    executor: PurchaseReservedInstancesExecutor, recommendation: Recommendation, execution_id: str
) -> ExecutionRecord:
    """What a person approves: the execution waiting for a decision, with its plan."""
    return ExecutionRecord(
        execution_id=execution_id,
        recommendation_id=recommendation.recommendation_id,
        customer_id=recommendation.customer_id,
        recommendation_type=recommendation.type,
        resource_id=recommendation.resource_id,
        region=recommendation.region,
        account_id=recommendation.account_id,
        status=ExecutionStatus.AWAITING_APPROVAL,
        plan=executor.plan(recommendation, execution_id),
    )


def approved(
    executor: PurchaseReservedInstancesExecutor, recommendation: Recommendation, execution_id: str | None = None
) -> PurchaseBackup:
    """The backup of an execution a person approved (which reserved its cost under the limit per period)."""
    execution_id = execution_id or new_execution_id()
    executor.before_approval(recommendation, approval_of(executor, recommendation, execution_id))
    return executor.backup(recommendation, execution_id)


def bought() -> list[dict[str, Any]]:
    return reserved_instances.purchases(account_id=ACCOUNT_ID, region=REGION)


def run_instances(ec2: EC2Client, count: int, instance_type: Any = "m5.large") -> None:
    ec2.run_instances(ImageId="ami-12c6146b", InstanceType=instance_type, MinCount=count, MaxCount=count)


def fail_on(client: Any, operation: str, code: str, *, when_dry_run: bool | None = None) -> None:
    """Make one EC2 call of `client` answer an AWS error, as a denied or failing call would."""

    def refuse(params: dict[str, Any], **_: Any) -> None:
        if when_dry_run is None or bool(params.get("DryRun")) == when_dry_run:
            raise ClientError({"Error": {"Code": code, "Message": "refused by the test"}}, operation)

    client.meta.events.register(f"provide-client-params.ec2.{operation}", refuse)


# -- the class ------------------------------------------------------------------------------------


def test_a_purchase_always_needs_a_person_and_is_high_risk() -> None:
    assert PurchaseReservedInstancesExecutor.requires_human_approval is True
    assert PurchaseReservedInstancesExecutor.risk_level == RiskLevel.HIGH


def test_it_may_tag_only_reserved_instances_and_only_with_its_own_keys() -> None:
    actions = {a for p in PurchaseReservedInstancesExecutor.permissions for a in p.actions}
    tagging = next(p for p in PurchaseReservedInstancesExecutor.permissions if "ec2:CreateTags" in p.actions)

    assert actions == {
        "ec2:DescribeReservedInstancesOfferings",
        "ec2:DescribeReservedInstances",
        "ec2:DescribeInstances",
        "ec2:PurchaseReservedInstancesOffering",
        "ec2:CreateTags",
    }
    assert tagging.resources == ("arn:{partition}:ec2:{region}:{account}:reserved-instances/*",)
    assert tagging.conditions == {"ForAllValues:StringLike": {"aws:TagKeys": ["cost-engine:*"]}}


# -- validate -------------------------------------------------------------------------------------


def test_a_matching_offering_under_the_limit_is_valid(
    ec2: EC2Client, executor: PurchaseReservedInstancesExecutor
) -> None:
    run_instances(ec2, 2)

    result = executor.validate(recommendation_for())

    assert result.valid, result.errors
    assert result.warnings == []


def test_more_reservations_than_running_instances_is_a_warning(executor: PurchaseReservedInstancesExecutor) -> None:
    result = executor.validate(recommendation_for())

    assert result.valid
    assert result.warnings == [
        "only 0 running m5.large instance(s) (default tenancy) for 2 reservation(s): a reservation is paid for "
        "whether it is used or not"
    ]


def test_a_purchase_above_the_limit_is_refused_with_the_limit_and_the_cost(
    executor: PurchaseReservedInstancesExecutor,
) -> None:
    result = executor.validate(
        recommendation_for("m5.4xlarge", instance_type="m5.4xlarge", term="3yr", offering_type="All Upfront")
    )

    assert not result.valid
    [error] = result.errors
    assert "above the RI purchase limit of $10,000.00 (ri_purchase_limit_usd)" in error
    assert error.startswith("the purchase would cost $")
    assert "lower instance_count" in error
    assert bought() == []


def test_no_matching_offering_is_refused_with_what_is_offered(executor: PurchaseReservedInstancesExecutor) -> None:
    result = executor.validate(recommendation_for(tenancy="dedicated"))

    assert not result.valid
    [error] = result.errors
    assert error.startswith("no reserved instance offering matches (m5.large Linux/UNIX, dedicated tenancy, 1yr")
    assert "offered for m5.large: product_description Linux/UNIX; tenancy default; term 1yr, 3yr" in error


def test_an_instance_type_without_offerings_says_so(executor: PurchaseReservedInstancesExecutor) -> None:
    result = executor.validate(recommendation_for("x1e.32xlarge", instance_type="x1e.32xlarge"))

    assert not result.valid
    assert "AWS offers no reserved instances of x1e.32xlarge here: check the instance type" in result.errors[0]


def test_several_matching_offerings_are_refused_with_how_to_narrow_them(
    executor: PurchaseReservedInstancesExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    offering = {"ReservedInstancesOfferingId": "a", "InstanceType": "m5.large", "Duration": 31536000}
    monkeypatch.setattr(
        executor, "_offerings", lambda params: [offering, {**offering, "ReservedInstancesOfferingId": "b"}]
    )

    result = executor.validate(recommendation_for())

    assert not result.valid
    assert "2 offerings match" in result.errors[0]
    assert "a, b" in result.errors[0]
    assert "until exactly one matches" in result.errors[0]


def test_a_recommendation_for_another_instance_type_is_refused(executor: PurchaseReservedInstancesExecutor) -> None:
    result = executor.validate(recommendation_for("c5.large"))

    assert not result.valid
    assert result.errors == [
        "the recommendation is for c5.large but parameters.instance_type is m5.large: make them the same"
    ]


def test_a_fleet_id_as_resource_id_is_accepted(ec2: EC2Client, executor: PurchaseReservedInstancesExecutor) -> None:
    run_instances(ec2, 2)

    assert executor.validate(recommendation_for("web-fleet")).valid


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"term": "2yr"}, "term"),
        ({"instance_count": 0}, "instance_count"),
        ({"offering_type": "Some"}, "offering_type"),
    ],
)
def test_invalid_parameters_are_refused(
    executor: PurchaseReservedInstancesExecutor, change: dict[str, Any], field: str
) -> None:
    result = executor.validate(recommendation_for(**change))

    assert not result.valid
    assert field in result.errors[0]


def test_a_second_execution_of_a_recommendation_that_already_bought_is_refused(
    executor: PurchaseReservedInstancesExecutor,
) -> None:
    recommendation = recommendation_for()
    backup = approved(executor, recommendation)
    reserved_id = executor.apply(recommendation, backup).reserved_instances_id

    result = executor.validate(recommendation)

    assert not result.valid
    assert f"already bought reserved instances {reserved_id}" in result.errors[0]
    assert "register a new recommendation to buy more" in result.errors[0]


# -- plan -----------------------------------------------------------------------------------------


def test_the_plan_shows_the_total_cost_and_that_it_cannot_be_undone(
    executor: PurchaseReservedInstancesExecutor,
) -> None:
    plan = executor.plan(recommendation_for(), "exec-1")

    cost = plan.resource["cost"]
    hourly = plan.resource["offering"]["hourly_usd"]
    assert cost["total_usd"] == pytest.approx(hourly * 8760 * 2, abs=0.01)
    assert cost["upfront_usd"] == 0
    assert "This purchase cannot be undone" in plan.summary
    assert f"${cost['total_usd']:,.2f} in total" in plan.summary
    assert plan.rollback_plan.requires_approval is True
    assert plan.rollback_plan.risk_level == RiskLevel.HIGH
    assert "CANNOT be undone" in plan.rollback_plan.rollback_steps[0]
    assert "Reserved Instance Marketplace" in plan.rollback_plan.rollback_steps[0]
    assert any("DryRun=True" in action for action in plan.actions)
    assert plan.resource["reversible"] is False
    assert plan.limits["purchase_limit_per_period"] == {"usd": PER_PERIOD_LIMIT, "period": "month"}
    assert any("RI purchase limit per period" in action for action in plan.actions)


def test_savings_compare_the_on_demand_price_with_the_effective_reserved_rate(
    executor: PurchaseReservedInstancesExecutor,
) -> None:
    plan = executor.plan(recommendation_for(), "exec-1")

    catalog = price_catalog()
    hourly = plan.resource["offering"]["hourly_usd"]
    expected = round(((catalog.instance_monthly("m5.large") or 0) - hourly * catalog.hours_per_month) * 2, 2)
    assert plan.estimated_monthly_savings == pytest.approx(expected)
    assert catalog.source in plan.savings_basis


def test_a_platform_the_catalog_cannot_compare_falls_back_to_the_recommendation(
    executor: PurchaseReservedInstancesExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    recommendation = recommendation_for()
    offering = executor._the_offering(executor.parameters(recommendation))[0]
    assert offering is not None

    savings, basis = executor._monthly_savings(
        recommendation, offering.model_copy(update={"product_description": "Windows"}), 2
    )

    assert savings == 50.0
    assert "the recommendation's own estimate" in basis


# -- backup, purchase, verify ----------------------------------------------------------------------


def test_backup_records_the_offering_and_the_price_and_touches_nothing(
    executor: PurchaseReservedInstancesExecutor,
) -> None:
    backup = executor.backup(recommendation_for(), "exec-1")

    assert backup.offering.instance_type == "m5.large"
    assert backup.cost.instance_count == 2
    assert "nothing_to_back_up" in executor.stored(backup)
    assert executor.backup_ready(recommendation_for(), backup) is True
    assert bought() == []


def test_the_purchase_is_bought_once_tagged_waited_for_and_verified(
    executor: PurchaseReservedInstancesExecutor,
) -> None:
    # Given a recorded offering
    recommendation = recommendation_for()
    execution_id = new_execution_id()
    backup = approved(executor, recommendation, execution_id)

    # When it is bought and polled until active
    action = executor.apply(recommendation, backup)
    first_check = executor.apply_done(recommendation, action)
    second_check = executor.apply_done(recommendation, action)
    verification = executor.verify(recommendation, action)

    # Then exactly one purchase of the recorded offering exists, tagged, active and verified
    [purchase] = bought()
    assert purchase["ReservedInstancesId"] == action.reserved_instances_id
    assert purchase["_OfferingId"] == backup.offering.offering_id
    assert purchase["InstanceCount"] == 2
    assert action.purchased_now is True
    assert (first_check, second_check) == (False, True)
    assert verification.passed, verification.failures
    assert f"tagged {EXECUTION_TAG}={execution_id}" in verification.checks
    assert (
        executor.expected_savings(recommendation, backup)
        == executor.plan(recommendation, execution_id).estimated_monthly_savings
    )


def test_a_retried_purchase_step_does_not_buy_twice(executor: PurchaseReservedInstancesExecutor) -> None:
    recommendation = recommendation_for()
    backup = approved(executor, recommendation)

    first = executor.apply(recommendation, backup)
    second = executor.apply(recommendation, backup)

    assert len(bought()) == 1
    assert second.reserved_instances_id == first.reserved_instances_id
    assert second.purchased_now is False
    assert second.found_by == "tag"


def test_a_crash_between_the_purchase_and_its_tag_does_not_lead_to_a_second_purchase(
    executor: PurchaseReservedInstancesExecutor,
) -> None:
    # Given a purchase whose tagging failed (as if the function had died right after buying)
    recommendation = recommendation_for()
    execution_id = new_execution_id()
    backup = approved(executor, recommendation, execution_id)
    untagged_client = boto3.client("ec2", region_name=REGION)
    fail_on(untagged_client, "CreateTags", "InternalError")
    executor.clients.__dict__["ec2"] = untagged_client
    first = executor.apply(recommendation, backup)
    assert first.tag_error is not None
    assert "InternalError" in first.tag_error

    # When the step is retried with no record of it
    executor.clients.__dict__["ec2"] = boto3.client("ec2", region_name=REGION)
    retried = executor.apply(recommendation, backup)

    # Then the untagged purchase is recognised and tagged; nothing more is bought
    [purchase] = bought()
    assert retried.reserved_instances_id == purchase["ReservedInstancesId"] == first.reserved_instances_id
    assert retried.purchased_now is False
    assert retried.found_by is not None
    assert "untagged purchase" in retried.found_by
    tags = {t["Key"]: t["Value"] for t in executor._reservation(purchase["ReservedInstancesId"])["Tags"]}
    assert tags == {EXECUTION_TAG: execution_id, RECOMMENDATION_TAG: recommendation.recommendation_id}


def test_a_purchase_made_before_the_backup_is_not_taken_for_this_executions(
    ec2: EC2Client, executor: PurchaseReservedInstancesExecutor
) -> None:
    # Given an identical, untagged reservation bought earlier by someone else
    recommendation = recommendation_for()
    earlier = executor.backup(recommendation, "exec-earlier")
    ec2.purchase_reserved_instances_offering(ReservedInstancesOfferingId=earlier.offering.offering_id, InstanceCount=2)
    backup = approved(executor, recommendation)
    backup.not_before = "2999-01-01T00:00:00+00:00"  # i.e. that one started before this backup

    action = executor.apply(recommendation, backup)

    assert action.purchased_now is True
    assert len(bought()) == 2


def test_a_refused_dry_run_buys_nothing(executor: PurchaseReservedInstancesExecutor) -> None:
    recommendation = recommendation_for()
    backup = approved(executor, recommendation)
    fail_on(executor.clients.ec2, "PurchaseReservedInstancesOffering", "UnauthorizedOperation", when_dry_run=True)

    with pytest.raises(ActionFailed, match="UnauthorizedOperation"):
        executor.apply(recommendation, backup)

    assert bought() == []


def test_a_failed_payment_fails_the_step(executor: PurchaseReservedInstancesExecutor) -> None:
    recommendation = recommendation_for()
    action = executor.apply(recommendation, approved(executor, recommendation))
    reserved_instances.set_state(action.reserved_instances_id, "payment-failed", account_id=ACCOUNT_ID, region=REGION)

    with pytest.raises(ActionFailed, match=r"payment .* failed"):
        executor.apply_done(recommendation, action)


def test_the_limit_is_checked_again_before_buying(
    executor: PurchaseReservedInstancesExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert executor.settings is not None
    monkeypatch.setattr(executor.settings, "ri_purchase_limit_usd", 1.0)

    with pytest.raises(ActionFailed, match="above the RI purchase limit"):
        executor.backup(recommendation_for(), new_execution_id())


# -- the limit per account and period ---------------------------------------------------------------


def test_an_approval_that_would_pass_the_limit_per_period_is_refused_and_reserves_nothing(
    executor: PurchaseReservedInstancesExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a limit per period with room for one purchase, and one approved
    assert executor.settings is not None
    recommendation = recommendation_for()
    cost = executor.plan(recommendation, "exec-1").one_time_cost or 0.0
    monkeypatch.setattr(executor.settings, "ri_purchase_limit_per_period_usd", cost * 1.5)
    first = approved(executor, recommendation)

    # When a second one is approved
    second = approval_of(executor, recommendation, new_execution_id())
    with pytest.raises(PeriodPurchaseLimitReached) as refused:
        executor.before_approval(recommendation, second)

    # Then it is refused naming the execution that holds the limit, and only the first is counted
    assert f"already committed by {first.execution_id}" in refused.value.message
    _, ledger = PurchaseLimits.from_settings(executor.settings).ledger(ACCOUNT_ID)
    assert [e.execution_id for e in ledger.entries] == [first.execution_id]


def test_a_purchase_without_a_reservation_under_the_limit_per_period_buys_nothing(
    executor: PurchaseReservedInstancesExecutor,
) -> None:
    recommendation = recommendation_for()
    backup = executor.backup(recommendation, new_execution_id())  # never approved through the engine

    with pytest.raises(ActionFailed, match="holds no reservation under the RI purchase limit per month"):
        executor.apply(recommendation, backup)

    assert bought() == []


def test_a_purchase_is_counted_as_bought_in_the_period_it_was_bought_in(
    executor: PurchaseReservedInstancesExecutor,
) -> None:
    assert executor.settings is not None
    recommendation = recommendation_for()
    backup = approved(executor, recommendation)

    action = executor.apply(recommendation, backup)

    period, ledger = PurchaseLimits.from_settings(executor.settings).ledger(ACCOUNT_ID)
    assert action.limit_period == period.key
    [entry] = ledger.entries
    assert (entry.execution_id, entry.state, entry.cents) == (
        backup.execution_id,
        EntryState.BOUGHT,
        round(backup.cost.total_usd * 100),
    )


def test_a_purchase_that_alone_is_above_the_limit_per_period_is_refused_at_validation(
    ec2: EC2Client, executor: PurchaseReservedInstancesExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert executor.settings is not None
    monkeypatch.setattr(executor.settings, "ri_purchase_limit_per_period_usd", 100.0)
    run_instances(ec2, 2)

    result = executor.validate(recommendation_for())

    assert not result.valid
    assert "above the limit of $100.00 per month for all RI purchases of the account" in result.errors[0]


# -- rollback -------------------------------------------------------------------------------------


def test_a_rollback_before_any_purchase_has_nothing_to_do(executor: PurchaseReservedInstancesExecutor) -> None:
    recommendation = recommendation_for()
    backup = approved(executor, recommendation)

    rollback = executor.rollback(recommendation, backup, None)

    assert rollback.purchased is False
    assert executor.rollback_done(recommendation, rollback) is True
    assert executor.rollback(recommendation, None, None).purchased is False


def test_a_rollback_after_the_purchase_records_the_manual_step_and_does_not_pretend(
    executor: PurchaseReservedInstancesExecutor,
) -> None:
    # Given a purchase whose action was never recorded (the crash came right after buying)
    recommendation = recommendation_for()
    backup = approved(executor, recommendation)
    reserved_id = executor.apply(recommendation, backup).reserved_instances_id

    # When it is rolled back
    rollback = executor.rollback(recommendation, backup, None)

    # Then the purchase is found, kept, and the manual step names it
    assert isinstance(rollback, ReservationBought)
    assert rollback.purchased is True
    assert rollback.reversible is False
    assert rollback.reserved_instances_id == reserved_id
    assert f"--reserved-instances-id {reserved_id}" in rollback.manual_step
    with pytest.raises(ActionFailed) as still_held:
        executor.rollback_done(recommendation, rollback)
    assert "the engine cannot undo a purchase" in str(still_held.value)
    assert "Reserved Instance Marketplace" in str(still_held.value)
    assert len(bought()) == 1
    assert bought()[0]["State"] in ("payment-pending", "active")


def test_once_the_reservation_is_sold_the_rollback_completes(executor: PurchaseReservedInstancesExecutor) -> None:
    recommendation = recommendation_for()
    backup = approved(executor, recommendation)
    action = executor.apply(recommendation, backup)
    reserved_instances.set_state(action.reserved_instances_id, "retired", account_id=ACCOUNT_ID, region=REGION)

    rollback = executor.rollback(recommendation, backup, action)

    assert executor.rollback_done(recommendation, rollback) is True


def test_a_convertible_reservation_is_shown_as_exchangeable_not_sellable(
    executor: PurchaseReservedInstancesExecutor,
) -> None:
    recommendation = recommendation_for(offering_class="convertible")

    result = executor.validate(recommendation)
    plan = executor.plan(recommendation, "exec-1")

    assert any("cannot be sold on the RI Marketplace" in w for w in result.warnings)
    assert "exchange them" in plan.rollback_plan.rollback_steps[0]
