"""Property-based bad input through the live API: whatever JSON arrives, the answer is a clear JSON
4xx (or a success for what happens to be valid), never a 5xx, and a refused request writes nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cost_engine import topology
from local_runtime.client import ApiClient
from local_runtime.runtime import LocalRuntime

# Values as a careless or hostile client sends them: any JSON, control characters, injection strings.
HOSTILE_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        ["'; DROP TABLE executions; --", "../../etc/passwd", "<script>x</script>", "\x00\x1b[31m", "${jndi:x}"]
    ),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | HOSTILE_TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(HOSTILE_TEXT, children, max_size=3),
    max_leaves=8,
)
FIELDS = {
    "/executions/execute": [
        "recommendation_id",
        "dry_run",
        "auto_approve",
        "scheduled_time",
        "approval_timeout_seconds",
    ],
    "/recommendations": [
        "recommendation_id",
        "customer_id",
        "type",
        "account_id",
        "region",
        "resource_id",
        "parameters",
    ],
}


def bodies(route: str) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with the route's own field names (so validation goes deep) and stray ones."""
    keys = st.sampled_from(FIELDS[route]) | HOSTILE_TEXT
    return st.dictionaries(keys, JSON_VALUES, max_size=6)


def item_counts(runtime: LocalRuntime) -> dict[str, int]:
    dynamodb = runtime.client("dynamodb")
    return {
        table.local_name: int(dynamodb.scan(TableName=table.local_name, Select="COUNT")["Count"])
        for table in (topology.EXECUTIONS_TABLE, topology.AUDIT_TABLE)
    }


@pytest.mark.parametrize("route", ["/executions/execute", "/recommendations"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_json_body_gets_a_clear_answer_and_a_refusal_writes_nothing(
    runtime: LocalRuntime, api: ApiClient, route: str, data: st.DataObject
) -> None:
    body = data.draw(bodies(route))
    before = item_counts(runtime)
    response = api.request("POST", route, data=json.dumps(body), headers={"content-type": "application/json"})

    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        answer = response.json()
        assert answer["error"]
        assert answer["message"]
        assert item_counts(runtime) == before


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200))
def test_any_bytes_as_a_body_get_a_4xx_never_a_5xx(api: ApiClient, raw: bytes) -> None:
    response = api.request("POST", "/executions/execute", data=raw, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["message"]
