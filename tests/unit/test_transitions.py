"""The status model: which changes of an execution's status are allowed."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cost_engine.errors import InvalidTransition
from cost_engine.models import ExecutionStatus as S
from cost_engine.transitions import ALLOWED_TRANSITIONS, FINAL_STATES, can_transition, check_transition

statuses = st.sampled_from(list(S))


def reachable_from(start: S) -> set[S]:
    reached = {start}
    frontier = [start]
    while frontier:
        for new in ALLOWED_TRANSITIONS[frontier.pop()] - reached:
            reached.add(new)
            frontier.append(new)
    return reached


def test_every_status_has_an_entry_in_the_transition_table() -> None:
    assert set(ALLOWED_TRANSITIONS) == set(S)


def test_the_happy_path_from_pending_to_completed_is_allowed() -> None:
    happy_path = [S.PENDING, S.VALIDATING, S.APPROVED, S.EXECUTING, S.VERIFYING, S.COMPLETED]

    for old, new in pairwise(happy_path):
        check_transition(old, new)  # raises if not allowed


@pytest.mark.parametrize("final", sorted(FINAL_STATES - {S.COMPLETED, S.FAILED, S.ROLLBACK_FAILED}))
def test_a_final_status_other_than_completed_or_failed_has_no_way_out(final: S) -> None:
    for new in S:
        assert not can_transition(final, new)


@pytest.mark.parametrize("undoable", [S.COMPLETED, S.FAILED, S.ROLLBACK_FAILED])
def test_a_completed_or_failed_execution_can_only_be_rolled_back(undoable: S) -> None:
    assert ALLOWED_TRANSITIONS[undoable] == {S.ROLLING_BACK}


def test_a_forbidden_change_names_both_statuses_and_what_is_allowed() -> None:
    with pytest.raises(InvalidTransition) as refused:
        check_transition(S.COMPLETED, S.EXECUTING)

    assert refused.value.message == (
        "an execution in status 'completed' cannot become 'executing' (allowed from 'completed': rolling_back)"
    )


def test_a_status_without_successors_says_none_are_allowed() -> None:
    with pytest.raises(InvalidTransition, match=r"allowed from 'cancelled': none"):
        check_transition(S.CANCELLED, S.PENDING)


@given(old=statuses, new=statuses)
def test_check_transition_refuses_exactly_the_changes_missing_from_the_table(old: S, new: S) -> None:
    if new in ALLOWED_TRANSITIONS[old]:
        check_transition(old, new)
    else:
        with pytest.raises(InvalidTransition, match=f"'{old.value}' cannot become '{new.value}'"):
            check_transition(old, new)


def test_every_status_is_reachable_from_the_two_starting_statuses() -> None:
    # An execution starts `pending`, or `scheduled` when it has a scheduled_time.
    assert reachable_from(S.PENDING) | reachable_from(S.SCHEDULED) == set(S)


def test_a_scheduled_execution_goes_on_like_a_pending_one() -> None:
    assert ALLOWED_TRANSITIONS[S.SCHEDULED] == ALLOWED_TRANSITIONS[S.PENDING]


def test_a_cancel_while_acting_ends_cancelled_only_through_a_rollback() -> None:
    assert S.CANCELLED not in ALLOWED_TRANSITIONS[S.EXECUTING] | ALLOWED_TRANSITIONS[S.VERIFYING]
    assert S.CANCELLED in ALLOWED_TRANSITIONS[S.ROLLING_BACK]


@pytest.mark.parametrize("status", sorted(set(S) - FINAL_STATES))
def test_every_unfinished_status_can_still_reach_a_final_one(status: S) -> None:
    assert reachable_from(status) & FINAL_STATES
