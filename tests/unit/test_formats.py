"""Cost Optimization Hub and Compute Optimizer recommendations, mapped to the engine's types."""

from __future__ import annotations

from typing import Any

import pytest

from cost_engine.errors import UnmappableRecommendation
from cost_engine.formats import SourceFormat, import_recommendation
from cost_engine.models import RecommendationType

COH = SourceFormat.COST_OPTIMIZATION_HUB
CO = SourceFormat.COMPUTE_OPTIMIZER_EC2


def hub(action: str, resource_type: str, recommended: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "recommendationId": "MzU3OTQ0NjYyNjQ2XzQ1Njc4",
        "resourceId": "i-0123456789abcdef0",
        "accountId": "123456789012",
        "region": "us-east-1",
        "actionType": action,
        "currentResourceType": resource_type,
        "recommendedResourceType": resource_type,
        "estimatedMonthlySavings": 42.5,
        "recommendedResourceDetails": recommended,
        **extra,
    }


def test_a_hub_ec2_rightsize_becomes_rightsize_instance_with_its_target_and_savings() -> None:
    data = hub("Rightsize", "Ec2Instance", {"ec2Instance": {"configuration": {"instance": {"type": "m5.large"}}}})
    recommendation = import_recommendation(COH, data, "acme")
    assert recommendation.type == RecommendationType.RIGHTSIZE_INSTANCE
    assert recommendation.parameters == {"target_instance_type": "m5.large"}
    assert (recommendation.resource_id, recommendation.account_id, recommendation.region) == (
        "i-0123456789abcdef0",
        "123456789012",
        "us-east-1",
    )
    assert recommendation.estimated_monthly_savings == 42.5
    assert recommendation.source == "cost-optimization-hub"
    assert recommendation.customer_id == "acme"
    # The same hub recommendation imported again has the same id (registering it again is a no-op).
    assert import_recommendation(COH, data, "acme").recommendation_id == recommendation.recommendation_id


def test_a_hub_rds_rightsize_becomes_rightsize_database() -> None:
    data = hub(
        "Rightsize",
        "RdsDbInstance",
        {"rdsDbInstance": {"configuration": {"instance": {"dbInstanceClass": "db.t3.medium"}}}},
        resourceId="orders-db",
    )
    recommendation = import_recommendation(COH, data, "acme")
    assert recommendation.type == RecommendationType.RIGHTSIZE_DATABASE
    assert recommendation.parameters == {"target_instance_class": "db.t3.medium"}


def test_hub_ebs_delete_and_gp3_upgrade_become_delete_volume_and_optimize_storage() -> None:
    delete = import_recommendation(COH, hub("Delete", "EbsVolume", {}, resourceId="vol-0abc"), "acme")
    assert (delete.type, delete.parameters) == (RecommendationType.DELETE_VOLUME, {})
    upgrade = hub(
        "Upgrade",
        "EbsVolume",
        {
            "ebsVolume": {
                "configuration": {"storage": {"type": "gp3"}, "performance": {"iops": 6000, "throughput": 125}}
            }
        },
        resourceId="vol-0abc",
        currentResourceDetails={"ebsVolume": {"configuration": {"storage": {"type": "gp2", "sizeInGb": 500}}}},
    )
    optimized = import_recommendation(COH, upgrade, "acme")
    assert optimized.type == RecommendationType.OPTIMIZE_STORAGE
    assert optimized.parameters == {"target_volume_type": "gp3", "iops": 6000}


def test_a_hub_reserved_instances_purchase_maps_term_payment_and_count() -> None:
    config = {
        "instanceType": "m5.large",
        "numberOfInstancesToPurchase": "2",
        "term": "1 year",
        "paymentOption": "Partial Upfront",
        "offeringClass": "Standard",
        "tenancy": "Shared",
        "platform": "Linux/UNIX",
    }
    recommendation = import_recommendation(
        COH,
        hub("PurchaseReservedInstances", "Ec2ReservedInstances", {"ec2ReservedInstances": {"configuration": config}}),
        "acme",
    )
    assert recommendation.type == RecommendationType.PURCHASE_RESERVED_INSTANCES
    assert recommendation.resource_id == "m5.large"
    assert recommendation.parameters == {
        "instance_type": "m5.large",
        "term": "1yr",
        "offering_type": "Partial Upfront",
        "offering_class": "standard",
        "instance_count": 2,
        "tenancy": "default",
        "product_description": "Linux/UNIX",
    }


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (hub("Stop", "Ec2Instance", {}), "'Stop' on 'Ec2Instance' has no counterpart"),
        (hub("PurchaseSavingsPlans", "ComputeSavingsPlans", {}), "no counterpart"),
        (hub("Rightsize", "Ec2Instance", {}), "instance.type is missing"),
        (hub("Upgrade", "EbsVolume", {"ebsVolume": {"configuration": {"storage": {"type": "io2"}}}}), "gp3 only"),
        (
            hub(
                "Rightsize",
                "Ec2Instance",
                {"ec2Instance": {"configuration": {"instance": {"type": "m5.large"}}}},
                accountId="12",
            ),
            "account_id",
        ),
    ],
)
def test_what_the_engine_cannot_carry_out_is_refused_with_the_reason(data: dict[str, Any], reason: str) -> None:
    with pytest.raises(UnmappableRecommendation, match="cannot be carried out by the engine") as refused:
        import_recommendation(COH, data, "acme")
    assert reason in refused.value.message


def optimizer(finding: str, options: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "instanceArn": "arn:aws:ec2:eu-west-1:123456789012:instance/i-0fedcba9876543210",
        "accountId": "123456789012",
        "currentInstanceType": "m5.2xlarge",
        "finding": finding,
        "recommendationOptions": options,
    }


def test_a_compute_optimizer_overprovisioned_instance_is_rightsized_to_its_first_ranked_option() -> None:
    options = [
        {"instanceType": "m5.xlarge", "rank": 2, "savingsOpportunity": {"estimatedMonthlySavings": {"value": 70.0}}},
        {"instanceType": "m5.large", "rank": 1, "savingsOpportunity": {"estimatedMonthlySavings": {"value": 210.2}}},
    ]
    recommendation = import_recommendation(CO, optimizer("Overprovisioned", options), "acme")
    assert recommendation.type == RecommendationType.RIGHTSIZE_INSTANCE
    assert (recommendation.resource_id, recommendation.region) == ("i-0fedcba9876543210", "eu-west-1")
    assert recommendation.parameters == {"target_instance_type": "m5.large"}
    assert recommendation.estimated_monthly_savings == 210.2
    assert recommendation.recommendation_id == "co-i-0fedcba9876543210-m5.large"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (optimizer("Optimized", [{"instanceType": "m5.large", "rank": 1}]), "nothing to save"),
        (optimizer("Underprovisioned", [{"instanceType": "m5.4xlarge", "rank": 1}]), "would cost more"),
        (optimizer("Overprovisioned", []), "no recommendation option"),
        (
            {**optimizer("Overprovisioned", [{"instanceType": "m5.large"}]), "instanceArn": "i-123"},
            "not an EC2 instance ARN",
        ),
    ],
)
def test_compute_optimizer_recommendations_without_a_saving_change_are_refused(
    data: dict[str, Any], reason: str
) -> None:
    with pytest.raises(UnmappableRecommendation) as refused:
        import_recommendation(CO, data, "acme")
    assert reason in refused.value.message
