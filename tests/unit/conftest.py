"""Shared fixtures of the unit tests: nothing here can reach real AWS or a local emulator."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import botocore.loaders
import botocore.session
import pytest
from moto import mock_aws

from cost_engine.settings import Settings
from cost_engine.topology import AUDIT_TABLE, EXECUTIONS_TABLE, LIMITS_TABLE, RECOMMENDATIONS_TABLE
from local_runtime.provision import create_tables

# moto gives every test a new default boto3 session (mock_aws patches boto3.DEFAULT_SESSION), and a
# new session reads botocore's endpoint and service-model files from disk again: that was a third of
# the unit suite's time. The sessions share one loader (and its cache) instead; the files are the same.
botocore.session.create_loader = functools.cache(botocore.loaders.create_loader)

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # the account moto's emulated resources live in


@pytest.fixture(autouse=True)
def fake_aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and no endpoint override, so a test that forgets moto fails instead of
    talking to a real account or to the local runtime's emulator."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    # AWS_ENDPOINT_URL and its per-service forms (AWS_ENDPOINT_URL_DYNAMODB, ...) would send
    # boto3 past moto to a server.
    for name in [n for n in os.environ if n.startswith("AWS_ENDPOINT_URL")]:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def aws() -> Iterator[None]:
    """An empty emulated AWS account for the duration of one test."""
    with mock_aws():
        yield


@pytest.fixture
def tables(aws: None) -> None:
    """The engine's DynamoDB tables, created from the topology as the local runtime creates them."""
    create_tables(boto3.client("dynamodb", region_name=REGION))


def engine_settings(**fields: Any) -> Settings:
    """The engine's settings over the tables the `tables` fixture creates, in this region, with `fields`."""
    return Settings(
        executions_table=EXECUTIONS_TABLE.local_name,
        audit_table=AUDIT_TABLE.local_name,
        recommendations_table=RECOMMENDATIONS_TABLE.local_name,
        limits_table=LIMITS_TABLE.local_name,
        region=REGION,
        **fields,
    )


def waits_a_minute() -> dict[str, Any]:
    """A state machine definition whose run waits a minute. Until a time, not for seconds: a process that
    has run the local runtime makes waits of seconds take none (local_runtime.emulations.poll_waits), and
    a test must not depend on which tests ran before it in its process."""
    until = (datetime.now(UTC) + timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"StartAt": "Wait", "States": {"Wait": {"Type": "Wait", "Timestamp": until, "End": True}}}
