"""The emulated Step Functions invokes a task's Lambda function through one client, as the service
keeps its connections; moto's interpreter made a new boto3 client (and connection) for every task.

Making a client costs more than the Invoke it then sends (its service model, its endpoint rules, a
new connection): with ten or more tasks per execution, that was a twentieth of the local runtime's
CPU. moto's `boto_client_for` gives every task the same fixed test credentials whatever the state
machine's role, so one client per region, service and endpoint answers exactly as a new one would.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from local_runtime.runtime import LocalRuntime


def _kept(boto_client_for: Callable[..., Any]) -> Callable[..., Any]:
    from moto.core.models import botocore_stubber
    from moto.settings import moto_server_port

    clients: dict[tuple[str, str, bool, str], Any] = {}
    lock = threading.Lock()

    @functools.wraps(boto_client_for)
    def kept(region: str, service: str, state_credentials: Any = None) -> Any:
        # What boto_client_for's answer depends on: the stubber decides whether it goes to a server.
        key = (region, service, botocore_stubber.enabled, str(moto_server_port()))
        with lock:
            if key not in clients:
                clients[key] = boto_client_for(region=region, service=service, state_credentials=state_credentials)
            return clients[key]

    kept.kept = True  # type: ignore[attr-defined]
    return kept


def install(runtime: LocalRuntime | None) -> None:
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils

    # The module that invokes a task's function imported the factory by name: replaced there.
    made = lambda_eval_utils.__dict__["boto_client_for"]
    if not getattr(made, "kept", False):
        setattr(lambda_eval_utils, "boto_client_for", _kept(made))  # noqa: B010
