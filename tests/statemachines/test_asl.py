"""The state machines made from the spine: complete, valid ASL, wired to the executor steps."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cost_engine import spine, topology
from cost_engine.executors import EXECUTORS
from cost_engine.spine import SPINE_FILE
from cost_engine.steps import Step

MACHINES = topology.state_machines()
SPINE_STATES = {"Prepare", "PrepareOutcome", "RequestApproval", "AcquireSlot", "Backup", "Act", "Finish"}
ACTING_STATES = ("Backup", "CheckBackup", "Act", "CheckAction", "Finish")
FAKE_ARN = "arn:aws:lambda:us-east-1:123456789012:function:executor"
ASL_VALIDATOR = topology.PROJECT_ROOT / "node_modules" / ".bin" / "asl-validator"


def _definition(machine: topology.StateMachine) -> dict[str, Any]:
    definition: dict[str, Any] = json.loads(spine.definition(machine, FAKE_ARN))
    return definition


def _tasks(definition: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: state for name, state in definition["States"].items() if state["Type"] == "Task"}


def _next_states(state: dict[str, Any]) -> set[str]:
    targets = {state["Next"]} if "Next" in state else set()
    targets |= {choice["Next"] for choice in state.get("Choices", [])}
    targets |= {state["Default"]} if "Default" in state else set()
    targets |= {catch["Next"] for catch in state.get("Catch", [])}
    return targets


def test_every_implemented_type_has_a_state_machine_described_by_its_executor() -> None:
    assert MACHINES
    for machine in MACHINES:
        comment = _definition(machine)["Comment"]
        assert comment.startswith(f"{machine.recommendation_type.value}: "), comment
        assert len(comment) > len(machine.recommendation_type.value) + 20, "a type says what its machine does"


@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: m.recommendation_type.value)
def test_every_placeholder_is_supplied_and_no_other_is_used(machine: topology.StateMachine) -> None:
    used = set(re.findall(r"\$\{(\w+)\}", spine.template(machine)))

    assert used == set(machine.placeholders) == set(machine.substitutions(FAKE_ARN))


def _asl_validator(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    # The npm package asl-validator (package.json): the States Language rules, checked by a tool
    # that is not ours.
    arguments = [arg for path in paths for arg in ("--json-path", str(path))]
    return subprocess.run([str(ASL_VALIDATOR), *arguments], capture_output=True, text=True, timeout=120, check=False)


def test_every_definition_made_from_the_spine_is_valid_states_language(tmp_path: Path) -> None:
    paths = []
    for machine in MACHINES:
        path = tmp_path / f"{machine.recommendation_type.value}.json"
        path.write_text(spine.definition(machine, FAKE_ARN))
        paths.append(path)

    checked = _asl_validator(paths)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("is valid") == len(MACHINES)


def test_the_validator_refuses_a_definition_that_goes_to_a_state_it_lacks(tmp_path: Path) -> None:
    # So that the check above can fail.
    broken = _definition(MACHINES[0])
    broken["States"]["Prepare"]["Next"] = "Nowhere"
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))

    checked = _asl_validator([path])

    assert checked.returncode != 0
    assert "Nowhere" in checked.stdout + checked.stderr


@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: m.recommendation_type.value)
def test_the_state_machine_has_a_timeout_and_every_transition_lands_on_a_state(machine: topology.StateMachine) -> None:
    definition = _definition(machine)
    states = definition["States"]

    assert 0 < definition["TimeoutSeconds"] <= topology.STATE_MACHINE_TIMEOUT_SECONDS
    assert definition["StartAt"] in states
    reachable, frontier = set(), [definition["StartAt"]]
    while frontier:
        name = frontier.pop()
        if name in reachable:
            continue
        reachable.add(name)
        targets = _next_states(states[name])
        assert targets <= set(states), f"{name} goes to an unknown state: {targets - set(states)}"
        frontier.extend(targets)
    assert reachable == set(states), f"unreachable states: {set(states) - reachable}"


@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: m.recommendation_type.value)
def test_it_follows_the_common_spine(machine: topology.StateMachine) -> None:
    assert set(_definition(machine)["States"]) >= SPINE_STATES


@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: m.recommendation_type.value)
def test_every_task_calls_a_known_step_of_its_executor_and_retries_transient_errors(
    machine: topology.StateMachine,
) -> None:
    steps_called = set()
    for name, task in _tasks(_definition(machine)).items():
        assert task["Parameters"]["FunctionName"] == FAKE_ARN, name
        steps_called.add(Step(task["Parameters"]["Payload"]["step"]))
        retry = task["Retry"][0]
        assert "TransientError" in retry["ErrorEquals"], name
        assert "States.ALL" not in retry["ErrorEquals"], f"{name} must not retry every error"
        assert retry["MaxAttempts"] <= 3
        assert retry["JitterStrategy"] == "FULL"

    # Every step is called, but CheckBackup by a type whose backup is a record (its Backup checks it),
    # and CheckGuardrails by a type that does not watch its change.
    executor = EXECUTORS[machine.recommendation_type]
    expected = (
        set(Step)
        - (set() if executor.backup_waits else {Step.CHECK_BACKUP})
        - (set() if executor.watches else {Step.CHECK_GUARDRAILS})
    )
    assert steps_called == expected, f"steps no state calls: {expected - steps_called}"


@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: m.recommendation_type.value)
def test_a_type_that_watches_waits_and_checks_its_guardrails_after_finish_and_others_end_there(
    machine: topology.StateMachine,
) -> None:
    states = _definition(machine)["States"]
    if not EXECUTORS[machine.recommendation_type].watches:
        assert states["Finish"]["End"] is True
        assert not {"Watched", "WaitWatch", "CheckGuardrails", "Completed"} & set(states)
        return
    assert states["Finish"]["Next"] == "Watched"
    assert states["Watched"]["Choices"] == [{"Variable": "$.watch.done", "BooleanEquals": True, "Next": "Completed"}]
    assert states["Watched"]["Default"] == "WaitWatch"
    assert states["WaitWatch"]["SecondsPath"] == "$.watch.wait_seconds"
    check = states["CheckGuardrails"]
    assert check["Parameters"]["Payload"]["checks_before.$"] == "$.watch.checks"
    assert check["Next"] == "Watched"
    # A breach (or any failure) of a check rolls the change back.
    assert [c["Next"] for c in check["Catch"]] == ["Rollback"]
    assert states["Completed"]["Type"] == "Succeed"


@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: m.recommendation_type.value)
def test_every_acting_state_catches_any_error_into_rollback(machine: topology.StateMachine) -> None:
    tasks = _tasks(_definition(machine))

    for name in ACTING_STATES:
        if name == "CheckBackup" and not EXECUTORS[machine.recommendation_type].backup_waits:
            continue
        catches = tasks[name]["Catch"]
        assert any(c["ErrorEquals"] == ["States.ALL"] and c["Next"] == "Rollback" for c in catches), name


@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: m.recommendation_type.value)
def test_the_approval_wait_uses_a_task_token_a_deadline_and_handles_reject_and_timeout(
    machine: topology.StateMachine,
) -> None:
    approval = _definition(machine)["States"]["RequestApproval"]

    assert approval["Resource"].endswith(".waitForTaskToken")
    assert approval["Parameters"]["Payload"]["task_token.$"] == "$$.Task.Token"
    assert approval["TimeoutSecondsPath"]
    caught = {error for catch in approval["Catch"] for error in catch["ErrorEquals"]}
    assert {"Rejected", "States.Timeout", "States.ALL"} <= caught


def _without_comments(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_comments(v) for k, v in value.items() if k != "Comment"}
    if isinstance(value, list):
        return [_without_comments(v) for v in value]
    return value


@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: m.recommendation_type.value)
def test_every_state_machine_is_the_spine_with_only_its_type_s_own_settings(
    machine: topology.StateMachine,
) -> None:
    # One spine for every type: a type changes its comments, and whether it waits for its backup;
    # all else is the spine's (the topology's timeouts and the one retry policy included).
    executor = EXECUTORS[machine.recommendation_type]
    spine_states = json.loads(SPINE_FILE.read_text())["States"]
    states = json.loads(spine.template(machine))["States"]
    backup_wait = {"WaitBackup", "CheckBackup", "BackupDone"}
    watch = {"Watched", "WaitWatch", "CheckGuardrails", "Completed"}

    left_out = (set() if executor.backup_waits else backup_wait) | (set() if executor.watches else watch)
    assert states.keys() == spine_states.keys() - left_out
    assert states["Backup"]["Next"] == ("BackupDone" if executor.backup_waits else "Act")
    assert states["AcquireSlot"]["TimeoutSeconds"] == topology.SLOT_WAIT_TIMEOUT_SECONDS

    def as_spine(states: dict[str, Any]) -> dict[str, Any]:
        settings_free = {
            name: {k: v for k, v in state.items() if k not in ("Comment", "Retry", "TimeoutSeconds")}
            for name, state in states.items()
            if name not in backup_wait | watch
        }
        for name, varies in (("Backup", ("Next", "ResultSelector", "ResultPath")), ("Finish", FINISH_VARIES)):
            settings_free[name] = {k: v for k, v in settings_free[name].items() if k not in varies}
        return settings_free

    assert as_spine(states) == as_spine(spine_states)


# Where Finish goes: on to the watch, or the end (test_a_type_that_watches_waits_and_checks_...).
FINISH_VARIES = ("Next", "End", "ResultSelector", "ResultPath")


def test_the_types_that_wait_for_their_backup_are_those_whose_backup_is_made_by_aws() -> None:
    # A snapshot or an image is made in the background; a recorded configuration is complete at once.
    records_only = {t.value for t, executor in EXECUTORS.items() if not executor.backup_waits}

    assert records_only == {"rightsize_instance", "purchase_reserved_instances", "optimize_storage"}
    assert all(machine.recommendation_type in EXECUTORS for machine in MACHINES)


def _happy_path(states: dict[str, Any], start: str, answers: dict[str, str]) -> list[str]:
    """The states a run enters from `start` when every check finds its work done at once, the policy
    approves without a person (unless `answers` says otherwise) and no step fails."""
    entered, name = [], start
    while True:
        entered.append(name)
        state = states[name]
        if state["Type"] in ("Succeed", "Fail") or state.get("End"):
            return entered
        if state["Type"] == "Choice":
            taken = answers.get(name)
            if taken is None:
                done = [c["Next"] for c in state["Choices"] if c.get("BooleanEquals") is True]
                taken = done[0] if done else state["Default"]
            name = taken
        else:
            name = state["Next"]
        assert len(entered) < 100, f"the walk from {start} does not end"


@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: m.recommendation_type.value)
def test_a_happy_path_enters_at_most_twelve_states_and_a_rollback_path_at_most_twenty(
    machine: topology.StateMachine,
) -> None:
    # Step Functions bills each state entered; work that is done at the first check enters no wait.
    states = _definition(machine)["States"]
    by_policy = _happy_path(states, "Prepare", {"PrepareOutcome": "AcquireSlot"})
    by_a_person = _happy_path(states, "Prepare", {"PrepareOutcome": "RequestApproval"})
    # A change that fails its verification: Finish's Catch goes to Rollback.
    rolled_back = [*by_policy[: by_policy.index("Finish") + 1], *_happy_path(states, "Rollback", {})]

    # A type that watches ends at Completed when its change has nothing to watch (a settling period
    # of 0); a watch adds two states per check (WaitWatch, CheckGuardrails), the price of its safety.
    end = "Completed" if EXECUTORS[machine.recommendation_type].watches else "Finish"
    assert by_policy[-1] == by_a_person[-1] == end
    assert not any(name.startswith("Wait") for name in by_policy + by_a_person)
    assert len(by_policy) <= 12, by_policy
    assert len(by_a_person) <= 12, by_a_person
    assert rolled_back[-1] == "RolledBackAfterFailure"
    assert len(rolled_back) <= 20, rolled_back


@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: m.recommendation_type.value)
def test_each_wait_lasts_as_long_as_the_check_before_it_said(machine: topology.StateMachine) -> None:
    states = _definition(machine)["States"]
    waits = {name: state for name, state in states.items() if state["Type"] == "Wait"}

    for name, wait in waits.items():
        if name == "WaitForScheduledTime":
            assert wait["TimestampPath"] == "$.scheduled_time"
            continue
        check = states[wait["Next"]]
        assert check["Type"] == "Task"
        # The check after the wait writes where the wait reads from, as does the task that started the work.
        assert wait["SecondsPath"] == f"{check['ResultPath']}.wait_seconds", name
        assert check["ResultSelector"]["wait_seconds.$"] == "$.Payload.wait_seconds"


def test_a_types_waits_start_short_grow_and_stay_within_its_budget() -> None:
    for executor in EXECUTORS.values():
        polling = executor.polling
        waits = [polling.wait_after(check) for check in range(1, polling.max_checks + 1)]
        assert waits[0] == polling.first_seconds <= 30
        assert waits == sorted(waits)
        assert max(waits) <= polling.longest_seconds
        assert waits[1] == min(2 * waits[0], polling.longest_seconds)
        # The checks fit the budget: one more wait would go past it.
        assert sum(waits[:-1]) < polling.budget_seconds <= sum(waits)


@pytest.mark.parametrize("machine", MACHINES, ids=lambda m: m.recommendation_type.value)
def test_the_slot_wait_is_a_task_token_wait_that_asks_again_when_it_times_out(machine: topology.StateMachine) -> None:
    slot = _definition(machine)["States"]["AcquireSlot"]

    assert slot["Resource"].endswith(".waitForTaskToken")
    assert slot["Parameters"]["Payload"]["task_token.$"] == "$$.Task.Token"
    assert slot["Next"] == "Backup"
    again = [rule for rule in slot["Retry"] if rule["ErrorEquals"] == ["States.Timeout"]]
    assert len(again) == 1
    assert again[0]["MaxAttempts"] * slot["TimeoutSeconds"] <= topology.STATE_MACHINE_TIMEOUT_SECONDS
    # The slot it was given goes to Backup, which records it.
    assert _definition(machine)["States"]["Backup"]["Parameters"]["Payload"]["slot.$"] == "$.slot.slot"
