"""Cancelling at every stage, scheduled executions and idempotent execute requests, on the local
runtime: the real state machines, the API, and the instance checked in the emulated account."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from local_runtime.client import ApiClient, ApiError
from local_runtime.runtime import LocalRuntime
from tests.integration.conftest import instance_state, restored_instances, step_events


def in_seconds(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def event_types(api: ApiClient, execution_id: str) -> list[str]:
    return [e["event_type"] for e in api.logs(execution_id)["events"]]


def state_machine_status(runtime: LocalRuntime, execution: dict[str, Any]) -> str:
    arn = execution["state_machine_execution_arn"]
    return str(runtime.client("stepfunctions").describe_execution(executionArn=arn)["status"])


def test_a_scheduled_execution_shows_scheduled_until_its_time_then_runs(
    api: ApiClient, launch_instance: Callable[..., str], recommend: Callable[..., str]
) -> None:
    instance_id = launch_instance()
    at = in_seconds(4)
    accepted = api.execute(recommend(instance_id), scheduled_time=at)
    assert accepted["status"] == "scheduled"
    assert accepted["scheduled_time"].startswith(at[:19])
    assert api.status(accepted["execution_id"])["status"] == "scheduled"
    assert event_types(api, accepted["execution_id"])[:2] == ["execution_requested", "scheduled"]

    execution = api.wait_for(accepted["execution_id"], frozenset({"awaiting_approval", "failed"}), timeout=60)
    assert execution["status"] == "awaiting_approval"
    started = next(e for e in api.logs(accepted["execution_id"])["events"] if e["event_type"] == "validated")
    # moto's Wait counts whole seconds (it truncates the delta), so it may end up to 1 s early.
    assert datetime.fromisoformat(started["timestamp"]) >= datetime.fromisoformat(at) - timedelta(seconds=1)


def test_cancelling_a_scheduled_execution_stops_it_before_anything_is_checked_or_touched(
    runtime: LocalRuntime, api: ApiClient, ec2: Any, launch_instance: Callable[..., str], recommend: Callable[..., str]
) -> None:
    instance_id = launch_instance()
    execution_id = api.execute(recommend(instance_id), scheduled_time=in_seconds(3600))["execution_id"]

    cancelled = api.cancel(execution_id)
    assert cancelled["status"] == "cancelled"
    assert "validated" not in event_types(api, execution_id)
    assert state_machine_status(runtime, api.status(execution_id)) == "ABORTED"
    assert instance_state(ec2, instance_id) == "running"


@pytest.mark.parametrize(
    ("delay", "message"),
    [(-60, "in the past"), (31 * 86400, "more than 30 days ahead")],
    ids=["past", "too-far-ahead"],
)
def test_a_scheduled_time_in_the_past_or_too_far_ahead_is_refused_and_creates_nothing(
    api: ApiClient,
    launch_instance: Callable[..., str],
    recommend: Callable[..., str],
    customer_id: str,
    delay: int,
    message: str,
) -> None:
    recommendation_id = recommend(launch_instance())
    with pytest.raises(ApiError) as refused:
        api.execute(recommendation_id, scheduled_time=in_seconds(delay))
    assert refused.value.status_code == 400
    assert message in str(refused.value)
    assert api.list(customer_id)["items"] == []


def test_cancelling_while_the_instance_is_being_terminated_rolls_back_then_ends_cancelled(
    runtime: LocalRuntime, api: ApiClient, ec2: Any, launch_instance: Callable[..., str], recommend: Callable[..., str]
) -> None:
    instance_id = launch_instance()
    execution_id = api.execute(recommend(instance_id))["execution_id"]
    api.wait_for(execution_id, frozenset({"awaiting_approval"}))
    # Held between the termination call and its first check: the change has provably begun.
    held = runtime.faults.hold("check_action", execution_id=execution_id)
    api.approve(execution_id, "lead@example.com")
    assert held.reached.wait(60)
    assert instance_state(ec2, instance_id) in ("shutting-down", "terminated")

    response = api.request("POST", f"/executions/{execution_id}/cancel")
    assert response.status_code == 202
    assert response.json()["status"] == "executing"
    assert response.json()["cancel_requested_by"]
    held.release()

    execution = api.wait_for(execution_id)
    assert execution["status"] == "cancelled"
    assert execution["rollback_executed"] is True
    assert execution["error_message"].startswith("CancelRequested: cancelled by")
    assert execution["rollback_result"]["success"] is True
    events = event_types(api, execution_id)
    order = ["action_started", "cancel_requested", "cancel_honoured", "rollback_started", "rolled_back", "cancelled"]
    assert [e for e in events if e in order] == order
    assert step_events(events)[-1] == "cancelled"
    restored = restored_instances(ec2, execution_id)
    assert [i["State"]["Name"] for i in restored] == ["running"]


def test_cancelling_a_finished_execution_is_refused_with_what_to_do_instead(
    api: ApiClient, launch_instance: Callable[..., str], recommend: Callable[..., str]
) -> None:
    execution = api.run(recommend(launch_instance()), approver="lead@example.com")
    assert execution["status"] == "completed"
    with pytest.raises(ApiError) as refused:
        api.cancel(execution["execution_id"])
    assert refused.value.status_code == 409
    assert "ask for a rollback" in str(refused.value)


def test_a_repeated_execute_with_the_same_idempotency_key_returns_the_same_execution(
    api: ApiClient, launch_instance: Callable[..., str], recommend: Callable[..., str], customer_id: str
) -> None:
    recommendation_id = recommend(launch_instance())
    first = api.request(
        "POST", "/executions/execute", json={"recommendation_id": recommendation_id}, headers={"Idempotency-Key": "k-1"}
    )
    again = api.request(
        "POST", "/executions/execute", json={"recommendation_id": recommendation_id}, headers={"Idempotency-Key": "k-1"}
    )
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json()["execution_id"] == again.json()["execution_id"]
    assert len(api.list(customer_id)["items"]) == 1

    different = api.request(
        "POST",
        "/executions/execute",
        json={"recommendation_id": recommendation_id, "dry_run": True},
        headers={"Idempotency-Key": "k-1"},
    )
    assert different.status_code == 409
    assert "different request" in different.json()["message"]
    bad = api.request(
        "POST", "/executions/execute", json={"recommendation_id": recommendation_id}, headers={"Idempotency-Key": "a b"}
    )
    assert bad.status_code == 422
    assert bad.json()["details"][0]["field"].lower() == "idempotency-key"
    assert len(api.list(customer_id)["items"]) == 1
