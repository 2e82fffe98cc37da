"""Step Functions' `Step Functions Execution Status Change` events, which moto 5.2.5 does not emit.

On AWS, Step Functions puts an event on the account's default EventBridge bus whenever a run of a
standard state machine changes status. Here the end of every run is announced once: when moto's
interpreter reports a run over (its worker's `terminated`, after the run's status is set), the event
is put on the default bus through moto's EventBridge backend, so the rules there match it and the
eventbridge_lambda_targets emulation delivers it. That covers each way a run ends: SUCCEEDED,
FAILED, TIMED_OUT and ABORTED.

StopExecution is emulated as AWS does it, too: the run is ABORTED (and announced) at once. moto's
interpreter ends a stopped run only when the state in flight returns, which for a Lambda task is
when the function returns and for a `.waitForTaskToken` task (an approval) is when its timeout,
up to a day, runs out. As on AWS, a Lambda invocation in flight still runs to its end; its result
is thrown away.

Left out: the RUNNING event of a start, express workflows (AWS does not emit these events for them),
and the redrive fields. `wait_announced` lets a test wait for a run's event to be on the bus.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from moto.stepfunctions.parser.backend.execution import Execution

    from local_runtime.runtime import LocalRuntime

logger = logging.getLogger(__name__)

SOURCE = "aws.states"
DETAIL_TYPE = "Step Functions Execution Status Change"
# The newest runs' events are kept for `wait_announced`; a long `make serve` keeps no more.
KEPT_EVENTS = 1000


class _Announced:
    """The events put so far, by execution ARN, so a caller can wait for a run's."""

    def __init__(self) -> None:
        self._events: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._changed = threading.Condition()

    def __contains__(self, execution_arn: str) -> bool:
        with self._changed:
            return execution_arn in self._events

    def add(self, execution_arn: str, event: dict[str, Any]) -> None:
        with self._changed:
            self._events[execution_arn] = event
            while len(self._events) > KEPT_EVENTS:
                self._events.popitem(last=False)
            self._changed.notify_all()

    def wait(self, execution_arn: str, timeout: float) -> dict[str, Any]:
        with self._changed:
            if not self._changed.wait_for(lambda: execution_arn in self._events, timeout):
                raise TimeoutError(f"no status change event of {execution_arn} after {timeout}s")
            return self._events[execution_arn]


_announced = _Announced()
# A stopped run is announced by `stop` and reported over again by the interpreter: once is enough.
_announcing = threading.Lock()


def wait_announced(execution_arn: str, timeout: float = 30.0) -> dict[str, Any]:
    """The PutEvents entry announcing how the run ended, once it is on the default bus (and handed
    to the rules' targets); TimeoutError if the run has not ended after `timeout` seconds."""
    return _announced.wait(execution_arn, timeout)


def install(runtime: LocalRuntime | None) -> None:
    """Make moto announce the end of each standard state machine run, and end a stopped run at once.
    Safe to call more than once."""
    from moto.stepfunctions.parser.api import ExecutionStatus
    from moto.stepfunctions.parser.backend.execution import BaseExecutionWorkerCommunication, Execution

    plain_terminated = BaseExecutionWorkerCommunication.terminated
    if getattr(plain_terminated, "announces_status", False):
        return
    plain_stop = Execution.stop

    def terminated(self: BaseExecutionWorkerCommunication) -> None:
        execution = self.execution
        stopped_at = execution.stop_date if execution.exec_status == ExecutionStatus.ABORTED else None
        plain_terminated(self)  # sets the run's final status, stop date, error and cause
        if stopped_at is not None:
            # Ended by `stop` when StopExecution was called: that status and time stand.
            execution.exec_status = ExecutionStatus.ABORTED
            execution.stop_date = stopped_at
        _announce_safely(execution)

    def stop(self: Execution, stop_date: datetime, error: str | None, cause: str | None) -> None:
        plain_stop(self, stop_date, error, cause)  # the interpreter stops at the next state
        if self.exec_status == ExecutionStatus.RUNNING:
            self.exec_status = ExecutionStatus.ABORTED
            self.stop_date = stop_date
            _announce_safely(self)

    setattr(terminated, "announces_status", True)  # noqa: B010
    setattr(BaseExecutionWorkerCommunication, "terminated", terminated)  # noqa: B010
    setattr(Execution, "stop", stop)  # noqa: B010


def _announce_safely(execution: Execution) -> None:
    try:
        _announce(execution)
    except Exception:
        # This runs in the interpreter's or the server's thread: say which run it was.
        logger.exception("announcing the end of %s failed", execution.exec_arn)


def status_change_entry(execution: Execution) -> dict[str, Any]:
    """The PutEvents entry of the event Step Functions emits for the run's current status."""
    status = str(execution.status)
    detail = {
        "executionArn": execution.exec_arn,
        "stateMachineArn": execution.state_machine_arn,
        "name": execution.name,
        "status": status,
        "startDate": _epoch_millis(execution.start_date),
        "stopDate": _epoch_millis(execution.stop_date),
        # Input and output are JSON text in the event, as in DescribeExecution.
        "input": json.dumps(execution.input_data),
        "output": json.dumps(execution.output) if status == "SUCCEEDED" else None,
        "inputDetails": {"included": True},
        "outputDetails": {"included": True} if status == "SUCCEEDED" else None,
        "error": execution.error or None,
        "cause": execution.cause or None,
    }
    return {
        "Source": SOURCE,
        "DetailType": DETAIL_TYPE,
        "Detail": json.dumps(detail),
        "Resources": [execution.exec_arn],
        "EventBusName": "default",
    }


def _announce(execution: Execution) -> None:
    from moto.events.models import events_backends
    from moto.stepfunctions.parser.api import StateMachineType

    if execution.sm_type != StateMachineType.STANDARD:
        return
    with _announcing:
        if execution.exec_arn in _announced:
            return
        entry = status_change_entry(execution)
        # Through moto's backend directly: this runs inside the emulator, with no client. It hands the
        # event to each matching rule's targets before it returns.
        events_backends[execution.account_id][execution.region_name].put_events([entry])
        _announced.add(execution.exec_arn, entry)


def _epoch_millis(moment: datetime | None) -> int | None:
    return int(moment.timestamp() * 1000) if moment else None
