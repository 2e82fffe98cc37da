"""What the bench records on a running local runtime, besides the request log it keeps itself
(`runtime.aws_requests`): each DynamoDB write with the item before and after it (for the write units),
and each function invocation with its duration (for Lambda's GB-seconds). Both keep an ever-growing
log read by windows (`mark()`, then `since(mark)`), as `AwsRequests` does.
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from local_runtime.dispatch import Dispatcher

T = TypeVar("T")


class Log(Generic[T]):
    """A thread-safe append-only log read by windows."""

    def __init__(self) -> None:
        self._entries: list[T] = []
        self._lock = threading.Lock()

    def append(self, entry: T) -> None:
        with self._lock:
            self._entries.append(entry)

    def mark(self) -> int:
        with self._lock:
            return len(self._entries)

    def since(self, mark: int) -> list[T]:
        with self._lock:
            return self._entries[mark:]


# -- DynamoDB writes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableWrite:
    table: str
    operation: str  # put_item, update_item or delete_item
    # The item before and after the write, in DynamoDB's wire format; None where there was none.
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    condition_failed: bool = False
    transactional: bool = False


WRITES = ("put_item", "update_item", "delete_item")


class DynamoDbWrites(Log[TableWrite]):
    """Every write moto's DynamoDB backend applies or refuses on its condition (a BatchWriteItem's and
    a TransactWriteItems' items each as one), with the item before and after it.

    The recorder wraps the backend's write methods on top of the local runtime's own serialization
    (emulations/dynamodb_atomic_writes) and takes a lock of its own around each write, so that no other
    write comes between the read of the item before, the write and the read of the item after."""

    def __init__(self) -> None:
        super().__init__()
        self._write_lock = threading.RLock()
        self._in_transaction = threading.local()
        self._originals: dict[str, Callable[..., Any]] = {}

    def install(self) -> None:
        from moto.dynamodb.models import DynamoDBBackend

        for name in (*WRITES, "transact_write_items"):
            self._originals[name] = getattr(DynamoDBBackend, name)
            recorded = self._transaction(self._originals[name]) if name == "transact_write_items" else None
            setattr(DynamoDBBackend, name, recorded or self._recording(name, self._originals[name]))

    def uninstall(self) -> None:
        from moto.dynamodb.models import DynamoDBBackend

        for name, original in self._originals.items():
            setattr(DynamoDBBackend, name, original)
        self._originals.clear()

    def _transaction(self, write: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(write)
        def in_transaction(*args: Any, **kwargs: Any) -> Any:
            with self._write_lock:
                self._in_transaction.active = True
                try:
                    return write(*args, **kwargs)
                finally:
                    self._in_transaction.active = False

        return in_transaction

    def _recording(self, operation: str, write: Callable[..., Any]) -> Callable[..., Any]:
        from moto.dynamodb.exceptions import ConditionalCheckFailed

        signature = inspect.signature(write)

        @functools.wraps(write)
        def recording(backend: Any, *args: Any, **kwargs: Any) -> Any:
            arguments = signature.bind(backend, *args, **kwargs).arguments
            table_name = str(arguments["table_name"])
            with self._write_lock:
                key = _key(backend, table_name, arguments)
                before = _item(backend, table_name, key)
                transactional = bool(getattr(self._in_transaction, "active", False))
                try:
                    result = write(backend, *args, **kwargs)
                except ConditionalCheckFailed:
                    self.append(TableWrite(table_name, operation, before, before, True, transactional))
                    raise
                after = None if operation == "delete_item" else _item(backend, table_name, key)
                self.append(TableWrite(table_name, operation, before, after, False, transactional))
                return result

        return recording


def _key(backend: Any, table_name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    if "key" in arguments:
        return dict(arguments["key"])
    table = backend.get_table(table_name)
    names = [table.hash_key_attr] + ([table.range_key_attr] if table.range_key_attr else [])
    return {name: arguments["item_attrs"][name] for name in names}


def _item(backend: Any, table_name: str, key: dict[str, Any]) -> dict[str, Any] | None:
    found = backend.get_item(table_name, key)
    return None if found is None else dict(found.to_json()["Attributes"])


# -- function invocations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Invocation:
    function: str
    step: str | None  # the state machine step an executor function ran
    seconds: float  # the handler's wall time in this process


class Invocations(Log[Invocation]):
    """Every invocation the runtime's dispatcher runs: the state machines' tasks, the API's requests,
    the trigger's events; with the handler's wall time (the emulated AWS it waits for included)."""

    def install(self, dispatcher: Dispatcher) -> None:
        run = dispatcher.run

        @functools.wraps(run)
        def timed(function_name: str, event: Any) -> Any:
            started = time.perf_counter()
            try:
                return run(function_name, event)
            finally:
                step = event.get("step") if isinstance(event, dict) else None
                self.append(Invocation(function_name, step, time.perf_counter() - started))

        # The API server and Lambda's invoke call `dispatcher.run` on the instance: this one.
        setattr(dispatcher, "run", timed)  # noqa: B010
