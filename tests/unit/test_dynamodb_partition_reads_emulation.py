"""The local runtime's DynamoDB Query that reads only the asked partition: the same answers as moto's
own Query (which sorts the whole table first), page by page, for table and index queries."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boto3
import pytest
from boto3.dynamodb.conditions import Attr, Key

from local_runtime.emulations import dynamodb_partition_reads
from tests.unit.conftest import REGION

QUERIES: dict[str, dict[str, Any]] = {
    "one partition": {"KeyConditionExpression": Key("pk").eq("p3")},
    "one partition, newest first, paged": {
        "KeyConditionExpression": Key("pk").eq("p3"),
        "ScanIndexForward": False,
        "Limit": 4,
    },
    "a range of sort keys": {"KeyConditionExpression": Key("pk").eq("p5") & Key("sk").between("s03", "s07")},
    "a sort key prefix, filtered": {
        "KeyConditionExpression": Key("pk").eq("p1") & Key("sk").begins_with("s0"),
        "FilterExpression": Attr("n").gt(3),
    },
    "a partition that does not exist": {"KeyConditionExpression": Key("pk").eq("nobody")},
    "an index, paged": {"IndexName": "by-group", "KeyConditionExpression": Key("group").eq("g1"), "Limit": 5},
    "an index with a sort key condition": {
        "IndexName": "by-group",
        "KeyConditionExpression": Key("group").eq("g0") & Key("at").gte("2026-01-05"),
        "ScanIndexForward": False,
    },
    "an index value nobody has": {"IndexName": "by-group", "KeyConditionExpression": Key("group").eq("none")},
}


@pytest.fixture
def table(aws: None) -> Any:
    created = boto3.resource("dynamodb", region_name=REGION).create_table(
        TableName="events",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": name, "AttributeType": "S"} for name in ("pk", "sk", "group", "at")],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by-group",
                "KeySchema": [
                    {"AttributeName": "group", "KeyType": "HASH"},
                    {"AttributeName": "at", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    with created.batch_writer() as batch:
        for p in range(8):
            for s in range(10):
                item: dict[str, Any] = {"pk": f"p{p}", "sk": f"s{s:02d}", "n": s}
                if (p + s) % 3:  # some items are not in the index
                    item |= {"group": f"g{(p * s) % 2}", "at": f"2026-01-{s + 1:02d}"}
                batch.put_item(Item=item)
    return created


def every_page(table: Any, query: dict[str, Any]) -> list[list[dict[str, Any]]]:
    pages = []
    asked = dict(query)
    while True:
        answer = table.query(**asked)
        pages.append(answer["Items"])
        if "LastEvaluatedKey" not in answer:
            return pages
        asked["ExclusiveStartKey"] = answer["LastEvaluatedKey"]


def answers(table: Any) -> dict[str, list[list[dict[str, Any]]]]:
    return {name: every_page(table, query) for name, query in QUERIES.items()}


def test_queries_answer_the_same_pages_as_motos_own_query(table: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.dynamodb.models.table import Table

    original_query: Callable[..., Any] = getattr(Table.query, "__wrapped__", Table.query)
    original_all_items: Callable[..., Any] = getattr(Table.all_items, "__wrapped__", Table.all_items)
    monkeypatch.setattr(Table, "query", original_query)
    monkeypatch.setattr(Table, "all_items", original_all_items)
    motos = answers(table)

    dynamodb_partition_reads.install(None)
    assert getattr(Table.query, "narrowed", False)
    narrowed = answers(table)

    assert narrowed == motos
    # The cases mean something: pages, empty answers and index answers are among them.
    assert len(motos["one partition, newest first, paged"]) == 3
    assert motos["a partition that does not exist"] == [[]]
    assert sum(len(page) for page in motos["an index, paged"]) > 5


def test_a_query_no_longer_sorts_the_whole_table(table: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    dynamodb_partition_reads.install(None)
    seen: list[int] = []
    real_sorted = sorted

    def counting_sorted(items: Any, **kwargs: Any) -> list[Any]:
        result = real_sorted(items, **kwargs)
        seen.append(len(result))
        return result

    monkeypatch.setattr(dynamodb_partition_reads, "sorted", counting_sorted, raising=False)
    table.query(KeyConditionExpression=Key("pk").eq("p2"))
    table.query(IndexName="by-group", KeyConditionExpression=Key("group").eq("g1"))
    assert seen[0] == 10  # one partition of the 80 items
    assert 0 < seen[1] < 80
    # A scan still reads everything, as on AWS.
    assert len(_backend_table("events").all_items()) == 80


def _backend_table(name: str) -> Any:
    from moto.dynamodb.models import dynamodb_backends

    from tests.unit.conftest import ACCOUNT_ID

    return dynamodb_backends[ACCOUNT_ID][REGION].get_table(name)
