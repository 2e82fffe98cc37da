"""Bad input gets a clear 4xx and changes nothing."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cost_engine import topology
from local_runtime.client import ApiClient
from local_runtime.runtime import ACCOUNT_ID, REGION, LocalRuntime


def _count_items(runtime: LocalRuntime, table: topology.Table) -> int:
    return int(runtime.client("dynamodb").scan(TableName=table.local_name, Select="COUNT")["Count"])


@pytest.fixture
def nothing_created(runtime: LocalRuntime) -> Iterator[None]:
    """Asserts, after the test, that no execution, audit event or recommendation was written."""
    before = {table.local_name: _count_items(runtime, table) for table in topology.TABLES}
    yield
    after = {table.local_name: _count_items(runtime, table) for table in topology.TABLES}
    assert after == before


def _valid_recommendation(customer_id: str) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "type": "terminate_instance",
        "account_id": "123456789012",
        "region": "us-east-1",
        "resource_id": "i-0123456789abcdef0",
    }


@pytest.mark.usefixtures("nothing_created")
@pytest.mark.parametrize(
    ("body", "status", "message_part"),
    [
        ({"recommendation_id": "rec-does-not-exist"}, 404, "does not exist"),
        ({}, 422, "recommendation_id: Field required"),
        ({"recommendation_id": "rec-1", "dry_run": "maybe"}, 422, "dry_run"),
        ({"recommendation_id": "rec-1", "surprise": True}, 422, "surprise"),
        ({"recommendation_id": "rec 1; DROP TABLE"}, 422, "recommendation_id"),
        ({"recommendation_id": "rec-1", "scheduled_time": "2030-01-01T10:00:00"}, 422, "time zone"),
    ],
    ids=["unknown-recommendation", "missing-id", "wrong-type", "unknown-field", "injection-in-id", "naive-time"],
)
def test_an_invalid_execute_request_is_refused_clearly(
    api: ApiClient, body: dict[str, Any], status: int, message_part: str
) -> None:
    response = api.request("POST", "/executions/execute", json=body)

    assert response.status_code == status
    assert message_part in response.json()["message"]


@pytest.mark.usefixtures("nothing_created")
def test_a_body_that_is_not_json_gets_400(api: ApiClient) -> None:
    response = api.request(
        "POST", "/executions/execute", data="{not json", headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_json"


@pytest.mark.usefixtures("nothing_created")
@pytest.mark.parametrize("path", ["/recommendations", "/recommendations/import", "/executions/execute"])
def test_an_oversized_body_gets_413_with_the_limit(api: ApiClient, customer_id: str, path: str) -> None:
    # A well-formed recommendation, made big by its parameters: refused by size before anything else.
    body = {
        "customer_id": customer_id,
        "type": "fix_config",
        "account_id": ACCOUNT_ID,
        "region": REGION,
        "resource_id": "i-0123456789abcdef0",
        "parameters": {"notes": "x" * 300_000},
    }

    response = api.request("POST", path, json=body)

    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"
    assert "at most 262144 bytes" in response.json()["message"]


@pytest.mark.usefixtures("nothing_created")
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"type": "delete_everything"}, "type"),
        ({"account_id": "12345"}, "account_id"),
        ({"region": "mars-1"}, "region"),
        ({"estimated_monthly_savings": -5}, "estimated_monthly_savings"),
        ({"customer_id": "acme\n"}, "customer_id"),
    ],
)
def test_an_invalid_recommendation_is_refused_with_the_field_to_fix(
    api: ApiClient, customer_id: str, change: dict[str, Any], field: str
) -> None:
    response = api.request("POST", "/recommendations", json={**_valid_recommendation(customer_id), **change})

    assert response.status_code == 422
    assert field in response.json()["message"]


@pytest.mark.usefixtures("nothing_created")
@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/executions/exec-00000000000000000000000000000000", 404),
        ("GET", "/executions/exec-00000000000000000000000000000000/logs", 404),
        ("POST", "/executions/exec-00000000000000000000000000000000/cancel", 404),
        ("POST", "/executions/exec-00000000000000000000000000000000/rollback", 404),
        ("GET", "/recommendations/rec-unknown", 404),
        ("GET", "/executions", 422),
        ("GET", "/executions?customer_id=acme&limit=0", 422),
        ("GET", "/executions?customer_id=acme&status=sleeping", 422),
        ("GET", "/executions?customer_id=acme&cursor=not-a-cursor", 400),
        ("DELETE", "/executions", 404),
    ],
)
def test_unknown_ids_and_bad_queries_get_a_clear_error(api: ApiClient, method: str, path: str, status: int) -> None:
    response = api.request(method, path)

    assert response.status_code == status
    assert response.json()["message"]


def test_requests_without_the_api_key_are_forbidden(runtime: LocalRuntime) -> None:
    anonymous = ApiClient(runtime.api_url, api_key="wrong")

    response = anonymous.request("GET", "/executions?customer_id=acme")

    assert response.status_code == 403


def test_registering_the_same_recommendation_twice_is_harmless_but_different_content_conflicts(
    api: ApiClient, customer_id: str
) -> None:
    body = {**_valid_recommendation(customer_id), "recommendation_id": f"rec-{customer_id}"}
    first = api.request("POST", "/recommendations", json=body)
    again = api.request("POST", "/recommendations", json=body)
    changed = api.request("POST", "/recommendations", json={**body, "resource_id": "i-0fedcba9876543210"})

    assert (first.status_code, again.status_code, changed.status_code) == (201, 200, 409)
    assert api.request("GET", f"/recommendations/rec-{customer_id}").json()["resource_id"] == body["resource_id"]


@pytest.mark.usefixtures("nothing_created")
def test_parameters_that_do_not_fit_the_type_are_refused_at_registration(api: ApiClient, customer_id: str) -> None:
    body = {**_valid_recommendation(customer_id), "parameters": {"acknowledge_instance_store_loss": "perhaps"}}

    response = api.request("POST", "/recommendations", json=body)

    assert response.status_code == 422
    assert response.json()["error"] == "invalid_parameters"
    assert "parameters.acknowledge_instance_store_loss" in response.json()["message"]


def _nested(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


@pytest.mark.usefixtures("nothing_created")
@pytest.mark.parametrize(
    ("content_type", "body", "status", "error", "message_part"),
    [
        ("text/plain", "{}", 415, "unsupported_media_type", "Content-Type: application/json"),
        ("application/x-www-form-urlencoded", "{}", 415, "unsupported_media_type", "body is application/x-www"),
        ("application/json", "[" * 5000 + "]" * 5000, 400, "too_deep", "deeper than 20 levels"),
        ("application/json", None, 400, "too_deep", "deeper than 20 levels"),
        ("application/json", '{"type": "fix_config", "type": "terminate_instance"}', 400, "duplicate_key", "'type'"),
        ("application/json", '{"estimated_monthly_savings": NaN}', 400, "invalid_json", "NaN"),
        ("application/json", '{"estimated_monthly_savings": 1e200}', 422, "number_out_of_range", "1e-130"),
        ("application/json", '{"estimated_monthly_savings": 1e-131}', 422, "number_out_of_range", "below 1e126"),
        ("application/json", '{"parameters": {"n": 1' + "0" * 40 + "}}", 422, "number_out_of_range", "parameters.n"),
    ],
    ids=[
        "text-plain",
        "form",
        "nested-5000-deep",
        "nested-21-deep",
        "duplicate-key",
        "nan",
        "savings-1e200",
        "savings-1e-131",
        "41-digit-integer",
    ],
)
def test_a_body_the_engine_cannot_take_gets_a_4xx_that_says_why(
    api: ApiClient, content_type: str, body: str | None, status: int, error: str, message_part: str
) -> None:
    if body is None:
        body = '{"parameters": ' + _nested(20) + "}"
    response = api.request("POST", "/recommendations", data=body.encode(), headers={"content-type": content_type})

    assert (response.status_code, response.json()["error"]) == (status, error)
    assert message_part in response.json()["message"]


@pytest.mark.usefixtures("nothing_created")
def test_a_saving_above_a_billion_a_month_is_refused_with_the_range(api: ApiClient, customer_id: str) -> None:
    body = {**_valid_recommendation(customer_id), "estimated_monthly_savings": 5e9}

    response = api.request("POST", "/recommendations", json=body)

    assert response.status_code == 422
    assert "less than or equal to 1000000000" in response.json()["message"]


@pytest.mark.usefixtures("nothing_created")
@pytest.mark.parametrize(
    "change",
    [
        {"dry_run": "yes"},
        {"dry_run": "on"},
        {"dry_run": 1},
        {"auto_approve": "true"},
        {"approval_timeout_seconds": True},
        {"approval_timeout_seconds": "60"},
        {"approval_timeout_seconds": 60.5},
    ],
    ids=str,
)
def test_execute_takes_only_json_booleans_and_integers(api: ApiClient, change: dict[str, Any]) -> None:
    response = api.request("POST", "/executions/execute", json={"recommendation_id": "rec-1", **change})

    assert response.status_code == 422
    assert next(iter(change)) in response.json()["message"]


@pytest.mark.usefixtures("nothing_created")
@pytest.mark.parametrize("acknowledged", ["yes", "on", 1, "true"], ids=str)
def test_acknowledging_instance_store_loss_takes_only_true(
    api: ApiClient, customer_id: str, acknowledged: object
) -> None:
    body = {**_valid_recommendation(customer_id), "parameters": {"acknowledge_instance_store_loss": acknowledged}}

    response = api.request("POST", "/recommendations", json=body)

    assert (response.status_code, response.json()["error"]) == (422, "invalid_parameters")
    assert "acknowledge_instance_store_loss" in response.json()["message"]


def test_a_failed_step_is_logged_by_its_error_and_message_without_its_stack_trace(
    runtime: LocalRuntime, api: ApiClient, launch_instance: Callable[..., str], recommend: Callable[..., str]
) -> None:
    # Given a step whose Lambda function fails (the Cause Step Functions hands on has its stack trace)
    recommendation_id = recommend(launch_instance())
    runtime.faults.inject("validate")

    execution = api.run(recommendation_id, dry_run=True)
    logs = api.logs(execution["execution_id"])

    # Then the log and the history name the error and its message, and no file of the function
    assert execution["status"] == "failed"
    assert execution["error_message"] == "InjectedFault: fault injected before step 'validate'"
    failures = [event for event in logs["history"] if event["event"] == "TaskFailed"]
    assert [(event["error"], event["cause"]) for event in failures] == [
        ("InjectedFault", "fault injected before step 'validate'")
    ]
    text = json.dumps(logs)
    assert "stackTrace" not in text
    assert 'File \\"' not in text
