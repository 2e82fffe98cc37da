"""boto3 clients for the engine, and the classification of AWS errors.

boto3 finds the local emulator through AWS_ENDPOINT_URL, so no code here knows where it runs.
"""

from __future__ import annotations

import threading
from functools import cached_property
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from cost_engine.aws_calls import record_changes
from cost_engine.errors import ActionFailed, TransientError

if TYPE_CHECKING:
    from mypy_boto3_autoscaling import AutoScalingClient
    from mypy_boto3_ce import CostExplorerClient
    from mypy_boto3_cloudtrail import CloudTrailClient
    from mypy_boto3_cloudwatch import CloudWatchClient
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_elb import ElasticLoadBalancingClient
    from mypy_boto3_elbv2 import ElasticLoadBalancingv2Client
    from mypy_boto3_events import EventBridgeClient
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_logs import CloudWatchLogsClient
    from mypy_boto3_rds import RDSClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_scheduler import EventBridgeSchedulerClient
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_stepfunctions import SFNClient
    from mypy_boto3_sts import STSClient

# The state machines own retries (with backoff and jitter); one SDK retry absorbs a blip
# (total_max_attempts counts the first try: max_attempts would count retries only).
_CONFIG = Config(retries={"total_max_attempts": 2, "mode": "standard"})

TRANSIENT_ERROR_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "InternalError",
        "InternalFailure",
        "ServiceUnavailable",
        "Unavailable",
        "RequestTimeout",
    }
)


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


# AWS answers these with HTTP 500, but retrying within seconds does not help: the step fails (and
# rolls back) instead, so that an instance is not left waiting for capacity.
NOT_TRANSIENT_ERROR_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientHostCapacity",
        "InsufficientReservedInstanceCapacity",
        "InsufficientCapacity",
    }
)


def is_transient(error: ClientError) -> bool:
    code = error_code(error)
    if code in NOT_TRANSIENT_ERROR_CODES:
        return False
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code in TRANSIENT_ERROR_CODES or status >= 500


def aws_failure(action: str, error: ClientError) -> Exception:
    """The engine error for a failed AWS call: throttling and 5xx become `TransientError`, which the
    state machines retry; anything else is `ActionFailed`, which fails the step (and rolls back)."""
    message = f"{action} failed: {error_code(error)}: {error}"
    return TransientError(message) if is_transient(error) else ActionFailed(message)


# boto3's default session, which makes every client, is not safe to use from two threads at once (the
# local runtime serves requests on threads): clients are made one at a time.
_MAKING_CLIENTS = threading.Lock()


class AwsClients:
    """The clients of one region, each made on first use and kept: an engine context holds one of these
    per region for the life of its function instance (cost_engine.context), so a client, and the
    connections it keeps open, is made once per container, service and region, and none at import."""

    def __init__(self, region: str) -> None:
        self.region = region

    def _client(self, service: str):  # type: ignore[no-untyped-def]
        with _MAKING_CLIENTS:
            client = boto3.client(service, region_name=self.region, config=_CONFIG)  # type: ignore[call-overload]
        # Each call that changes something is an audit event of the execution being worked on.
        record_changes(client)
        return client

    @cached_property
    def ec2(self) -> EC2Client:
        return self._client("ec2")  # type: ignore[no-any-return]

    @cached_property
    def autoscaling(self) -> AutoScalingClient:
        return self._client("autoscaling")  # type: ignore[no-any-return]

    @cached_property
    def sns(self) -> SNSClient:
        return self._client("sns")  # type: ignore[no-any-return]

    @cached_property
    def stepfunctions(self) -> SFNClient:
        return self._client("stepfunctions")  # type: ignore[no-any-return]

    @cached_property
    def sts(self) -> STSClient:
        return self._client("sts")  # type: ignore[no-any-return]

    @cached_property
    def rds(self) -> RDSClient:
        return self._client("rds")  # type: ignore[no-any-return]

    @cached_property
    def scheduler(self) -> EventBridgeSchedulerClient:
        return self._client("scheduler")  # type: ignore[no-any-return]

    @cached_property
    def s3(self) -> S3Client:
        return self._client("s3")  # type: ignore[no-any-return]

    @cached_property
    def logs(self) -> CloudWatchLogsClient:
        return self._client("logs")  # type: ignore[no-any-return]

    @cached_property
    def cloudtrail(self) -> CloudTrailClient:
        return self._client("cloudtrail")  # type: ignore[no-any-return]

    @cached_property
    def secretsmanager(self) -> SecretsManagerClient:
        return self._client("secretsmanager")  # type: ignore[no-any-return]

    @cached_property
    def events(self) -> EventBridgeClient:
        return self._client("events")  # type: ignore[no-any-return]

    @cached_property
    def elbv2(self) -> ElasticLoadBalancingv2Client:
        return self._client("elbv2")  # type: ignore[no-any-return]

    @cached_property
    def elb(self) -> ElasticLoadBalancingClient:
        return self._client("elb")  # type: ignore[no-any-return]

    @cached_property
    def ce(self) -> CostExplorerClient:
        # Cost Explorer answers from one endpoint (us-east-1) for every region of the account.
        return self._client("ce")  # type: ignore[no-any-return]

    @cached_property
    def cloudwatch(self) -> CloudWatchClient:
        return self._client("cloudwatch")  # type: ignore[no-any-return]

    @cached_property
    def iam(self) -> IAMClient:
        return self._client("iam")  # type: ignore[no-any-return]
