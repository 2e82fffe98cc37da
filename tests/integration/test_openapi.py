"""The API's OpenAPI document: served by the API, committed to the repository, and the same."""

from __future__ import annotations

import json
from pathlib import Path

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
