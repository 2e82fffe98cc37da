"""Cold starts: a function loads what it uses and no more, and makes its AWS clients once, on first use.

What a function loads is checked in a new interpreter, with the environment the deployed function has
(the one `benchmarks/imports.py` times it with), tracing on as on AWS: this process has loaded everything.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from typing import Any

import botocore.session
import pytest

from benchmarks.imports import Target, run_as, targets
from cost_engine import topology
from cost_engine.context import EngineContext
from cost_engine.models import ExecutionRecord, Recommendation, RecommendationType, new_execution_id
from cost_engine.steps import Step, StepRequest, StepRunner
from tests.unit.conftest import ACCOUNT_ID, REGION, engine_settings

T = RecommendationType
EXECUTORS_PACKAGE = "cost_engine.executors"
# What a function's handler module loads besides its executor: the registry and the executors' base.
NOT_A_TYPE = frozenset({"base", "registry"})
# Counts the clients (and resources, which make one each) made through botocore, by service.
COUNT_CLIENTS = """
import botocore.session
made = []
_create_client = botocore.session.Session.create_client
def _counting(self, service_name, *args, **kwargs):
    made.append(service_name)
    return _create_client(self, service_name, *args, **kwargs)
botocore.session.Session.create_client = _counting
"""


def function_target(function: topology.Function) -> Target:
    [found] = [target for target in targets() if target.name == function.local_name]
    return found


@functools.cache
def loaded(function: topology.Function, *, tracing: bool = True) -> dict[str, Any]:
    """The modules loaded and the AWS clients made by loading `function`'s handler in a new interpreter."""
    target = function_target(function)
    code = f"import json\n{COUNT_CLIENTS}\nimport {target.module}\n"
    code += "print(json.dumps({'modules': sorted(sys.modules), 'clients': made}))\n"
    printed = run_as(target, code) if tracing else run_as(target, code, POWERTOOLS_TRACE_DISABLED="true")
    answer: dict[str, Any] = json.loads(printed.strip().splitlines()[-1])
    return answer


def executor_types_loaded(modules: list[str]) -> set[str]:
    """The types whose executor module (or a module of its package) is among `modules`."""
    prefix = f"{EXECUTORS_PACKAGE}."
    return {m.removeprefix(prefix).split(".")[0] for m in modules if m.startswith(prefix)} - NOT_A_TYPE


@pytest.mark.parametrize("own_type", [T.FIX_CONFIG, T.TERMINATE_INSTANCE], ids=str)
def test_an_executor_function_loads_the_executor_of_its_own_type_and_no_other(own_type: T) -> None:
    modules = loaded(topology.executor_function(own_type))["modules"]

    assert executor_types_loaded(modules) == {own_type.value}


@pytest.mark.parametrize("function", [topology.API_FUNCTION, topology.TRIGGER_FUNCTION], ids=lambda f: f.local_name)
def test_the_api_and_the_trigger_load_no_executor_until_a_type_is_asked_for(function: topology.Function) -> None:
    assert executor_types_loaded(loaded(function)["modules"]) == set()


@pytest.mark.parametrize(
    "function",
    [topology.API_FUNCTION, topology.TRIGGER_FUNCTION, topology.executor_function(T.FIX_CONFIG)],
    ids=lambda f: f.local_name,
)
def test_loading_a_function_makes_no_aws_client(function: topology.Function) -> None:
    assert loaded(function)["clients"] == []


def test_with_tracing_on_the_tracer_patches_botocore_only() -> None:
    modules = loaded(topology.executor_function(T.FIX_CONFIG))["modules"]

    patched = {m for m in modules if m.startswith("aws_xray_sdk.ext.") and m.endswith(".patch")}
    assert patched == {"aws_xray_sdk.ext.botocore.patch"}
    assert "requests" not in modules


def test_with_tracing_off_the_x_ray_sdk_is_not_loaded() -> None:
    modules = loaded(topology.executor_function(T.FIX_CONFIG), tracing=False)["modules"]

    assert not [m for m in modules if m.startswith("aws_xray_sdk.core")]


def test_each_types_executor_is_in_the_module_named_for_it_and_loads_alone() -> None:
    # Given a new interpreter that loaded the registry only, when each type is asked for in turn
    code = """
import json
from cost_engine.executors import executor_class
from cost_engine.models import RecommendationType
found = {}
for recommendation_type in RecommendationType:
    before = set(sys.modules)
    executor = executor_class(recommendation_type)
    found[recommendation_type.value] = {
        "type": executor.recommendation_type.value,
        "loaded": sorted(set(sys.modules) - before),
    }
print(json.dumps(found))
"""
    found = json.loads(run_as(function_target(topology.API_FUNCTION), code))

    # Then each is its own type's, and asking for it loaded its module and no other type's
    for recommendation_type in RecommendationType:
        answer = found[recommendation_type.value]
        assert answer["type"] == recommendation_type.value
        assert executor_types_loaded(answer["loaded"]) == {recommendation_type.value}


# -- clients, once per container --------------------------------------------------------------------


@pytest.fixture
def clients_made(monkeypatch: pytest.MonkeyPatch) -> Counter[tuple[str, str | None]]:
    """Every client (or resource) made through botocore from now on, by service and region."""
    made: Counter[tuple[str, str | None]] = Counter()
    create_client = botocore.session.Session.create_client

    def counting(self: botocore.session.Session, service_name: str, *args: Any, **kwargs: Any) -> Any:
        made[(service_name, kwargs.get("region_name"))] += 1
        return create_client(self, service_name, *args, **kwargs)

    monkeypatch.setattr(botocore.session.Session, "create_client", counting)
    return made


def recommendation(region: str) -> Recommendation:
    return Recommendation(
        customer_id="acme",
        type=T.RIGHTSIZE_INSTANCE,
        account_id=ACCOUNT_ID,
        region=region,
        resource_id="i-0123456789abcdef0",
        parameters={"target_instance_type": "t3.small"},
    )


def test_a_context_makes_nothing_until_it_is_used(clients_made: Counter[tuple[str, str | None]]) -> None:
    EngineContext.from_settings(engine_settings())

    assert clients_made == Counter()


def test_steps_after_the_first_make_no_client(tables: None, clients_made: Counter[tuple[str, str | None]]) -> None:
    # Given the function's runner, kept for the life of its instance, and three executions
    runner = StepRunner(EngineContext.from_settings(engine_settings()))
    records = [
        ExecutionRecord(
            execution_id=new_execution_id(),
            recommendation_id="rec-1",
            customer_id="acme",
            recommendation_type=T.RIGHTSIZE_INSTANCE,
            resource_id="i-0123456789abcdef0",
            region=REGION,
            account_id=ACCOUNT_ID,
        )
        for _ in range(3)
    ]
    for record in records:
        runner.ctx.executions.create(record)

    # When the first step runs, then the others
    first, *others = records
    runner.run(StepRequest(step=Step.RECORD_FAILURE, execution_id=first.execution_id, error={"Error": "Boom"}))
    after_first = Counter(clients_made)
    for record in others:
        runner.run(StepRequest(step=Step.RECORD_FAILURE, execution_id=record.execution_id, error={"Error": "Boom"}))

    # Then the first made what the steps use, and the others nothing more
    assert after_first
    assert clients_made == after_first


def test_executors_and_their_clients_are_made_once_per_region(
    aws: None, clients_made: Counter[tuple[str, str | None]]
) -> None:
    ctx = EngineContext.from_settings(engine_settings())

    # When executions in two regions run step after step
    executors = []
    for _ in range(3):
        for region in (REGION, "eu-west-1"):
            executor = ctx.executor_for(recommendation(region))
            executor.clients.ec2  # noqa: B018  (what a step does first: use its clients)
            executors.append(executor)

    # Then each region has one executor, and one EC2 client, made at its first step
    assert len({id(executor) for executor in executors}) == 2
    assert clients_made == Counter({("ec2", REGION): 1, ("ec2", "eu-west-1"): 1})
    assert ctx.executor_for(recommendation(REGION)).clients is ctx.clients


def test_a_settings_change_reaches_what_the_context_already_made(tables: None) -> None:
    # Given a context whose limits and executor were made
    ctx = EngineContext.from_settings(engine_settings())
    limits, executor = ctx.limits, ctx.executor_for(recommendation(REGION))

    # When the function's settings change (as a test's deployed_with changes them)
    ctx.settings.max_concurrent_acting = 3

    # Then what was made reads the new value
    assert limits.settings.max_concurrent_acting == 3
    assert executor.settings is ctx.settings
