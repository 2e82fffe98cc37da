"""Load: 100 executions submitted at once on the local runtime. All finish, the deployment's limit of
executions acting at once is never exceeded (measured from the audit events alone), no resource is
changed twice, and nothing is lost."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from local_runtime.client import ApiClient
from local_runtime.runtime import LocalRuntime
from tests.integration.conftest import acting_intervals, most_at_once

EXECUTIONS = 100


# The re-checks at the moment of action make each execution read more of AWS: a generous bound,
# since this test proves the limits under load, not a speed (make bench measures that).
@pytest.mark.timeout(2700)
def test_a_hundred_executions_at_once_respect_the_acting_limit_and_all_finish(
    runtime: LocalRuntime, recommend: Callable[..., str], customer_id: str
) -> None:
    # One process serves the API, the state machines and every step of a hundred executions: a
    # request may wait its turn far longer than the default client's 30 seconds on a busy machine,
    # and this test proves the limits, not a latency (make bench measures that).
    api = ApiClient(runtime.api_url, runtime.api_key, timeout=600)
    logs = runtime.client("logs")
    groups = [f"load-{uuid.uuid4().hex[:10]}" for _ in range(EXECUTIONS)]
    for group in groups:
        logs.create_log_group(logGroupName=group)
    recommendations = [
        recommend(group, type="fix_config", parameters={"setting": "log_retention", "retention_in_days": 30})
        for group in groups
    ]

    def submit(recommendation_id: str) -> dict[str, Any]:
        return api.execute(recommendation_id, auto_approve=True)

    with ThreadPoolExecutor(max_workers=25) as pool:
        accepted = list(pool.map(submit, recommendations))
    execution_ids = [a["execution_id"] for a in accepted]
    assert len(set(execution_ids)) == EXECUTIONS

    outcomes = [api.wait_for(e, timeout=1800) for e in execution_ids]
    assert [o["status"] for o in outcomes] == ["completed"] * EXECUTIONS, {
        o["execution_id"]: o["error_message"] for o in outcomes if o["status"] != "completed"
    }
    # Nothing lost: every execution is listed, and every log group got its retention.
    listed: list[str] = []
    cursor = None
    while True:
        page = api.list(customer_id, limit=100, **({"cursor": cursor} if cursor else {}))
        listed += [item["execution_id"] for item in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert sorted(listed) == sorted(execution_ids)
    retentions = {
        group: logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"][0].get("retentionInDays")
        for group in groups
    }
    assert all(retentions[group] == 30 for group in groups)

    # The limit, from the audit events alone; each execution acted once.
    limit = runtime.max_concurrent_acting
    assert most_at_once(acting_intervals(api, execution_ids)) <= limit
    for execution_id in execution_ids:
        assert [e["event_type"] for e in api.logs(execution_id)["events"]].count("action_started") == 1
