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

One registered executor; each kind is a strategy of its own behind it (`VolumeStrategy`,
`BucketStrategy`), so the two never share state or checks by accident.
"""

from __future__ import annotations

import itertools
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import ClientError
from pydantic import Field, StrictInt, ValidationError

from cost_engine.aws import aws_failure, error_code
from cost_engine.ec2_reads import find_volume, require_volume
from cost_engine.errors import ActionFailed
from cost_engine.executors.base import BaseExecutor, Permission
from cost_engine.executors.registry import register_executor
from cost_engine.models import (
    ExecutionPlan,
    Recommendation,
    RecommendationType,
    RiskLevel,
    RollbackPlan,
    StrictModel,
    ValidationResult,
    VerificationResult,
    utc_now,
)
from cost_engine.prechecks import Resource, ResourceKind
from cost_engine.pricing import price_catalog

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import VolumeModificationTypeDef, VolumeTypeDef
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import IntelligentTieringConfigurationTypeDef, ObjectTypeDef, TieringTypeDef

    from cost_engine.aws import AwsClients

# -- parameters -------------------------------------------------------------------------------------

# The storage classes a lifecycle rule can move objects to, warmest first: AWS only moves objects down
# this "waterfall" (S3 User Guide, "Transitioning objects using Amazon S3 Lifecycle", supported
# transitions), so in one rule a colder class must come later than a warmer one.
STORAGE_CLASS_ORDER = ("STANDARD_IA", "INTELLIGENT_TIERING", "ONEZONE_IA", "GLACIER_IR", "GLACIER", "DEEP_ARCHIVE")
StorageClass = Literal["STANDARD_IA", "INTELLIGENT_TIERING", "ONEZONE_IA", "GLACIER_IR", "GLACIER", "DEEP_ARCHIVE"]
# S3 API reference, Transition.Days: to STANDARD_IA or ONEZONE_IA only after 30 days in S3 (a rule with
# fewer days is rejected); to the other classes from day 0. The same holds for NoncurrentDays.
INFREQUENT_ACCESS_CLASSES = frozenset({"STANDARD_IA", "ONEZONE_IA"})
INFREQUENT_ACCESS_MIN_DAYS = 30
# S3 User Guide, "Constraints and considerations for transitions": an object must stay 30 days in
# STANDARD_IA or ONEZONE_IA before a rule may move it on; AWS rejects a rule whose next transition comes
# sooner ("'Days' in the Transition action for StorageClass 'GLACIER' ... must be 30 days more than ...").
DAYS_IN_INFREQUENT_ACCESS_BEFORE_NEXT = 30
# Minimum storage durations (S3 pricing): moving objects on earlier is allowed, but they are charged
# for the whole minimum, so it is only a warning.
MINIMUM_STORAGE_DAYS = {"GLACIER_IR": 90, "GLACIER": 90, "DEEP_ARCHIVE": 180}
# S3 API reference, Tiering.Days: Archive Access after 90 to 730 days without access, Deep Archive
# Access after 180 to 730.
ARCHIVE_ACCESS_DAYS = (90, 730)
DEEP_ARCHIVE_ACCESS_DAYS = (180, 730)
# Objects under 128 KiB: lifecycle does not transition them by default
# (TransitionDefaultMinimumObjectSize=all_storage_classes_128K), the IA classes bill them as 128 KiB,
# and Intelligent-Tiering never moves them out of its Frequent Access tier.
SMALL_OBJECT_BYTES = 128 * 1024
OBJECT_SAMPLE_SIZE = 1000
DEFAULT_RULE_ID = "cost-engine-storage-tiering"

_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class LifecycleTransition(StrictModel):
    days: StrictInt = Field(ge=0, le=36500)
    storage_class: StorageClass


class IntelligentTieringArchive(StrictModel):
    """An S3 Intelligent-Tiering archive configuration: after how many days without access objects in
    INTELLIGENT_TIERING move to the Archive Access and/or Deep Archive Access tiers."""

    id: str = Field(min_length=1, max_length=64, pattern=_ID)
    archive_days: StrictInt | None = None
    deep_archive_days: StrictInt | None = None


class OptimizeStorageParameters(StrictModel):
    """Parameters of `optimize_storage`. The fields of one resource kind are refused for the other.

    EBS volume: `target_volume_type` (gp3), and optionally `iops`/`throughput` above what the volume
    needs. S3 bucket: a lifecycle rule (`rule_id`, `prefix`, `transitions`,
    `noncurrent_version_transitions`) and/or `intelligent_tiering`. Expiration is deliberately not
    offered: deleted objects are not storage tiering, and no rollback could bring them back.
    """

    target_volume_type: Literal["gp3"] = "gp3"
    iops: StrictInt | None = Field(default=None, ge=3000, le=16000)
    throughput: StrictInt | None = Field(default=None, ge=125, le=1000)

    rule_id: str = Field(default=DEFAULT_RULE_ID, min_length=1, max_length=255, pattern=_ID)
    prefix: str = Field(default="", max_length=1024)
    transitions: list[LifecycleTransition] = Field(default_factory=list, max_length=6)
    noncurrent_version_transitions: list[LifecycleTransition] = Field(default_factory=list, max_length=6)
    intelligent_tiering: IntelligentTieringArchive | None = None


VOLUME_FIELDS = frozenset({"target_volume_type", "iops", "throughput"})
BUCKET_FIELDS = frozenset({"rule_id", "prefix", "transitions", "noncurrent_version_transitions", "intelligent_tiering"})

VOLUME_ID = re.compile(r"^vol-[0-9a-f]{8}(?:[0-9a-f]{9})?$")
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")

# -- EBS performance ---------------------------------------------------------------------------------

# EBS User Guide, "General Purpose SSD volumes": gp2 has 3 IOPS per GiB (at least 100, at most 16,000)
# and bursts to 3,000 IOPS while its baseline is lower; its throughput is at most 128 MiB/s up to
# 170 GiB and 250 MiB/s above. gp3 includes 3,000 IOPS and 125 MiB/s at any size, provisions up to
# 500 IOPS per GiB and 0.25 MiB/s per provisioned IOPS.
GP2_IOPS_PER_GIB = 3
GP2_MIN_IOPS = 100
GP2_MAX_IOPS = 16_000
GP2_BURST_IOPS = 3_000
GP2_SMALL_VOLUME_MAX_GIB = 170
GP2_SMALL_VOLUME_THROUGHPUT = 128
GP2_MAX_THROUGHPUT = 250
GP3_BASELINE_IOPS = 3_000
GP3_BASELINE_THROUGHPUT = 125
GP3_MAX_IOPS_PER_GIB = 500
GP3_MAX_MIBPS_PER_IOPS = 0.25
# ModifyVolume: the next modification of a volume waits until the last one has completed and six
# hours have passed since it started.
MODIFICATION_INTERVAL = timedelta(hours=6)
IN_PROGRESS_STATES = frozenset({"modifying", "optimizing"})
# `optimizing` already serves the new type; only the performance is still being tuned.
EFFECTIVE_STATES = frozenset({"optimizing", "completed"})
TOO_SOON_ERRORS = frozenset({"VolumeModificationRateExceeded", "IncorrectModificationState"})


@dataclass(frozen=True)
class Gp3Target:
    """The gp3 settings that give a gp2 volume at least the performance it had, and why."""

    iops: int
    throughput: int
    gp2_baseline_iops: int
    gp2_peak_iops: int
    gp2_max_throughput: int
    explanation: str


def gp3_target(size_gb: int, iops: int | None = None, throughput: int | None = None) -> Gp3Target:
    baseline = min(max(GP2_IOPS_PER_GIB * size_gb, GP2_MIN_IOPS), GP2_MAX_IOPS)
    peak = max(baseline, GP2_BURST_IOPS)
    gp2_throughput = GP2_SMALL_VOLUME_THROUGHPUT if size_gb <= GP2_SMALL_VOLUME_MAX_GIB else GP2_MAX_THROUGHPUT
    needed_iops = max(peak, GP3_BASELINE_IOPS)
    needed_throughput = max(gp2_throughput, GP3_BASELINE_THROUGHPUT)
    burst = f", bursting to {GP2_BURST_IOPS:,}" if baseline < GP2_BURST_IOPS else ""
    explanation = (
        f"as gp2, {size_gb} GiB has a baseline of {baseline:,} IOPS (3 IOPS/GiB, at least 100, at most "
        f"16,000){burst}, and up to {gp2_throughput} MiB/s (128 up to 170 GiB, 250 above); gp3 includes "
        f"{GP3_BASELINE_IOPS:,} IOPS and {GP3_BASELINE_THROUGHPUT} MiB/s, so it needs {needed_iops:,} IOPS and "
        f"{needed_throughput} MiB/s to match"
    )
    return Gp3Target(
        iops=max(needed_iops, iops or 0),
        throughput=max(needed_throughput, throughput or 0),
        gp2_baseline_iops=baseline,
        gp2_peak_iops=peak,
        gp2_max_throughput=gp2_throughput,
        explanation=explanation,
    )


def _time(value: datetime | str) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def _json_safe(value: Any) -> Any:
    """What AWS answered, as the execution record can keep it (timestamps as ISO 8601 strings, which
    boto3 accepts back as timestamps)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items() if k != "ResponseMetadata"}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


# -- the strategies ------------------------------------------------------------------------------------


class StorageStrategy(ABC):
    """One kind of storage: the executor's steps, for that kind."""

    kind: str

    def __init__(self, clients: AwsClients) -> None:
        self.clients = clients

    @abstractmethod
    def validate(
        self, recommendation: Recommendation, params: OptimizeStorageParameters
    ) -> tuple[list[str], list[str]]:
        """(errors, warnings) of read-only checks."""

    @abstractmethod
    def plan(
        self, recommendation: Recommendation, params: OptimizeStorageParameters, execution_id: str
    ) -> ExecutionPlan:
        """The dry-run report."""

    @abstractmethod
    def backup(self, recommendation: Recommendation, execution_id: str) -> dict[str, Any]:
        """Record exactly what a rollback must put back."""

    @abstractmethod
    def apply(
        self, recommendation: Recommendation, params: OptimizeStorageParameters, backup: dict[str, Any]
    ) -> dict[str, Any]:
        """Make the change, unless the real state shows it is already made."""

    @abstractmethod
    def apply_done(self, action: dict[str, Any]) -> bool:
        """True once the change has taken effect."""

    @abstractmethod
    def verify(self, action: dict[str, Any]) -> VerificationResult:
        """Read back from AWS that the resource is as intended."""

    @abstractmethod
    def rollback(self, recommendation: Recommendation, backup: dict[str, Any] | None) -> dict[str, Any]:
        """Put back what the backup recorded."""

    @abstractmethod
    def rollback_done(self, rollback: dict[str, Any]) -> bool:
        """True once the resource is as recorded again."""

    @abstractmethod
    def measure_savings(self, recommendation: Recommendation, backup: dict[str, Any]) -> float | None:
        """Monthly savings of the verified change."""


class VolumeStrategy(StorageStrategy):
    """gp2 → gp3 on an EBS volume."""

    kind = "ebs_volume"

    # -- reading -------------------------------------------------------------------------------

    def _volume(self, volume_id: str) -> VolumeTypeDef | None:
        return find_volume(self.clients, volume_id)

    def _require_volume(self, volume_id: str) -> VolumeTypeDef:
        return require_volume(self.clients, volume_id)

    def _last_modification(self, volume_id: str) -> VolumeModificationTypeDef | None:
        try:
            modifications = self.clients.ec2.describe_volumes_modifications(VolumeIds=[volume_id])[
                "VolumesModifications"
            ]
        except ClientError as error:
            raise aws_failure("DescribeVolumesModifications", error) from error
        dated = [m for m in modifications if m.get("StartTime")]
        return max(dated, key=lambda m: m["StartTime"]) if dated else None

    @staticmethod
    def _settings(volume: VolumeTypeDef) -> dict[str, Any]:
        return {
            "volume_type": volume["VolumeType"],
            "size_gb": int(volume["Size"]),
            "iops": volume.get("Iops"),
            "throughput": volume.get("Throughput"),
        }

    @staticmethod
    def _next_allowed(modification: VolumeModificationTypeDef) -> datetime:
        return _time(modification["StartTime"]) + MODIFICATION_INTERVAL

    # -- validate and plan ---------------------------------------------------------------------

    def validate(
        self, recommendation: Recommendation, params: OptimizeStorageParameters
    ) -> tuple[list[str], list[str]]:
        volume_id = recommendation.resource_id
        volume = self._volume(volume_id)
        if volume is None:
            return [f"EBS volume {volume_id} does not exist in {recommendation.region}"], []
        errors: list[str] = []
        volume_type = volume["VolumeType"]
        if volume_type == params.target_volume_type:
            errors.append(f"volume {volume_id} is already {volume_type}: there is nothing to change")
        elif volume_type != "gp2":
            errors.append(
                f"volume {volume_id} is {volume_type}: optimize_storage moves gp2 volumes to gp3 only "
                "(other types need their own performance review)"
            )
        if volume["State"] not in ("available", "in-use"):
            errors.append(
                f"volume {volume_id} is '{volume['State']}': only available or in-use volumes can be modified"
            )
        last = self._last_modification(volume_id)
        if last is not None:
            state = last.get("ModificationState", "completed")
            started = _time(last["StartTime"])
            next_allowed = self._next_allowed(last)
            if state in IN_PROGRESS_STATES:
                errors.append(
                    f"volume {volume_id} is still being modified ('{state}', started {started.isoformat()}): "
                    f"AWS allows the next modification once it has completed, and not before {next_allowed.isoformat()}"
                )
            elif utc_now() < next_allowed:
                errors.append(
                    f"volume {volume_id} was last modified at {started.isoformat()}: AWS allows one modification "
                    f"of a volume every six hours, so this can be done from {next_allowed.isoformat()}"
                )
        size_gb = int(volume["Size"])
        target = gp3_target(size_gb, params.iops, params.throughput)
        needed = gp3_target(size_gb)
        if params.iops is not None and params.iops < needed.iops:
            errors.append(
                f"parameters.iops {params.iops} is below the {needed.iops:,} IOPS volume {volume_id} can deliver "
                f"now ({needed.explanation})"
            )
        if params.throughput is not None and params.throughput < needed.throughput:
            errors.append(
                f"parameters.throughput {params.throughput} MiB/s is below the {needed.throughput} MiB/s volume "
                f"{volume_id} can deliver now ({needed.explanation})"
            )
        if target.iops > GP3_MAX_IOPS_PER_GIB * size_gb:
            errors.append(
                f"gp3 allows at most {GP3_MAX_IOPS_PER_GIB} IOPS per GiB: {target.iops:,} IOPS on {size_gb} GiB"
            )
        if target.throughput > target.iops * GP3_MAX_MIBPS_PER_IOPS:
            errors.append(
                f"gp3 allows at most {GP3_MAX_MIBPS_PER_IOPS} MiB/s per IOPS: {target.throughput} MiB/s needs at "
                f"least {int(target.throughput / GP3_MAX_MIBPS_PER_IOPS):,} IOPS"
            )
        if not errors:
            errors += self._permission_problems(volume_id, params.target_volume_type, target)
        return errors, []

    def _permission_problems(self, volume_id: str, volume_type: Literal["gp3"], target: Gp3Target) -> list[str]:
        """ModifyVolume with DryRun: AWS answers DryRunOperation when the engine's role may make the change."""
        try:
            self.clients.ec2.modify_volume(
                VolumeId=volume_id, VolumeType=volume_type, Iops=target.iops, Throughput=target.throughput, DryRun=True
            )
        except ClientError as error:
            if error_code(error) == "DryRunOperation":
                return []
            if error_code(error) == "UnauthorizedOperation":
                return [f"the engine's role may not modify volume {volume_id} (ec2:ModifyVolume): {error}"]
            raise aws_failure("ModifyVolume (DryRun)", error) from error
        return []

    def _monthly_savings(self, size_gb: int, iops: int, throughput: int) -> tuple[float | None, str]:
        catalog = price_catalog()
        gp2 = catalog.volume_monthly("gp2", size_gb)
        gp3 = catalog.volume_monthly("gp3", size_gb)
        if gp2 is None or gp3 is None:
            return None, "no catalog price for gp2 or gp3 storage"
        extra_iops = max(0, iops - GP3_BASELINE_IOPS)
        extra_throughput = max(0, throughput - GP3_BASELINE_THROUGHPUT)
        # gp3 performance above its baseline is billed per IOPS-month and per MiB/s-month; the catalog
        # may not list those prices yet (then the caller falls back to the recommendation's estimate).
        iops_price: float | None = getattr(catalog, "ebs_gp3_iops_month", None)
        throughput_price: float | None = getattr(catalog, "ebs_gp3_throughput_mibps_month", None)
        missing = []
        if extra_iops and iops_price is None:
            missing.append(f"gp3 IOPS above {GP3_BASELINE_IOPS:,} ({extra_iops:,} needed)")
        if extra_throughput and throughput_price is None:
            missing.append(f"gp3 throughput above {GP3_BASELINE_THROUGHPUT} MiB/s ({extra_throughput} MiB/s needed)")
        if missing:
            return None, "no catalog price for " + " or ".join(missing)
        performance = extra_iops * (iops_price or 0.0) + extra_throughput * (throughput_price or 0.0)
        return round(gp2 - gp3 - performance, 2), catalog.basis

    def _savings_and_basis(self, recommendation: Recommendation, target: dict[str, int]) -> tuple[float | None, str]:
        savings, basis = self._monthly_savings(target["size_gb"], target["iops"], target["throughput"])
        if savings is None:
            return recommendation.estimated_monthly_savings, f"{basis}: the recommendation's own estimate"
        return savings, basis

    def plan(
        self, recommendation: Recommendation, params: OptimizeStorageParameters, execution_id: str
    ) -> ExecutionPlan:
        volume_id = recommendation.resource_id
        volume = self._require_volume(volume_id)
        size_gb = int(volume["Size"])
        target = gp3_target(size_gb, params.iops, params.throughput)
        savings, basis = self._savings_and_basis(
            recommendation, {"size_gb": size_gb, "iops": target.iops, "throughput": target.throughput}
        )
        attached = [a["InstanceId"] for a in volume.get("Attachments", []) if a.get("InstanceId")]
        where = f"attached to {', '.join(attached)}" if attached else "not attached"
        return ExecutionPlan(
            summary=(
                f"Change EBS volume {volume_id} ({size_gb} GiB gp2, {where}) to gp3 with {target.iops:,} IOPS "
                f"and {target.throughput} MiB/s, online"
            ),
            actions=[
                f"Record the volume's type, size, IOPS and throughput ({volume['VolumeType']}, {size_gb} GiB)",
                f"Modify {volume_id} to gp3 with {target.iops:,} IOPS and {target.throughput} MiB/s: "
                + target.explanation,
                "Wait until the modification is optimizing or completed (the volume stays in use throughout)",
                "Verify the volume is gp3 with at least that IOPS and throughput",
            ],
            backup=[
                f"The recorded settings of {volume_id}: a type change keeps the data in place, so no snapshot is taken"
            ],
            rollback_plan=RollbackPlan(
                execution_id=execution_id,
                rollback_steps=[
                    f"Modify {volume_id} back to its recorded type ({volume['VolumeType']}) and performance",
                    "AWS allows a volume's next modification only once the last one has completed and six hours "
                    "after it started: a rollback asked for sooner fails, says when to ask again, and can then be "
                    "asked for again",
                ],
                estimated_duration=10,
                risk_level=RiskLevel.LOW,
            ),
            estimated_monthly_savings=savings,
            savings_basis=basis,
            resource={
                "kind": self.kind,
                "volume_id": volume_id,
                "size_gb": size_gb,
                "volume_type": volume["VolumeType"],
                "attached_to": attached,
                "gp2_baseline_iops": target.gp2_baseline_iops,
                "gp2_peak_iops": target.gp2_peak_iops,
                "gp2_max_throughput": target.gp2_max_throughput,
                "target": {
                    "volume_type": params.target_volume_type,
                    "iops": target.iops,
                    "throughput": target.throughput,
                },
                "performance_basis": target.explanation,
            },
        )

    # -- backup and act --------------------------------------------------------------------------

    def backup(self, recommendation: Recommendation, execution_id: str) -> dict[str, Any]:
        volume = self._require_volume(recommendation.resource_id)
        return {
            "kind": self.kind,
            "execution_id": execution_id,
            "volume_id": recommendation.resource_id,
            "original": self._settings(volume),
            "recorded_at": utc_now().isoformat(),
        }

    def apply(
        self, recommendation: Recommendation, params: OptimizeStorageParameters, backup: dict[str, Any]
    ) -> dict[str, Any]:
        volume_id = recommendation.resource_id
        volume = self._require_volume(volume_id)
        target = gp3_target(int(volume["Size"]), params.iops, params.throughput)
        action = {
            "kind": self.kind,
            "volume_id": volume_id,
            "target_volume_type": params.target_volume_type,
            "target_iops": target.iops,
            "target_throughput": target.throughput,
            "size_gb": int(volume["Size"]),
        }
        last = self._last_modification(volume_id)
        # A retried step finds the modification it already started, instead of asking for a second one
        # (which AWS would refuse for six hours anyway).
        if volume["VolumeType"] == params.target_volume_type or (
            last is not None
            and last.get("TargetVolumeType") == params.target_volume_type
            and last.get("ModificationState") != "failed"
        ):
            return {**action, "already_requested": True}
        try:
            modification = self.clients.ec2.modify_volume(
                VolumeId=volume_id,
                VolumeType=params.target_volume_type,
                Iops=target.iops,
                Throughput=target.throughput,
            )["VolumeModification"]
        except ClientError as error:
            raise aws_failure("ModifyVolume", error) from error
        return {**action, "already_requested": False, "started_at": _json_safe(modification.get("StartTime"))}

    def apply_done(self, action: dict[str, Any]) -> bool:
        last = self._last_modification(action["volume_id"])
        if last is None or last.get("TargetVolumeType") != action["target_volume_type"]:
            volume = self._require_volume(action["volume_id"])
            return bool(volume["VolumeType"] == action["target_volume_type"])
        state = last.get("ModificationState", "completed")
        if state == "failed":
            raise ActionFailed(
                f"the modification of volume {action['volume_id']} to {action['target_volume_type']} failed: "
                f"{last.get('StatusMessage', 'no reason given')}"
            )
        return state in EFFECTIVE_STATES

    def verify(self, action: dict[str, Any]) -> VerificationResult:
        checks: list[str] = []
        failures: list[str] = []
        volume = self._require_volume(action["volume_id"])
        volume_id = action["volume_id"]
        kind = f"volume {volume_id} is {volume['VolumeType']}"
        (checks if volume["VolumeType"] == action["target_volume_type"] else failures).append(kind)
        iops = int(volume.get("Iops") or 0)
        (checks if iops >= action["target_iops"] else failures).append(
            f"volume {volume_id} has {iops:,} IOPS (needs {action['target_iops']:,})"
        )
        throughput = int(volume.get("Throughput") or 0)
        (checks if throughput >= action["target_throughput"] else failures).append(
            f"volume {volume_id} has {throughput} MiB/s (needs {action['target_throughput']})"
        )
        (checks if int(volume["Size"]) == action["size_gb"] else failures).append(
            f"volume {volume_id} is {volume['Size']} GiB"
        )
        return VerificationResult(passed=not failures, checks=checks, failures=failures)

    def measure_savings(self, recommendation: Recommendation, backup: dict[str, Any]) -> float | None:
        original = backup["original"]
        target = gp3_target(original["size_gb"], *self._requested(recommendation))
        savings, _ = self._savings_and_basis(
            recommendation, {"size_gb": original["size_gb"], "iops": target.iops, "throughput": target.throughput}
        )
        return savings

    @staticmethod
    def _requested(recommendation: Recommendation) -> tuple[int | None, int | None]:
        params = OptimizeStorageParameters.model_validate(recommendation.parameters)
        return params.iops, params.throughput

    # -- rollback --------------------------------------------------------------------------------

    @staticmethod
    def _matches(volume: VolumeTypeDef, original: dict[str, Any]) -> bool:
        if volume["VolumeType"] != original["volume_type"]:
            return False
        # gp2 performance follows from its size; provisioned types are compared on what they provision.
        if original["volume_type"] in ("gp3", "io1", "io2") and volume.get("Iops") != original["iops"]:
            return False
        return not (original["volume_type"] == "gp3" and volume.get("Throughput") != original["throughput"])

    def rollback(self, recommendation: Recommendation, backup: dict[str, Any] | None) -> dict[str, Any]:
        volume_id = recommendation.resource_id
        if not backup or "original" not in backup:
            # The backup step records before anything changes: without it, nothing was changed.
            return {"kind": self.kind, "volume_id": volume_id, "restored": False, "reason": "nothing was changed"}
        original = backup["original"]
        volume = self._require_volume(volume_id)
        result = {"kind": self.kind, "volume_id": volume_id, "target": original}
        if self._matches(volume, original):
            return {**result, "restored": False, "reason": "the volume still has its recorded settings"}
        last = self._last_modification(volume_id)
        if (
            last is not None
            and last.get("TargetVolumeType") == original["volume_type"]
            and last.get("ModificationState") in IN_PROGRESS_STATES
        ):
            return {**result, "restored": True, "already_requested": True}
        request: dict[str, Any] = {"VolumeId": volume_id, "VolumeType": original["volume_type"]}
        if original["volume_type"] in ("gp3", "io1", "io2") and original.get("iops"):
            request["Iops"] = original["iops"]
        if original["volume_type"] == "gp3" and original.get("throughput"):
            request["Throughput"] = original["throughput"]
        try:
            self.clients.ec2.modify_volume(**request)
        except ClientError as error:
            if error_code(error) in TOO_SOON_ERRORS:
                raise ActionFailed(self._too_soon(volume_id, original["volume_type"], last, error)) from error
            raise aws_failure("ModifyVolume", error) from error
        return {**result, "restored": True, "already_requested": False}

    def _too_soon(
        self, volume_id: str, volume_type: str, last: VolumeModificationTypeDef | None, error: ClientError
    ) -> str:
        when = "once its current modification has completed"
        if last is not None:
            when = f"after {self._next_allowed(last).isoformat()}"
            if last.get("ModificationState") in IN_PROGRESS_STATES:
                when += f" and once its current modification ('{last.get('ModificationState')}') has completed"
        return (
            f"AWS does not allow volume {volume_id} to be modified back to {volume_type} yet "
            f"({error_code(error)}: a volume can be modified once every six hours, after its last modification "
            f"has completed): ask for the rollback again {when}"
        )

    def rollback_done(self, rollback: dict[str, Any]) -> bool:
        if not rollback.get("restored"):
            return True
        volume_id = rollback["volume_id"]
        last = self._last_modification(volume_id)
        if last is not None and last.get("TargetVolumeType") == rollback["target"]["volume_type"]:
            if last.get("ModificationState") == "failed":
                raise ActionFailed(
                    f"the modification of volume {volume_id} back to {rollback['target']['volume_type']} failed: "
                    f"{last.get('StatusMessage', 'no reason given')}"
                )
            if last.get("ModificationState", "completed") not in EFFECTIVE_STATES:
                return False
        return bool(self._require_volume(volume_id)["VolumeType"] == rollback["target"]["volume_type"])


class BucketStrategy(StorageStrategy):
    """Lifecycle transitions and Intelligent-Tiering archive configurations on an S3 bucket."""

    kind = "s3_bucket"

    @property
    def s3(self) -> S3Client:
        return self.clients.s3

    # -- reading -------------------------------------------------------------------------------

    def _bucket_problem(self, bucket: str, region: str) -> str | None:
        """Why the bucket cannot be worked on, or None."""
        try:
            self.s3.head_bucket(Bucket=bucket)
        except ClientError as error:
            if error_code(error) in ("404", "NoSuchBucket", "NotFound"):
                return f"S3 bucket {bucket} does not exist"
            if error_code(error) in ("403", "AccessDenied", "Forbidden"):
                return f"S3 bucket {bucket} is not accessible to the engine (access denied): is it in this account?"
            raise aws_failure("HeadBucket", error) from error
        location = self.s3.get_bucket_location(Bucket=bucket).get("LocationConstraint") or "us-east-1"
        if location == "EU":  # the legacy name of eu-west-1
            location = "eu-west-1"
        if location != region:
            return f"S3 bucket {bucket} is in {location}, but the recommendation is for {region}"
        return None

    def _lifecycle(self, bucket: str) -> dict[str, Any] | None:
        """The bucket's lifecycle configuration as AWS returns it, or None when it has none."""
        try:
            answer = self.s3.get_bucket_lifecycle_configuration(Bucket=bucket)
        except ClientError as error:
            if error_code(error) == "NoSuchLifecycleConfiguration":
                return None
            raise aws_failure("GetBucketLifecycleConfiguration", error) from error
        return {
            "rules": _json_safe(answer.get("Rules", [])),
            "transition_default_minimum_object_size": answer.get("TransitionDefaultMinimumObjectSize"),
        }

    def _tiering_configurations(self, bucket: str) -> list[dict[str, Any]]:
        configurations: list[dict[str, Any]] = []
        request: dict[str, Any] = {"Bucket": bucket}
        while True:
            try:
                page = self.s3.list_bucket_intelligent_tiering_configurations(**request)
            except ClientError as error:
                raise aws_failure("ListBucketIntelligentTieringConfigurations", error) from error
            configurations += _json_safe(page.get("IntelligentTieringConfigurationList", []))
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

    def validate(
        self, recommendation: Recommendation, params: OptimizeStorageParameters
    ) -> tuple[list[str], list[str]]:
        bucket = recommendation.resource_id
        errors = rule_problems(params)
        if not params.transitions and not params.noncurrent_version_transitions and params.intelligent_tiering is None:
            errors.append(
                "nothing to add: give parameters.transitions, parameters.noncurrent_version_transitions or "
                "parameters.intelligent_tiering"
            )
        problem = self._bucket_problem(bucket, recommendation.region)
        if problem:
            return [problem, *errors], []
        warnings: list[str] = []
        lifecycle = self._lifecycle(bucket)
        existing_rules = (lifecycle or {}).get("rules", [])
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
        existing = [str(r.get("ID", "?")) for r in (lifecycle or {}).get("rules", [])]
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

    def backup(self, recommendation: Recommendation, execution_id: str) -> dict[str, Any]:
        bucket = recommendation.resource_id
        return {
            "kind": self.kind,
            "execution_id": execution_id,
            "bucket": bucket,
            "lifecycle": self._lifecycle(bucket),
            "intelligent_tiering": self._tiering_configurations(bucket),
            "recorded_at": utc_now().isoformat(),
        }

    def _put_lifecycle(self, bucket: str, rules: list[dict[str, Any]], minimum_object_size: str | None) -> None:
        request: dict[str, Any] = {"Bucket": bucket, "LifecycleConfiguration": {"Rules": rules}}
        if minimum_object_size:
            request["TransitionDefaultMinimumObjectSize"] = minimum_object_size
        try:
            self.s3.put_bucket_lifecycle_configuration(**request)
        except ClientError as error:
            raise aws_failure("PutBucketLifecycleConfiguration", error) from error

    def apply(
        self, recommendation: Recommendation, params: OptimizeStorageParameters, backup: dict[str, Any]
    ) -> dict[str, Any]:
        bucket = recommendation.resource_id
        rule = self.new_rule(params)
        tiering = self.new_tiering(params)
        action: dict[str, Any] = {"kind": self.kind, "bucket": bucket, "rule": rule, "intelligent_tiering": tiering}
        if rule is not None:
            # Merged with what the bucket has now: PutBucketLifecycleConfiguration replaces the whole
            # configuration, so every existing rule is sent again unchanged. A retry finds its rule there.
            current = self._lifecycle(bucket)
            rules = list((current or {}).get("rules", []))
            kept = [r for r in rules if r.get("ID") != rule["ID"]]
            if len(kept) != len(rules) and not _same_rule(next(r for r in rules if r.get("ID") == rule["ID"]), rule):
                raise ActionFailed(f"bucket {bucket} got another lifecycle rule '{rule['ID']}' meanwhile: not replaced")
            if len(kept) == len(rules):
                minimum = (current or {}).get("transition_default_minimum_object_size")
                self._put_lifecycle(bucket, [*kept, rule], minimum)
            action["kept_rules"] = [r.get("ID") for r in kept]
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

    def apply_done(self, action: dict[str, Any]) -> bool:
        # S3 configuration calls take effect when they answer.
        return True

    def verify(self, action: dict[str, Any]) -> VerificationResult:
        bucket = action["bucket"]
        checks: list[str] = []
        failures: list[str] = []
        if action.get("rule") is not None:
            rules = {r.get("ID"): r for r in (self._lifecycle(bucket) or {}).get("rules", [])}
            rule = action["rule"]
            found = rules.get(rule["ID"])
            ok = found is not None and _same_rule(found, rule)
            (checks if ok else failures).append(f"lifecycle rule '{rule['ID']}' is {'in place' if ok else 'missing'}")
            for kept in action.get("kept_rules", []):
                (checks if kept in rules else failures).append(
                    f"existing lifecycle rule '{kept}' is {'kept' if kept in rules else 'gone'}"
                )
        if action.get("intelligent_tiering") is not None:
            wanted = action["intelligent_tiering"]
            found = {c.get("Id"): c for c in self._tiering_configurations(bucket)}.get(wanted["Id"])
            ok = found is not None and _same_tiering(found, wanted)
            (checks if ok else failures).append(
                f"Intelligent-Tiering configuration '{wanted['Id']}' is {'in place' if ok else 'missing'}"
            )
        return VerificationResult(passed=not failures, checks=checks, failures=failures)

    def measure_savings(self, recommendation: Recommendation, backup: dict[str, Any]) -> float | None:
        return recommendation.estimated_monthly_savings

    # -- rollback --------------------------------------------------------------------------------

    def rollback(self, recommendation: Recommendation, backup: dict[str, Any] | None) -> dict[str, Any]:
        bucket = recommendation.resource_id
        if not backup or "lifecycle" not in backup:
            return {"kind": self.kind, "bucket": bucket, "restored": False, "reason": "nothing was changed"}
        params = OptimizeStorageParameters.model_validate(recommendation.parameters)
        recorded = backup["lifecycle"]
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
                self._put_lifecycle(bucket, recorded["rules"], recorded.get("transition_default_minimum_object_size"))
                restored.append(f"lifecycle configuration put back ({len(recorded['rules'])} rule(s))")
        recorded_tierings = {c["Id"]: c for c in backup.get("intelligent_tiering", [])}
        current_tierings = {c.get("Id"): c for c in self._tiering_configurations(bucket)}
        added = params.intelligent_tiering.id if params.intelligent_tiering else None
        try:
            if added and added in current_tierings and added not in recorded_tierings:
                self.s3.delete_bucket_intelligent_tiering_configuration(Bucket=bucket, Id=added)
                restored.append(f"Intelligent-Tiering configuration '{added}' deleted")
            for tiering_id, configuration in recorded_tierings.items():
                if not _same_tiering(current_tierings.get(tiering_id), configuration):
                    self.s3.put_bucket_intelligent_tiering_configuration(
                        Bucket=bucket, Id=tiering_id, IntelligentTieringConfiguration=configuration
                    )
                    restored.append(f"Intelligent-Tiering configuration '{tiering_id}' put back")
        except ClientError as error:
            raise aws_failure("Intelligent-Tiering configuration restore", error) from error
        return {
            "kind": self.kind,
            "bucket": bucket,
            "restored": bool(restored),
            "changes": restored,
            "lifecycle": recorded,
            "intelligent_tiering": list(recorded_tierings.values()),
            "added_intelligent_tiering": added,
        }

    def rollback_done(self, rollback: dict[str, Any]) -> bool:
        if "lifecycle" not in rollback:
            return True
        bucket = rollback["bucket"]
        if not _same_lifecycle(self._lifecycle(bucket), rollback["lifecycle"]):
            raise ActionFailed(
                f"the lifecycle configuration of bucket {bucket} is not the recorded one after the rollback"
            )
        current = {c.get("Id") for c in self._tiering_configurations(bucket)}
        recorded = {c["Id"] for c in rollback["intelligent_tiering"]}
        added = rollback.get("added_intelligent_tiering")
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


def rule_problems(params: OptimizeStorageParameters) -> list[str]:
    """What AWS would reject in the lifecycle rule and Intelligent-Tiering configuration asked for."""
    problems = _transition_problems(params.transitions, "transitions", "Days")
    problems += _transition_problems(
        params.noncurrent_version_transitions, "noncurrent_version_transitions", "NoncurrentDays"
    )
    archive = params.intelligent_tiering
    if archive is not None:
        if archive.archive_days is None and archive.deep_archive_days is None:
            problems.append("parameters.intelligent_tiering needs archive_days and/or deep_archive_days")
        low, high = ARCHIVE_ACCESS_DAYS
        if archive.archive_days is not None and not low <= archive.archive_days <= high:
            problems.append(
                f"intelligent_tiering.archive_days {archive.archive_days}: AWS allows {low} to {high} days for "
                "the Archive Access tier"
            )
        low, high = DEEP_ARCHIVE_ACCESS_DAYS
        if archive.deep_archive_days is not None and not low <= archive.deep_archive_days <= high:
            problems.append(
                f"intelligent_tiering.deep_archive_days {archive.deep_archive_days}: AWS allows {low} to {high} "
                "days for the Deep Archive Access tier"
            )
        if (
            archive.archive_days is not None
            and archive.deep_archive_days is not None
            and archive.deep_archive_days <= archive.archive_days
        ):
            problems.append(
                "intelligent_tiering.deep_archive_days must be more than archive_days: objects reach the deeper "
                "tier later"
            )
    return problems


def _transition_problems(transitions: list[LifecycleTransition], field: str, days_name: str) -> list[str]:
    problems = []
    for transition in transitions:
        if transition.storage_class in INFREQUENT_ACCESS_CLASSES and transition.days < INFREQUENT_ACCESS_MIN_DAYS:
            problems.append(
                f"{field}: {transition.storage_class} after {transition.days} days would be rejected by AWS: objects "
                f"must stay at least {INFREQUENT_ACCESS_MIN_DAYS} days in S3 before moving to STANDARD_IA or "
                f"ONEZONE_IA ({days_name} >= {INFREQUENT_ACCESS_MIN_DAYS})"
            )
    classes = [t.storage_class for t in transitions]
    duplicates = sorted({c for c in classes if classes.count(c) > 1})
    if duplicates:
        problems.append(f"{field}: one transition per storage class, but {', '.join(duplicates)} appear(s) twice")
    ordered = sorted(transitions, key=lambda t: t.days)
    for earlier, later in itertools.pairwise(ordered):
        if later.days == earlier.days or STORAGE_CLASS_ORDER.index(later.storage_class) <= STORAGE_CLASS_ORDER.index(
            earlier.storage_class
        ):
            problems.append(
                f"{field}: {earlier.storage_class} after {earlier.days} days then {later.storage_class} after "
                f"{later.days} days: S3 only moves objects to colder classes ({' → '.join(STORAGE_CLASS_ORDER)}), "
                "each at more days than the one before"
            )
        elif (
            earlier.storage_class in INFREQUENT_ACCESS_CLASSES
            and later.days - earlier.days < DAYS_IN_INFREQUENT_ACCESS_BEFORE_NEXT
        ):
            problems.append(
                f"{field}: {later.storage_class} after {later.days} days comes less than "
                f"{DAYS_IN_INFREQUENT_ACCESS_BEFORE_NEXT} days after {earlier.storage_class} (day {earlier.days}): "
                f"AWS requires objects to stay {DAYS_IN_INFREQUENT_ACCESS_BEFORE_NEXT} days in "
                f"{earlier.storage_class} first"
            )
    return problems


def minimum_duration_warnings(params: OptimizeStorageParameters) -> list[str]:
    """Transitions AWS accepts but bills for a minimum storage duration the objects will not stay."""
    warnings = []
    for field, transitions in (
        ("transitions", params.transitions),
        ("noncurrent_version_transitions", params.noncurrent_version_transitions),
    ):
        ordered = sorted(transitions, key=lambda t: t.days)
        for earlier, later in itertools.pairwise(ordered):
            minimum = MINIMUM_STORAGE_DAYS.get(earlier.storage_class)
            if minimum and later.days - earlier.days < minimum:
                warnings.append(
                    f"{field}: objects leave {earlier.storage_class} after {later.days - earlier.days} days, but "
                    f"are billed for its {minimum}-day minimum storage duration"
                )
    return warnings


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


def _same_lifecycle(current: dict[str, Any] | None, recorded: dict[str, Any] | None) -> bool:
    if current is None or recorded is None:
        return current is None and recorded is None
    # The default minimum object size is part of the configuration; compared where both name one.
    sizes = (
        current.get("transition_default_minimum_object_size"),
        recorded.get("transition_default_minimum_object_size"),
    )
    return bool(current["rules"] == recorded["rules"] and (None in sizes or sizes[0] == sizes[1]))


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
