"""Outages that outlast every retry, on the real state machines: DynamoDB answering 500 to the engine's
writes (status, records and audit events) at each phase, SNS failing the approval request, Step
Functions failing the approval's hand-over. The outage lasts until the test ends it, once the run's
retries (and the reconciling trigger's) have provably run out; each execution then ends final and
recorded, the resource unchanged, changed and verified, or rolled back (cost_engine.sweeper)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from cost_engine.sweeper import SWEEPER_ACTOR, SWEPT
from local_runtime.client import ApiClient
from local_runtime.emulations import eventbridge_lambda_targets
from local_runtime.emulations.stepfunctions_status_events import wait_announced
from local_runtime.runtime import LocalRuntime
from tests.integration.conftest import backup_images, eventually, instance_state, restored_instances

APPROVER = "lead@example.com"
# The engine's writes: execution records and limits (UpdateItem), audit events and new records (PutItem).
STORE_WRITES = ("UpdateItem", "PutItem")
# A run's retries with backoff, three tasks in a row, take tens of seconds at worst.
RUN_ENDS_WITHIN = 150.0


@contextmanager
def store_outage(runtime: LocalRuntime) -> Iterator[None]:
    """DynamoDB answers 500 to every write until the block ends (reads still work, as when a
    partition's writes fail)."""
    faults = [
        runtime.aws_requests.fail("dynamodb", operation, code="InternalServerError", status=500, times=None)
        for operation in STORE_WRITES
    ]
    try:
        yield
    finally:
        for fault in faults:
            runtime.aws_requests.remove(fault)


def run_has_ended(runtime: LocalRuntime, run_arn: str) -> str:
    """The run's final status, once it has one and its status change event was handled (the trigger's
    reconciliation and its retries are over)."""
    sfn = runtime.client("stepfunctions")

    def ended() -> str | None:
        status = str(sfn.describe_execution(executionArn=run_arn)["status"])
        return None if status == "RUNNING" else status

    status = eventually(ended, f"{run_arn} to end", timeout=RUN_ENDS_WITHIN, interval=0.5)
    if status != "SUCCEEDED":
        wait_announced(run_arn, timeout=30)
        eventbridge_lambda_targets.wait_idle(30)
    return status


def approved_and_held_at(
    runtime: LocalRuntime, api: ApiClient, recommend: Callable[..., str], instance_id: str, step: str
) -> tuple[str, Any]:
    execution_id = api.execute(recommend(instance_id))["execution_id"]
    api.wait_for(execution_id, frozenset({"awaiting_approval"}))
    held = runtime.faults.hold(step, execution_id=execution_id)
    api.approve(execution_id, APPROVER)
    assert held.reached.wait(60)
    return execution_id, held


def swept(api: ApiClient, execution_id: str) -> list[dict[str, Any]]:
    return [e for e in api.logs(execution_id)["events"] if e["event_type"] == SWEPT]


def test_a_store_outage_while_a_verified_termination_records_its_end_is_completed_by_the_sweeper(
    runtime: LocalRuntime, api: ApiClient, ec2: Any, launch_instance: Callable[..., str], recommend: Callable[..., str]
) -> None:
    # Given a termination verified, held just before it records that it completed.
    instance_id = launch_instance()
    execution_id, held = approved_and_held_at(runtime, api, recommend, instance_id, "record")
    run = api.status(execution_id)["state_machine_execution_arn"]

    # When DynamoDB fails every write until the run and the reconciliation of its end have given up,
    with store_outage(runtime):
        held.release()
        assert run_has_ended(runtime, run) == "FAILED"
        # the record is stranded as the issue saw it: still verifying, the instance gone;
        assert api.status(execution_id)["status"] == "verifying"
        assert instance_state(ec2, instance_id) == "terminated"

    # and the sweeper runs once the store is back,
    answer = runtime.sweep()

    # Then the verified change is completed, from the log, and nothing is relaunched.
    # (Other tests' executions may be swept too: only this one's decision is this test's.)
    assert answer["decisions"][execution_id] == "completed"
    execution = api.status(execution_id)
    assert (execution["status"], execution["success"]) == ("completed", True)
    assert instance_state(ec2, instance_id) == "terminated"
    assert restored_instances(ec2, execution_id) == []
    [decision] = swept(api, execution_id)
    assert decision["actor"] == SWEEPER_ACTOR
    assert (decision["detail"]["execution_status"], decision["detail"]["then"]) == ("verifying", "completed")
    # Once final, later sweeps leave it alone.
    assert execution_id not in runtime.sweep()["decisions"]


def test_a_store_outage_mid_termination_leaves_it_to_a_persons_rollback_which_relaunches_the_instance(
    runtime: LocalRuntime, api: ApiClient, ec2: Any, launch_instance: Callable[..., str], recommend: Callable[..., str]
) -> None:
    # Given a termination under way (the instance is being terminated, not yet checked).
    instance_id = launch_instance()
    execution_id, held = approved_and_held_at(runtime, api, recommend, instance_id, "check_action")
    run = api.status(execution_id)["state_machine_execution_arn"]

    # When DynamoDB fails every write until the run has given up, even on recording its rollback,
    with store_outage(runtime):
        held.release()
        assert run_has_ended(runtime, run) == "FAILED"
        assert api.status(execution_id)["status"] == "executing"

    # a person asks for a rollback (before any sweep): it is accepted, not refused as "executing",
    rolling_back = api.rollback(execution_id)
    assert rolling_back["status"] == "rolling_back"

    # Then the instance is relaunched from its backup and the execution ends rolled back.
    execution = api.wait_for(execution_id, timeout=90)
    assert execution["status"] == "rolled_back"
    assert [i["State"]["Name"] for i in restored_instances(ec2, execution_id)] == ["running"]
    assert len(backup_images(ec2, execution_id)) == 1


def test_a_store_outage_while_a_failed_termination_rolls_back_is_rolled_back_again_by_the_sweeper(
    runtime: LocalRuntime, api: ApiClient, ec2: Any, launch_instance: Callable[..., str], recommend: Callable[..., str]
) -> None:
    # Given a termination whose verification fails, held while its rollback relaunches the instance.
    instance_id = launch_instance()
    execution_id = api.execute(recommend(instance_id))["execution_id"]
    api.wait_for(execution_id, frozenset({"awaiting_approval"}))
    runtime.faults.inject("verify", execution_id=execution_id)
    held = runtime.faults.hold("check_rollback", execution_id=execution_id)
    api.approve(execution_id, APPROVER)
    assert held.reached.wait(60)
    run = api.status(execution_id)["state_machine_execution_arn"]

    # When DynamoDB fails every write until the run has given up on recording the rollback,
    with store_outage(runtime):
        held.release()
        assert run_has_ended(runtime, run) == "FAILED"
        assert api.status(execution_id)["status"] == "rolling_back"

    # Then the sweeper starts a new rollback run, which finishes restoring and records it.
    assert runtime.sweep()["decisions"][execution_id] == "rolling_back"
    execution = api.wait_for(execution_id, timeout=90)
    assert execution["status"] == "rolled_back"
    assert execution["rollback_runs"] == 1
    assert [i["State"]["Name"] for i in restored_instances(ec2, execution_id)] == ["running"]
    assert [e["detail"]["then"] for e in swept(api, execution_id)] == ["rolling_back"]


def test_a_store_outage_before_anything_changed_is_failed_by_the_periodic_sweep(
    runtime: LocalRuntime, api: ApiClient, ec2: Any, launch_instance: Callable[..., str], recommend: Callable[..., str]
) -> None:
    # Given an execution validated and held before its plan.
    instance_id = launch_instance()
    execution_id = api.execute(recommend(instance_id))["execution_id"]
    held = runtime.faults.hold("plan", execution_id=execution_id)
    assert held.reached.wait(60)
    run = api.status(execution_id)["state_machine_execution_arn"]

    # When DynamoDB fails every write until the run has given up, even on recording its failure,
    with store_outage(runtime):
        held.release()
        assert run_has_ended(runtime, run) == "FAILED"
        assert api.status(execution_id)["status"] == "validating"

    # Then the runtime's own periodic sweep fails it, with the reason, and nothing was touched.
    with sweeping_every(runtime, seconds=0.5):
        execution = api.wait_for(execution_id, timeout=30)
    assert execution["status"] == "failed"
    assert f"run {execution_id} ended FAILED while the execution was validating" in execution["error_message"]
    assert execution["error_message"].endswith("before anything was changed")
    assert instance_state(ec2, instance_id) == "running"
    assert backup_images(ec2, execution_id) == []
    assert [e["detail"]["then"] for e in swept(api, execution_id)] == ["failed"]


def test_an_approval_request_sns_cannot_send_fails_the_execution_with_the_reason_and_touches_nothing(
    runtime: LocalRuntime, api: ApiClient, ec2: Any, launch_instance: Callable[..., str], recommend: Callable[..., str]
) -> None:
    instance_id = launch_instance()
    runtime.aws_requests.fail("sns", "Publish", code="InternalError", status=500, times=None)

    execution_id = api.execute(recommend(instance_id))["execution_id"]

    execution = api.wait_for(execution_id, timeout=RUN_ENDS_WITHIN)
    assert execution["status"] == "failed"
    assert "request_approval" in execution["error_message"]
    assert "InternalError" in execution["error_message"]
    assert instance_state(ec2, instance_id) == "running"
    assert backup_images(ec2, execution_id) == []


def test_an_approval_step_functions_could_not_take_is_handed_over_by_the_sweeper_and_the_change_completes(
    runtime: LocalRuntime, api: ApiClient, ec2: Any, launch_instance: Callable[..., str], recommend: Callable[..., str]
) -> None:
    instance_id = launch_instance()
    execution_id = api.execute(recommend(instance_id))["execution_id"]
    api.wait_for(execution_id, frozenset({"awaiting_approval"}))
    outage = runtime.aws_requests.fail("states", "SendTaskSuccess", code="InternalFailure", status=500, times=None)

    # The decision is recorded (no 5xx); the run still waits, and says so in the log.
    approved = api.approve(execution_id, APPROVER)
    assert approved["status"] == "approved"
    assert "approval_delivery_failed" in [e["event_type"] for e in api.logs(execution_id)["events"]]
    # While Step Functions still fails, a sweep leaves the approval for the next one.
    assert execution_id not in runtime.sweep()["decisions"]
    runtime.aws_requests.remove(outage)

    assert runtime.sweep()["decisions"][execution_id] == "approval_delivered"

    execution = api.wait_for(execution_id, timeout=90)
    assert execution["status"] == "completed"
    assert instance_state(ec2, instance_id) == "terminated"


@contextmanager
def sweeping_every(runtime: LocalRuntime, seconds: float) -> Iterator[None]:
    """The runtime's sweep schedule at a test's pace, then back to its own."""
    before = runtime.sweep_interval_seconds
    runtime.sweep_interval_seconds = seconds
    runtime.wake_sweeper()
    try:
        yield
    finally:
        runtime.sweep_interval_seconds = before
        runtime.wake_sweeper()
