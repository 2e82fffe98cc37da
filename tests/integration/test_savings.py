"""Savings measured from the bill, end to end on the local runtime: a completed execution records what
it is expected to save and nothing measured; its completion schedules the measurements; a due
schedule (fired as EventBridge Scheduler would) and a person through the API measure it from the
emulated Cost Explorer, and the best measurement becomes its actual saving."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from cli.__main__ import EXIT_OK
from cost_engine.service.measurements import schedule_name
from cost_engine.settings import DEFAULT_SAVINGS_MEASURE_DAYS
from local_runtime.billing import age_completion, set_daily_costs, steady_costs
from local_runtime.client import ApiClient, ApiError
from local_runtime.emulations.scheduler_targets import fire_schedule
from local_runtime.runtime import REGION, LocalRuntime
from tests.integration.conftest import eventually
from tests.integration.test_cli import cli

VOLUME_DAILY_COST = 0.48  # 60 GB of gp2: $14.4 a month, as the recommendation estimates it


@pytest.fixture
def deleted_volume(api: ApiClient, ec2: Any, recommend: Callable[..., str]) -> dict[str, Any]:
    """A completed delete_volume execution."""
    volume_id = ec2.create_volume(AvailabilityZone=f"{REGION}a", Size=60, VolumeType="gp2")["VolumeId"]
    recommendation_id = recommend(volume_id, type="delete_volume", estimated_monthly_savings=14.4)
    execution = api.wait_for(api.execute(recommendation_id, auto_approve=True)["execution_id"])
    assert execution["status"] == "completed", execution
    return execution


def schedules_of(runtime: LocalRuntime, execution_id: str) -> list[str]:
    prefix = schedule_name(execution_id, 0).rsplit("-", 1)[0]
    found = runtime.client("scheduler").list_schedules(NamePrefix=prefix)["Schedules"]
    return sorted(schedule["Name"] for schedule in found)


def scheduled(runtime: LocalRuntime, execution_id: str) -> list[str]:
    """The execution's measurement schedules, once the trigger has made one per window (it gets the
    completion's event asynchronously, as on AWS)."""
    return eventually(
        lambda: (
            names if len(names := schedules_of(runtime, execution_id)) == len(DEFAULT_SAVINGS_MEASURE_DAYS) else None
        ),
        "the measurement schedules",
    )


def test_a_completed_execution_expects_a_saving_measures_none_and_schedules_its_measurements(
    runtime: LocalRuntime, api: ApiClient, deleted_volume: dict[str, Any]
) -> None:
    execution_id = deleted_volume["execution_id"]

    # The catalog's price of what was deleted, and nothing measured yet
    assert deleted_volume["expected_savings"] == pytest.approx(deleted_volume["plan"]["estimated_monthly_savings"])
    assert deleted_volume["expected_savings"] > 0
    assert deleted_volume["actual_savings"] is None
    assert deleted_volume["measurements"] == []
    # The completion's event reaches the trigger, which schedules a first look and the full window
    names = scheduled(runtime, execution_id)
    assert names == [schedule_name(execution_id, 30), schedule_name(execution_id, 6)]

    # each made by the engine for the execution, and in its log
    def schedules_logged() -> list[dict[str, Any]] | None:
        events = api.logs(execution_id)["events"]
        logged = [e for e in events if e["detail"].get("operation") == "CreateSchedule"]
        return logged if len(logged) == len(names) else None

    logged = eventually(schedules_logged, "the schedules in the log")
    assert {e["actor"] for e in logged} == {"engine:savings"}
    schedule = runtime.client("scheduler").get_schedule(Name=schedule_name(execution_id, 6))
    assert schedule["ScheduleExpression"].startswith("at(")
    assert schedule["ActionAfterCompletion"] == "DELETE"


def test_a_due_schedule_measures_the_saving_from_the_bill_and_makes_it_the_actual_saving(
    runtime: LocalRuntime, api: ApiClient, deleted_volume: dict[str, Any]
) -> None:
    execution_id = deleted_volume["execution_id"]
    scheduled(runtime, execution_id)
    # When the first look is due (a week and a day later), with the volume billed until the day it was
    # deleted, and not after
    change_day = age_completion(runtime, execution_id, days=8)
    set_daily_costs(
        steady_costs(change_day - timedelta(days=6), change_day + timedelta(days=7), VOLUME_DAILY_COST, 0.0, change_day)
    )

    fired = fire_schedule(runtime, schedule_name(execution_id, 6))

    measurement = fired.response["Payload"]["measurement"]
    assert measurement["quality"] == "complete", measurement["reason"]
    assert measurement["days"] == 6
    assert measurement["before_cost"] == pytest.approx(6 * VOLUME_DAILY_COST)
    assert measurement["after_cost"] == 0.0
    assert measurement["monthly_savings"] == pytest.approx(VOLUME_DAILY_COST * 365 / 12, abs=0.01)
    # The volume's cost, and the kept snapshot's
    snapshot = deleted_volume["backup"]["snapshot_id"]
    assert measurement["attribution"].startswith(f"resource: {deleted_volume['resource_id']}, arn:aws:ec2:")
    assert measurement["attribution"].endswith(f":snapshot/{snapshot}")
    # The measured saving against the catalog's
    expected = deleted_volume["expected_savings"]
    assert measurement["accuracy_percent"] == pytest.approx(
        max(0.0, 100 * (1 - abs(measurement["monthly_savings"] - expected) / expected)), abs=0.1
    )
    execution = api.status(execution_id)
    assert execution["actual_savings"] == measurement["monthly_savings"]
    assert execution["measurements"] == [measurement]
    assert "savings_measured" in [event["event_type"] for event in api.logs(execution_id)["events"]]


def test_a_measurement_asked_for_before_the_window_is_over_is_partial_and_says_why(
    runtime: LocalRuntime, api: ApiClient, deleted_volume: dict[str, Any]
) -> None:
    execution_id = deleted_volume["execution_id"]
    change_day = age_completion(runtime, execution_id, days=4)
    set_daily_costs(
        steady_costs(change_day - timedelta(days=3), change_day + timedelta(days=3), VOLUME_DAILY_COST, 0.0, change_day)
    )

    measurement = api.measure(execution_id, window_days=30)

    assert measurement["quality"] == "partial"
    assert measurement["days"] == 3
    assert measurement["reason"] == "the window is not over: 3 of 30 days"
    assert measurement["monthly_savings"] == pytest.approx(VOLUME_DAILY_COST * 365 / 12, abs=0.01)
    assert api.status(execution_id)["actual_savings"] == measurement["monthly_savings"]


def test_right_after_the_change_there_is_nothing_to_measure_yet(api: ApiClient, deleted_volume: dict[str, Any]) -> None:
    measurement = api.measure(deleted_volume["execution_id"])

    assert measurement["quality"] == "not_measurable"
    assert measurement["reason"].startswith("no whole day of billing data since the change yet")
    assert measurement["monthly_savings"] is None
    # Kept, but it is no actual saving
    execution = api.status(deleted_volume["execution_id"])
    assert execution["actual_savings"] is None
    assert execution["measurements"] == [measurement]


def test_only_a_completed_execution_is_measured_and_a_bad_window_is_refused(
    api: ApiClient, ec2: Any, recommend: Callable[..., str], deleted_volume: dict[str, Any]
) -> None:
    # A deletion refused at validation (the volume is attached... here: it does not exist) fails
    recommendation_id = recommend("vol-0123456789abcdef0", type="delete_volume", estimated_monthly_savings=1.0)
    failed = api.wait_for(api.execute(recommendation_id, auto_approve=True)["execution_id"])
    assert failed["status"] == "failed"

    with pytest.raises(ApiError) as refused:
        api.measure(failed["execution_id"])
    assert refused.value.status_code == 409
    assert "only a completed execution's saving can be measured" in refused.value.body["message"]

    for window in (0, 181):
        with pytest.raises(ApiError) as bad:
            api.measure(deleted_volume["execution_id"], window_days=window)
        assert bad.value.status_code == 422
    assert api.status(failed["execution_id"])["measurements"] == []
    assert api.status(deleted_volume["execution_id"])["measurements"] == []


def test_the_cli_measures_and_shows_expected_and_measured_savings_apart(
    runtime: LocalRuntime, deleted_volume: dict[str, Any]
) -> None:
    execution_id = deleted_volume["execution_id"]
    code, out, _ = cli(runtime, "status", execution_id)
    assert code == EXIT_OK
    assert "not measured yet" in out
    change_day = age_completion(runtime, execution_id, days=8)
    set_daily_costs(
        steady_costs(change_day - timedelta(days=6), change_day + timedelta(days=7), VOLUME_DAILY_COST, 0.0, change_day)
    )

    code, out, _ = cli(runtime, "measure", execution_id, "--window-days", "6")

    assert code == EXIT_OK
    assert out.splitlines()[0].startswith(f"{execution_id}  complete  ")
    assert "saving    $14.60/month measured" in out
    code, out, _ = cli(runtime, "status", execution_id)
    expected = deleted_volume["expected_savings"]
    assert f"expected ${expected:,.2f}, measured $14.60 (complete, 6 days" in out
