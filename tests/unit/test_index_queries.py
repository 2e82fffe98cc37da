"""The queries of the executions table's indexes, which hold keys only: each still answers with whole,
current records (the listings read a page's records by their keys), as when the indexes held it all."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from cost_engine.errors import TransientError
from cost_engine.models import ApprovalState, ExecutionRecord, ExecutionStatus, RecommendationType, new_execution_id
from cost_engine.stores import dynamo
from cost_engine.stores.dynamo import batch_get, to_item
from cost_engine.stores.executions import ExecutionStore
from cost_engine.topology import EXECUTIONS_TABLE, IndexName
from tests.unit.conftest import REGION

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
S = ExecutionStatus


@pytest.fixture
def store(tables: None) -> ExecutionStore:
    return ExecutionStore(EXECUTIONS_TABLE.local_name, REGION)


def detailed_record(customer_id: str = "acme-corp", minutes: int = 0, **fields: Any) -> ExecutionRecord:
    """An execution with the fields a listing shows filled, nested ones included."""
    return ExecutionRecord(
        execution_id=new_execution_id(),
        recommendation_id=f"rec-{minutes}",
        customer_id=customer_id,
        recommendation_type=RecommendationType.TERMINATE_INSTANCE,
        resource_id="i-0123456789abcdef0",
        region=REGION,
        account_id="123456789012",
        requested_by="apikey:operator",
        created_at=T0 + timedelta(minutes=minutes),
        estimated_monthly_savings=70.48,
        backup={"image_id": "ami-0abc", "volumes": [{"size_gb": 8, "monthly": 0.8}]},
        approval=ApprovalState(requested_at=T0, deadline=T0 + timedelta(days=1), approvers=["finops@example.com"]),
        approval_id=f"appr-{minutes}-{customer_id}",
        **fields,
    )


def test_a_listing_answers_with_whole_records_newest_first(store: ExecutionStore) -> None:
    # Given three detailed executions of one customer, and one of another customer
    records = [detailed_record(minutes=m) for m in (1, 0, 2)]
    for record in records:
        store.create(record)
    store.create(detailed_record(customer_id="globex"))

    # When the customer's executions are listed
    page = store.list_by_customer("acme-corp", None, 10, None)

    # Then each is the whole record as stored, newest first, and only theirs
    by_time = sorted(records, key=lambda r: r.created_at, reverse=True)
    assert page.items == [store.get(r.execution_id) for r in by_time]
    assert page.items[0].backup == {"image_id": "ami-0abc", "volumes": [{"size_gb": 8, "monthly": 0.8}]}
    assert page.items[0].approval is not None
    assert page.items[0].approval.approvers == ["finops@example.com"]
    assert page.next_cursor is None


def test_a_listing_by_status_answers_with_the_records_as_they_are_now(store: ExecutionStore) -> None:
    # Given two executions, one of which moved on to validating with a step recorded
    first, second = detailed_record(minutes=0), detailed_record(minutes=1)
    store.create(first)
    store.create(second)
    store.transition(first.execution_id, S.VALIDATING, expected=S.PENDING, changes={"current_step": "validate"})

    # When each status is listed
    validating = store.list_by_customer("acme-corp", S.VALIDATING, 10, None)
    pending = store.list_by_customer("acme-corp", S.PENDING, 10, None)

    # Then each listing holds the whole current record of its executions
    assert validating.items == [store.get(first.execution_id)]
    assert validating.items[0].current_step == "validate"
    assert pending.items == [store.get(second.execution_id)]


def test_a_record_that_moved_on_since_the_index_named_it_is_left_out_of_a_listing_by_status(
    store: ExecutionStore,
) -> None:
    # Given a record the status index still files under `validating` while it is `approved` (as a read
    # of the eventually consistent index just after a status change may find it)
    record = detailed_record()
    item = to_item(record.model_copy(update={"status": S.APPROVED}))
    item |= {"created_at": "2026-03-01T09:00:00.000000Z", "customer_status": "acme-corp#validating"}
    boto3.resource("dynamodb", region_name=REGION).Table(EXECUTIONS_TABLE.local_name).put_item(Item=item)

    # When the executions in validating are listed, it is not among them
    assert store.list_by_customer("acme-corp", S.VALIDATING, 10, None).items == []


def test_paging_a_listing_reads_every_whole_record_once(store: ExecutionStore) -> None:
    records = [detailed_record(minutes=m) for m in range(5)]
    for record in records:
        store.create(record)

    seen: list[ExecutionRecord] = []
    cursor: str | None = None
    for _ in range(5):
        page = store.list_by_customer("acme-corp", None, 2, cursor)
        seen += page.items
        cursor = page.next_cursor
        if cursor is None:
            break

    assert seen == [store.get(r.execution_id) for r in reversed(records)]


def test_the_execution_of_an_approval_link_is_found_whole(store: ExecutionStore) -> None:
    record = detailed_record()
    store.create(record)
    store.create(detailed_record(minutes=1))

    assert store.find_by_approval(record.approval_id or "") == store.get(record.execution_id)
    assert store.find_by_approval("no-such-approval") is None


def test_the_unfinished_executions_are_found_by_id_until_they_end(store: ExecutionStore) -> None:
    running, ending = detailed_record(minutes=0), detailed_record(minutes=1)
    store.create(running)
    store.create(ending)
    store.transition(ending.execution_id, S.CANCELLED, expected=S.PENDING)

    assert list(store.unfinished_ids()) == [running.execution_id]


@pytest.mark.parametrize(
    "index", [i.name for i in EXECUTIONS_TABLE.indexes], ids=[i.name for i in EXECUTIONS_TABLE.indexes]
)
def test_an_index_item_holds_only_the_keys(store: ExecutionStore, index: str) -> None:
    # Given a detailed execution, when its item is read from each index
    record = detailed_record()
    store.create(record)
    spec = next(i for i in EXECUTIONS_TABLE.indexes if i.name == index)
    value = {
        IndexName.CUSTOMER_CREATED: "acme-corp",
        IndexName.CUSTOMER_STATUS_CREATED: "acme-corp#pending",
        IndexName.APPROVAL: record.approval_id,
        IndexName.UNFINISHED: "unfinished",
    }[index]
    table = boto3.resource("dynamodb", region_name=REGION).Table(EXECUTIONS_TABLE.local_name)
    [item] = table.query(
        IndexName=index,
        KeyConditionExpression="#k = :v",
        ExpressionAttributeNames={"#k": spec.partition_key},
        ExpressionAttributeValues={":v": value},
    )["Items"]

    # Then it holds the keys the topology says it does, and nothing the record says besides
    assert frozenset(item) == EXECUTIONS_TABLE.index_attributes(spec)


# -- reading a page's records by their keys -------------------------------------------------------------


def test_more_keys_than_one_request_takes_are_read_in_order(store: ExecutionStore) -> None:
    records = [detailed_record(minutes=m) for m in range(dynamo.BATCH_GET_MAX_KEYS + 5)]
    for record in records:
        store.create(record)
    table = boto3.resource("dynamodb", region_name=REGION).Table(EXECUTIONS_TABLE.local_name)
    keys = [{"execution_id": r.execution_id} for r in reversed(records)]

    items = batch_get(table, [*keys[:3], {"execution_id": "missing"}, *keys[3:]])

    assert [item["execution_id"] for item in items] == [key["execution_id"] for key in keys]


class ThrottlingTable:
    """A table whose BatchGetItem reads only `reads` of the keys asked for the first `times` times
    (leaving the others unprocessed), then all of them."""

    name = "t"

    def __init__(self, times: int, reads: int) -> None:
        self.times = times
        self.reads = reads
        self.requests: list[dict[str, Any]] = []
        self.meta = self
        self.client = self

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(RequestItems)
        keys = RequestItems["t"]["Keys"]
        read = keys[: self.reads] if len(self.requests) <= self.times else keys
        unread = keys[len(read) :]
        return {
            "Responses": {"t": [dict(key, n=1) for key in read]},
            **({"UnprocessedKeys": {"t": {"Keys": unread}}} if unread else {}),
        }


def test_keys_left_unprocessed_are_asked_for_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dynamo, "BATCH_GET_FIRST_PAUSE_SECONDS", 0)
    table = ThrottlingTable(times=2, reads=1)

    items = batch_get(table, [{"pk": "a"}, {"pk": "b"}, {"pk": "c"}])

    assert items == [{"pk": "a", "n": 1}, {"pk": "b", "n": 1}, {"pk": "c", "n": 1}]
    assert [r["t"]["Keys"] for r in table.requests] == [
        [{"pk": "a"}, {"pk": "b"}, {"pk": "c"}],
        [{"pk": "b"}, {"pk": "c"}],
        [{"pk": "c"}],
    ]


def test_keys_left_unprocessed_every_time_fail_as_worth_retrying(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dynamo, "BATCH_GET_FIRST_PAUSE_SECONDS", 0)

    with pytest.raises(TransientError, match="throttled"):
        batch_get(ThrottlingTable(times=dynamo.BATCH_GET_ATTEMPTS, reads=0), [{"pk": "a"}, {"pk": "b"}])
