"""The local runtime's one change of time: a state machine's polling waits take none.

Each type's state machine waits its own poll interval between two checks of AWS (`Wait` states with
`Seconds`, cost_engine.spine), as on AWS. The emulated resources change state on their next read, not
after minutes, so waiting would only slow every local run and test: a `Seconds` wait is made a wait of
no time. The other waits keep their time: a scheduled execution's `Timestamp`, and the acting slot's
`SecondsPath` (the runtime's own short slot wait).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from local_runtime.runtime import LocalRuntime


def install(runtime: LocalRuntime | None) -> None:
    from moto.stepfunctions.parser.asl.component.state.wait.wait_function.seconds import Seconds

    if "as_on_aws" in Seconds.__dict__:
        return

    def no_wait(self: Seconds, env: object) -> int:
        return 0

    Seconds.as_on_aws = Seconds._get_wait_seconds  # type: ignore[attr-defined]
    Seconds._get_wait_seconds = no_wait  # type: ignore[method-assign]
