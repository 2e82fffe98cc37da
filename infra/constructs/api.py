"""The REST API: one function behind it, IAM-signed routes, and the public approval pages."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from aws_cdk import ArnFormat, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_iam as iam
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from cost_engine import topology
from cost_engine.access import ROUTE_ROLES, Role, routes_of
from infra.constructs.data import Data
from infra.constructs.functions import EngineFunctions
from infra.constructs.monitoring import Monitoring
from infra.permissions import (
    COST_READ_ACTIONS,
    EXECUTION_CONTROL_ACTIONS,
    LISTING_READ_ACTIONS,
    TABLE_READ_ACTIONS,
    TABLE_WRITE_ACTIONS,
    TASK_RESPONSE_ACTIONS,
    allow,
    execution_arns,
)

# The REST API is named after its construct ID.
REST_API_ID = "Api"
API_REQUEST_VALIDATOR_ID = "RequestValidator"
API_GATEWAY_LOGGING_ROLE_ID = "ApiGatewayLoggingRole"
API_GATEWAY_ACCOUNT_ID = "ApiGatewayAccount"
APPROVAL_PAGE_RESOURCE = f"{topology.APPROVAL_PAGE_PATH}/{{approval_id}}"
APPROVAL_PAGE_METHODS = ("GET", "POST")
# Deciding has resources of its own, so that IAM grants it apart from the rest of the API (an
# approver's execute-api:Invoke on POST/executions/*/approve and …/reject, nothing else).
DECISION_RESOURCES = tuple(path.lstrip("/") for (_, path), role in ROUTE_ROLES.items() if role == Role.APPROVER)
# One managed policy per role, granting execute-api:Invoke on exactly that role's routes: attach it to
# the IAM roles that hold the role, and name them in the `access` context key with their customers.
API_ROLE_POLICY_IDS = {role: f"Api{role.value.capitalize()}Policy" for role in Role}
# Per approval method, below the stage's limits: a mail scanner opening every link cannot use up the
# requests that the IAM-signed routes need.
APPROVAL_PAGE_RATE_LIMIT = 10
APPROVAL_PAGE_BURST_LIMIT = 20


def route_resource(path: str) -> str:
    """A route's path as an execute-api resource: each path parameter is a wildcard (ids are not known
    in advance)."""
    return re.sub(r"\{\w+\}", "*", path)


class Api(Construct):
    """The API function and the REST API in front of it, the managed policies that let IAM principals
    call each role's routes, and API Gateway's account-wide logging role."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        functions: EngineFunctions,
        data: Data,
        state_machines: Sequence[sfn.StateMachine],
        monitoring: Monitoring,
    ) -> None:
        super().__init__(scope, construct_id)
        api_function = functions.add(self, topology.API_FUNCTION)
        self.function, self.role = api_function.function, api_function.role
        allow(self.role, TABLE_READ_ACTIONS + TABLE_WRITE_ACTIONS, data.table_arns(topology.TABLES, with_indexes=True))
        allow(self.role, LISTING_READ_ACTIONS, data.table_arns((topology.EXECUTIONS_TABLE,), with_indexes=False))
        machine_arns = [sm.state_machine_arn for sm in state_machines]
        allow(self.role, ["states:StartExecution", *TASK_RESPONSE_ACTIONS], machine_arns)
        allow(self.role, EXECUTION_CONTROL_ACTIONS, execution_arns(self, state_machines))
        # POST /executions/{id}/measure reads Cost Explorer, which has no resource-level permissions.
        allow(self.role, COST_READ_ACTIONS, ["*"])
        self.rest_api = self._rest_api(monitoring)
        # Where approval links point unless the deployment chooses an address. Built from the API's id,
        # not from its stage: a reference to the stage would make each executor depend on it, and the
        # stage (through the deployment and the methods) on the API function, the state machines and so
        # on the executors: a cycle.
        stack = Stack.of(self)
        self.links_base_url = (
            f"https://{self.rest_api.rest_api_id}.execute-api.{stack.region}.{stack.url_suffix}/"
            f"{topology.API_STAGE_NAME}"
        )

    def _rest_api(self, monitoring: Monitoring) -> apigw.RestApi:
        method_logging: dict[str, Any] = {
            "metrics_enabled": True,
            "logging_level": apigw.MethodLoggingLevel.INFO,
            # Request and response bodies stay out of the logs.
            "data_trace_enabled": False,
        }
        api = apigw.RestApi(
            self,
            REST_API_ID,
            description="Cost Execution Engine API",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            # The account's API Gateway logging role is set below, with a custom policy.
            cloud_watch_role=False,
            default_method_options=apigw.MethodOptions(authorization_type=apigw.AuthorizationType.IAM),
            deploy_options=apigw.StageOptions(
                # Named here, so the approval links can be built without a reference to the stage.
                stage_name=topology.API_STAGE_NAME,
                tracing_enabled=True,
                **method_logging,
                # A method's own settings replace the stage's, so they repeat its logging settings.
                method_options={
                    f"{APPROVAL_PAGE_RESOURCE}/{method}": apigw.MethodDeploymentOptions(
                        **method_logging,
                        throttling_rate_limit=APPROVAL_PAGE_RATE_LIMIT,
                        throttling_burst_limit=APPROVAL_PAGE_BURST_LIMIT,
                    )
                    for method in APPROVAL_PAGE_METHODS
                },
                access_log_destination=apigw.LogGroupLogDestination(monitoring.api_access_log_group()),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=True,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=True,
                ),
                # Every request may start work on real resources: keep bursts bounded.
                throttling_rate_limit=20,
                throttling_burst_limit=40,
            ),
        )
        # Bodies are validated by the handler's pydantic models (one definition of the contract);
        # this validator enforces whatever a method declares as required.
        validator = api.add_request_validator(
            API_REQUEST_VALIDATOR_ID, validate_request_body=True, validate_request_parameters=True
        )
        # One proxy: the API function routes (Powertools Router), so routes are declared once.
        # CDK adds the same ANY method to "/" as well, since {proxy+} does not match it.
        integration = apigw.LambdaIntegration(self.function)
        proxy = api.root.add_proxy(any_method=False)
        proxy.add_method(
            "ANY", integration, authorization_type=apigw.AuthorizationType.IAM, request_validator=validator
        )
        # The approval pages, opened from an email by people without AWS credentials: the link's
        # HMAC signature, checked by the function, stands in for IAM. API Gateway matches this
        # explicit resource before {proxy+}.
        approval_page = api.root.resource_for_path(APPROVAL_PAGE_RESOURCE)
        self.approval_page_methods = [
            approval_page.add_method(method, integration, authorization_type=apigw.AuthorizationType.NONE)
            for method in APPROVAL_PAGE_METHODS
        ]
        # Approve and reject: IAM-authorized like {proxy+}, but resources of their own that a policy can
        # grant apart (API Gateway matches them before {proxy+}).
        self.decision_methods = [
            api.root.resource_for_path(path).add_method(
                "POST", integration, authorization_type=apigw.AuthorizationType.IAM, request_validator=validator
            )
            for path in DECISION_RESOURCES
        ]
        self.role_policies = self._role_policies(api)
        api.deployment_stage.node.add_dependency(self._api_gateway_account())
        return api

    def _role_policies(self, api: apigw.RestApi) -> dict[Role, iam.ManagedPolicy]:
        """What the holders of each role may call (the engine then checks their customers)."""
        return {
            role: iam.ManagedPolicy(
                self,
                API_ROLE_POLICY_IDS[role],
                description=f"Calls the Cost Execution Engine API as {role.value} (see the access context key)",
                statements=[
                    iam.PolicyStatement(
                        actions=["execute-api:Invoke"],
                        resources=[
                            api.arn_for_execute_api(method, route_resource(path), topology.API_STAGE_NAME)
                            for method, path in routes_of(role)
                        ],
                    )
                ],
            )
            for role in Role
        }

    def _api_gateway_account(self) -> apigw.CfnAccount:
        """API Gateway's regional logging role, needed for execution logs.

        Every REST API of the account and region logs through it, so it is kept when the stack goes.
        """
        self.gateway_logging_role = iam.Role(
            self,
            API_GATEWAY_LOGGING_ROLE_ID,
            assumed_by=iam.ServicePrincipal("apigateway.amazonaws.com"),
            description="Lets API Gateway write execution and access logs",
            inline_policies={
                "PushToCloudWatchLogs": iam.PolicyDocument(
                    statements=[
                        iam.PolicyStatement(
                            actions=[
                                "logs:CreateLogGroup",
                                "logs:CreateLogStream",
                                "logs:DescribeLogGroups",
                                "logs:DescribeLogStreams",
                                "logs:PutLogEvents",
                                "logs:GetLogEvents",
                                "logs:FilterLogEvents",
                            ],
                            resources=[
                                Stack.of(self).format_arn(
                                    service="logs", resource="*", arn_format=ArnFormat.NO_RESOURCE_NAME
                                )
                            ],
                        )
                    ]
                )
            },
        )
        self.gateway_logging_role.apply_removal_policy(RemovalPolicy.RETAIN)
        return apigw.CfnAccount(self, API_GATEWAY_ACCOUNT_ID, cloud_watch_role_arn=self.gateway_logging_role.role_arn)
