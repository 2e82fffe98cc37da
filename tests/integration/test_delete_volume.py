"""delete_volume end to end: the real state machine on the local runtime, driven through the API,
with the emulated EC2 (and the emulated CloudTrail history) checked afterwards."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cost_engine.pricing import price_catalog
from local_runtime.client import ApiClient, ApiError
from local_runtime.emulations import cloudtrail_volume_events
from local_runtime.runtime import ACCOUNT_ID, REGION, LocalRuntime
from tests.integration.conftest import COMPLETED, DRY_RUN, ROLLED_BACK, step_events

ZONE = f"{REGION}b"
RESTORED_FOR_TAG = "cost-engine:restored-for-execution"
EXECUTION_TAG = "cost-engine:execution-id"
# What a volume recreated from its snapshot must have in common with the original.
SETTINGS = ("VolumeType", "Size", "Iops", "Throughput", "Encrypted", "KmsKeyId", "AvailabilityZone")


@pytest.fixture
def create_volume(ec2: Any) -> Callable[..., str]:
    def create(**settings: Any) -> str:
        request: dict[str, Any] = {
            "AvailabilityZone": ZONE,
            "Size": 200,
            "VolumeType": "gp3",
            "Iops": 5000,
            "Throughput": 300,
            "Encrypted": True,
            "TagSpecifications": [
                {
                    "ResourceType": "volume",
                    "Tags": [{"Key": "Name", "Value": "orphaned-data"}, {"Key": "team", "Value": "bi"}],
                }
            ],
            **settings,
        }
        return str(ec2.create_volume(**{k: v for k, v in request.items() if v is not None})["VolumeId"])

    return create


@pytest.fixture
def delete(recommend: Callable[..., str]) -> Callable[..., str]:
    """Registers a delete_volume recommendation: delete(volume_id, **parameters)."""

    def register(volume_id: str, **parameters: Any) -> str:
        return recommend(volume_id, type="delete_volume", parameters=parameters, estimated_monthly_savings=14.0)

    return register


def run(api: ApiClient, recommendation_id: str, **options: Any) -> dict[str, Any]:
    return api.wait_for(api.execute(recommendation_id, **options)["execution_id"])


def volume(ec2: Any, volume_id: str) -> dict[str, Any] | None:
    volumes: list[dict[str, Any]] = ec2.describe_volumes(Filters=[{"Name": "volume-id", "Values": [volume_id]}])[
        "Volumes"
    ]
    return volumes[0] if volumes else None


def restored_volumes(ec2: Any, execution_id: str) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = ec2.describe_volumes(
        Filters=[{"Name": f"tag:{RESTORED_FOR_TAG}", "Values": [execution_id]}]
    )["Volumes"]
    return volumes


def snapshots(ec2: Any, execution_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = ec2.describe_snapshots(
        Filters=[{"Name": f"tag:{EXECUTION_TAG}", "Values": [execution_id]}]
    )["Snapshots"]
    return found


def tags_of(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def events(api: ApiClient, execution_id: str) -> list[str]:
    return [event["event_type"] for event in api.logs(execution_id)["events"]]


def test_dry_run_reports_the_plan_and_changes_nothing(
    api: ApiClient, ec2: Any, create_volume: Callable[..., str], delete: Callable[..., str]
) -> None:
    # Given an unattached volume and a recommendation to delete it
    volume_id = create_volume()

    # When a dry run is executed
    execution = run(api, delete(volume_id), dry_run=True)

    # Then it completes with a plan priced from the catalog, and nothing was touched
    assert execution["status"] == "completed"
    plan = execution["plan"]
    assert any(f"Delete {volume_id}" == action for action in plan["actions"])
    assert plan["rollback_plan"]["rollback_steps"]
    catalog = price_catalog()
    expected = (catalog.volume_monthly("gp3", 200) or 0) - catalog.snapshot_monthly(200)
    assert plan["estimated_monthly_savings"] == pytest.approx(expected)
    assert (volume(ec2, volume_id) or {}).get("State") == "available"
    assert snapshots(ec2, execution["execution_id"]) == []
    assert step_events(events(api, execution["execution_id"])) == DRY_RUN


def test_execution_deletes_the_volume_and_keeps_a_snapshot_with_its_settings(
    api: ApiClient, ec2: Any, create_volume: Callable[..., str], delete: Callable[..., str]
) -> None:
    # Given an unattached volume
    volume_id = create_volume()
    original = volume(ec2, volume_id) or {}

    # When its deletion is executed
    execution = run(api, delete(volume_id), auto_approve=True)

    # Then the volume is gone, a completed snapshot of it is kept, and its settings are recorded
    assert execution["status"] == "completed", execution["error_message"]
    assert volume(ec2, volume_id) is None
    kept = snapshots(ec2, execution["execution_id"])
    assert [(s["SnapshotId"], s["State"], s["VolumeId"]) for s in kept] == [
        (execution["backup"]["snapshot_id"], "completed", volume_id)
    ]
    recorded = execution["backup"]["volume"]
    assert (recorded["volume_type"], recorded["size_gb"], recorded["iops"], recorded["throughput"]) == (
        "gp3",
        200,
        5000,
        300,
    )
    assert recorded["kms_key_id"] == original["KmsKeyId"]
    assert recorded["availability_zone"] == ZONE
    assert recorded["tags"] == {"Name": "orphaned-data", "team": "bi"}
    assert execution["verification"]["passed"] is True
    assert execution["expected_savings"] == pytest.approx(execution["plan"]["estimated_monthly_savings"])
    assert step_events(events(api, execution["execution_id"]))[-len(COMPLETED) :] == COMPLETED


def assert_recreated_like(ec2: Any, execution_id: str, original: dict[str, Any]) -> None:
    restored = restored_volumes(ec2, execution_id)
    assert len(restored) == 1
    assert restored[0]["State"] == "available"
    assert {k: restored[0].get(k) for k in SETTINGS} == {k: original.get(k) for k in SETTINGS}
    assert {k: v for k, v in tags_of(restored[0]).items() if not k.startswith("cost-engine:")} == tags_of(original)


@pytest.mark.parametrize(
    ("step", "when", "deleted_before_failing"),
    [
        ("backup", "before", False),
        ("backup", "after", False),
        ("check_backup", "before", False),
        ("act", "before", False),
        ("act", "after", True),
        ("check_action", "before", True),
        ("verify", "before", True),
        ("record", "before", True),
    ],
    ids=lambda value: str(value),
)
def test_a_failure_in_any_acting_step_rolls_back_to_the_volume_as_it_was(
    api: ApiClient,
    ec2: Any,
    runtime: LocalRuntime,
    create_volume: Callable[..., str],
    delete: Callable[..., str],
    step: str,
    when: str,
    deleted_before_failing: bool,
) -> None:
    # Given an unattached volume, and a step that will fail
    volume_id = create_volume()
    original = volume(ec2, volume_id) or {}
    runtime.faults.inject(step, when=when)

    # When its deletion is executed
    execution = run(api, delete(volume_id), auto_approve=True)

    # Then it rolled back by itself, and says why
    assert execution["status"] == "rolled_back"
    assert "InjectedFault" in execution["error_message"]
    assert step_events(events(api, execution["execution_id"]))[-3:] == ROLLED_BACK[-3:]
    if deleted_before_failing:
        # and a volume with the original's settings and tags was created from the snapshot
        assert volume(ec2, volume_id) is None
        assert_recreated_like(ec2, execution["execution_id"], original)
    else:
        # and the original volume was never touched
        assert volume(ec2, volume_id) == original
        assert restored_volumes(ec2, execution["execution_id"]) == []


def test_manual_rollback_recreates_the_volume_from_its_snapshot(
    api: ApiClient, ec2: Any, create_volume: Callable[..., str], delete: Callable[..., str]
) -> None:
    # Given a completed deletion
    volume_id = create_volume(VolumeType="io2", Iops=3000, Throughput=None, Encrypted=False)
    original = volume(ec2, volume_id) or {}
    execution_id = run(api, delete(volume_id), auto_approve=True)["execution_id"]

    # When a rollback is asked for
    api.rollback(execution_id)
    execution = api.wait_for(execution_id, frozenset({"rolled_back", "rollback_failed"}))

    # Then the volume is back with its settings, under a new id, and the snapshot is kept
    assert execution["status"] == "rolled_back"
    assert execution["success"] is True
    assert_recreated_like(ec2, execution_id, original)
    assert execution["rollback"]["replaces_volume_id"] == volume_id
    assert len(snapshots(ec2, execution_id)) == 1
    with pytest.raises(ApiError) as refused:
        api.rollback(execution_id)
    assert refused.value.status_code == 409


def assert_refused_untouched(ec2: Any, execution: dict[str, Any], volume_id: str, before: dict[str, Any]) -> None:
    assert execution["status"] == "failed"
    assert execution["validation"]["valid"] is False
    assert volume(ec2, volume_id) == before
    assert snapshots(ec2, execution["execution_id"]) == []


def test_an_attached_volume_is_refused_naming_its_instance(
    api: ApiClient,
    ec2: Any,
    create_volume: Callable[..., str],
    delete: Callable[..., str],
    launch_instance: Callable[..., str],
) -> None:
    volume_id = create_volume()
    instance_id = launch_instance("t3.micro")  # in the network fixture's zone, as the volume
    ec2.attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device="/dev/sdf")
    before = volume(ec2, volume_id) or {}

    execution = run(api, delete(volume_id), auto_approve=True)

    assert f"attached to instance {instance_id}" in execution["error_message"]
    assert_refused_untouched(ec2, execution, volume_id, before)


def test_a_volume_detached_recently_is_refused_with_when_and_what_to_do(
    api: ApiClient,
    ec2: Any,
    create_volume: Callable[..., str],
    delete: Callable[..., str],
    launch_instance: Callable[..., str],
) -> None:
    # Given a volume detached through the EC2 API just now (CloudTrail records it)
    volume_id = create_volume()
    instance_id = launch_instance("t3.micro")
    ec2.attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device="/dev/sdf")
    ec2.detach_volume(VolumeId=volume_id, InstanceId=instance_id)
    before = volume(ec2, volume_id) or {}

    execution = run(api, delete(volume_id, min_days_detached=14), auto_approve=True)

    assert f"was attached to instance {instance_id} until" in execution["error_message"]
    assert "less than min_days_detached=14 days" in execution["error_message"]
    assert_refused_untouched(ec2, execution, volume_id, before)


def test_a_volume_detached_long_enough_ago_is_deleted(
    api: ApiClient, ec2: Any, create_volume: Callable[..., str], delete: Callable[..., str]
) -> None:
    volume_id = create_volume()
    cloudtrail_volume_events.record_volume_event(
        ACCOUNT_ID, REGION, "DetachVolume", volume_id, "i-0aaaabbbbccccdddd", datetime.now(UTC) - timedelta(days=8)
    )

    execution = run(api, delete(volume_id), auto_approve=True)

    assert execution["status"] == "completed", execution["error_message"]
    assert volume(ec2, volume_id) is None


def test_an_unknown_volume_is_refused(api: ApiClient, delete: Callable[..., str]) -> None:
    execution = run(api, delete("vol-0123456789abcdef0"), auto_approve=True)

    assert execution["status"] == "failed"
    assert "EBS volume vol-0123456789abcdef0 does not exist" in execution["error_message"]


def test_a_negative_min_days_detached_is_refused_when_registered(
    ec2: Any, create_volume: Callable[..., str], delete: Callable[..., str]
) -> None:
    volume_id = create_volume()

    with pytest.raises(ApiError) as refused:
        delete(volume_id, min_days_detached=-1)

    assert refused.value.status_code == 422
    assert "min_days_detached" in refused.value.body["message"]
    assert (volume(ec2, volume_id) or {}).get("State") == "available"
