"""DynamoDB's item answers written as the JSON they already are, not through moto's generic serializer.

moto 5.2 writes every answer through a serializer that walks the operation's output shape attribute
by attribute; for DynamoDB's item operations that walk is most of the work of a call (a sixth of the
local runtime's CPU under load: every status read, step and slot claim reads items). Their answers
hold nothing that needs the walk: items are already in DynamoDB's JSON form (`{"S": ...}`,
`{"N": "..."}`, ...), and the other members are counts, keys and capacities. So for those operations
the answer moto computed is written with `json.dumps`, with the headers the serializer sets; any
answer with a value JSON cannot write as it stands (a binary attribute's bytes) still goes through
the serializer. Every other operation (CreateTable's timestamps, say) is untouched.
`tests/unit/test_dynamodb_item_responses_emulation.py` checks that boto3 reads the same answers.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from local_runtime.runtime import LocalRuntime

ITEM_OPERATIONS = frozenset(
    {
        "GetItem",
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "Query",
        "Scan",
        "BatchGetItem",
        "BatchWriteItem",
        "TransactGetItems",
        "TransactWriteItems",
    }
)
HEADERS = {"Content-Type": "application/x-amz-json-1.0"}


def _without_none(value: Any) -> Any:
    """The serializer leaves out members that are None; so does this."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def _direct(execute_result: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(execute_result)
    def write(self: Any, context: Any) -> Any:
        if context.operation_model.name in ITEM_OPERATIONS:
            try:
                body = json.dumps(_without_none(self.result), separators=(",", ":"))
            except TypeError:  # bytes or a datetime: the serializer knows how to write those
                pass
            else:
                return 200, dict(HEADERS), body
        return execute_result(self, context)

    write.direct = True  # type: ignore[attr-defined]
    return write


def install(runtime: LocalRuntime | None) -> None:
    from moto.dynamodb.responses import DynamoResult

    if not getattr(DynamoResult.execute_result, "direct", False):
        DynamoResult.execute_result = _direct(DynamoResult.execute_result)  # type: ignore[method-assign]
