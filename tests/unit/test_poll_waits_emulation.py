"""The local runtime's polling waits take no time; a scheduled time and the slot wait keep theirs."""

from __future__ import annotations

import pytest

from local_runtime.emulations import poll_waits


def test_a_seconds_wait_takes_no_time_and_the_other_waits_are_left_as_they_are(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from moto.stepfunctions.parser.asl.component.state.wait.wait_function.seconds import Seconds
    from moto.stepfunctions.parser.asl.component.state.wait.wait_function.seconds_path import SecondsPath
    from moto.stepfunctions.parser.asl.component.state.wait.wait_function.timestamp import Timestamp

    # As moto has it (undone, if this process's local runtime installed it already).
    if "as_on_aws" in Seconds.__dict__:
        monkeypatch.setattr(Seconds, "_get_wait_seconds", Seconds.__dict__["as_on_aws"])
        monkeypatch.delattr(Seconds, "as_on_aws")
    assert Seconds(60)._get_wait_seconds(env=None) == 60  # type: ignore[arg-type]
    others = (SecondsPath.__dict__["_get_wait_seconds"], Timestamp.__dict__["_get_wait_seconds"])

    poll_waits.install(None)
    poll_waits.install(None)  # installing twice changes nothing more

    assert Seconds(60)._get_wait_seconds(env=None) == 0  # type: ignore[arg-type]
    assert (SecondsPath.__dict__["_get_wait_seconds"], Timestamp.__dict__["_get_wait_seconds"]) == others
