"""One local runtime for the whole integration session: moto's server, the real ASL and handlers."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

import pytest

import local_runtime  # noqa: F401  (puts the shared package on the path)
from local_runtime.client import ApiClient
from local_runtime.runtime import ACCOUNT_ID, REGION, LocalRuntime, free_port

# A customer whose policy lets nothing be approved automatically (see test_approval_policy.py);
# every other customer has the built-in defaults.
MANUAL_ONLY_CUSTOMER = "cust-manual-only"
APPROVAL_POLICY: dict[str, Any] = {"customers": {MANUAL_ONLY_CUSTOMER: {"auto_approve_types": []}}}
# Two customers and API keys scoped to them (test_authorization.py); the default key keeps every
# role for every customer, as `make serve`'s does.
CUSTOMER_A = "cust-authz-a"
CUSTOMER_B = "cust-authz-b"
API_KEYS: dict[str, dict[str, Any]] = {
    "viewer-a-key": {"name": "viewer-a", "customers": {CUSTOMER_A: ["viewer"]}},
    "operator-a-key": {"name": "operator-a", "customers": {CUSTOMER_A: ["operator"]}},
    "approver-a-key": {"name": "approver-a", "customers": {CUSTOMER_A: ["approver"]}},
    "lead-a-key": {"name": "lead-a", "customers": {CUSTOMER_A: ["operator", "approver"]}},
    "operator-b-key": {"name": "operator-b", "customers": {CUSTOMER_B: ["operator", "approver"]}},
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The load test first: it is the longest file by far, so one worker starts on it while the
    other works through the rest (make test runs the suite on two)."""
    items.sort(key=lambda item: item.path.name != "test_load.py")


@pytest.fixture(scope="session")
def runtime() -> Iterator[LocalRuntime]:
    with LocalRuntime(
        aws_port=free_port(),
        api_port=free_port(),
        approval_policy=APPROVAL_POLICY,
        api_keys=API_KEYS,
        approver_emails=("finops@example.com", "lead@example.com"),
        # Tests change the same resources again and again (an RI purchase's resource is its instance
        # type); test_limits.py proves the cooldown with a value of its own.
        resource_cooldown_seconds=0,
        # Tests sweep when they mean to (runtime.sweep(), or a faster schedule for one test): a sweep
        # at a random moment would settle another test's stopped run before its own reconciliation.
        sweep_interval_seconds=3600,
    ) as started:
        _session_runtime.append(started)
        yield started
        _session_runtime.clear()


# The session's runtime, for helpers that are not fixtures (deployed_with).
_session_runtime: list[LocalRuntime] = []


T = TypeVar("T")


def eventually(probe: Callable[[], T | None], what: str, timeout: float = 60.0, interval: float = 0.2) -> T:
    """The first answer of `probe` that is not None, asked again every `interval` seconds; fails
    saying `what` was awaited when `timeout` passes first. For what the engine writes just after a
    status a test has already seen (a release, a cooldown), or a step another thread answers. The
    timeout only bounds a failure: on a busy machine (two workers, each with a runtime) it is generous."""
    deadline = time.monotonic() + timeout
    while (answer := probe()) is None:
        assert time.monotonic() < deadline, f"waited {timeout:g} s for {what}"
        time.sleep(interval)
    return answer


@contextmanager
def deployed_with(**values: Any) -> Iterator[None]:
    """Settings changed for one test in every function of the runtime (they share the process), as a
    redeploy with other context values would change them. The values are checked as the functions
    check their environment, so a wrong one fails here rather than half-applied."""
    # Imported here: the handlers read their environment at import, which the runtime sets up.
    import functions.api.handler as api_handler
    import functions.trigger.handler as trigger_handler
    from cost_engine import topology
    from cost_engine.settings import Settings

    [runtime] = _session_runtime
    executors = [runtime.function_modules[m.executor.local_name] for m in topology.state_machines()]
    live = [
        api_handler.service.ctx.settings,
        *(executor.runner.ctx.settings for executor in executors),
        trigger_handler.service.ctx.settings,
    ]
    checked = Settings.model_validate({**live[0].model_dump(), **values})
    saved = [{name: getattr(s, name) for name in values} for s in live]
    for s in live:
        for name in values:
            setattr(s, name, getattr(checked, name))
    try:
        yield
    finally:
        for s, old in zip(live, saved, strict=True):
            for name, value in old.items():
                setattr(s, name, value)


@pytest.fixture(autouse=True)
def no_leftover_faults(runtime: LocalRuntime) -> Iterator[None]:
    yield
    runtime.faults.clear()
    runtime.aws_requests.clear()


@pytest.fixture
def api(runtime: LocalRuntime) -> ApiClient:
    return ApiClient(runtime.api_url, runtime.api_key)


@pytest.fixture
def ec2(runtime: LocalRuntime) -> Any:
    return runtime.client("ec2")


@pytest.fixture
def customer_id() -> str:
    """A customer of its own per test, so listings are not shared between tests."""
    return f"cust-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def network(ec2: Any) -> dict[str, str]:
    vpc = ec2.create_vpc(CidrBlock="10.30.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.30.1.0/24", AvailabilityZone="us-east-1b")["Subnet"]
    group = ec2.create_security_group(GroupName=f"sg-{uuid.uuid4().hex[:6]}", Description="test", VpcId=vpc)
    return {"subnet_id": subnet["SubnetId"], "security_group_id": group["GroupId"]}


@pytest.fixture(scope="session")
def amazon_image_id(runtime: LocalRuntime) -> str:
    """An AMI to launch from; looked up once, as listing moto's images takes seconds."""
    return str(runtime.client("ec2").describe_images(Owners=["amazon"])["Images"][0]["ImageId"])


@pytest.fixture
def launch_instance(ec2: Any, network: dict[str, str], amazon_image_id: str) -> Callable[..., str]:
    def launch(instance_type: str = "m5.large", name: str = "idle-worker", **extra: Any) -> str:
        instance = ec2.run_instances(
            ImageId=amazon_image_id,
            InstanceType=instance_type,
            MinCount=1,
            MaxCount=1,
            SubnetId=network["subnet_id"],
            SecurityGroupIds=[network["security_group_id"]],
            TagSpecifications=[
                {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": name}, {"Key": "team", "Value": "data"}]}
            ],
            **extra,
        )["Instances"][0]
        return str(instance["InstanceId"])

    return launch


def terminate_recommendation(customer_id: str, resource_id: str, /, **fields: Any) -> dict[str, Any]:
    """A recommendation body: terminate an idle instance (any field may be overridden)."""
    return {
        "customer_id": customer_id,
        "type": "terminate_instance",
        "account_id": ACCOUNT_ID,
        "region": REGION,
        "resource_id": resource_id,
        "estimated_monthly_savings": 70.0,
        **fields,
    }


@pytest.fixture
def recommend(api: ApiClient, customer_id: str) -> Callable[..., str]:
    def register(resource_id: str, **fields: Any) -> str:
        return str(api.register(terminate_recommendation(customer_id, resource_id, **fields))["recommendation_id"])

    return register


# What the limits record when an execution ends (after its outcome), and what the audit trail
# records by itself between the steps' events (each AWS change, each status change; read by
# test_audit_trail.py): left out where a test reads the steps' own sequence.
LIMIT_EVENTS = frozenset({"slot_released", "resource_cooldown_started"})
TRAIL_EVENTS = frozenset({"aws_call", "status_changed"})


def step_events(events: list[str]) -> list[str]:
    return [event for event in events if event not in LIMIT_EVENTS | TRAIL_EVENTS]


# The pieces of an execution's journey, as `step_events` reads them: a test spells its sequence out
# of these, e.g. `[*APPROVED_BY_POLICY, *COMPLETED]`, keeping literal only what is its own, so an
# event every execution gains is added here once.
#   REQUESTED            accepted, its prechecks passed and the recommendation validated
#   PLANNED              ...then planned and priced, and the approval policy applied to the plan
#   AWAITING_A_PERSON    ...left to a person (no auto_approve, or the policy overrode it): awaiting_approval
#   APPROVED_BY_A_PERSON ...and a person approved it; re-checked, it holds an acting slot
#   APPROVED_BY_POLICY   ...approved without a person (auto_approve the policy let stand); re-checked, it holds a slot
#   DRY_RUN              REQUESTED, then the policy's decision, and the plan reported without acting
# The tails that follow an approval:
#   BACKED_UP            the backup made before acting
#   RECHECKED            BACKED_UP, then checked again right before the change
#   COMPLETED            RECHECKED, then the change made, verified and recorded as completed
#   WATCHED              RECHECKED, then the change made, verified, and its guardrail watch begun
#   COMPLETED_AFTER_WATCH WATCHED, then the watch passed and the execution recorded as completed
#   ROLLED_BACK          the automatic rollback, from its start to the final status
REQUESTED: list[str] = ["execution_requested", "prechecked", "validated"]
PLANNED: list[str] = [*REQUESTED, "planned", "approval_policy_decided"]
AWAITING_A_PERSON: list[str] = [*PLANNED, "approval_requested"]
# The pre-checks and the type's validation run again right before the backup and before the change.
APPROVED_BY_A_PERSON: list[str] = [*AWAITING_A_PERSON, "approved", "rechecked", "slot_acquired"]
APPROVED_BY_POLICY: list[str] = [*PLANNED, "approved", "rechecked", "slot_acquired"]
DRY_RUN: list[str] = [*REQUESTED, "approval_policy_decided", "dry_run_completed"]
BACKED_UP: list[str] = ["backup_started", "backup_done"]
RECHECKED: list[str] = [*BACKED_UP, "rechecked"]
COMPLETED: list[str] = [*RECHECKED, "action_started", "action_done", "verified", "completed"]
# A type that watches its change (cost_engine.guardrails): verified, then watched for the deployment's
# settling period, whose checks pass, then completed.
WATCHED: list[str] = [*RECHECKED, "action_started", "action_done", "verified", "watch_started"]
COMPLETED_AFTER_WATCH: list[str] = [*WATCHED, "guardrails_passed", "completed"]
ROLLED_BACK: list[str] = ["rollback_started", "rollback_action", "rollback_done", "rolled_back"]


def instance_state(ec2: Any, instance_id: str) -> str:
    reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    return str(reservations[0]["Instances"][0]["State"]["Name"])


def restored_instances(ec2: Any, execution_id: str) -> list[dict[str, Any]]:
    reservations = ec2.describe_instances(
        Filters=[{"Name": "tag:cost-engine:restored-for-execution", "Values": [execution_id]}]
    )["Reservations"]
    return [i for r in reservations for i in r["Instances"]]


def backup_images(ec2: Any, execution_id: str) -> list[dict[str, Any]]:
    images: list[dict[str, Any]] = ec2.describe_images(
        Owners=["self"], Filters=[{"Name": "tag:cost-engine:execution-id", "Values": [execution_id]}]
    )["Images"]
    return images


def acting_intervals(api: ApiClient, execution_ids: list[str]) -> list[tuple[datetime, datetime]]:
    """When each execution held an acting slot, from its audit events alone."""
    intervals = []
    for execution_id in execution_ids:

        def released(execution_id: str = execution_id) -> dict[str, str] | None:
            logged = {e["event_type"]: e["timestamp"] for e in api.logs(execution_id)["events"]}
            return logged if "slot_released" in logged else None

        # The release is written right after the final status (by the status change itself).
        logged = eventually(released, f"{execution_id} to release its slot")
        intervals.append(
            (datetime.fromisoformat(logged["slot_acquired"]), datetime.fromisoformat(logged["slot_released"]))
        )
    return intervals


def most_at_once(intervals: list[tuple[datetime, datetime]]) -> int:
    points = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    current = peak = 0
    for _, change in points:  # at equal times a release (-1) sorts first: a handed-over slot is not two
        current += change
        peak = max(peak, current)
    return peak
