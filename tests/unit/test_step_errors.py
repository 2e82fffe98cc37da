"""error_message: what an execution records when a state machine catches a failed step."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cost_engine.steps import error_message


def test_a_lambda_errors_cause_becomes_its_type_and_message() -> None:
    # Given what a Catch hands on when the executor function raised ActionFailed
    caught = {
        "Error": "ActionFailed",
        "Cause": json.dumps(
            {
                "errorMessage": "TerminateInstances failed: OperationNotPermitted",
                "errorType": "ActionFailed",
                "requestId": "0b1f6c2e-1111-2222-3333-444455556666",
                "stackTrace": ['  File "/var/task/handler.py", line 30, in lambda_handler\n'],
            }
        ),
    }

    # Then the recorded message is readable, without the stack trace
    assert error_message(caught) == "ActionFailed: TerminateInstances failed: OperationNotPermitted"


@pytest.mark.parametrize(
    ("caught", "expected"),
    [
        ({"Error": "States.Timeout"}, "States.Timeout"),
        ({"Error": "States.Timeout", "Cause": None}, "States.Timeout"),
        ({"Error": "States.Timeout", "Cause": ""}, "States.Timeout"),
        ({"Error": "States.TaskFailed", "Cause": "Task timed out"}, "States.TaskFailed: Task timed out"),
        ({"Error": "States.TaskFailed", "Cause": "{not json"}, "States.TaskFailed: {not json"),
        ({"Cause": "boom"}, "Error: boom"),
    ],
)
def test_a_cause_that_is_missing_or_not_a_lambda_error_is_kept_as_it_is(caught: dict[str, Any], expected: str) -> None:
    assert error_message(caught) == expected


@pytest.mark.parametrize("caught", [None, {}])
def test_no_error_at_all_is_an_unknown_error(caught: dict[str, Any] | None) -> None:
    assert error_message(caught) == "unknown error"


@pytest.mark.parametrize(
    ("cause", "expected"),
    [
        ({"errorType": "Runtime.ExitError"}, "Lambda.Unknown: Runtime.ExitError"),
        (
            {"errorType": "KeyError", "errorMessage": "", "stackTrace": ['  File "/var/task/x.py", line 3\n']},
            "Lambda.Unknown: KeyError",
        ),
        ({"stackTrace": ['  File "/var/task/x.py", line 3\n']}, "Lambda.Unknown"),
    ],
)
def test_a_lambda_error_without_a_message_is_named_by_its_type_never_by_its_stack_trace(
    cause: dict[str, Any], expected: str
) -> None:
    assert error_message({"Error": "Lambda.Unknown", "Cause": json.dumps(cause)}) == expected
