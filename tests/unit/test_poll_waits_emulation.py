"""The local runtime's polling waits take no time; a scheduled time keeps its own."""

from __future__ import annotations

import pytest

from local_runtime.emulations import poll_waits


def test_a_wait_of_seconds_takes_no_time_and_a_wait_for_a_timestamp_is_left_as_it_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from moto.stepfunctions.parser.asl.component.state.wait.wait_function.seconds import Seconds
    from moto.stepfunctions.parser.asl.component.state.wait.wait_function.seconds_path import SecondsPath
    from moto.stepfunctions.parser.asl.component.state.wait.wait_function.timestamp import Timestamp

    # As moto has it (undone, if this process's local runtime installed it already).
    for wait in (Seconds, SecondsPath):
        if "as_on_aws" in wait.__dict__:
            monkeypatch.setattr(wait, "_get_wait_seconds", wait.__dict__["as_on_aws"])
            monkeypatch.delattr(wait, "as_on_aws")
    assert Seconds(60)._get_wait_seconds(env=None) == 60  # type: ignore[arg-type]
    moto_seconds_path = SecondsPath.__dict__["_get_wait_seconds"]
    timestamp = Timestamp.__dict__["_get_wait_seconds"]

    poll_waits.install(None)
    poll_waits.install(None)  # installing twice changes nothing more

    assert Seconds(60)._get_wait_seconds(env=None) == 0  # type: ignore[arg-type]
    assert SecondsPath.__dict__["_get_wait_seconds"] is not moto_seconds_path
    assert SecondsPath.__dict__["as_on_aws"] is moto_seconds_path
    assert SecondsPath._get_wait_seconds(object.__new__(SecondsPath), env=None) == 0  # type: ignore[arg-type]
    assert Timestamp.__dict__["_get_wait_seconds"] is timestamp
