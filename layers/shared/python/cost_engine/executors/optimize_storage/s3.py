"""S3: a lifecycle rule and Intelligent-Tiering archive configuration, merged with the bucket's own."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast

from botocore.exceptions import ClientError

from cost_engine.aws import aws_failure, error_code
from cost_engine.errors import ActionFailed
from cost_engine.executors.base import StepRecord
from cost_engine.executors.optimize_storage.parameters import (
    OBJECT_SAMPLE_SIZE,
    SMALL_OBJECT_BYTES,
    OptimizeStorageParameters,
)
from cost_engine.executors.optimize_storage.rules import rule_problems
from cost_engine.executors.optimize_storage.strategy import StorageStrategy, json_safe
from cost_engine.models import (
    ExecutionPlan,
    Recommendation,
    RiskLevel,
    RollbackPlan,
    VerificationResult,
    utc_now,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import IntelligentTieringConfigurationTypeDef, ObjectTypeDef, TieringTypeDef


@dataclass(frozen=True)
class Bucket:
    """An S3 bucket as validation finds it: the region it is in, or None when HeadBucket was refused
    (the bucket is not the engine's to read)."""

    name: str
    location: str | None


# -- what the steps record -------------------------------------------------------------------------


class S3Lifecycle(StepRecord):
    """A bucket's lifecycle configuration as AWS returns it (the rules as JSON)."""

    rules: list[dict[str, Any]]
    transition_default_minimum_object_size: str | None


class S3Backup(StepRecord):
    """The bucket's exact configurations before the change; `lifecycle` None: it had none."""

    kind: Literal["s3_bucket"]
    execution_id: str
    bucket: str
    lifecycle: S3Lifecycle | None
    intelligent_tiering: list[dict[str, Any]]
    recorded_at: str


class S3Change(StepRecord):
    """The lifecycle rule and Intelligent-Tiering configuration added (None: not asked for)."""

    kind: Literal["s3_bucket"]
    bucket: str
    rule: dict[str, Any] | None
    intelligent_tiering: Mapping[str, Any] | None
    # The ids of the bucket's own rules, sent again unchanged with the new one (recorded with a rule only).
    kept_rules: list[str | None] | None = None


class S3Restore(StepRecord):
    """What the rollback put back: the recorded configurations and the changes it made, or why none."""

    kind: Literal["s3_bucket"]
    bucket: str
    restored: bool
    # Without a backup nothing was changed: only `reason` is recorded then, and none of the fields after it.
    reason: str | None = None
    changes: list[str] | None = None
    lifecycle: S3Lifecycle | None = None
    intelligent_tiering: list[dict[str, Any]] | None = None
    added_intelligent_tiering: str | None = None


class BucketStrategy(StorageStrategy[Bucket, S3Backup, S3Change, S3Restore]):
    """Lifecycle transitions and Intelligent-Tiering archive configurations on an S3 bucket."""

    kind: ClassVar[Literal["s3_bucket"]] = "s3_bucket"

    @property
    def s3(self) -> S3Client:
        return self.clients.s3

    # -- reading -------------------------------------------------------------------------------

    def find(self, recommendation: Recommendation) -> Bucket | None:
        bucket = recommendation.resource_id
        try:
            self.s3.head_bucket(Bucket=bucket)
        except ClientError as error:
            if error_code(error) in ("404", "NoSuchBucket", "NotFound"):
                return None
            if error_code(error) in ("403", "AccessDenied", "Forbidden"):
                return Bucket(bucket, location=None)
            raise aws_failure("HeadBucket", error) from error
        location = self.s3.get_bucket_location(Bucket=bucket).get("LocationConstraint") or "us-east-1"
        if location == "EU":  # the legacy name of eu-west-1
            location = "eu-west-1"
        return Bucket(bucket, location=location)

    def not_found(self, recommendation: Recommendation) -> str:
        return f"S3 bucket {recommendation.resource_id} does not exist"

    @staticmethod
    def _bucket_problem(bucket: Bucket, region: str) -> str | None:
        """Why the bucket cannot be worked on, or None."""
        if bucket.location is None:
            return f"S3 bucket {bucket.name} is not accessible to the engine (access denied): is it in this account?"
        if bucket.location != region:
            return f"S3 bucket {bucket.name} is in {bucket.location}, but the recommendation is for {region}"
        return None

    def _lifecycle(self, bucket: str) -> S3Lifecycle | None:
        """The bucket's lifecycle configuration as AWS returns it, or None when it has none."""
        try:
            answer = self.s3.get_bucket_lifecycle_configuration(Bucket=bucket)
        except ClientError as error:
            if error_code(error) == "NoSuchLifecycleConfiguration":
                return None
            raise aws_failure("GetBucketLifecycleConfiguration", error) from error
        return S3Lifecycle(
            rules=json_safe(answer.get("Rules", [])),
            transition_default_minimum_object_size=answer.get("TransitionDefaultMinimumObjectSize"),
        )

    def _tiering_configurations(self, bucket: str) -> list[dict[str, Any]]:
        configurations: list[dict[str, Any]] = []
        request: dict[str, Any] = {"Bucket": bucket}
        while True:
            try:
                page = self.s3.list_bucket_intelligent_tiering_configurations(**request)
            except ClientError as error:
                raise aws_failure("ListBucketIntelligentTieringConfigurations", error) from error
            configurations += json_safe(page.get("IntelligentTieringConfigurationList", []))
            if not page.get("IsTruncated"):
                return configurations
            request["ContinuationToken"] = page["NextContinuationToken"]

    def _sample_objects(self, bucket: str, prefix: str) -> list[ObjectTypeDef]:
        try:
            page = self.s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=OBJECT_SAMPLE_SIZE)
        except ClientError as error:
            raise aws_failure("ListObjectsV2", error) from error
        return page.get("Contents", [])

    def _versioning(self, bucket: str) -> str:
        return str(self.s3.get_bucket_versioning(Bucket=bucket).get("Status") or "Disabled")

    # -- what is added ---------------------------------------------------------------------------

    @staticmethod
    def new_rule(params: OptimizeStorageParameters) -> dict[str, Any] | None:
        if not params.transitions and not params.noncurrent_version_transitions:
            return None
        rule: dict[str, Any] = {"ID": params.rule_id, "Filter": {"Prefix": params.prefix}, "Status": "Enabled"}
        if params.transitions:
            rule["Transitions"] = [
                {"Days": t.days, "StorageClass": t.storage_class}
                for t in sorted(params.transitions, key=lambda t: t.days)
            ]
        if params.noncurrent_version_transitions:
            rule["NoncurrentVersionTransitions"] = [
                {"NoncurrentDays": t.days, "StorageClass": t.storage_class}
                for t in sorted(params.noncurrent_version_transitions, key=lambda t: t.days)
            ]
        return rule

    @staticmethod
    def new_tiering(params: OptimizeStorageParameters) -> IntelligentTieringConfigurationTypeDef | None:
        archive = params.intelligent_tiering
        if archive is None:
            return None
        tierings: list[TieringTypeDef] = []
        if archive.archive_days is not None:
            tierings.append({"Days": archive.archive_days, "AccessTier": "ARCHIVE_ACCESS"})
        if archive.deep_archive_days is not None:
            tierings.append({"Days": archive.deep_archive_days, "AccessTier": "DEEP_ARCHIVE_ACCESS"})
        configuration: IntelligentTieringConfigurationTypeDef = {
            "Id": archive.id,
            "Status": "Enabled",
            "Tierings": tierings,
        }
        if params.prefix:
            configuration["Filter"] = {"Prefix": params.prefix}
        return configuration

    # -- validate and plan ---------------------------------------------------------------------

    def check(
        self, recommendation: Recommendation, params: OptimizeStorageParameters, found: Bucket
    ) -> tuple[list[str], list[str]]:
        bucket = recommendation.resource_id
        errors = rule_problems(params)
        if not params.transitions and not params.noncurrent_version_transitions and params.intelligent_tiering is None:
            errors.append(
                "nothing to add: give parameters.transitions, parameters.noncurrent_version_transitions or "
                "parameters.intelligent_tiering"
            )
        problem = self._bucket_problem(found, recommendation.region)
        if problem:
            return [problem, *errors], []
        warnings: list[str] = []
        lifecycle = self._lifecycle(bucket)
        existing_rules = lifecycle.rules if lifecycle else []
        if self.new_rule(params) is not None:
            for rule in existing_rules:
                if rule.get("ID") == params.rule_id:
                    errors.append(
                        f"bucket {bucket} already has a lifecycle rule '{params.rule_id}': choose another "
                        "parameters.rule_id (existing rules are never replaced)"
                    )
                elif _overlaps(rule, params.prefix) and (
                    rule.get("Transitions") or rule.get("NoncurrentVersionTransitions")
                ):
                    warnings.append(
                        f"existing lifecycle rule '{rule.get('ID')}' also transitions objects under "
                        f"'{params.prefix}': where two rules apply, S3 takes the transition to the cheaper class"
                    )
        if params.intelligent_tiering is not None:
            ids = {c.get("Id") for c in self._tiering_configurations(bucket)}
            if params.intelligent_tiering.id in ids:
                errors.append(
                    f"bucket {bucket} already has an Intelligent-Tiering configuration "
                    f"'{params.intelligent_tiering.id}': choose another parameters.intelligent_tiering.id"
                )
        if params.noncurrent_version_transitions and self._versioning(bucket) != "Enabled":
            warnings.append(f"bucket {bucket} is not versioned: noncurrent_version_transitions have nothing to move")
        warnings += self._savings_doubts(bucket, params, existing_rules)
        return errors, warnings

    def _savings_doubts(
        self, bucket: str, params: OptimizeStorageParameters, existing_rules: list[dict[str, Any]]
    ) -> list[str]:
        sample = self._sample_objects(bucket, params.prefix)
        where = f"under '{params.prefix}'" if params.prefix else "in the bucket"
        if not sample:
            return [f"no objects {where} yet: the configuration saves nothing until there are"]
        doubts = []
        small = [o for o in sample if int(o.get("Size", 0)) < SMALL_OBJECT_BYTES]
        if len(small) * 2 > len(sample):
            doubts.append(
                f"{len(small)} of {len(sample)} sampled objects {where} are smaller than 128 KiB: S3 lifecycle does "
                "not transition them by default, IA classes bill them as 128 KiB and Intelligent-Tiering keeps them "
                "in its Frequent Access tier, so the savings are doubtful"
            )
        if params.intelligent_tiering is not None:
            tiered_by_rules = any(
                t.get("StorageClass") == "INTELLIGENT_TIERING"
                for rule in existing_rules
                for t in rule.get("Transitions", [])
            ) or any(t.storage_class == "INTELLIGENT_TIERING" for t in params.transitions)
            if not tiered_by_rules and not any(o.get("StorageClass") == "INTELLIGENT_TIERING" for o in sample):
                doubts.append(
                    "the Intelligent-Tiering archive configuration only acts on objects stored in "
                    f"INTELLIGENT_TIERING, and none {where} is (nor does a rule move them there): add a transition "
                    "to INTELLIGENT_TIERING"
                )
        return doubts

    def plan(
        self, recommendation: Recommendation, params: OptimizeStorageParameters, execution_id: str
    ) -> ExecutionPlan:
        bucket = recommendation.resource_id
        lifecycle = self._lifecycle(bucket)
        existing = [str(r.get("ID", "?")) for r in (lifecycle.rules if lifecycle else [])]
        tierings = [str(c.get("Id", "?")) for c in self._tiering_configurations(bucket)]
        rule = self.new_rule(params)
        tiering = self.new_tiering(params)
        actions = [
            "Record the bucket's lifecycle configuration "
            + (f"({len(existing)} rule(s): {', '.join(existing)})" if lifecycle else "(it has none)")
            + " and its Intelligent-Tiering configurations"
            + (f" ({', '.join(tierings)})" if tierings else " (none)")
        ]
        where = f"objects under '{params.prefix}'" if params.prefix else "all objects"
        if rule is not None:
            steps = [f"{t['StorageClass']} after {t['Days']} days" for t in rule.get("Transitions", [])]
            steps += [
                f"noncurrent versions to {t['StorageClass']} after {t['NoncurrentDays']} days"
                for t in rule.get("NoncurrentVersionTransitions", [])
            ]
            actions.append(
                f"Add lifecycle rule '{params.rule_id}' for {where}: {', '.join(steps)}; "
                + (f"keep the existing rule(s) {', '.join(existing)} unchanged" if existing else "no rule to keep")
            )
        if tiering is not None:
            tiers = [f"{t['AccessTier']} after {t['Days']} days without access" for t in tiering["Tierings"]]
            actions.append(f"Add Intelligent-Tiering configuration '{tiering['Id']}' for {where}: {', '.join(tiers)}")
        actions.append("Read the configurations back and verify they hold exactly the kept and the added parts")
        restore = (
            f"Put back the recorded lifecycle configuration exactly ({len(existing)} rule(s))"
            if lifecycle
            else "Delete the lifecycle configuration: the bucket had none"
        )
        steps_back = [restore] if rule is not None else []
        if tiering is not None:
            steps_back.append(f"Delete Intelligent-Tiering configuration '{tiering['Id']}'")
        steps_back.append(
            "Objects that S3 already moved under the new configuration stay in their storage class: the "
            "configuration is restored, not the objects (S3 applies lifecycle rules about once a day)"
        )
        return ExecutionPlan(
            summary=f"Add storage tiering to S3 bucket {bucket}, keeping its existing configuration",
            actions=actions,
            backup=["The exact lifecycle and Intelligent-Tiering configurations of the bucket, or that it had none"],
            rollback_plan=RollbackPlan(
                execution_id=execution_id,
                rollback_steps=steps_back,
                estimated_duration=1,
                risk_level=RiskLevel.LOW,
            ),
            estimated_monthly_savings=recommendation.estimated_monthly_savings,
            savings_basis=S3_SAVINGS_BASIS,
            resource={
                "kind": self.kind,
                "bucket": bucket,
                "existing_rules": existing,
                "existing_intelligent_tiering": tierings,
                "new_rule": rule,
                "new_intelligent_tiering": tiering,
            },
        )

    # -- backup and act --------------------------------------------------------------------------

    def backup(self, recommendation: Recommendation, execution_id: str) -> S3Backup:
        bucket = recommendation.resource_id
        return S3Backup(
            kind=self.kind,
            execution_id=execution_id,
            bucket=bucket,
            lifecycle=self._lifecycle(bucket),
            intelligent_tiering=self._tiering_configurations(bucket),
            recorded_at=utc_now().isoformat(),
        )

    def _put_lifecycle(self, bucket: str, rules: list[dict[str, Any]], minimum_object_size: str | None) -> None:
        request: dict[str, Any] = {"Bucket": bucket, "LifecycleConfiguration": {"Rules": rules}}
        if minimum_object_size:
            request["TransitionDefaultMinimumObjectSize"] = minimum_object_size
        try:
            self.s3.put_bucket_lifecycle_configuration(**request)
        except ClientError as error:
            raise aws_failure("PutBucketLifecycleConfiguration", error) from error

    def apply(self, recommendation: Recommendation, params: OptimizeStorageParameters, backup: S3Backup) -> S3Change:
        bucket = recommendation.resource_id
        rule = self.new_rule(params)
        tiering = self.new_tiering(params)
        action = S3Change(kind=self.kind, bucket=bucket, rule=rule, intelligent_tiering=tiering)
        if rule is not None:
            # Merged with what the bucket has now: PutBucketLifecycleConfiguration replaces the whole
            # configuration, so every existing rule is sent again unchanged. A retry finds its rule there.
            current = self._lifecycle(bucket)
            rules = list(current.rules if current else [])
            kept = [r for r in rules if r.get("ID") != rule["ID"]]
            if len(kept) != len(rules) and not _same_rule(next(r for r in rules if r.get("ID") == rule["ID"]), rule):
                raise ActionFailed(f"bucket {bucket} got another lifecycle rule '{rule['ID']}' meanwhile: not replaced")
            if len(kept) == len(rules):
                minimum = current.transition_default_minimum_object_size if current else None
                self._put_lifecycle(bucket, [*kept, rule], minimum)
            action = action.model_copy(update={"kept_rules": [r.get("ID") for r in kept]})
        if tiering is not None:
            existing = {c.get("Id"): c for c in self._tiering_configurations(bucket)}
            if tiering["Id"] not in existing:
                try:
                    self.s3.put_bucket_intelligent_tiering_configuration(
                        Bucket=bucket, Id=tiering["Id"], IntelligentTieringConfiguration=tiering
                    )
                except ClientError as error:
                    raise aws_failure("PutBucketIntelligentTieringConfiguration", error) from error
            elif not _same_tiering(existing[tiering["Id"]], tiering):
                raise ActionFailed(
                    f"bucket {bucket} got another Intelligent-Tiering configuration '{tiering['Id']}' meanwhile: "
                    "not replaced"
                )
        return action

    def apply_done(self, action: S3Change) -> bool:
        # S3 configuration calls take effect when they answer.
        return True

    def verify(self, action: S3Change) -> VerificationResult:
        bucket = action.bucket
        checks: list[str] = []
        failures: list[str] = []
        if action.rule is not None:
            lifecycle = self._lifecycle(bucket)
            rules = {r.get("ID"): r for r in (lifecycle.rules if lifecycle else [])}
            rule = action.rule
            found = rules.get(rule["ID"])
            ok = found is not None and _same_rule(found, rule)
            (checks if ok else failures).append(f"lifecycle rule '{rule['ID']}' is {'in place' if ok else 'missing'}")
            for kept in action.kept_rules or []:
                (checks if kept in rules else failures).append(
                    f"existing lifecycle rule '{kept}' is {'kept' if kept in rules else 'gone'}"
                )
        if action.intelligent_tiering is not None:
            wanted = action.intelligent_tiering
            tiering = {c.get("Id"): c for c in self._tiering_configurations(bucket)}.get(wanted["Id"])
            ok = tiering is not None and _same_tiering(tiering, wanted)
            (checks if ok else failures).append(
                f"Intelligent-Tiering configuration '{wanted['Id']}' is {'in place' if ok else 'missing'}"
            )
        return VerificationResult(passed=not failures, checks=checks, failures=failures)

    def expected_savings(
        self, recommendation: Recommendation, params: OptimizeStorageParameters, backup: S3Backup
    ) -> float | None:
        return recommendation.estimated_monthly_savings

    # -- rollback --------------------------------------------------------------------------------

    def rollback(
        self, recommendation: Recommendation, params: OptimizeStorageParameters, backup: S3Backup | None
    ) -> S3Restore:
        bucket = recommendation.resource_id
        if backup is None:
            return S3Restore(kind=self.kind, bucket=bucket, restored=False, reason="nothing was changed")
        recorded = backup.lifecycle
        current = self._lifecycle(bucket)
        restored: list[str] = []
        if not _same_lifecycle(current, recorded):
            if recorded is None:
                try:
                    self.s3.delete_bucket_lifecycle(Bucket=bucket)
                except ClientError as error:
                    raise aws_failure("DeleteBucketLifecycle", error) from error
                restored.append("lifecycle configuration deleted: the bucket had none")
            else:
                self._put_lifecycle(bucket, recorded.rules, recorded.transition_default_minimum_object_size)
                restored.append(f"lifecycle configuration put back ({len(recorded.rules)} rule(s))")
        recorded_tierings = {c["Id"]: c for c in backup.intelligent_tiering}
        current_tierings = {c.get("Id"): c for c in self._tiering_configurations(bucket)}
        added = params.intelligent_tiering.id if params.intelligent_tiering else None
        try:
            if added and added in current_tierings and added not in recorded_tierings:
                self.s3.delete_bucket_intelligent_tiering_configuration(Bucket=bucket, Id=added)
                restored.append(f"Intelligent-Tiering configuration '{added}' deleted")
            for tiering_id, configuration in recorded_tierings.items():
                if not _same_tiering(current_tierings.get(tiering_id), configuration):
                    # Put back as AWS listed it (the record keeps AWS's keys).
                    self.s3.put_bucket_intelligent_tiering_configuration(
                        Bucket=bucket,
                        Id=tiering_id,
                        IntelligentTieringConfiguration=cast("IntelligentTieringConfigurationTypeDef", configuration),
                    )
                    restored.append(f"Intelligent-Tiering configuration '{tiering_id}' put back")
        except ClientError as error:
            raise aws_failure("Intelligent-Tiering configuration restore", error) from error
        return S3Restore(
            kind=self.kind,
            bucket=bucket,
            restored=bool(restored),
            changes=restored,
            lifecycle=recorded,
            intelligent_tiering=list(recorded_tierings.values()),
            added_intelligent_tiering=added,
        )

    def rollback_done(self, rollback: S3Restore) -> bool:
        if rollback.intelligent_tiering is None:
            # Nothing was changed (there was no backup): the rollback recorded no configurations.
            return True
        bucket = rollback.bucket
        if not _same_lifecycle(self._lifecycle(bucket), rollback.lifecycle):
            raise ActionFailed(
                f"the lifecycle configuration of bucket {bucket} is not the recorded one after the rollback"
            )
        current = {c.get("Id") for c in self._tiering_configurations(bucket)}
        recorded = {c["Id"] for c in rollback.intelligent_tiering}
        added = rollback.added_intelligent_tiering
        if not recorded <= current or (added and added not in recorded and added in current):
            raise ActionFailed(
                f"the Intelligent-Tiering configurations of bucket {bucket} are not the recorded ones after the "
                "rollback"
            )
        return True


S3_SAVINGS_BASIS = (
    "the price catalog has no S3 storage-class prices, and the savings depend on the bucket's objects and "
    "their access: the recommendation's own estimate"
)


def _overlaps(rule: dict[str, Any], prefix: str) -> bool:
    """Whether an existing rule may apply to objects under `prefix` (prefix filters only; a tag or
    size filter is taken as overlapping, since it may)."""
    if rule.get("Status") != "Enabled":
        return False
    rule_filter = rule.get("Filter") or {}
    other = rule_filter.get("Prefix", rule.get("Prefix", ""))
    if "And" in rule_filter:
        other = rule_filter["And"].get("Prefix", "")
    return bool(str(other).startswith(prefix) or prefix.startswith(str(other)))


def _same_rule(found: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """The rule read back is the one put (AWS may add empty or default fields)."""
    return all(found.get(key) == value for key, value in wanted.items() if key != "Filter") and (
        (found.get("Filter") or {}).get("Prefix", "") == wanted["Filter"]["Prefix"]
    )


def _same_tiering(found: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> bool:
    if found is None:
        return False

    def tiers(configuration: Mapping[str, Any]) -> list[tuple[str, int]]:
        return sorted((str(t["AccessTier"]), int(t["Days"])) for t in configuration.get("Tierings", []))

    return (
        found.get("Status") == wanted.get("Status")
        and tiers(found) == tiers(wanted)
        and (found.get("Filter") or {}).get("Prefix", "") == (wanted.get("Filter") or {}).get("Prefix", "")
    )


def _same_lifecycle(current: S3Lifecycle | None, recorded: S3Lifecycle | None) -> bool:
    if current is None or recorded is None:
        return current is None and recorded is None
    # The default minimum object size is part of the configuration; compared where both name one.
    sizes = (current.transition_default_minimum_object_size, recorded.transition_default_minimum_object_size)
    return bool(current.rules == recorded.rules and (None in sizes or sizes[0] == sizes[1]))
