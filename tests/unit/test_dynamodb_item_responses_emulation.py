"""The local runtime's direct writing of DynamoDB item answers: boto3 reads exactly what it read from
moto's own serializer, for every item operation and every kind of attribute value."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import boto3
import pytest

from local_runtime.emulations import dynamodb_item_responses
from tests.unit.conftest import REGION

ITEM: dict[str, Any] = {
    "pk": {"S": "p1"},
    "sk": {"S": "s1"},
    "count": {"N": "1.50"},
    "big": {"N": "123456789012345678901234567890"},
    "flag": {"BOOL": False},
    "nothing": {"NULL": True},
    "blob": {"B": b"\x00\x01\xff"},
    "nested": {"M": {"list": {"L": [{"S": "x"}, {"N": "2"}, {"M": {}}]}, "empty": {"S": ""}}},
    "names": {"SS": ["a", "b"]},
    "numbers": {"NS": ["1", "2.5"]},
    "blobs": {"BS": [b"\x01", b"\x02"]},
    "group": {"S": "g1"},
}
PLAIN: dict[str, Any] = {"pk": {"S": "p2"}, "sk": {"S": "s1"}, "count": {"N": "7"}, "group": {"S": "g1"}}


def every_operation(client: Any) -> list[tuple[str, dict[str, Any]]]:
    """Each item operation, with the options that change its answer, on a fresh table."""
    key = {"pk": {"S": "p1"}, "sk": {"S": "s1"}}
    plain_key = {"pk": {"S": "p2"}, "sk": {"S": "s1"}}
    answers: list[tuple[str, Any]] = [
        ("PutItem", client.put_item(TableName="t", Item=ITEM, ReturnConsumedCapacity="TOTAL")),
        ("PutItem plain", client.put_item(TableName="t", Item=PLAIN, ReturnValues="ALL_OLD")),
        ("GetItem", client.get_item(TableName="t", Key=key)),
        ("GetItem plain", client.get_item(TableName="t", Key=plain_key, ReturnConsumedCapacity="INDEXES")),
        ("GetItem missing", client.get_item(TableName="t", Key={"pk": {"S": "none"}, "sk": {"S": "x"}})),
        (
            "UpdateItem",
            client.update_item(
                TableName="t",
                Key=plain_key,
                UpdateExpression="SET #c = #c + :one",
                ExpressionAttributeNames={"#c": "count"},
                ExpressionAttributeValues={":one": {"N": "1"}},
                ReturnValues="ALL_NEW",
            ),
        ),
        (
            "Query",
            client.query(
                TableName="t", KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "p1"}}
            ),
        ),
        (
            "Query index page",
            client.query(
                TableName="t",
                IndexName="by-group",
                KeyConditionExpression="#g = :g",
                ExpressionAttributeNames={"#g": "group"},
                ExpressionAttributeValues={":g": {"S": "g1"}},
                Limit=1,
            ),
        ),
        ("Scan", client.scan(TableName="t", ProjectionExpression="pk, #c", ExpressionAttributeNames={"#c": "count"})),
        ("BatchGetItem", client.batch_get_item(RequestItems={"t": {"Keys": [key, plain_key]}})),
        ("TransactGetItems", client.transact_get_items(TransactItems=[{"Get": {"TableName": "t", "Key": key}}])),
        (
            "BatchWriteItem",
            client.batch_write_item(RequestItems={"t": [{"PutRequest": {"Item": {**PLAIN, "pk": {"S": "p3"}}}}]}),
        ),
        (
            "TransactWriteItems",
            client.transact_write_items(
                TransactItems=[{"Put": {"TableName": "t", "Item": {**PLAIN, "pk": {"S": "p4"}}}}]
            ),
        ),
        ("DeleteItem", client.delete_item(TableName="t", Key=plain_key, ReturnValues="ALL_OLD")),
    ]
    return [(name, {k: v for k, v in answer.items() if k != "ResponseMetadata"}) for name, answer in answers]


def run_on_a_fresh_table(aws_session: Callable[[], Any]) -> list[tuple[str, dict[str, Any]]]:
    client = aws_session()
    client.create_table(
        TableName="t",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in ("pk", "sk", "group")],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by-group",
                "KeySchema": [{"AttributeName": "group", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    answers = every_operation(client)
    client.delete_table(TableName="t")
    return answers


def test_boto3_reads_the_same_answers_as_from_motos_serializer(aws: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.dynamodb.responses import DynamoResult

    original = getattr(DynamoResult.execute_result, "__wrapped__", DynamoResult.execute_result)
    monkeypatch.setattr(DynamoResult, "execute_result", original)
    client = lambda: boto3.client("dynamodb", region_name=REGION)  # noqa: E731
    serialized = run_on_a_fresh_table(client)

    written: list[str] = []
    dynamodb_item_responses.install(None)
    direct = DynamoResult.execute_result

    def noting(self: Any, context: Any) -> Any:
        written.append(context.operation_model.name)
        return direct(self, context)

    monkeypatch.setattr(DynamoResult, "execute_result", noting)
    answers = run_on_a_fresh_table(client)

    assert answers == serialized
    # The cases mean something: binary values, decimals, pages and capacities are among them.
    answered = dict(serialized)
    assert answered["GetItem"]["Item"]["blob"] == {"B": b"\x00\x01\xff"}
    assert answered["GetItem plain"]["Item"]["count"] == {"N": "7"}
    assert "LastEvaluatedKey" in answered["Query index page"]
    assert "ConsumedCapacity" in answered["PutItem"]
    assert {"Query", "GetItem", "UpdateItem"} <= set(written)


def test_an_answer_holding_bytes_still_goes_through_the_serializer(aws: None) -> None:
    # moto keeps a binary value as bytes, which JSON cannot write as it stands: the serializer does
    # (base64), and boto3 gives the bytes back.
    dynamodb_item_responses.install(None)
    table = boto3.resource("dynamodb", region_name=REGION).create_table(
        TableName="b",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    table.put_item(Item={"pk": "x", "data": b"\x00\xff", "n": Decimal("3.25")})

    item: dict[str, Any] = table.get_item(Key={"pk": "x"})["Item"]

    assert bytes(item["data"]) == b"\x00\xff"
    assert item["n"] == Decimal("3.25")
