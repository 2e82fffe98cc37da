"""Reading a state machine's definition (Amazon States Language) and a run's history, for the bench:
the happy path through the definition and the waits on it, the step to fail for a rollback, and the
state transitions and Lambda tasks of a run. Pure functions over the definition's and the history's JSON,
so that they follow the spine as it changes rather than a copy of its state names.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Definition = Mapping[str, Any]
HistoryEvent = Mapping[str, Any]

# The step a rollback path fails, when the definition has it: verification, after the change was made.
PREFERRED_FAULT_STEP = "verify"
ROLLBACK_STEP = "rollback"


def transitions(history: Iterable[HistoryEvent]) -> int:
    """State transitions as Step Functions Standard bills them: one per state entered (`TaskStateEntered`,
    `ChoiceStateEntered`, `WaitStateEntered`, `SucceedStateEntered`, `FailStateEntered`, ...). A task's
    retry would bill one more; the bench's runs have none (no transient fault is injected)."""
    return sum(1 for event in history if str(event["type"]).endswith("StateEntered"))


def lambda_tasks(history: Iterable[HistoryEvent]) -> int:
    """The Lambda invocations a run scheduled: `lambda:invoke` tasks and plain function tasks."""
    return sum(
        1
        for event in history
        if event["type"] == "LambdaFunctionScheduled"
        or (
            event["type"] == "TaskScheduled"
            and event.get("taskScheduledEventDetails", {}).get("resourceType") == "lambda"
        )
    )


def task_step(state: Mapping[str, Any]) -> str | None:
    """The `step` a task state's payload names (the executor function runs that step)."""
    payload = (state.get("Parameters") or {}).get("Payload") or {}
    step = payload.get("step")
    return str(step) if step is not None else None


def _following(state: Mapping[str, Any]) -> list[str]:
    """The states a state goes on to without an error: its Next, or a Choice's branches and default."""
    found = [str(choice["Next"]) for choice in state.get("Choices", [])]
    found += [str(state[key]) for key in ("Next", "Default") if key in state]
    return found


def acting_states(definition: Definition) -> set[str]:
    """The task states whose failure is caught by the rollback (the acting phase)."""
    states: Mapping[str, Mapping[str, Any]] = definition["States"]
    rollback = {name for name, state in states.items() if task_step(state) == ROLLBACK_STEP}
    return {
        name
        for name, state in states.items()
        if state.get("Type") == "Task" and any(catch.get("Next") in rollback for catch in state.get("Catch", []))
    }


def resolve_path(document: Any, path: str) -> Any:
    """A reference path (`$.a.b`) in a JSON document; None when it is not there."""
    value = document
    for part in path.removeprefix("$").strip(".").split("."):
        if not part:
            continue
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def wait_seconds(state: Mapping[str, Any], state_input: Any = None) -> float | None:
    """The seconds a Wait state waits: its `Seconds`, or its `SecondsPath` read from the state's input.
    None for a wait until a timestamp, and for a `SecondsPath` without the input to read it from."""
    if "Seconds" in state:
        return float(state["Seconds"])
    if "SecondsPath" in state and state_input is not None:
        found = resolve_path(state_input, str(state["SecondsPath"]))
        return float(found) if isinstance(found, int | float) else None
    return None


@dataclass(frozen=True)
class HappyPath:
    """The path from StartAt to success through the acting phase that waits least, if every check
    finds its work done at once: the states entered, and the seconds spent in Wait states."""

    states: tuple[str, ...]
    wait_seconds: float
    # Wait states on the path whose seconds are only known at run time (SecondsPath): counted as 0.
    unresolved_waits: tuple[str, ...]


def happy_path(definition: Definition) -> HappyPath:
    """The least-waiting path (then the fewest states) from StartAt to its end (a Succeed state, or a
    state that ends the run) that passes
    through the acting phase (a dry run's success does not count), along Next and Choice branches only
    (a Catch is a failure). Waits until a timestamp (a scheduled execution) are not taken."""
    states: Mapping[str, Mapping[str, Any]] = definition["States"]
    acting = acting_states(definition)
    start = str(definition["StartAt"])
    # (seconds waited, unresolved waits, states entered, tie-breaker, state, acted, path)
    queue: list[tuple[float, int, int, int, str, bool, tuple[str, ...]]] = []
    counter = 0

    def push(cost: float, unresolved: int, name: str, acted: bool, path: tuple[str, ...]) -> None:
        nonlocal counter
        counter += 1
        heapq.heappush(queue, (cost, unresolved, len(path) + 1, counter, name, acted, (*path, name)))

    push(0.0, 0, start, start in acting, ())
    settled: set[tuple[str, bool]] = set()
    while queue:
        cost, unresolved, _, _, name, acted, path = heapq.heappop(queue)
        if (name, acted) in settled:
            continue
        settled.add((name, acted))
        state = states[name]
        if (state["Type"] == "Succeed" or state.get("End")) and acted:
            waits = tuple(n for n in path if states[n]["Type"] == "Wait" and wait_seconds(states[n]) is None)
            return HappyPath(states=path, wait_seconds=cost, unresolved_waits=waits)
        for following in _following(state):
            entered = states[following]
            seconds, unknown = 0.0, 0
            if entered["Type"] == "Wait":
                if "Timestamp" in entered or "TimestampPath" in entered:
                    continue
                known = wait_seconds(entered)
                seconds, unknown = (known, 0) if known is not None else (0.0, 1)
            push(cost + seconds, unresolved + unknown, following, acted or following in acting, path)
    raise ValueError("the definition has no path from StartAt through the acting phase to a Succeed state")


def fault_step(definition: Definition) -> str:
    """The step to fail for a rollback path: verification when the acting phase has it, else the last
    acting step on the happy path (the change is made by then, so the rollback has something to undo)."""
    states: Mapping[str, Mapping[str, Any]] = definition["States"]
    acting = acting_states(definition)
    steps = [step for name in happy_path(definition).states if name in acting and (step := task_step(states[name]))]
    if not steps:
        raise ValueError("the happy path has no acting step to fail")
    return PREFERRED_FAULT_STEP if PREFERRED_FAULT_STEP in steps else steps[-1]


def waits_entered(definition: Definition, history: Iterable[HistoryEvent]) -> float:
    """The seconds a run would have waited on AWS: each Wait state it entered, at its configured
    seconds (SecondsPath read from the state's input as the run had it)."""
    states: Mapping[str, Mapping[str, Any]] = definition["States"]
    total = 0.0
    for event in history:
        if event["type"] != "WaitStateEntered":
            continue
        details = event["stateEnteredEventDetails"]
        state_input = json.loads(details["input"]) if details.get("input") else None
        total += wait_seconds(states[details["name"]], state_input) or 0.0
    return total
