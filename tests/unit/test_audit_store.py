"""AuditStore against emulated DynamoDB: an append-only log, read oldest first."""

from __future__ import annotations

from typing import Any

import pytest

from cost_engine.models import new_execution_id
from cost_engine.stores.audit import AuditStore
from cost_engine.topology import AUDIT_TABLE
from tests.unit.conftest import REGION


@pytest.fixture
def audit(tables: None) -> AuditStore:
    return AuditStore(AUDIT_TABLE.local_name, REGION)


def test_events_come_back_oldest_first(audit: AuditStore) -> None:
    # Given a dozen events appended one after another
    execution_id = new_execution_id()
    appended = [audit.append(execution_id, f"step_{n}", "state-machine:test") for n in range(12)]

    # Then they are read back in the order they happened
    assert [e.event_id for e in audit.events(execution_id)] == [e.event_id for e in appended]


def test_appending_the_same_event_twice_records_it_twice(audit: AuditStore) -> None:
    # Given an event, and then the very same event again (a retried step)
    execution_id = new_execution_id()
    audit.append(execution_id, "backup_started", "state-machine:backup", {"image_id": "ami-1"})
    audit.append(execution_id, "backup_started", "state-machine:backup", {"image_id": "ami-1"})

    # Then the log holds both, with distinct ids: nothing was overwritten
    events = audit.events(execution_id)
    assert [e.event_type for e in events] == ["backup_started", "backup_started"]
    assert events[0].event_id != events[1].event_id


def test_events_of_other_executions_are_not_mixed_in(audit: AuditStore) -> None:
    mine, theirs = new_execution_id(), new_execution_id()
    audit.append(mine, "validated", "state-machine:validate")
    audit.append(theirs, "validated", "state-machine:validate")

    assert [e.execution_id for e in audit.events(mine)] == [mine]


def test_an_execution_without_events_has_an_empty_log(audit: AuditStore) -> None:
    assert audit.events(new_execution_id()) == []


def test_event_details_round_trip_with_their_numbers(audit: AuditStore) -> None:
    # Given details with fractional amounts, whole numbers, nesting and text
    execution_id = new_execution_id()
    detail = {
        "actual_savings": 70.48,
        "ratio": 0.1,
        "poll_attempts": 3,
        "volumes": [{"size_gb": 8, "monthly": 0.8}],
        "automatic": True,
        "reason": "verification failed",
        "missing": None,
    }

    # When the event is appended and read back
    appended = audit.append(execution_id, "completed", "state-machine:record", detail)
    [stored] = audit.events(execution_id)

    # Then the detail is unchanged (DynamoDB's Decimals do not leak out)
    assert stored.detail == detail
    assert isinstance(stored.detail["actual_savings"], float)
    assert stored == appended


def test_the_steps_are_the_events_without_their_details(audit: AuditStore) -> None:
    # Given events with details, from several actors
    execution_id = new_execution_id()
    audit.append(execution_id, "execution_requested", "apikey:operator", {"dry_run": False})
    audit.append(execution_id, "backup_done", "state-machine:backup", {"image_id": "ami-1", "volumes": [8]})
    audit.append(execution_id, "approved", "apikey:approver")

    # Then the steps are what happened, when and by whom, in order, and none is earlier than those
    steps, earlier = audit.latest_steps(execution_id, 10)
    assert [(s.event_type, s.timestamp, s.actor) for s in steps] == [
        (e.event_type, e.timestamp, e.actor) for e in audit.events(execution_id)
    ]
    assert not earlier
    assert len({s.event_key for s in steps}) == 3
    assert audit.latest_steps(new_execution_id(), 10) == ([], False)


def test_the_latest_steps_are_the_newest_ones_oldest_first_and_say_that_earlier_ones_exist(
    audit: AuditStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a long log of twelve events
    execution_id = new_execution_id()
    appended = [audit.append(execution_id, f"step_{n}", "state-machine:test") for n in range(12)]
    queries: list[dict[str, Any]] = []
    query = audit._table.query

    def counted(**kwargs: Any) -> Any:
        queries.append(kwargs)
        return query(**kwargs)

    monkeypatch.setattr(audit._table, "query", counted)

    # When the newest five are asked for
    steps, earlier = audit.latest_steps(execution_id, 5)

    # Then they are the last five, in the order they happened, with word of the seven before them
    assert [s.event_type for s in steps] == [e.event_type for e in appended[-5:]]
    assert earlier
    # And one query read no more than those and one to tell whether there are earlier ones
    [asked] = queries
    assert (asked["Limit"], asked["ScanIndexForward"]) == (6, False)
    # And exactly as many as the log holds is no earlier one
    assert audit.latest_steps(execution_id, 12)[1] is False


# -- events written together ------------------------------------------------------------------------


def test_events_kept_in_a_batch_are_written_together_at_its_end_in_the_order_they_happened(
    audit: AuditStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = audit._table.meta.client
    batches: list[int] = []
    write = client.batch_write_item

    def counted(**kwargs: Any) -> Any:
        batches.append(sum(len(requests) for requests in kwargs["RequestItems"].values()))
        return write(**kwargs)

    monkeypatch.setattr(client, "batch_write_item", counted)

    with audit.batched():
        for number in range(30):
            audit.append("exec-batched", f"event-{number}", "state-machine:test")
        # Nothing is written while the batch is open
        assert audit.events("exec-batched") == []

    # Then all were written, in two requests (at most 25 each), and read back in order
    assert batches == [25, 5]
    assert [e.event_type for e in audit.events("exec-batched")] == [f"event-{n}" for n in range(30)]


def test_a_flush_writes_what_was_kept_so_far_and_a_failing_block_still_writes_its_events(
    audit: AuditStore,
) -> None:
    seen_after_flush: list[str] = []

    def failing_step() -> None:
        with audit.batched():
            audit.append("exec-flushed", "before", "state-machine:test")
            audit.flush()
            seen_after_flush.extend(e.event_type for e in audit.events("exec-flushed"))
            audit.append("exec-flushed", "after", "state-machine:test")
            raise RuntimeError("the step failed")

    with pytest.raises(RuntimeError):
        failing_step()

    assert seen_after_flush == ["before"]

    assert [e.event_type for e in audit.events("exec-flushed")] == ["before", "after"]


def test_outside_a_batch_each_event_is_written_at_once(audit: AuditStore) -> None:
    audit.append("exec-direct", "at-once", "api")

    assert [e.event_type for e in audit.events("exec-direct")] == ["at-once"]
