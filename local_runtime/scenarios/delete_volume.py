"""delete_volume: an orphaned EBS volume deleted after a snapshot (kept), and one refused because it
was detached only yesterday (the CloudTrail history that says so comes from the local runtime's
emulation of LookupEvents, seeded as if the detach had happened a day ago)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from cost_engine.service.measurements import schedule_name
from local_runtime.billing import age_completion, set_daily_costs, steady_costs
from local_runtime.emulations.cloudtrail_volume_events import record_volume_event
from local_runtime.emulations.scheduler_targets import fire_schedule
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


def eventually_scheduled(demo: Demo, execution_id: str, days: int) -> str:
    """The measurement schedule the execution's completion event has the trigger make (it is delivered
    asynchronously, as on AWS)."""
    name = schedule_name(execution_id, days)
    scheduler = demo.runtime.client("scheduler")
    deadline = time.monotonic() + 30
    while not scheduler.list_schedules(NamePrefix=name)["Schedules"]:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no schedule {name}")
        time.sleep(0.1)
    return name


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
        f"saves ${execution['expected_savings']}/month",
        _volume(demo, orphan) is None and [s["State"] for s in snapshots] == ["completed"],
    )

    print("\n   A week later: the saving measured from the bill (Cost Explorer: the volume's and its snapshot's cost)")
    # Time is not emulated: the completion is moved a week and a day back, and the emulated Cost
    # Explorer is given the daily cost of the volume and its kept snapshot around it: 500 GiB of gp3,
    # $40 a month until the day it was deleted, then the snapshot's $25 a month.
    change_day = age_completion(demo.runtime, execution["execution_id"], days=8)
    before, after = 40.0 * 12 / 365, 25.0 * 12 / 365
    set_daily_costs(
        steady_costs(change_day - timedelta(days=6), change_day + timedelta(days=7), before, after, change_day)
    )
    schedule = eventually_scheduled(demo, execution["execution_id"], days=6)
    fired = fire_schedule(demo.runtime, schedule)
    measurement = fired.response["Payload"]["measurement"]
    print(
        f"     {measurement['quality']}: ${measurement['before_cost']:.2f} over {measurement['days']} days before, "
        f"${measurement['after_cost']:.2f} after → ${measurement['monthly_savings']:.2f}/month measured, "
        f"${measurement['expected_savings']:.2f}/month expected: {measurement['accuracy_percent']}% accurate"
    )
    measured = demo.api.status(execution["execution_id"])
    demo.record(
        "delete_volume: savings measured",
        measured,
        "completed",
        f"actual ${measured['actual_savings']}/month ({measurement['quality']}, "
        f"{measurement['accuracy_percent']}% of expected)",
        measurement["quality"] == "complete" and measured["actual_savings"] == measurement["monthly_savings"],
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
