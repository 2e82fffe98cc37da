"""What the tables' indexes hold, as deployed and as the local runtime creates them: keys only, so a
record's many writes in an execution are not written again into every index."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from aws_cdk import App
from aws_cdk.assertions import Template

from cost_engine import topology
from cost_engine.topology import IndexName
from infra.stack import CostExecutionEngineStack
from local_runtime.provision import table_definition

KEYS_ONLY = {"ProjectionType": "KEYS_ONLY"}


@pytest.fixture(scope="module")
def stack_and_template() -> tuple[CostExecutionEngineStack, Mapping[str, Any]]:
    stack = CostExecutionEngineStack(App(), "CostExecutionEngineIndexes")
    return stack, Template.from_stack(stack).to_json()


def deployed_indexes(
    stack_and_template: tuple[CostExecutionEngineStack, Mapping[str, Any]], table: topology.Table
) -> dict[str, dict[str, Any]]:
    stack, template = stack_and_template
    resource = template["Resources"][stack.logical_id(stack.data.table(table))]
    return {index["IndexName"]: index for index in resource["Properties"].get("GlobalSecondaryIndexes", [])}


def test_every_index_of_the_executions_table_holds_keys_only(
    stack_and_template: tuple[CostExecutionEngineStack, Mapping[str, Any]],
) -> None:
    # Given the synthesized stack, when its executions table's indexes are read
    indexes = deployed_indexes(stack_and_template, topology.EXECUTIONS_TABLE)

    # Then each of the four holds its keys and the table's, nothing more
    assert {name: index["Projection"] for name, index in indexes.items()} == {
        IndexName.CUSTOMER_CREATED: KEYS_ONLY,
        IndexName.CUSTOMER_STATUS_CREATED: KEYS_ONLY,
        IndexName.APPROVAL: KEYS_ONLY,
        IndexName.UNFINISHED: KEYS_ONLY,
    }


@pytest.mark.parametrize("table", topology.TABLES, ids=lambda t: t.construct_id)
def test_the_local_runtime_creates_the_indexes_the_stack_deploys(
    stack_and_template: tuple[CostExecutionEngineStack, Mapping[str, Any]], table: topology.Table
) -> None:
    deployed = deployed_indexes(stack_and_template, table)
    local = {index["IndexName"]: index for index in table_definition(table).get("GlobalSecondaryIndexes", [])}

    assert {name: (i["KeySchema"], i["Projection"]) for name, i in local.items()} == {
        name: (i["KeySchema"], i["Projection"]) for name, i in deployed.items()
    }


def test_the_topology_tells_which_attributes_an_index_item_holds() -> None:
    # What a benchmark sizes an index write by: the table's key and the index's own keys.
    table = topology.EXECUTIONS_TABLE

    assert {index.name: (index.projection_type, table.index_attributes(index)) for index in table.indexes} == {
        IndexName.CUSTOMER_CREATED: ("KEYS_ONLY", frozenset({"execution_id", "customer_id", "created_at"})),
        IndexName.CUSTOMER_STATUS_CREATED: ("KEYS_ONLY", frozenset({"execution_id", "customer_status", "created_at"})),
        IndexName.APPROVAL: ("KEYS_ONLY", frozenset({"execution_id", "approval_id", "created_at"})),
        IndexName.UNFINISHED: ("KEYS_ONLY", frozenset({"execution_id", "unfinished", "created_at"})),
    }


def test_the_api_may_read_a_listed_page_of_executions_in_one_request(
    stack_and_template: tuple[CostExecutionEngineStack, Mapping[str, Any]],
) -> None:
    stack, template = stack_and_template
    role = {"Ref": stack.logical_id(stack.roles[topology.API_FUNCTION.construct_id])}
    table_arn = {"Fn::GetAtt": [stack.logical_id(stack.data.table(topology.EXECUTIONS_TABLE)), "Arn"]}
    statements = [
        statement
        for policy in template["Resources"].values()
        if policy["Type"] == "AWS::IAM::Policy" and role in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]

    assert any(
        "dynamodb:BatchGetItem" in _as_list(statement["Action"]) and table_arn in _as_list(statement["Resource"])
        for statement in statements
    )


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]
