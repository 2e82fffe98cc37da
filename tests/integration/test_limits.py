"""The safety limits on the local runtime, through the real state machines: one execution per
resource, the cooldown after a change, at most N executions acting at once (in approval order, none
dropped), and the acting time limit (rolled back, then failed with the reason)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from local_runtime.client import ApiClient, ApiError
from local_runtime.runtime import LocalRuntime
from tests.integration.conftest import (
    acting_intervals,
    deployed_with,
    eventually,
    instance_state,
    most_at_once,
    restored_instances,
)


def events(api: ApiClient, execution_id: str) -> list[dict[str, Any]]:
    return list(api.logs(execution_id)["events"])


def event_types(api: ApiClient, execution_id: str) -> list[str]:
    return [e["event_type"] for e in events(api, execution_id)]


@pytest.fixture
def log_groups(runtime: LocalRuntime) -> Callable[[int], list[str]]:
    def create(count: int) -> list[str]:
        logs = runtime.client("logs")
        names = [f"limits-{uuid.uuid4().hex[:8]}" for _ in range(count)]
        for name in names:
            logs.create_log_group(logGroupName=name)
        return names

    return create


def retention_fix(recommend: Callable[..., str], log_group: str) -> str:
    # Low risk: asked with auto_approve, the policy approves it, so it goes straight to acting.
    return recommend(
        log_group,
        type="fix_config",
        parameters={"setting": "log_retention", "retention_in_days": 30},
        estimated_monthly_savings=5.0,
    )


def test_a_second_execution_on_a_resource_in_use_is_refused_and_creates_nothing(
    api: ApiClient, launch_instance: Callable[..., str], recommend: Callable[..., str], customer_id: str
) -> None:
    instance_id = launch_instance()
    first = api.execute(recommend(instance_id))["execution_id"]
    api.wait_for(first, frozenset({"awaiting_approval"}))

    with pytest.raises(ApiError) as refused:
        api.execute(recommend(instance_id, estimated_monthly_savings=71.0))
    assert refused.value.status_code == 409
    assert refused.value.body["error"] == "resource_busy"
    assert first in refused.value.body["message"]
    # A dry run changes nothing, so it takes no lock and is not refused.
    assert api.run(recommend(instance_id, estimated_monthly_savings=72.0), dry_run=True)["status"] == "completed"
    assert [e["execution_id"] for e in api.list(customer_id, status="awaiting_approval")["items"]] == [first]

    api.reject(first, "lead@example.com")
    api.wait_for(first)
    # Rejected: nothing was changed, so no cooldown: the resource is free at once.
    assert api.execute(recommend(instance_id, estimated_monthly_savings=73.0))["status"] == "pending"


def test_a_changed_resource_cools_down_before_the_next_execution(
    api: ApiClient, recommend: Callable[..., str], log_groups: Callable[[int], list[str]]
) -> None:
    (group,) = log_groups(1)
    with deployed_with(resource_cooldown_seconds=3):
        done = api.run(retention_fix(recommend, group), auto_approve=True)
        assert done["status"] == "completed"
        # Written by the final status change itself, right after it.
        eventually(
            lambda: True if "resource_cooldown_started" in event_types(api, done["execution_id"]) else None,
            "the cooldown to be recorded",
        )
        again = recommend(group, type="fix_config", parameters={"setting": "log_retention", "retention_in_days": 60})
        with pytest.raises(ApiError) as refused:
            api.execute(again)
        assert refused.value.status_code == 409
        assert "cooling down" in refused.value.body["message"]

        def started() -> dict[str, Any] | None:
            try:
                return api.execute(again, auto_approve=True)
            except ApiError as busy:
                if busy.status_code != 409:
                    raise
                return None

        later = eventually(started, "the cooldown to pass", interval=0.5)
        assert api.wait_for(later["execution_id"])["status"] == "completed"


def test_at_most_the_limit_act_at_once_the_rest_wait_in_order_and_none_is_dropped(
    runtime: LocalRuntime, api: ApiClient, recommend: Callable[..., str], log_groups: Callable[[int], list[str]]
) -> None:
    groups = log_groups(5)
    with deployed_with(max_concurrent_acting=2):
        # The first two to act are held mid-change, so the others provably have to wait.
        holds = [runtime.faults.hold("check_action"), runtime.faults.hold("check_action")]
        execution_ids = []
        for group in groups:
            execution_ids.append(api.execute(retention_fix(recommend, group), auto_approve=True)["execution_id"])
        assert all(hold.reached.wait(60) for hold in holds)
        statuses = {e: api.wait_for(e, frozenset({"approved", "executing"}))["status"] for e in execution_ids}
        assert sorted(statuses.values()) == ["approved", "approved", "approved", "executing", "executing"]
        waiting = [e for e, status in statuses.items() if status == "approved"]

        # One slot frees: the waiters go through it one after the other, while the second stays held.
        holds[0].release()
        for execution_id in waiting:
            assert api.wait_for(execution_id, timeout=120)["status"] == "completed"
        holds[1].release()
        outcomes = [api.wait_for(e, timeout=120) for e in execution_ids]

    assert [o["status"] for o in outcomes] == ["completed"] * 5, [o["error_message"] for o in outcomes]
    assert most_at_once(acting_intervals(api, execution_ids)) == 2
    assert all("waiting_for_slot" in event_types(api, e) for e in waiting)
    # The slot went to the waiting executions in the order they were approved (joined the queue).
    queued_at = {e: api.status(e)["queued_at"] for e in waiting}
    got_slot = {e: next(x["timestamp"] for x in events(api, e) if x["event_type"] == "slot_acquired") for e in waiting}
    assert sorted(waiting, key=queued_at.__getitem__) == sorted(waiting, key=got_slot.__getitem__)
    # Nobody polled for a slot: each run asked once and was woken when its turn came.
    for execution_id in execution_ids:
        history = api.logs(execution_id)["history"]
        asked = [h for h in history if h["event"] == "state_entered" and h["state"] == "AcquireSlot"]
        assert len(asked) == 1, execution_id
        assert not any(h["event"] == "state_entered" and h["state"].startswith("Wait") for h in history)


def test_an_acting_phase_over_the_time_limit_is_rolled_back_and_fails_with_the_reason(
    runtime: LocalRuntime,
    api: ApiClient,
    ec2: Any,
    launch_instance: Callable[..., str],
    recommend: Callable[..., str],
) -> None:
    instance_id = launch_instance()
    execution_id = api.execute(recommend(instance_id))["execution_id"]
    api.wait_for(execution_id, frozenset({"awaiting_approval"}))
    held = runtime.faults.hold("check_action", execution_id=execution_id)
    api.approve(execution_id, "lead@example.com")
    assert held.reached.wait(60)
    # The termination was asked for; the limit is lowered only now, so the steps before it (their
    # pace depends on the machine) cannot be the ones that run past it.
    with deployed_with(max_acting_seconds=1):
        started = datetime.fromisoformat(api.status(execution_id)["acting_started_at"])
        eventually(
            lambda: True if datetime.now(UTC) - started > timedelta(seconds=1) else None,
            "the acting phase to run past its one second",
        )
        held.release()
        execution = api.wait_for(execution_id, timeout=90)

    assert execution["status"] == "failed"
    assert execution["rollback_executed"] is True
    assert execution["acting_timed_out"] is True
    assert execution["error_message"].startswith("ActingTimeLimitExceeded: the acting phase ran")
    assert "acting_time_limit_exceeded" in event_types(api, execution_id)
    assert [i["State"]["Name"] for i in restored_instances(ec2, execution_id)] == ["running"]
    assert instance_state(ec2, instance_id) in ("terminated", "shutting-down")


def test_simultaneous_starts_on_one_resource_let_exactly_one_through(
    api: ApiClient, launch_instance: Callable[..., str], recommend: Callable[..., str], customer_id: str
) -> None:
    instance_id = launch_instance()
    recommendations = [recommend(instance_id, estimated_monthly_savings=60.0 + n) for n in range(6)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(
            pool.map(
                lambda r: api.request("POST", "/executions/execute", json={"recommendation_id": r}), recommendations
            )
        )
    assert sorted(a.status_code for a in answers) == [202] + [409] * 5
    assert len(api.list(customer_id)["items"]) == 1
