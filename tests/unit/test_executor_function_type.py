"""Each type's executor function knows its type (RECOMMENDATION_TYPE) and runs no step of another's."""

from __future__ import annotations

import pytest

from cost_engine.context import EngineContext
from cost_engine.environment import Deployment, function_environment
from cost_engine.errors import UnsupportedType
from cost_engine.models import ExecutionRecord, ExecutionStatus, RecommendationType, new_execution_id
from cost_engine.settings import load_settings
from cost_engine.steps import Step, StepRequest, StepRunner
from cost_engine.topology import (
    TABLES,
    EnvVar,
    executor_function,
    functions,
)
from tests.unit.conftest import ACCOUNT_ID, REGION, engine_settings

T = RecommendationType


def runner(own_type: RecommendationType | None) -> StepRunner:
    settings = engine_settings(
        recommendation_type=own_type,
    )
    return StepRunner(EngineContext.from_settings(settings))


def pending(steps: StepRunner, recommendation_type: RecommendationType) -> ExecutionRecord:
    record = ExecutionRecord(
        execution_id=new_execution_id(),
        recommendation_id="rec-1",
        customer_id="acme",
        recommendation_type=recommendation_type,
        resource_id="i-0123456789abcdef0",
        region=REGION,
        account_id=ACCOUNT_ID,
    )
    steps.ctx.executions.create(record)
    return record


@pytest.mark.parametrize("step", [Step.PREPARE, Step.ACQUIRE_SLOT, Step.BACKUP, Step.ROLLBACK, Step.RECORD_FAILURE])
def test_a_step_of_another_types_execution_is_refused_and_changes_nothing(tables: None, step: Step) -> None:
    # Given the function of terminate_instance, and an execution of rightsize_instance
    steps = runner(T.TERMINATE_INSTANCE)
    record = pending(steps, T.RIGHTSIZE_INSTANCE)

    # When a step of that execution reaches it, it is refused, saying which function and which type
    with pytest.raises(UnsupportedType, match=r"runs the steps of terminate_instance.*is rightsize_instance"):
        steps.run(StepRequest(step=step, execution_id=record.execution_id, error={"Error": "x"}))

    # And nothing was written
    assert steps.ctx.executions.get(record.execution_id).status == ExecutionStatus.PENDING
    assert steps.ctx.audit.events(record.execution_id) == []


def test_a_step_of_its_own_type_runs(tables: None) -> None:
    steps = runner(T.RIGHTSIZE_INSTANCE)
    record = pending(steps, T.RIGHTSIZE_INSTANCE)

    steps.run(StepRequest(step=Step.RECORD_FAILURE, execution_id=record.execution_id, error={"Error": "Boom"}))

    assert steps.ctx.executions.get(record.execution_id).status == ExecutionStatus.FAILED


def test_each_executor_function_is_given_its_own_type_and_the_others_none() -> None:
    deployment = Deployment(
        table_names={table: table.local_name for table in TABLES},
        approval_topic_arn="topic",
        approval_secret_arn="secret",
        event_bus_name="bus",
        scheduler_role_arn="role",
        state_machine_arns="{}",
        api_base_url="https://example.com",
    )

    for function in functions():
        own_type = function_environment(function, deployment).get(EnvVar.RECOMMENDATION_TYPE)
        assert own_type == (function.recommendation_type.value if function.recommendation_type else None)
    fix_config = function_environment(executor_function(T.FIX_CONFIG), deployment)
    assert fix_config[EnvVar.RECOMMENDATION_TYPE] == "fix_config"


def test_the_type_is_read_from_the_environment_and_an_unknown_one_stops_the_function() -> None:
    tables = {table.env_var: table.local_name for table in TABLES}

    assert load_settings({**tables, EnvVar.RECOMMENDATION_TYPE: "delete_volume"}).recommendation_type == T.DELETE_VOLUME
    assert load_settings(tables).recommendation_type is None
    with pytest.raises(RuntimeError, match="recommendation_type"):
        load_settings({**tables, EnvVar.RECOMMENDATION_TYPE: "delete_everything"})
