"""`Execution Status Changed` events on the engine's bus, read through a rule with an SQS target."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from cost_engine.topology import EVENT_BUS_LOCAL_NAME, EVENT_SOURCE, STATUS_CHANGED_DETAIL_TYPE
from local_runtime.client import ApiClient
from local_runtime.runtime import LocalRuntime
from tests.integration.conftest import eventually

RUN_ENDED = frozenset({"ExecutionSucceeded", "ExecutionFailed", "ExecutionAborted", "ExecutionTimedOut"})


def follow(runtime: LocalRuntime, customer_id: str) -> tuple[Any, str]:
    """A rule on the engine's bus for one customer's status changes, delivering to a new queue."""
    sqs, events = runtime.client("sqs"), runtime.client("events")
    queue_url = sqs.create_queue(QueueName=f"status-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    rule = f"follow-{uuid.uuid4().hex[:8]}"
    events.put_rule(
        Name=rule,
        EventBusName=EVENT_BUS_LOCAL_NAME,
        EventPattern=json.dumps(
            {
                "source": [EVENT_SOURCE],
                "detail-type": [STATUS_CHANGED_DETAIL_TYPE],
                "detail": {"customer_id": [customer_id]},
            }
        ),
    )
    events.put_targets(Rule=rule, EventBusName=EVENT_BUS_LOCAL_NAME, Targets=[{"Id": "queue", "Arn": queue_arn}])
    return sqs, queue_url


def received(sqs: Any, queue_url: str, until: str, timeout: float = 20.0) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not any(e["detail"]["new_status"] == until for e in events):
        for message in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
            "Messages", []
        ):
            events.append(json.loads(message["Body"]))
    return events


def test_every_status_change_of_an_execution_is_published_in_order_with_its_savings(
    api: ApiClient, runtime: LocalRuntime, customer_id: str
) -> None:
    sqs, queue_url = follow(runtime, customer_id)
    log_group = f"events-{uuid.uuid4().hex[:8]}"
    runtime.client("logs").create_log_group(logGroupName=log_group)
    recommendation = api.register(
        {
            "customer_id": customer_id,
            "type": "fix_config",
            "account_id": "123456789012",
            "region": "us-east-1",
            "resource_id": log_group,
            "parameters": {"setting": "log_retention", "retention_in_days": 30},
            "estimated_monthly_savings": 12.0,
        }
    )
    execution = api.run(recommendation["recommendation_id"], auto_approve=True)
    assert execution["status"] == "completed"

    events = received(sqs, queue_url, until="completed")
    assert {(e["source"], e["detail-type"]) for e in events} == {(EVENT_SOURCE, STATUS_CHANGED_DETAIL_TYPE)}
    details = sorted((e["detail"] for e in events), key=lambda d: d["changed_at"])
    assert [(d["old_status"], d["new_status"]) for d in details] == [
        ("pending", "validating"),
        ("validating", "approved"),
        ("approved", "executing"),
        ("executing", "verifying"),
        ("verifying", "completed"),
    ]
    last = details[-1]
    assert last["execution_id"] == execution["execution_id"]
    assert last["recommendation_id"] == recommendation["recommendation_id"]
    assert last["recommendation_type"] == "fix_config"
    assert last["expected_savings"] == execution["expected_savings"]
    assert last["estimated_monthly_savings"] == execution["estimated_monthly_savings"]


def test_logs_show_the_audit_events_and_the_step_by_step_history_in_order(
    api: ApiClient, runtime: LocalRuntime, customer_id: str
) -> None:
    log_group = f"history-{uuid.uuid4().hex[:8]}"
    runtime.client("logs").create_log_group(logGroupName=log_group)
    recommendation = api.register(
        {
            "customer_id": customer_id,
            "type": "fix_config",
            "account_id": "123456789012",
            "region": "us-east-1",
            "resource_id": log_group,
            "parameters": {"setting": "log_retention", "retention_in_days": 30},
        }
    )
    execution = api.run(recommendation["recommendation_id"], auto_approve=True)
    api.rollback(execution["execution_id"])
    assert api.wait_for(execution["execution_id"])["status"] == "rolled_back"

    def both_runs_ended() -> dict[str, Any] | None:
        # The final status is written by the run's last step; the run itself ends a moment later.
        logs = api.logs(execution["execution_id"])
        return logs if sum(h["event"] in RUN_ENDED for h in logs["history"]) == 2 else None

    logs = eventually(both_runs_ended, "the execute and the rollback runs to end")
    assert logs["events"][0]["event_type"] == "execution_requested"
    history = logs["history"]
    entered = [(h["run"], h["state"]) for h in history if h["event"] == "state_entered"]
    execute_states = [state for run, state in entered if run == "execute"]
    for earlier, later in (
        ("Prepare", "AcquireSlot"),
        ("AcquireSlot", "Backup"),
        ("Backup", "Act"),
        ("Act", "Finish"),
    ):
        assert execute_states.index(earlier) < execute_states.index(later)
    assert ("rollback-1", "Rollback") in entered
    results = [h["result"] for h in history if h["event"] == "step_result" and h["run"] == "execute"]
    assert {"next": "approved"} in results
    assert [h["event"] for h in history if h["event"].startswith("Execution")] == ["ExecutionSucceeded"] * 2
    assert all("task_token" not in json.dumps(h) and "Token" not in json.dumps(h) for h in history)
