"""EBS: gp2 → gp3 with at least the performance the gp2 volume could deliver."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from botocore.exceptions import ClientError

from cost_engine.aws import aws_failure, error_code
from cost_engine.ec2_reads import find_volume, require_volume
from cost_engine.errors import ActionFailed
from cost_engine.executors.base import StepRecord
from cost_engine.executors.optimize_storage.parameters import OptimizeStorageParameters
from cost_engine.executors.optimize_storage.strategy import StorageStrategy, as_datetime, json_safe
from cost_engine.models import (
    ExecutionPlan,
    Recommendation,
    RiskLevel,
    RollbackPlan,
    VerificationResult,
    utc_now,
)
from cost_engine.pricing import price_catalog

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import VolumeModificationTypeDef, VolumeTypeDef


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


# -- what the steps record -------------------------------------------------------------------------


class EbsSettings(StepRecord):
    """A volume's type and performance: recorded before the change, and what a rollback puts back."""

    volume_type: str
    size_gb: int
    iops: int | None
    throughput: int | None


class EbsBackup(StepRecord):
    """The volume's settings before the change (a type change keeps the data in place: no snapshot)."""

    kind: Literal["ebs_volume"]
    execution_id: str
    volume_id: str
    original: EbsSettings
    recorded_at: str


class EbsChange(StepRecord):
    """The modification to gp3 asked for, or found already asked for by an earlier try."""

    kind: Literal["ebs_volume"]
    volume_id: str
    target_volume_type: str
    target_iops: int
    target_throughput: int
    size_gb: int
    already_requested: bool
    # When AWS started the modification this step asked for (not recorded when it was already asked for).
    started_at: str | None = None


class EbsRestore(StepRecord):
    """What the rollback did: the modification back to the recorded settings (`target`), or why none."""

    kind: Literal["ebs_volume"]
    volume_id: str
    # The recorded settings; not recorded when there was no backup (nothing was changed).
    target: EbsSettings | None = None
    restored: bool
    reason: str | None = None
    already_requested: bool | None = None


class VolumeStrategy(StorageStrategy["VolumeTypeDef", EbsBackup, EbsChange, EbsRestore]):
    """gp2 → gp3 on an EBS volume."""

    kind: ClassVar[Literal["ebs_volume"]] = "ebs_volume"

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
    def _settings(volume: VolumeTypeDef) -> EbsSettings:
        return EbsSettings(
            volume_type=volume["VolumeType"],
            size_gb=int(volume["Size"]),
            iops=volume.get("Iops"),
            throughput=volume.get("Throughput"),
        )

    @staticmethod
    def _next_allowed(modification: VolumeModificationTypeDef) -> datetime:
        return as_datetime(modification["StartTime"]) + MODIFICATION_INTERVAL

    # -- validate and plan ---------------------------------------------------------------------

    def find(self, recommendation: Recommendation) -> VolumeTypeDef | None:
        return self._volume(recommendation.resource_id)

    def not_found(self, recommendation: Recommendation) -> str:
        return f"EBS volume {recommendation.resource_id} does not exist in {recommendation.region}"

    def check(
        self, recommendation: Recommendation, params: OptimizeStorageParameters, volume: VolumeTypeDef
    ) -> tuple[list[str], list[str]]:
        volume_id = recommendation.resource_id
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
            started = as_datetime(last["StartTime"])
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

    def _savings_and_basis(
        self, recommendation: Recommendation, size_gb: int, target: Gp3Target
    ) -> tuple[float | None, str]:
        savings, basis = self._monthly_savings(size_gb, target.iops, target.throughput)
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
        savings, basis = self._savings_and_basis(recommendation, size_gb, target)
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

    def backup(self, recommendation: Recommendation, execution_id: str) -> EbsBackup:
        volume = self._require_volume(recommendation.resource_id)
        return EbsBackup(
            kind=self.kind,
            execution_id=execution_id,
            volume_id=recommendation.resource_id,
            original=self._settings(volume),
            recorded_at=utc_now().isoformat(),
        )

    def apply(self, recommendation: Recommendation, params: OptimizeStorageParameters, backup: EbsBackup) -> EbsChange:
        volume_id = recommendation.resource_id
        volume = self._require_volume(volume_id)
        target = gp3_target(int(volume["Size"]), params.iops, params.throughput)

        def change(already_requested: bool) -> EbsChange:
            return EbsChange(
                kind=self.kind,
                volume_id=volume_id,
                target_volume_type=params.target_volume_type,
                target_iops=target.iops,
                target_throughput=target.throughput,
                size_gb=int(volume["Size"]),
                already_requested=already_requested,
            )

        last = self._last_modification(volume_id)
        # A retried step finds the modification it already started, instead of asking for a second one
        # (which AWS would refuse for six hours anyway).
        if volume["VolumeType"] == params.target_volume_type or (
            last is not None
            and last.get("TargetVolumeType") == params.target_volume_type
            and last.get("ModificationState") != "failed"
        ):
            return change(already_requested=True)
        try:
            modification = self.clients.ec2.modify_volume(
                VolumeId=volume_id,
                VolumeType=params.target_volume_type,
                Iops=target.iops,
                Throughput=target.throughput,
            )["VolumeModification"]
        except ClientError as error:
            raise aws_failure("ModifyVolume", error) from error
        return change(already_requested=False).model_copy(
            update={"started_at": json_safe(modification.get("StartTime"))}
        )

    def apply_done(self, action: EbsChange) -> bool:
        last = self._last_modification(action.volume_id)
        if last is None or last.get("TargetVolumeType") != action.target_volume_type:
            volume = self._require_volume(action.volume_id)
            return bool(volume["VolumeType"] == action.target_volume_type)
        state = last.get("ModificationState", "completed")
        if state == "failed":
            raise ActionFailed(
                f"the modification of volume {action.volume_id} to {action.target_volume_type} failed: "
                f"{last.get('StatusMessage', 'no reason given')}"
            )
        return state in EFFECTIVE_STATES

    def verify(self, action: EbsChange) -> VerificationResult:
        checks: list[str] = []
        failures: list[str] = []
        volume = self._require_volume(action.volume_id)
        volume_id = action.volume_id
        kind = f"volume {volume_id} is {volume['VolumeType']}"
        (checks if volume["VolumeType"] == action.target_volume_type else failures).append(kind)
        iops = int(volume.get("Iops") or 0)
        (checks if iops >= action.target_iops else failures).append(
            f"volume {volume_id} has {iops:,} IOPS (needs {action.target_iops:,})"
        )
        throughput = int(volume.get("Throughput") or 0)
        (checks if throughput >= action.target_throughput else failures).append(
            f"volume {volume_id} has {throughput} MiB/s (needs {action.target_throughput})"
        )
        (checks if int(volume["Size"]) == action.size_gb else failures).append(
            f"volume {volume_id} is {volume['Size']} GiB"
        )
        return VerificationResult(passed=not failures, checks=checks, failures=failures)

    def expected_savings(
        self, recommendation: Recommendation, params: OptimizeStorageParameters, backup: EbsBackup
    ) -> float | None:
        size_gb = backup.original.size_gb
        savings, _ = self._savings_and_basis(
            recommendation, size_gb, gp3_target(size_gb, params.iops, params.throughput)
        )
        return savings

    # -- rollback --------------------------------------------------------------------------------

    @staticmethod
    def _matches(volume: VolumeTypeDef, original: EbsSettings) -> bool:
        if volume["VolumeType"] != original.volume_type:
            return False
        # gp2 performance follows from its size; provisioned types are compared on what they provision.
        if original.volume_type in ("gp3", "io1", "io2") and volume.get("Iops") != original.iops:
            return False
        return not (original.volume_type == "gp3" and volume.get("Throughput") != original.throughput)

    def rollback(
        self, recommendation: Recommendation, params: OptimizeStorageParameters, backup: EbsBackup | None
    ) -> EbsRestore:
        volume_id = recommendation.resource_id
        if backup is None:
            # The backup step records before anything changes: without it, nothing was changed.
            return EbsRestore(kind=self.kind, volume_id=volume_id, restored=False, reason="nothing was changed")
        original = backup.original
        volume = self._require_volume(volume_id)
        if self._matches(volume, original):
            return EbsRestore(
                kind=self.kind,
                volume_id=volume_id,
                target=original,
                restored=False,
                reason="the volume still has its recorded settings",
            )
        last = self._last_modification(volume_id)
        if (
            last is not None
            and last.get("TargetVolumeType") == original.volume_type
            and last.get("ModificationState") in IN_PROGRESS_STATES
        ):
            return EbsRestore(
                kind=self.kind, volume_id=volume_id, target=original, restored=True, already_requested=True
            )
        request: dict[str, Any] = {"VolumeId": volume_id, "VolumeType": original.volume_type}
        if original.volume_type in ("gp3", "io1", "io2") and original.iops:
            request["Iops"] = original.iops
        if original.volume_type == "gp3" and original.throughput:
            request["Throughput"] = original.throughput
        try:
            self.clients.ec2.modify_volume(**request)
        except ClientError as error:
            if error_code(error) in TOO_SOON_ERRORS:
                raise ActionFailed(self._too_soon(volume_id, original.volume_type, last, error)) from error
            raise aws_failure("ModifyVolume", error) from error
        return EbsRestore(kind=self.kind, volume_id=volume_id, target=original, restored=True, already_requested=False)

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

    def rollback_done(self, rollback: EbsRestore) -> bool:
        if not rollback.restored:
            return True
        volume_id = rollback.volume_id
        if rollback.target is None:
            # A modification back is recorded with its target: this record is not one this code writes.
            raise ActionFailed(f"the rollback of volume {volume_id} recorded no settings to restore")
        volume_type = rollback.target.volume_type
        last = self._last_modification(volume_id)
        if last is not None and last.get("TargetVolumeType") == volume_type:
            if last.get("ModificationState") == "failed":
                raise ActionFailed(
                    f"the modification of volume {volume_id} back to {volume_type} failed: "
                    f"{last.get('StatusMessage', 'no reason given')}"
                )
            if last.get("ModificationState", "completed") not in EFFECTIVE_STATES:
                return False
        return bool(self._require_volume(volume_id)["VolumeType"] == volume_type)
