"""Recommendations in other tools' formats, mapped to the engine's own.

AWS Cost Optimization Hub (a `GetRecommendation` response: `actionType`, `currentResourceType` and the
resource details) and AWS Compute Optimizer (an EC2 `InstanceRecommendation`) become a
`Recommendation` of one of the engine's types, with the target parameters and the estimated savings.
What has no counterpart in the engine is refused with the reason; nothing is guessed.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from cost_engine.errors import UnmappableRecommendation
from cost_engine.models import Recommendation, RecommendationType, SafeId, StrictModel

T = RecommendationType


class SourceFormat(StrEnum):
    ENGINE = "engine"
    COST_OPTIMIZATION_HUB = "cost_optimization_hub"
    COMPUTE_OPTIMIZER_EC2 = "compute_optimizer_ec2"


class ImportRequest(StrictModel):
    """POST /recommendations/import: a recommendation as another tool wrote it, for a customer."""

    format: SourceFormat
    customer_id: SafeId
    recommendation: dict[str, Any]


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _id(prefix: str, *parts: str) -> str:
    """A recommendation id from the source's own ids: the same source recommendation imported twice
    gets the same id, so registering it again is a no-op."""
    return _UNSAFE.sub("-", "-".join((prefix, *parts)))[:64].rstrip("-._")


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _refuse(reason: str) -> UnmappableRecommendation:
    return UnmappableRecommendation(f"the recommendation cannot be carried out by the engine: {reason}")


def _build(fields: dict[str, Any]) -> Recommendation:
    try:
        return Recommendation.model_validate(fields)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
        raise _refuse(f"its fields do not make a valid recommendation ({problems})") from None


# -- Cost Optimization Hub ----------------------------------------------------------------------------


def _reserved_instances_parameters(config: dict[str, Any]) -> dict[str, Any]:
    term = str(config.get("term") or "")
    payment = re.sub(r"[\s_-]", "", str(config.get("paymentOption") or "")).lower()
    offering_types = {"noupfront": "No Upfront", "partialupfront": "Partial Upfront", "allupfront": "All Upfront"}
    if payment not in offering_types:
        raise _refuse(f"the payment option {config.get('paymentOption')!r} is not one EC2 sells")
    digits = re.findall(r"[13]", term)
    if not digits:
        raise _refuse(f"the term {term!r} is neither one nor three years")
    count = str(config.get("numberOfInstancesToPurchase") or "")
    if not count.isdigit():
        raise _refuse(f"numberOfInstancesToPurchase {count!r} is not a whole number")
    parameters: dict[str, Any] = {
        "instance_type": config.get("instanceType"),
        "term": f"{digits[0]}yr",
        "offering_type": offering_types[payment],
        "offering_class": str(config.get("offeringClass") or "standard").lower(),
        "instance_count": int(count),
        "tenancy": "dedicated" if str(config.get("tenancy") or "").lower() == "dedicated" else "default",
    }
    if config.get("platform"):
        parameters["product_description"] = config["platform"]
    return parameters


def from_cost_optimization_hub(data: dict[str, Any], customer_id: str) -> Recommendation:
    action, resource_type = data.get("actionType"), data.get("currentResourceType")
    recommended = data.get("recommendedResourceDetails") or {}
    current = data.get("currentResourceDetails") or {}
    resource_id = data.get("resourceId")
    parameters: dict[str, Any]
    if action in ("Rightsize", "MigrateToGraviton") and resource_type == "Ec2Instance":
        target = _get(recommended, "ec2Instance", "configuration", "instance", "type")
        if not target:
            raise _refuse("recommendedResourceDetails.ec2Instance.configuration.instance.type is missing")
        kind, parameters = T.RIGHTSIZE_INSTANCE, {"target_instance_type": target}
    elif action == "Rightsize" and resource_type == "RdsDbInstance":
        target = _get(recommended, "rdsDbInstance", "configuration", "instance", "dbInstanceClass")
        if not target:
            raise _refuse("recommendedResourceDetails.rdsDbInstance.configuration.instance.dbInstanceClass is missing")
        kind, parameters = T.RIGHTSIZE_DATABASE, {"target_instance_class": target}
    elif action == "Delete" and resource_type == "EbsVolume":
        kind, parameters = T.DELETE_VOLUME, {}
    elif action == "Upgrade" and resource_type == "EbsVolume":
        target = _get(recommended, "ebsVolume", "configuration", "storage", "type")
        was = _get(current, "ebsVolume", "configuration", "storage", "type")
        if target != "gp3":
            raise _refuse(f"the engine changes EBS volumes to gp3 only, not to {target!r}")
        parameters = {"target_volume_type": "gp3"}
        performance = _get(recommended, "ebsVolume", "configuration", "performance") or {}
        # Only what gp3 can be given beyond its baseline; the baseline is what it gets otherwise.
        if isinstance(performance.get("iops"), int | float) and performance["iops"] > 3000:
            parameters["iops"] = int(performance["iops"])
        if isinstance(performance.get("throughput"), int | float) and performance["throughput"] > 125:
            parameters["throughput"] = int(performance["throughput"])
        if was == "gp3":
            raise _refuse("the volume is gp3 already")
        kind = T.OPTIMIZE_STORAGE
    elif action == "PurchaseReservedInstances" and resource_type == "Ec2ReservedInstances":
        config = _get(recommended, "ec2ReservedInstances", "configuration") or {}
        kind, parameters = T.PURCHASE_RESERVED_INSTANCES, _reserved_instances_parameters(config)
        resource_id = parameters["instance_type"]
    else:
        raise _refuse(
            f"'{action}' on '{resource_type}' has no counterpart among the engine's types; it carries out "
            "Rightsize and MigrateToGraviton on Ec2Instance, Rightsize on RdsDbInstance, Delete and Upgrade (to gp3) "
            "on EbsVolume, and PurchaseReservedInstances on Ec2ReservedInstances"
        )
    return _build(
        {
            "recommendation_id": _id("coh", str(data.get("recommendationId") or "")),
            "customer_id": customer_id,
            "type": kind,
            "account_id": data.get("accountId"),
            "region": data.get("region"),
            "resource_id": resource_id,
            "parameters": parameters,
            "estimated_monthly_savings": data.get("estimatedMonthlySavings"),
            "source": "cost-optimization-hub",
        }
    )


# -- Compute Optimizer ------------------------------------------------------------------------------

_INSTANCE_ARN = re.compile(r"^arn:aws[a-z-]*:ec2:([a-z0-9-]+):([0-9]{12}):instance/(i-[0-9a-f]+)$")


def from_compute_optimizer_ec2(data: dict[str, Any], customer_id: str) -> Recommendation:
    arn = _INSTANCE_ARN.match(str(data.get("instanceArn") or ""))
    if arn is None:
        raise _refuse(f"instanceArn {data.get('instanceArn')!r} is not an EC2 instance ARN")
    region, account, instance_id = arn.groups()
    finding = data.get("finding")
    if finding in ("Optimized", "Underprovisioned"):
        why = "nothing to save" if finding == "Optimized" else "a bigger instance would cost more, not save"
        raise _refuse(f"the finding is '{finding}': {why}")
    options = [o for o in data.get("recommendationOptions") or [] if isinstance(o, dict) and o.get("instanceType")]
    if not options:
        raise _refuse("it has no recommendation option with an instance type")
    best = min(options, key=lambda o: o.get("rank") or 1_000)
    savings = _get(best, "savingsOpportunity", "estimatedMonthlySavings", "value")
    return _build(
        {
            "recommendation_id": _id("co", instance_id, best["instanceType"]),
            "customer_id": customer_id,
            "type": T.RIGHTSIZE_INSTANCE,
            "account_id": data.get("accountId") or account,
            "region": region,
            "resource_id": instance_id,
            "parameters": {"target_instance_type": best["instanceType"]},
            "estimated_monthly_savings": savings if isinstance(savings, int | float) and savings >= 0 else None,
            "source": "compute-optimizer",
        }
    )


def import_recommendation(source: SourceFormat, data: dict[str, Any], customer_id: str) -> Recommendation:
    if source == SourceFormat.COST_OPTIMIZATION_HUB:
        return from_cost_optimization_hub(data, customer_id)
    if source == SourceFormat.COMPUTE_OPTIMIZER_EC2:
        return from_compute_optimizer_ec2(data, customer_id)
    return _build({"customer_id": customer_id, **data})
