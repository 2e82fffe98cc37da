"""The local runtime's one change of time: a state machine's polling waits take none.

Each type's state machine waits between two checks of AWS as long as the check before said (`Wait`
states with `SecondsPath`, cost_engine.spine and the type's `polling`), as on AWS. The emulated
resources change state on their next read, not after minutes, so waiting would only slow every local
run and test: a wait of seconds (`SecondsPath`, and `Seconds` should a definition use one) is made a
wait of no time. A scheduled execution's wait for its time (`TimestampPath`) keeps its time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from local_runtime.runtime import LocalRuntime


def install(runtime: LocalRuntime | None) -> None:
    from moto.stepfunctions.parser.asl.component.state.wait.wait_function.seconds import Seconds
    from moto.stepfunctions.parser.asl.component.state.wait.wait_function.seconds_path import SecondsPath

    def no_wait(self: object, env: object) -> int:
        return 0

    waits: tuple[type[Any], ...] = (Seconds, SecondsPath)
    for wait in waits:
        if "as_on_aws" in wait.__dict__:
            continue
        wait.as_on_aws = wait._get_wait_seconds
        wait._get_wait_seconds = no_wait
