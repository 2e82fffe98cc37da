"""The synthesized stack: what `cdk deploy` would create, checked against the topology it is built from."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Aspects
from aws_cdk.assertions import Annotations, Match, Template
from cdk_nag import AwsSolutionsChecks
from constructs import IConstruct

from cost_engine import spine, topology
from cost_engine.access import AccessPolicy, Role
from cost_engine.approval_policy import ApprovalPolicy
from cost_engine.environment import POWERTOOLS_LOG_LEVEL, POWERTOOLS_SERVICE, POWERTOOLS_TRACE_DISABLED
from cost_engine.executors import executor_class
from cost_engine.models import RecommendationType
from cost_engine.role_permissions import role_permissions
from cost_engine.settings import Settings
from cost_engine.topology import EnvVar
from infra.constructs.api import (
    APPROVAL_PAGE_BURST_LIMIT,
    APPROVAL_PAGE_METHODS,
    APPROVAL_PAGE_RATE_LIMIT,
    APPROVAL_PAGE_RESOURCE,
    DECISION_RESOURCES,
)
from infra.constructs.approvals import APPROVAL_TOPIC_KEY_ID
from infra.constructs.events import SCHEDULER_ROLE_ID
from infra.constructs.functions import POWERTOOLS_LAYER_PARAMETER, POWERTOOLS_VERSION, RUNTIME, SHARED_LAYER_ID
from infra.constructs.trigger import TRIGGER_DLQ_RETENTION, TRIGGER_MAX_EVENT_AGE
from infra.context import DeploymentContext
from infra.nag import suppress_accepted_findings
from infra.permissions import EXECUTOR_BASE_ACTIONS, SCHEDULER_ACTIONS
from infra.stack import CostExecutionEngineStack
from local_runtime.runtime import LocalRuntime

APPROVERS = ("finops@example.com", "platform@example.com")
APPROVAL_POLICY = {
    "default": {"max_auto_approve_risk": "low", "high_risk_monthly_savings_usd": 500.0},
    "customers": {"acme": {"auto_approve_types": ["delete_volume"]}},
}
ACCESS = {"principals": {"arn:aws:iam::123456789012:role/FinOpsApprover": {"customers": {"acme": ["approver"]}}}}
PLACEHOLDER = re.compile(r"\$\{(\w+)\}")


@dataclass(frozen=True)
class Synthesized:
    stack: CostExecutionEngineStack
    template: Template
    assembly_dir: Path

    def resource(self, construct_id: str, construct: IConstruct) -> dict[str, Any]:
        """The template resource of `construct`; fails with the construct ID when it is missing."""
        resources = self.template.to_json()["Resources"]
        logical_id = self.stack.logical_id(construct)
        assert logical_id in resources, f"{construct_id} is not in the template"
        return resources[logical_id]  # type: ignore[no-any-return]

    def role_statements(self, function_construct_id: str) -> list[dict[str, Any]]:
        return self.statements_of(self.stack.roles[function_construct_id])

    def statements_of(self, role: IConstruct) -> list[dict[str, Any]]:
        role_ref = {"Ref": self.stack.logical_id(role)}
        return [
            statement
            for policy in self.template.find_resources("AWS::IAM::Policy").values()
            if role_ref in policy["Properties"]["Roles"]
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        ]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def referenced(value: Any) -> Iterator[str]:
    """The logical IDs (and pseudo parameters) that a template value refers to, with Ref, GetAtt or Sub."""
    if isinstance(value, dict):
        if "Ref" in value:
            yield value["Ref"]
        if "Fn::GetAtt" in value:
            attribute = value["Fn::GetAtt"]
            yield attribute[0] if isinstance(attribute, list) else attribute.split(".")[0]
        if "Fn::Sub" in value:
            text = as_list(value["Fn::Sub"])[0]
            yield from (name.split(".")[0] for name in re.findall(r"\$\{(?!!)([^}]+)\}", text))
        for item in value.values():
            yield from referenced(item)
    elif isinstance(value, list):
        for item in value:
            yield from referenced(item)


def api_path(resources: Mapping[str, Any], method: Mapping[str, Any]) -> str:
    """The path of an API Gateway method, from its resource up to the root."""
    parts = []
    parent = method["Properties"]["ResourceId"]
    while "Ref" in parent:
        resource = resources[parent["Ref"]]["Properties"]
        parts.append(resource["PathPart"])
        parent = resource["ParentId"]
    return "/" + "/".join(reversed(parts))


def synthesize(context: dict[str, Any]) -> tuple[CostExecutionEngineStack, Mapping[str, Any]]:
    """The stack's template for a deployment context, without cdk-nag (for what the context changes)."""
    stack = CostExecutionEngineStack(App(context=context), "CostExecutionEngineContext")
    return stack, Template.from_stack(stack).to_json()


def function_environment(
    stack: CostExecutionEngineStack, template: Mapping[str, Any], function: topology.Function
) -> dict[str, Any]:
    resource = template["Resources"][stack.logical_id(stack.functions[function.construct_id])]
    return resource["Properties"]["Environment"]["Variables"]  # type: ignore[no-any-return]


EXECUTORS = [sm.executor for sm in topology.state_machines()]


@pytest.fixture(scope="module")
def synthesized() -> Synthesized:
    """Given the app as app.py builds it, with cdk-nag, and approvers, an approval policy and an access
    policy as `cdk -c` gives them."""
    app = App(
        context={
            "approver_emails": ", ".join(APPROVERS),
            "approval_policy": json.dumps(APPROVAL_POLICY),
            "access": json.dumps(ACCESS),
        }
    )
    stack = CostExecutionEngineStack(app, "CostExecutionEngineTest")
    suppress_accepted_findings(stack)
    Aspects.of(app).add(AwsSolutionsChecks())
    assembly = app.synth()
    template = Template.from_json(assembly.get_stack_by_name(stack.stack_name).template)
    return Synthesized(stack, template, Path(assembly.directory))


# -- data -------------------------------------------------------------------------------------


@pytest.mark.parametrize("table", topology.TABLES, ids=lambda t: t.construct_id)
def test_each_table_is_on_demand_encrypted_recoverable_and_kept_with_the_topology_keys(
    synthesized: Synthesized, table: topology.Table
) -> None:
    resource = synthesized.resource(table.construct_id, synthesized.stack.data.tables[table.construct_id])
    props = resource["Properties"]

    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["SSESpecification"]["SSEEnabled"] is True
    assert resource["DeletionPolicy"] == resource["UpdateReplacePolicy"] == "Retain"
    keys = [{"AttributeName": table.partition_key, "KeyType": "HASH"}]
    if table.sort_key:
        keys.append({"AttributeName": table.sort_key, "KeyType": "RANGE"})
    assert props["KeySchema"] == keys
    assert {a["AttributeType"] for a in props["AttributeDefinitions"]} == {"S"}
    indexes = {
        index["IndexName"]: (index["KeySchema"], index["Projection"])
        for index in props.get("GlobalSecondaryIndexes", [])
    }
    assert indexes == {
        index.name: (
            [
                {"AttributeName": index.partition_key, "KeyType": "HASH"},
                {"AttributeName": index.sort_key, "KeyType": "RANGE"},
            ],
            {"ProjectionType": "ALL" if index.projects_all else "KEYS_ONLY"},
        )
        for index in table.indexes
    }


# -- functions --------------------------------------------------------------------------------


def test_there_is_one_function_per_topology_function_and_one_state_machine_per_type(
    synthesized: Synthesized,
) -> None:
    template = synthesized.template

    template.resource_count_is("AWS::Lambda::Function", len(topology.functions()))
    assert set(synthesized.stack.functions) == {f.construct_id for f in topology.functions()}
    template.resource_count_is("AWS::StepFunctions::StateMachine", len(topology.state_machines()))
    assert set(synthesized.stack.state_machines) == set(topology.implemented_types())


@pytest.mark.parametrize("function", topology.functions(), ids=lambda f: f.construct_id)
def test_each_function_runs_its_handler_traced_with_the_shared_and_powertools_layers(
    synthesized: Synthesized, function: topology.Function
) -> None:
    stack = synthesized.stack
    props = synthesized.resource(function.construct_id, stack.functions[function.construct_id])["Properties"]

    assert props["Runtime"] == RUNTIME.name
    assert props["Handler"] == function.handler
    assert props["Timeout"] == function.timeout_seconds
    assert props["MemorySize"] == function.memory_mb
    assert props["TracingConfig"] == {"Mode": "Active"}
    shared_layer = stack.engine_functions.node.find_child(SHARED_LAYER_ID)
    parameters = synthesized.template.to_json()["Parameters"]
    powertools = [name for name, p in parameters.items() if p.get("Default") == POWERTOOLS_LAYER_PARAMETER]
    assert props["Layers"] == [{"Ref": stack.logical_id(shared_layer)}, {"Ref": powertools[0]}]
    log_group_id = props["LoggingConfig"]["LogGroup"]["Ref"]
    log_group = synthesized.template.to_json()["Resources"][log_group_id]
    assert log_group["Properties"]["RetentionInDays"] > 0


@pytest.mark.parametrize("function", topology.functions(), ids=lambda f: f.construct_id)
def test_each_function_is_told_the_tables_the_topic_and_the_powertools_settings(
    synthesized: Synthesized, function: topology.Function
) -> None:
    stack = synthesized.stack
    props = synthesized.resource(function.construct_id, stack.functions[function.construct_id])["Properties"]
    variables = props["Environment"]["Variables"]

    for table in topology.TABLES:
        assert variables[table.env_var] == {"Ref": stack.logical_id(stack.data.tables[table.construct_id])}
    assert variables[EnvVar.APPROVAL_TOPIC_ARN] == {"Ref": stack.logical_id(stack.approvals.topic)}
    assert variables[EnvVar.SCHEDULER_ROLE_ARN] == {
        "Fn::GetAtt": [stack.logical_id(stack.events.scheduler_role), "Arn"]
    }
    assert {**POWERTOOLS_SERVICE, POWERTOOLS_LOG_LEVEL: "INFO"}.items() <= variables.items()


@pytest.mark.parametrize("function", topology.functions(), ids=lambda f: f.construct_id)
def test_the_stack_and_the_local_runtime_tell_each_function_the_same_variables(
    synthesized: Synthesized, function: topology.Function
) -> None:
    # Given a local runtime that chooses what the synthesized deployment chose (its API keys stand for
    # the access policy's principals); both build each environment with cost_engine.environment
    runtime = LocalRuntime(approval_policy=APPROVAL_POLICY, approver_emails=APPROVERS)

    deployed = set(function_environment(synthesized.stack, synthesized.template.to_json(), function))
    local = set(runtime.function_environments()[function.local_name])

    # Then the names are the same, but for what one side has no use for: locally every function shares
    # one role, so an executor's pre-checks ask about the caller's; and locally waits take no time and
    # nothing is traced.
    assert deployed - local == ({EnvVar.OWN_ROLE_ARN} if function.recommendation_type else set())
    local_only = {POWERTOOLS_TRACE_DISABLED}
    assert local - deployed == local_only | ({EnvVar.MAX_POLL_ATTEMPTS} if function.recommendation_type else set())


@pytest.mark.parametrize("function", [topology.API_FUNCTION, topology.TRIGGER_FUNCTION], ids=lambda f: f.construct_id)
def test_each_function_that_starts_executions_knows_every_state_machine_and_the_polling_settings(
    synthesized: Synthesized, function: topology.Function
) -> None:
    stack = synthesized.stack
    props = synthesized.resource(function.construct_id, stack.functions[function.construct_id])["Properties"]
    variables = props["Environment"]["Variables"]

    # Given the JSON the function will read, with each state machine reference standing for its ARN.
    parts = variables[EnvVar.STATE_MACHINE_ARNS]["Fn::Join"][1]
    arns = json.loads("".join(part if isinstance(part, str) else part["Ref"] for part in parts))
    assert arns == {
        sm.recommendation_type.value: stack.logical_id(stack.state_machines[sm.recommendation_type])
        for sm in topology.state_machines()
    }
    assert variables[EnvVar.APPROVAL_TIMEOUT_SECONDS] == "86400"
    # Each type polls within its own budget (its executor's `polling`): no deployment-wide one.
    assert EnvVar.MAX_POLL_ATTEMPTS not in variables


# -- permissions ------------------------------------------------------------------------------


@pytest.mark.parametrize("machine", topology.state_machines(), ids=lambda sm: sm.executor.construct_id)
def test_each_executor_role_may_simulate_its_own_policy_and_no_other_principal(
    synthesized: Synthesized, machine: topology.StateMachine
) -> None:
    role_id = synthesized.stack.logical_id(synthesized.stack.roles[machine.executor.construct_id])
    simulations = [
        s
        for s in synthesized.role_statements(machine.executor.construct_id)
        if "iam:SimulatePrincipalPolicy" in as_list(s["Action"])
    ]

    assert [s["Resource"] for s in simulations] == [{"Fn::GetAtt": [role_id, "Arn"]}]
    # and is told that role's ARN as the stack made it (with its path), to ask the simulator about
    variables = function_environment(synthesized.stack, synthesized.template.to_json(), machine.executor)
    assert variables[EnvVar.OWN_ROLE_ARN] == {"Fn::GetAtt": [role_id, "Arn"]}


@pytest.mark.parametrize("machine", topology.state_machines(), ids=lambda sm: sm.executor.construct_id)
def test_only_the_types_that_stop_or_replace_instances_may_read_load_balancers(
    synthesized: Synthesized, machine: topology.StateMachine
) -> None:
    actions = {a for s in synthesized.role_statements(machine.executor.construct_id) for a in as_list(s["Action"])}
    reads_load_balancers = "elasticloadbalancing:DescribeTargetHealth" in actions

    assert reads_load_balancers == (
        machine.recommendation_type
        in {
            RecommendationType.TERMINATE_INSTANCE,
            RecommendationType.MIGRATE_TO_SPOT,
            RecommendationType.RIGHTSIZE_INSTANCE,
            RecommendationType.SCHEDULE_INSTANCE,
        }
    )


@pytest.mark.parametrize("machine", topology.state_machines(), ids=lambda sm: sm.executor.construct_id)
def test_each_executor_role_holds_exactly_the_actions_its_executor_declares_besides_the_common_ones(
    synthesized: Synthesized, machine: topology.StateMachine
) -> None:
    executor = executor_class(machine.recommendation_type)
    declared = {a for p in role_permissions(executor) for a in p.actions}
    actions = {a for s in synthesized.role_statements(machine.executor.construct_id) for a in as_list(s["Action"])}

    assert actions == EXECUTOR_BASE_ACTIONS | declared | {"iam:SimulatePrincipalPolicy"}
    assert not [action for action in actions if "*" in action]


@pytest.mark.parametrize("machine", topology.state_machines(), ids=lambda sm: sm.executor.construct_id)
def test_only_the_types_that_watch_their_change_may_read_alarms_and_metrics(
    synthesized: Synthesized, machine: topology.StateMachine
) -> None:
    actions = {a for s in synthesized.role_statements(machine.executor.construct_id) for a in as_list(s["Action"])}
    watch_reads = {"cloudwatch:DescribeAlarms", "cloudwatch:GetMetricStatistics"}

    if executor_class(machine.recommendation_type).watches:
        assert watch_reads <= actions
    else:
        assert not watch_reads & actions


@pytest.mark.parametrize("machine", topology.state_machines(), ids=lambda sm: sm.executor.construct_id)
def test_each_executor_keeps_the_conditions_of_its_declared_permissions(
    synthesized: Synthesized, machine: topology.StateMachine
) -> None:
    statements = synthesized.role_statements(machine.executor.construct_id)

    for permission in executor_class(machine.recommendation_type).permissions:
        for action in permission.actions:
            granting = [s for s in statements if action in as_list(s["Action"])]
            assert granting, f"{action} is not granted"
            assert all(s.get("Condition") == permission.conditions for s in granting), action


def test_no_role_uses_an_aws_managed_policy(synthesized: Synthesized) -> None:
    roles = synthesized.template.find_resources("AWS::IAM::Role")

    assert roles
    assert {name: role["Properties"].get("ManagedPolicyArns") for name, role in roles.items()} == dict.fromkeys(roles)


def test_the_api_role_drives_only_this_stacks_state_machines(synthesized: Synthesized) -> None:
    stack = synthesized.stack
    machine_refs = [{"Ref": stack.logical_id(sm)} for sm in stack.state_machines.values()]
    statements = synthesized.role_statements(topology.API_FUNCTION.construct_id)

    states_actions = {a for s in statements for a in as_list(s["Action"]) if a.startswith("states:")}
    assert states_actions == {
        "states:StartExecution",
        "states:SendTaskSuccess",
        "states:SendTaskFailure",
        "states:StopExecution",
        "states:DescribeExecution",
        "states:GetExecutionHistory",
    }
    for statement in statements:
        if "states:StartExecution" in as_list(statement["Action"]):
            assert as_list(statement["Resource"]) == machine_refs


# -- state machines ---------------------------------------------------------------------------


@pytest.mark.parametrize("machine", topology.state_machines(), ids=lambda sm: sm.construct_id)
def test_each_state_machine_logs_every_event_without_execution_data_and_is_traced(
    synthesized: Synthesized, machine: topology.StateMachine
) -> None:
    state_machine = synthesized.stack.state_machines[machine.recommendation_type]
    props = synthesized.resource(machine.construct_id, state_machine)["Properties"]

    assert props["LoggingConfiguration"]["Level"] == "ALL"
    # Execution data carries the approval task tokens.
    assert props["LoggingConfiguration"]["IncludeExecutionData"] is False
    assert props["LoggingConfiguration"]["Destinations"]
    assert props["TracingConfiguration"] == {"Enabled": True}


@pytest.mark.parametrize("machine", topology.state_machines(), ids=lambda sm: sm.construct_id)
def test_each_state_machine_invokes_its_own_executor_and_nothing_else(
    synthesized: Synthesized, machine: topology.StateMachine
) -> None:
    stack = synthesized.stack
    state_machine = stack.state_machines[machine.recommendation_type]
    props = synthesized.resource(machine.construct_id, state_machine)["Properties"]
    executor = stack.functions[machine.executor.construct_id]
    executor_arn = {"Fn::GetAtt": [stack.logical_id(executor), "Arn"]}

    assert props["DefinitionSubstitutions"] == stack.resolve(machine.substitutions(executor.function_arn))
    role_ref = {"Ref": stack.logical_id(state_machine.role)}
    invokes = [
        statement
        for policy in synthesized.template.find_resources("AWS::IAM::Policy").values()
        if role_ref in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if any(action.startswith("lambda:") for action in as_list(statement["Action"]))
    ]
    assert invokes == [{"Action": "lambda:InvokeFunction", "Effect": "Allow", "Resource": executor_arn}]


@pytest.mark.parametrize("machine", topology.state_machines(), ids=lambda sm: sm.construct_id)
def test_each_deployed_definition_is_the_one_the_spine_makes_for_its_type_with_every_placeholder_filled(
    synthesized: Synthesized, machine: topology.StateMachine
) -> None:
    state_machine = synthesized.stack.state_machines[machine.recommendation_type]
    props = synthesized.resource(machine.construct_id, state_machine)["Properties"]

    # The local runtime runs spine.definition(...): the same text, filled the same way.
    assert props["DefinitionString"] == spine.template(machine)
    definition = props["DefinitionString"]
    for name in props["DefinitionSubstitutions"]:
        definition = definition.replace(f"${{{name}}}", "arn:aws:lambda:us-east-1:123456789012:function:f")
    assert PLACEHOLDER.findall(definition) == []
    assert definition == spine.definition(machine, "arn:aws:lambda:us-east-1:123456789012:function:f")
    assert json.loads(definition)["TimeoutSeconds"] == topology.STATE_MACHINE_TIMEOUT_SECONDS
    assert json.loads(definition)["Comment"].startswith(f"{machine.recommendation_type.value}: ")


def test_the_template_with_every_definition_inline_stays_under_cloudformations_size_limit(
    synthesized: Synthesized,
) -> None:
    # The definitions are in the template (not assets): CloudFormation takes a template of at most
    # 1 MB from S3, where cdk deploy puts it.
    assert len(json.dumps(synthesized.template.to_json())) < 1_000_000


# -- API and approvals ------------------------------------------------------------------------


def test_only_the_approval_pages_are_public_and_approve_and_reject_require_iam_on_resources_of_their_own(
    synthesized: Synthesized,
) -> None:
    resources = synthesized.template.to_json()["Resources"]
    methods = synthesized.template.find_resources("AWS::ApiGateway::Method")

    authorization = {
        (api_path(resources, m), m["Properties"]["HttpMethod"]): m["Properties"]["AuthorizationType"]
        for m in methods.values()
    }
    assert authorization == {
        ("/", "ANY"): "AWS_IAM",
        ("/{proxy+}", "ANY"): "AWS_IAM",
        # Their own resources: an IAM policy grants execute-api:Invoke on them apart from the rest.
        ("/executions/{execution_id}/approve", "POST"): "AWS_IAM",
        ("/executions/{execution_id}/reject", "POST"): "AWS_IAM",
        **{(APPROVAL_PAGE_RESOURCE, method): "NONE" for method in APPROVAL_PAGE_METHODS},
    }


def test_approve_and_reject_are_served_by_the_api_function(synthesized: Synthesized) -> None:
    stack = synthesized.stack
    api_function = stack.logical_id(stack.functions[topology.API_FUNCTION.construct_id])

    assert len(stack.api.decision_methods) == len(DECISION_RESOURCES) == 2
    for method in stack.api.decision_methods:
        integration = synthesized.resource(method.node.path, method)["Properties"]["Integration"]
        assert integration["Type"] == "AWS_PROXY"
        assert api_function in set(referenced(integration["Uri"]))


def invoked_routes(synthesized: Synthesized, policy: IConstruct) -> set[str]:
    """The "METHOD/path" each execute-api:Invoke statement of a managed policy names, on this API's stage."""
    document = synthesized.resource(policy.node.path, policy)["Properties"]["PolicyDocument"]
    api = synthesized.stack.logical_id(synthesized.stack.api.rest_api)
    routes = set()
    for statement in document["Statement"]:
        assert (statement["Effect"], statement["Action"]) == ("Allow", "execute-api:Invoke")
        for resource in as_list(statement["Resource"]):
            parts = resource["Fn::Join"][1]
            assert api in set(referenced(parts))
            routes.add(parts[-1].removeprefix(f"/{topology.API_STAGE_NAME}/"))
    return routes


def test_each_role_has_a_managed_policy_that_invokes_exactly_its_routes_and_only_approvers_decide(
    synthesized: Synthesized,
) -> None:
    reads = {"GET/recommendations/*", "GET/executions", "GET/executions/*", "GET/executions/*/logs"}
    policies = synthesized.stack.api.role_policies

    assert invoked_routes(synthesized, policies[Role.VIEWER]) == reads
    assert invoked_routes(synthesized, policies[Role.OPERATOR]) == reads | {
        "POST/recommendations",
        "POST/recommendations/import",
        "POST/executions/execute",
        "POST/executions/*/cancel",
        "POST/executions/*/rollback",
        "POST/executions/*/measure",
    }
    assert invoked_routes(synthesized, policies[Role.APPROVER]) == reads | {
        "POST/executions/*/approve",
        "POST/executions/*/reject",
    }


def test_the_api_function_is_told_the_access_policy_and_the_approval_policy_of_the_context() -> None:
    stack, template = synthesize({"access": json.dumps(ACCESS), "approval_policy": APPROVAL_POLICY})
    bare_stack, bare_template = synthesize({})

    variables = function_environment(stack, template, topology.API_FUNCTION)
    assert AccessPolicy.model_validate_json(variables[EnvVar.ACCESS_POLICY]) == AccessPolicy.model_validate(ACCESS)
    # Four eyes: the API reads the customers' allow_self_approval from the approval policy.
    assert json.loads(variables[EnvVar.APPROVAL_POLICY]) == APPROVAL_POLICY
    # Unset: nobody is granted anything (the functions' default), and nothing else is told.
    assert EnvVar.ACCESS_POLICY not in function_environment(bare_stack, bare_template, topology.API_FUNCTION)
    for function in (topology.TRIGGER_FUNCTION, *EXECUTORS):
        assert EnvVar.ACCESS_POLICY not in function_environment(stack, template, function)


def test_the_approval_pages_are_served_by_the_api_function(synthesized: Synthesized) -> None:
    stack = synthesized.stack
    api_function = stack.logical_id(stack.functions[topology.API_FUNCTION.construct_id])

    for method in stack.api.approval_page_methods:
        integration = synthesized.resource(method.node.path, method)["Properties"]["Integration"]
        assert integration["Type"] == "AWS_PROXY"
        assert api_function in set(referenced(integration["Uri"]))


def test_the_approval_pages_have_their_own_throttling_below_the_stages(synthesized: Synthesized) -> None:
    stage = next(iter(synthesized.template.find_resources("AWS::ApiGateway::Stage").values()))["Properties"]
    settings = {(s["ResourcePath"], s["HttpMethod"]): s for s in stage["MethodSettings"]}

    assert stage["StageName"] == topology.API_STAGE_NAME
    whole_stage = settings[("/*", "*")]
    for method in APPROVAL_PAGE_METHODS:
        # API Gateway spells each "/" of the resource path in a method setting as "~1", after a "/".
        page = settings[("/" + APPROVAL_PAGE_RESOURCE.replace("/", "~1"), method)]
        assert page["ThrottlingRateLimit"] == APPROVAL_PAGE_RATE_LIMIT
        assert page["ThrottlingBurstLimit"] == APPROVAL_PAGE_BURST_LIMIT
        assert page["ThrottlingRateLimit"] < whole_stage["ThrottlingRateLimit"]
        assert page["ThrottlingBurstLimit"] < whole_stage["ThrottlingBurstLimit"]


def test_the_approval_link_key_is_a_generated_secret(synthesized: Synthesized) -> None:
    stack = synthesized.stack
    secret = synthesized.resource(topology.APPROVAL_SECRET_CONSTRUCT_ID, stack.approvals.link_secret)["Properties"]

    # Long enough for the functions, which refuse a key shorter than 32 characters.
    assert secret["GenerateSecretString"] == {"PasswordLength": 64, "ExcludePunctuation": True}
    synthesized.template.resource_count_is("AWS::SecretsManager::Secret", 1)


@pytest.mark.parametrize("function", topology.functions(), ids=lambda f: f.construct_id)
def test_each_function_is_told_the_approval_link_key_and_may_only_read_that_one_secret(
    synthesized: Synthesized, function: topology.Function
) -> None:
    stack = synthesized.stack
    secret_ref = {"Ref": stack.logical_id(stack.approvals.link_secret)}
    variables = synthesized.resource(function.construct_id, stack.functions[function.construct_id])["Properties"][
        "Environment"
    ]["Variables"]

    assert variables[EnvVar.APPROVAL_SECRET_ARN] == secret_ref
    secret_statements = [
        statement
        for statement in synthesized.role_statements(function.construct_id)
        if any(action.startswith("secretsmanager:") for action in as_list(statement["Action"]))
        or secret_ref in as_list(statement["Resource"])
    ]
    assert secret_statements == [{"Action": "secretsmanager:GetSecretValue", "Effect": "Allow", "Resource": secret_ref}]


def test_no_other_principal_may_use_secrets_manager(synthesized: Synthesized) -> None:
    stack = synthesized.stack
    readers = {stack.logical_id(stack.roles[f.construct_id]) for f in topology.functions()}

    for policy in synthesized.template.find_resources("AWS::IAM::Policy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if any(action.startswith("secretsmanager:") for action in as_list(statement["Action"])):
                assert {role["Ref"] for role in policy["Properties"]["Roles"]} <= readers


@pytest.mark.parametrize("executor", EXECUTORS, ids=lambda f: f.construct_id)
def test_each_executor_builds_approval_links_from_the_api_id_not_from_its_stage(
    synthesized: Synthesized, executor: topology.Function
) -> None:
    stack = synthesized.stack
    variables = function_environment(stack, synthesized.template.to_json(), executor)
    base_url = variables[EnvVar.API_BASE_URL]

    assert set(referenced(base_url)) == {stack.logical_id(stack.api.rest_api), "AWS::Region", "AWS::URLSuffix"}
    parts = base_url["Fn::Join"][1]
    assert parts[0] == "https://"
    assert parts[-1] == f"/{topology.API_STAGE_NAME}"


def test_the_template_has_no_dependency_cycle(synthesized: Synthesized) -> None:
    """CloudFormation refuses a template whose resources depend on each other in a circle."""
    # Template.from_json walks Ref, GetAtt, Sub and DependsOn, and raises naming the resources of a cycle.
    Template.from_json(synthesized.template.to_json(), skip_cyclical_dependencies_check=False)


@pytest.mark.parametrize("executor", EXECUTORS, ids=lambda f: f.construct_id)
def test_each_executor_is_told_the_approvers_and_the_approval_policy_of_the_context(
    synthesized: Synthesized, executor: topology.Function
) -> None:
    variables = function_environment(synthesized.stack, synthesized.template.to_json(), executor)

    assert variables[EnvVar.APPROVER_EMAILS] == ",".join(APPROVERS)
    assert ApprovalPolicy.model_validate_json(variables[EnvVar.APPROVAL_POLICY]) == ApprovalPolicy.model_validate(
        APPROVAL_POLICY
    )


def test_executions_can_be_found_by_the_approval_id_of_their_link(synthesized: Synthesized) -> None:
    stack = synthesized.stack
    table = synthesized.resource("ExecutionsTable", stack.data.tables[topology.EXECUTIONS_TABLE.construct_id])
    indexes = {i["IndexName"]: i["KeySchema"] for i in table["Properties"]["GlobalSecondaryIndexes"]}

    assert indexes[topology.IndexName.APPROVAL] == [
        {"AttributeName": "approval_id", "KeyType": "HASH"},
        {"AttributeName": "created_at", "KeyType": "RANGE"},
    ]
    # The API function, which serves the approval pages, may query it.
    queries = [
        json.dumps(statement["Resource"])
        for statement in synthesized.role_statements(topology.API_FUNCTION.construct_id)
        if "dynamodb:Query" in as_list(statement["Action"])
    ]
    assert any(f"/index/{topology.IndexName.APPROVAL}" in resources for resources in queries)


def test_the_unfinished_executions_index_is_sparse_and_holds_their_keys_only(synthesized: Synthesized) -> None:
    stack = synthesized.stack
    table = synthesized.resource("ExecutionsTable", stack.data.tables[topology.EXECUTIONS_TABLE.construct_id])
    indexes = {i["IndexName"]: i for i in table["Properties"]["GlobalSecondaryIndexes"]}

    unfinished = indexes[topology.IndexName.UNFINISHED]
    assert unfinished["KeySchema"] == [
        {"AttributeName": "unfinished", "KeyType": "HASH"},
        {"AttributeName": "created_at", "KeyType": "RANGE"},
    ]
    assert unfinished["Projection"] == {"ProjectionType": "KEYS_ONLY"}


def test_a_deployment_context_in_cdk_json_form_sets_approvers_policy_timeout_and_link_address() -> None:
    # Given the context as cdk.json holds it: a list, an object, a number, and a custom domain.
    stack, template = synthesize(
        {
            "approver_emails": list(APPROVERS),
            "approval_policy": APPROVAL_POLICY,
            "approval_timeout_seconds": 3600,
            "api_base_url": "https://approvals.example.com/",
        }
    )

    for executor in EXECUTORS:
        variables = function_environment(stack, template, executor)
        assert variables[EnvVar.API_BASE_URL] == "https://approvals.example.com"
        assert variables[EnvVar.APPROVER_EMAILS] == ",".join(APPROVERS)
        assert json.loads(variables[EnvVar.APPROVAL_POLICY]) == APPROVAL_POLICY
    # The API (which starts the wait) and the executors (which date the link) agree on the deadline.
    for function in topology.functions():
        assert function_environment(stack, template, function)[EnvVar.APPROVAL_TIMEOUT_SECONDS] == "3600"
    subscriptions = [r for r in template["Resources"].values() if r["Type"] == "AWS::SNS::Subscription"]
    assert sorted(s["Properties"]["Endpoint"] for s in subscriptions) == list(APPROVERS)


def test_every_function_gets_the_seeds_limits_by_default_and_the_deployments_when_set() -> None:
    defaults = {
        EnvVar.MAX_CONCURRENT_ACTING: "10",
        EnvVar.RESOURCE_COOLDOWN_SECONDS: "300",
        EnvVar.MAX_ACTING_SECONDS: "1800",
    }
    chosen = {"max_concurrent_acting": 4, "resource_cooldown_seconds": 60, "max_acting_seconds": 900}
    for context, expected in (
        ({}, defaults),
        (chosen, {k: str(v) for k, v in zip(defaults, chosen.values(), strict=True)}),
    ):
        stack, template = synthesize(context)
        for function in topology.functions():
            variables = function_environment(stack, template, function)
            assert {name: variables[name] for name in expected} == expected, function.construct_id
            assert variables[topology.LIMITS_TABLE.env_var]


def test_every_function_gets_the_business_rules_and_recommendation_age_of_the_context() -> None:
    rules = {"customers": {"bank": {"deny_types": ["terminate_instance"], "deny_tags": {"env": ["prod"]}}}}
    stack, template = synthesize({"business_rules": json.dumps(rules), "max_recommendation_age_days": 7})
    bare_stack, bare_template = synthesize({})

    for function in topology.functions():
        variables = function_environment(stack, template, function)
        assert json.loads(variables[EnvVar.BUSINESS_RULES]) == rules, function.construct_id
        assert variables[EnvVar.MAX_RECOMMENDATION_AGE_DAYS] == "7"
        bare = function_environment(bare_stack, bare_template, function)
        assert EnvVar.BUSINESS_RULES not in bare
        assert bare[EnvVar.MAX_RECOMMENDATION_AGE_DAYS] == "30"


def test_every_function_gets_the_ri_purchase_limits_of_the_context_or_their_defaults() -> None:
    names = (EnvVar.RI_PURCHASE_LIMIT_USD, EnvVar.RI_PURCHASE_LIMIT_PER_PERIOD_USD, EnvVar.RI_PURCHASE_LIMIT_PERIOD)
    chosen = {
        "ri_purchase_limit_usd": 5000,
        "ri_purchase_limit_per_period_usd": "12000.5",
        "ri_purchase_limit_period": "quarter",
    }
    for context, expected in (({}, ("10000.0", "20000.0", "month")), (chosen, ("5000.0", "12000.5", "quarter"))):
        stack, template = synthesize(context)
        for function in topology.functions():
            variables = function_environment(stack, template, function)
            assert tuple(variables[name] for name in names) == expected, function.construct_id


def test_business_rules_that_the_functions_would_refuse_fail_the_synth() -> None:
    with pytest.raises(ValueError, match=re.escape("business_rules.customers.bank.deny_types.0")):
        synthesize({"business_rules": {"customers": {"bank": {"deny_types": ["shred_everything"]}}}})


def test_without_a_deployment_context_executors_use_the_default_policy_and_mail_nobody() -> None:
    stack, template = synthesize({})

    for executor in EXECUTORS:
        variables = function_environment(stack, template, executor)
        assert EnvVar.APPROVAL_POLICY not in variables
        assert EnvVar.APPROVER_EMAILS not in variables
    assert [r for r in template["Resources"].values() if r["Type"] == "AWS::SNS::Subscription"] == []


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"approver_emails": "finops@example.com,finops.example.com"}, "approver_emails.1: .*'finops.example.com'"),
        ({"approver_emails": "fin ops@example.com"}, "approver_emails.0: .*not an email address"),
        ({"approval_policy": "{default: low}"}, "approval_policy: .*not JSON"),
        ({"approval_policy": '{"defaults": {}}'}, "approval_policy.defaults: Extra inputs are not permitted"),
        (
            {"approval_policy": {"default": {"max_auto_approve_risk": "high"}}},
            "approval_policy.default.max_auto_approve_risk: .*high-risk changes always wait for a person",
        ),
        ({"approval_timeout_seconds": "90000"}, "approval_timeout_seconds: .*less than or equal to 86400"),
        ({"api_base_url": "http://approvals.example.com"}, "api_base_url: .*not an https:// URL"),
        ({"max_concurrent_acting": 0}, "max_concurrent_acting: .*greater than or equal to 1"),
        ({"max_acting_seconds": "forever"}, "max_acting_seconds: .*valid integer"),
        (
            {"access": {"principals": {"alice": {"customers": {"acme": ["viewer"]}}}}},
            "access.principals.alice.*neither an IAM role or user ARN",
        ),
        (
            {"access": '{"principals": {"arn:aws:iam::123456789012:role/Ops": {"customers": {"acme": ["root"]}}}}'},
            "access.principals.*customers.acme.0: Input should be 'viewer', 'operator' or 'approver'",
        ),
        ({"ri_purchase_limit_per_period_usd": 0}, "ri_purchase_limit_per_period_usd: .*greater than 0"),
        ({"ri_purchase_limit_period": "fortnight"}, "ri_purchase_limit_period: .*'day', 'week', 'month'"),
        ({"ri_purchase_limit_usd": -5}, "ri_purchase_limit_usd: .*greater than 0"),
        ({"ri_purchase_limit_usd": "Infinity"}, "ri_purchase_limit_usd: .*finite number"),
        ({"resource_cooldown_seconds": 86401}, "resource_cooldown_seconds: .*less than or equal to 86400"),
        ({"max_recommendation_age_days": 0}, "max_recommendation_age_days: .*greater than or equal to 1"),
    ],
    ids=[
        "email-without-at",
        "email-with-space",
        "policy-not-json",
        "policy-unknown-field",
        "policy-high-risk",
        "timeout-beyond-the-state-machines",
        "base-url-not-https",
        "no-acting-slot",
        "acting-time-not-a-number",
        "access-to-no-principal",
        "access-to-an-unknown-role",
        "no-money-per-period",
        "unknown-period",
        "negative-money-per-purchase",
        "unbounded-money-per-purchase",
        "cooldown-beyond-a-day",
        "no-recommendation-age",
    ],
)
def test_a_wrong_deployment_context_fails_the_synth_naming_the_context_key(
    context: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=f"^invalid CDK context .*{message}"):
        synthesize(context)


def test_the_api_stage_is_traced_and_writes_access_and_execution_logs_without_bodies(
    synthesized: Synthesized,
) -> None:
    stages = synthesized.template.find_resources("AWS::ApiGateway::Stage")

    assert len(stages) == 1
    props = next(iter(stages.values()))["Properties"]
    assert props["TracingEnabled"] is True
    assert props["AccessLogSetting"]["DestinationArn"]
    assert props["MethodSettings"]
    assert all(s["LoggingLevel"] == "INFO" and s["DataTraceEnabled"] is False for s in props["MethodSettings"])
    synthesized.template.resource_count_is("AWS::ApiGateway::Account", 1)


def test_the_approval_topic_is_encrypted_with_a_rotating_key_requires_tls_and_mails_the_approvers(
    synthesized: Synthesized,
) -> None:
    stack = synthesized.stack
    topic = synthesized.resource(topology.APPROVAL_TOPIC_CONSTRUCT_ID, stack.approvals.topic)
    key = synthesized.resource(APPROVAL_TOPIC_KEY_ID, stack.approvals.topic_key)

    assert topic["Properties"]["KmsMasterKeyId"] == {"Fn::GetAtt": [stack.logical_id(stack.approvals.topic_key), "Arn"]}
    assert key["Properties"]["EnableKeyRotation"] is True
    synthesized.template.has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [Match.object_like({"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})]
                )
            }
        },
    )
    subscriptions = synthesized.template.find_resources("AWS::SNS::Subscription").values()
    assert sorted(s["Properties"]["Endpoint"] for s in subscriptions if s["Properties"]["Protocol"] == "email") == list(
        APPROVERS
    )


# -- trigger ----------------------------------------------------------------------------------


def arn_of(synthesized: Synthesized, construct: IConstruct) -> dict[str, Any]:
    return {"Fn::GetAtt": [synthesized.stack.logical_id(construct), "Arn"]}


def trigger_rules(stack: Any) -> tuple[IConstruct, ...]:
    """The trigger's rules, in the order the stack makes them."""
    return (stack.trigger.rule, stack.trigger.run_ended_rule, stack.trigger.completed_rule, stack.trigger.sweep_rule)


def assert_targets_the_trigger(synthesized: Synthesized, props: dict[str, Any]) -> None:
    """A rule's one target: the trigger, with EventBridge's retries, then the trigger's dead-letter queue."""
    stack = synthesized.stack
    [target] = props["Targets"]
    assert target["Arn"] == arn_of(synthesized, stack.functions[topology.TRIGGER_FUNCTION.construct_id])
    assert target["DeadLetterConfig"] == {"Arn": arn_of(synthesized, stack.trigger.dead_letter_queue)}
    assert target["RetryPolicy"] == {
        "MaximumRetryAttempts": topology.TRIGGER_MAX_RETRY_ATTEMPTS,
        "MaximumEventAgeInSeconds": TRIGGER_MAX_EVENT_AGE.to_seconds(),
    }


def test_the_rule_on_the_engines_bus_sends_completed_executions_not_dry_runs_to_the_trigger(
    synthesized: Synthesized,
) -> None:
    stack = synthesized.stack
    props = synthesized.resource(topology.COMPLETED_RULE_CONSTRUCT_ID, stack.trigger.completed_rule)["Properties"]

    assert props["EventBusName"] == {"Ref": stack.logical_id(stack.events.bus)}
    assert props["EventPattern"] == topology.completed_event_pattern()
    assert props["EventPattern"] == {
        "source": [topology.EVENT_SOURCE],
        "detail-type": [topology.STATUS_CHANGED_DETAIL_TYPE],
        "detail": {"new_status": ["completed"], "dry_run": [False]},
    }
    assert_targets_the_trigger(synthesized, props)


def test_the_rule_on_the_engines_bus_sends_exactly_recommendation_approved_events_to_the_trigger(
    synthesized: Synthesized,
) -> None:
    stack = synthesized.stack
    rules = synthesized.template.find_resources("AWS::Events::Rule")

    assert set(rules) == {
        stack.logical_id(stack.trigger.rule),
        stack.logical_id(stack.trigger.run_ended_rule),
        stack.logical_id(stack.trigger.sweep_rule),
        stack.logical_id(stack.trigger.completed_rule),
    }
    props = synthesized.resource(topology.TRIGGER_RULE_CONSTRUCT_ID, stack.trigger.rule)["Properties"]
    assert props["EventBusName"] == {"Ref": stack.logical_id(stack.events.bus)}
    assert props["State"] == "ENABLED"
    assert props["EventPattern"] == topology.trigger_event_pattern()
    assert props["EventPattern"] == {"detail-type": [topology.RECOMMENDATION_APPROVED_DETAIL_TYPE]}
    # The engine's own Execution Status Changed events, on the same bus, never start anything.
    assert topology.STATUS_CHANGED_DETAIL_TYPE not in props["EventPattern"]["detail-type"]
    assert_targets_the_trigger(synthesized, props)


def test_the_rule_on_the_default_bus_sends_the_ends_of_the_engines_runs_that_its_steps_did_not_write(
    synthesized: Synthesized,
) -> None:
    stack = synthesized.stack
    props = synthesized.resource(topology.RUN_ENDED_RULE_CONSTRUCT_ID, stack.trigger.run_ended_rule)["Properties"]

    # Step Functions puts its events on the account's default bus.
    assert "EventBusName" not in props
    assert props["State"] == "ENABLED"
    machines = [{"Ref": stack.logical_id(sm)} for sm in stack.state_machines.values()]
    # The topology's pattern, filled with this stack's state machines.
    pattern = props["EventPattern"]
    assert {**pattern, "detail": {**pattern["detail"], "stateMachineArn": []}} == topology.run_ended_event_pattern([])
    assert pattern == {
        "source": ["aws.states"],
        "detail-type": ["Step Functions Execution Status Change"],
        # Not SUCCEEDED, nor RUNNING: those the engine's own steps write. Only the engine's machines.
        "detail": {"status": ["ABORTED", "TIMED_OUT", "FAILED"], "stateMachineArn": machines},
    }
    assert len(machines) == len(topology.state_machines())
    assert_targets_the_trigger(synthesized, props)


def test_the_sweep_schedule_invokes_the_trigger_every_five_minutes_with_its_retries_and_dlq(
    synthesized: Synthesized,
) -> None:
    stack = synthesized.stack
    props = synthesized.resource(topology.SWEEP_RULE_CONSTRUCT_ID, stack.trigger.sweep_rule)["Properties"]

    assert props["ScheduleExpression"] == f"rate({topology.SWEEP_INTERVAL_MINUTES} minutes)" == "rate(5 minutes)"
    assert props["State"] == "ENABLED"
    # A schedule rule lives on the default bus and matches no events.
    assert "EventBusName" not in props
    assert "EventPattern" not in props
    assert_targets_the_trigger(synthesized, props)


def test_only_the_engines_four_rules_may_invoke_the_trigger(synthesized: Synthesized) -> None:
    stack = synthesized.stack
    trigger = arn_of(synthesized, stack.functions[topology.TRIGGER_FUNCTION.construct_id])
    permissions = synthesized.template.find_resources("AWS::Lambda::Permission").values()

    invoking_the_trigger = [p["Properties"] for p in permissions if p["Properties"]["FunctionName"] == trigger]
    assert sorted(invoking_the_trigger, key=json.dumps) == sorted(
        (
            {
                "Action": "lambda:InvokeFunction",
                "FunctionName": trigger,
                "Principal": "events.amazonaws.com",
                "SourceArn": arn_of(synthesized, rule),
            }
            for rule in trigger_rules(stack)
        ),
        key=json.dumps,
    )


def test_failed_asynchronous_invocations_of_the_trigger_go_to_the_same_dlq_after_its_retries(
    synthesized: Synthesized,
) -> None:
    stack = synthesized.stack
    trigger = stack.functions[topology.TRIGGER_FUNCTION.construct_id]
    dead_letter_queue = arn_of(synthesized, stack.trigger.dead_letter_queue)
    configs = synthesized.template.find_resources("AWS::Lambda::EventInvokeConfig").values()

    assert [c["Properties"] for c in configs] == [
        {
            "FunctionName": {"Ref": stack.logical_id(trigger)},
            "Qualifier": "$LATEST",
            "MaximumRetryAttempts": topology.TRIGGER_MAX_RETRY_ATTEMPTS,
            "MaximumEventAgeInSeconds": TRIGGER_MAX_EVENT_AGE.to_seconds(),
            "DestinationConfig": {"OnFailure": {"Destination": dead_letter_queue}},
        }
    ]
    # Lambda sends the failed event with the trigger's role.
    sending = [
        s
        for s in synthesized.role_statements(topology.TRIGGER_FUNCTION.construct_id)
        if "sqs:SendMessage" in as_list(s["Action"])
    ]
    assert [s["Resource"] for s in sending] == [dead_letter_queue]


def test_the_trigger_role_may_start_runs_hand_over_approvals_and_describe_runs_of_the_engines_machines_only(
    synthesized: Synthesized,
) -> None:
    stack = synthesized.stack
    statements = synthesized.role_statements(topology.TRIGGER_FUNCTION.construct_id)

    states = [s for s in statements if any(a.startswith("states:") for a in as_list(s["Action"]))]
    assert [sorted(as_list(s["Action"])) for s in states] == [
        ["states:SendTaskSuccess", "states:StartExecution"],
        ["states:DescribeExecution"],
    ]
    assert as_list(states[0]["Resource"]) == [{"Ref": stack.logical_id(sm)} for sm in stack.state_machines.values()]
    # The runs of the engine's state machines: execution:<state machine name>:*.
    runs = as_list(states[1]["Resource"])
    assert len(runs) == len(stack.state_machines)
    for run, machine in zip(runs, stack.state_machines.values(), strict=True):
        parts = run["Fn::Join"][1]
        assert ":execution:" in json.dumps(parts)
        assert {"Fn::GetAtt": [stack.logical_id(machine), "Name"]} in parts
        assert parts[-1].endswith(":*")
    actions = {a for s in statements for a in as_list(s["Action"])}
    # Stopping runs and rejecting stay with the API.
    assert actions.isdisjoint({"states:StopExecution", "states:SendTaskFailure"})
    assert not [action for action in actions if "*" in action]


def test_the_trigger_role_holds_only_what_starting_and_reconciling_executions_needs(
    synthesized: Synthesized,
) -> None:
    statements = synthesized.role_statements(topology.TRIGGER_FUNCTION.construct_id)

    assert {a for s in statements for a in as_list(s["Action"])} == {
        # Its own logs and traces, the approval link key and the status events, as every function.
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
        "secretsmanager:GetSecretValue",
        "events:PutEvents",
        # Recommendations, execution records (read, failed or sent to rolling back) and audit events.
        "dynamodb:GetItem",
        "dynamodb:Query",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        # Leaving the acting-slot queue, when an execution it started or reconciled ends (limits table only).
        "dynamodb:DeleteItem",
        # An execution's first run, or the rollback run of one whose run ended early.
        "states:StartExecution",
        # The sweeper: whether a run has ended, and an approval the API could not hand over.
        "states:DescribeExecution",
        "states:SendTaskSuccess",
        # Its failed events, to the dead-letter queue.
        "sqs:SendMessage",
        "sqs:GetQueueAttributes",
        "sqs:GetQueueUrl",
        # A completed execution's savings measurements: their schedules (passed the Scheduler role),
        # and the costs Cost Explorer reads when one is due.
        "scheduler:CreateSchedule",
        "iam:PassRole",
        "ce:GetCostAndUsage",
        "ce:GetCostAndUsageWithResources",
    }


def test_the_trigger_makes_only_measurement_schedules_and_passes_only_the_scheduler_role(
    synthesized: Synthesized,
) -> None:
    stack = synthesized.stack
    statements = synthesized.role_statements(topology.TRIGGER_FUNCTION.construct_id)

    [schedules] = [s for s in statements if "scheduler:CreateSchedule" in as_list(s["Action"])]
    assert json.dumps(schedules["Resource"]).endswith(':schedule/default/cost-engine-measure-*"]]}')
    [passing] = [s for s in statements if "iam:PassRole" in as_list(s["Action"])]
    assert passing["Resource"] == arn_of(synthesized, stack.events.scheduler_role)
    assert passing["Condition"] == {"StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}}


def test_the_trigger_role_reads_and_writes_the_tables_and_deletes_only_in_the_limits_table(
    synthesized: Synthesized,
) -> None:
    stack = synthesized.stack
    statements = synthesized.role_statements(topology.TRIGGER_FUNCTION.construct_id)

    dynamodb = [s for s in statements if any(a.startswith("dynamodb:") for a in as_list(s["Action"]))]
    read_write = [s for s in dynamodb if "dynamodb:DeleteItem" not in as_list(s["Action"])]
    deleting = [s for s in dynamodb if "dynamodb:DeleteItem" in as_list(s["Action"])]
    # The sweeper queries one index: the unfinished executions' keys.
    [sweeping] = [s for s in read_write if as_list(s["Action"]) == ["dynamodb:Query"]]
    executions_table = arn_of(synthesized, stack.data.tables[topology.EXECUTIONS_TABLE.construct_id])
    assert as_list(sweeping["Resource"]) == [
        {"Fn::Join": ["", [executions_table, f"/index/{topology.IndexName.UNFINISHED}"]]}
    ]
    read_write = [s for s in read_write if s is not sweeping]
    assert len(read_write) == 1
    assert set(as_list(read_write[0]["Action"])) == {
        "dynamodb:GetItem",
        "dynamodb:Query",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
    }
    assert as_list(read_write[0]["Resource"]) == [
        arn_of(synthesized, stack.data.tables[table.construct_id]) for table in topology.TABLES
    ]
    assert [as_list(s["Action"]) for s in deleting] == [["dynamodb:DeleteItem"]]
    assert as_list(deleting[0]["Resource"]) == [
        arn_of(synthesized, stack.data.tables[topology.LIMITS_TABLE.construct_id])
    ]
    assert not [a for s in dynamodb for a in as_list(s["Action"]) if a in ("dynamodb:Scan", "dynamodb:DeleteTable")]


def test_the_trigger_dlq_is_encrypted_refuses_non_tls_access_and_keeps_messages_14_days(
    synthesized: Synthesized,
) -> None:
    stack = synthesized.stack
    queue = stack.trigger.dead_letter_queue
    props = synthesized.resource(topology.TRIGGER_DLQ_CONSTRUCT_ID, queue)["Properties"]

    assert props["SqsManagedSseEnabled"] is True
    assert props["MessageRetentionPeriod"] == TRIGGER_DLQ_RETENTION.to_seconds() == 14 * 24 * 3600
    policies = [
        policy["Properties"]
        for policy in synthesized.template.find_resources("AWS::SQS::QueuePolicy").values()
        if {"Ref": stack.logical_id(queue)} in policy["Properties"]["Queues"]
    ]
    assert len(policies) == 1
    statements = policies[0]["PolicyDocument"]["Statement"]
    refusals = [(s["Principal"], s["Action"], s["Condition"]) for s in statements if s["Effect"] == "Deny"]
    assert refusals == [({"AWS": "*"}, "sqs:*", {"Bool": {"aws:SecureTransport": "false"}})]
    # EventBridge may send to it, for the trigger's four rules only.
    allowed = [s for s in statements if s["Effect"] == "Allow"]
    assert [(s["Principal"], s["Action"], s["Condition"]) for s in allowed] == [
        (
            {"Service": "events.amazonaws.com"},
            "sqs:SendMessage",
            {"ArnEquals": {"aws:SourceArn": arn_of(synthesized, rule)}},
        )
        for rule in trigger_rules(stack)
    ]


# -- cdk-nag ----------------------------------------------------------------------------------


def test_cdk_nag_leaves_no_unsuppressed_error_or_warning(synthesized: Synthesized) -> None:
    annotations = Annotations.from_stack(synthesized.stack)

    assert annotations.find_error("*", Match.any_value()) == []
    assert annotations.find_warning("*", Match.string_like_regexp("AwsSolutions-.*")) == []


@pytest.mark.parametrize(
    ("rule", "suppressed_on"),
    [
        ("AwsSolutions-APIG4", lambda stack: stack.api.approval_page_methods),
        ("AwsSolutions-SMG4", lambda stack: [stack.approvals.link_secret]),
        ("AwsSolutions-SQS3", lambda stack: [stack.trigger.dead_letter_queue]),
    ],
    ids=["public-approval-pages", "approval-key-rotation", "dead-letter-queue-without-its-own"],
)
def test_each_resource_specific_finding_is_accepted_only_where_it_applies(
    synthesized: Synthesized, rule: str, suppressed_on: Any
) -> None:
    resources = synthesized.template.to_json()["Resources"]

    suppressed = {
        name
        for name, resource in resources.items()
        for suppression in resource.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", [])
        if suppression["id"] == rule
    }
    assert suppressed == {synthesized.stack.logical_id(c) for c in suppressed_on(synthesized.stack)}


def test_the_powertools_layer_is_the_release_the_tests_run_with() -> None:
    from aws_lambda_powertools.shared.version import VERSION

    assert POWERTOOLS_VERSION == VERSION
    assert POWERTOOLS_LAYER_PARAMETER.endswith(f"/{VERSION}")


def test_the_scheduler_role_can_only_stop_and_start_instances_and_invoke_the_trigger(
    synthesized: Synthesized,
) -> None:
    stack = synthesized.stack
    role = synthesized.resource(SCHEDULER_ROLE_ID, stack.events.scheduler_role)["Properties"]
    statements = synthesized.statements_of(stack.events.scheduler_role)

    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "scheduler.amazonaws.com"}
    assert {a for s in statements for a in as_list(s["Action"])} == {*SCHEDULER_ACTIONS, "lambda:InvokeFunction"}
    # The measurement schedules invoke the trigger function, and no other.
    [invoke] = [s for s in statements if s["Action"] == "lambda:InvokeFunction"]
    assert invoke["Resource"] == arn_of(synthesized, stack.functions[topology.TRIGGER_FUNCTION.construct_id])


def test_every_function_publishes_status_events_to_the_engines_own_bus_only(synthesized: Synthesized) -> None:
    stack = synthesized.stack
    template = synthesized.template.to_json()
    buses = [k for k, v in template["Resources"].items() if v["Type"] == "AWS::Events::EventBus"]
    assert buses == [stack.logical_id(stack.events.bus)]
    for function in topology.functions():
        publishing = [
            s for s in synthesized.role_statements(function.construct_id) if "events:PutEvents" in as_list(s["Action"])
        ]
        assert len(publishing) == 1, function.construct_id
        assert publishing[0]["Resource"] == {"Fn::GetAtt": [buses[0], "Arn"]}
        environment = function_environment(stack, template, function)
        assert environment[EnvVar.EVENT_BUS_NAME] == {"Ref": buses[0]}


def test_the_context_refuses_whatever_the_functions_settings_refuse_and_has_their_defaults() -> None:
    # Every setting a deployment chooses through the context carries the functions' own bounds
    # (cost_engine.settings), so no value synthesizes that the functions would then refuse at start.
    shared = set(DeploymentContext.model_fields) & set(Settings.model_fields)
    assert {"max_concurrent_acting", "ri_purchase_limit_usd", "approval_timeout_seconds"} <= shared
    for name in shared:
        context_field, settings_field = DeploymentContext.model_fields[name], Settings.model_fields[name]
        missing = [bound for bound in settings_field.metadata if bound not in context_field.metadata]
        assert not missing, f"{name}: the context lacks the functions' bounds {missing}"
        if not settings_field.is_required() and settings_field.default_factory is None:
            assert context_field.default in (settings_field.default, None), name


@pytest.mark.parametrize("machine", topology.state_machines(), ids=lambda sm: sm.executor.construct_id)
def test_each_executor_may_answer_the_task_tokens_of_the_engines_state_machines_and_nothing_else(
    synthesized: Synthesized, machine: topology.StateMachine
) -> None:
    # A step that frees an acting slot wakes the oldest waiting run, of whatever type; a step that
    # finds a slot free answers its own run's wait.
    answers = [
        s
        for s in synthesized.role_statements(machine.executor.construct_id)
        if "states:SendTaskSuccess" in as_list(s["Action"])
    ]
    machines = set(synthesized.template.find_resources("AWS::StepFunctions::StateMachine"))

    assert [as_list(s["Action"]) for s in answers] == [["states:SendTaskSuccess"]]
    assert {ref["Ref"] for ref in as_list(answers[0]["Resource"])} == machines
