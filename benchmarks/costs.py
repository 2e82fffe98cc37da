"""What an execution costs on AWS, from what it did on the local runtime: DynamoDB item sizes and
request units by DynamoDB's rules, and list prices (us-east-1, on-demand) of Step Functions Standard,
Lambda and DynamoDB. Pure functions: `benchmarks.instruments` records what happened, these price it.

Items are in DynamoDB's wire format (`{"name": {"S": "value"}}`), as moto keeps them.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

Item = Mapping[str, Mapping[str, Any]]

WRITE_UNIT_BYTES = 1024  # one write request unit: up to 1 KB
READ_UNIT_BYTES = 4096  # one read request unit: a strongly consistent read of up to 4 KB

# List prices, us-east-1.
STEP_FUNCTIONS_PER_TRANSITION = 0.025 / 1000  # Standard workflows
LAMBDA_PER_REQUEST = 0.20 / 1_000_000
LAMBDA_PER_GB_SECOND = {"arm64": 0.0000133334, "x86_64": 0.0000166667}
DYNAMODB_PER_WRITE_UNIT = 0.625 / 1_000_000  # on-demand write request unit
DYNAMODB_PER_READ_UNIT = 0.125 / 1_000_000  # on-demand read request unit


# -- item size ----------------------------------------------------------------------------------------


def number_size(text: str) -> int:
    """A number's size: 1 byte per two significant digits (leading and trailing zeros trimmed), plus 1."""
    significant = "".join(map(str, Decimal(text).normalize().as_tuple().digits)).strip("0")
    return math.ceil(len(significant) / 2) + 1


def _binary_size(value: bytes | str) -> int:
    # The wire format carries binary values base64-encoded; their size is that of the raw bytes.
    return len(value) if isinstance(value, bytes) else len(base64.b64decode(value))


def attribute_size(value: Mapping[str, Any]) -> int:
    """The size of one attribute value (without its name), by DynamoDB's rules: strings and binaries
    their bytes, numbers as `number_size`, booleans and nulls 1 byte, sets the sum of their elements,
    lists and maps 3 bytes plus 1 byte per element (and, in a map, each element's name)."""
    [(kind, content)] = value.items()
    match kind:
        case "S":
            return len(str(content).encode())
        case "N":
            return number_size(str(content))
        case "B":
            return _binary_size(content)
        case "BOOL" | "NULL":
            return 1
        case "SS":
            return sum(len(str(element).encode()) for element in content)
        case "NS":
            return sum(number_size(str(element)) for element in content)
        case "BS":
            return sum(_binary_size(element) for element in content)
        case "L":
            return 3 + sum(attribute_size(element) + 1 for element in content)
        case "M":
            return 3 + sum(len(name.encode()) + attribute_size(element) + 1 for name, element in content.items())
    raise ValueError(f"not a DynamoDB attribute value: {kind!r}")


def item_size(item: Item) -> int:
    """An item's size: the lengths of its attribute names (UTF-8) plus the sizes of their values."""
    return sum(len(name.encode()) + attribute_size(value) for name, value in item.items())


# -- write and read units -----------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexDefinition:
    """A global secondary index: its keys, and the attributes its items hold (None: all of the table
    item's, a projection of ALL; the table's and the index's keys are always held)."""

    name: str
    key_attributes: tuple[str, ...]
    attributes: frozenset[str] | None = None


@dataclass(frozen=True)
class TableDefinition:
    name: str
    key_attributes: tuple[str, ...]
    indexes: tuple[IndexDefinition, ...] = field(default=())


def units(size: int, unit_bytes: int = WRITE_UNIT_BYTES) -> int:
    """Request units for `size` bytes: every started unit counts, and a request costs at least one."""
    return max(1, math.ceil(size / unit_bytes))


def index_entry(table: TableDefinition, index: IndexDefinition, item: Item | None) -> dict[str, Any] | None:
    """What `index` holds of `item`: None when the item lacks one of the index's keys (a sparse index),
    else the table's and the index's keys plus the projected attributes."""
    if item is None or any(key not in item for key in index.key_attributes):
        return None
    if index.attributes is None:
        return dict(item)
    kept = {*table.key_attributes, *index.key_attributes, *index.attributes}
    return {name: value for name, value in item.items() if name in kept}


def index_write_units(table: TableDefinition, index: IndexDefinition, before: Item | None, after: Item | None) -> int:
    """The write units one table write costs in one index, by DynamoDB's rules: an entry put, or
    deleted, costs its size; a changed index key costs the old entry's delete and the new one's put;
    an entry whose projected attributes did not change costs nothing."""
    old, new = index_entry(table, index, before), index_entry(table, index, after)
    if old is None and new is None:
        return 0
    if old is None:
        return units(item_size(new or {}))
    if new is None:
        return units(item_size(old))
    if any(old[key] != new[key] for key in index.key_attributes):
        return units(item_size(old)) + units(item_size(new))
    return 0 if old == new else units(item_size(new))


def write_units(
    table: TableDefinition,
    before: Item | None,
    after: Item | None,
    *,
    condition_failed: bool = False,
    transactional: bool = False,
) -> int:
    """The write request units of one PutItem, UpdateItem or DeleteItem: the table's (the larger of the
    item before and after, per started KB) plus each index's (`index_write_units`). A write whose
    condition failed still costs the existing item's size in the table, and nothing in the indexes. A
    write in a transaction costs twice."""
    if condition_failed:
        total = units(item_size(before or {}))
    else:
        total = units(max(item_size(before or {}), item_size(after or {})))
        total += sum(index_write_units(table, index, before, after) for index in table.indexes)
    return total * (2 if transactional else 1)


# DynamoDB's read operations; each read request is priced as 1 read unit (see `read_units`).
READ_OPERATIONS = frozenset({"GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems"})
WRITE_OPERATIONS = frozenset(
    {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems", "ExecuteStatement"}
)


def read_units(operations: Iterable[str]) -> int:
    """An approximation: 1 read unit per read request, as a strongly consistent read of up to 4 KB
    costs (a page of a query over more than 4 KB of items costs more, an eventually consistent read half)."""
    return sum(1 for operation in operations if operation in READ_OPERATIONS)


# -- prices -------------------------------------------------------------------------------------------


def lambda_gb_seconds(durations_seconds: Iterable[float], memory_mb: int) -> float:
    """GB-seconds as Lambda bills them: each invocation's duration rounded up to the millisecond."""
    return sum(math.ceil(seconds * 1000) / 1000 for seconds in durations_seconds) * memory_mb / 1024


@dataclass(frozen=True)
class ExecutionCost:
    """The dollars one execution costs, by service."""

    step_functions: float
    lambda_requests: float
    lambda_compute: float
    dynamodb_writes: float
    dynamodb_reads: float

    @property
    def total(self) -> float:
        return (
            self.step_functions
            + self.lambda_requests
            + self.lambda_compute
            + self.dynamodb_writes
            + self.dynamodb_reads
        )

    def per_thousand(self) -> dict[str, float]:
        """Each service's price and the total, per 1,000 executions."""
        return {name: 1000 * value for name, value in {**vars(self), "total": self.total}.items()}


def execution_cost(
    *,
    transitions: int,
    invocations: int,
    gb_seconds: float,
    architecture: str,
    write_units: int,
    read_units: int,
) -> ExecutionCost:
    """List prices, us-east-1: Step Functions Standard per state transition, Lambda per request and
    per GB-second of its architecture, DynamoDB on-demand per write and read request unit."""
    return ExecutionCost(
        step_functions=transitions * STEP_FUNCTIONS_PER_TRANSITION,
        lambda_requests=invocations * LAMBDA_PER_REQUEST,
        lambda_compute=gb_seconds * LAMBDA_PER_GB_SECOND[architecture],
        dynamodb_writes=write_units * DYNAMODB_PER_WRITE_UNIT,
        dynamodb_reads=read_units * DYNAMODB_PER_READ_UNIT,
    )
