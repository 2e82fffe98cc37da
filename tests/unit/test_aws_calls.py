"""The audit trail written by itself: each AWS call that changes something (the hook on every client
`AwsClients` makes) and each status change, logged for the execution being worked on."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from cost_engine.audit_trail import StatusChangeLog, acting
from cost_engine.aws import AwsClients
from cost_engine.aws_calls import changes_something, identifying_parameters
from cost_engine.errors import StatusConflict
from cost_engine.models import AuditEvent, ExecutionRecord, ExecutionStatus, RecommendationType, new_execution_id
from cost_engine.stores.audit import AuditStore
from cost_engine.stores.executions import ExecutionStore
from cost_engine.topology import AUDIT_TABLE, EXECUTIONS_TABLE
from tests.unit.conftest import REGION

AMI_ID = "ami-12c6146b"  # an image moto registers in every region
ACTOR = "state-machine:act"


@pytest.fixture
def audit(tables: None) -> AuditStore:
    return AuditStore(AUDIT_TABLE.local_name, REGION)


@pytest.fixture
def clients(tables: None) -> AwsClients:
    return AwsClients(REGION)


def aws_calls(audit: AuditStore, execution_id: str) -> list[AuditEvent]:
    return [e for e in audit.events(execution_id) if e.event_type == "aws_call"]


def launch(clients: AwsClients) -> str:
    # Outside any execution: the test's own set-up, which no log records.
    instance = clients.ec2.run_instances(ImageId=AMI_ID, MinCount=1, MaxCount=1, InstanceType="t3.micro")
    return str(instance["Instances"][0]["InstanceId"])


def test_a_change_made_in_a_step_is_logged_with_what_it_changed_and_the_request_id(
    audit: AuditStore, clients: AwsClients
) -> None:
    # Given an instance, and a step of an execution that stops it
    instance_id = launch(clients)
    execution_id = new_execution_id()

    with acting(execution_id, ACTOR, audit):
        answer = clients.ec2.stop_instances(InstanceIds=[instance_id])

        # Then the call is in the log before the step goes on: a crash now would not lose it
        [call] = aws_calls(audit, execution_id)

    assert call.actor == ACTOR
    assert call.detail == {
        "service": "ec2",
        "operation": "StopInstances",
        "parameters": {"InstanceIds": [instance_id]},
        "http_status": 200,
        "request_id": answer["ResponseMetadata"]["RequestId"],
        "attempt": 1,
    }


def test_reads_dry_runs_and_calls_outside_an_execution_are_not_logged(audit: AuditStore, clients: AwsClients) -> None:
    instance_id = launch(clients)
    execution_id = new_execution_id()

    with acting(execution_id, ACTOR, audit):
        clients.ec2.describe_instances(InstanceIds=[instance_id])
        with pytest.raises(ClientError, match="DryRunOperation"):
            clients.ec2.terminate_instances(InstanceIds=[instance_id], DryRun=True)
    clients.ec2.terminate_instances(InstanceIds=[instance_id])  # after the step: nobody's execution

    assert aws_calls(audit, execution_id) == []


def test_a_refused_change_is_logged_with_its_error_code(audit: AuditStore, clients: AwsClients) -> None:
    # Given a step that tries to terminate an instance that does not exist
    execution_id = new_execution_id()

    with acting(execution_id, ACTOR, audit), pytest.raises(ClientError):
        clients.ec2.terminate_instances(InstanceIds=["i-0123456789abcdef0"])

    # Then the attempt is in the log, with the error AWS answered
    [call] = aws_calls(audit, execution_id)
    assert call.detail["operation"] == "TerminateInstances"
    assert call.detail["error"] == "InvalidInstanceID.NotFound"
    assert call.detail["http_status"] == 400


def test_each_attempt_of_a_retried_call_is_logged_as_aws_received_it(audit: AuditStore, clients: AwsClients) -> None:
    # Given a connection that drops the first request of a stop (the SDK then sends it again)
    instance_id = launch(clients)
    execution_id = new_execution_id()
    dropped: list[str] = []

    def drop_first(**_: Any) -> None:
        if not dropped:
            dropped.append("once")
            raise EndpointConnectionError(endpoint_url="https://ec2.us-east-1.amazonaws.com")

    clients.ec2.meta.events.register_first("before-send.ec2.StopInstances", drop_first)

    with acting(execution_id, ACTOR, audit):
        clients.ec2.stop_instances(InstanceIds=[instance_id])

    # Then both requests are in the log: the one without an answer, and the one that stopped it
    assert [
        (c.detail["attempt"], c.detail["http_status"], c.detail.get("error")) for c in aws_calls(audit, execution_id)
    ] == [
        (1, None, "EndpointConnectionError"),
        (2, 200, None),
    ]


def test_the_engines_own_plumbing_is_not_a_change(audit: AuditStore, clients: AwsClients) -> None:
    # Given the approval topic and a status event bus, used within a step
    topic = clients.sns.create_topic(Name="approvals")["TopicArn"]
    execution_id = new_execution_id()

    with acting(execution_id, "state-machine:request_approval", audit):
        clients.sns.publish(TopicArn=topic, Message="approve?")
        clients.events.put_events(Entries=[{"Source": "cost-engine", "DetailType": "x", "Detail": "{}"}])
        clients.sts.get_caller_identity()

    assert aws_calls(audit, execution_id) == []


def test_only_identifying_parameters_are_kept() -> None:
    params = {
        "InstanceIds": ["i-1", "i-2"],
        "ImageId": "ami-1",
        "InstanceType": "m5.large",
        "UserData": "IyEvYmluL2Jhc2gKZXhwb3J0IFBBU1NXT1JEPXMzY3IzdA==",
        "MasterUserPassword": "s3cr3t",
        "SSECustomerKey": "a-key-of-the-customer",
        "Bucket": "logs",
        "Key": "2026/03/01.json",
        "Policy": '{"Statement": []}',
        "TagSpecifications": [{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "x"}]}],
        "Resources": ["i-1"],
        "Description": "free text",
    }

    assert identifying_parameters(params) == {
        "InstanceIds": ["i-1", "i-2"],
        "ImageId": "ami-1",
        "InstanceType": "m5.large",
        "Bucket": "logs",
        "Key": "2026/03/01.json",
        "Resources": ["i-1"],
    }


@pytest.mark.parametrize(
    ("service", "operation", "params", "changes"),
    [
        ("ec2", "TerminateInstances", {}, True),
        ("ec2", "CreateTags", {}, True),
        ("rds", "ModifyDBInstance", {}, True),
        ("logs", "PutRetentionPolicy", {}, True),
        ("s3", "PutBucketLifecycleConfiguration", {}, True),
        ("ec2", "TerminateInstances", {"DryRun": True}, False),
        ("ec2", "DescribeInstances", {}, False),
        ("s3", "HeadBucket", {}, False),
        ("logs", "FilterLogEvents", {}, False),
        ("cloudtrail", "LookupEvents", {}, False),
        ("dynamodb", "PutItem", {}, False),
        ("stepfunctions", "SendTaskSuccess", {}, False),
        ("sns", "Publish", {}, False),
        ("sns", "CreateTopic", {}, True),
        ("events", "PutEvents", {}, False),
        ("events", "PutRule", {}, True),
    ],
)
def test_what_counts_as_a_change(service: str, operation: str, params: dict[str, Any], changes: bool) -> None:
    assert changes_something(service, operation, params) is changes


def execution(execution_id: str) -> ExecutionRecord:
    return ExecutionRecord(
        execution_id=execution_id,
        recommendation_id="rec-1",
        customer_id="acme-corp",
        recommendation_type=RecommendationType.TERMINATE_INSTANCE,
        resource_id="i-0abc",
        region=REGION,
        created_at=datetime(2026, 3, 1, tzinfo=UTC),
    )


def test_every_status_change_is_logged_with_whoever_made_it(audit: AuditStore) -> None:
    # Given the execution store with the status change observer
    store = ExecutionStore(EXECUTIONS_TABLE.local_name, REGION, on_transition=StatusChangeLog(audit))
    execution_id = new_execution_id()
    store.create(execution(execution_id))

    # When a step moves it on, then a change is written outside any step or decision
    with acting(execution_id, "state-machine:validate", audit):
        store.transition(execution_id, ExecutionStatus.VALIDATING, expected=ExecutionStatus.PENDING)
    store.transition(execution_id, ExecutionStatus.FAILED, expected=ExecutionStatus.VALIDATING)

    # Then both are in the log, from → to, each with its actor
    assert [(e.event_type, e.actor, e.detail) for e in audit.events(execution_id)] == [
        ("status_changed", "state-machine:validate", {"from": "pending", "to": "validating"}),
        ("status_changed", "engine", {"from": "validating", "to": "failed"}),
    ]


def test_a_status_change_refused_by_the_store_is_not_logged(audit: AuditStore) -> None:
    store = ExecutionStore(EXECUTIONS_TABLE.local_name, REGION, on_transition=StatusChangeLog(audit))
    execution_id = new_execution_id()
    store.create(execution(execution_id))

    # When a writer expects a status the execution is not in (someone else wrote first)
    with pytest.raises(StatusConflict):
        store.transition(execution_id, ExecutionStatus.EXECUTING, expected=ExecutionStatus.APPROVED)

    # Then nothing changed, so nothing is logged

    assert audit.events(execution_id) == []
