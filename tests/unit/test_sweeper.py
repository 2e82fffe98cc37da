"""The sweeper's decisions, against emulated DynamoDB and Step Functions: which unfinished executions
it finds, which it leaves to their run, and how it finishes one whose run has ended, from its log."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import boto3
import pytest

from cost_engine.context import EngineContext
from cost_engine.errors import Conflict
from cost_engine.models import ExecutionRecord, ExecutionStatus, RecommendationType, new_execution_id, utc_now
from cost_engine.service import ExecutionService
from cost_engine.sweeper import SWEEPER_ACTOR, SWEPT, Decision, is_sweep_event, sweep
from tests.unit.conftest import ACCOUNT_ID, REGION, engine_settings, waits_a_minute

S = ExecutionStatus
ROLE_ARN = f"arn:aws:iam::{ACCOUNT_ID}:role/state-machine"
TYPES = (RecommendationType.TERMINATE_INSTANCE, RecommendationType.MIGRATE_TO_SPOT)


@pytest.fixture
def service(tables: None) -> ExecutionService:
    """Given the engine's tables and two state machines (moto records their runs, which never end by
    themselves: a test stops one to end it)."""
    sfn = boto3.client("stepfunctions", region_name=REGION)
    definition = json.dumps(waits_a_minute())
    machines = {
        t.value: sfn.create_state_machine(name=f"ce-{t.value}", definition=definition, roleArn=ROLE_ARN)[
            "stateMachineArn"
        ]
        for t in TYPES
    }
    settings = engine_settings(
        state_machine_arns=machines,
    )
    return ExecutionService(EngineContext.from_settings(settings))


def sfn() -> Any:
    return boto3.client("stepfunctions", region_name=REGION)


@pytest.fixture
def execution(service: ExecutionService) -> Callable[..., ExecutionRecord]:
    """An execution in the given status whose first run was started, and ended unless `running`."""

    def create(
        status: ExecutionStatus,
        *,
        running: bool = False,
        started: bool = True,
        recommendation_type: RecommendationType = RecommendationType.TERMINATE_INSTANCE,
        **fields: Any,
    ) -> ExecutionRecord:
        execution_id = new_execution_id()
        machine = service.ctx.settings.state_machine_arns[recommendation_type.value]
        arn = None
        if started:
            arn = sfn().start_execution(stateMachineArn=machine, name=execution_id, input="{}")["executionArn"]
            if not running:
                sfn().stop_execution(executionArn=arn)
        record = ExecutionRecord(
            execution_id=execution_id,
            recommendation_id="rec-1",
            customer_id="acme",
            recommendation_type=recommendation_type,
            resource_id="i-0123456789abcdef0",
            region=REGION,
            account_id=ACCOUNT_ID,
            status=status,
            state_machine_execution_arn=arn,
            **fields,
        )
        service.ctx.executions.create(record)
        return record

    return create


def log(service: ExecutionService, execution_id: str, *events: tuple[str, dict[str, Any]]) -> None:
    for event_type, detail in events:
        service.ctx.audit.append(execution_id, event_type, "state-machine:step", detail)


def logged(service: ExecutionService, execution_id: str) -> list[tuple[str, str]]:
    return [(e.event_type, e.actor) for e in service.ctx.audit.events(execution_id)]


def runs_named(service: ExecutionService, name: str) -> list[str]:
    return [
        run["executionArn"]
        for machine in service.ctx.settings.state_machine_arns.values()
        for run in sfn().list_executions(stateMachineArn=machine)["executions"]
        if run["name"] == name
    ]


VERIFIED = ("verified", {"passed": True, "failures": []})


def test_a_verified_change_whose_run_ended_before_recording_it_is_completed_from_the_log(
    service: ExecutionService, execution: Callable[..., ExecutionRecord]
) -> None:
    record = execution(S.VERIFYING, backup={"image_id": "ami-1"}, rollback_available=True)
    log(service, record.execution_id, ("action_started", {}), VERIFIED)

    report = sweep(service)

    assert report.decisions == {record.execution_id: Decision.COMPLETED}
    completed = service.ctx.executions.get(record.execution_id)
    assert (completed.status, completed.success) == (S.COMPLETED, True)
    assert completed.completed_at is not None
    assert logged(service, record.execution_id)[-2:] == [(SWEPT, SWEEPER_ACTOR), ("status_changed", SWEEPER_ACTOR)]
    swept = service.ctx.audit.events(record.execution_id)[-2]
    assert swept.detail == {
        "run_status": "ABORTED",
        "execution_arn": record.state_machine_execution_arn,
        "execution_status": "verifying",
        "reason": f"the state machine run {record.execution_id} ended ABORTED while the execution was verifying",
        "then": "completed",
    }
    # Final: out of the sweeper's index, so the next sweep does not look at it again.
    assert record.execution_id not in list(service.ctx.executions.unfinished_ids())
    assert sweep(service).looked_at == 0


@pytest.mark.parametrize(
    ("status", "events", "fields", "recommendation_type"),
    [
        pytest.param(S.EXECUTING, [("action_started", {})], {}, RecommendationType.TERMINATE_INSTANCE, id="acting"),
        pytest.param(S.VERIFYING, [], {}, RecommendationType.TERMINATE_INSTANCE, id="verifying-unverified"),
        pytest.param(
            S.VERIFYING,
            [("verified", {"passed": False, "failures": ["still running"]})],
            {},
            RecommendationType.TERMINATE_INSTANCE,
            id="verification-failed",
        ),
        pytest.param(
            S.VERIFYING,
            [VERIFIED],
            {"cancel_requested_by": "ops"},
            RecommendationType.TERMINATE_INSTANCE,
            id="verified-but-cancelled",
        ),
        pytest.param(S.VERIFYING, [VERIFIED], {}, RecommendationType.MIGRATE_TO_SPOT, id="verified-but-not-finalized"),
        pytest.param(S.ROLLING_BACK, [VERIFIED], {}, RecommendationType.TERMINATE_INSTANCE, id="rolling-back"),
    ],
)
def test_a_change_not_shown_verified_and_whole_is_rolled_back_by_a_new_rollback_run(
    service: ExecutionService,
    execution: Callable[..., ExecutionRecord],
    status: ExecutionStatus,
    events: list[tuple[str, dict[str, Any]]],
    fields: dict[str, Any],
    recommendation_type: RecommendationType,
) -> None:
    record = execution(
        status, recommendation_type=recommendation_type, backup={"image_id": "ami-1"}, rollback_available=True, **fields
    )
    log(service, record.execution_id, *events)

    report = sweep(service)

    assert report.decisions == {record.execution_id: Decision.ROLLING_BACK}
    rolling_back = service.ctx.executions.get(record.execution_id)
    assert (rolling_back.status, rolling_back.rollback_runs) == (S.ROLLING_BACK, 1)
    assert rolling_back.error_message is not None
    assert rolling_back.error_message.endswith("the resource may be half-changed, so it is rolled back")
    assert len(runs_named(service, f"{record.execution_id}-rollback-1")) == 1
    assert (SWEPT, SWEEPER_ACTOR) in logged(service, record.execution_id)
    assert ("rollback_requested", SWEEPER_ACTOR) in logged(service, record.execution_id)
    # The rollback run drives it now: the next sweep leaves it to that run.
    assert sweep(service).decisions == {}


@pytest.mark.parametrize("status", [S.PENDING, S.VALIDATING, S.AWAITING_APPROVAL, S.APPROVED])
def test_an_execution_whose_run_ended_before_it_changed_anything_fails_with_the_reason(
    service: ExecutionService, execution: Callable[..., ExecutionRecord], status: ExecutionStatus
) -> None:
    record = execution(status)
    service.ctx.executions.store_task_token(record.execution_id, "token")

    report = sweep(service)

    assert report.decisions == {record.execution_id: Decision.FAILED}
    failed = service.ctx.executions.get(record.execution_id)
    assert (failed.status, failed.success) == (S.FAILED, False)
    assert failed.error_message == (
        f"the state machine run {record.execution_id} ended ABORTED while the execution was {status.value}, "
        "before anything was changed"
    )
    assert service.ctx.executions.task_token(record.execution_id) is None
    assert runs_named(service, f"{record.execution_id}-rollback-1") == []


def test_an_execution_whose_run_still_runs_is_left_to_it(
    service: ExecutionService, execution: Callable[..., ExecutionRecord]
) -> None:
    record = execution(S.VERIFYING, running=True)
    log(service, record.execution_id, VERIFIED)

    report = sweep(service)

    assert (report.looked_at, report.decisions) == (1, {})
    assert service.ctx.executions.get(record.execution_id).status == S.VERIFYING
    assert SWEPT not in [event for event, _ in logged(service, record.execution_id)]


def test_only_unfinished_executions_are_looked_at_and_one_leaves_the_index_when_it_ends(
    service: ExecutionService, execution: Callable[..., ExecutionRecord]
) -> None:
    running = execution(S.VALIDATING, running=True)
    execution(S.COMPLETED)
    execution(S.ROLLED_BACK)

    assert list(service.ctx.executions.unfinished_ids()) == [running.execution_id]
    service.ctx.executions.transition(running.execution_id, S.FAILED, expected=S.VALIDATING)
    assert list(service.ctx.executions.unfinished_ids()) == []
    # A finished change that is rolled back on request is unfinished again until the rollback ends.
    service.ctx.executions.transition(running.execution_id, S.ROLLING_BACK, expected=S.FAILED)
    assert list(service.ctx.executions.unfinished_ids()) == [running.execution_id]


def test_an_execution_whose_run_never_started_fails_once_its_start_is_overdue(
    service: ExecutionService, execution: Callable[..., ExecutionRecord]
) -> None:
    just_created = execution(S.PENDING, started=False)
    lost = execution(S.PENDING, started=False, created_at=utc_now() - timedelta(minutes=10))

    report = sweep(service)

    assert report.decisions == {lost.execution_id: Decision.FAILED}
    assert service.ctx.executions.get(lost.execution_id).error_message == (
        "its state machine run never started, before anything was changed"
    )
    assert service.ctx.executions.get(just_created.execution_id).status == S.PENDING


def test_an_approval_the_api_could_not_hand_over_is_handed_over_to_the_waiting_run_once(
    service: ExecutionService, execution: Callable[..., ExecutionRecord]
) -> None:
    # Approved, but SendTaskSuccess failed: the run still waits, and the record keeps the token.
    record = execution(S.APPROVED, running=True)
    service.ctx.executions.store_task_token(record.execution_id, "the-runs-token")

    report = sweep(service)

    assert report.decisions == {record.execution_id: Decision.APPROVAL_DELIVERED}
    assert service.ctx.executions.task_token(record.execution_id) is None
    assert ("approval_delivered", SWEEPER_ACTOR) in logged(service, record.execution_id)
    # Handed over once: the run takes it from here.
    assert sweep(service).decisions == {}


def test_a_person_may_roll_back_an_execution_whose_run_ended_mid_change_but_not_one_still_running(
    service: ExecutionService, execution: Callable[..., ExecutionRecord]
) -> None:
    stranded = execution(S.VERIFYING)
    running = execution(S.VERIFYING, running=True)

    rolling_back = service.rollback(stranded.execution_id, "ops@example.com")

    assert (rolling_back.status, rolling_back.rollback_runs) == (S.ROLLING_BACK, 1)
    assert len(runs_named(service, f"{stranded.execution_id}-rollback-1")) == 1
    with pytest.raises(Conflict, match="and its state machine run has ended without finishing it"):
        service.rollback(running.execution_id, "ops@example.com")


def test_a_cancel_of_an_execution_whose_run_ended_mid_change_starts_the_rollback_that_ends_it_cancelled(
    service: ExecutionService, execution: Callable[..., ExecutionRecord]
) -> None:
    record = execution(S.EXECUTING)

    cancelling = service.cancel(record.execution_id, "ops@example.com")

    # Not merely noted for a step that will never come: a rollback run is under way.
    assert (cancelling.status, cancelling.cancel_requested_by) == (S.ROLLING_BACK, "ops@example.com")
    assert len(runs_named(service, f"{record.execution_id}-rollback-1")) == 1


def test_only_the_schedules_event_is_a_sweep() -> None:
    scheduled = {"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}}

    assert is_sweep_event(scheduled)
    assert not is_sweep_event({**scheduled, "source": "acme.tools"})
    assert not is_sweep_event({"detail-type": "Recommendation Approved", "source": "aws.events"})
    assert not is_sweep_event(None)


def test_a_sweep_hands_a_slot_left_free_to_the_oldest_waiting_execution(
    service: ExecutionService, execution: Callable[..., ExecutionRecord], monkeypatch: pytest.MonkeyPatch
) -> None:
    limits = service.ctx.limits
    monkeypatch.setattr(limits.settings, "max_concurrent_acting", 1)
    woken: list[tuple[str, int]] = []

    def wake(token: str, slot: int) -> bool:
        woken.append((token, slot))
        return True

    monkeypatch.setattr(limits, "wake", wake)
    holder = execution(S.EXECUTING, running=True, queued_at=utc_now() - timedelta(minutes=2))
    waiter = execution(S.APPROVED, running=True, queued_at=utc_now() - timedelta(minutes=1))
    assert limits.claim_slot(holder, "token-of-holder").slot == 0
    assert limits.claim_slot(waiter, "token-of-waiter").slot is None
    # The holder's slot is freed, but the hand-over that should have followed was lost
    limits.store.release_slot(holder.execution_id)

    report = sweep(service)

    assert report.slots_handed_over == [waiter.execution_id]
    assert woken == [("token-of-waiter", 0)]
    assert limits.claim_slot(waiter, "token-of-waiter", asked_before=True).slot == 0  # it is the waiter's
