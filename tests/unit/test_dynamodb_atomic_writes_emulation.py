"""The local runtime's emulation of DynamoDB's atomic conditional writes (moto checks, then writes)."""

from __future__ import annotations

import threading
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from local_runtime.emulations import dynamodb_atomic_writes
from tests.unit.conftest import REGION


@pytest.fixture
def table(aws: None, monkeypatch: pytest.MonkeyPatch) -> Any:
    from moto.dynamodb.models import DynamoDBBackend

    for name in dynamodb_atomic_writes.WRITES:  # undone after the test
        monkeypatch.setattr(DynamoDBBackend, name, getattr(DynamoDBBackend, name))
    dynamodb_atomic_writes.install(None)
    resource = boto3.resource("dynamodb", region_name=REGION)
    created = resource.create_table(
        TableName="locks",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return created


def claim_all_at_once(table: Any, key: dict[str, str], claimants: list[str]) -> tuple[list[str], list[str]]:
    """Every claimant tries the same conditional claim at the same moment: (winners, refusal codes)."""
    winners: list[str] = []
    refusals: list[str] = []
    start = threading.Barrier(len(claimants))

    def claim(claimant: str) -> None:
        start.wait()
        try:
            table.update_item(
                Key=key,
                UpdateExpression="SET holder = :me",
                ConditionExpression="attribute_not_exists(holder)",
                ExpressionAttributeValues={":me": claimant},
            )
            winners.append(claimant)
        except ClientError as error:
            refusals.append(error.response["Error"]["Code"])

    threads = [threading.Thread(target=claim, args=(claimant,)) for claimant in claimants]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return winners, refusals


def test_of_many_simultaneous_conditional_claims_exactly_one_wins(table: Any) -> None:
    for round_number in range(20):
        key = {"id": f"resource-{round_number}"}
        winners, refusals = claim_all_at_once(table, key, [f"exec-{n}" for n in range(8)])
        assert len(winners) == 1
        assert refusals == ["ConditionalCheckFailedException"] * 7
        assert table.get_item(Key=key)["Item"]["holder"] == winners[0]


def test_installing_twice_wraps_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.dynamodb.models import DynamoDBBackend

    for name in dynamodb_atomic_writes.WRITES:  # undone after the test
        monkeypatch.setattr(DynamoDBBackend, name, getattr(DynamoDBBackend, name))
    dynamodb_atomic_writes.install(None)
    first = DynamoDBBackend.update_item
    dynamodb_atomic_writes.install(None)
    assert DynamoDBBackend.update_item is first
    assert getattr(first, "serialized", False)
