"""`Recommendation Approved` events on the engine's bus start executions, on the local runtime: the
rule, the trigger function's asynchronous invocation with Lambda's retries and its dead-letter queue
(see local_runtime/emulations/eventbridge_lambda_targets.py), the real state machine afterwards."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from cost_engine.topology import EVENT_BUS_LOCAL_NAME, RECOMMENDATION_APPROVED_DETAIL_TYPE
from local_runtime.client import ApiClient
from local_runtime.emulations import eventbridge_lambda_targets
from local_runtime.runtime import LocalRuntime
from tests.integration.conftest import terminate_recommendation

UPSTREAM = "upstream.recommendation-engine"


def recommendation_for(customer_id: str, resource_id: str) -> dict[str, Any]:
    return terminate_recommendation(customer_id, resource_id, recommendation_id=f"rec-{uuid.uuid4().hex}")


def announce(runtime: LocalRuntime, *details: Any, detail_type: str = RECOMMENDATION_APPROVED_DETAIL_TYPE) -> None:
    """Put events on the engine's bus as the upstream engine does, then wait for their delivery
    (each is delivered to the trigger asynchronously, retried on failure)."""
    answer = runtime.client("events").put_events(
        Entries=[
            {
                "EventBusName": EVENT_BUS_LOCAL_NAME,
                "Source": UPSTREAM,
                "DetailType": detail_type,
                "Detail": detail if isinstance(detail, str) else json.dumps(detail),
            }
            for detail in details
        ]
    )
    assert answer["FailedEntryCount"] == 0
    eventbridge_lambda_targets.wait_idle(60)


def executions_of(api: ApiClient, customer_id: str) -> list[dict[str, Any]]:
    return list(api.list(customer_id)["items"])


def dead_letters_for(runtime: LocalRuntime, customer_id: str, timeout: float = 20.0) -> list[dict[str, Any]]:
    """The trigger's dead-letter records of this customer's events (deleted once read)."""
    sqs = runtime.client("sqs")
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not found and time.monotonic() < deadline:
        for message in sqs.receive_message(
            QueueUrl=runtime.trigger_dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=0
        ).get("Messages", []):
            record = json.loads(message["Body"])
            if customer_id in json.dumps(record.get("requestPayload")):
                found.append(record)
                sqs.delete_message(QueueUrl=runtime.trigger_dlq_url, ReceiptHandle=message["ReceiptHandle"])
    return found


def test_an_approved_recommendation_event_registers_it_and_starts_one_execution(
    runtime: LocalRuntime, api: ApiClient, launch_instance: Callable[..., str], customer_id: str
) -> None:
    recommendation = recommendation_for(customer_id, launch_instance())
    announce(runtime, recommendation)

    assert api.request("GET", f"/recommendations/{recommendation['recommendation_id']}").status_code == 200
    (execution,) = executions_of(api, customer_id)
    assert execution["recommendation_id"] == recommendation["recommendation_id"]
    # Approved upstream, but a termination is high risk: the engine's policy still asks a person.
    execution = api.wait_for(execution["execution_id"], frozenset({"awaiting_approval", "failed"}))
    assert execution["status"] == "awaiting_approval"
    assert execution["auto_approve_requested"] is True
    # No person asked for it: four eyes compares no approver with it.
    assert execution["requested_by"] == f"event:{UPSTREAM}"
    requested = api.logs(execution["execution_id"])["events"][0]
    assert (requested["event_type"], requested["actor"]) == ("execution_requested", f"event:{UPSTREAM}")
    assert requested["detail"]["idempotency_key"] == f"recommendation-approved:{recommendation['recommendation_id']}"
    assert dead_letters_for(runtime, customer_id, timeout=2) == []


def test_an_event_delivered_twice_or_announced_twice_starts_exactly_one_execution(
    runtime: LocalRuntime, api: ApiClient, launch_instance: Callable[..., str], customer_id: str
) -> None:
    recommendation = recommendation_for(customer_id, launch_instance())
    # Two entries in one call (two event ids, delivered concurrently), then the same again later.
    announce(runtime, recommendation, recommendation)
    announce(runtime, recommendation)

    (execution,) = executions_of(api, customer_id)
    events = [e["event_type"] for e in api.logs(execution["execution_id"])["events"]]
    assert events.count("execution_requested") == 1
    assert api.wait_for(execution["execution_id"], frozenset({"awaiting_approval", "failed"}))["status"] == (
        "awaiting_approval"
    )
    assert dead_letters_for(runtime, customer_id, timeout=2) == []


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (lambda r: r.pop("resource_id"), "detail.resource_id: Field required"),
        (lambda r: r.update(type="delete_everything"), "detail.type"),
        (lambda r: r.update(estimated_monthly_savings=-5), "detail.estimated_monthly_savings"),
    ],
    ids=["missing-resource", "unknown-type", "negative-savings"],
)
def test_a_malformed_event_goes_to_the_dead_letter_queue_and_starts_nothing(
    runtime: LocalRuntime,
    api: ApiClient,
    launch_instance: Callable[..., str],
    customer_id: str,
    change: Callable[[dict[str, Any]], Any],
    complaint: str,
) -> None:
    recommendation = recommendation_for(customer_id, launch_instance())
    change(recommendation)
    announce(runtime, recommendation)

    (record,) = dead_letters_for(runtime, customer_id)
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3  # the first try and Lambda's 2 retries
    assert record["requestPayload"]["detail"] == recommendation
    assert record["responsePayload"]["errorType"] == "MalformedEvent"
    assert complaint in record["responsePayload"]["errorMessage"]
    assert api.request("GET", f"/recommendations/{recommendation['recommendation_id']}").status_code == 404
    assert executions_of(api, customer_id) == []


def test_an_event_conflicting_with_a_registered_recommendation_is_dead_lettered_and_changes_nothing(
    runtime: LocalRuntime, api: ApiClient, launch_instance: Callable[..., str], customer_id: str
) -> None:
    recommendation = recommendation_for(customer_id, launch_instance())
    api.register(recommendation)
    announce(runtime, {**recommendation, "estimated_monthly_savings": 9000.0})

    (record,) = dead_letters_for(runtime, customer_id)
    assert "already registered with different content" in record["responsePayload"]["errorMessage"]
    assert executions_of(api, customer_id) == []
    stored = api.request("GET", f"/recommendations/{recommendation['recommendation_id']}").json()
    assert stored["estimated_monthly_savings"] == 70.0
