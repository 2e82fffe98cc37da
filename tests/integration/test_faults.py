"""The fault suite: AWS's bad days, met by the real state machines on the local runtime.

Each test injects one fault (AWS throttling or failing a call, a step's Lambda crashing after it
acted, a timeout, a conditional write that loses, the emulated AWS restarting) and then checks the
end state a person relies on: the resource is either changed and recorded, or restored and
recorded; the execution is in a final status that says what happened; and the audit log has every
event of that path, each once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from local_runtime.client import ApiClient
from local_runtime.runtime import LocalRuntime
from tests.integration.conftest import (
    APPROVED_BY_A_PERSON,
    APPROVED_BY_POLICY,
    AWAITING_A_PERSON,
    COMPLETED,
    RECHECKED,
    ROLLED_BACK,
    backup_images,
    instance_state,
    restored_instances,
    step_events,
)

APPROVER = "lead@example.com"


@pytest.fixture(autouse=True)
def no_leftover_aws_faults(runtime: LocalRuntime) -> Iterator[None]:
    yield
    runtime.aws_requests.clear()


def outcome_events(api: ApiClient, execution_id: str) -> list[str]:
    """The steps' own events, in order (see `step_events`)."""
    return step_events([event["event_type"] for event in api.logs(execution_id)["events"]])


def failed_tasks(api: ApiClient, execution_id: str) -> list[str]:
    """The errors of the state machine's failed (and retried or caught) steps, in order."""
    return [step["error"] for step in api.logs(execution_id)["history"] if step["event"] == "TaskFailed"]


def answered(runtime: LocalRuntime, mark: int, service: str, operation: str) -> list[int]:
    """The HTTP statuses the emulated AWS answered to `operation` since `mark`."""
    # Not the pre-checks' DryRun permission questions: only the requests that could change something.
    return [
        r.status
        for r in runtime.aws_requests.since(mark)
        if (r.service, r.operation) == (service, operation) and not r.dry_run
    ]


def approved_and_held(api: ApiClient, runtime: LocalRuntime, recommendation_id: str, step: str) -> tuple[str, Any]:
    """An execution approved by a person and stopped just before `step` runs (its hold reached)."""
    execution_id = api.execute(recommendation_id)["execution_id"]
    api.wait_for(execution_id, frozenset({"awaiting_approval"}))
    hold = runtime.faults.hold(step, execution_id=execution_id)
    api.approve(execution_id, APPROVER)
    assert hold.reached.wait(60), f"{step} was never reached"
    return execution_id, hold


# -- AWS throttles or fails a call ----------------------------------------------------------------------


def test_a_throttled_termination_is_retried_and_terminates_once(
    api: ApiClient,
    ec2: Any,
    runtime: LocalRuntime,
    launch_instance: Callable[..., str],
    recommend: Callable[..., str],
) -> None:
    # Given EC2 throttles the next two TerminateInstances (both attempts of the step's SDK call)
    instance_id = launch_instance()
    mark = runtime.aws_requests.mark()
    runtime.aws_requests.fail("ec2", "TerminateInstances", code="Throttling", status=400, times=2)

    # When the termination is executed and approved
    execution = api.run(recommend(instance_id), approver=APPROVER)

    # Then the state machine retried the step, and the instance was terminated by one call that got through
    assert execution["status"] == "completed", execution["error_message"]
    assert instance_state(ec2, instance_id) == "terminated"
    assert answered(runtime, mark, "ec2", "TerminateInstances") == [400, 400, 200]
    assert failed_tasks(api, execution["execution_id"]) == ["TransientError"]
    assert outcome_events(api, execution["execution_id"]) == [*APPROVED_BY_A_PERSON, *COMPLETED]


def test_a_5xx_on_termination_that_outlasts_the_retries_rolls_back_and_the_instance_still_runs(
    api: ApiClient,
    ec2: Any,
    runtime: LocalRuntime,
    launch_instance: Callable[..., str],
    recommend: Callable[..., str],
) -> None:
    # Given EC2 answers every TerminateInstances with a server error
    instance_id = launch_instance()
    mark = runtime.aws_requests.mark()
    runtime.aws_requests.fail("ec2", "TerminateInstances", code="InternalError", status=500, times=1000)

    execution = api.run(recommend(instance_id), approver=APPROVER, timeout=120)

    # Then, the retries spent, the execution rolled back and says why; the instance never stopped running
    assert execution["status"] == "rolled_back"
    assert execution["success"] is False
    assert execution["rollback_executed"] is True
    assert execution["error_message"].startswith("TransientError: ")
    assert "TerminateInstances failed: InternalError" in execution["error_message"]
    assert instance_state(ec2, instance_id) == "running"
    assert execution["rollback"]["relaunched"] is False
    assert restored_instances(ec2, execution["execution_id"]) == []
    # (the first try and the state machine's 3 retries, each with the SDK's own retry)
    assert answered(runtime, mark, "ec2", "TerminateInstances") == [500] * 8
    assert failed_tasks(api, execution["execution_id"]) == ["TransientError"] * 4
    assert outcome_events(api, execution["execution_id"]) == [*APPROVED_BY_A_PERSON, *RECHECKED, *ROLLED_BACK]


def test_a_5xx_on_deleting_a_volume_that_outlasts_the_retries_leaves_the_volume_as_it_was(
    api: ApiClient, ec2: Any, runtime: LocalRuntime, recommend: Callable[..., str]
) -> None:
    # Given an unattached volume (another type, another state machine), and EC2 unavailable for its deletion
    volume_id = ec2.create_volume(AvailabilityZone="us-east-1b", Size=50, VolumeType="gp3")["VolumeId"]
    mark = runtime.aws_requests.mark()
    runtime.aws_requests.fail("ec2", "DeleteVolume", code="ServiceUnavailable", status=503, times=1000)

    execution = api.wait_for(
        api.execute(recommend(volume_id, type="delete_volume", parameters={}), auto_approve=True)["execution_id"],
        timeout=120,
    )

    # Then it rolled back, says why, and the volume is still there as it was
    assert execution["status"] == "rolled_back"
    assert execution["rollback_executed"] is True
    assert "DeleteVolume" in execution["error_message"]
    assert "ServiceUnavailable" in execution["error_message"]
    assert [v["State"] for v in ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"]] == ["available"]
    assert answered(runtime, mark, "ec2", "DeleteVolume") == [503] * 8
    assert failed_tasks(api, execution["execution_id"]) == ["TransientError"] * 4
    assert outcome_events(api, execution["execution_id"]) == [*APPROVED_BY_POLICY, *RECHECKED, *ROLLED_BACK]


def test_a_throttled_backup_is_retried_and_makes_one_image(
    api: ApiClient,
    ec2: Any,
    runtime: LocalRuntime,
    launch_instance: Callable[..., str],
    recommend: Callable[..., str],
) -> None:
    # Given EC2 throttles the next two CreateImage, the AMI backup the termination waits for
    instance_id = launch_instance()
    mark = runtime.aws_requests.mark()
    runtime.aws_requests.fail("ec2", "CreateImage", code="RequestLimitExceeded", status=400, times=2)

    execution = api.run(recommend(instance_id), approver=APPROVER)

    # Then the retried backup made exactly one image, and the termination went ahead
    assert execution["status"] == "completed", execution["error_message"]
    assert answered(runtime, mark, "ec2", "CreateImage") == [400, 400, 200]
    images = backup_images(ec2, execution["execution_id"])
    assert [image["ImageId"] for image in images] == [execution["backup"]["image_id"]]
    assert instance_state(ec2, instance_id) == "terminated"
    assert failed_tasks(api, execution["execution_id"]) == ["TransientError"]
    assert outcome_events(api, execution["execution_id"]) == [*APPROVED_BY_A_PERSON, *COMPLETED]


# -- a step crashes after acting, or times out ----------------------------------------------------------


def test_a_step_that_crashes_after_terminating_before_recording_rolls_back_and_relaunches_the_instance(
    api: ApiClient,
    ec2: Any,
    runtime: LocalRuntime,
    launch_instance: Callable[..., str],
    recommend: Callable[..., str],
) -> None:
    # Given the terminate step is about to run, and DynamoDB will refuse the write that records the
    # termination (as it refuses an item grown too large): the step terminates the instance, then
    # cannot record it (its first write, that the re-check before the change passed, goes through)
    instance_id = launch_instance("t3.large", name="crash-victim")
    execution_id, hold = approved_and_held(api, runtime, recommend(instance_id), "act")
    mark = runtime.aws_requests.mark()
    runtime.aws_requests.fail("dynamodb", "UpdateItem", code="ValidationException", status=400, passes=1)

    # When the step runs
    hold.release()
    execution = api.wait_for(execution_id)

    # Then the write failed after the termination, and although the action was never recorded the
    # rollback found the instance gone and relaunched it from the backup
    requests = [(r.operation, r.status) for r in runtime.aws_requests.since(mark)]
    assert requests.index(("TerminateInstances", 200)) < requests.index(("UpdateItem", 400))
    assert execution["status"] == "rolled_back"
    assert execution["rollback_executed"] is True
    assert execution["error_message"].startswith("ClientError: ")
    assert "ValidationException" in execution["error_message"]
    assert execution["action"] is None
    assert instance_state(ec2, instance_id) == "terminated"
    restored = restored_instances(ec2, execution_id)
    assert [(i["InstanceType"], i["State"]["Name"]) for i in restored] == [("t3.large", "running")]
    assert execution["rollback"]["replaces_instance_id"] == instance_id
    assert outcome_events(api, execution_id) == [*APPROVED_BY_A_PERSON, *RECHECKED, *ROLLED_BACK]


@pytest.mark.parametrize(("step", "operation"), [("backup", "CreateImage"), ("act", "TerminateInstances")])
def test_a_step_whose_answer_is_lost_after_it_acted_is_retried_without_acting_or_logging_twice(
    api: ApiClient,
    ec2: Any,
    runtime: LocalRuntime,
    launch_instance: Callable[..., str],
    recommend: Callable[..., str],
    step: str,
    operation: str,
) -> None:
    # Given the step's Lambda fails with an error worth retrying once it has acted and recorded it
    # (as when Lambda loses a finished invocation's answer)
    instance_id = launch_instance()
    mark = runtime.aws_requests.mark()
    fault = runtime.faults.inject(step, when="after", error_type="TransientError")

    execution = api.run(recommend(instance_id), approver=APPROVER)

    # Then the retried step neither acts again nor logs again: one call, one event, and it completed
    assert fault.hits == 1
    assert execution["status"] == "completed", execution["error_message"]
    assert answered(runtime, mark, "ec2", operation) == [200]
    assert instance_state(ec2, instance_id) == "terminated"
    assert execution["action"]["state_before"] == "running"
    assert len(backup_images(ec2, execution["execution_id"])) == 1
    assert failed_tasks(api, execution["execution_id"]) == ["TransientError"]
    assert outcome_events(api, execution["execution_id"]) == [*APPROVED_BY_A_PERSON, *COMPLETED]


def test_a_step_that_times_out_while_waiting_for_the_termination_rolls_back_and_relaunches_the_instance(
    api: ApiClient,
    ec2: Any,
    runtime: LocalRuntime,
    launch_instance: Callable[..., str],
    recommend: Callable[..., str],
) -> None:
    # Given the check that follows the termination runs out of time: Lambda stops it and Step
    # Functions sees the error Lambda reports for a timeout
    instance_id = launch_instance("t3.large", name="timeout-victim")
    runtime.faults.inject("check_action", error_type="Sandbox.Timedout")

    execution = api.run(recommend(instance_id), approver=APPROVER)

    # Then a timeout is not retried: the execution rolls back, says it timed out, and an instance
    # with the original configuration runs again from the backup
    assert execution["status"] == "rolled_back"
    assert execution["rollback_executed"] is True
    assert execution["error_message"].startswith("Sandbox.Timedout: ")
    assert instance_state(ec2, instance_id) == "terminated"
    restored = restored_instances(ec2, execution["execution_id"])
    assert [(i["InstanceType"], i["State"]["Name"]) for i in restored] == [("t3.large", "running")]
    assert failed_tasks(api, execution["execution_id"]) == ["Sandbox.Timedout"]
    assert outcome_events(api, execution["execution_id"]) == [
        *APPROVED_BY_A_PERSON,
        *RECHECKED,
        "action_started",
        *ROLLED_BACK,
    ]


# -- a conditional write loses --------------------------------------------------------------------------


def test_a_cancel_that_wins_the_race_with_the_backup_step_stops_it_before_anything_is_touched(
    api: ApiClient,
    ec2: Any,
    runtime: LocalRuntime,
    launch_instance: Callable[..., str],
    recommend: Callable[..., str],
) -> None:
    # Given an approved execution whose backup step is about to start
    instance_id = launch_instance()
    execution_id, hold = approved_and_held(api, runtime, recommend(instance_id), "backup")

    # When a person cancels it first, and then the step runs: its conditional write
    # (approved → executing) meets the cancel's and loses
    cancelled = api.cancel(execution_id)
    hold.release()

    # Then the execution is cancelled, no backup was made, and the instance runs untouched
    assert cancelled["status"] == "cancelled"
    execution = api.wait_for(execution_id)
    assert execution["status"] == "cancelled"
    assert execution["error_message"].startswith("cancelled by api")
    assert instance_state(ec2, instance_id) == "running"
    assert backup_images(ec2, execution_id) == []
    # The backup step re-checks and records its slot only for an execution still approved.
    assert outcome_events(api, execution_id) == [*AWAITING_A_PERSON, "approved", "cancelled"]


# -- the emulated AWS restarts --------------------------------------------------------------------------


def test_a_step_that_runs_while_aws_restarts_is_retried_and_terminates_once(
    api: ApiClient,
    ec2: Any,
    runtime: LocalRuntime,
    launch_instance: Callable[..., str],
    recommend: Callable[..., str],
) -> None:
    # Given the terminate step is about to run
    instance_id = launch_instance()
    execution_id, hold = approved_and_held(api, runtime, recommend(instance_id), "act")
    mark = runtime.aws_requests.mark()

    # When the emulated AWS restarts and the step runs while nothing answers
    restart = threading.Thread(target=runtime.restart_aws, kwargs={"down_seconds": 1.0, "on_down": hold.release})
    restart.start()
    restart.join(60)
    assert not restart.is_alive()

    # Then the step failed at the connection, was retried once AWS was back, and terminated the
    # instance once; the state survived the restart and the execution completed
    execution = api.wait_for(execution_id)
    assert execution["status"] == "completed", execution["error_message"]
    assert instance_state(ec2, instance_id) == "terminated"
    assert answered(runtime, mark, "ec2", "TerminateInstances") == [200]
    failures = failed_tasks(api, execution_id)
    assert "TransientError" in failures
    assert set(failures) <= {"TransientError", "Lambda.SdkClientException"}
    assert outcome_events(api, execution_id) == [*APPROVED_BY_A_PERSON, *COMPLETED]
