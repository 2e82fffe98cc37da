"""The registry walk: every one of the ten types has all it needs, from its executor to its stack."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aws_cdk import App
from aws_cdk.assertions import Template

from cost_engine import spine, topology
from cost_engine.executors import EXECUTORS
from cost_engine.models import RecommendationType
from infra.stack import CostExecutionEngineStack

# Actions that AWS authorizes on no resource type at all, so "*" is their least privilege.
ACTIONS_WITHOUT_RESOURCE_TYPES = frozenset({"ec2:PurchaseReservedInstancesOffering"})
READ_ONLY = re.compile(r"^[a-z0-9-]+:(Describe|List|Get|Lookup)[A-Za-z]*$")
ACTION = re.compile(r"^[a-z0-9-]+:[A-Z][A-Za-z0-9]*$")


@pytest.fixture(scope="module")
def stack_and_template() -> tuple[CostExecutionEngineStack, Template]:
    stack = CostExecutionEngineStack(App(), "RegistryWalk")
    return stack, Template.from_stack(stack)


def _object_schemas(schema: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(schema, dict):
        if schema.get("type") == "object" and "properties" in schema:
            found.append(schema)
        for value in schema.values():
            found += _object_schemas(value)
    elif isinstance(schema, list):
        for value in schema:
            found += _object_schemas(value)
    return found


@pytest.mark.parametrize("recommendation_type", list(RecommendationType), ids=lambda t: t.value)
def test_each_type_has_an_executor_a_state_machine_and_a_strict_input_model(
    recommendation_type: RecommendationType,
) -> None:
    assert recommendation_type in EXECUTORS, f"{recommendation_type.value} has no registered executor"
    executor = EXECUTORS[recommendation_type]
    assert json.loads(spine.template(topology.state_machine(recommendation_type)))["States"]
    objects = _object_schemas(executor.parameters_model.model_json_schema())
    assert objects, f"{executor.parameters_model.__name__} declares no parameters object"
    # Every object of the input model refuses unknown fields, so a misspelt parameter is an error.
    assert all(obj.get("additionalProperties") is False for obj in objects), executor.parameters_model.__name__


@pytest.mark.parametrize("recommendation_type", list(RecommendationType), ids=lambda t: t.value)
def test_each_type_declares_a_least_privilege_permission_set(recommendation_type: RecommendationType) -> None:
    permissions = EXECUTORS[recommendation_type].permissions

    assert permissions, f"{recommendation_type.value} declares no permissions"
    for permission in permissions:
        for action in permission.actions:
            assert ACTION.match(action), f"{action} is not one exact action"
            if "*" in permission.resources:
                assert READ_ONLY.match(action) or action in ACTIONS_WITHOUT_RESOURCE_TYPES, (
                    f"{recommendation_type.value}: {action} acts on any resource"
                )
        for resource in permission.resources:
            assert resource == "*" or resource.startswith("arn:{partition}:"), resource


@pytest.mark.parametrize("recommendation_type", list(RecommendationType), ids=lambda t: t.value)
def test_each_type_has_its_state_machine_and_executor_in_the_synthesized_template(
    stack_and_template: tuple[CostExecutionEngineStack, Template], recommendation_type: RecommendationType
) -> None:
    stack, template = stack_and_template
    resources = template.to_json()["Resources"]
    machine = stack.state_machines[recommendation_type]
    executor = stack.functions[topology.executor_function(recommendation_type).construct_id]

    assert resources[stack.logical_id(machine)]["Type"] == "AWS::StepFunctions::StateMachine"
    assert resources[stack.logical_id(executor)]["Type"] == "AWS::Lambda::Function"
    # The function knows its type, and refuses the steps of any other (cost_engine.steps).
    environment = resources[stack.logical_id(executor)]["Properties"]["Environment"]["Variables"]
    assert environment[topology.EnvVar.RECOMMENDATION_TYPE] == recommendation_type.value
