"""The local runtime's AWS request log and AWS-level faults, in front of a real moto server: what a
boto3 client sees, and that a refused request changes nothing."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError

from local_runtime.emulations import aws_requests
from local_runtime.emulations.aws_requests import AwsRequests
from local_runtime.runtime import LocalRuntime, free_port
from tests.unit.conftest import REGION

AMI_ID = "ami-12c6146b"


@pytest.fixture(scope="module")
def server() -> Iterator[LocalRuntime]:
    """moto's HTTP server with the interceptor installed, as the local runtime serves it (not started:
    only its emulated AWS runs)."""
    from moto.server import ThreadedMotoServer

    runtime = LocalRuntime(aws_port=free_port())
    aws_requests.install(runtime)
    moto_server = ThreadedMotoServer(ip_address=runtime.host, port=runtime.aws_port, verbose=False)
    moto_server.start()
    runtime._moto_server = moto_server
    yield runtime
    moto_server.stop()


@pytest.fixture
def requests(server: LocalRuntime) -> Iterator[AwsRequests]:
    yield server.aws_requests
    server.aws_requests.clear()


@pytest.fixture
def client(server: LocalRuntime) -> Callable[[str], Any]:
    def make(service: str) -> Any:
        # One attempt per call: each call meets an injected fault once (boto3 would retry a throttle).
        return boto3.client(  # type: ignore[call-overload]
            service,
            region_name=REGION,
            endpoint_url=server.aws_endpoint,
            config=Config(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=10),
        )

    return make


def running_instance(ec2: Any) -> str:
    return str(
        ec2.run_instances(ImageId=AMI_ID, InstanceType="t3.micro", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    )


def state(ec2: Any, instance_id: str) -> str:
    return str(ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"])


def test_every_request_is_logged_with_its_service_operation_and_status(
    requests: AwsRequests, client: Callable[[str], Any]
) -> None:
    # Given a mark in the log
    mark = requests.mark()

    # When calls of each protocol are made (query, EC2 query, JSON, REST), one of them refused by moto
    instance_id = running_instance(client("ec2"))
    client("rds").describe_db_instances()
    client("dynamodb").list_tables()
    client("s3").create_bucket(Bucket="logged-bucket")
    with pytest.raises(ClientError):
        client("ec2").describe_instances(InstanceIds=["i-0000000000000000f"])

    # Then the log has each of them after the mark, in order, as the emulated AWS answered them
    logged = [(r.service, r.operation, r.method, r.status) for r in requests.since(mark)]
    assert logged == [
        ("ec2", "RunInstances", "POST", 200),
        ("rds", "DescribeDBInstances", "POST", 200),
        ("dynamodb", "ListTables", "POST", 200),
        ("s3", "PUT /logged-bucket", "PUT", 200),
        ("ec2", "DescribeInstances", "POST", 400),
    ]
    assert requests.since(requests.mark()) == []
    assert instance_id.startswith("i-")


def test_an_injected_throttle_answers_as_ec2_would_and_terminates_nothing(
    requests: AwsRequests, client: Callable[[str], Any]
) -> None:
    # Given a running instance, and EC2 throttling the next two TerminateInstances
    ec2 = client("ec2")
    instance_id = running_instance(ec2)
    fault = requests.fail("ec2", "TerminateInstances", code="Throttling", status=400, times=2)
    mark = requests.mark()

    # When it is terminated three times
    refusals = []
    for _ in range(2):
        with pytest.raises(ClientError) as refused:
            ec2.terminate_instances(InstanceIds=[instance_id])
        refusals.append(refused.value.response)
        assert state(ec2, instance_id) == "running"  # the throttled call never reached EC2
    ec2.terminate_instances(InstanceIds=[instance_id])

    # Then the first two were refused with EC2's error, the third went through
    assert [(r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"]) for r in refusals] == [
        ("Throttling", 400)
    ] * 2
    assert fault.hits == 2
    assert [r.status for r in requests.since(mark) if r.operation == "TerminateInstances"] == [400, 400, 200]
    assert state(ec2, instance_id) in ("shutting-down", "terminated")


@pytest.mark.parametrize(
    ("service", "operation", "call", "code", "status"),
    [
        ("ec2", "DescribeRegions", lambda c: c.describe_regions(), "InternalError", 500),
        ("rds", "DescribeDBInstances", lambda c: c.describe_db_instances(), "Throttling", 400),
        ("autoscaling", "DescribeAutoScalingGroups", lambda c: c.describe_auto_scaling_groups(), "Throttling", 400),
        ("sns", "ListTopics", lambda c: c.list_topics(), "InternalError", 500),
        ("dynamodb", "ListTables", lambda c: c.list_tables(), "ThrottlingException", 400),
        ("logs", "DescribeLogGroups", lambda c: c.describe_log_groups(), "ServiceUnavailableException", 503),
        ("s3", "GET /", lambda c: c.list_buckets(), "SlowDown", 503),
        ("lambda", "GET /2015-03-31/functions", lambda c: c.list_functions(), "TooManyRequestsException", 429),
        ("scheduler", "GET /schedules", lambda c: c.list_schedules(), "ThrottlingException", 400),
    ],
    ids=["ec2", "rds", "autoscaling", "sns", "dynamodb", "logs", "s3", "lambda", "scheduler"],
)
def test_a_fault_reaches_boto3_as_the_services_own_error(
    requests: AwsRequests,
    client: Callable[[str], Any],
    service: str,
    operation: str,
    call: Callable[[Any], Any],
    code: str,
    status: int,
) -> None:
    requests.fail(service, operation, code=code, status=status)

    with pytest.raises(ClientError) as refused:
        call(client(service))

    assert refused.value.response["Error"]["Code"] == code
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    call(client(service))  # once only


def test_a_fault_matches_its_service_and_operation_only(requests: AwsRequests, client: Callable[[str], Any]) -> None:
    requests.fail("ec2", "TerminateInstances", times=5)

    client("ec2").describe_regions()
    client("dynamodb").list_tables()


def test_a_dry_run_is_logged_as_one_and_faults_answer_dry_runs_or_real_requests_not_both(
    requests: AwsRequests, client: Callable[[str], Any]
) -> None:
    ec2 = client("ec2")
    instance_id = running_instance(ec2)
    requests.fail("ec2", "TerminateInstances", code="UnauthorizedOperation", status=403, dry_run=True)
    mark = requests.mark()

    # The fault answers the permission question...
    with pytest.raises(ClientError) as refused:
        ec2.terminate_instances(InstanceIds=[instance_id], DryRun=True)
    # ...while a real request of the same operation (with a throttle meant for real requests) is answered
    # by its own fault, and the dry-run fault is not used up by it.
    requests.fail("ec2", "TerminateInstances", code="Throttling")
    with pytest.raises(ClientError) as throttled:
        ec2.terminate_instances(InstanceIds=[instance_id])

    assert refused.value.response["Error"]["Code"] == "UnauthorizedOperation"
    assert throttled.value.response["Error"]["Code"] == "Throttling"
    logged = [(r.operation, r.dry_run, r.status) for r in requests.since(mark)]
    assert logged == [("TerminateInstances", True, 403), ("TerminateInstances", False, 400)]
    assert state(ec2, instance_id) == "running"


def test_cleared_faults_no_longer_answer(requests: AwsRequests, client: Callable[[str], Any]) -> None:
    requests.fail("dynamodb", "ListTables", code="InternalServerError", status=500, times=100)
    requests.clear()

    assert "TableNames" in client("dynamodb").list_tables()


def test_an_outage_answers_every_matching_request_until_removed_and_leaves_other_faults(
    requests: AwsRequests, client: Callable[[str], Any]
) -> None:
    dynamodb = client("dynamodb")
    outage = requests.fail("dynamodb", "ListTables", code="InternalServerError", status=500, times=None)
    other = requests.fail("dynamodb", "DescribeLimits", code="ThrottlingException")

    # Far more requests than any fixed count of retries would use up.
    for _ in range(5):
        with pytest.raises(ClientError) as failed:
            dynamodb.list_tables()
        assert failed.value.response["Error"]["Code"] == "InternalServerError"
    requests.remove(outage)

    assert "TableNames" in dynamodb.list_tables()
    assert other.hits == 0
    with pytest.raises(ClientError):
        dynamodb.describe_limits()


def test_a_json_fault_carries_its_code_in_the_body(requests: AwsRequests, server: LocalRuntime) -> None:
    # What the JSON services' SDKs read: __type (some prefix it with the service's namespace).
    import urllib.request

    requests.fail("unsigned", "ListTables", code="ThrottlingException")
    request = urllib.request.Request(
        server.aws_endpoint,
        data=b"{}",
        headers={"X-Amz-Target": "DynamoDB_20120810.ListTables", "Content-Type": "application/x-amz-json-1.0"},
    )
    with pytest.raises(urllib.request.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 400
    assert json.loads(refused.value.read())["__type"] == "ThrottlingException"


def test_a_restart_refuses_calls_while_down_then_serves_the_same_state(
    server: LocalRuntime, client: Callable[[str], Any]
) -> None:
    # Given an instance
    ec2 = client("ec2")
    instance_id = running_instance(ec2)
    during: list[BaseException] = []

    def call_while_down() -> None:
        try:
            ec2.describe_instances(InstanceIds=[instance_id])
        except BaseException as error:  # what the call met is the result
            during.append(error)

    # When the emulated AWS restarts, and the client calls while it is down
    server.restart_aws(down_seconds=0.2, on_down=call_while_down)

    # Then that call failed at the connection, and afterwards the same instance is served again
    assert [type(error) for error in during] == [EndpointConnectionError]
    assert state(ec2, instance_id) == "running"


def test_the_interpreter_reports_an_unreachable_lambda_as_step_functions_does(
    server: LocalRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the interpreter's Lambda endpoint is a port where nothing answers
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils

    monkeypatch.setenv("MOTO_PORT", str(free_port()))

    # When it invokes a function there
    with pytest.raises(ClientError) as failed:
        lambda_eval_utils._invoke_lambda_function(
            parameters={"FunctionName": "executor", "Payload": b"{}"},
            region=REGION,
            state_credentials=None,  # type: ignore[arg-type]
        )

    # Then it meets the error the state machines retry, Lambda.SdkClientException (not States.Runtime)
    assert failed.value.response["Error"]["Code"] == "SdkClientException"
