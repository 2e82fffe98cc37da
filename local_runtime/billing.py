"""Billing data for the local runtime: what Cost Explorer would answer about a resource's daily cost.

moto keeps no costs: it answers Cost Explorer's cost-and-usage calls from a queue of results (the
first request with new parameters takes the next one and keeps it; cost_explorer_resources answers
the resource-level call the same way). `set_daily_costs` puts one such result in the queue, for the
next savings measurement to read. Time is not emulated either: `age_completion` moves an execution's
completion back, as if it were measured that many days later.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from typing import Any

from cost_engine import topology
from cost_engine.cost_scope import UNBLENDED
from cost_engine.stores.dynamo import to_item
from local_runtime.runtime import ACCOUNT_ID, LocalRuntime


def daily_result(
    costs: Mapping[date, float], *, metric: str = UNBLENDED, estimated: Iterable[date] = ()
) -> dict[str, Any]:
    """A GetCostAndUsage answer with one period per day of `costs` (a day left out has no data)."""
    estimated_days = set(estimated)
    return {
        "ResultsByTime": [
            {
                "TimePeriod": {"Start": day.isoformat(), "End": (day + timedelta(days=1)).isoformat()},
                "Total": {metric: {"Amount": f"{amount:.10f}", "Unit": "USD"}},
                "Groups": [],
                "Estimated": day in estimated_days,
            }
            for day, amount in sorted(costs.items())
        ],
        "DimensionValueAttributes": [],
    }


def set_daily_costs(costs: Mapping[date, float], *, metric: str = UNBLENDED, estimated: Iterable[date] = ()) -> None:
    """What the next cost-and-usage request with new parameters is answered: these daily costs. The queue
    is emptied first, so that a result nobody read before cannot answer in their place."""
    from moto.ce.models import ce_backends

    backend = ce_backends[ACCOUNT_ID]["aws"]
    backend.cost_usage_results_queue.clear()
    backend.cost_usage_results_queue.append(daily_result(costs, metric=metric, estimated=estimated))


def steady_costs(first: date, last: date, before: float, after: float, change_day: date) -> dict[date, float]:
    """A resource's daily cost from `first` to `last` (inclusive): `before` a day until the change, `after`
    a day from the day after it (the day of the change costs the mean of both)."""
    days = {first + timedelta(days=n) for n in range((last - first).days + 1)}
    return {
        day: before if day < change_day else after if day > change_day else (before + after) / 2 for day in sorted(days)
    }


def age_completion(runtime: LocalRuntime, execution_id: str, days: int) -> date:
    """Move the execution's completion `days` days back (as if that much time had passed since); the new
    day of the change."""
    dynamodb, key = runtime.client("dynamodb"), {"execution_id": {"S": execution_id}}
    record = dynamodb.get_item(TableName=topology.EXECUTIONS_TABLE.local_name, Key=key)["Item"]
    completed = datetime.fromisoformat(record["completed_at"]["S"]) - timedelta(days=days)
    dynamodb.update_item(
        TableName=topology.EXECUTIONS_TABLE.local_name,
        Key=key,
        UpdateExpression="SET completed_at = :c",
        ExpressionAttributeValues={":c": {"S": to_item(completed)}},
    )
    return completed.date()
