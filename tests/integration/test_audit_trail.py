"""The audit log alone tells what an execution did, on the real state machines.

Replayed (`cost_engine.audit_replay`), its statuses are the record's, the ones announced on the
engine's bus and the ones the Step Functions history stepped through; and it holds every change the
emulated AWS received while the execution ran, as often as AWS received it (the runtime's request
log, `runtime.aws_requests`, is the independent witness).
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import botocore.session
import pytest

from cost_engine.audit_replay import Replay, replay
from cost_engine.aws_calls import changes_something
from cost_engine.models import AuditEvent
from cost_engine.settings import DEFAULT_SAVINGS_MEASURE_DAYS
from cost_engine.steps import TASK_OF_PHASE, Phase
from local_runtime.client import ApiClient
from local_runtime.emulations.aws_requests import AwsRequest
from local_runtime.runtime import LocalRuntime
from tests.integration.conftest import eventually, instance_state
from tests.integration.test_status_events import follow, received

APPROVER = "lead@example.com"
# The engine's plumbing on the emulated AWS, by signing name as the request log reports it: its
# tables, state machines, approval topic, status bus, identity, secret, and Lambda (which Step
# Functions invokes through the same server here). Every other request is the executors' own.
PLUMBING_SERVICES = frozenset({"dynamodb", "states", "sns", "events", "sts", "secretsmanager", "lambda"})


@functools.cache
def _rest_routes(service: str) -> list[tuple[str, re.Pattern[str], str]]:
    """The operations of a REST service's model: method, path pattern, name."""
    model = botocore.session.get_session().get_service_model(service)
    routes = []
    for name in model.operation_names:
        http = model.operation_model(name).http
        path = http["requestUri"].split("?")[0]
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path))
        routes.append((http["method"], re.compile(f"{pattern}/?"), name))
    return routes


def rest_operation(service: str, operation: str) -> str:
    """The API operation a REST request of the request log ("POST /schedules/name") is, as the engine's
    `aws_call` events name it; any other operation as it is."""
    method, _, path = operation.partition(" ")
    if not path.startswith("/"):
        return operation
    for route_method, pattern, name in _rest_routes(service):
        if route_method == method and pattern.fullmatch(path):
            return name
    return operation


@dataclass(frozen=True)
class Traced:
    """One execution, as its audit log replays it and as the independent witnesses saw it."""

    execution: dict[str, Any]
    replayed: Replay
    # What the emulated AWS received from the executors while the execution ran (reads too).
    requests: list[AwsRequest]
    # The status changes announced on the engine's bus, in order, and the states Step Functions entered.
    announced: list[tuple[str, str]]
    states_entered: list[str]

    @property
    def changes_received(self) -> Counter[tuple[str, str]]:
        # A DryRun request (the pre-checks' permission question) changes nothing and is no aws_call.
        named = ((r.service, rest_operation(r.service, r.operation), r.dry_run) for r in self.requests)
        return Counter(
            (service, operation)
            for service, operation, dry_run in named
            if changes_something(service, operation, {"DryRun": dry_run})
        )

    @property
    def changes_logged(self) -> Counter[tuple[str, str]]:
        return Counter((c.service, c.operation) for c in self.replayed.aws_changes)

    @property
    def replayed_changes(self) -> list[tuple[str, str]]:
        return [(e.status.value, f.status.value) for e, f in pairwise(self.replayed.statuses)]


@pytest.fixture
def trace(runtime: LocalRuntime, api: ApiClient, customer_id: str) -> Callable[..., Traced]:
    def run(recommendation_id: str, **options: Any) -> Traced:
        sqs, queue_url = follow(runtime, customer_id)
        mark = runtime.aws_requests.mark()
        execution = api.run(recommendation_id, **options)

        def final_change_logged() -> dict[str, Any] | None:
            # `status_changed` is written just after the change it records, so a moment after a
            # reader can see the final status.
            logs = api.logs(execution["execution_id"])
            changes = [e for e in logs["events"] if e["event_type"] == "status_changed"]
            if not changes or changes[-1]["detail"]["to"] != execution["status"]:
                return None
            # A completion (not a dry run's) has the trigger schedule its savings measurements, after it.
            if execution["status"] == "completed" and not execution["dry_run"]:
                schedules = [e for e in logs["events"] if e["detail"].get("operation") == "CreateSchedule"]
                return logs if len(schedules) >= len(DEFAULT_SAVINGS_MEASURE_DAYS) else None
            return logs

        logs = eventually(final_change_logged, f"the change to {execution['status']} in the log")
        requests = [r for r in runtime.aws_requests.since(mark) if r.service not in PLUMBING_SERVICES]
        announced = sorted(
            (e["detail"] for e in received(sqs, queue_url, until=execution["status"])), key=lambda d: d["changed_at"]
        )
        return Traced(
            execution=execution,
            replayed=replay(AuditEvent.model_validate(e) for e in logs["events"]),
            requests=requests,
            announced=[(d["old_status"], d["new_status"]) for d in announced],
            states_entered=[h["state"] for h in logs["history"] if h["event"] == "state_entered"],
        )

    return run


@pytest.fixture
def no_leftover_aws_faults(runtime: LocalRuntime) -> Iterator[None]:
    yield
    runtime.aws_requests.clear()


def state_of(actor: str) -> str | None:
    """The state machine's state that runs a step (`state-machine:check_action` → `CheckAction`), or
    the task a phase is done in (`state-machine:verify` → `Finish`)."""
    step = actor.removeprefix("state-machine:")
    if step == actor:
        return None
    if step in {phase.value for phase in Phase}:
        step = TASK_OF_PHASE[Phase(step)].value
    return "".join(part.capitalize() for part in step.split("_"))


def assert_statuses_agree(traced: Traced) -> None:
    """(a): the log's statuses are the record's, the bus's and the state machine's."""
    replayed = traced.replayed
    assert replayed.contradictions == ()
    assert replayed.status is not None
    assert replayed.status.value == traced.execution["status"]
    assert traced.replayed_changes == traced.announced
    # Each change a step made is one of the states the state machine entered, in that order.
    # (A task may change it more than once: Prepare to validating, then to approved.)
    entered = iter(traced.states_entered)
    last = None
    for entry in replayed.statuses:
        state = state_of(entry.actor)
        if state is not None and state != last:
            assert state in entered, f"{entry.actor} changed the status, but {state} was not entered after"
            last = state


def assert_every_change_is_logged(traced: Traced) -> None:
    """(b): every change AWS received is an `aws_call` event, as many times, and no event is invented."""
    assert traced.changes_logged == traced.changes_received
    assert all(change.request_id for change in traced.replayed.aws_changes if change.http_status)


def test_a_completed_termination_is_told_by_its_log_alone(
    api: ApiClient, ec2: Any, launch_instance: Callable[..., str], recommend: Callable[..., str], trace: Any
) -> None:
    # Given an idle instance and a recommendation to terminate it
    instance_id = launch_instance("m5.large")

    # When it is executed, and a person approves it
    traced = trace(recommend(instance_id), approver=APPROVER)

    # Then the log's statuses, with who moved each, are those the engine went through
    assert traced.execution["status"] == "completed"
    assert instance_state(ec2, instance_id) == "terminated"
    assert_statuses_agree(traced)
    actors = {entry.status.value: entry.actor for entry in traced.replayed.statuses}
    assert actors["approved"] == "approver:apikey:local-dev"
    assert actors["completed"] == "state-machine:record"
    assert [d.event_type for d in traced.replayed.decisions] == [
        "approval_policy_decided",
        "approval_requested",
        "approved",
    ]
    # and its AWS changes are what the emulated AWS received: the backup image, then the termination
    assert_every_change_is_logged(traced)
    [terminated] = [c for c in traced.replayed.aws_changes if c.operation == "TerminateInstances"]
    assert (terminated.actor, terminated.parameters, terminated.http_status) == (
        "state-machine:act",
        {"InstanceIds": [instance_id]},
        200,
    )
    assert ("ec2", "CreateImage") in traced.changes_logged
    assert traced.replayed.errors == ()
    assert traced.replayed.rollbacks == ()


def test_a_termination_rolled_back_after_a_crash_keeps_the_change_it_made_and_its_undoing(
    api: ApiClient,
    ec2: Any,
    runtime: LocalRuntime,
    launch_instance: Callable[..., str],
    recommend: Callable[..., str],
    trace: Any,
) -> None:
    # Given an instance, and an act step that crashes right after it terminated it
    instance_id = launch_instance("t3.large")
    runtime.faults.inject("act", when="after")

    # When it is executed and approved
    traced = trace(recommend(instance_id), approver=APPROVER)

    # Then the log tells the rollback from its events alone, and agrees with the record and the bus
    assert traced.execution["status"] == "rolled_back"
    assert_statuses_agree(traced)
    assert [entry.status.value for entry in traced.replayed.statuses][-3:] == [
        "executing",
        "rolling_back",
        "rolled_back",
    ]
    started = traced.replayed.rollbacks[0]
    assert (started.event_type, started.actor) == ("rollback_started", "state-machine:rollback")
    assert "InjectedFault" in started.detail["reason"]
    # and both the termination (of the step that crashed) and the relaunch that undid it are there
    assert_every_change_is_logged(traced)
    operations = [(c.operation, c.actor) for c in traced.replayed.aws_changes]
    assert ("TerminateInstances", "state-machine:act") in operations
    assert ("RunInstances", "state-machine:rollback") in operations
    assert operations.index(("TerminateInstances", "state-machine:act")) < operations.index(
        ("RunInstances", "state-machine:rollback")
    )


def test_a_dry_run_logs_no_change_and_the_emulated_aws_received_none(
    api: ApiClient, ec2: Any, launch_instance: Callable[..., str], recommend: Callable[..., str], trace: Any
) -> None:
    instance_id = launch_instance("m5.large")

    traced = trace(recommend(instance_id), dry_run=True)

    assert traced.execution["status"] == "completed"
    assert_statuses_agree(traced)
    assert [entry.status.value for entry in traced.replayed.statuses] == ["pending", "validating", "completed"]
    # The dry run read the instance (so the witness was listening) but changed nothing, and says so
    assert any(r.service == "ec2" for r in traced.requests)
    assert traced.changes_received == Counter()
    assert traced.replayed.aws_changes == ()
    assert instance_state(ec2, instance_id) == "running"


@pytest.mark.usefixtures("no_leftover_aws_faults")
def test_a_change_aws_refused_is_logged_with_its_error(
    api: ApiClient,
    ec2: Any,
    runtime: LocalRuntime,
    launch_instance: Callable[..., str],
    recommend: Callable[..., str],
    trace: Any,
) -> None:
    # Given an instance, and AWS refusing the engine's termination of it
    instance_id = launch_instance("m5.large")
    runtime.aws_requests.fail("ec2", "TerminateInstances", code="UnauthorizedOperation", status=403)

    # When it is executed and approved
    traced = trace(recommend(instance_id), approver=APPROVER)

    # Then the attempt is in the log with what AWS answered, though nothing was terminated
    assert instance_state(ec2, instance_id) == "running"
    assert_statuses_agree(traced)
    assert_every_change_is_logged(traced)
    [refused] = [c for c in traced.replayed.aws_changes if c.operation == "TerminateInstances"]
    assert (refused.error, refused.http_status, refused.succeeded) == ("UnauthorizedOperation", 403, False)
    assert [r.status for r in traced.requests if r.operation == "TerminateInstances" and not r.dry_run] == [403]
