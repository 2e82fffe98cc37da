"""Creates the engine's tables in an emulated account from the topology declarations."""

from __future__ import annotations

from typing import Any

from cost_engine import topology


def table_definition(table: topology.Table) -> dict[str, Any]:
    """The CreateTable request of one table: keys and indexes as declared, all keys strings."""
    keys = [(table.partition_key, "HASH")] + ([(table.sort_key, "RANGE")] if table.sort_key else [])
    attributes = {name for name, _ in keys}
    for index in table.indexes:
        attributes |= {index.partition_key, index.sort_key}
    request: dict[str, Any] = {
        "TableName": table.local_name,
        "KeySchema": [{"AttributeName": name, "KeyType": kind} for name, kind in keys],
        "AttributeDefinitions": [{"AttributeName": a, "AttributeType": "S"} for a in sorted(attributes)],
        "BillingMode": "PAY_PER_REQUEST",
    }
    if table.indexes:
        request["GlobalSecondaryIndexes"] = [
            {
                "IndexName": index.name,
                "KeySchema": [
                    {"AttributeName": index.partition_key, "KeyType": "HASH"},
                    {"AttributeName": index.sort_key, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": index.projection_type},
            }
            for index in table.indexes
        ]
    return request


def create_tables(dynamodb: Any) -> None:
    for table in topology.TABLES:
        dynamodb.create_table(**table_definition(table))
