"""ExecutionStore against emulated DynamoDB: conditional status writes, listings and pagination."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from cost_engine.errors import Conflict, InvalidRequest, InvalidTransition, NotFound, StatusConflict
from cost_engine.models import ExecutionRecord, ExecutionStatus, RecommendationType, new_execution_id
from cost_engine.stores.executions import TASK_TOKEN_ATTRIBUTE, ExecutionStore
from cost_engine.topology import EXECUTIONS_TABLE
from tests.unit.conftest import REGION

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def execution_record(
    *, customer_id: str = "acme-corp", recommendation_id: str = "rec-42", **fields: Any
) -> ExecutionRecord:
    return ExecutionRecord(
        execution_id=new_execution_id(),
        recommendation_id=recommendation_id,
        customer_id=customer_id,
        recommendation_type=RecommendationType.TERMINATE_INSTANCE,
        resource_id="i-0123456789abcdef0",
        region=REGION,
        **fields,
    )


def cursor_of(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.fixture
def store(tables: None) -> ExecutionStore:
    return ExecutionStore(EXECUTIONS_TABLE.local_name, REGION)


@pytest.fixture
def pending(store: ExecutionStore) -> ExecutionRecord:
    record = execution_record()
    store.create(record)
    return record


# -- create and get ---------------------------------------------------------------------------------


def test_a_created_execution_reads_back_as_pending(store: ExecutionStore, pending: ExecutionRecord) -> None:
    stored = store.get(pending.execution_id)

    assert stored.status is ExecutionStatus.PENDING
    assert stored.model_dump(exclude={"created_at"}) == pending.model_dump(exclude={"created_at"})
    assert stored.created_at == pending.created_at


def test_creating_the_same_execution_twice_is_a_conflict_and_keeps_the_first(
    store: ExecutionStore, pending: ExecutionRecord
) -> None:
    # When a second record with the same id is created
    with pytest.raises(Conflict, match=pending.execution_id):
        store.create(pending.model_copy(update={"dry_run": True}))

    # Then the first one is untouched
    assert store.get(pending.execution_id).dry_run is False


def test_an_unknown_execution_is_not_found(store: ExecutionStore) -> None:
    unknown = new_execution_id()

    with pytest.raises(NotFound, match=f"execution '{unknown}' does not exist"):
        store.get(unknown)


# -- conditional status changes ---------------------------------------------------------------------


def test_a_transition_from_the_expected_status_is_written(store: ExecutionStore, pending: ExecutionRecord) -> None:
    # When the execution moves from pending to validating
    returned = store.transition(
        pending.execution_id,
        ExecutionStatus.VALIDATING,
        expected=ExecutionStatus.PENDING,
        changes={"current_step": "validate"},
    )

    # Then the new status and the changes are stored, and the write is what it returns
    stored = store.get(pending.execution_id)
    assert stored.status is ExecutionStatus.VALIDATING
    assert stored.current_step == "validate"
    assert stored.updated_at > pending.updated_at
    assert returned == stored


def test_a_second_writer_expecting_the_old_status_loses(store: ExecutionStore, pending: ExecutionRecord) -> None:
    # Given one writer moved the execution from pending to validating
    store.transition(pending.execution_id, ExecutionStatus.VALIDATING, expected=ExecutionStatus.PENDING)

    # When another writer, still believing it pending, tries to cancel it
    with pytest.raises(StatusConflict) as refused:
        store.transition(pending.execution_id, ExecutionStatus.CANCELLED, expected=ExecutionStatus.PENDING)

    # Then it is told what the status really is, and the first write stands
    assert "is 'validating', not 'pending'" in refused.value.message
    assert store.get(pending.execution_id).status is ExecutionStatus.VALIDATING


def test_a_forbidden_transition_is_refused_and_writes_nothing(store: ExecutionStore, pending: ExecutionRecord) -> None:
    before = store.get(pending.execution_id)

    with pytest.raises(InvalidTransition, match="'pending' cannot become 'completed'"):
        store.transition(
            pending.execution_id, ExecutionStatus.COMPLETED, expected=ExecutionStatus.PENDING, changes={"success": True}
        )

    assert store.get(pending.execution_id) == before


def test_a_transition_of_an_unknown_execution_is_not_found(store: ExecutionStore) -> None:
    with pytest.raises(NotFound):
        store.transition(new_execution_id(), ExecutionStatus.VALIDATING, expected=ExecutionStatus.PENDING)


def test_an_update_is_refused_once_the_status_has_moved_on(store: ExecutionStore, pending: ExecutionRecord) -> None:
    # Given the execution was cancelled
    store.transition(pending.execution_id, ExecutionStatus.CANCELLED, expected=ExecutionStatus.PENDING)

    # When a step that still believes it pending records its result
    with pytest.raises(StatusConflict):
        store.update(pending.execution_id, expected=ExecutionStatus.PENDING, changes={"current_step": "validate"})

    # Then the result is not recorded
    assert store.get(pending.execution_id).current_step is None


# -- listings ---------------------------------------------------------------------------------------


def test_a_customers_executions_are_listed_newest_first(store: ExecutionStore) -> None:
    # Given three executions of one customer, created in a shuffled order, and one of another customer
    records = {offset: execution_record(created_at=T0 + timedelta(minutes=offset)) for offset in (1, 0, 2)}
    for record in records.values():
        store.create(record)
    store.create(execution_record(customer_id="other-corp"))

    # When the customer's executions are listed
    page = store.list_by_customer("acme-corp", None, 10, None)

    # Then they come newest first, and only theirs
    assert [r.execution_id for r in page.items] == [records[offset].execution_id for offset in (2, 1, 0)]
    assert page.next_cursor is None


def test_a_customers_executions_can_be_filtered_by_status(store: ExecutionStore) -> None:
    # Given three executions, two of which moved on to validating
    records = [execution_record(created_at=T0 + timedelta(minutes=offset)) for offset in range(3)]
    for record in records:
        store.create(record)
    for record in records[:2]:
        store.transition(record.execution_id, ExecutionStatus.VALIDATING, expected=ExecutionStatus.PENDING)

    # When the listing is filtered by status
    validating = store.list_by_customer("acme-corp", ExecutionStatus.VALIDATING, 10, None)
    pending = store.list_by_customer("acme-corp", ExecutionStatus.PENDING, 10, None)

    # Then each filter finds the executions now in that status, newest first
    assert [r.execution_id for r in validating.items] == [records[1].execution_id, records[0].execution_id]
    assert [r.execution_id for r in pending.items] == [records[2].execution_id]


def test_paging_through_a_listing_returns_every_execution_once(store: ExecutionStore) -> None:
    # Given seven executions of one customer
    records = [execution_record(created_at=T0 + timedelta(minutes=offset)) for offset in range(7)]
    for record in records:
        store.create(record)

    # When they are read three at a time, following next_cursor until there is none
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(10):  # more pages than needed: a cursor that never ends fails the test
        page = store.list_by_customer("acme-corp", None, 3, cursor)
        assert len(page.items) <= 3
        seen += [r.execution_id for r in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break

    # Then every execution came exactly once, newest first
    assert cursor is None
    assert seen == [r.execution_id for r in reversed(records)]


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor!!",
        cursor_of(["execution_id", "exec-1"]),
        cursor_of({"execution_id": 7, "customer_id": "acme-corp", "created_at": "2026-03-01"}),
        "%%%",
    ],
)
def test_a_garbage_cursor_is_an_invalid_request(store: ExecutionStore, pending: ExecutionRecord, cursor: str) -> None:
    with pytest.raises(InvalidRequest, match="pass next_cursor from the previous page"):
        store.list_by_customer("acme-corp", None, 10, cursor)


def test_a_cursor_of_another_listing_is_an_invalid_request(store: ExecutionStore) -> None:
    # Given a next_cursor from the listing by status (keys: customer_status, created_at, execution_id)
    for offset in range(2):
        store.create(execution_record(created_at=T0 + timedelta(minutes=offset)))
    cursor = store.list_by_customer("acme-corp", ExecutionStatus.PENDING, 1, None).next_cursor
    assert cursor is not None

    # When it is passed to the listing of all the customer's executions, it is refused as not one this
    # listing returned
    with pytest.raises(InvalidRequest):
        store.list_by_customer("acme-corp", None, 1, cursor)


def test_a_cursor_of_another_customers_listing_is_refused_and_pages_nothing_of_theirs(store: ExecutionStore) -> None:
    # Given a next_cursor from one customer's listing (the same index keys as any other customer's)
    for offset in range(2):
        store.create(execution_record(customer_id="acme-corp", created_at=T0 + timedelta(minutes=offset)))
    store.create(execution_record(customer_id="globex", created_at=T0))
    cursor = store.list_by_customer("acme-corp", None, 1, None).next_cursor
    assert cursor is not None

    # When another customer's listing is asked for with it, it is refused (not paged from a foreign key)
    with pytest.raises(InvalidRequest, match="cursor belongs to another listing"):
        store.list_by_customer("globex", None, 1, cursor)


# -- the approval task token ------------------------------------------------------------------------


def test_the_task_token_is_readable_but_never_part_of_the_record(
    store: ExecutionStore, pending: ExecutionRecord
) -> None:
    # Given the approval wait's task token was stored
    token = "AQCEAAAAKgAAAAMAAAAAAAAAAT-secret-token"
    store.store_task_token(pending.execution_id, token)

    # Then whoever completes the wait can read it
    assert store.task_token(pending.execution_id) == token
    # And the record the API serves does not carry it
    record = store.get(pending.execution_id)
    assert TASK_TOKEN_ATTRIBUTE not in record.model_dump()
    assert token not in record.model_dump_json()


def test_an_execution_without_a_task_token_has_none(store: ExecutionStore, pending: ExecutionRecord) -> None:
    assert store.task_token(pending.execution_id) is None


# -- one write per status change --------------------------------------------------------------------


@pytest.fixture
def dynamodb_calls(tables: None) -> list[str]:
    """The DynamoDB operations of the stores made after this fixture, in order."""
    calls: list[str] = []
    session = boto3.DEFAULT_SESSION
    assert session is not None  # the `tables` fixture made it
    session.events.register("before-call.dynamodb", lambda model, **_: calls.append(model.name))
    return calls


def test_a_status_change_of_an_execution_the_store_has_read_is_one_write(dynamodb_calls: list[str]) -> None:
    # Given a store that read the execution, as a step does before it moves it on
    changes: list[tuple[ExecutionRecord, ExecutionRecord]] = []
    store = ExecutionStore(EXECUTIONS_TABLE.local_name, REGION, on_transition=lambda b, a: changes.append((b, a)))
    record = execution_record()
    store.create(record)
    read = store.get(record.execution_id)
    dynamodb_calls.clear()

    # When it moves the execution on, with a change and a removal
    after = store.transition(
        record.execution_id,
        ExecutionStatus.VALIDATING,
        expected=ExecutionStatus.PENDING,
        changes={"current_step": "validate", "poll_attempts": 2},
        remove=["requested_by"],
    )

    # Then that is one conditional write, and the change observed is the one written: the record
    # before it, and the record after it exactly as a read finds it now
    assert dynamodb_calls == ["UpdateItem"]
    assert changes == [(read, after)]
    assert after == store.get(record.execution_id)
    assert (after.status, after.current_step, after.poll_attempts) == (ExecutionStatus.VALIDATING, "validate", 2)


def test_a_status_change_by_a_store_that_never_read_the_execution_reads_it_once(dynamodb_calls: list[str]) -> None:
    record = execution_record()
    ExecutionStore(EXECUTIONS_TABLE.local_name, REGION).create(record)
    other = ExecutionStore(EXECUTIONS_TABLE.local_name, REGION)
    dynamodb_calls.clear()

    other.transition(record.execution_id, ExecutionStatus.VALIDATING, expected=ExecutionStatus.PENDING)
    other.transition(record.execution_id, ExecutionStatus.CANCELLED, expected=ExecutionStatus.VALIDATING)

    # Its customer (part of the status index key) is read once, and never changes
    assert dynamodb_calls == ["GetItem", "UpdateItem", "UpdateItem"]
    assert other.list_by_customer("acme-corp", ExecutionStatus.CANCELLED, 10, None).items == [
        other.get(record.execution_id)
    ]


def test_a_refused_write_tells_the_status_without_reading_the_record_again(dynamodb_calls: list[str]) -> None:
    store = ExecutionStore(EXECUTIONS_TABLE.local_name, REGION)
    record = execution_record()
    store.create(record)
    store.transition(record.execution_id, ExecutionStatus.VALIDATING, expected=ExecutionStatus.PENDING)
    dynamodb_calls.clear()

    with pytest.raises(StatusConflict, match="is 'validating', not 'pending': it cannot be updated"):
        store.update(record.execution_id, expected=ExecutionStatus.PENDING, changes={"current_step": "x"})

    assert dynamodb_calls == ["UpdateItem"]


def test_an_update_of_an_unknown_execution_is_not_found(store: ExecutionStore) -> None:
    with pytest.raises(NotFound):
        store.update(new_execution_id(), expected=ExecutionStatus.PENDING, changes={"current_step": "x"})


def test_a_final_status_takes_the_execution_off_the_unfinished_index(
    store: ExecutionStore, pending: ExecutionRecord
) -> None:
    ended = store.transition(pending.execution_id, ExecutionStatus.CANCELLED, expected=ExecutionStatus.PENDING)

    assert ended == store.get(pending.execution_id)
    assert pending.execution_id not in list(store.unfinished_ids())
