"""The local runtime's emulation of EventBridge rules that target a Lambda function (moto refuses
them), and of Lambda's retries and failure destinations for those asynchronous invocations."""

from __future__ import annotations

import io
import json
import re
import threading
import zipfile
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from local_runtime.emulations import eventbridge_lambda_targets
from local_runtime.emulations.eventbridge_lambda_targets import wait_idle
from tests.unit.conftest import ACCOUNT_ID, REGION

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_lambda import LambdaClient
    from mypy_boto3_sqs import SQSClient

BUS = "engine-bus"
RULE = "recommendation-approved"
DETAIL_TYPE = "Recommendation Approved"
FUNCTION = "trigger"
FUNCTION_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{FUNCTION}"
FUNCTION_ERROR = {"errorMessage": "recommendation store unavailable", "errorType": "RuntimeError"}
DETAIL = {"recommendationId": "rec-1", "type": "STOP_INSTANCE"}


class Handler:
    """The function's code: records each event it is invoked with, and fails the first `failures`."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.failures = 0
        self.release = threading.Event()
        self.release.set()

    def invoke(self, event: Any) -> tuple[str, bool, str]:
        # The shape of moto's LambdaFunction._invoke_lambda result: payload, errored, logs.
        self.release.wait(timeout=5)
        self.events.append(event)
        if len(self.events) <= self.failures:
            return json.dumps(FUNCTION_ERROR), True, ""
        return json.dumps({"registered": True}), False, ""


@pytest.fixture
def handler(aws: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Handler]:
    """The emulation installed for this test only, with the function's code faked (no Docker)."""
    from moto.awslambda.models import LambdaFunction
    from moto.events.models import Rule

    for owner, name in (
        (Rule, "send_to_targets"),
        (LambdaFunction, "__init__"),
        (LambdaFunction, "update_configuration"),
    ):
        monkeypatch.setattr(owner, name, getattr(owner, name))
    monkeypatch.setattr(eventbridge_lambda_targets, "RETRY_DELAY_SECONDS", 0.01)
    fake = Handler()

    def invoke_lambda(function: Any, event: Any = None) -> tuple[str, bool, str]:
        return fake.invoke(event)

    monkeypatch.setattr(LambdaFunction, "_invoke_lambda", invoke_lambda)
    eventbridge_lambda_targets.install(None)
    yield fake
    fake.release.set()
    wait_idle(5)  # nothing may outlive the emulated account


@pytest.fixture
def events(handler: Handler) -> EventBridgeClient:
    client = boto3.client("events", region_name=REGION)
    client.create_event_bus(Name=BUS)
    client.put_rule(Name=RULE, EventBusName=BUS, EventPattern=json.dumps({"detail-type": [DETAIL_TYPE]}))
    return client


@pytest.fixture
def sqs(handler: Handler) -> SQSClient:
    return boto3.client("sqs", region_name=REGION)


@pytest.fixture
def lambda_client(handler: Handler) -> LambdaClient:
    iam = boto3.client("iam", region_name=REGION)
    role_arn = iam.create_role(
        RoleName="trigger",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
                ],
            }
        ),
    )["Role"]["Arn"]
    client = boto3.client("lambda", region_name=REGION)
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("handler.py", "def lambda_handler(event, context):\n    return None\n")
    client.create_function(
        FunctionName=FUNCTION,
        Runtime="python3.12",
        Role=role_arn,
        Handler="handler.lambda_handler",
        Code={"ZipFile": code.getvalue()},
    )
    return client


def queue(sqs: SQSClient, name: str) -> tuple[str, str]:
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    return url, sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def messages(sqs: SQSClient, url: str) -> list[Any]:
    return sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]).get("Messages", [])


def target(events: EventBridgeClient, arn: str, target_id: str = "trigger", **extra: Any) -> None:
    spec: dict[str, Any] = {"Id": target_id, "Arn": arn, **extra}
    events.put_targets(Rule=RULE, EventBusName=BUS, Targets=[spec])  # type: ignore[list-item]


def put(events: EventBridgeClient, detail_type: str = DETAIL_TYPE) -> None:
    entries = events.put_events(
        Entries=[
            {
                "EventBusName": BUS,
                "Source": "recommendation-engine",
                "DetailType": detail_type,
                "Detail": json.dumps(DETAIL),
            }
        ]
    )
    assert entries["FailedEntryCount"] == 0


def on_failure(lambda_client: LambdaClient, destination_arn: str, **config: Any) -> None:
    lambda_client.put_function_event_invoke_config(
        FunctionName=FUNCTION, DestinationConfig={"OnFailure": {"Destination": destination_arn}}, **config
    )


def test_a_matching_event_reaches_the_lambda_target_once_and_asynchronously(
    events: EventBridgeClient, lambda_client: LambdaClient, handler: Handler
) -> None:
    # Given a rule on a custom bus that targets the function, whose code is still busy
    target(events, FUNCTION_ARN)
    handler.release.clear()

    # When a matching event is put
    put(events)

    # Then PutEvents has returned before the function ran; once it has, it saw the event once, whole
    assert handler.events == []
    handler.release.set()
    wait_idle(5)
    assert len(handler.events) == 1
    event = handler.events[0]
    assert (event["source"], event["detail-type"], event["detail"]) == ("recommendation-engine", DETAIL_TYPE, DETAIL)
    assert event["account"] == ACCOUNT_ID
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", event["time"])
    assert "ingestion-time" not in event


def test_an_event_the_rule_does_not_match_invokes_nothing(
    events: EventBridgeClient, lambda_client: LambdaClient, handler: Handler
) -> None:
    target(events, FUNCTION_ARN)

    put(events, detail_type="Execution Status Changed")
    wait_idle(5)

    assert handler.events == []


def test_a_disabled_rule_invokes_nothing(
    events: EventBridgeClient, lambda_client: LambdaClient, handler: Handler
) -> None:
    target(events, FUNCTION_ARN)
    events.disable_rule(Name=RULE, EventBusName=BUS)

    put(events)
    wait_idle(5)

    assert handler.events == []


def test_a_schedule_rule_is_sent_no_events(
    events: EventBridgeClient, lambda_client: LambdaClient, handler: Handler
) -> None:
    # Given a schedule rule (no pattern) on the default bus, targeting the function
    events.put_rule(Name="sweep", ScheduleExpression="rate(5 minutes)")
    events.put_targets(Rule="sweep", Targets=[{"Id": "trigger", "Arn": FUNCTION_ARN}])

    # When an event is put on that bus
    entries = events.put_events(
        Entries=[{"Source": "aws.states", "DetailType": "Step Functions Execution Status Change", "Detail": "{}"}]
    )
    assert entries["FailedEntryCount"] == 0
    wait_idle(5)

    # Then the rule does not match it, as on AWS: only its schedule fires it
    assert handler.events == []


def test_the_targets_input_transformer_shapes_what_the_function_receives(
    events: EventBridgeClient, lambda_client: LambdaClient, handler: Handler
) -> None:
    target(
        events,
        FUNCTION_ARN,
        InputTransformer={
            "InputPathsMap": {"id": "$.detail.recommendationId"},
            "InputTemplate": '{"recommendation": "<id>"}',
        },
    )

    put(events)
    wait_idle(5)

    assert handler.events == [{"recommendation": "rec-1"}]


@pytest.mark.parametrize(
    ("config", "invocations"),
    [({"MaximumRetryAttempts": 1}, 2), ({}, 3)],
    ids=["one-retry-configured", "lambda-default-two-retries"],
)
def test_a_failing_function_is_retried_then_its_on_failure_destination_gets_the_invocation_record(
    events: EventBridgeClient,
    lambda_client: LambdaClient,
    sqs: SQSClient,
    handler: Handler,
    config: dict[str, Any],
    invocations: int,
) -> None:
    # Given a function that always fails, with an SQS on-failure destination
    url, arn = queue(sqs, "trigger-failures")
    on_failure(lambda_client, arn, **config)
    target(events, FUNCTION_ARN)
    handler.failures = 99

    # When an event is delivered to it
    put(events)
    wait_idle(5)

    # Then Lambda tried it once plus its retries, then recorded the failure in the destination
    assert len(handler.events) == invocations
    assert all(event == handler.events[0] for event in handler.events)
    (message,) = messages(sqs, url)
    record = json.loads(message["Body"])
    assert record["version"] == "1.0"
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == invocations
    assert record["requestContext"]["functionArn"] == f"{FUNCTION_ARN}:$LATEST"
    assert record["requestPayload"] == handler.events[0]
    assert record["requestPayload"]["detail"] == DETAIL
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"}
    assert record["responsePayload"] == FUNCTION_ERROR


def test_a_function_that_fails_once_then_succeeds_sends_nothing_to_its_destination(
    events: EventBridgeClient, lambda_client: LambdaClient, sqs: SQSClient, handler: Handler
) -> None:
    url, arn = queue(sqs, "trigger-failures")
    on_failure(lambda_client, arn, MaximumRetryAttempts=2)
    target(events, FUNCTION_ARN)
    handler.failures = 1

    put(events)
    wait_idle(5)

    assert len(handler.events) == 2
    assert messages(sqs, url) == []


def test_without_an_on_failure_destination_the_functions_dead_letter_queue_gets_the_event(
    events: EventBridgeClient, lambda_client: LambdaClient, sqs: SQSClient, handler: Handler
) -> None:
    url, arn = queue(sqs, "trigger-dlq")
    lambda_client.update_function_configuration(FunctionName=FUNCTION, DeadLetterConfig={"TargetArn": arn})
    lambda_client.put_function_event_invoke_config(FunctionName=FUNCTION, MaximumRetryAttempts=0)
    target(events, FUNCTION_ARN)
    handler.failures = 99

    put(events)
    wait_idle(5)

    assert len(handler.events) == 1
    (message,) = messages(sqs, url)
    assert json.loads(message["Body"]) == handler.events[0]


def test_an_event_for_a_function_that_does_not_exist_goes_to_the_targets_dead_letter_queue(
    events: EventBridgeClient, sqs: SQSClient, handler: Handler
) -> None:
    # Given a rule whose target function was never created, with a dead-letter queue on the target
    url, arn = queue(sqs, "rule-dlq")
    missing = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:gone"
    target(events, missing, DeadLetterConfig={"Arn": arn}, RetryPolicy={"MaximumRetryAttempts": 3})

    # When a matching event is put
    put(events)
    wait_idle(5)

    # Then nothing ran, and the event is in the dead-letter queue with EventBridge's error attributes
    assert handler.events == []
    (message,) = messages(sqs, url)
    assert json.loads(message["Body"])["detail"] == DETAIL
    attributes = {name: value["StringValue"] for name, value in message["MessageAttributes"].items()}
    rule_arn = events.describe_rule(Name=RULE, EventBusName=BUS)["Arn"]
    assert attributes == {
        "RULE_ARN": rule_arn,
        "TARGET_ARN": missing,
        "ERROR_CODE": "RESOURCE_NOT_FOUND",
        "ERROR_MESSAGE": f"Function not found: {missing}",
    }


def test_an_sqs_target_on_the_same_rule_still_receives_the_event(
    events: EventBridgeClient, lambda_client: LambdaClient, sqs: SQSClient, handler: Handler
) -> None:
    url, arn = queue(sqs, "audit")
    events.put_targets(
        Rule=RULE, EventBusName=BUS, Targets=[{"Id": "trigger", "Arn": FUNCTION_ARN}, {"Id": "audit", "Arn": arn}]
    )

    put(events)
    wait_idle(5)

    assert len(handler.events) == 1
    (message,) = messages(sqs, url)
    assert json.loads(message["Body"])["detail"] == DETAIL
