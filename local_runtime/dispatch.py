"""In-process dispatch of Lambda invocations to the real handlers, and fault injection.

moto would run Lambda functions in Docker; here its invoke is pointed at the handler functions of
`functions/`, called in this process with a Lambda-like context. Faults can be injected per step to
prove that the state machines roll back when a step fails before or after it acted.
"""

from __future__ import annotations

import json
import threading
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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


class FaultInjector:
    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

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


class Dispatcher:
    """Maps function names to handlers and runs an invocation as Lambda would answer it."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}
        self.faults = FaultInjector()

    def register(self, function_name: str, handler: Handler) -> None:
        self.handlers[function_name] = handler

    def invoke(self, function_name: str, event: Any) -> tuple[str, bool]:
        """Returns (payload, errored) like the Lambda Invoke API: errors as errorType/errorMessage."""
        handler = self.handlers.get(function_name)
        if handler is None:
            return _error_payload(LookupError(f"no local handler for function {function_name}")), True
        try:
            if fault := self.faults.take(event, "before"):
                raise fault.error(f"fault injected before step '{event.get('step')}'")
            result = handler(event, LambdaContext(function_name=function_name))
            if fault := self.faults.take(event, "after"):
                raise fault.error(f"fault injected after step '{event.get('step')}' acted")
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
