"""delete_volume: an orphaned EBS volume deleted after a snapshot (kept), and one refused because it
was detached only yesterday (the CloudTrail history that says so comes from the local runtime's
emulation of LookupEvents, seeded as if the detach had happened a day ago)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from local_runtime.emulations.cloudtrail_volume_events import record_volume_event
from local_runtime.runtime import ACCOUNT_ID, REGION

if TYPE_CHECKING:
    from local_runtime.demo import Demo

ORDER = 70
TITLE = "delete_volume: unattached EBS volumes"
ZONE = f"{REGION}a"


def _create_volume(demo: Demo, name: str, size_gb: int, note: str) -> str:
    volume_id = str(
        demo.ec2.create_volume(
            AvailabilityZone=ZONE,
            Size=size_gb,
            VolumeType="gp3",
            Iops=3000,
            Throughput=125,
            TagSpecifications=[
                {"ResourceType": "volume", "Tags": [{"Key": "Name", "Value": name}, {"Key": "team", "Value": "data"}]}
            ],
        )["VolumeId"]
    )
    demo.names[volume_id] = name
    print(f"  seeded {name:<20} {volume_id}  gp3 {size_gb:>4} GiB  {note}")
    return volume_id


def _volume(demo: Demo, volume_id: str) -> dict[str, Any] | None:
    volumes: list[dict[str, Any]] = demo.ec2.describe_volumes(Filters=[{"Name": "volume-id", "Values": [volume_id]}])[
        "Volumes"
    ]
    return volumes[0] if volumes else None


def run(demo: Demo) -> None:
    orphan = _create_volume(demo, "orphaned-scratch", 500, "unattached, never attached in 90 days")
    recent = _create_volume(demo, "detached-yesterday", 100, "detached from an instance yesterday")
    yesterday = datetime.now(UTC) - timedelta(days=1)
    record_volume_event(
        ACCOUNT_ID, REGION, "AttachVolume", recent, "i-0b1d2e3f4a5b6c7d8", yesterday - timedelta(days=40)
    )
    record_volume_event(ACCOUNT_ID, REGION, "DetachVolume", recent, "i-0b1d2e3f4a5b6c7d8", yesterday)

    print("\n1. Execute: delete orphaned-scratch, auto-approved (a snapshot is kept)")
    execution = demo.run(demo.recommend("delete_volume", orphan, 38.0), auto_approve=True)
    demo.show_plan(execution)
    snapshot_id = (execution.get("backup") or {}).get("snapshot_id")
    snapshots = demo.ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"] if snapshot_id else []
    demo.record(
        "delete_volume: execute",
        execution,
        "completed",
        f"volume gone, snapshot {snapshot_id} {snapshots[0]['State'] if snapshots else 'missing'}, "
        f"saves ${execution['actual_savings']}/month",
        _volume(demo, orphan) is None and [s["State"] for s in snapshots] == ["completed"],
    )

    print("\n2. A refusal: delete detached-yesterday (min_days_detached=7)")
    execution = demo.run(demo.recommend("delete_volume", recent, 8.0, {"min_days_detached": 7}), auto_approve=True)
    print(f"     reason: {execution['error_message']}")
    still = _volume(demo, recent)
    demo.record(
        "delete_volume: detached yesterday",
        execution,
        "failed",
        f"volume still {still['State'] if still else 'missing'}",
        still is not None and still["State"] == "available",
    )
