"""The bench's arithmetic (benchmarks/costs.py, benchmarks/asl.py): DynamoDB item sizes and write units
by DynamoDB's rules, list prices, and what it reads from a state machine's definition and history."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from moto import mock_aws

from benchmarks import asl, costs
from benchmarks.instruments import DynamoDbWrites

# -- item size ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "size"),
    [
        ({"id": {"S": "abc"}}, 2 + 3),
        ({"id": {"S": "é"}}, 2 + 2),  # UTF-8 bytes, not characters
        ({"n": {"N": "123"}}, 1 + 3),  # 2 bytes for 3 digits, plus 1
        ({"n": {"N": "100"}}, 1 + 2),  # trailing zeros trimmed
        ({"n": {"N": "-0.0015"}}, 1 + 2),  # sign, point and leading zeros too
        ({"b": {"B": "AAEC"}}, 1 + 3),  # base64 in the wire format, raw bytes counted
        ({"flag": {"BOOL": True}, "none": {"NULL": True}}, 4 + 1 + 4 + 1),
        ({"ss": {"SS": ["ab", "c"]}}, 2 + 3),
        ({"m": {"M": {"a": {"S": "x"}}}}, 1 + 3 + (1 + 1 + 1)),  # 3 bytes, then name + value + 1 per element
        ({"l": {"L": [{"N": "1"}, {"BOOL": False}]}}, 1 + 3 + (2 + 1) + (1 + 1)),
    ],
)
def test_an_items_size_is_its_names_and_values_by_dynamodbs_rules(item: dict[str, Any], size: int) -> None:
    assert costs.item_size(item) == size


def an_item(size: int, **attributes: str) -> dict[str, Any]:
    """An item of exactly `size` bytes: the given string attributes, padded by a `pad` attribute."""
    item: dict[str, Any] = {name: {"S": value} for name, value in attributes.items()}
    item["pad"] = {"S": ""}
    item["pad"] = {"S": "x" * (size - costs.item_size(item))}
    assert costs.item_size(item) == size
    return item


# -- write units --------------------------------------------------------------------------------------

PLAIN = costs.TableDefinition("plain", ("id",))
EXECUTIONS = costs.TableDefinition(
    "executions",
    ("id",),
    (
        costs.IndexDefinition("by-customer", ("customer", "created")),  # every attribute
        costs.IndexDefinition("by-unfinished", ("unfinished", "created"), frozenset()),  # keys only
        costs.IndexDefinition("by-status", ("status", "created"), frozenset({"note"})),  # keys and `note`
    ),
)


def test_a_write_costs_one_unit_per_started_kilobyte_of_the_larger_item() -> None:
    assert costs.write_units(PLAIN, None, an_item(1024, id="a")) == 1
    assert costs.write_units(PLAIN, None, an_item(1025, id="a")) == 2
    # An update that shrinks the item costs what the item was; a delete, what it was.
    assert costs.write_units(PLAIN, an_item(2100, id="a"), an_item(900, id="a")) == 3
    assert costs.write_units(PLAIN, an_item(1500, id="a"), None) == 2
    # Deleting nothing still costs a unit.
    assert costs.write_units(PLAIN, None, None) == 1


def test_a_new_item_is_written_to_every_index_whose_keys_it_has() -> None:
    # Given an item with the ALL index's keys, and not the other, sparse, indexes' keys
    item = an_item(1500, id="e1", customer="c1", created="2026-01-01")

    # Then the table and the ALL index each cost 2 units, the other indexes nothing
    assert costs.write_units(EXECUTIONS, None, item) == 2 + 2


def test_an_index_entry_holds_its_projection_only() -> None:
    item = an_item(3000, id="e1", unfinished="u", created="2026-01-01", status="running", note="n")

    keys_only = costs.index_entry(EXECUTIONS, EXECUTIONS.indexes[1], item)
    included = costs.index_entry(EXECUTIONS, EXECUTIONS.indexes[2], item)

    assert sorted(keys_only or {}) == ["created", "id", "unfinished"]
    assert sorted(included or {}) == ["created", "id", "note", "status"]
    # So a large item costs 1 unit in those indexes, 3 in the table.
    assert costs.write_units(EXECUTIONS, None, item) == 3 + 1 + 1


def test_an_update_that_changes_an_index_key_deletes_the_old_entry_and_puts_the_new_one() -> None:
    before = an_item(800, id="e1", status="running", created="2026-01-01")
    after = an_item(800, id="e1", status="completed", created="2026-01-01")

    assert costs.index_write_units(EXECUTIONS, EXECUTIONS.indexes[2], before, after) == 2
    assert costs.write_units(EXECUTIONS, before, after) == 1 + 2


def test_an_update_of_attributes_an_index_does_not_project_costs_nothing_there() -> None:
    before = an_item(800, id="e1", unfinished="u", created="2026-01-01", step="backup")
    after = an_item(800, id="e1", unfinished="u", created="2026-01-01", step="act00")

    assert costs.index_write_units(EXECUTIONS, EXECUTIONS.indexes[1], before, after) == 0
    assert costs.write_units(EXECUTIONS, before, after) == 1


def test_an_update_that_removes_an_index_key_deletes_its_entry() -> None:
    before = an_item(800, id="e1", unfinished="u", created="2026-01-01")
    after = an_item(800, id="e1", created="2026-01-01")

    assert costs.index_write_units(EXECUTIONS, EXECUTIONS.indexes[1], before, after) == 1


def test_a_refused_conditional_write_costs_the_existing_item_and_no_index() -> None:
    existing = an_item(2500, id="e1", customer="c1", created="2026-01-01")

    assert costs.write_units(EXECUTIONS, existing, existing, condition_failed=True) == 3
    assert costs.write_units(EXECUTIONS, None, None, condition_failed=True) == 1


def test_a_write_in_a_transaction_costs_twice() -> None:
    assert costs.write_units(PLAIN, None, an_item(1500, id="a"), transactional=True) == 4


def test_reads_are_counted_one_unit_per_read_request() -> None:
    assert costs.read_units(["GetItem", "PutItem", "Query", "UpdateItem", "Scan"]) == 3


# -- prices -------------------------------------------------------------------------------------------


def test_lambda_bills_each_invocation_rounded_up_to_the_millisecond() -> None:
    assert costs.lambda_gb_seconds([0.0101, 0.002], memory_mb=1024) == pytest.approx(0.011 + 0.002)
    assert costs.lambda_gb_seconds([1.0], memory_mb=512) == pytest.approx(0.5)


def test_the_price_of_a_thousand_executions_is_the_list_price_of_each_service() -> None:
    cost = costs.execution_cost(
        transitions=12, invocations=10, gb_seconds=2.0, architecture="arm64", write_units=40, read_units=20
    )

    per_thousand = cost.per_thousand()

    assert per_thousand["step_functions"] == pytest.approx(0.30)  # 12,000 transitions at $0.025 per 1,000
    assert per_thousand["lambda_requests"] == pytest.approx(0.002)  # 10,000 requests at $0.20 per million
    assert per_thousand["lambda_compute"] == pytest.approx(2000 * 0.0000133334)
    assert per_thousand["dynamodb_writes"] == pytest.approx(0.025)  # 40,000 WRU at $0.625 per million
    assert per_thousand["dynamodb_reads"] == pytest.approx(0.0025)  # 20,000 RRU at $0.125 per million
    assert per_thousand["total"] == pytest.approx(sum(v for k, v in per_thousand.items() if k != "total"))


def test_x86_compute_costs_more_than_arm64() -> None:
    def compute(architecture: str) -> float:
        return costs.execution_cost(
            transitions=0, invocations=0, gb_seconds=1.0, architecture=architecture, write_units=0, read_units=0
        ).lambda_compute

    assert compute("x86_64") == pytest.approx(0.0000166667)
    assert compute("arm64") == pytest.approx(0.0000133334)


# -- state machine definitions and histories ---------------------------------------------------------


def task(step: str, following: str, catch: str | None = "Rollback") -> dict[str, Any]:
    state: dict[str, Any] = {
        "Type": "Task",
        "Resource": "arn:aws:states:::lambda:invoke",
        "Parameters": {"FunctionName": "f", "Payload": {"step": step, "execution_id.$": "$.execution_id"}},
        "Next": following,
    }
    if catch:
        state["Catch"] = [{"ErrorEquals": ["States.ALL"], "Next": catch}]
    return state


def definition(*, check_first: bool = False, verify: bool = True) -> dict[str, Any]:
    """Prepare, then a dry run's success or the acting phase: act, wait 15 s, check, verify; any
    acting failure rolls back. With `check_first`, the check comes before the first wait."""
    after_act = "CheckAction" if check_first else "WaitAction"
    return {
        "StartAt": "Prepare",
        "States": {
            "Prepare": task("prepare", "IsDryRun", catch=None),
            "IsDryRun": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.dry_run", "BooleanEquals": True, "Next": "DryRunReported"}],
                "Default": "Scheduled",
            },
            "Scheduled": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.at", "IsPresent": True, "Next": "WaitForTime"}],
                "Default": "Act",
            },
            "WaitForTime": {"Type": "Wait", "TimestampPath": "$.at", "Next": "Act"},
            "DryRunReported": {"Type": "Succeed"},
            "Act": task("act", after_act),
            "WaitAction": {"Type": "Wait", "Seconds": 15, "Next": "CheckAction"},
            "CheckAction": task("check_action", "ActionDone"),
            "ActionDone": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.done", "BooleanEquals": True, "Next": "Verify" if verify else "Record"}],
                "Default": "WaitAction",
            },
            "Verify": task("verify", "Record"),
            "Record": task("record", "Completed"),
            "Completed": {"Type": "Succeed"},
            "Rollback": task("rollback", "RolledBack", catch="Failed"),
            "RolledBack": {"Type": "Succeed"},
            "Failed": {"Type": "Fail"},
        },
    }


def test_the_happy_path_goes_through_the_acting_phase_and_waits_as_the_definition_says() -> None:
    path = asl.happy_path(definition())

    # The dry run's success waits nothing but does not act; the scheduled wait is not taken.
    assert path.states == (
        "Prepare",
        "IsDryRun",
        "Scheduled",
        "Act",
        "WaitAction",
        "CheckAction",
        "ActionDone",
        "Verify",
        "Record",
        "Completed",
    )
    assert path.wait_seconds == 15


def test_a_check_before_the_first_wait_makes_the_happy_path_wait_nothing() -> None:
    path = asl.happy_path(definition(check_first=True))

    assert path.wait_seconds == 0
    assert "WaitAction" not in path.states


def test_a_wait_whose_seconds_come_from_the_input_is_named_as_unresolved() -> None:
    waits_by_path = definition()
    waits_by_path["States"]["WaitAction"] = {
        "Type": "Wait",
        "SecondsPath": "$.check.wait_seconds",
        "Next": "CheckAction",
    }

    path = asl.happy_path(waits_by_path)

    assert (path.wait_seconds, path.unresolved_waits) == (0, ("WaitAction",))


def test_the_rollback_path_fails_verification_or_else_the_last_acting_step() -> None:
    assert asl.fault_step(definition()) == "verify"
    assert asl.fault_step(definition(verify=False)) == "record"


def test_transitions_and_lambda_tasks_are_read_from_the_history() -> None:
    history: list[dict[str, Any]] = [
        {"type": "ExecutionStarted"},
        {"type": "TaskStateEntered", "stateEnteredEventDetails": {"name": "Act"}},
        {"type": "TaskScheduled", "taskScheduledEventDetails": {"resourceType": "lambda", "resource": "invoke"}},
        {"type": "TaskSucceeded"},
        {"type": "TaskStateExited"},
        {"type": "WaitStateEntered", "stateEnteredEventDetails": {"name": "WaitAction", "input": "{}"}},
        {"type": "WaitStateExited"},
        {"type": "ChoiceStateEntered"},
        {"type": "SucceedStateEntered"},
        {"type": "ExecutionSucceeded"},
    ]

    assert asl.transitions(history) == 4
    assert asl.lambda_tasks(history) == 1
    assert asl.waits_entered(definition(), history) == 15


def test_a_wait_entered_by_seconds_path_counts_the_seconds_its_input_held() -> None:
    waits_by_path = definition()
    waits_by_path["States"]["WaitAction"] = {
        "Type": "Wait",
        "SecondsPath": "$.check.wait_seconds",
        "Next": "CheckAction",
    }
    entered = {"name": "WaitAction", "input": json.dumps({"check": {"wait_seconds": 20}})}

    assert asl.waits_entered(waits_by_path, [{"type": "WaitStateEntered", "stateEnteredEventDetails": entered}]) == 20


# -- the write recorder, on moto in-process -------------------------------------------------------------


@mock_aws
def test_the_recorder_sees_each_write_with_the_item_before_and_after() -> None:
    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    dynamodb.create_table(
        TableName="t",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    writes = DynamoDbWrites()
    writes.install()
    try:
        dynamodb.put_item(TableName="t", Item={"id": {"S": "a"}, "n": {"N": "1"}})
        dynamodb.update_item(
            TableName="t",
            Key={"id": {"S": "a"}},
            UpdateExpression="SET n = :two",
            ExpressionAttributeValues={":two": {"N": "2"}},
        )
        with pytest.raises(dynamodb.exceptions.ConditionalCheckFailedException):
            dynamodb.put_item(TableName="t", Item={"id": {"S": "a"}}, ConditionExpression="attribute_not_exists(id)")
        dynamodb.delete_item(TableName="t", Key={"id": {"S": "a"}})
    finally:
        writes.uninstall()

    recorded = [(w.operation, w.before, w.after, w.condition_failed) for w in writes.since(0)]
    one, two = {"id": {"S": "a"}, "n": {"N": "1"}}, {"id": {"S": "a"}, "n": {"N": "2"}}
    assert recorded == [
        ("put_item", None, one, False),
        ("update_item", one, two, False),
        ("put_item", two, two, True),
        ("delete_item", two, None, False),
    ]
