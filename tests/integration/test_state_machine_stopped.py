"""A state machine run that ends without the engine's steps ending the execution (stopped by an
operator, timed out, failed where no Catch applies) is reconciled, on the local runtime: Step
Functions' status change event on the default bus (local_runtime/emulations/
stepfunctions_status_events.py), the rule to the trigger, and the real state machines afterwards."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from cost_engine.models import RecommendationType
from cost_engine.reconcile import STATE_MACHINE_STOPPED, is_run_ended_event
from cost_engine.topology import TRIGGER_FUNCTION, state_machine
from local_runtime.client import FINAL_STATUSES, ApiClient, ApiError
from local_runtime.emulations import eventbridge_lambda_targets
from local_runtime.emulations.stepfunctions_status_events import wait_announced
from local_runtime.runtime import LocalRuntime
from tests.integration.conftest import backup_images, eventually, instance_state, restored_instances, step_events

APPROVER = "lead@example.com"


@contextmanager
def answers_of(runtime: LocalRuntime, function_name: str) -> Iterator[list[tuple[dict[str, Any], Any]]]:
    """Each event the function is invoked with, and what it answered (or the error it raised)."""
    plain = runtime.dispatcher.handlers[function_name]
    answers: list[tuple[dict[str, Any], Any]] = []

    def handler(event: dict[str, Any], context: Any) -> Any:
        try:
            answer = plain(event, context)
        except Exception as error:
            answers.append((event, error))
            raise
        answers.append((event, answer))
        return answer

    runtime.dispatcher.register(function_name, handler)
    try:
        yield answers
    finally:
        runtime.dispatcher.register(function_name, plain)


@pytest.fixture
def reconciled(runtime: LocalRuntime) -> Iterator[list[tuple[dict[str, Any], Any]]]:
    """What the trigger answered to each event it was given."""
    with answers_of(runtime, TRIGGER_FUNCTION.local_name) as answers:
        yield answers


@pytest.fixture
def terminate_steps(runtime: LocalRuntime) -> Iterator[list[tuple[dict[str, Any], Any]]]:
    """What the terminate_instance executor answered to each step it ran."""
    executor = state_machine(RecommendationType.TERMINATE_INSTANCE).executor
    with answers_of(runtime, executor.local_name) as answers:
        yield answers


def outcomes(answers: list[tuple[dict[str, Any], Any]], execution_id: str) -> list[str]:
    """How the trigger reconciled each status change event of the execution's runs."""
    return [
        answer["outcome"]
        for event, answer in answers
        if is_run_ended_event(event) and isinstance(answer, dict) and answer["execution_id"] == execution_id
    ]


def answer_to(answers: list[tuple[dict[str, Any], Any]], execution_id: str, step: str, timeout: float = 60) -> Any:
    """What the executor answered to the execution's `step`, once it has."""

    def answered() -> list[Any] | None:
        found = [a for e, a in answers if (e.get("execution_id"), e.get("step")) == (execution_id, step)]
        return found or None

    return eventually(answered, f"{step} of {execution_id} to answer", timeout)[0]


def logged(api: ApiClient, execution_id: str) -> list[dict[str, Any]]:
    return list(api.logs(execution_id)["events"])


def event_types(api: ApiClient, execution_id: str) -> list[str]:
    return [event["event_type"] for event in logged(api, execution_id)]


def stop_run(runtime: LocalRuntime, run_arn: str) -> None:
    """Stop the run as an operator does in the console, bypassing the engine's API."""
    runtime.client("stepfunctions").stop_execution(executionArn=run_arn, error="Operator", cause="stopped by hand")


def rollback_run(run_arn: str, execution_id: str, number: int = 1) -> str:
    return f"{run_arn.rsplit(':', 1)[0]}:{execution_id}-rollback-{number}"


def wait_for_reconciliation(run_arn: str) -> dict[str, Any]:
    """The run's end event, once it is on the default bus and its delivery to the trigger is done."""
    announced = wait_announced(run_arn, timeout=60)
    eventbridge_lambda_targets.wait_idle(60)
    return announced


def approved_execution_held_at(
    runtime: LocalRuntime, api: ApiClient, instance_id: str, recommend: Callable[..., str], step: str
) -> tuple[str, Any]:
    """An approved execution held before its `step`, with the instance backed up."""
    execution_id = api.execute(recommend(instance_id))["execution_id"]
    api.wait_for(execution_id, frozenset({"awaiting_approval"}))
    held = runtime.faults.hold(step, execution_id=execution_id)
    api.approve(execution_id, APPROVER)
    assert held.reached.wait(60)
    return execution_id, held


def test_a_run_stopped_after_the_termination_began_is_rolled_back_and_the_instance_restored_from_its_backup(
    runtime: LocalRuntime,
    api: ApiClient,
    ec2: Any,
    launch_instance: Callable[..., str],
    recommend: Callable[..., str],
    reconciled: list[tuple[dict[str, Any], Any]],
) -> None:
    instance_id = launch_instance()
    # Held between the termination call and its first check: the change has provably begun.
    execution_id, _ = approved_execution_held_at(runtime, api, instance_id, recommend, "check_action")
    assert instance_state(ec2, instance_id) in ("shutting-down", "terminated")
    run = api.status(execution_id)["state_machine_execution_arn"]

    stop_run(runtime, run)

    execution = api.wait_for(execution_id)
    assert execution["status"] == "rolled_back"
    assert execution["error_message"] == (
        f"the state machine run {execution_id} ended ABORTED while the execution was executing: "
        "the resource may be half-changed, so it is rolled back"
    )
    assert execution["rollback_runs"] == 1
    assert runtime.client("stepfunctions").describe_execution(executionArn=run)["status"] == "ABORTED"
    assert [i["State"]["Name"] for i in restored_instances(ec2, execution_id)] == ["running"]
    events = logged(api, execution_id)
    [stopped] = [e for e in events if e["event_type"] == STATE_MACHINE_STOPPED]
    assert stopped["actor"] == "event:aws.states"
    assert {k: stopped["detail"][k] for k in ("run_status", "execution_arn", "execution_status", "then")} == {
        "run_status": "ABORTED",
        "execution_arn": run,
        "execution_status": "executing",
        "then": "rolling_back",
    }
    order = ["action_started", STATE_MACHINE_STOPPED, "rollback_requested", "rollback_action", "rolled_back"]
    assert [e for e in step_events([e["event_type"] for e in events]) if e in order] == order
    assert step_events([e["event_type"] for e in events])[-1] == "rolled_back"
    # The rollback run ends FAILED by design (an automatic rollback) after it ended the execution:
    # its end reaches the trigger too, and is left alone.
    wait_for_reconciliation(rollback_run(run, execution_id))
    assert outcomes(reconciled, execution_id) == ["rolling_back", "settled"]


def test_a_step_of_a_stopped_run_that_comes_back_after_the_rollback_changes_nothing(
    runtime: LocalRuntime,
    api: ApiClient,
    ec2: Any,
    launch_instance: Callable[..., str],
    recommend: Callable[..., str],
    terminate_steps: list[tuple[dict[str, Any], Any]],
) -> None:
    # Given a run stopped just before its `act` step terminates the instance, and reconciled
    instance_id = launch_instance()
    execution_id, held = approved_execution_held_at(runtime, api, instance_id, recommend, "act")
    stop_run(runtime, api.status(execution_id)["state_machine_execution_arn"])
    execution = api.wait_for(execution_id)
    assert execution["status"] == "rolled_back"
    assert instance_state(ec2, instance_id) == "running"

    # When the Lambda invocation that was in flight goes on, as on AWS
    held.release()

    # Then it refuses to act: the instance is left running, and nothing is recorded as done
    error = answer_to(terminate_steps, execution_id, "act")
    assert isinstance(error, Exception)
    assert "is 'rolled_back': act does nothing" in str(error)
    assert instance_state(ec2, instance_id) == "running"
    assert restored_instances(ec2, execution_id) == []
    assert "action_started" not in event_types(api, execution_id)
    assert api.status(execution_id)["status"] == "rolled_back"


def test_a_run_stopped_while_waiting_for_approval_fails_the_execution_and_touches_nothing(
    runtime: LocalRuntime,
    api: ApiClient,
    ec2: Any,
    launch_instance: Callable[..., str],
    recommend: Callable[..., str],
) -> None:
    instance_id = launch_instance()
    execution_id = api.execute(recommend(instance_id))["execution_id"]
    run = api.wait_for(execution_id, frozenset({"awaiting_approval"}))["state_machine_execution_arn"]

    stop_run(runtime, run)

    execution = api.wait_for(execution_id)
    assert execution["status"] == "failed"
    assert execution["error_message"] == (
        f"the state machine run {execution_id} ended ABORTED while the execution was awaiting_approval, "
        "before anything was changed"
    )
    assert execution["pending_approval"] is None
    assert instance_state(ec2, instance_id) == "running"
    assert backup_images(ec2, execution_id) == []
    assert STATE_MACHINE_STOPPED in event_types(api, execution_id)
    # Nobody waits for a decision any more.
    with pytest.raises(ApiError) as refused:
        api.approve(execution_id, APPROVER)
    assert refused.value.status_code == 409


def test_the_apis_own_cancel_stops_the_run_and_is_not_reconciled_a_second_time(
    api: ApiClient,
    ec2: Any,
    launch_instance: Callable[..., str],
    recommend: Callable[..., str],
    reconciled: list[tuple[dict[str, Any], Any]],
) -> None:
    instance_id = launch_instance()
    execution_id = api.execute(recommend(instance_id))["execution_id"]
    run = api.wait_for(execution_id, frozenset({"awaiting_approval"}))["state_machine_execution_arn"]

    assert api.cancel(execution_id)["status"] == "cancelled"
    announced = wait_for_reconciliation(run)

    assert '"status": "ABORTED"' in announced["Detail"]
    assert outcomes(reconciled, execution_id) == ["settled"]
    execution = api.status(execution_id)
    assert execution["status"] == "cancelled"
    assert execution["error_message"].startswith("cancelled by")
    events = logged(api, execution_id)
    assert STATE_MACHINE_STOPPED not in [e["event_type"] for e in events]
    # Exactly one final status change: the cancel's.
    changes = [e["detail"]["to"] for e in events if e["event_type"] == "status_changed"]
    assert [to for to in changes if to in FINAL_STATUSES] == ["cancelled"]
    assert changes[-1] == "cancelled"
    assert instance_state(ec2, instance_id) == "running"


def test_the_same_event_delivered_again_while_the_rollback_runs_changes_nothing(
    runtime: LocalRuntime,
    api: ApiClient,
    ec2: Any,
    launch_instance: Callable[..., str],
    recommend: Callable[..., str],
    reconciled: list[tuple[dict[str, Any], Any]],
) -> None:
    instance_id = launch_instance()
    execution_id, _ = approved_execution_held_at(runtime, api, instance_id, recommend, "check_action")
    run = api.status(execution_id)["state_machine_execution_arn"]
    rollback_held = runtime.faults.hold("rollback", execution_id=execution_id)
    stop_run(runtime, run)
    assert rollback_held.reached.wait(60)  # the reconciliation's rollback run has begun
    announced = wait_for_reconciliation(run)
    before = logged(api, execution_id)

    # EventBridge delivers at least once: the same event again
    answer = runtime.client("events").put_events(Entries=[announced])
    assert answer["FailedEntryCount"] == 0
    eventbridge_lambda_targets.wait_idle(60)

    assert outcomes(reconciled, execution_id) == ["rolling_back", "settled"]
    assert logged(api, execution_id) == before
    execution = api.status(execution_id)
    assert (execution["status"], execution["rollback_runs"]) == ("rolling_back", 1)
    rollback_held.release()
    assert api.wait_for(execution_id)["status"] == "rolled_back"
    wait_for_reconciliation(rollback_run(run, execution_id))
    assert outcomes(reconciled, execution_id) == ["rolling_back", "settled", "settled"]
    events = event_types(api, execution_id)
    assert (events.count(STATE_MACHINE_STOPPED), events.count("rollback_requested")) == (1, 1)
    assert [i["State"]["Name"] for i in restored_instances(ec2, execution_id)] == ["running"]
