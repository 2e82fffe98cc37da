"""Where a type's saving shows in the bill: what each executor tells the savings measurement
(cost_engine.savings) to read from Cost Explorer, and how that type's saving is measured."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# Cost Explorer's SERVICE dimension values of what the engine changes.
EC2_COMPUTE = "Amazon Elastic Compute Cloud - Compute"
EC2_OTHER = "EC2 - Other"  # EBS volumes and snapshots
RDS = "Amazon Relational Database Service"
S3 = "Amazon Simple Storage Service"
CLOUDWATCH = "AmazonCloudWatch"

UNBLENDED = "UnblendedCost"
# A commitment's cost spread over its term, as its utilization is paid for (Reserved Instances).
AMORTIZED = "AmortizedCost"


@dataclass(frozen=True)
class CostScope:
    """The cost an execution's change moves.

    `resources`: the resources whose cost it is (Cost Explorer's RESOURCE_ID: an instance or volume id,
    an RDS instance's or a bucket's ARN), before and after the change (a spot migration's replacement
    is another instance). Empty where the cost cannot be one resource's (a Reserved Instance covers
    whatever runs; an Auto Scaling group's instances come and go): then `dimensions` and `tags` narrow
    the service's cost in the execution's account and region instead."""

    method: str
    service: str
    resources: tuple[str, ...] = ()
    dimensions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    tags: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    metric: str = UNBLENDED
    # A deletion's resource costs nothing afterwards: its disappearing is the saving, not a fault.
    removes_resource: bool = False


def rds_arn(region: str, account_id: str | None, identifier: str) -> str:
    return f"arn:aws:rds:{region}:{account_id or ''}:db:{identifier}"


def snapshot_arn(region: str, account_id: str | None, snapshot_id: str) -> str:
    return f"arn:aws:ec2:{region}:{account_id or ''}:snapshot/{snapshot_id}"


def bucket_arn(bucket: str) -> str:
    return f"arn:aws:s3:::{bucket}"
