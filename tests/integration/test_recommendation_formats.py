"""Recommendations imported from Cost Optimization Hub and Compute Optimizer, then carried out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from local_runtime.client import ApiClient
from local_runtime.runtime import ACCOUNT_ID, REGION


def import_(api: ApiClient, source: str, customer_id: str, recommendation: dict[str, Any]) -> Any:
    body = {"format": source, "customer_id": customer_id, "recommendation": recommendation}
    return api.request("POST", "/recommendations/import", json=body)


def test_a_hub_rightsize_is_imported_once_and_runs_as_rightsize_instance(
    api: ApiClient, launch_instance: Callable[..., str], customer_id: str
) -> None:
    instance_id = launch_instance("m5.xlarge")
    hub = {
        "recommendationId": f"hub-{instance_id}",
        "resourceId": instance_id,
        "accountId": ACCOUNT_ID,
        "region": REGION,
        "actionType": "Rightsize",
        "currentResourceType": "Ec2Instance",
        "recommendedResourceType": "Ec2Instance",
        "estimatedMonthlySavings": 70.08,
        "recommendedResourceDetails": {"ec2Instance": {"configuration": {"instance": {"type": "m5.large"}}}},
    }
    first = import_(api, "cost_optimization_hub", customer_id, hub)
    assert first.status_code == 201, first.text
    again = import_(api, "cost_optimization_hub", customer_id, hub)
    assert again.status_code == 200
    recommendation = first.json()
    assert again.json()["recommendation_id"] == recommendation["recommendation_id"]
    assert recommendation["type"] == "rightsize_instance"
    assert recommendation["parameters"] == {"target_instance_type": "m5.large"}

    execution = api.run(recommendation["recommendation_id"], dry_run=True)
    assert execution["status"] == "completed"
    assert "m5.large" in execution["plan"]["summary"]


def test_a_compute_optimizer_recommendation_is_imported_as_rightsize_instance(
    api: ApiClient, launch_instance: Callable[..., str], customer_id: str
) -> None:
    instance_id = launch_instance("m5.2xlarge")
    optimizer = {
        "instanceArn": f"arn:aws:ec2:{REGION}:{ACCOUNT_ID}:instance/{instance_id}",
        "accountId": ACCOUNT_ID,
        "currentInstanceType": "m5.2xlarge",
        "finding": "Overprovisioned",
        "recommendationOptions": [
            {
                "instanceType": "m5.large",
                "rank": 1,
                "savingsOpportunity": {"estimatedMonthlySavings": {"value": 210.24}},
            }
        ],
    }
    response = import_(api, "compute_optimizer_ec2", customer_id, optimizer)
    assert response.status_code == 201, response.text
    recommendation = response.json()
    assert (recommendation["type"], recommendation["resource_id"]) == ("rightsize_instance", instance_id)
    assert recommendation["estimated_monthly_savings"] == 210.24
    assert recommendation["source"] == "compute-optimizer"


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (
            {
                "format": "cost_optimization_hub",
                "customer_id": "acme",
                "recommendation": {
                    "recommendationId": "hub-refused-1",
                    "actionType": "PurchaseSavingsPlans",
                    "currentResourceType": "ComputeSavingsPlans",
                },
            },
            422,
            "has no counterpart among the engine's types",
        ),
        ({"format": "trusted_advisor", "customer_id": "acme", "recommendation": {}}, 422, "format"),
        ({"format": "compute_optimizer_ec2", "recommendation": {}}, 422, "customer_id"),
    ],
)
def test_an_import_that_cannot_be_mapped_is_refused_with_the_reason(
    api: ApiClient, body: dict[str, Any], status: int, words: str
) -> None:
    response = api.request("POST", "/recommendations/import", json=body)
    assert response.status_code == status
    assert words in response.json()["message"]
    # Nothing was registered.
    assert api.request("GET", "/recommendations/coh-hub-refused-1").status_code == 404
