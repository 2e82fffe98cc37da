"""`optimize_storage`: cheaper storage for the same data, on one of two kinds of resource.

The resource id says which: an EBS volume id (`vol-…`) or an S3 bucket name.

- **EBS volume**: gp2 → gp3 with at least the IOPS and throughput the gp2 volume could deliver, waiting
  until the modification is `optimizing` or `completed`. AWS allows a volume's next modification only
  once its last one has completed and six hours after it started: validation refuses a volume modified
  less than six hours ago, and a rollback that comes too soon fails and says when to ask again.
- **S3 bucket**: a lifecycle rule with transitions and/or an Intelligent-Tiering archive configuration,
  merged with what the bucket already has (no existing rule is ever dropped), refusing rules AWS would
  reject. The exact previous configurations are recorded, including "no lifecycle configuration", and
  a rollback puts exactly those back.

One registered executor (here); each kind is a strategy of its own behind it, so the two never
share state or checks by accident:

    parameters.py  the parameters, and the storage classes and rules they may name
    strategy.py    what a kind of storage implements
    ebs.py         VolumeStrategy: gp2 → gp3
    s3.py          BucketStrategy: lifecycle and Intelligent-Tiering
    rules.py       what AWS would refuse in a rule, and minimum storage durations
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from cost_engine.executors.base import BaseExecutor, Permission
from cost_engine.executors.optimize_storage.ebs import VolumeStrategy, gp3_target
from cost_engine.executors.optimize_storage.parameters import (
    BUCKET_FIELDS,
    BUCKET_NAME,
    VOLUME_FIELDS,
    VOLUME_ID,
    OptimizeStorageParameters,
)
from cost_engine.executors.optimize_storage.rules import minimum_duration_warnings, rule_problems
from cost_engine.executors.optimize_storage.s3 import BucketStrategy
from cost_engine.executors.optimize_storage.strategy import StorageStrategy
from cost_engine.executors.registry import register_executor
from cost_engine.models import (
    ExecutionPlan,
    Recommendation,
    RecommendationType,
    RiskLevel,
    ValidationResult,
    VerificationResult,
)
from cost_engine.prechecks import Resource, ResourceKind

if TYPE_CHECKING:
    pass

__all__ = ["OptimizeStorageExecutor", "OptimizeStorageParameters", "gp3_target", "rule_problems"]


# -- the executor ----------------------------------------------------------------------------------------

_VOLUME_ARN = "arn:{partition}:ec2:{region}:{account}:volume/*"
_BUCKET_ARN = "arn:{partition}:s3:::*"


@register_executor
class OptimizeStorageExecutor(BaseExecutor):
    recommendation_type = RecommendationType.OPTIMIZE_STORAGE
    flow = (
        "Validate (rules AWS accepts, no conflicting rule, no EBS modification in the last six "
        "hours) → (dry run → report) → approval → record the exact configuration → S3 "
        "lifecycle/Intelligent-Tiering merged in, or EBS gp2 → gp3 → poll until optimizing → "
        "verify → record; Catch → rollback (the recorded configuration put back; an EBS volume "
        "only once AWS allows its next modification)."
    )
    parameters_model = OptimizeStorageParameters
    risk_level = RiskLevel.MEDIUM
    permissions = (
        # Describe calls support no resource-level permissions.
        Permission(("ec2:DescribeVolumes", "ec2:DescribeVolumesModifications")),
        Permission(("ec2:ModifyVolume",), (_VOLUME_ARN,)),
        # IAM names the S3 calls differently: Get/PutBucketLifecycleConfiguration and
        # DeleteBucketLifecycle are s3:Get/PutLifecycleConfiguration; Get/List/Put/Delete of
        # Intelligent-Tiering configurations are s3:Get/PutIntelligentTieringConfiguration;
        # HeadBucket and ListObjectsV2 are s3:ListBucket.
        Permission(
            (
                "s3:ListBucket",
                "s3:GetBucketLocation",
                "s3:GetBucketVersioning",
                "s3:GetLifecycleConfiguration",
                "s3:PutLifecycleConfiguration",
                "s3:GetIntelligentTieringConfiguration",
                "s3:PutIntelligentTieringConfiguration",
                # The bucket's tags, for the common pre-checks (business rules, CloudFormation).
                "s3:GetBucketTagging",
            ),
            (_BUCKET_ARN,),
        ),
    )

    @cached_property
    def _volumes(self) -> VolumeStrategy:
        return VolumeStrategy(self.clients)

    @cached_property
    def _buckets(self) -> BucketStrategy:
        return BucketStrategy(self.clients)

    def _strategy(self, resource_id: str) -> StorageStrategy:
        # A volume id is `vol-` and 8 or 17 hex digits; anything else is taken as a bucket name.
        return self._volumes if VOLUME_ID.match(resource_id) else self._buckets

    @staticmethod
    def _params(recommendation: Recommendation) -> OptimizeStorageParameters:
        return OptimizeStorageParameters.model_validate(recommendation.parameters)

    def resource(self, recommendation: Recommendation) -> Resource:
        kind = ResourceKind.EBS_VOLUME if VOLUME_ID.match(recommendation.resource_id) else ResourceKind.S3_BUCKET
        return Resource(kind, recommendation.resource_id)

    def validate(self, recommendation: Recommendation) -> ValidationResult:
        try:
            params = self._params(recommendation)
        except ValidationError as error:
            return self._invalid([f"invalid parameters for optimize_storage: {error}"])
        resource_id = recommendation.resource_id
        strategy = self._strategy(resource_id)
        if strategy is self._volumes:
            misplaced = sorted(params.model_fields_set & BUCKET_FIELDS)
            what = f"EBS volume {resource_id}"
        else:
            if not BUCKET_NAME.match(resource_id):
                return self._invalid(
                    [f"'{resource_id}' is neither an EBS volume id (vol-…) nor a valid S3 bucket name"]
                )
            misplaced = sorted(params.model_fields_set & VOLUME_FIELDS)
            what = f"S3 bucket {resource_id}"
        if misplaced:
            return self._invalid(
                [
                    f"parameters {', '.join(misplaced)} do not apply to {what}: "
                    + ("they are for S3 buckets" if strategy is self._volumes else "they are for EBS volumes")
                ]
            )
        errors, warnings = strategy.validate(recommendation, params)
        if strategy is self._buckets:
            warnings += minimum_duration_warnings(params)
        return ValidationResult(
            valid=not errors, errors=errors, warnings=warnings, risk_level=self.risk_level, estimated_duration=10
        )

    def plan(self, recommendation: Recommendation, execution_id: str) -> ExecutionPlan:
        return self._strategy(recommendation.resource_id).plan(
            recommendation, self._params(recommendation), execution_id
        )

    def backup(self, recommendation: Recommendation, execution_id: str) -> dict[str, Any]:
        return self._strategy(recommendation.resource_id).backup(recommendation, execution_id)

    def backup_ready(self, recommendation: Recommendation, backup: dict[str, Any]) -> bool:
        # The backup is the recorded configuration: complete once recorded.
        return True

    def apply(self, recommendation: Recommendation, backup: dict[str, Any]) -> dict[str, Any]:
        return self._strategy(recommendation.resource_id).apply(recommendation, self._params(recommendation), backup)

    def apply_done(self, recommendation: Recommendation, action: dict[str, Any]) -> bool:
        return self._strategy(recommendation.resource_id).apply_done(action)

    def verify(self, recommendation: Recommendation, action: dict[str, Any]) -> VerificationResult:
        return self._strategy(recommendation.resource_id).verify(action)

    def rollback(
        self,
        recommendation: Recommendation,
        backup: dict[str, Any] | None,
        action: dict[str, Any] | None,
    ) -> dict[str, Any]:
        # The real state is compared with the backup, whatever `action` says: a step may have acted
        # and failed before it could record what it did.
        return self._strategy(recommendation.resource_id).rollback(recommendation, backup)

    def rollback_done(self, recommendation: Recommendation, rollback: dict[str, Any]) -> bool:
        return self._strategy(recommendation.resource_id).rollback_done(rollback)

    def measure_savings(self, recommendation: Recommendation, backup: dict[str, Any]) -> float | None:
        return self._strategy(recommendation.resource_id).measure_savings(recommendation, backup)
