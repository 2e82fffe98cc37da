"""The local runtime's emulation of Step Functions' `Step Functions Execution Status Change` events
(moto emits none): each way a run ends is announced on the default bus, shaped as AWS shapes it."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from moto import mock_aws

from cost_engine.topology import run_ended_event_pattern
from local_runtime.emulations import stepfunctions_status_events
from local_runtime.emulations.stepfunctions_status_events import wait_announced
from tests.unit.conftest import ACCOUNT_ID, REGION, waits_a_minute

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_stepfunctions import SFNClient

ROLE_ARN = f"arn:aws:iam::{ACCOUNT_ID}:role/state-machine"


FAILS = {"StartAt": "Fail", "States": {"Fail": {"Type": "Fail", "Error": "Broken", "Cause": "no Catch applies"}}}
SUCCEEDS = {"StartAt": "Done", "States": {"Done": {"Type": "Pass", "Result": {"done": True}, "End": True}}}


@dataclass(frozen=True)
class Account:
    sfn: SFNClient
    events: EventBridgeClient
    sqs: SQSClient
    queue_url: str

    def state_machine(self, definition: dict[str, Any]) -> str:
        return self.sfn.create_state_machine(
            name=f"machine-{uuid.uuid4().hex[:8]}", definition=json.dumps(definition), roleArn=ROLE_ARN
        )["stateMachineArn"]

    def run(self, state_machine_arn: str, name: str = "exec-1") -> str:
        return self.sfn.start_execution(stateMachineArn=state_machine_arn, name=name, input='{"execution_id": "e"}')[
            "executionArn"
        ]

    def delivered(self) -> list[dict[str, Any]]:
        """The events the catch-all rule on the default bus delivered to its queue."""
        messages = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages", [])
        return [json.loads(message["Body"]) for message in messages]


@pytest.fixture
def account(monkeypatch: pytest.MonkeyPatch) -> Iterator[Account]:
    """Given moto running state machines, the emulation installed for this test only, and a rule on the
    default bus that sends every Step Functions event to a queue."""
    from moto.stepfunctions.parser.backend.execution import BaseExecutionWorkerCommunication, Execution

    monkeypatch.setattr(BaseExecutionWorkerCommunication, "terminated", BaseExecutionWorkerCommunication.terminated)
    monkeypatch.setattr(Execution, "stop", Execution.stop)
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        stepfunctions_status_events.install(None)
        stepfunctions_status_events.install(None)  # a second install changes nothing
        events = boto3.client("events", region_name=REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        queue_url = sqs.create_queue(QueueName="status-changes")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events.put_rule(Name="all-step-functions", EventPattern=json.dumps({"source": ["aws.states"]}))
        events.put_targets(Rule="all-step-functions", Targets=[{"Id": "queue", "Arn": queue_arn}])
        yield Account(boto3.client("stepfunctions", region_name=REGION), events, sqs, queue_url)


def test_a_stopped_run_is_announced_once_as_aborted_on_the_default_bus_as_aws_shapes_it(account: Account) -> None:
    machine = account.state_machine(waits_a_minute())
    run = account.run(machine)

    account.sfn.stop_execution(executionArn=run)
    wait_announced(run)

    [event] = account.delivered()
    assert (event["source"], event["detail-type"]) == ("aws.states", "Step Functions Execution Status Change")
    # (moto's delivery to a queue leaves out the event's "account")
    assert (event["region"], event["resources"]) == (REGION, [run])
    detail = event["detail"]
    assert {k: detail[k] for k in ("executionArn", "stateMachineArn", "name", "status")} == {
        "executionArn": run,
        "stateMachineArn": machine,
        "name": "exec-1",
        "status": "ABORTED",
    }
    assert json.loads(detail["input"]) == {"execution_id": "e"}
    assert detail["output"] is None
    assert detail["startDate"] <= detail["stopDate"]


def test_a_run_stopped_while_a_task_waits_for_its_token_ends_at_once_and_is_announced_once(
    account: Account,
) -> None:
    # Given a run waiting for a task token (as an execution waits for its approval); moto would end
    # it only when the wait times out
    tokens = account.sqs.create_queue(QueueName="tokens")["QueueUrl"]
    asks = {
        "StartAt": "Ask",
        "States": {
            "Ask": {
                "Type": "Task",
                "Resource": "arn:aws:states:::sqs:sendMessage.waitForTaskToken",
                "TimeoutSeconds": 1,
                "Parameters": {"QueueUrl": tokens, "MessageBody": {"token.$": "$$.Task.Token"}},
                "End": True,
            }
        },
    }
    run = account.run(account.state_machine(asks))
    deadline = time.monotonic() + 30
    while not account.sqs.receive_message(QueueUrl=tokens, VisibilityTimeout=0).get("Messages"):
        assert time.monotonic() < deadline, "the run never asked for its token"
        time.sleep(0.1)

    account.sfn.stop_execution(executionArn=run)

    # Then it is over at once, as on AWS
    assert account.sfn.describe_execution(executionArn=run)["status"] == "ABORTED"
    wait_announced(run)
    # and once the interpreter gives up the wait, it is neither announced again nor reported otherwise
    while account.sfn.get_execution_history(executionArn=run)["events"][-1]["type"].startswith("Task"):
        assert time.monotonic() < deadline, "the interpreter never gave up the wait"
        time.sleep(0.1)
    assert [event["detail"]["status"] for event in account.delivered()] == ["ABORTED"]
    assert account.sfn.describe_execution(executionArn=run)["status"] == "ABORTED"


def test_a_run_failing_where_no_catch_applies_is_announced_as_failed_with_its_error_and_cause(
    account: Account,
) -> None:
    run = account.run(account.state_machine(FAILS))

    wait_announced(run)

    [event] = account.delivered()
    assert {k: event["detail"][k] for k in ("status", "error", "cause")} == {
        "status": "FAILED",
        "error": "Broken",
        "cause": "no Catch applies",
    }


def test_a_run_past_its_timeout_is_announced_as_timed_out(account: Account) -> None:
    run = account.run(account.state_machine({**waits_a_minute(), "TimeoutSeconds": 1}))

    wait_announced(run, timeout=30)

    [event] = account.delivered()
    assert event["detail"]["status"] == "TIMED_OUT"
    assert account.sfn.describe_execution(executionArn=run)["status"] == "TIMED_OUT"


def test_a_run_that_succeeds_is_announced_with_its_output(account: Account) -> None:
    run = account.run(account.state_machine(SUCCEEDS))

    wait_announced(run)

    [event] = account.delivered()
    assert event["detail"]["status"] == "SUCCEEDED"
    assert json.loads(event["detail"]["output"]) == {"done": True}


def test_the_engines_run_ended_rule_matches_the_announced_ends_its_steps_did_not_write_and_no_other(
    account: Account,
) -> None:
    """The rule the local runtime provisions from the topology sees the emulated events as AWS's."""
    machine = account.state_machine(waits_a_minute())
    other_machine = account.state_machine(waits_a_minute())
    account.events.put_rule(Name="engine", EventPattern=json.dumps(run_ended_event_pattern([machine])))
    account.events.put_targets(
        Rule="engine",
        Targets=[{"Id": "queue", "Arn": f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:engine-runs"}],
    )
    engine_queue = account.sqs.create_queue(QueueName="engine-runs")["QueueUrl"]
    stopped = account.run(machine, "stopped")
    foreign = account.run(other_machine, "foreign")
    succeeded = account.run(account.state_machine(SUCCEEDS), "succeeded")

    for run in (stopped, foreign):
        account.sfn.stop_execution(executionArn=run)
    for run in (stopped, foreign, succeeded):
        wait_announced(run)

    messages = account.sqs.receive_message(QueueUrl=engine_queue, MaxNumberOfMessages=10).get("Messages", [])
    assert [json.loads(m["Body"])["detail"]["executionArn"] for m in messages] == [stopped]
