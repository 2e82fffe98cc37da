"""`delete_volume`: an unattached EBS volume is snapshotted with its settings recorded, deleted, verified.

Rollback creates a volume from that snapshot with the recorded type, size, IOPS, throughput, zone,
encryption and tags (a new volume id: EBS cannot bring back an id), or, when the original was never
deleted, leaves it as it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from pydantic import Field, StrictInt

from cost_engine.aws import aws_failure, error_code
from cost_engine.cost_scope import EC2_OTHER, CostScope, snapshot_arn
from cost_engine.ec2_instances import EXECUTION_TAG, RESTORED_FOR_TAG
from cost_engine.ec2_reads import find_volume, require_volume
from cost_engine.errors import ActionFailed
from cost_engine.executors.base import BaseExecutor, Permission, Polling, StepRecord
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
)
from cost_engine.prechecks import DryRunProbe
from cost_engine.pricing import price_catalog

if TYPE_CHECKING:
    from mypy_boto3_cloudtrail.type_defs import EventTypeDef
    from mypy_boto3_ec2.type_defs import VolumeTypeDef

SOURCE_VOLUME_TAG = "cost-engine:source-volume-id"
# CloudTrail's event history (LookupEvents) covers the last 90 days, with or without a trail.
CLOUDTRAIL_HISTORY_DAYS = 90
ATTACHMENT_EVENTS = frozenset({"AttachVolume", "DetachVolume"})
GONE_STATES = frozenset({"deleting", "deleted"})
# Only these types take Iops / Throughput when a volume is created (gp2's IOPS follow its size).
IOPS_TYPES = frozenset({"io1", "io2", "gp3"})
THROUGHPUT_TYPES = frozenset({"gp3"})

_VOLUME_ARN = "arn:{partition}:ec2:{region}:{account}:volume/*"
_SNAPSHOT_ARN = "arn:{partition}:ec2:{region}::snapshot/*"


class DeleteVolumeParameters(StrictModel):
    """Parameters of `delete_volume`."""

    min_days_detached: StrictInt = Field(
        default=7,
        ge=0,
        le=CLOUDTRAIL_HISTORY_DAYS,
        description="Refuse a volume attached to an instance within this many days (CloudTrail keeps 90 days).",
    )


class VolumeSettings(StepRecord):
    """What a volume recreated from the snapshot must have to be the same volume again."""

    volume_type: str
    size_gb: int
    iops: int | None = None
    throughput: int | None = None
    encrypted: bool = False
    kms_key_id: str | None = None
    availability_zone: str
    multi_attach_enabled: bool = False
    tags: dict[str, str] = Field(default_factory=dict)


class VolumeBackup(StepRecord):
    execution_id: str
    volume_id: str
    volume: VolumeSettings
    snapshot_id: str


class VolumeDeletion(StepRecord):
    deleted_volume_id: str
    state_before: str
    snapshot_id: str


class VolumeRestore(StepRecord):
    volume_id: str
    # False when the original was never deleted and is left as it is.
    recreated: bool
    from_snapshot_id: str | None = None
    replaces_volume_id: str | None = None


@dataclass(frozen=True)
class LastAttachment:
    event_name: str
    event_time: datetime
    instance_id: str


@register_executor
class DeleteVolumeExecutor(
    BaseExecutor[DeleteVolumeParameters, "VolumeTypeDef", VolumeBackup, VolumeDeletion, VolumeRestore]
):
    recommendation_type = RecommendationType.DELETE_VOLUME
    savings_method = "deletion: the volume's cost (EC2 - Other) before, against its kept snapshot's after"
    billing_service = EC2_OTHER
    flow = (
        "Validate (unattached, not attached recently) → (dry run → report) → approval → snapshot "
        "backup with the volume settings recorded → poll → delete → poll → verify → record; Catch "
        "→ rollback (recreate the volume from the snapshot)."
    )
    resource_name = "EBS volume"
    risk_level = RiskLevel.MEDIUM
    # The snapshot of a large volume can take hours.
    polling = Polling(first_seconds=15, longest_seconds=120, budget_seconds=4 * 3600)
    permissions = (
        # LookupEvents, like the EC2 Describe calls, supports no resource-level permissions.
        Permission(("ec2:DescribeVolumes", "ec2:DescribeSnapshots", "cloudtrail:LookupEvents")),
        Permission(("ec2:CreateSnapshot",), (_VOLUME_ARN, _SNAPSHOT_ARN)),
        Permission(
            ("ec2:CreateTags",),
            (_SNAPSHOT_ARN, _VOLUME_ARN),
            conditions={"StringEquals": {"ec2:CreateAction": ["CreateSnapshot", "CreateVolume"]}},
        ),
        Permission(("ec2:DeleteVolume",), (_VOLUME_ARN,)),
        # Creating a volume from a snapshot is authorized on both. A volume encrypted with a customer
        # managed KMS key also needs that key's policy to let this role use it through EC2.
        Permission(("ec2:CreateVolume",), (_VOLUME_ARN, _SNAPSHOT_ARN)),
    )

    # -- reading -------------------------------------------------------------------------------

    def _volume(self, volume_id: str) -> VolumeTypeDef | None:
        return find_volume(self.clients, volume_id)

    def _require_volume(self, volume_id: str) -> VolumeTypeDef:
        return require_volume(self.clients, volume_id)

    @staticmethod
    def _settings(volume: VolumeTypeDef) -> VolumeSettings:
        return VolumeSettings(
            volume_type=volume["VolumeType"],
            size_gb=int(volume["Size"]),
            iops=volume.get("Iops"),
            throughput=volume.get("Throughput"),
            encrypted=bool(volume.get("Encrypted", False)),
            kms_key_id=volume.get("KmsKeyId"),
            availability_zone=volume["AvailabilityZone"],
            multi_attach_enabled=bool(volume.get("MultiAttachEnabled", False)),
            # aws: tags belong to AWS and cannot be set by anyone else.
            tags={t["Key"]: t["Value"] for t in volume.get("Tags", []) if not t["Key"].startswith("aws:")},
        )

    def _last_attachment(self, volume_id: str) -> LastAttachment | None:
        """The newest successful AttachVolume/DetachVolume of the volume in CloudTrail's 90 days.

        A DetachVolume says when it was detached. An AttachVolume newer than any DetachVolume means it
        was detached without one (e.g. with its instance's termination), so it was attached at least
        until then. Either way, the event's time is the latest time the volume is known attached.
        """
        now = datetime.now(UTC)
        pages = self.clients.cloudtrail.get_paginator("lookup_events").paginate(
            LookupAttributes=[{"AttributeKey": "ResourceName", "AttributeValue": volume_id}],
            StartTime=now - timedelta(days=CLOUDTRAIL_HISTORY_DAYS),
            EndTime=now,
            PaginationConfig={"PageSize": 50},
        )
        try:
            for page in pages:
                # Newest first: the first attach/detach that succeeded is the one that counts.
                for event in page.get("Events", []):
                    if event.get("EventName") in ATTACHMENT_EVENTS and not _failed_call(event):
                        instances = [
                            r["ResourceName"]
                            for r in event.get("Resources", [])
                            if r.get("ResourceType") == "AWS::EC2::Instance"
                        ]
                        return LastAttachment(
                            event_name=event["EventName"],
                            event_time=event["EventTime"].astimezone(UTC),
                            instance_id=instances[0] if instances else "an instance",
                        )
        except ClientError as error:
            raise aws_failure("CloudTrail LookupEvents", error) from error
        return None

    # -- validate and plan ---------------------------------------------------------------------

    def dry_run_probes(self, recommendation: Recommendation) -> tuple[DryRunProbe, ...]:
        volume_id, ec2 = recommendation.resource_id, self.clients.ec2
        return (
            DryRunProbe("ec2:CreateSnapshot", lambda: ec2.create_snapshot(VolumeId=volume_id, DryRun=True)),
            DryRunProbe("ec2:DeleteVolume", lambda: ec2.delete_volume(VolumeId=volume_id, DryRun=True)),
        )

    def find(self, recommendation: Recommendation, params: DeleteVolumeParameters) -> VolumeTypeDef | None:
        return self._volume(recommendation.resource_id)

    def check(
        self, recommendation: Recommendation, params: DeleteVolumeParameters, volume: VolumeTypeDef
    ) -> ValidationResult:
        volume_id = recommendation.resource_id
        errors: list[str] = []
        warnings: list[str] = []
        state = volume["State"]
        attached_to = [a["InstanceId"] for a in volume.get("Attachments", []) if a.get("InstanceId")]
        if state == "in-use" or attached_to:
            errors.append(
                f"volume {volume_id} is attached to instance {', '.join(attached_to) or '(unknown)'}: only "
                "unattached volumes are deleted; detach it first if it really is unused"
            )
        elif state != "available":
            errors.append(f"volume {volume_id} is '{state}': only an available (unattached) volume is deleted")
        if not errors and params.min_days_detached > 0:
            last = self._last_attachment(volume_id)
            if last is None:
                warnings.append(
                    f"no AttachVolume or DetachVolume of {volume_id} in CloudTrail's {CLOUDTRAIL_HISTORY_DAYS} days "
                    f"of event history: treated as detached for at least {CLOUDTRAIL_HISTORY_DAYS} days"
                )
            else:
                age = datetime.now(UTC) - last.event_time
                if age < timedelta(days=params.min_days_detached):
                    when = last.event_time.strftime("%Y-%m-%d %H:%M UTC")
                    allowed_from = (last.event_time + timedelta(days=params.min_days_detached)).strftime(
                        "%Y-%m-%d %H:%M UTC"
                    )
                    errors.append(
                        f"volume {volume_id} was attached to instance {last.instance_id} until {when} "
                        f"({last.event_name} in CloudTrail, {age.days} day(s) ago), less than "
                        f"min_days_detached={params.min_days_detached} days: it may still be needed; retry after "
                        f"{allowed_from} or lower parameters.min_days_detached"
                    )
        if volume.get("Encrypted") and volume.get("KmsKeyId"):
            warnings.append(
                f"volume {volume_id} is encrypted with KMS key {volume['KmsKeyId']}: a rollback recreates it with "
                "that key, whose policy must let the engine use it through EC2"
            )
        return ValidationResult(
            valid=not errors,
            errors=errors,
            warnings=warnings,
            risk_level=self.risk_level,
            estimated_duration=5,
        )

    @staticmethod
    def _monthly_savings(settings: VolumeSettings) -> float | None:
        catalog = price_catalog()
        # Provisioned IOPS and gp3 throughput above the baseline are charged apart; the catalog has
        # only per-GB prices, so the saving is a lower bound for such volumes.
        storage = catalog.volume_monthly(settings.volume_type, settings.size_gb)
        if storage is None:
            return None
        return round(storage - catalog.snapshot_monthly(settings.size_gb), 2)

    def plan(self, recommendation: Recommendation, execution_id: str) -> ExecutionPlan:
        volume_id = recommendation.resource_id
        volume = self._require_volume(volume_id)
        settings = self._settings(volume)
        savings = self._monthly_savings(settings)
        basis = price_catalog().basis + ": the volume's storage less its snapshot's at full size"
        if savings is None:
            savings = recommendation.estimated_monthly_savings
            basis = f"no catalog price for {settings.volume_type} volumes: the recommendation's own estimate"
        performance = ", ".join(
            part
            for part in (
                f"{settings.iops} IOPS" if settings.iops and settings.volume_type in IOPS_TYPES else "",
                f"{settings.throughput} MiB/s" if settings.throughput else "",
            )
            if part
        )
        described = f"{settings.volume_type}, {settings.size_gb} GiB, {settings.availability_zone}"
        if performance:
            described += f", {performance}"
        return ExecutionPlan(
            summary=f"Delete unattached EBS volume {volume_id} ({described}) after a snapshot",
            actions=[
                f"Snapshot {volume_id} as 'cost-engine-{execution_id}' and record its type, size, IOPS, throughput, "
                "encryption, KMS key, tags and availability zone",
                "Wait until the snapshot is completed",
                f"Delete {volume_id}",
                "Wait until the volume is gone",
                "Verify the volume is gone and the snapshot is completed",
            ],
            backup=[f"EBS snapshot of {volume_id} ({settings.size_gb} GiB), kept after the deletion"],
            rollback_plan=RollbackPlan(
                execution_id=execution_id,
                rollback_steps=[
                    f"Create a volume from the snapshot in {settings.availability_zone} with the recorded type, "
                    "size, IOPS, throughput, encryption and tags (it gets a new volume id)",
                    "Wait until it is available",
                ],
                estimated_duration=5,
                risk_level=RiskLevel.LOW,
                requires_approval=False,
            ),
            estimated_monthly_savings=savings,
            savings_basis=basis,
            resource={"volume_id": volume_id, "state": volume["State"], **settings.model_dump(mode="json")},
        )

    # -- backup --------------------------------------------------------------------------------

    def _existing_snapshot(self, execution_id: str) -> str | None:
        snapshots = self.clients.ec2.describe_snapshots(
            OwnerIds=["self"], Filters=[{"Name": f"tag:{EXECUTION_TAG}", "Values": [execution_id]}]
        )["Snapshots"]
        usable = [s for s in snapshots if s.get("State") in ("pending", "completed")]
        return usable[0]["SnapshotId"] if usable else None

    def backup(self, recommendation: Recommendation, execution_id: str) -> VolumeBackup:
        volume_id = recommendation.resource_id
        volume = self._require_volume(volume_id)
        # A retried step finds the snapshot it already started instead of taking a second one.
        snapshot_id = self._existing_snapshot(execution_id)
        if snapshot_id is None:
            try:
                # Tagged as it is created: a retry finds it by the tag, and the permission to tag is
                # limited to tagging on creation.
                snapshot_id = self.clients.ec2.create_snapshot(
                    VolumeId=volume_id,
                    Description=f"Backup of {volume_id} before delete_volume ({execution_id})",
                    TagSpecifications=[
                        {
                            "ResourceType": "snapshot",
                            "Tags": [
                                {"Key": EXECUTION_TAG, "Value": execution_id},
                                {"Key": SOURCE_VOLUME_TAG, "Value": volume_id},
                                {"Key": "Name", "Value": f"cost-engine-{execution_id}"},
                            ],
                        }
                    ],
                )["SnapshotId"]
            except ClientError as error:
                raise aws_failure("CreateSnapshot", error) from error
        return VolumeBackup(
            execution_id=execution_id, volume_id=volume_id, volume=self._settings(volume), snapshot_id=snapshot_id
        )

    def _snapshot_state(self, snapshot_id: str) -> str:
        try:
            snapshots = self.clients.ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"]
        except ClientError as error:
            if error_code(error) == "InvalidSnapshot.NotFound":
                return "missing"
            raise aws_failure("DescribeSnapshots", error) from error
        return str(snapshots[0]["State"]) if snapshots else "missing"

    def backup_ready(self, recommendation: Recommendation, backup: VolumeBackup) -> bool:
        state = self._snapshot_state(backup.snapshot_id)
        if state in ("error", "missing"):
            raise ActionFailed(f"backup snapshot {backup.snapshot_id} is '{state}': the volume is left untouched")
        return state == "completed"

    # -- act -----------------------------------------------------------------------------------

    def apply(self, recommendation: Recommendation, backup: VolumeBackup) -> VolumeDeletion:
        volume_id = recommendation.resource_id
        volume = self._volume(volume_id)
        state = "gone" if volume is None else volume["State"]
        if volume is not None and state not in GONE_STATES:
            if volume.get("Attachments"):
                # Attached since it was validated: someone uses it after all.
                raise ActionFailed(
                    f"volume {volume_id} was attached to {volume['Attachments'][0].get('InstanceId')} after "
                    "validation: it is left in place"
                )
            try:
                self.clients.ec2.delete_volume(VolumeId=volume_id)
            except ClientError as error:
                if error_code(error) != "InvalidVolume.NotFound":
                    raise aws_failure("DeleteVolume", error) from error
        return VolumeDeletion(deleted_volume_id=volume_id, state_before=state, snapshot_id=backup.snapshot_id)

    def apply_done(self, recommendation: Recommendation, action: VolumeDeletion) -> bool:
        volume = self._volume(action.deleted_volume_id)
        return volume is None or volume["State"] == "deleted"

    def verify(self, recommendation: Recommendation, action: VolumeDeletion) -> VerificationResult:
        checks: list[str] = []
        failures: list[str] = []
        volume = self._volume(action.deleted_volume_id)
        state = "gone" if volume is None else volume["State"]
        (checks if state in ("gone", "deleted") else failures).append(f"volume {action.deleted_volume_id} is {state}")
        snapshot_state = self._snapshot_state(action.snapshot_id)
        (checks if snapshot_state == "completed" else failures).append(
            f"backup snapshot {action.snapshot_id} is {snapshot_state}"
        )
        return VerificationResult(passed=not failures, checks=checks, failures=failures)

    def cost_scope(self, recommendation: Recommendation, action: VolumeDeletion | None) -> CostScope:
        # The snapshot kept as the backup is billed from then on: its cost counts against the saving,
        # as the expected saving (the volume's price less the snapshot's) counts it.
        region, account = recommendation.region, recommendation.account_id
        kept = () if action is None else (snapshot_arn(region, account, action.snapshot_id),)
        resources = (recommendation.resource_id, *kept)
        return CostScope(self.savings_method, self.billing_service, resources, removes_resource=True)

    def expected_savings(self, recommendation: Recommendation, backup: VolumeBackup) -> float | None:
        savings = self._monthly_savings(backup.volume)
        return recommendation.estimated_monthly_savings if savings is None else savings

    # -- rollback ------------------------------------------------------------------------------

    def _restored_volume(self, execution_id: str) -> str | None:
        volumes = self.clients.ec2.describe_volumes(
            Filters=[
                {"Name": f"tag:{RESTORED_FOR_TAG}", "Values": [execution_id]},
                {"Name": "status", "Values": ["creating", "available", "in-use"]},
            ]
        )["Volumes"]
        return volumes[0]["VolumeId"] if volumes else None

    def rollback(
        self,
        recommendation: Recommendation,
        backup: VolumeBackup | None,
        action: VolumeDeletion | None,
    ) -> VolumeRestore:
        volume_id = recommendation.resource_id
        volume = self._volume(volume_id)
        if volume is not None and volume["State"] not in GONE_STATES:
            # Never deleted: the original is still there, as it was.
            return VolumeRestore(volume_id=volume_id, recreated=False)
        if backup is None:
            raise ActionFailed(f"volume {volume_id} is gone and no backup snapshot was recorded: nothing to restore")
        restored = self._restored_volume(backup.execution_id)
        if restored is None:
            restored = self._recreate(backup)
        return VolumeRestore(
            volume_id=restored, recreated=True, from_snapshot_id=backup.snapshot_id, replaces_volume_id=volume_id
        )

    def _recreate(self, backup: VolumeBackup) -> str:
        settings = backup.volume
        tags = [{"Key": k, "Value": v} for k, v in settings.tags.items()]
        tags += [
            {"Key": RESTORED_FOR_TAG, "Value": backup.execution_id},
            {"Key": SOURCE_VOLUME_TAG, "Value": backup.volume_id},
        ]
        request: dict[str, Any] = {
            "SnapshotId": backup.snapshot_id,
            "AvailabilityZone": settings.availability_zone,
            "VolumeType": settings.volume_type,
            "Size": settings.size_gb,
            "TagSpecifications": [{"ResourceType": "volume", "Tags": tags}],
        }
        if settings.volume_type in IOPS_TYPES and settings.iops:
            request["Iops"] = settings.iops
        if settings.volume_type in THROUGHPUT_TYPES and settings.throughput:
            request["Throughput"] = settings.throughput
        if settings.encrypted:
            request["Encrypted"] = True
            if settings.kms_key_id:
                request["KmsKeyId"] = settings.kms_key_id
        if settings.multi_attach_enabled:
            request["MultiAttachEnabled"] = True
        try:
            return str(self.clients.ec2.create_volume(**request)["VolumeId"])
        except ClientError as error:
            raise aws_failure("CreateVolume", error) from error

    def rollback_done(self, recommendation: Recommendation, rollback: VolumeRestore) -> bool:
        volume = self._require_volume(rollback.volume_id)
        state = volume["State"]
        if state in ("error", *GONE_STATES):
            raise ActionFailed(f"restored volume {rollback.volume_id} is {state}")
        return state in ("available", "in-use")


def _failed_call(event: EventTypeDef) -> bool:
    """A refused AttachVolume (e.g. a wrong zone) is in CloudTrail too, with an errorCode."""
    try:
        detail = json.loads(event.get("CloudTrailEvent") or "{}")
    except ValueError:
        return False
    return isinstance(detail, dict) and bool(detail.get("errorCode"))
