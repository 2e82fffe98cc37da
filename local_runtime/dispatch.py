"""In-process dispatch of Lambda invocations to the real handlers, and fault injection.

moto would run Lambda functions in Docker; here its invoke is pointed at the handler functions of
`functions/`, called in this process with a Lambda-like context. Faults can be injected per step to
prove that the state machines roll back when a step fails before or after it acted.
"""

from __future__ import annotations

import io
import json
import sys
import threading
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

Handler = Callable[[dict[str, Any], Any], Any]


@dataclass
class LambdaContext:
    """What Powertools reads from the real Lambda context."""

    function_name: str
    memory_limit_in_mb: int = 512
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return 120_000


class InjectedFault(Exception):
    """Raised in place of (or after) a step, as a crashing Lambda would fail."""


@dataclass
class Fault:
    step: str
    execution_id: str | None
    when: str  # "before": the step fails without acting; "after": it acts, then fails
    times: int
    # The error name Step Functions sees; "TransientError" is one the state machines retry.
    error_type: str = "InjectedFault"
    hits: int = 0

    def error(self, message: str) -> InjectedFault:
        error_class: type[InjectedFault] = InjectedFault
        if self.error_type != InjectedFault.__name__:
            error_class = type(self.error_type, (InjectedFault,), {})
        return error_class(message)


@dataclass
class Hold:
    """Keeps one step from starting until released: a test can act while an execution is
    provably between two steps (e.g. cancel while it is changing the resource)."""

    step: str
    execution_id: str | None
    reached: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        self.released.set()


class FaultInjector:
    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._holds: list[Hold] = []
        self._lock = threading.Lock()

    def hold(self, step: str, *, execution_id: str | None = None) -> Hold:
        held = Hold(step=step, execution_id=execution_id)
        with self._lock:
            self._holds.append(held)
        return held

    def wait_if_held(self, event: Any, timeout: float = 120.0) -> None:
        """Block a step that a hold matches (once) until the test releases it, at most `timeout`."""
        if not isinstance(event, dict):
            return
        with self._lock:
            held = next(
                (
                    h
                    for h in self._holds
                    if h.step == event.get("step") and h.execution_id in (None, event.get("execution_id"))
                ),
                None,
            )
            if held is not None:
                self._holds.remove(held)
        if held is not None:
            held.reached.set()
            held.released.wait(timeout)

    def inject(
        self,
        step: str,
        *,
        execution_id: str | None = None,
        when: str = "before",
        times: int = 1,
        error_type: str = "InjectedFault",
    ) -> Fault:
        if when not in ("before", "after"):
            raise ValueError("when is 'before' or 'after'")
        fault = Fault(step=step, execution_id=execution_id, when=when, times=times, error_type=error_type)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            for held in self._holds:
                held.release()
            self._holds.clear()

    def take(self, event: Any, when: str) -> Fault | None:
        if not isinstance(event, dict):
            return None
        with self._lock:
            for fault in self._faults:
                if (
                    fault.when == when
                    and fault.step == event.get("step")
                    and fault.execution_id in (None, event.get("execution_id"))
                    and fault.hits < fault.times
                ):
                    fault.hits += 1
                    return fault
        return None


class FunctionOutput(io.TextIOBase):
    """Stands in for sys.stdout: what a function prints during its invocation (its log lines and
    Powertools' metric records) is kept per invocation, as CloudWatch Logs would; everything else
    goes to the real stdout."""

    def __init__(self, real: TextIO) -> None:
        self.real = real
        self._local = threading.local()

    def write(self, text: str) -> int:
        buffer: io.StringIO | None = getattr(self._local, "buffer", None)
        return (buffer or self.real).write(text)

    def flush(self) -> None:
        self.real.flush()

    @contextmanager
    def capture(self) -> Iterator[io.StringIO]:
        self._local.buffer = io.StringIO()
        try:
            yield self._local.buffer
        finally:
            self._local.buffer = None


class Dispatcher:
    """Maps function names to handlers and runs an invocation as Lambda would answer it."""

    def __init__(self, output: FunctionOutput | None = None, echo: bool = False, kept_lines: int = 5000) -> None:
        self.handlers: dict[str, Handler] = {}
        self.faults = FaultInjector()
        self.output = output
        # The last lines the functions printed, newest last: the local stand-in for CloudWatch Logs.
        self.logs: deque[str] = deque(maxlen=kept_lines)
        self.echo = echo

    def register(self, function_name: str, handler: Handler) -> None:
        self.handlers[function_name] = handler

    def run(self, function_name: str, event: Any) -> Any:
        """Call the function's handler as Lambda would, keeping what it prints. Raises its errors."""
        handler = self.handlers.get(function_name)
        if handler is None:
            raise LookupError(f"no local handler for function {function_name}")
        if self.output is None:
            return self._call(function_name, handler, event)
        with self.output.capture() as printed:
            try:
                return self._call(function_name, handler, event)
            finally:
                for line in printed.getvalue().splitlines():
                    self.logs.append(f"{function_name} {line}")
                    if self.echo:
                        print(f"{function_name} {line}", file=sys.stderr)

    def phase_checkpoint(self, phase: str, execution_id: str, when: str) -> None:
        """A phase of a task (cost_engine.steps), as a whole task is here: held or failed by name."""
        event = {"step": phase, "execution_id": execution_id}
        if when == "before":
            self.faults.wait_if_held(event)
        if fault := self.faults.take(event, when):
            # Worded as for a whole task: a test reads the same message whichever carries the step.
            raise fault.error(
                f"fault injected after step '{phase}' acted"
                if when == "after"
                else f"fault injected before step '{phase}'"
            )

    def _call(self, function_name: str, handler: Handler, event: Any) -> Any:
        self.faults.wait_if_held(event)
        if fault := self.faults.take(event, "before"):
            raise fault.error(f"fault injected before step '{event.get('step')}'")
        result = handler(event, LambdaContext(function_name=function_name))
        if fault := self.faults.take(event, "after"):
            raise fault.error(f"fault injected after step '{event.get('step')}' acted")
        return result

    def invoke(self, function_name: str, event: Any) -> tuple[str, bool]:
        """Returns (payload, errored) like the Lambda Invoke API: errors as errorType/errorMessage."""
        try:
            result = self.run(function_name, event)
        except Exception as error:  # a Lambda reports every exception as a function error
            return _error_payload(error), True
        return json.dumps(result), False


def _error_payload(error: Exception) -> str:
    return json.dumps(
        {
            "errorType": type(error).__name__,
            "errorMessage": str(error),
            "stackTrace": traceback.format_exception(error)[-5:],
        }
    )


_metrics_lock = threading.RLock()


def one_metric_flush_at_a_time() -> None:
    """Powertools keeps one metric set per process, shared by every Metrics object. On Lambda each
    invocation has its process; here invocations run on threads of one, so one invocation's flush
    could clear the set between another's check that it holds metrics and its serialization, which
    then fails the handler ("Must contain at least one metric"), and an add could change the set
    while it is serialized. Adding and flushing take one lock: a flush may still publish another
    invocation's metrics (harmless locally), but never fails."""
    from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

    for name in ("add_metric", "flush_metrics", "serialize_metric_set"):
        method = getattr(AmazonCloudWatchEMFProvider, name)
        if getattr(method, "one_at_a_time", False):
            continue

        def locked(*args: Any, _method: Callable[..., Any] = method, **kwargs: Any) -> Any:
            with _metrics_lock:
                return _method(*args, **kwargs)

        locked.one_at_a_time = True  # type: ignore[attr-defined]
        setattr(AmazonCloudWatchEMFProvider, name, locked)
