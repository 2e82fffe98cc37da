"""DynamoDB's per-item atomicity of conditional writes, which moto lacks under concurrency.

On AWS a conditional PutItem, UpdateItem or DeleteItem checks its condition and writes in one step:
two writers can never both pass a condition that only one should. moto checks and then writes in
plain Python, and the local runtime serves requests on many threads, so two concurrent writes can
both see the old item and both succeed. The engine's safety rests on those conditions (the first
decision wins, one execution per resource, one holder per acting slot), so the emulation runs each
write of moto's DynamoDB backend under one lock: writes are serialized, reads are not.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from local_runtime.runtime import LocalRuntime

WRITES = ("put_item", "update_item", "delete_item", "transact_write_items")
_lock = threading.RLock()


def _serialized(write: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(write)
    def locked(*args: Any, **kwargs: Any) -> Any:
        with _lock:
            return write(*args, **kwargs)

    locked.serialized = True  # type: ignore[attr-defined]
    return locked


def install(runtime: LocalRuntime | None) -> None:
    from moto.dynamodb.models import DynamoDBBackend

    for name in WRITES:
        write = getattr(DynamoDBBackend, name)
        if not getattr(write, "serialized", False):
            setattr(DynamoDBBackend, name, _serialized(write))
