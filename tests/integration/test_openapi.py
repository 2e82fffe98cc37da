"""The API's OpenAPI document: served by the API, committed to the repository, and the same."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from cost_engine.api_models import ErrorBody, ExecutionLogs, ExecutionPage, ExecutionView
from local_runtime.client import ApiClient
from tools.write_openapi import OUTPUT

DOCUMENTED_ROUTES = {
    ("/recommendations", "post"),
    ("/recommendations/import", "post"),
    ("/recommendations/{recommendation_id}", "get"),
    ("/executions/execute", "post"),
    ("/executions", "get"),
    ("/executions/{execution_id}", "get"),
    ("/executions/{execution_id}/logs", "get"),
    ("/executions/{execution_id}/cancel", "post"),
    ("/executions/{execution_id}/rollback", "post"),
    ("/executions/{execution_id}/measure", "post"),
    ("/executions/{execution_id}/approve", "post"),
    ("/executions/{execution_id}/reject", "post"),
    ("/approvals/{approval_id}", "get"),
    ("/approvals/{approval_id}", "post"),
}


def test_the_served_openapi_document_is_the_one_in_the_repository(api: ApiClient) -> None:
    response = api.request("GET", "/openapi.json")
    assert response.status_code == 200
    committed = json.loads(Path(OUTPUT).read_text())
    assert response.json() == committed, "openapi.json is out of date: run `make openapi` and commit it"


def test_the_openapi_document_describes_every_route_and_the_request_models() -> None:
    document = json.loads(Path(OUTPUT).read_text())
    routes = {(path, method) for path, methods in document["paths"].items() for method in methods}
    assert routes == DOCUMENTED_ROUTES
    schemas = document["components"]["schemas"]
    assert schemas["ExecutionRequest"]["additionalProperties"] is False
    assert set(schemas["ExecutionRequest"]["required"]) == {"recommendation_id"}
    assert "approval_timeout_seconds" in schemas["ExecutionRequest"]["properties"]
    assert set(schemas["RecommendationType"]["enum"]) >= {"terminate_instance", "fix_config"}
    listing = document["paths"]["/executions"]["get"]["parameters"]
    assert {p["name"] for p in listing} == {"customer_id", "status", "limit", "cursor"}


def test_every_route_documents_its_success_and_error_responses() -> None:
    document = json.loads(Path(OUTPUT).read_text())
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            codes = set(operation["responses"])
            assert codes & {"200", "201", "202"}, f"{method} {path} documents no success"
            assert "422" in codes, f"{method} {path} does not document its validation error"
            for code, response in operation["responses"].items():
                # The approval pages answer people with pages; a body they cannot read gets JSON.
                if path.startswith("/approvals") and code not in ("413", "415", "422"):
                    assert "text/html" in response["content"], f"{method} {path} {code}"
                elif code >= "400":
                    assert response["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    execute = document["paths"]["/executions/execute"]["post"]
    assert {"200", "202", "404", "409"} <= set(execute["responses"])
    assert [(p["name"].lower(), p["in"]) for p in execute["parameters"]] == [("idempotency-key", "header")]
    cancel = document["paths"]["/executions/{execution_id}/cancel"]["post"]["responses"]
    assert {"200", "202", "409"} <= set(cancel)


def test_live_answers_match_the_documented_response_models(
    api: ApiClient, launch_instance: Callable[..., str], recommend: Callable[..., str], customer_id: str
) -> None:
    # A whole execution, so every part of the view is filled: plan, approval, backup, result, steps.
    execution = api.run(recommend(launch_instance()), approver="lead@example.com")
    assert execution["status"] == "completed"
    execution_id = execution["execution_id"]

    ExecutionView.model_validate(api.status(execution_id))
    ExecutionPage.model_validate(api.list(customer_id))
    ExecutionLogs.model_validate(api.logs(execution_id))
    for response in (
        api.request("GET", "/executions/exec-none"),
        api.request("POST", f"/executions/{execution_id}/cancel"),
        api.request("POST", "/executions/execute", json={"recommendation_id": "rec-1", "dry_run": "often"}),
    ):
        assert response.status_code in (404, 409, 422)
        ErrorBody.model_validate(response.json())


def test_the_document_says_how_callers_authenticate_and_what_the_approval_pages_take() -> None:
    document = json.loads(Path(OUTPUT).read_text())
    schemes = document["components"]["securitySchemes"]
    assert (schemes["localApiKey"]["in"], schemes["localApiKey"]["name"]) == ("header", "x-api-key")
    assert schemes["sigv4"]["x-amazon-apigateway-authtype"] == "awsSigv4"
    assert document["security"] == [{"localApiKey": []}, {"sigv4": []}]

    page = document["paths"]["/approvals/{approval_id}"]
    assert (page["get"]["security"], page["post"]["security"]) == ([], [])
    assert {p["name"] for p in page["get"]["parameters"] if p["in"] == "query"} == {"expires", "signature"}
    form = page["post"]["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]["$ref"]
    fields = document["components"]["schemas"][form.rsplit("/", 1)[1]]["properties"]
    assert set(fields) == {"decision", "approver", "comment", "expires", "signature", "plan_hash"}


def test_the_document_states_the_stricter_rules_the_api_enforces() -> None:
    document = json.loads(Path(OUTPUT).read_text())
    schemas = document["components"]["schemas"]
    savings = schemas["Recommendation"]["properties"]["estimated_monthly_savings"]["anyOf"][0]
    assert (savings["minimum"], savings["maximum"]) == (0, 1_000_000_000)
    assert schemas["ExecutionRequest"]["properties"]["dry_run"]["type"] == "boolean"
    assert schemas["Recommendation"]["properties"]["customer_id"]["maxLength"] == 64
    for path in ("/recommendations", "/recommendations/import", "/executions/execute"):
        assert {"400", "413", "415", "422"} <= set(document["paths"][path]["post"]["responses"]), path
