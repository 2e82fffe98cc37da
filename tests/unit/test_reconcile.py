"""Reconciling an execution whose state machine run ended without the engine's steps ending it, against
emulated DynamoDB and Step Functions: what is failed, what is rolled back, and what is left alone."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from cost_engine.context import EngineContext
from cost_engine.models import ExecutionRecord, ExecutionStatus, RecommendationType, new_execution_id
from cost_engine.reconcile import (
    STATE_MACHINE_STOPPED,
    MalformedRunEvent,
    Outcome,
    is_run_ended_event,
    reconcile_run_ended,
)
from cost_engine.service import ExecutionService
from tests.unit.conftest import ACCOUNT_ID, REGION, engine_settings, waits_a_minute

S = ExecutionStatus
ROLE_ARN = f"arn:aws:iam::{ACCOUNT_ID}:role/state-machine"


@pytest.fixture
def service(tables: None) -> ExecutionService:
    """Given the engine's tables and the terminate_instance state machine (moto records its runs)."""
    sfn = boto3.client("stepfunctions", region_name=REGION)
    machine = sfn.create_state_machine(
        name="cost-engine-terminate", definition=json.dumps(waits_a_minute()), roleArn=ROLE_ARN
    )
    settings = engine_settings(
        state_machine_arns={RecommendationType.TERMINATE_INSTANCE.value: machine["stateMachineArn"]},
    )
    return ExecutionService(EngineContext.from_settings(settings))


def machine_arn(service: ExecutionService) -> str:
    return service.ctx.settings.state_machine_arns[RecommendationType.TERMINATE_INSTANCE.value]


def run_arn(service: ExecutionService, name: str) -> str:
    return machine_arn(service).replace(":stateMachine:", ":execution:") + f":{name}"


@pytest.fixture
def execution(service: ExecutionService) -> Callable[..., ExecutionRecord]:
    """An execution in the given status, driven by its first run (a record as the steps leave it)."""

    def create(status: ExecutionStatus, **fields: Any) -> ExecutionRecord:
        execution_id = new_execution_id()
        record = ExecutionRecord(
            execution_id=execution_id,
            recommendation_id="rec-1",
            customer_id="acme",
            recommendation_type=RecommendationType.TERMINATE_INSTANCE,
            resource_id="i-0123456789abcdef0",
            region=REGION,
            account_id=ACCOUNT_ID,
            status=status,
            state_machine_execution_arn=run_arn(service, execution_id),
            **fields,
        )
        service.ctx.executions.create(record)
        return record

    return create


def run_ended(
    service: ExecutionService, name: str, status: str = "ABORTED", machine: str | None = None, **detail: Any
) -> dict[str, Any]:
    """A Step Functions Execution Status Change event, as EventBridge delivers it."""
    machine = machine or machine_arn(service)
    return {
        "version": "0",
        "id": "315c1398-40ff-a850-213b-158f73e60175",
        "detail-type": "Step Functions Execution Status Change",
        "source": "aws.states",
        "account": ACCOUNT_ID,
        "time": "2026-11-27T10:00:00Z",
        "region": REGION,
        "resources": [machine.replace(":stateMachine:", ":execution:") + f":{name}"],
        "detail": {
            "executionArn": machine.replace(":stateMachine:", ":execution:") + f":{name}",
            "stateMachineArn": machine,
            "name": name,
            "status": status,
            "startDate": 1795769132380,
            "stopDate": 1795769132389,
            "input": "{}",
            "error": None,
            "cause": None,
            **detail,
        },
    }


def audit(service: ExecutionService, execution_id: str) -> list[tuple[str, str]]:
    return [(e.event_type, e.actor) for e in service.ctx.audit.events(execution_id)]


def runs(service: ExecutionService) -> list[Any]:
    sfn = boto3.client("stepfunctions", region_name=REGION)
    return [
        sfn.describe_execution(executionArn=e["executionArn"])
        for e in sfn.list_executions(stateMachineArn=machine_arn(service))["executions"]
    ]


@pytest.mark.parametrize("status", [S.PENDING, S.VALIDATING, S.AWAITING_APPROVAL, S.APPROVED])
def test_a_run_ending_before_anything_was_changed_fails_the_execution_with_the_reason(
    service: ExecutionService, execution: Callable[..., ExecutionRecord], status: ExecutionStatus
) -> None:
    record = execution(status)
    service.ctx.executions.store_task_token(record.execution_id, "token")

    reconciled = reconcile_run_ended(service, run_ended(service, record.execution_id, "ABORTED"))

    assert (reconciled.outcome, reconciled.status) == (Outcome.FAILED, S.FAILED)
    failed = service.ctx.executions.get(record.execution_id)
    assert failed.status == S.FAILED
    assert failed.success is False
    assert failed.error_message == (
        f"the state machine run {record.execution_id} ended ABORTED while the execution was {status.value}, "
        "before anything was changed"
    )
    # Nobody waits for the approval any more, and nothing is started.
    assert service.ctx.executions.task_token(record.execution_id) is None
    assert runs(service) == []
    assert audit(service, record.execution_id) == [
        (STATE_MACHINE_STOPPED, "event:aws.states"),
        ("status_changed", "event:aws.states"),
    ]


@pytest.mark.parametrize("status", [S.EXECUTING, S.VERIFYING])
def test_a_run_ending_while_the_resource_may_be_half_changed_starts_a_rollback_run(
    service: ExecutionService, execution: Callable[..., ExecutionRecord], status: ExecutionStatus
) -> None:
    record = execution(status, backup={"image_id": "ami-1"}, rollback_available=True)

    reconciled = reconcile_run_ended(
        service, run_ended(service, record.execution_id, "TIMED_OUT", error="States.Timeout")
    )

    assert (reconciled.outcome, reconciled.status) == (Outcome.ROLLING_BACK, S.ROLLING_BACK)
    rolling_back = service.ctx.executions.get(record.execution_id)
    assert (rolling_back.status, rolling_back.rollback_runs) == (S.ROLLING_BACK, 1)
    assert rolling_back.error_message == (
        f"the state machine run {record.execution_id} ended TIMED_OUT while the execution was {status.value} "
        "(States.Timeout): the resource may be half-changed, so it is rolled back"
    )
    # The same state machine, in rollback mode, as a manual rollback starts it.
    [started] = runs(service)
    assert started["executionArn"] == run_arn(service, f"{record.execution_id}-rollback-1")
    assert json.loads(started["input"]) == {
        "execution_id": record.execution_id,
        "mode": "rollback",
        "error": None,
    }
    assert [event for event, _ in audit(service, record.execution_id)] == [
        STATE_MACHINE_STOPPED,
        "status_changed",
        "rollback_requested",
    ]
    stopped = service.ctx.audit.events(record.execution_id)[0]
    assert stopped.detail == {
        "run_status": "TIMED_OUT",
        "execution_arn": run_arn(service, record.execution_id),
        "execution_status": status.value,
        "error": "States.Timeout",
        "cause": None,
        "then": "rolling_back",
    }


def test_a_rollback_whose_run_ended_is_taken_over_by_a_new_rollback_run_keeping_its_first_reason(
    service: ExecutionService, execution: Callable[..., ExecutionRecord]
) -> None:
    record = execution(S.ROLLING_BACK, error_message="ActionFailed: verification failed")

    reconciled = reconcile_run_ended(service, run_ended(service, record.execution_id, "FAILED", error="Lambda.Unknown"))

    assert reconciled.outcome == Outcome.ROLLING_BACK
    rolling_back = service.ctx.executions.get(record.execution_id)
    assert (rolling_back.status, rolling_back.rollback_runs) == (S.ROLLING_BACK, 1)
    assert rolling_back.error_message is not None
    assert rolling_back.error_message.startswith("ActionFailed: verification failed; then the state machine run")
    assert [r["name"] for r in runs(service)] == [f"{record.execution_id}-rollback-1"]


def test_the_same_event_delivered_again_changes_nothing(
    service: ExecutionService, execution: Callable[..., ExecutionRecord]
) -> None:
    record = execution(S.EXECUTING)
    event = run_ended(service, record.execution_id)
    reconcile_run_ended(service, event)
    logged = audit(service, record.execution_id)

    again = reconcile_run_ended(service, event)

    # The rollback run now drives the execution: the event is about a run that no longer does.
    assert (again.outcome, again.status) == (Outcome.SETTLED, S.ROLLING_BACK)
    assert service.ctx.executions.get(record.execution_id).rollback_runs == 1
    assert audit(service, record.execution_id) == logged
    assert len(runs(service)) == 1


@pytest.mark.parametrize("status", [S.CANCELLED, S.COMPLETED, S.FAILED, S.ROLLED_BACK])
def test_a_run_ending_after_the_engine_ended_the_execution_changes_nothing(
    service: ExecutionService, execution: Callable[..., ExecutionRecord], status: ExecutionStatus
) -> None:
    # E.g. the API's cancel: it ends the execution, then stops the run.
    record = execution(status)

    reconciled = reconcile_run_ended(service, run_ended(service, record.execution_id))

    assert (reconciled.outcome, reconciled.status) == (Outcome.SETTLED, status)
    assert service.ctx.executions.get(record.execution_id).status == status
    assert audit(service, record.execution_id) == []


def test_the_end_of_a_run_that_no_longer_drives_the_execution_changes_nothing(
    service: ExecutionService, execution: Callable[..., ExecutionRecord]
) -> None:
    # A manual rollback's run drives it now; the first run's end arrives late.
    record = execution(S.ROLLING_BACK, rollback_runs=1)

    reconciled = reconcile_run_ended(service, run_ended(service, record.execution_id))

    assert reconciled.outcome == Outcome.SETTLED
    assert service.ctx.executions.get(record.execution_id).rollback_runs == 1
    assert audit(service, record.execution_id) == []


def test_a_manual_rollback_run_that_ended_is_recognised_by_its_name(
    service: ExecutionService, execution: Callable[..., ExecutionRecord]
) -> None:
    record = execution(S.ROLLING_BACK, rollback_runs=1, success=True)

    reconciled = reconcile_run_ended(service, run_ended(service, f"{record.execution_id}-rollback-1"))

    assert reconciled.outcome == Outcome.ROLLING_BACK
    assert service.ctx.executions.get(record.execution_id).rollback_runs == 2
    assert [r["name"] for r in runs(service)] == [f"{record.execution_id}-rollback-2"]


@pytest.mark.parametrize(
    ("name", "machine", "status"),
    [
        ("nightly-report-2026-11-27", None, "ABORTED"),
        (new_execution_id(), f"arn:aws:states:{REGION}:{ACCOUNT_ID}:stateMachine:someone-elses", "ABORTED"),
        (new_execution_id(), None, "ABORTED"),
        (new_execution_id(), None, "SUCCEEDED"),
    ],
    ids=["not-an-engine-run", "another-state-machine", "unknown-execution", "not-an-early-end"],
)
def test_runs_that_are_not_the_engines_early_ends_are_ignored(
    service: ExecutionService, name: str, machine: str | None, status: str
) -> None:
    reconciled = reconcile_run_ended(service, run_ended(service, name, status, machine=machine))

    assert reconciled.outcome == Outcome.NOT_OURS
    assert runs(service) == []


def test_a_record_that_moves_while_it_is_reconciled_is_looked_at_again(
    service: ExecutionService, execution: Callable[..., ExecutionRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the backup step of the ended run, still in flight, moving it from approved to executing
    # between the reconciliation's read and its write
    record = execution(S.APPROVED)
    store = service.ctx.executions
    plain_get = store.get
    reads = []

    def get(execution_id: str) -> ExecutionRecord:
        reads.append(execution_id)
        if len(reads) == 1:
            stale = plain_get(execution_id)
            store.transition(execution_id, S.EXECUTING, expected=S.APPROVED)
            return stale
        return plain_get(execution_id)

    monkeypatch.setattr(store, "get", get)

    reconciled = reconcile_run_ended(service, run_ended(service, record.execution_id))

    # Then it is rolled back, as an executing one is, not failed as if nothing had changed
    assert reconciled.outcome == Outcome.ROLLING_BACK
    assert plain_get(record.execution_id).status == S.ROLLING_BACK
    stopped = [
        e.detail["then"] for e in service.ctx.audit.events(record.execution_id) if e.event_type == STATE_MACHINE_STOPPED
    ]
    assert stopped == ["failed", "rolling_back"]


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (lambda e: e["detail"].pop("executionArn"), "detail.executionArn: Field required"),
        (lambda e: e.update(detail="ABORTED"), "detail"),
        (lambda e: e.update({"detail-type": "Recommendation Approved"}), "not 'Step Functions Execution"),
    ],
    ids=["no-execution-arn", "detail-not-an-object", "other-detail-type"],
)
def test_an_event_that_is_no_status_change_is_refused_with_the_reason(
    service: ExecutionService, change: Callable[[dict[str, Any]], Any], complaint: str
) -> None:
    event = run_ended(service, new_execution_id())
    change(event)

    with pytest.raises(MalformedRunEvent, match=complaint):
        reconcile_run_ended(service, event)


def test_the_trigger_tells_status_changes_from_recommendation_events_by_their_detail_type(
    service: ExecutionService,
) -> None:
    assert is_run_ended_event(run_ended(service, new_execution_id()))
    assert not is_run_ended_event({"detail-type": "Recommendation Approved", "detail": {}})
    assert not is_run_ended_event("not an event")
