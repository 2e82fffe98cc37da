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
    strategy.py    what a kind of storage implements, typed with that kind's records
    ebs.py         VolumeStrategy: gp2 → gp3, and what its steps record (EbsBackup, EbsChange, EbsRestore)
    s3.py          BucketStrategy: lifecycle and Intelligent-Tiering (S3Backup, S3Change, S3Restore)
    rules.py       what AWS would refuse in a rule, and minimum storage durations
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeAlias

from pydantic import ValidationError

from cost_engine.cost_scope import EC2_OTHER, S3, CostScope, bucket_arn
from cost_engine.executors.base import BaseExecutor, Permission, Polling
from cost_engine.executors.optimize_storage.ebs import (
    EbsBackup,
    EbsChange,
    EbsRestore,
    EbsSettings,
    VolumeStrategy,
    gp3_target,
)
from cost_engine.executors.optimize_storage.parameters import (
    BUCKET_FIELDS,
    BUCKET_NAME,
    VOLUME_FIELDS,
    VOLUME_ID,
    OptimizeStorageParameters,
)
from cost_engine.executors.optimize_storage.rules import minimum_duration_warnings, rule_problems
from cost_engine.executors.optimize_storage.s3 import (
    Bucket,
    BucketStrategy,
    S3Backup,
    S3Change,
    S3Lifecycle,
    S3Restore,
)
from cost_engine.executors.optimize_storage.strategy import recorded
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
    from mypy_boto3_ec2.type_defs import VolumeTypeDef

__all__ = [
    "EbsBackup",
    "EbsChange",
    "EbsRestore",
    "EbsSettings",
    "OptimizeStorageExecutor",
    "OptimizeStorageParameters",
    "S3Backup",
    "S3Change",
    "S3Lifecycle",
    "S3Restore",
    "StorageBackup",
    "StorageChange",
    "StorageRestore",
    "gp3_target",
    "rule_problems",
]

# What each step records, by kind: the step runner parses a stored record into the one of the two
# models it fits (each names its kind), which is the model of the strategy that wrote it.
StorageBackup: TypeAlias = EbsBackup | S3Backup
StorageChange: TypeAlias = EbsChange | S3Change
StorageRestore: TypeAlias = EbsRestore | S3Restore


# -- the executor ----------------------------------------------------------------------------------------

_VOLUME_ARN = "arn:{partition}:ec2:{region}:{account}:volume/*"
_BUCKET_ARN = "arn:{partition}:s3:::*"


@register_executor
class OptimizeStorageExecutor(
    BaseExecutor[
        OptimizeStorageParameters,
        "VolumeTypeDef | Bucket",
        StorageBackup,
        StorageChange,
        StorageRestore,
    ]
):
    recommendation_type = RecommendationType.OPTIMIZE_STORAGE
    # The recommendation's alarms and thresholds (a volume's queue length, latency) are watched.
    watches = True
    savings_method = "the volume's or bucket's storage cost before the change, against after it"
    flow = (
        "Validate (rules AWS accepts, no conflicting rule, no EBS modification in the last six "
        "hours) → (dry run → report) → approval → record the exact configuration → S3 "
        "lifecycle/Intelligent-Tiering merged in, or EBS gp2 → gp3 → poll until optimizing → "
        "verify → record; Catch → rollback (the recorded configuration put back; an EBS volume "
        "only once AWS allows its next modification)."
    )
    risk_level = RiskLevel.MEDIUM
    # An EBS modification runs for hours on a large volume before it is optimizing.
    polling = Polling(first_seconds=10, longest_seconds=60, budget_seconds=2 * 3600)
    # The backup is the record of the volume's settings or the bucket's configuration.
    backup_waits = False
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

    @staticmethod
    def _is_volume(recommendation: Recommendation) -> bool:
        # A volume id is `vol-` and 8 or 17 hex digits; anything else is taken as a bucket name.
        return VOLUME_ID.match(recommendation.resource_id) is not None

    def _strategy(self, recommendation: Recommendation) -> VolumeStrategy | BucketStrategy:
        return self._volumes if self._is_volume(recommendation) else self._buckets

    def resource(self, recommendation: Recommendation) -> Resource:
        kind = ResourceKind.EBS_VOLUME if self._is_volume(recommendation) else ResourceKind.S3_BUCKET
        return Resource(kind, recommendation.resource_id)

    # -- validate and plan ---------------------------------------------------------------------

    def validate(self, recommendation: Recommendation) -> ValidationResult:
        # The base's opening (parameters, then the resource), after one check of its own: what kind
        # the resource id names, and parameters of that kind. A name that is no bucket's is refused
        # before AWS is asked about it (botocore would not even send it), and parameters of the other
        # kind before the resource is looked up.
        try:
            params = self.parameters(recommendation)
        except ValidationError:
            return super().validate(recommendation)  # which refuses the parameters
        misfit = self._misfit(recommendation, params)
        return self._invalid([misfit]) if misfit else super().validate(recommendation)

    def _misfit(self, recommendation: Recommendation, params: OptimizeStorageParameters) -> str | None:
        """Why the resource id or the parameters fit neither kind of storage, or None."""
        resource_id = recommendation.resource_id
        if self._is_volume(recommendation):
            misplaced = sorted(params.model_fields_set & BUCKET_FIELDS)
            what, other = f"EBS volume {resource_id}", "S3 buckets"
        else:
            if not BUCKET_NAME.match(resource_id):
                return f"'{resource_id}' is neither an EBS volume id (vol-…) nor a valid S3 bucket name"
            misplaced = sorted(params.model_fields_set & VOLUME_FIELDS)
            what, other = f"S3 bucket {resource_id}", "EBS volumes"
        if misplaced:
            return f"parameters {', '.join(misplaced)} do not apply to {what}: they are for {other}"
        return None

    def find(self, recommendation: Recommendation, params: OptimizeStorageParameters) -> VolumeTypeDef | Bucket | None:
        return self._strategy(recommendation).find(recommendation)

    def not_found(self, recommendation: Recommendation) -> str:
        return self._strategy(recommendation).not_found(recommendation)

    def check(
        self, recommendation: Recommendation, params: OptimizeStorageParameters, resource: VolumeTypeDef | Bucket
    ) -> ValidationResult:
        # The resource is what `find` got from the strategy of the resource id: a Bucket, or a volume
        # (a boto3 TypedDict, which isinstance cannot name).
        if isinstance(resource, Bucket):
            errors, warnings = self._buckets.check(recommendation, params, resource)
            warnings += minimum_duration_warnings(params)
        else:
            errors, warnings = self._volumes.check(recommendation, params, resource)
        return ValidationResult(
            valid=not errors, errors=errors, warnings=warnings, risk_level=self.risk_level, estimated_duration=10
        )

    def plan(self, recommendation: Recommendation, execution_id: str) -> ExecutionPlan:
        return self._strategy(recommendation).plan(recommendation, self.parameters(recommendation), execution_id)

    # -- the steps: each record is read as the model of the resource's kind ------------------------

    def backup(self, recommendation: Recommendation, execution_id: str) -> StorageBackup:
        return self._strategy(recommendation).backup(recommendation, execution_id)

    def backup_ready(self, recommendation: Recommendation, backup: StorageBackup) -> bool:
        # The backup is the recorded configuration: complete once recorded.
        return True

    def apply(self, recommendation: Recommendation, backup: StorageBackup) -> StorageChange:
        params = self.parameters(recommendation)
        if self._is_volume(recommendation):
            return self._volumes.apply(recommendation, params, recorded(EbsBackup, backup, recommendation))
        return self._buckets.apply(recommendation, params, recorded(S3Backup, backup, recommendation))

    def apply_done(self, recommendation: Recommendation, action: StorageChange) -> bool:
        if self._is_volume(recommendation):
            return self._volumes.apply_done(recorded(EbsChange, action, recommendation))
        return self._buckets.apply_done(recorded(S3Change, action, recommendation))

    def verify(self, recommendation: Recommendation, action: StorageChange) -> VerificationResult:
        if self._is_volume(recommendation):
            return self._volumes.verify(recorded(EbsChange, action, recommendation))
        return self._buckets.verify(recorded(S3Change, action, recommendation))

    def rollback(
        self,
        recommendation: Recommendation,
        backup: StorageBackup | None,
        action: StorageChange | None,
    ) -> StorageRestore:
        # The real state is compared with the backup, whatever `action` says: a step may have acted
        # and failed before it could record what it did.
        params = self.parameters(recommendation)
        if self._is_volume(recommendation):
            volume_backup = None if backup is None else recorded(EbsBackup, backup, recommendation)
            return self._volumes.rollback(recommendation, params, volume_backup)
        bucket_backup = None if backup is None else recorded(S3Backup, backup, recommendation)
        return self._buckets.rollback(recommendation, params, bucket_backup)

    def rollback_done(self, recommendation: Recommendation, rollback: StorageRestore) -> bool:
        if self._is_volume(recommendation):
            return self._volumes.rollback_done(recorded(EbsRestore, rollback, recommendation))
        return self._buckets.rollback_done(recorded(S3Restore, rollback, recommendation))

    def cost_scope(self, recommendation: Recommendation, action: Any) -> CostScope:
        if self._is_volume(recommendation):
            return CostScope(self.savings_method, EC2_OTHER, (recommendation.resource_id,))
        return CostScope(self.savings_method, S3, (bucket_arn(recommendation.resource_id),))

    def expected_savings(self, recommendation: Recommendation, backup: StorageBackup) -> float | None:
        params = self.parameters(recommendation)
        if self._is_volume(recommendation):
            return self._volumes.expected_savings(recommendation, params, recorded(EbsBackup, backup, recommendation))
        return self._buckets.expected_savings(recommendation, params, recorded(S3Backup, backup, recommendation))
