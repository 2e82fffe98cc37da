"""The allowed changes of execution status: data, checked in one place (`check_transition`)."""

from __future__ import annotations

from collections.abc import Mapping

from cost_engine.errors import InvalidTransition
from cost_engine.models import ExecutionStatus as S

ALLOWED_TRANSITIONS: Mapping[S, frozenset[S]] = {
    S.PENDING: frozenset({S.VALIDATING, S.CANCELLED, S.FAILED}),
    S.SCHEDULED: frozenset({S.VALIDATING, S.CANCELLED, S.FAILED}),
    # VALIDATING → COMPLETED is a dry run: validated and planned, nothing changed.
    S.VALIDATING: frozenset({S.AWAITING_APPROVAL, S.APPROVED, S.COMPLETED, S.FAILED, S.CANCELLED}),
    S.AWAITING_APPROVAL: frozenset({S.APPROVED, S.REJECTED, S.EXPIRED, S.CANCELLED, S.FAILED}),
    S.APPROVED: frozenset({S.EXECUTING, S.CANCELLED, S.FAILED, S.ROLLING_BACK}),
    S.EXECUTING: frozenset({S.VERIFYING, S.ROLLING_BACK, S.FAILED}),
    S.VERIFYING: frozenset({S.WATCHING, S.COMPLETED, S.ROLLING_BACK, S.FAILED}),
    S.WATCHING: frozenset({S.COMPLETED, S.ROLLING_BACK, S.FAILED}),
    # A completed (or failed) change can be undone on request; a failed rollback can be tried again,
    # so no resource is ever left without a way back.
    S.COMPLETED: frozenset({S.ROLLING_BACK}),
    S.FAILED: frozenset({S.ROLLING_BACK}),
    S.ROLLBACK_FAILED: frozenset({S.ROLLING_BACK}),
    # → CANCELLED: a cancel asked for while acting, once the change is undone; → FAILED: an acting
    # phase over the time limit, once the change is undone.
    S.ROLLING_BACK: frozenset({S.ROLLED_BACK, S.ROLLBACK_FAILED, S.CANCELLED, S.FAILED}),
    S.ROLLED_BACK: frozenset(),
    S.REJECTED: frozenset(),
    S.EXPIRED: frozenset(),
    S.CANCELLED: frozenset(),
}

# States in which the engine may be changing the resource: they hold an acting slot, within the
# acting time limit.
ACTING_STATES: frozenset[S] = frozenset({S.APPROVED, S.EXECUTING, S.VERIFYING})
# States in which a failure rolls the change back by itself: acting, or watching the changed resource.
ROLLBACK_ON_FAILURE_STATES: frozenset[S] = ACTING_STATES | {S.WATCHING}
# States where the state machine has finished with the execution.
FINAL_STATES: frozenset[S] = frozenset(
    {S.COMPLETED, S.REJECTED, S.EXPIRED, S.CANCELLED, S.FAILED, S.ROLLED_BACK, S.ROLLBACK_FAILED}
)
# States from which a person can still stop an execution before it touches anything.
CANCELLABLE_STATES: frozenset[S] = frozenset({S.PENDING, S.SCHEDULED, S.VALIDATING, S.AWAITING_APPROVAL, S.APPROVED})
# States in which a cancel is a request to the acting steps: they stop, roll back, end `cancelled`.
CANCEL_BY_ROLLBACK_STATES: frozenset[S] = frozenset({S.EXECUTING, S.VERIFYING, S.WATCHING})
# States from which a manual rollback may be asked for.
ROLLBACK_REQUESTABLE_STATES: frozenset[S] = frozenset({S.COMPLETED, S.FAILED, S.ROLLBACK_FAILED})


def can_transition(old: S, new: S) -> bool:
    return new in ALLOWED_TRANSITIONS[old]


def check_transition(old: S, new: S) -> None:
    """Raise `InvalidTransition` unless the status may change from `old` to `new`."""
    if not can_transition(old, new):
        allowed = ", ".join(sorted(s.value for s in ALLOWED_TRANSITIONS[old])) or "none"
        raise InvalidTransition(
            f"an execution in status '{old.value}' cannot become '{new.value}' (allowed from '{old.value}': {allowed})"
        )
