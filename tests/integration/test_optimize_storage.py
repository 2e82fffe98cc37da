"""optimize_storage end to end: the real state machine on the local runtime, driven through the API, with
the emulated EC2 and S3 checked afterwards. An EBS volume goes gp2 → gp3; an S3 bucket gets lifecycle
transitions and an Intelligent-Tiering archive configuration merged with what it has."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from local_runtime.client import ApiClient
from local_runtime.emulations import ebs_modifications
from local_runtime.runtime import LocalRuntime
from tests.integration.conftest import APPROVED_BY_POLICY, COMPLETED, step_events

TYPE = "optimize_storage"
EXISTING_RULE = {"ID": "expire-tmp", "Filter": {"Prefix": "tmp/"}, "Status": "Enabled", "Expiration": {"Days": 7}}
TRANSITIONS = [{"days": 30, "storage_class": "STANDARD_IA"}, {"days": 120, "storage_class": "GLACIER"}]
BUCKET_PARAMETERS = {
    "prefix": "logs/",
    "transitions": TRANSITIONS,
    "intelligent_tiering": {"id": "logs-archive", "archive_days": 90},
}
ACTING_STEP_FAILURES = [
    ("backup", "after"),
    # Its backup is a record: no CheckBackup follows it, the change comes next.
    ("act", "before"),
    ("act", "after"),
    ("check_action", "before"),
    ("verify", "before"),
    ("record", "before"),
]
# The volume is modified by `act`: a failure from then on comes before AWS allows the next modification.
FAILURES_AFTER_THE_MODIFICATION = {
    ("act", "after"),
    ("check_action", "before"),
    ("verify", "before"),
    ("record", "before"),
}


@pytest.fixture
def s3(runtime: LocalRuntime) -> Any:
    return runtime.client("s3")


@pytest.fixture
def gp2_volume(ec2: Any) -> Callable[..., str]:
    def create(size_gb: int = 200, volume_type: str = "gp2", zone: str = "us-east-1a") -> str:
        return str(ec2.create_volume(AvailabilityZone=zone, Size=size_gb, VolumeType=volume_type)["VolumeId"])

    return create


def volume(ec2: Any, volume_id: str) -> dict[str, Any]:
    described: dict[str, Any] = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
    return described


def modifications(ec2: Any, volume_id: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = ec2.describe_volumes_modifications(VolumeIds=[volume_id])["VolumesModifications"]
    return listed


@pytest.fixture
def log_bucket(s3: Any) -> Callable[..., str]:
    """A bucket of large log objects, with or without an existing lifecycle rule."""

    def create(with_rule: bool = False) -> str:
        name = f"acme-logs-{uuid.uuid4().hex[:12]}"
        s3.create_bucket(Bucket=name)
        for number in range(3):
            s3.put_object(Bucket=name, Key=f"logs/{number}.log.gz", Body=b"x" * 200_000)
        if with_rule:
            s3.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": [EXISTING_RULE]})
        return name

    return create


def lifecycle(s3: Any, bucket: str) -> list[dict[str, Any]] | None:
    """The bucket's lifecycle rules, or None when it has no lifecycle configuration."""
    try:
        rules: list[dict[str, Any]] = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    except s3.exceptions.ClientError as error:
        if error.response["Error"]["Code"] != "NoSuchLifecycleConfiguration":
            raise
        return None
    return rules


def tiering_ids(s3: Any, bucket: str) -> list[str]:
    listed = s3.list_bucket_intelligent_tiering_configurations(Bucket=bucket)
    return [c["Id"] for c in listed.get("IntelligentTieringConfigurationList", [])]


def run(api: ApiClient, recommendation_id: str, **options: Any) -> dict[str, Any]:
    return api.wait_for(api.execute(recommendation_id, **options)["execution_id"])


def event_types(api: ApiClient, execution_id: str) -> list[str]:
    return [event["event_type"] for event in api.logs(execution_id)["events"]]


# -- EBS volume -------------------------------------------------------------------------------------------


def test_volume_dry_run_reports_the_plan_and_changes_nothing(
    api: ApiClient, ec2: Any, gp2_volume: Callable[..., str], recommend: Callable[..., str]
) -> None:
    volume_id = gp2_volume(200)

    execution = run(api, recommend(volume_id, type=TYPE, estimated_monthly_savings=3.0), dry_run=True)

    assert execution["status"] == "completed"
    plan = execution["plan"]
    assert plan["resource"]["target"] == {"volume_type": "gp3", "iops": 3000, "throughput": 250}
    assert any("Modify" in action and "gp3" in action for action in plan["actions"])
    assert plan["estimated_monthly_savings"] == 3.0
    assert "no catalog price for gp3 throughput" in plan["savings_basis"]
    assert volume(ec2, volume_id)["VolumeType"] == "gp2"
    assert modifications(ec2, volume_id) == []


def test_execution_moves_the_attached_volume_to_gp3_with_at_least_its_performance(
    api: ApiClient,
    ec2: Any,
    gp2_volume: Callable[..., str],
    launch_instance: Callable[..., str],
    recommend: Callable[..., str],
) -> None:
    # Given a 1500 GiB gp2 volume (4,500 IOPS) in use by an instance: gp3 needs no detaching
    instance_id = launch_instance("m5.large")
    zone = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["Placement"]
    volume_id = gp2_volume(1500, zone=zone["AvailabilityZone"])
    ec2.attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device="/dev/sdf")

    execution = run(api, recommend(volume_id, type=TYPE), auto_approve=True)

    assert execution["status"] == "completed", execution["error_message"]
    described = volume(ec2, volume_id)
    assert (described["VolumeType"], described["Iops"], described["Throughput"], described["Size"]) == (
        "gp3",
        4500,
        250,
        1500,
    )
    assert execution["backup"]["original"]["volume_type"] == "gp2"
    assert execution["verification"]["passed"] is True
    assert [m["TargetVolumeType"] for m in modifications(ec2, volume_id)] == ["gp3"]
    assert step_events(event_types(api, execution["execution_id"])) == [*APPROVED_BY_POLICY, *COMPLETED]


@pytest.mark.parametrize(("step", "when"), ACTING_STEP_FAILURES, ids=[f"{s}-{w}" for s, w in ACTING_STEP_FAILURES])
def test_a_failing_step_returns_the_volume_to_gp2_at_once_or_once_aws_allows_it(
    api: ApiClient,
    ec2: Any,
    runtime: LocalRuntime,
    gp2_volume: Callable[..., str],
    recommend: Callable[..., str],
    step: str,
    when: str,
) -> None:
    # Given a gp2 volume and a step that will fail
    volume_id = gp2_volume(300)
    runtime.faults.inject(step, when=when)

    # When it is executed
    execution = run(api, recommend(volume_id, type=TYPE), auto_approve=True)
    execution_id = execution["execution_id"]

    if (step, when) not in FAILURES_AFTER_THE_MODIFICATION:
        # Then nothing had been modified: the rollback had nothing to undo
        assert execution["status"] == "rolled_back"
        assert modifications(ec2, volume_id) == []
    else:
        # Then the volume is gp3 and AWS refuses its next modification for six hours: the rollback
        # failed and says when to ask again
        assert execution["status"] == "rollback_failed"
        assert f"AWS does not allow volume {volume_id} to be modified back to gp2 yet" in execution["error_message"]
        assert "ask for the rollback again after" in execution["error_message"]
        assert volume(ec2, volume_id)["VolumeType"] == "gp3"
        assert execution["rollback_available"] is True
        # and once six hours have passed, a manual rollback returns it to gp2
        ebs_modifications.elapse(volume_id, hours=6)
        api.rollback(execution_id)
        execution = api.wait_for(execution_id, frozenset({"rolled_back", "rollback_failed"}))
        assert execution["status"] == "rolled_back", execution["error_message"]
    assert volume(ec2, volume_id)["VolumeType"] == "gp2"
    assert volume(ec2, volume_id)["Size"] == 300
    assert "InjectedFault" in (execution["error_message"] or "")


def test_manual_rollback_of_a_completed_volume_change_waits_for_aws_then_restores_gp2(
    api: ApiClient, ec2: Any, gp2_volume: Callable[..., str], recommend: Callable[..., str]
) -> None:
    volume_id = gp2_volume(100)
    execution_id = run(api, recommend(volume_id, type=TYPE), auto_approve=True)["execution_id"]

    # A rollback asked for at once fails: AWS allows the next modification six hours later
    api.rollback(execution_id)
    too_soon = api.wait_for(execution_id, frozenset({"rolled_back", "rollback_failed"}))
    ebs_modifications.elapse(volume_id, hours=6)
    api.rollback(execution_id)
    restored = api.wait_for(execution_id, frozenset({"rolled_back", "rollback_failed"}))

    assert too_soon["status"] == "rollback_failed"
    assert "ask for the rollback again after" in too_soon["error_message"]
    assert restored["status"] == "rolled_back"
    assert restored["rollback_executed"] is True
    assert volume(ec2, volume_id)["VolumeType"] == "gp2"


@pytest.mark.parametrize(
    ("prepare", "reason"),
    [
        ("already_gp3", "is already gp3: there is nothing to change"),
        ("modified_recently", "AWS allows one modification of a volume every six hours, so this can be done from"),
        ("unknown", "does not exist in us-east-1"),
    ],
)
def test_a_refused_volume_is_not_touched(
    api: ApiClient, ec2: Any, gp2_volume: Callable[..., str], recommend: Callable[..., str], prepare: str, reason: str
) -> None:
    volume_id = "vol-0123456789abcdef0"
    if prepare == "already_gp3":
        volume_id = gp2_volume(100, "gp3")
    elif prepare == "modified_recently":
        volume_id = gp2_volume(100)
        ec2.modify_volume(VolumeId=volume_id, Size=120)
        ebs_modifications.elapse(volume_id, hours=1)
    before = [] if prepare == "unknown" else modifications(ec2, volume_id)

    execution = run(api, recommend(volume_id, type=TYPE), auto_approve=True)

    assert execution["status"] == "failed"
    assert reason in execution["error_message"]
    assert execution["backup"] is None
    if prepare != "unknown":
        assert modifications(ec2, volume_id) == before


# -- S3 bucket ---------------------------------------------------------------------------------------------


def test_bucket_dry_run_reports_the_plan_and_changes_nothing(
    api: ApiClient, s3: Any, log_bucket: Callable[..., str], recommend: Callable[..., str]
) -> None:
    bucket = log_bucket(with_rule=True)

    execution = run(api, recommend(bucket, type=TYPE, parameters=BUCKET_PARAMETERS), dry_run=True)

    assert execution["status"] == "completed"
    assert "no S3 storage-class prices" in execution["plan"]["savings_basis"]
    assert lifecycle(s3, bucket) == [EXISTING_RULE]
    assert tiering_ids(s3, bucket) == []


def test_execution_merges_the_transitions_with_the_existing_rule_and_adds_the_archive_configuration(
    api: ApiClient, s3: Any, log_bucket: Callable[..., str], recommend: Callable[..., str]
) -> None:
    bucket = log_bucket(with_rule=True)

    execution = run(api, recommend(bucket, type=TYPE, parameters=BUCKET_PARAMETERS), auto_approve=True)

    assert execution["status"] == "completed", execution["error_message"]
    rules = lifecycle(s3, bucket)
    assert rules is not None
    assert rules[0] == EXISTING_RULE
    assert rules[1]["ID"] == "cost-engine-storage-tiering"
    assert rules[1]["Filter"] == {"Prefix": "logs/"}
    assert rules[1]["Transitions"] == [
        {"Days": 30, "StorageClass": "STANDARD_IA"},
        {"Days": 120, "StorageClass": "GLACIER"},
    ]
    assert tiering_ids(s3, bucket) == ["logs-archive"]
    assert execution["backup"]["lifecycle"]["rules"] == [EXISTING_RULE]
    assert execution["expected_savings"] == 70.0  # the recommendation's estimate: no S3 prices in the catalog


@pytest.mark.parametrize(("step", "when"), ACTING_STEP_FAILURES, ids=[f"{s}-{w}" for s, w in ACTING_STEP_FAILURES])
@pytest.mark.parametrize("with_rule", [False, True], ids=["no-lifecycle-before", "one-rule-before"])
def test_a_failing_step_restores_the_exact_previous_bucket_configuration(
    api: ApiClient,
    s3: Any,
    runtime: LocalRuntime,
    log_bucket: Callable[..., str],
    recommend: Callable[..., str],
    step: str,
    when: str,
    with_rule: bool,
) -> None:
    bucket = log_bucket(with_rule=with_rule)
    before = lifecycle(s3, bucket)
    runtime.faults.inject(step, when=when)

    execution = run(api, recommend(bucket, type=TYPE, parameters=BUCKET_PARAMETERS), auto_approve=True)

    assert execution["status"] == "rolled_back", execution["error_message"]
    assert "InjectedFault" in execution["error_message"]
    assert lifecycle(s3, bucket) == before  # including "no lifecycle configuration"
    assert tiering_ids(s3, bucket) == []


def test_manual_rollback_puts_back_exactly_the_rule_the_bucket_had(
    api: ApiClient, s3: Any, log_bucket: Callable[..., str], recommend: Callable[..., str]
) -> None:
    bucket = log_bucket(with_rule=True)
    execution_id = run(api, recommend(bucket, type=TYPE, parameters=BUCKET_PARAMETERS), auto_approve=True)[
        "execution_id"
    ]

    api.rollback(execution_id)
    execution = api.wait_for(execution_id, frozenset({"rolled_back", "rollback_failed"}))

    assert execution["status"] == "rolled_back", execution["error_message"]
    assert lifecycle(s3, bucket) == [EXISTING_RULE]
    assert tiering_ids(s3, bucket) == []


@pytest.mark.parametrize(
    ("parameters", "reason"),
    [
        (
            {"transitions": [{"days": 7, "storage_class": "STANDARD_IA"}]},
            "STANDARD_IA after 7 days would be rejected by AWS",
        ),
        ({"rule_id": "expire-tmp", "transitions": TRANSITIONS}, "already has a lifecycle rule 'expire-tmp'"),
    ],
    ids=["rule-aws-would-reject", "conflicting-rule-id"],
)
def test_a_refused_bucket_change_touches_nothing(
    api: ApiClient,
    s3: Any,
    log_bucket: Callable[..., str],
    recommend: Callable[..., str],
    parameters: dict[str, Any],
    reason: str,
) -> None:
    bucket = log_bucket(with_rule=True)

    execution = run(api, recommend(bucket, type=TYPE, parameters=parameters), auto_approve=True)

    assert execution["status"] == "failed"
    assert reason in execution["error_message"]
    assert lifecycle(s3, bucket) == [EXISTING_RULE]


def test_an_unknown_bucket_is_refused(api: ApiClient, recommend: Callable[..., str]) -> None:
    execution = run(
        api, recommend("acme-no-such-bucket", type=TYPE, parameters={"transitions": TRANSITIONS}), auto_approve=True
    )

    assert execution["status"] == "failed"
    assert "S3 bucket acme-no-such-bucket does not exist" in execution["error_message"]
