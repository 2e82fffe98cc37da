"""Each recommendation type's state machine, made from the one spine every type shares.

`statemachines/spine.asl.json` holds the flow once: prepare (validate, plan, and the policy's
approval), a person's approval, an acting slot, backup, act, finish (verify and record), and the
Catch branches to rollback. Each piece of work is checked once by the task that starts it, so work
that is done at once costs no wait; a wait lasts as long as that check says (the type's `polling`:
short at first, then longer, within the type's budget). A type adds what is its own: its description
(the executor's `flow`, the definition's Comment), what its manual rollback leaves behind, whether
it waits for its backup at all (`backup_waits`: a backup that is a record leaves the backup wait out),
and whether its verified change is watched before it is complete (`watches`: the guardrail watch,
cost_engine.guardrails; a type that does not watch ends at Finish).
The timeouts are the topology's, and every task retries the executor's transient errors with one
policy. The stack deploys `template` and the local runtime runs `definition`, the same text, so they
cannot drift apart.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from cost_engine.executors import EXECUTORS
from cost_engine.models import RecommendationType
from cost_engine.topology import (
    SLOT_WAIT_TIMEOUT_SECONDS,
    STATE_MACHINE_TIMEOUT_SECONDS,
    STATEMACHINES_DIR,
    StateMachine,
)

SPINE_FILE = STATEMACHINES_DIR / "spine.asl.json"

# Errors a step may meet and that a second try can get past: the engine's own TransientError (a
# throttled or unavailable AWS call, a lost write race) and the Lambda service's own failures.
TASK_RETRY: tuple[dict[str, Any], ...] = (
    {
        "ErrorEquals": [
            "TransientError",
            "Lambda.ServiceException",
            "Lambda.AWSLambdaException",
            "Lambda.SdkClientException",
            "Lambda.TooManyRequestsException",
        ],
        "IntervalSeconds": 2,
        "MaxAttempts": 3,
        "BackoffRate": 2.0,
        "JitterStrategy": "FULL",
    },
)


@cache
def _spine() -> str:
    return SPINE_FILE.read_text()


def states_language(recommendation_type: RecommendationType) -> dict[str, Any]:
    """The type's state machine (ASL), with `${ExecutorFunctionArn}` left for the deployment to fill."""
    executor = EXECUTORS[recommendation_type]
    spine: dict[str, Any] = json.loads(_spine())
    states: dict[str, dict[str, Any]] = spine["States"]
    for state in states.values():
        if state["Type"] == "Task":
            state["Retry"] = [dict(rule) for rule in TASK_RETRY]
    # A wait for a slot that ends without a wake-up (one was lost) asks again, renewing the
    # execution's place in the queue; the state machine's own timeout bounds how long in all.
    slot = states["AcquireSlot"]
    slot["TimeoutSeconds"] = SLOT_WAIT_TIMEOUT_SECONDS
    slot["Retry"].append(
        {
            "ErrorEquals": ["States.Timeout"],
            "IntervalSeconds": 1,
            "MaxAttempts": STATE_MACHINE_TIMEOUT_SECONDS // SLOT_WAIT_TIMEOUT_SECONDS,
            "BackoffRate": 1.0,
        }
    )
    states["RolledBack"]["Comment"] = executor.rolled_back_note
    if not executor.backup_waits:
        # A backup that is a record is complete once the Backup step wrote it: straight on to Act.
        for name in ("WaitBackup", "CheckBackup", "BackupDone"):
            del states[name]
        states["Backup"]["Next"] = "Act"
        states["Backup"]["ResultPath"] = None
        del states["Backup"]["ResultSelector"]
    if not executor.watches:
        # A type whose change cannot hurt a workload is complete once verified: Finish records it.
        for name in ("Watched", "WaitWatch", "CheckGuardrails", "Completed"):
            del states[name]
        finish = states["Finish"]
        for key in ("ResultSelector", "Next"):
            del finish[key]
        finish["ResultPath"] = None
        finish["End"] = True
        finish["Comment"] = "Verifies the change and, if it holds, records the execution completed."
    return {
        "Comment": f"{recommendation_type.value}: {executor.flow}",
        "StartAt": spine["StartAt"],
        "TimeoutSeconds": STATE_MACHINE_TIMEOUT_SECONDS,
        "States": states,
    }


def template(machine: StateMachine) -> str:
    """The machine's definition as the JSON text the stack deploys, its placeholders unfilled (the
    stack fills them with definition substitutions). Compact: the stack's template carries all ten
    and CloudFormation limits a template's size (the spine file is the one to read)."""
    return json.dumps(states_language(machine.recommendation_type), separators=(",", ":"), ensure_ascii=False)


def definition(machine: StateMachine, executor_function_arn: str) -> str:
    """The definition a state machine is created from, its placeholders filled: what the local
    runtime creates, and the stack's template once Step Functions has filled it."""
    text = template(machine)
    for name, value in machine.substitutions(executor_function_arn).items():
        text = text.replace("${" + name + "}", value)
    return text
