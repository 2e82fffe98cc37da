"""Each type's executor function, as the local runtime loads it, knows its type and refuses the steps
of an execution of another type, as each function on AWS does (its own module and environment)."""

from __future__ import annotations

import json
from collections.abc import Callable

from cost_engine import topology
from cost_engine.models import RecommendationType
from local_runtime.client import ApiClient
from local_runtime.runtime import LocalRuntime


def test_a_step_sent_to_another_types_function_is_refused_and_the_execution_is_untouched(
    runtime: LocalRuntime, api: ApiClient, recommend: Callable[..., str]
) -> None:
    # Given a dry run of fix_config that has ended (its record is final and its log complete)
    logs = runtime.client("logs")
    group = "/ce/function-types"
    logs.create_log_group(logGroupName=group)
    recommendation_id = recommend(
        group, type="fix_config", parameters={"setting": "log_retention", "retention_in_days": 7}
    )
    execution = api.run(recommendation_id, dry_run=True)
    assert execution["status"] == "completed"
    events_before = api.logs(execution["execution_id"])["events"]

    # When the function of terminate_instance is asked to run a step of it
    wrong = topology.executor_function(RecommendationType.TERMINATE_INSTANCE).local_name
    payload, errored = runtime.dispatcher.invoke(wrong, {"step": "rollback", "execution_id": execution["execution_id"]})

    # Then it refuses, naming both types, and nothing about the execution changed
    assert errored
    error = json.loads(payload)
    assert error["errorType"] == "UnsupportedType"
    assert "terminate_instance" in error["errorMessage"]
    assert "fix_config" in error["errorMessage"]
    assert api.status(execution["execution_id"])["status"] == "completed"
    assert api.logs(execution["execution_id"])["events"] == events_before


def test_each_executor_function_has_a_module_of_its_own_with_its_own_type(runtime: LocalRuntime) -> None:
    modules = {
        m.executor.local_name: runtime.function_modules[m.executor.local_name] for m in topology.state_machines()
    }

    assert len({id(module) for module in modules.values()}) == len(modules)
    for machine in topology.state_machines():
        settings = modules[machine.executor.local_name].runner.ctx.settings
        assert settings.recommendation_type == machine.recommendation_type
