"""Measuring a saving from billing data (cost_engine.savings) against moto's Cost Explorer: the windows,
each quality (complete, partial, not measurable) and its reason, the filters each attribution uses, and
which measurement stands for the actual saving."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from cost_engine.cost_scope import AMORTIZED, EC2_COMPUTE, EC2_OTHER, CostScope
from cost_engine.models import (
    ExecutionRecord,
    ExecutionStatus,
    MeasurementQuality,
    RecommendationType,
    SavingsMeasurement,
)
from cost_engine.savings import MONTH_DAYS, Where, accuracy_percent, best, cost_filter, measure, windows
from cost_engine.stores.executions import ExecutionStore
from cost_engine.topology import EXECUTIONS_TABLE
from local_runtime.billing import daily_result, set_daily_costs, steady_costs
from local_runtime.emulations import cost_explorer_resources
from tests.unit.conftest import ACCOUNT_ID, REGION

Q = MeasurementQuality
NOW = datetime(2026, 12, 20, 9, 30, tzinfo=UTC)
VOLUME = CostScope("deletion", EC2_OTHER, ("vol-1",), removes_resource=True)
INSTANCE = CostScope("rightsizing", EC2_COMPUTE, ("i-1",))


@pytest.fixture
def ce(aws: None) -> Any:
    cost_explorer_resources.patch_moto()
    return boto3.client("ce", region_name="us-east-1")


def completed(days_ago: int, expected: float | None = 10.0) -> ExecutionRecord:
    return ExecutionRecord(
        execution_id="exec-1",
        recommendation_id="rec-1",
        customer_id="acme",
        recommendation_type=RecommendationType.RIGHTSIZE_INSTANCE,
        resource_id="i-1",
        region=REGION,
        account_id=ACCOUNT_ID,
        status=ExecutionStatus.COMPLETED,
        completed_at=NOW - timedelta(days=days_ago, hours=3),
        expected_savings=expected,
    )


def costs_around(record: ExecutionRecord, days: int, before: float, after: float) -> dict[date, float]:
    assert record.completed_at is not None
    change = record.completed_at.date()
    return steady_costs(change - timedelta(days=days), change + timedelta(days=days), before, after, change)


# -- windows ----------------------------------------------------------------------------------------


def test_the_windows_leave_out_the_day_of_the_change_and_are_as_long_as_the_days_since() -> None:
    change = datetime(2026, 12, 10, 15, 0, tzinfo=UTC)

    full = windows(change, 6, date(2026, 12, 20))
    assert full is not None
    assert (full.before_start, full.before_end) == (date(2026, 12, 4), date(2026, 12, 10))
    assert (full.after_start, full.after_end) == (date(2026, 12, 11), date(2026, 12, 17))
    assert full.days == 6
    # Three whole days after the change so far: three before it, three after
    short = windows(change, 30, date(2026, 12, 14))
    assert short is not None
    assert short.days == 3
    assert short.before_start == date(2026, 12, 7)
    # No whole day after the change yet
    assert windows(change, 30, date(2026, 12, 11)) is None


# -- qualities --------------------------------------------------------------------------------------


def test_a_full_window_of_final_costs_of_the_resource_is_complete(ce: Any) -> None:
    record = completed(days_ago=8)
    set_daily_costs(costs_around(record, 7, before=1.0, after=0.6))

    measurement = measure(ce, record, INSTANCE, window_days=6, requested_by="schedule", now=NOW)

    assert measurement.quality == Q.COMPLETE
    assert measurement.reason is None
    assert measurement.before_cost == 6.0
    assert measurement.after_cost == pytest.approx(3.6)
    assert measurement.monthly_savings == round(0.4 * MONTH_DAYS, 2) == 12.17
    assert measurement.accuracy_percent == pytest.approx(78.3)
    assert measurement.attribution == "resource: i-1"


def test_a_window_not_over_yet_is_partial_with_the_days_it_has(ce: Any) -> None:
    record = completed(days_ago=4)
    set_daily_costs(costs_around(record, 4, before=1.0, after=0.5))

    measurement = measure(ce, record, INSTANCE, window_days=30, requested_by="api:ops", now=NOW)

    assert measurement.quality == Q.PARTIAL
    assert measurement.reason == "the window is not over: 3 of 30 days"
    assert measurement.days == 3
    assert measurement.monthly_savings == round(0.5 * MONTH_DAYS, 2)


def test_missing_and_estimated_days_make_a_partial_measurement_that_names_them(ce: Any) -> None:
    record = completed(days_ago=8)
    assert record.completed_at is not None
    costs = costs_around(record, 7, before=1.0, after=0.5)
    change = record.completed_at.date()
    del costs[change - timedelta(days=2)]
    set_daily_costs(costs, estimated=[change + timedelta(days=6)])

    measurement = measure(ce, record, INSTANCE, window_days=6, requested_by="schedule", now=NOW)

    assert measurement.quality == Q.PARTIAL
    assert measurement.reason == "1 day(s) before the change have no cost data; Cost Explorer still estimates 1 day(s)"
    # The missing day is left out of the before cost, not counted as free
    assert measurement.before_cost == 5.0


def test_a_resource_with_no_cost_after_a_change_that_keeps_it_is_not_measured(ce: Any) -> None:
    # Gone since (deleted by someone), or not billed yet: its disappearing is not this change's saving.
    record = completed(days_ago=8)
    assert record.completed_at is not None
    change = record.completed_at.date()
    set_daily_costs({change - timedelta(days=n): 1.0 for n in range(1, 7)})

    measurement = measure(ce, record, INSTANCE, window_days=6, requested_by="schedule", now=NOW)

    assert measurement.quality == Q.NOT_MEASURABLE
    assert (measurement.reason or "").startswith("no cost recorded after the change")
    assert measurement.monthly_savings is None


def test_a_deleted_resource_costing_nothing_afterwards_is_its_whole_saving(ce: Any) -> None:
    record = completed(days_ago=8, expected=30.0)
    assert record.completed_at is not None
    change = record.completed_at.date()
    set_daily_costs({change - timedelta(days=n): 1.0 for n in range(1, 7)})

    measurement = measure(ce, record, VOLUME, window_days=6, requested_by="schedule", now=NOW)

    assert measurement.quality == Q.COMPLETE
    assert measurement.after_cost == 0.0
    assert measurement.monthly_savings == round(MONTH_DAYS, 2)
    assert measurement.accuracy_percent == pytest.approx(98.6)


def test_no_cost_before_the_change_leaves_nothing_to_measure_against(ce: Any) -> None:
    set_daily_costs({})

    measurement = measure(ce, completed(days_ago=8), INSTANCE, window_days=6, requested_by="schedule", now=NOW)

    assert measurement.quality == Q.NOT_MEASURABLE
    assert measurement.reason == "no cost recorded before the change: nothing to measure a saving against"


def test_a_refusal_of_cost_explorer_is_not_measurable_with_its_error(ce: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(**request: Any) -> Any:
        raise ClientError(
            {"Error": {"Code": "DataUnavailableException", "Message": "Data is not available."}},
            "GetCostAndUsageWithResources",
        )

    monkeypatch.setattr(ce, "get_cost_and_usage_with_resources", refuse)

    measurement = measure(ce, completed(days_ago=8), INSTANCE, window_days=6, requested_by="schedule", now=NOW)

    assert measurement.quality == Q.NOT_MEASURABLE
    assert measurement.reason == (
        "Cost Explorer refused: DataUnavailableException: Data is not available. "
        "(resource-level data must be turned on in Cost Explorer's settings)"
    )


def test_a_window_older_than_resource_level_data_reads_the_service_and_says_others_are_included(
    ce: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = completed(days_ago=32)
    set_daily_costs(costs_around(record, 30, before=2.0, after=1.0))
    asked: list[dict[str, Any]] = []
    read = ce.get_cost_and_usage

    def recorded(**request: Any) -> Any:
        asked.append(request)
        return read(**request)

    monkeypatch.setattr(ce, "get_cost_and_usage", recorded)

    measurement = measure(ce, record, INSTANCE, window_days=30, requested_by="schedule", now=NOW)

    assert measurement.quality == Q.PARTIAL
    assert "other resources of the service" in (measurement.reason or "")
    assert measurement.attribution == f"service {EC2_COMPUTE} in the account and region"
    assert asked[0]["Filter"] == cost_filter(INSTANCE, resource_level=False, where=Where(ACCOUNT_ID, REGION))
    assert measurement.monthly_savings == round(MONTH_DAYS, 2)


# -- filters, accuracy, the best measurement --------------------------------------------------------


def test_filters_name_the_service_and_the_resources_or_narrow_the_service_in_the_account_and_region() -> None:
    where = Where(ACCOUNT_ID, REGION)
    spot = CostScope("spot", EC2_COMPUTE, ("i-old", "i-new"))
    assert cost_filter(spot, resource_level=True, where=where) == {
        "And": [
            {"Dimensions": {"Key": "SERVICE", "Values": [EC2_COMPUTE]}},
            {"Dimensions": {"Key": "RESOURCE_ID", "Values": ["i-old", "i-new"]}},
        ]
    }
    reservation = CostScope("ri", EC2_COMPUTE, dimensions={"INSTANCE_TYPE": ("m5.large",)}, metric=AMORTIZED)
    assert cost_filter(reservation, resource_level=False, where=where) == {
        "And": [
            {"Dimensions": {"Key": "SERVICE", "Values": [EC2_COMPUTE]}},
            {"Dimensions": {"Key": "LINKED_ACCOUNT", "Values": [ACCOUNT_ID]}},
            {"Dimensions": {"Key": "REGION", "Values": [REGION]}},
            {"Dimensions": {"Key": "INSTANCE_TYPE", "Values": ["m5.large"]}},
        ]
    }
    group = CostScope("asg", EC2_COMPUTE, ("i-1",), tags={"aws:autoscaling:groupName": ("web",)})
    assert cost_filter(group, resource_level=True, where=where)["And"][1] == {
        "Or": [
            {"Dimensions": {"Key": "RESOURCE_ID", "Values": ["i-1"]}},
            {"Tags": {"Key": "aws:autoscaling:groupName", "Values": ["web"]}},
        ]
    }


def test_accuracy_is_how_close_the_measured_saving_came_to_the_expected_one() -> None:
    assert accuracy_percent(100.0, 100.0) == 100.0
    assert accuracy_percent(90.0, 100.0) == 90.0
    assert accuracy_percent(110.0, 100.0) == 90.0
    assert accuracy_percent(250.0, 100.0) == 0.0
    assert accuracy_percent(10.0, None) is None
    assert accuracy_percent(10.0, 0.0) is None


def test_the_best_measurement_is_the_latest_complete_one_else_the_latest_partial_one() -> None:
    def made(quality: Q, saving: float | None, hour: int) -> SavingsMeasurement:
        return SavingsMeasurement(
            measured_at=NOW.replace(hour=hour),
            requested_by="schedule",
            window_days=30,
            days=6,
            quality=quality,
            monthly_savings=saving,
            method="m",
        )

    partial_early, complete, partial_late = made(Q.PARTIAL, 5.0, 1), made(Q.COMPLETE, 7.0, 2), made(Q.PARTIAL, 9.0, 3)
    assert best([partial_early, complete, partial_late]) == complete
    assert best([partial_early, partial_late]) == partial_late
    assert best([made(Q.NOT_MEASURABLE, None, 4)]) is None
    assert best([]) is None


def test_the_billing_helper_answers_each_day_as_cost_explorer_shapes_it() -> None:
    result = daily_result({date(2026, 12, 1): 1.5}, estimated=[date(2026, 12, 1)])
    assert result["ResultsByTime"] == [
        {
            "TimePeriod": {"Start": "2026-12-01", "End": "2026-12-02"},
            "Total": {"UnblendedCost": {"Amount": "1.5000000000", "Unit": "USD"}},
            "Groups": [],
            "Estimated": True,
        }
    ]


# -- keeping measurements ---------------------------------------------------------------------------


def test_a_measurement_written_meanwhile_is_kept_and_the_best_one_is_the_actual_saving(tables: None) -> None:
    store = ExecutionStore(EXECUTIONS_TABLE.local_name, REGION)
    store.create(completed(days_ago=8))
    read = store.get("exec-1")

    def made(quality: Q, saving: float) -> SavingsMeasurement:
        return SavingsMeasurement(
            measured_at=NOW,
            requested_by="schedule",
            window_days=6,
            days=6,
            quality=quality,
            monthly_savings=saving,
            method="m",
        )

    # A complete measurement lands after this one's caller read the record...
    store.add_measurement(read, made(Q.COMPLETE, 12.0))
    # ...and this one, made from that older read, is written after reading again, not over it
    stored = store.add_measurement(read, made(Q.PARTIAL, 20.0))

    assert [m.monthly_savings for m in stored.measurements] == [12.0, 20.0]
    assert stored.actual_savings == 12.0
