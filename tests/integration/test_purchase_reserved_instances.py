"""purchase_reserved_instances end to end: the real state machine on the local runtime, driven through
the API, with the emulated EC2 Reserved Instances checked afterwards. A purchase cannot be undone, so
every execution here waits for a person, and no failure may ever lead to a second purchase."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from cost_engine.purchase_limits import PurchaseLimits
from local_runtime.client import ApiClient, ApiError
from local_runtime.emulations import reserved_instances
from local_runtime.runtime import ACCOUNT_ID, REGION, LocalRuntime
from tests.integration.conftest import AWAITING_A_PERSON, deployed_with, step_events

TYPE = "purchase_reserved_instances"
M5_LARGE = {
    "instance_type": "m5.large",
    "product_description": "Linux/UNIX",
    "tenancy": "default",
    "term": "1yr",
    "offering_type": "Partial Upfront",
    "instance_count": 2,
}


@pytest.fixture
def recommend_ri(recommend: Callable[..., str]) -> Callable[..., str]:
    def register(resource_id: str = "m5.large", **parameters: Any) -> str:
        return recommend(resource_id, type=TYPE, parameters={**M5_LARGE, **parameters}, estimated_monthly_savings=40.0)

    return register


def bought_by(ec2: Any, execution_id: str) -> list[dict[str, Any]]:
    """The reservations AWS holds for this execution (the engine tags each purchase with its id)."""
    found: list[dict[str, Any]] = ec2.describe_reserved_instances(
        Filters=[{"Name": "tag:cost-engine:execution-id", "Values": [execution_id]}]
    )["ReservedInstances"]
    return found


def all_purchases() -> int:
    return len(reserved_instances.purchases(account_id=ACCOUNT_ID, region=REGION))


def approve_and_wait(api: ApiClient, execution_id: str) -> dict[str, Any]:
    waiting = api.wait_for(execution_id, frozenset({"awaiting_approval", "failed", "completed"}))
    assert waiting["status"] == "awaiting_approval", waiting.get("error_message")
    api.approve(execution_id, "finops@example.com", "steady usage for a year")
    return api.wait_for(execution_id)


def test_dry_run_shows_the_total_cost_and_that_it_cannot_be_undone_and_buys_nothing(
    api: ApiClient, recommend_ri: Callable[..., str]
) -> None:
    before = all_purchases()

    execution = api.wait_for(api.execute(recommend_ri(), dry_run=True)["execution_id"])

    assert execution["status"] == "completed"
    plan = execution["plan"]
    cost = plan["resource"]["cost"]
    assert cost["total_usd"] == pytest.approx(
        cost["upfront_usd"] + plan["resource"]["offering"]["hourly_usd"] * 8760 * 2, abs=0.01
    )
    assert "This purchase cannot be undone" in plan["summary"]
    assert "CANNOT be undone" in plan["rollback_plan"]["rollback_steps"][0]
    assert "Reserved Instance Marketplace" in plan["rollback_plan"]["rollback_steps"][0]
    assert plan["rollback_plan"]["requires_approval"] is True
    assert all_purchases() == before


def test_with_auto_approve_the_policy_holds_the_purchase_for_a_person_and_says_why_then_it_completes(
    api: ApiClient, ec2: Any, recommend_ri: Callable[..., str]
) -> None:
    # Given a recommendation executed with auto_approve
    execution_id = api.execute(recommend_ri(), auto_approve=True)["execution_id"]

    # Then the policy holds it for a person, having bought nothing, and records why
    waiting = api.wait_for(execution_id, frozenset({"awaiting_approval", "failed", "completed"}))
    assert waiting["status"] == "awaiting_approval", waiting["error_message"]
    assert waiting["auto_approve_requested"] is True
    assert bought_by(ec2, execution_id) == []
    policy = waiting["policy"]
    assert policy["auto_approve"] is False
    assert policy["risk_level"] == "high"
    assert "purchase_reserved_instances cannot be fully undone" in policy["reason"]
    assert f"one-time cost (${waiting['plan']['one_time_cost']:,.2f})" in policy["reason"]
    assert "a person must approve, whatever auto_approve says" in policy["reason"]
    assert waiting["approval"]["reason"] == policy["reason"]
    events = api.logs(execution_id)["events"]
    assert step_events([e["event_type"] for e in events]) == AWAITING_A_PERSON
    [decided] = [e for e in events if e["event_type"] == "approval_policy_decided"]
    assert decided["detail"] == policy

    # When a person approves it
    api.approve(execution_id, "finops@example.com", "steady usage")
    execution = api.wait_for(execution_id)

    # Then exactly one reservation of the recorded offering is active, and the record says so
    assert execution["status"] == "completed", execution["error_message"]
    assert execution["auto_approved"] is False
    assert execution["approval"]["approver_name"] == "finops@example.com"
    assert execution["approval"]["decided_via"] == "api"
    [reservation] = bought_by(ec2, execution_id)
    assert reservation["State"] == "active"
    assert reservation["InstanceCount"] == 2
    assert reservation["InstanceType"] == "m5.large"
    assert reservation["OfferingType"] == "Partial Upfront"
    assert reservation["ReservedInstancesId"] == execution["action"]["reserved_instances_id"]
    assert execution["verification"]["passed"] is True
    assert execution["expected_savings"] == pytest.approx(execution["plan"]["estimated_monthly_savings"])
    assert execution["expected_savings"] > 0


def test_a_retried_purchase_step_never_buys_twice(
    api: ApiClient, ec2: Any, runtime: LocalRuntime, recommend_ri: Callable[..., str]
) -> None:
    # Given the purchase step fails after it bought, with an error the state machine retries
    fault = runtime.faults.inject("act", when="after", error_type="TransientError")
    before = all_purchases()

    execution = approve_and_wait(api, api.execute(recommend_ri())["execution_id"])

    # Then the retry saw the purchase already recorded and did not act again: the record of the one
    # purchase stands (the executor's own check, which finds a purchase by its tag when the record
    # was never written, is proven in the executor's unit tests)
    assert fault.hits == 1
    assert execution["status"] == "completed", execution["error_message"]
    assert len(bought_by(ec2, execution["execution_id"])) == 1
    assert all_purchases() == before + 1
    assert execution["action"]["purchased_now"] is True
    logged = [e["event_type"] for e in api.logs(execution["execution_id"])["events"]]
    assert logged.count("action_started") == 1


@pytest.mark.parametrize(
    ("step", "when"),
    # Its backup is a record: no CheckBackup follows it, the purchase comes next (act).
    [("backup", "before"), ("backup", "after"), ("act", "before")],
)
def test_a_failure_before_the_purchase_rolls_back_with_nothing_bought(
    api: ApiClient,
    ec2: Any,
    runtime: LocalRuntime,
    recommend_ri: Callable[..., str],
    step: str,
    when: str,
) -> None:
    runtime.faults.inject(step, when=when)
    before = all_purchases()

    execution = approve_and_wait(api, api.execute(recommend_ri())["execution_id"])

    assert execution["status"] == "rolled_back"
    assert "InjectedFault" in execution["error_message"]
    assert execution["rollback"]["purchased"] is False
    assert bought_by(ec2, execution["execution_id"]) == []
    assert all_purchases() == before


@pytest.mark.parametrize(
    ("step", "when"),
    [("act", "after"), ("check_action", "before"), ("verify", "before"), ("record", "before")],
)
def test_a_failure_after_the_purchase_records_the_manual_step_and_never_buys_again(
    api: ApiClient,
    ec2: Any,
    runtime: LocalRuntime,
    recommend_ri: Callable[..., str],
    step: str,
    when: str,
) -> None:
    runtime.faults.inject(step, when=when)
    before = all_purchases()

    execution = approve_and_wait(api, api.execute(recommend_ri())["execution_id"])

    # The purchase stands: the execution says so, with the manual step, instead of "rolled back"
    [reservation] = bought_by(ec2, execution["execution_id"])
    reserved_id = reservation["ReservedInstancesId"]
    assert all_purchases() == before + 1
    assert execution["status"] == "rollback_failed"
    assert "InjectedFault" in execution["error_message"]
    assert "the engine cannot undo a purchase" in execution["error_message"]
    assert f"--reserved-instances-id {reserved_id}" in execution["error_message"]
    assert execution["rollback"]["purchased"] is True
    assert execution["rollback"]["reserved_instances_id"] == reserved_id
    assert "Reserved Instance Marketplace" in execution["rollback"]["manual_step"]


def test_manual_rollback_records_the_manual_step_and_closes_once_the_reservation_is_sold(
    api: ApiClient, ec2: Any, recommend_ri: Callable[..., str]
) -> None:
    # Given a completed purchase
    execution_id = approve_and_wait(api, api.execute(recommend_ri())["execution_id"])["execution_id"]
    [reservation] = bought_by(ec2, execution_id)

    # When a rollback is asked for
    api.rollback(execution_id)
    execution = api.wait_for(execution_id, frozenset({"rolled_back", "rollback_failed"}))

    # Then nothing is undone or bought: the manual step is recorded and a person must act
    assert execution["status"] == "rollback_failed"
    assert execution["rollback"]["manual_step"].startswith(
        f"Sell the remaining term of reserved instances {reservation['ReservedInstancesId']}"
    )
    assert [r["State"] for r in bought_by(ec2, execution_id)] == ["active"]

    # When the reservation has been sold on the Marketplace and the rollback is asked for again
    reserved_instances.set_state(reservation["ReservedInstancesId"], "retired", account_id=ACCOUNT_ID, region=REGION)
    api.rollback(execution_id)
    execution = api.wait_for(execution_id, frozenset({"rolled_back", "rollback_failed"}))

    # Then the execution is closed as rolled back
    assert execution["status"] == "rolled_back"
    assert len(bought_by(ec2, execution_id)) == 1


def test_a_purchase_above_the_limit_is_refused_and_buys_nothing(
    api: ApiClient, recommend_ri: Callable[..., str]
) -> None:
    before = all_purchases()
    recommendation_id = recommend_ri(
        "m5.4xlarge", instance_type="m5.4xlarge", term="3yr", offering_type="All Upfront", instance_count=5
    )

    execution = api.wait_for(api.execute(recommendation_id, auto_approve=True)["execution_id"])

    assert execution["status"] == "failed"
    assert "above the RI purchase limit of $10,000.00" in execution["error_message"]
    assert execution["approval"] is None
    assert all_purchases() == before


def test_no_matching_offering_is_refused_with_what_to_change(api: ApiClient, recommend_ri: Callable[..., str]) -> None:
    before = all_purchases()

    execution = api.wait_for(api.execute(recommend_ri(tenancy="dedicated"))["execution_id"])

    assert execution["status"] == "failed"
    assert "no reserved instance offering matches" in execution["error_message"]
    assert "tenancy default" in execution["error_message"]
    assert all_purchases() == before


def test_a_repeated_request_for_a_recommendation_that_bought_is_refused(
    api: ApiClient, recommend_ri: Callable[..., str]
) -> None:
    recommendation_id = recommend_ri()
    first = approve_and_wait(api, api.execute(recommendation_id)["execution_id"])
    before = all_purchases()

    again = api.wait_for(api.execute(recommendation_id)["execution_id"])

    assert first["status"] == "completed"
    assert again["status"] == "failed"
    assert "already bought reserved instances" in again["error_message"]
    assert all_purchases() == before


def test_rejection_buys_nothing(api: ApiClient, recommend_ri: Callable[..., str]) -> None:
    before = all_purchases()
    execution_id = api.execute(recommend_ri())["execution_id"]
    api.wait_for(execution_id, frozenset({"awaiting_approval"}))

    api.reject(execution_id, "finops@example.com", "usage will drop next quarter")

    assert api.wait_for(execution_id)["status"] == "rejected"
    assert all_purchases() == before
    with pytest.raises(ApiError) as refused:
        api.rollback(execution_id)
    assert refused.value.status_code == 409


# -- the limit per account and period ---------------------------------------------------------------


def committed_this_period() -> float:
    """What the account's RI purchases commit in the current period, as the engine's ledger says."""
    import functions.api.handler as api_handler

    _, ledger = PurchaseLimits.from_settings(api_handler.service.ctx.settings).ledger(ACCOUNT_ID)
    return ledger.committed_cents / 100


def waiting_purchase(api: ApiClient, recommend_ri: Callable[..., str]) -> dict[str, Any]:
    """A purchase of its own usage (each holds its own resource) waiting for a person."""
    execution_id = api.execute(recommend_ri(f"steady-{uuid.uuid4().hex[:8]}"))["execution_id"]
    waiting = api.wait_for(execution_id, frozenset({"awaiting_approval", "failed", "completed"}))
    assert waiting["status"] == "awaiting_approval", waiting.get("error_message")
    return waiting


def test_a_third_purchase_that_would_pass_the_limit_per_period_is_refused_at_approval_and_buys_nothing(
    api: ApiClient, recommend_ri: Callable[..., str]
) -> None:
    # Given three purchases waiting, each under the limit per execution, and a limit per period
    # that has room for two of them on top of what the account already committed
    first, second, third = (waiting_purchase(api, recommend_ri) for _ in range(3))
    cost = first["plan"]["one_time_cost"]
    assert cost < first["plan"]["limits"]["purchase_limit_usd"]
    before = all_purchases()
    with deployed_with(ri_purchase_limit_per_period_usd=committed_this_period() + 2.5 * cost):
        # When all three are approved
        api.approve(first["execution_id"], "finops@example.com")
        api.approve(second["execution_id"], "finops@example.com")
        with pytest.raises(ApiError) as refused:
            api.approve(third["execution_id"], "finops@example.com")

        # Then the third is refused with 409, naming the limit, the period and who committed what
        assert refused.value.status_code == 409
        assert refused.value.body["error"] == "purchase_limit_reached"
        message = refused.value.body["message"]
        assert f"would commit ${cost:,.2f} to reserved instances in account {ACCOUNT_ID} in the month" in message
        assert "(ri_purchase_limit_per_period_usd)" in message
        assert first["execution_id"] in message
        assert second["execution_id"] in message
        assert "the execution still waits for a decision" in message
        [logged] = [e for e in api.logs(third["execution_id"])["events"] if e["event_type"] == "approval_refused"]
        assert logged["actor"] == "approver:apikey:local-dev"
        assert logged["detail"] == {"error": "purchase_limit_reached", "reason": message}

        # and the first two are bought while the third still waits, having bought nothing
        assert api.wait_for(first["execution_id"])["status"] == "completed"
        assert api.wait_for(second["execution_id"])["status"] == "completed"
        assert api.status(third["execution_id"])["status"] == "awaiting_approval"
        assert all_purchases() == before + 2
        api.reject(third["execution_id"], "finops@example.com", "over this month's limit")
        assert api.wait_for(third["execution_id"])["status"] == "rejected"
    assert all_purchases() == before + 2


def test_purchases_of_the_same_offering_approved_at_once_each_buy_their_own_reservation(
    api: ApiClient, ec2: Any, recommend_ri: Callable[..., str]
) -> None:
    # Given three purchases of the same offering waiting for a person
    waiting = [waiting_purchase(api, recommend_ri) for _ in range(3)]
    ids = [w["execution_id"] for w in waiting]
    before = all_purchases()

    # When all three are approved at the same moment, from three clients
    with ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(lambda execution_id: api.approve(execution_id, "finops@example.com"), ids))
    done = [api.wait_for(execution_id) for execution_id in ids]

    # Then three reservations are bought, each tagged with the execution that bought it and in its record
    assert [d["status"] for d in done] == ["completed"] * 3, [d["error_message"] for d in done]
    assert all_purchases() == before + 3
    for execution in done:
        [reservation] = bought_by(ec2, execution["execution_id"])
        assert reservation["ReservedInstancesId"] == execution["action"]["reserved_instances_id"]
        assert execution["action"]["purchased_now"] is True
    assert len({d["action"]["reserved_instances_id"] for d in done}) == 3
    assert len({d["action"]["offering_id"] for d in done}) == 1


def test_a_purchase_never_takes_an_untagged_reservation_another_execution_recorded_as_its_own(
    api: ApiClient, ec2: Any, runtime: LocalRuntime, recommend_ri: Callable[..., str]
) -> None:
    # Given a purchase backed up and held just before it buys
    later = waiting_purchase(api, recommend_ri)
    held = runtime.faults.hold("act", execution_id=later["execution_id"])
    api.approve(later["execution_id"], "finops@example.com")
    assert held.reached.wait(60)
    before = all_purchases()
    # and, after its backup, another purchase of the same offering whose tag AWS refused
    untagged = waiting_purchase(api, recommend_ri)
    runtime.aws_requests.fail("ec2", "CreateTags", code="UnauthorizedOperation", status=403)
    api.approve(untagged["execution_id"], "finops@example.com")
    first = api.wait_for(untagged["execution_id"])
    assert first["status"] == "completed", first["error_message"]
    assert "CreateTags failed" in first["action"]["tag_error"]
    assert bought_by(ec2, untagged["execution_id"]) == []

    # When the held purchase goes on
    held.released.set()
    second = api.wait_for(later["execution_id"])

    # Then it buys its own reservation instead of taking the untagged one for a purchase of its own
    assert second["status"] == "completed", second["error_message"]
    assert second["action"]["purchased_now"] is True
    assert second["action"]["reserved_instances_id"] != first["action"]["reserved_instances_id"]
    assert second["action"]["offering_id"] == first["action"]["offering_id"]
    assert all_purchases() == before + 2


def test_a_purchase_whose_reservation_is_gone_at_buy_time_fails_before_buying(
    api: ApiClient, ec2: Any, runtime: LocalRuntime, recommend_ri: Callable[..., str]
) -> None:
    # Given an approved purchase held just before its purchase step
    waiting = waiting_purchase(api, recommend_ri)
    execution_id = waiting["execution_id"]
    held = runtime.faults.hold("act", execution_id=execution_id)
    api.approve(execution_id, "finops@example.com")
    assert held.reached.wait(60)
    before = all_purchases()

    # When its reservation under the limit per period disappears before it buys
    import functions.api.handler as api_handler

    limits = PurchaseLimits.from_settings(api_handler.service.ctx.settings)
    period, _ = limits.ledger(ACCOUNT_ID)
    assert limits.store.release(ACCOUNT_ID, period.key, execution_id) == round(waiting["plan"]["one_time_cost"] * 100)
    held.released.set()
    execution = api.wait_for(execution_id)

    # Then it buys nothing and says why
    assert execution["status"] == "rolled_back"
    assert f"execution {execution_id} holds no reservation under the RI purchase limit" in execution["error_message"]
    assert execution["rollback"]["purchased"] is False
    assert bought_by(ec2, execution_id) == []
    assert all_purchases() == before


def test_a_purchase_that_fails_before_buying_frees_its_share_for_a_later_one(
    api: ApiClient, runtime: LocalRuntime, recommend_ri: Callable[..., str]
) -> None:
    # Given a limit per period with room for one more purchase, and an approved one that fails before buying
    failing, later = waiting_purchase(api, recommend_ri), waiting_purchase(api, recommend_ri)
    cost = failing["plan"]["one_time_cost"]
    before = all_purchases()
    with deployed_with(ri_purchase_limit_per_period_usd=committed_this_period() + 1.5 * cost):
        runtime.faults.inject("backup", when="before")
        api.approve(failing["execution_id"], "finops@example.com")
        assert api.wait_for(failing["execution_id"])["status"] == "rolled_back"

        # When another purchase is approved
        api.approve(later["execution_id"], "finops@example.com")

        # Then it fits and is bought
        assert api.wait_for(later["execution_id"])["status"] == "completed"
    assert all_purchases() == before + 1


def test_an_approval_by_the_emailed_link_over_the_limit_per_period_shows_why_and_decides_nothing(
    api: ApiClient, runtime: LocalRuntime, recommend_ri: Callable[..., str]
) -> None:
    # Given a purchase waiting, a limit per period without room for it, and its emailed link
    import functions.api.handler as api_handler

    waiting = waiting_purchase(api, recommend_ri)
    links = api_handler.service.ctx.links
    assert links is not None
    link = links.link(waiting["approval_id"], datetime.fromisoformat(waiting["approval"]["deadline"]))
    parts = urlsplit(link)
    form = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    with deployed_with(
        ri_purchase_limit_per_period_usd=committed_this_period() + 0.5 * waiting["plan"]["one_time_cost"]
    ):
        # When the approver clicks Approve on the page
        page = requests.post(
            f"{runtime.api_url}{parts.path}",
            data={**form, "decision": "approve", "approver": "finops@example.com", "comment": ""},
            timeout=30,
        )

    # Then the page says why it was not approved, and the execution still waits, having bought nothing
    assert page.status_code == 409
    assert "Not approved" in page.text
    assert "(ri_purchase_limit_per_period_usd)" in page.text
    assert "still waits for a decision" in page.text
    execution = api.status(waiting["execution_id"])
    assert execution["status"] == "awaiting_approval"
    assert execution["approval"]["decided_by"] is None
