"""The engine driven from outside: the upstream engine's `Recommendation Approved` event starts an
execution (once, however often it is announced), a malformed event ends in the dead-letter queue, and
an execution scheduled for tonight waits as `scheduled` until it is cancelled."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from cost_engine.topology import EVENT_BUS_LOCAL_NAME, RECOMMENDATION_APPROVED_DETAIL_TYPE
from local_runtime.emulations import eventbridge_lambda_targets
from local_runtime.runtime import ACCOUNT_ID, REGION

if TYPE_CHECKING:
    from local_runtime.demo import Demo

ORDER = 95
TITLE = "interfaces: Recommendation Approved events, scheduled executions"
LOG_GROUP = "orders-worker-debug"
UPSTREAM = "upstream.recommendation-engine"


def _announce(demo: Demo, detail: dict[str, Any], times: int = 1) -> None:
    entry = {
        "EventBusName": EVENT_BUS_LOCAL_NAME,
        "Source": UPSTREAM,
        "DetailType": RECOMMENDATION_APPROVED_DETAIL_TYPE,
        "Detail": json.dumps(detail),
    }
    demo.runtime.client("events").put_events(Entries=[entry] * times)
    eventbridge_lambda_targets.wait_idle(60)


def run(demo: Demo) -> None:
    from local_runtime.demo import CUSTOMER

    logs = demo.runtime.client("logs")
    logs.create_log_group(logGroupName=LOG_GROUP)
    print(f"  seeded {LOG_GROUP:<20} log group, retention: never expire")
    recommendation = {
        "recommendation_id": f"rec-upstream-{uuid.uuid4().hex[:8]}",
        "customer_id": CUSTOMER,
        "type": "fix_config",
        "account_id": ACCOUNT_ID,
        "region": REGION,
        "resource_id": LOG_GROUP,
        "parameters": {"setting": "log_retention", "retention_in_days": 14},
        "estimated_monthly_savings": 9.5,
    }

    print(f"\n1. {UPSTREAM} announces 'Recommendation Approved' for {LOG_GROUP}, twice")
    _announce(demo, recommendation, times=2)
    started = [
        e
        for e in demo.api.list(CUSTOMER, limit=100)["items"]
        if e["recommendation_id"] == recommendation["recommendation_id"]
    ]
    print(f"     executions started for it: {len(started)}")
    execution = demo.api.wait_for(started[0]["execution_id"]) if started else {"status": "missing"}
    groups = logs.describe_log_groups(logGroupNamePrefix=LOG_GROUP)["logGroups"]
    retention = groups[0].get("retentionInDays")
    demo.record(
        "events: Recommendation Approved",
        execution,
        "completed",
        f"one execution from two deliveries, retention now {retention} days",
        len(started) == 1 and retention == 14,
    )

    print("\n2. A malformed event (no resource id) is refused and dead-lettered")
    broken = {k: v for k, v in recommendation.items() if k != "resource_id"}
    broken["recommendation_id"] = f"rec-upstream-{uuid.uuid4().hex[:8]}"
    _announce(demo, broken)
    sqs = demo.runtime.client("sqs")
    messages = sqs.receive_message(
        QueueUrl=demo.runtime.trigger_dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=2
    ).get("Messages", [])
    reasons = [
        json.loads(m["Body"])["responsePayload"]["errorMessage"]
        for m in messages
        if broken["recommendation_id"] in m["Body"]
    ]
    for reason in reasons:
        print(f"     dead-letter queue: {reason}")
    registered = demo.api.request("GET", f"/recommendations/{broken['recommendation_id']}").status_code
    demo.check(
        f"malformed event dead-lettered once, nothing registered (GET → {registered})",
        len(reasons) == 1 and registered == 404,
    )

    print("\n3. Scheduled for tonight, then cancelled")
    tonight = (datetime.now(UTC) + timedelta(hours=6)).strftime("%Y-%m-%dT%H:%M:%SZ")
    web = demo.launch_instance("reports-batch", "m5.xlarge", "idle outside the nightly run")
    accepted = demo.api.execute(demo.recommend("terminate_instance", web, 140.0), scheduled_time=tonight)
    print(f"     {accepted['execution_id']} is '{accepted['status']}' until {accepted['scheduled_time']}")
    cancelled = demo.api.cancel(accepted["execution_id"])
    demo.record(
        "scheduled, then cancelled",
        cancelled,
        "cancelled",
        f"reports-batch still {demo.state(web)}",
        accepted["status"] == "scheduled" and demo.state(web) == "running",
    )
