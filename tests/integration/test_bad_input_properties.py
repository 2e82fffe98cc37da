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


def stored_keys(runtime: LocalRuntime) -> dict[str, set[str]]:
    """The executions, the executions with audit events, and the recommendations stored now. Keys, not
    item counts: an execution of an earlier test may still log its last events meanwhile (its final
    status is written before the status change's own event), which a refusal here has nothing to do with."""
    dynamodb = runtime.client("dynamodb")
    keys: dict[str, set[str]] = {}
    for table, key in (
        (topology.EXECUTIONS_TABLE, "execution_id"),
        (topology.AUDIT_TABLE, "execution_id"),
        (topology.RECOMMENDATIONS_TABLE, "recommendation_id"),
    ):
        pages = dynamodb.get_paginator("scan").paginate(TableName=table.local_name, ProjectionExpression=key)
        keys[table.local_name] = {item[key]["S"] for page in pages for item in page["Items"]}
    return keys


@pytest.mark.parametrize("route", ["/executions/execute", "/recommendations"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_json_body_gets_a_clear_answer_and_a_refusal_writes_nothing(
    runtime: LocalRuntime, api: ApiClient, route: str, data: st.DataObject
) -> None:
    body = data.draw(bodies(route))
    before = stored_keys(runtime)
    response = api.request("POST", route, data=json.dumps(body), headers={"content-type": "application/json"})

    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        answer = response.json()
        assert answer["error"]
        assert answer["message"]
        assert stored_keys(runtime) == before


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=200))
def test_any_bytes_as_a_body_get_a_4xx_never_a_5xx(api: ApiClient, raw: bytes) -> None:
    response = api.request("POST", "/executions/execute", data=raw, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["message"]
