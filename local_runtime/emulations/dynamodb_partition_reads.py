"""DynamoDB's Query reads one partition, not the whole table; moto's reads and sorts every item.

moto answers each Query by sorting all the items of the table (`Table.all_items`) and then keeping
those of the asked key. The results are right, but the cost grows with the table: in one long
local runtime the audit table holds every event of every execution, and each status read (which
queries one execution's events) sorted all of them, so every execution was slower than the one
before. DynamoDB itself reads only the items of the key asked for.

The emulation hands a Query only the items that can match, in the same order: the partition of the
asked hash key for a table query, the items whose index hash key attributes hold the asked values
for an index query. moto's own code then filters, sorts, pages and projects them as before, so the
answers are the same ones (tests/unit/test_dynamodb_partition_reads.py compares them).
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from local_runtime.runtime import LocalRuntime

# The query in progress on this thread (moto serves each request on a thread of its own).
_asked = threading.local()


def _candidates(table: Any) -> list[Any] | None:
    """The items the running query on `table` can match, or None when no query narrows them."""
    scope = getattr(_asked, "scope", None)
    if scope is None or scope[0] is not table:
        return None
    _, hash_key, conditions = scope
    if conditions is None:  # a table query: one partition
        partition = table.items.get(hash_key)
        if partition is None:
            return []
        return list(partition.values()) if table.range_key_attr else [partition]
    return [
        item
        for partition in table.items.values()
        for item in (partition.values() if table.range_key_attr else [partition])
        if all((value := item.attrs.get(name)) and value == wanted for name, wanted in conditions)
    ]


def _narrowed_all_items(all_items: Callable[[Any], list[Any]]) -> Callable[[Any], list[Any]]:
    @functools.wraps(all_items)
    def narrowed(self: Any) -> list[Any]:
        candidates = _candidates(self)
        if candidates is None:
            return all_items(self)
        # moto's own order (all_items sorts by the table's keys), over fewer items.
        return sorted(candidates, key=lambda x: (x.hash_key, x.range_key) if x.range_key else x.hash_key)

    narrowed.narrowed = True  # type: ignore[attr-defined]
    return narrowed


def _scoped_query(query: Callable[..., Any]) -> Callable[..., Any]:
    signature = inspect.signature(query)

    @functools.wraps(query)
    def scoped(self: Any, *args: Any, **kwargs: Any) -> Any:
        asked = signature.bind(self, *args, **kwargs).arguments
        scope: tuple[Any, Any, tuple[Any, ...] | None] | None
        if asked.get("index_name"):
            conditions = asked.get("hash_key_conditions")
            scope = (self, None, tuple(conditions)) if conditions else None
        else:
            scope = (self, asked.get("hash_key"), None) if asked.get("hash_key") is not None else None
        _asked.scope = scope
        try:
            return query(self, *args, **kwargs)
        finally:
            _asked.scope = None

    scoped.narrowed = True  # type: ignore[attr-defined]
    return scoped


def install(runtime: LocalRuntime | None) -> None:
    from moto.dynamodb.models.table import Table

    if not getattr(Table.query, "narrowed", False):
        Table.query = _scoped_query(Table.query)  # type: ignore[method-assign]
    if not getattr(Table.all_items, "narrowed", False):
        Table.all_items = _narrowed_all_items(Table.all_items)  # type: ignore[method-assign,assignment]
