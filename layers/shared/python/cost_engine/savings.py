"""Savings measured from the bill: an execution's realized saving, from Cost Explorer.

The cost of what the change moved (its type's `CostScope`) is read day by day over two equal windows:
the days before the day of the change, and as many days after it (the day of the change itself is in
neither: it is billed partly at each rate). The difference, divided by the days and multiplied by an
average month, is the monthly saving; its accuracy is how close it came to the saving the engine
expected at completion (the catalog's price difference for what was done).

Cost Explorer keeps each resource's daily cost for the last 14 days (`GetCostAndUsageWithResources`,
once resource-level data is turned on in its settings). A measurement whose windows fall in that span
reads the resource's own cost; an older one, or a type whose saving is no one resource's (a
reservation, a group's instances), reads the narrowest filter that holds (the service in the
execution's account and region, with the type's dimensions and tags), and says so.

A measurement is one of: complete (both windows over, every day's cost final), partial (a figure, and
why it is not final: the window is not over yet, Cost Explorer still estimates some days, days are
missing, other resources are included) or not measurable (no figure, and why). Each is kept on the
execution; the best one (the latest complete, else the latest partial) is its `actual_savings`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import ClientError

from cost_engine.aws import error_code
from cost_engine.cost_scope import CostScope
from cost_engine.models import ExecutionRecord, MeasurementQuality, SavingsMeasurement, utc_now

if TYPE_CHECKING:
    from mypy_boto3_ce import CostExplorerClient
    from mypy_boto3_ce.type_defs import ExpressionTypeDef

Q = MeasurementQuality

# An average month, in days (what AWS's monthly prices assume: 730 hours).
MONTH_DAYS = 365 / 12
# How many days back Cost Explorer keeps resource-level daily costs.
RESOURCE_DATA_DAYS = 14
# The seed's business target for the accuracy of savings.
ACCURACY_TARGET_PERCENT = 90.0


@dataclass(frozen=True)
class Windows:
    """Two windows of `days` days (ends exclusive, as Cost Explorer's TimePeriod)."""

    before_start: date
    before_end: date
    after_start: date
    after_end: date
    days: int


def windows(completed_at: datetime, window_days: int, today: date) -> Windows | None:
    """The windows a measurement made `today` can compare: as many whole days after the day of the
    change as have passed, up to `window_days`, and as many before it. None before the first whole day."""
    change_day = completed_at.date()
    after_start = change_day + timedelta(days=1)
    days = min(window_days, (today - after_start).days)
    if days <= 0:
        return None
    return Windows(change_day - timedelta(days=days), change_day, after_start, after_start + timedelta(days=days), days)


@dataclass(frozen=True)
class DailyCosts:
    """What Cost Explorer answered for the span of both windows."""

    costs: dict[date, float]  # the days it had a figure for
    estimated: frozenset[date]  # the days whose figure is still an estimate


def read_daily_costs(
    ce: CostExplorerClient, scope: CostScope, span: tuple[date, date], *, resource_level: bool, where: Where
) -> DailyCosts:
    """The scope's daily cost over `span` (one request, paged): the resources' own where
    `resource_level`, otherwise the service's in the account and region narrowed by the scope."""
    request: dict[str, Any] = {
        "TimePeriod": {"Start": span[0].isoformat(), "End": span[1].isoformat()},
        "Granularity": "DAILY",
        "Metrics": [scope.metric],
        "Filter": cost_filter(scope, resource_level=resource_level, where=where),
    }
    read = ce.get_cost_and_usage_with_resources if resource_level else ce.get_cost_and_usage
    costs: dict[date, float] = {}
    estimated: set[date] = set()
    while True:
        answer = read(**request)
        for period in answer.get("ResultsByTime", []):
            day = date.fromisoformat(period["TimePeriod"]["Start"])
            amount = (period.get("Total") or {}).get(scope.metric, {}).get("Amount")
            if amount is not None:
                costs[day] = costs.get(day, 0.0) + float(Decimal(amount))
            if period.get("Estimated"):
                estimated.add(day)
        token = answer.get("NextPageToken")
        if not token:
            return DailyCosts(costs, frozenset(estimated))
        request["NextPageToken"] = token


@dataclass(frozen=True)
class Where:
    account_id: str | None
    region: str


def cost_filter(scope: CostScope, *, resource_level: bool, where: Where) -> ExpressionTypeDef:
    """Cost Explorer's filter for the scope: its service and resources, or its service in the
    account and region with its dimensions and tags."""
    parts: list[ExpressionTypeDef] = [{"Dimensions": {"Key": "SERVICE", "Values": [scope.service]}}]
    narrowing: list[ExpressionTypeDef] = []
    if resource_level:
        narrowing.append({"Dimensions": {"Key": "RESOURCE_ID", "Values": list(scope.resources)}})
    else:
        if where.account_id:
            parts.append({"Dimensions": {"Key": "LINKED_ACCOUNT", "Values": [where.account_id]}})
        parts.append({"Dimensions": {"Key": "REGION", "Values": [where.region]}})
        parts += [
            cast("ExpressionTypeDef", {"Dimensions": {"Key": key, "Values": list(values)}})
            for key, values in scope.dimensions.items()
        ]
    # A tag (an Auto Scaling group's) names what the resource became: its cost is added to the resource's.
    narrowing += [{"Tags": {"Key": key, "Values": list(values)}} for key, values in scope.tags.items()]
    if len(narrowing) > 1:
        parts.append({"Or": narrowing})
    else:
        parts += narrowing
    return parts[0] if len(parts) == 1 else {"And": parts}


def attribution(scope: CostScope, resource_level: bool) -> str:
    if resource_level:
        return "resource: " + ", ".join(scope.resources)
    narrowed = [f"{key} {', '.join(values)}" for key, values in {**scope.dimensions, **scope.tags}.items()]
    return ", ".join([f"service {scope.service} in the account and region", *narrowed])


def accuracy_percent(measured: float, expected: float | None) -> float | None:
    """How close the measured saving came to the expected one: 100 when equal, 0 when off by as much as
    the expectation or more. None without an expectation to compare with."""
    if not expected:
        return None
    return round(max(0.0, 100.0 * (1 - abs(measured - expected) / abs(expected))), 1)


def measure(
    ce: CostExplorerClient,
    record: ExecutionRecord,
    scope: CostScope,
    *,
    window_days: int,
    requested_by: str,
    now: datetime | None = None,
) -> SavingsMeasurement:
    """Measure a completed execution's saving over windows of up to `window_days` days."""
    now = now or utc_now()
    base: dict[str, Any] = {
        "measured_at": now,
        "requested_by": requested_by,
        "window_days": window_days,
        "expected_savings": record.expected_savings,
        "method": scope.method,
    }
    if record.completed_at is None:
        return SavingsMeasurement(**base, days=0, quality=Q.NOT_MEASURABLE, reason="the execution has not completed")
    span = windows(record.completed_at, window_days, now.date())
    if span is None:
        reason = "no whole day of billing data since the change yet (the day of the change is billed at both rates)"
        return SavingsMeasurement(**base, days=0, quality=Q.NOT_MEASURABLE, reason=reason)
    base |= {
        "days": span.days,
        "before_start": span.before_start,
        "before_end": span.before_end,
        "after_start": span.after_start,
        "after_end": span.after_end,
    }
    resource_level = bool(scope.resources) and span.before_start >= now.date() - timedelta(days=RESOURCE_DATA_DAYS)
    base["attribution"] = attribution(scope, resource_level)
    where = Where(record.account_id, record.region)
    try:
        daily = read_daily_costs(
            ce, scope, (span.before_start, span.after_end), resource_level=resource_level, where=where
        )
    except ClientError as error:
        reason = f"Cost Explorer refused: {error_code(error)}: {error.response.get('Error', {}).get('Message', '')}"
        if resource_level and error_code(error) in ("DataUnavailableException", "ValidationException"):
            reason += " (resource-level data must be turned on in Cost Explorer's settings)"
        return SavingsMeasurement(**base, quality=Q.NOT_MEASURABLE, reason=reason)
    return _judged(base, scope, span, daily, resource_level)


def _days(start: date, end: date) -> list[date]:
    return [start + timedelta(days=n) for n in range((end - start).days)]


def _judged(
    base: dict[str, Any], scope: CostScope, span: Windows, daily: DailyCosts, resource_level: bool
) -> SavingsMeasurement:
    before_days, after_days = _days(span.before_start, span.before_end), _days(span.after_start, span.after_end)
    before_known = [day for day in before_days if day in daily.costs]
    after_known = [day for day in after_days if day in daily.costs]
    before = round(sum(daily.costs[day] for day in before_known), 4)
    after = round(sum(daily.costs[day] for day in after_known), 4)
    if not before_known or before <= 0:
        reason = "no cost recorded before the change: nothing to measure a saving against"
        return SavingsMeasurement(**base, before_cost=before, after_cost=after, quality=Q.NOT_MEASURABLE, reason=reason)
    if not after_known and not scope.removes_resource:
        # Not a deletion, yet nothing was billed after it: the resource went (deleted since, or
        # replaced), or its cost is not attributed yet. Its disappearing is not this change's saving.
        reason = (
            "no cost recorded after the change: the resource may be gone since (its saving would not be this"
            " change's) or not billed yet"
        )
        return SavingsMeasurement(**base, before_cost=before, quality=Q.NOT_MEASURABLE, reason=reason)
    reasons: list[str] = []
    if span.days < base["window_days"]:
        reasons.append(f"the window is not over: {span.days} of {base['window_days']} days")
    if missing := len(before_days) - len(before_known):
        reasons.append(f"{missing} day(s) before the change have no cost data")
    if (missing := len(after_days) - len(after_known)) and not scope.removes_resource:
        reasons.append(f"{missing} day(s) after the change have no cost data")
    if estimated := len(daily.estimated & set(before_days + after_days)):
        reasons.append(f"Cost Explorer still estimates {estimated} day(s)")
    if scope.resources and not resource_level:
        reasons.append(
            f"older than Cost Explorer's {RESOURCE_DATA_DAYS} days of resource-level data: other resources of the"
            " service in the account and region are included"
        )
    monthly = round((before - after) / span.days * MONTH_DAYS, 2)
    return SavingsMeasurement(
        **base,
        before_cost=before,
        after_cost=after,
        monthly_savings=monthly,
        accuracy_percent=accuracy_percent(monthly, base["expected_savings"]),
        quality=Q.PARTIAL if reasons else Q.COMPLETE,
        reason="; ".join(reasons) or None,
    )


def best(measurements: list[SavingsMeasurement]) -> SavingsMeasurement | None:
    """The measurement that stands for the execution's actual saving: the latest complete one, else the
    latest partial one; None while none has a figure."""
    for quality in (Q.COMPLETE, Q.PARTIAL):
        found = [m for m in measurements if m.quality == quality and m.monthly_savings is not None]
        if found:
            return max(found, key=lambda m: m.measured_at)
    return None
