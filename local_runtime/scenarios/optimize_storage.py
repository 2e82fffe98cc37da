"""optimize_storage: a gp2 volume moved to gp3, and a log bucket given lifecycle transitions merged with
the rule it already has, then rolled back by hand to exactly that rule."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from local_runtime.demo import Demo

ORDER = 60
TITLE = "optimize_storage: a gp2 volume to gp3, lifecycle transitions for a log bucket"

BUCKET = "acme-app-logs"
EXISTING_RULE = {"ID": "expire-tmp", "Filter": {"Prefix": "tmp/"}, "Status": "Enabled", "Expiration": {"Days": 7}}


def _lifecycle(s3: Any) -> list[dict[str, Any]] | None:
    try:
        rules: list[dict[str, Any]] = s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]
    except s3.exceptions.ClientError:
        return None
    return rules


def run(demo: Demo) -> None:
    s3 = demo.runtime.client("s3")
    volume_id = demo.ec2.create_volume(
        AvailabilityZone="us-east-1a",
        Size=500,
        VolumeType="gp2",
        TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": "Name", "Value": "reports-data"}]}],
    )["VolumeId"]
    print(f"  seeded {'reports-data':<20} {volume_id}  500 GiB gp2")
    s3.create_bucket(Bucket=BUCKET)
    for day in range(3):
        s3.put_object(Bucket=BUCKET, Key=f"logs/2026-11-0{day + 1}.log.gz", Body=b"x" * 300_000)
    s3.put_bucket_lifecycle_configuration(Bucket=BUCKET, LifecycleConfiguration={"Rules": [EXISTING_RULE]})
    print(f"  seeded {BUCKET:<20} S3 bucket of logs, with lifecycle rule 'expire-tmp'")

    print("\n1. Execute: reports-data from gp2 to gp3, auto-approved")
    execution = demo.run(demo.recommend("optimize_storage", volume_id, 10.0), auto_approve=True)
    demo.show_plan(execution)
    volume = demo.ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
    demo.record(
        "storage: gp2 → gp3",
        execution,
        "completed",
        f"volume {volume['VolumeType']}, {volume['Iops']} IOPS, {volume['Throughput']} MiB/s",
        (volume["VolumeType"], volume["Iops"], volume["Throughput"]) == ("gp3", 3000, 250),
    )

    print(f"\n2. Execute: transitions for {BUCKET}/logs/, merged with its existing rule")
    parameters = {
        "prefix": "logs/",
        "transitions": [{"days": 30, "storage_class": "STANDARD_IA"}, {"days": 120, "storage_class": "GLACIER"}],
    }
    execution = demo.run(demo.recommend("optimize_storage", BUCKET, 25.0, parameters), auto_approve=True)
    demo.show_plan(execution)
    rules = _lifecycle(s3) or []
    demo.record(
        "storage: bucket lifecycle",
        execution,
        "completed",
        "lifecycle rules " + ", ".join(r["ID"] for r in rules),
        [r["ID"] for r in rules] == ["expire-tmp", "cost-engine-storage-tiering"] and rules[0] == EXISTING_RULE,
    )

    print("\n3. Manual rollback of the bucket execution")
    demo.api.rollback(execution["execution_id"])
    execution = demo.api.wait_for(execution["execution_id"])
    rules = _lifecycle(s3) or []
    demo.record(
        "storage: bucket rollback",
        execution,
        "rolled_back",
        "lifecycle rules back to exactly " + ", ".join(r["ID"] for r in rules),
        rules == [EXISTING_RULE],
    )
