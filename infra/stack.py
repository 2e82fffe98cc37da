"""The Cost Execution Engine on AWS, built from the declarations in `cost_engine.topology`.

Nothing here lists tables, functions or recommendation types by hand: a new executor registered in the
shared package gets its function, role, state machine and API wiring from the loops below.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, cast

from aws_cdk import ArnFormat, Aws, CfnElement, Duration, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_ssm as ssm
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct, IConstruct, Node
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from cost_engine import spine, topology
from cost_engine.access import ROUTE_ROLES, AccessPolicy, Role, routes_of
from cost_engine.approval_policy import ApprovalPolicy
from cost_engine.business_rules import BusinessRulesConfig
from cost_engine.executors import executor_class
from cost_engine.executors.base import Permission
from cost_engine.models import RecommendationType
from cost_engine.periods import Period
from cost_engine.prechecks import precheck_permissions
from cost_engine.settings import (
    DEFAULT_MAX_ACTING_SECONDS,
    DEFAULT_MAX_CONCURRENT_ACTING,
    DEFAULT_MAX_RECOMMENDATION_AGE_DAYS,
    DEFAULT_RESOURCE_COOLDOWN_SECONDS,
    DEFAULT_RI_PURCHASE_LIMIT_PER_PERIOD_USD,
    DEFAULT_RI_PURCHASE_LIMIT_USD,
    ApprovalTimeoutSeconds,
    MaxActingSeconds,
    MaxConcurrentActing,
    MaxRecommendationAgeDays,
    PurchaseLimitUsd,
    ResourceCooldownSeconds,
)
from cost_engine.topology import EnvVar

# python3.14 is the newest runtime aws-cdk-lib knows, which is what cdk-nag's AwsSolutions-L1 demands,
# and Powertools publishes its v3 layer for it. arm64 (Graviton) costs less per GB-second than x86_64.
RUNTIME = lambda_.Runtime.PYTHON_3_14
ARCHITECTURE = lambda_.Architecture.ARM_64
# The public Powertools for AWS Lambda (Python) v3 layer (bundles pydantic), resolved at deploy time
# from the SSM parameter Powertools publishes per release, for the very release pinned in
# requirements.txt: the functions on AWS run the Powertools the tests ran.
POWERTOOLS_VERSION = re.search(
    r"^aws-lambda-powertools(?:\[[^\]]*\])?==([\w.]+)$",
    (topology.PROJECT_ROOT / "requirements.txt").read_text(),
    re.MULTILINE,
).group(1)  # type: ignore[union-attr]
POWERTOOLS_LAYER_PARAMETER = f"/aws/service/powertools/python/arm64/python3.14/{POWERTOOLS_VERSION}"
LOG_RETENTION = logs.RetentionDays.THREE_MONTHS
ASSET_EXCLUDES = ["**/__pycache__", "**/*.pyc"]

# Construct IDs of what topology does not declare; the tests import them too.
SHARED_LAYER_ID = "SharedLayer"
POWERTOOLS_LAYER_ID = "PowertoolsLayer"
APPROVAL_TOPIC_KEY_ID = f"{topology.APPROVAL_TOPIC_CONSTRUCT_ID}Key"
API_ID = "Api"
API_REQUEST_VALIDATOR_ID = "RequestValidator"
API_ACCESS_LOG_GROUP_ID = "ApiAccessLogs"
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
SCHEDULER_ROLE_ID = "SchedulerRole"
SCHEDULER_ACTIONS = ("ec2:StopInstances", "ec2:StartInstances")
# How long a Recommendation Approved event may wait for the trigger, on either hop (EventBridge to
# Lambda, Lambda's own retries): 6 hours is Lambda's maximum. After that it goes to the dead-letter queue.
TRIGGER_MAX_EVENT_AGE = Duration.hours(6)
# Long enough to notice and redrive an event after a weekend; SQS's maximum.
TRIGGER_DLQ_RETENTION = Duration.days(14)

POWERTOOLS_ENVIRONMENT = {
    "POWERTOOLS_SERVICE_NAME": "cost-execution-engine",
    "POWERTOOLS_METRICS_NAMESPACE": "CostExecutionEngine",
    "POWERTOOLS_LOG_LEVEL": "INFO",
}
# What the functions that start executions (the API and the trigger) hand on to each execution.
EXECUTION_START_ENVIRONMENT = {
    EnvVar.POLL_INTERVAL_SECONDS: "15",
    EnvVar.MAX_POLL_ATTEMPTS: "120",
}
# The state machines' TimeoutSeconds (topology.STATE_MACHINE_TIMEOUT_SECONDS) leaves an hour for the
# acting phase after an approval wait of at most this long.
MAX_APPROVAL_TIMEOUT_SECONDS = 24 * 3600

# Exactly the DynamoDB calls of cost_engine.stores: nothing deletes (the audit log is append-only) and
# nothing scans (listings are served by indexes).
TABLE_READ_ACTIONS = ("dynamodb:GetItem", "dynamodb:Query")
TABLE_WRITE_ACTIONS = ("dynamodb:PutItem", "dynamodb:UpdateItem")
# Leaving the queue for an acting slot deletes the entry: on the limits table only.
LIMITS_DELETE_ACTIONS = ("dynamodb:DeleteItem",)
LOG_WRITE_ACTIONS = ("logs:CreateLogStream", "logs:PutLogEvents")
# Added by CDK to every function role for Tracing.ACTIVE.
TRACING_ACTIONS = ("xray:PutTraceSegments", "xray:PutTelemetryRecords")
# Publishing to a topic encrypted with a customer managed key needs these on the key.
TOPIC_KEY_ACTIONS = ("kms:GenerateDataKey", "kms:Decrypt")
# Reading the approval link key, nothing else (not even DescribeSecret). The secret is encrypted with
# the AWS managed key aws/secretsmanager, whose key policy already lets Secrets Manager decrypt for
# any principal of the account that may read the secret.
SECRET_READ_ACTIONS = ("secretsmanager:GetSecretValue",)
# Publishing the engine's own events (Execution Status Changed) to its bus, nothing else.
EVENT_PUBLISH_ACTIONS = ("events:PutEvents",)
# What every executor role holds besides the permissions its executor class declares.
EXECUTOR_BASE_ACTIONS = frozenset(
    {
        *LOG_WRITE_ACTIONS,
        *TRACING_ACTIONS,
        *TABLE_READ_ACTIONS,
        *TABLE_WRITE_ACTIONS,
        "sns:Publish",
        *TOPIC_KEY_ACTIONS,
        *SECRET_READ_ACTIONS,
        *EVENT_PUBLISH_ACTIONS,
        *LIMITS_DELETE_ACTIONS,
    }
)
# The trigger starts executions (a first run, or a rollback run of an execution whose run ended
# early); stopping them and rejecting stay with the API.
TRIGGER_STATES_ACTIONS = ("states:StartExecution",)
EXECUTION_CONTROL_ACTIONS = ("states:StopExecution", "states:DescribeExecution", "states:GetExecutionHistory")
TASK_RESPONSE_ACTIONS = ("states:SendTaskSuccess", "states:SendTaskFailure")
# The sweeper (cost_engine.sweeper, in the trigger): whether a run has ended, and handing over an
# approval that the API could not (a task token is answered on the state machine's ARN).
SWEEPER_EXECUTION_ACTIONS = ("states:DescribeExecution",)
SWEEPER_TASK_ACTIONS = ("states:SendTaskSuccess",)


def route_resource(path: str) -> str:
    """A route's path as an execute-api resource: each path parameter is a wildcard (ids are not known
    in advance)."""
    return re.sub(r"\{\w+\}", "*", path)


def _email_address(value: str) -> str:
    # Only what catches a slip (a missing "@", two addresses run together): SNS asks each address
    # to confirm its subscription anyway.
    if "@" not in value or any(character.isspace() for character in value):
        raise ValueError(f"{value!r} is not an email address")
    return value


def _https_url(value: str) -> str:
    if not re.fullmatch(r"https://[^\s/?#]+(/[^\s?#]*)?", value):
        raise ValueError(f"{value!r} is not an https:// URL without a query or fragment")
    return value.rstrip("/")


class DeploymentContext(BaseModel):
    """What a deployment chooses with `cdk deploy -c name=value` (or cdk.json's "context").

    Checked when the app synthesizes, so a typo fails there instead of in the functions on AWS. The
    field names are the context keys.
    """

    model_config = ConfigDict(frozen=True)

    # Who the approval topic mails: a list, or one comma-separated string as `-c` passes it.
    approver_emails: tuple[Annotated[str, AfterValidator(_email_address)], ...] = ()
    # cost_engine.approval_policy.ApprovalPolicy, as an object or as its JSON. Unset: its defaults.
    approval_policy: ApprovalPolicy | None = None
    # How long an approval request waits for a person; also how long its link stays valid.
    approval_timeout_seconds: Annotated[ApprovalTimeoutSeconds, Field(le=MAX_APPROVAL_TIMEOUT_SECONDS)] = (
        MAX_APPROVAL_TIMEOUT_SECONDS
    )
    # Where approval links point, e.g. a custom domain. Unset: the API's own execute-api address.
    api_base_url: Annotated[str, AfterValidator(_https_url)] | None = None
    # The safety limits (cost_engine.limits), the seed's values by default; the bounds are the
    # functions' own (cost_engine.settings), so a value the functions would refuse fails the synth instead.
    max_concurrent_acting: MaxConcurrentActing = DEFAULT_MAX_CONCURRENT_ACTING
    resource_cooldown_seconds: ResourceCooldownSeconds = DEFAULT_RESOURCE_COOLDOWN_SECONDS
    max_acting_seconds: MaxActingSeconds = DEFAULT_MAX_ACTING_SECONDS
    # cost_engine.business_rules.BusinessRulesConfig, as an object or as its JSON. Unset: no rules.
    business_rules: BusinessRulesConfig | None = None
    # What one RI purchase may cost, and what all of an account's may commit per period
    # (cost_engine.purchase_limits): the same bounds as the functions' settings.
    ri_purchase_limit_usd: PurchaseLimitUsd = DEFAULT_RI_PURCHASE_LIMIT_USD
    ri_purchase_limit_per_period_usd: PurchaseLimitUsd = DEFAULT_RI_PURCHASE_LIMIT_PER_PERIOD_USD
    ri_purchase_limit_period: Period = Period.MONTH
    # Recommendations older than this are refused (409 at execute, refused again at validation).
    max_recommendation_age_days: MaxRecommendationAgeDays = DEFAULT_MAX_RECOMMENDATION_AGE_DAYS
    # cost_engine.access.AccessPolicy, as an object or as its JSON: the roles per customer of each IAM
    # principal. Unset: no principal may do anything through the API but open approval links.
    access: AccessPolicy | None = None

    @field_validator("approver_emails", mode="before")
    @classmethod
    def _split_addresses(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list | tuple):
            # An address listed twice is subscribed once.
            return tuple(dict.fromkeys(str(v).strip() for v in value if str(v).strip()))
        return value

    @field_validator("approval_policy", "business_rules", "access", mode="before")
    @classmethod
    def _parse_json(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError as error:
                raise ValueError(f"not JSON ({error})") from None
        return value

    @classmethod
    def of(cls, node: Node) -> DeploymentContext:
        values = {name: node.try_get_context(name) for name in cls.model_fields}
        try:
            return cls.model_validate({name: value for name, value in values.items() if value is not None})
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}" for problem in error.errors()
            )
            raise ValueError(f"invalid CDK context (cdk -c name=value or cdk.json): {problems}") from None


def permission_statement(permission: Permission) -> iam.PolicyStatement:
    """An executor's declared permission, with its ARN placeholders filled for this stack."""
    return iam.PolicyStatement(
        actions=list(permission.actions),
        resources=[
            resource.format(partition=Aws.PARTITION, region=Aws.REGION, account=Aws.ACCOUNT_ID)
            for resource in permission.resources
        ],
        conditions=permission.conditions,
    )


class CostExecutionEngineStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.deployment_context = DeploymentContext.of(self.node)

        self.tables = {spec.construct_id: self._table(spec) for spec in topology.TABLES}
        self.approval_topic_key = kms.Key(
            self,
            APPROVAL_TOPIC_KEY_ID,
            description="Encrypts the Cost Execution Engine approval topic",
            enable_key_rotation=True,
        )
        self.approval_topic = sns.Topic(
            self,
            topology.APPROVAL_TOPIC_CONSTRUCT_ID,
            display_name="Cost Execution Engine approvals",
            master_key=self.approval_topic_key,
            enforce_ssl=True,
        )
        for email in self.deployment_context.approver_emails:
            self.approval_topic.add_subscription(subscriptions.EmailSubscription(email))
        # The HMAC key of the approval links: the executors sign them, the API function checks them.
        # Where the engine publishes Execution Status Changed events (docs/events.md) for others to follow.
        self.event_bus = events.EventBus(self, topology.EVENT_BUS_CONSTRUCT_ID)
        self.approval_secret = secretsmanager.Secret(
            self,
            topology.APPROVAL_SECRET_CONSTRUCT_ID,
            description="Signs the Cost Execution Engine's approval links (HMAC-SHA256 key)",
            generate_secret_string=secretsmanager.SecretStringGenerator(password_length=64, exclude_punctuation=True),
        )

        # What EventBridge Scheduler assumes to stop and start instances on the schedules that
        # schedule_instance creates: those two actions on instances, nothing else.
        self.scheduler_role = iam.Role(
            self,
            SCHEDULER_ROLE_ID,
            assumed_by=iam.ServicePrincipal("scheduler.amazonaws.com"),
            description="Stops and starts EC2 instances on the engine's off-hours schedules",
        )
        self.scheduler_role.add_to_policy(
            iam.PolicyStatement(
                actions=list(SCHEDULER_ACTIONS),
                resources=[f"arn:{Aws.PARTITION}:ec2:{Aws.REGION}:{Aws.ACCOUNT_ID}:instance/*"],
            )
        )

        self.layers: list[lambda_.ILayerVersion] = [
            lambda_.LayerVersion(
                self,
                SHARED_LAYER_ID,
                code=lambda_.Code.from_asset(str(topology.SHARED_LAYER_DIR), exclude=ASSET_EXCLUDES),
                compatible_runtimes=[RUNTIME],
                compatible_architectures=[ARCHITECTURE],
                description="cost_engine: models, executors, stores and engine logic",
            ),
            lambda_.LayerVersion.from_layer_version_arn(
                self,
                POWERTOOLS_LAYER_ID,
                ssm.StringParameter.value_for_string_parameter(self, POWERTOOLS_LAYER_PARAMETER),
            ),
        ]
        self.functions: dict[str, lambda_.Function] = {}
        self.roles: dict[str, iam.Role] = {}
        self.state_machines: dict[RecommendationType, sfn.StateMachine] = {}

        # Executors first: the state machines invoke them, and the API starts the state machines.
        # Executors never refer to a state machine, so there is no dependency cycle.
        for machine in topology.state_machines():
            executor = self._function(machine.executor, self._approval_request_environment())
            role = self.roles[machine.executor.construct_id]
            self._allow_executor(machine.recommendation_type, role)
            # The pre-checks' policy simulation asks about this role, path included.
            executor.add_environment(EnvVar.OWN_ROLE_ARN, role.role_arn)
            self.state_machines[machine.recommendation_type] = self._state_machine(machine, executor)

        api_function = self._function(
            topology.API_FUNCTION, {**self._execution_start_environment(), **self._api_access_environment()}
        )
        self._allow_api(self.roles[topology.API_FUNCTION.construct_id])
        self.api = self._rest_api(api_function)
        self.trigger_dead_letter_queue, self.trigger_rule, self.run_ended_rule, self.sweep_rule = self._trigger()
        # Set once the API exists. Built from the API's id, not from its stage: a reference to the
        # stage would make each executor depend on it, and the stage (through the deployment and the
        # methods) on the API function, the state machines and so on the executors: a cycle.
        approval_links_base = self.deployment_context.api_base_url or (
            f"https://{self.api.rest_api_id}.execute-api.{self.region}.{self.url_suffix}/{topology.API_STAGE_NAME}"
        )
        for machine in topology.state_machines():
            self.functions[machine.executor.construct_id].add_environment(EnvVar.API_BASE_URL, approval_links_base)

    def logical_id(self, construct: IConstruct) -> str:
        """The CloudFormation logical ID of an L2 construct's main resource."""
        return self.get_logical_id(cast(CfnElement, construct.node.default_child))

    # -- data ---------------------------------------------------------------------------------

    def _table(self, spec: topology.Table) -> dynamodb.Table:
        def key(name: str) -> dynamodb.Attribute:
            return dynamodb.Attribute(name=name, type=dynamodb.AttributeType.STRING)

        table = dynamodb.Table(
            self,
            spec.construct_id,
            partition_key=key(spec.partition_key),
            sort_key=key(spec.sort_key) if spec.sort_key else None,
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            # Execution records and the audit log outlive the stack.
            removal_policy=RemovalPolicy.RETAIN,
        )
        for index in spec.indexes:
            table.add_global_secondary_index(
                index_name=index.name,
                partition_key=key(index.partition_key),
                sort_key=key(index.sort_key),
                projection_type=(
                    dynamodb.ProjectionType.ALL if index.projects_all else dynamodb.ProjectionType.KEYS_ONLY
                ),
            )
        return table

    def _table_resources(self, specs: Iterable[topology.Table], *, with_indexes: bool) -> list[str]:
        resources = []
        for spec in specs:
            arn = self.tables[spec.construct_id].table_arn
            resources.append(arn)
            if with_indexes:
                resources.extend(f"{arn}/index/{index.name}" for index in spec.indexes)
        return resources

    # -- functions ----------------------------------------------------------------------------

    def _function(self, spec: topology.Function, environment: dict[str, str] | None = None) -> lambda_.Function:
        log_group = logs.LogGroup(self, f"{spec.construct_id}LogGroup", retention=LOG_RETENTION)
        # Its own role, so that it holds only its own permissions (no AWS managed policies).
        role = iam.Role(
            self,
            f"{spec.construct_id}Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Runs {spec.construct_id}",
        )
        role.add_to_policy(iam.PolicyStatement(actions=list(LOG_WRITE_ACTIONS), resources=[log_group.log_group_arn]))
        # Every function signs or checks approval links with the key (APPROVAL_SECRET_ARN).
        role.add_to_policy(
            iam.PolicyStatement(actions=list(SECRET_READ_ACTIONS), resources=[self.approval_secret.secret_arn])
        )
        # Every function may end an execution, and the limits then free its slot and queue entry.
        limits_table = self._table_resources((topology.LIMITS_TABLE,), with_indexes=False)
        role.add_to_policy(iam.PolicyStatement(actions=list(LIMITS_DELETE_ACTIONS), resources=limits_table))
        # Every function changes execution statuses, and each change is announced on the bus.
        role.add_to_policy(
            iam.PolicyStatement(actions=list(EVENT_PUBLISH_ACTIONS), resources=[self.event_bus.event_bus_arn])
        )
        function = lambda_.Function(
            self,
            spec.construct_id,
            description=spec.description,
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            handler=spec.handler,
            code=lambda_.Code.from_asset(str(topology.FUNCTIONS_DIR / spec.code_dir), exclude=ASSET_EXCLUDES),
            layers=self.layers,
            role=role,
            log_group=log_group,
            timeout=Duration.seconds(spec.timeout_seconds),
            memory_size=spec.memory_mb,
            tracing=lambda_.Tracing.ACTIVE,
            environment={
                **{table.env_var: self.tables[table.construct_id].table_name for table in topology.TABLES},
                EnvVar.APPROVAL_TOPIC_ARN: self.approval_topic.topic_arn,
                EnvVar.SCHEDULER_ROLE_ARN: self.scheduler_role.role_arn,
                EnvVar.RI_PURCHASE_LIMIT_USD: str(self.deployment_context.ri_purchase_limit_usd),
                EnvVar.RI_PURCHASE_LIMIT_PER_PERIOD_USD: str(self.deployment_context.ri_purchase_limit_per_period_usd),
                EnvVar.RI_PURCHASE_LIMIT_PERIOD: self.deployment_context.ri_purchase_limit_period.value,
                EnvVar.APPROVAL_TIMEOUT_SECONDS: str(self.deployment_context.approval_timeout_seconds),
                EnvVar.APPROVAL_SECRET_ARN: self.approval_secret.secret_arn,
                EnvVar.EVENT_BUS_NAME: self.event_bus.event_bus_name,
                EnvVar.MAX_CONCURRENT_ACTING: str(self.deployment_context.max_concurrent_acting),
                EnvVar.RESOURCE_COOLDOWN_SECONDS: str(self.deployment_context.resource_cooldown_seconds),
                EnvVar.MAX_ACTING_SECONDS: str(self.deployment_context.max_acting_seconds),
                EnvVar.MAX_RECOMMENDATION_AGE_DAYS: str(self.deployment_context.max_recommendation_age_days),
                **self._business_rules_environment(),
                **POWERTOOLS_ENVIRONMENT,
                **spec.own_environment(),
                **(environment or {}),
            },
        )
        self.functions[spec.construct_id] = function
        self.roles[spec.construct_id] = role
        return function

    def _execution_start_environment(self) -> dict[str, str]:
        """What a function that starts executions needs: the state machine of each type, and the settings
        it hands on to each execution."""
        return {
            **EXECUTION_START_ENVIRONMENT,
            EnvVar.STATE_MACHINE_ARNS: self.to_json_string(
                {t.value: sm.state_machine_arn for t, sm in self.state_machines.items()}
            ),
        }

    def _approval_request_environment(self) -> dict[str, str]:
        """What the executors put in an approval request, as the deployment chose it."""
        chosen = self.deployment_context
        environment = {}
        if chosen.approver_emails:
            environment[EnvVar.APPROVER_EMAILS] = ",".join(chosen.approver_emails)
        return {**environment, **self._approval_policy_environment()}

    def _approval_policy_environment(self) -> dict[str, str]:
        policy = self.deployment_context.approval_policy
        # Only what the deployment set: the rest keeps the defaults of the running code.
        return {EnvVar.APPROVAL_POLICY: policy.model_dump_json(exclude_unset=True)} if policy is not None else {}

    def _api_access_environment(self) -> dict[str, str]:
        """Who may do what through the API, and the approval policy's self-approval rules (four eyes)."""
        access = self.deployment_context.access
        environment = {EnvVar.ACCESS_POLICY: access.model_dump_json()} if access is not None else {}
        return {**environment, **self._approval_policy_environment()}

    def _business_rules_environment(self) -> dict[str, str]:
        rules = self.deployment_context.business_rules
        # Only what the deployment set; unset means no rules at all.
        return {EnvVar.BUSINESS_RULES: rules.model_dump_json(exclude_unset=True)} if rules is not None else {}

    def _allow(self, role: iam.Role, actions: Sequence[str], resources: Sequence[str]) -> None:
        role.add_to_policy(iam.PolicyStatement(actions=list(actions), resources=list(resources)))

    def _allow_executor(self, recommendation_type: RecommendationType, role: iam.Role) -> None:
        # Their records, the audit log and the limits (acting slots, resource locks) they take and free.
        own_records = self._table_resources(
            (topology.EXECUTIONS_TABLE, topology.AUDIT_TABLE, topology.LIMITS_TABLE), with_indexes=False
        )
        self._allow(role, TABLE_READ_ACTIONS + TABLE_WRITE_ACTIONS, own_records)
        recommendations = self._table_resources((topology.RECOMMENDATIONS_TABLE,), with_indexes=False)
        self._allow(role, TABLE_READ_ACTIONS, recommendations)
        # Executors send the approval request (with its task token) to the approvers.
        self._allow(role, ["sns:Publish"], [self.approval_topic.topic_arn])
        self._allow(role, TOPIC_KEY_ACTIONS, [self.approval_topic_key.key_arn])
        executor = executor_class(recommendation_type)
        for permission in (*executor.permissions, *precheck_permissions(executor)):
            role.add_to_policy(permission_statement(permission))
        # The pre-checks ask the policy simulator about this role only (cost_engine.prechecks).
        self._allow(role, ["iam:SimulatePrincipalPolicy"], [role.role_arn])

    def _allow_api(self, role: iam.Role) -> None:
        self._allow(
            role, TABLE_READ_ACTIONS + TABLE_WRITE_ACTIONS, self._table_resources(topology.TABLES, with_indexes=True)
        )
        machines = self.state_machines.values()
        self._allow(role, ["states:StartExecution", *TASK_RESPONSE_ACTIONS], [sm.state_machine_arn for sm in machines])
        self._allow(role, EXECUTION_CONTROL_ACTIONS, self._execution_arns())

    def _allow_trigger(self, role: iam.Role) -> None:
        # Registering a recommendation (a conditional PutItem, then GetItem), starting its execution once
        # (GetItem by the id its idempotency key gives, a conditional PutItem, UpdateItem), reconciling an
        # execution whose run ended (GetItem, conditional UpdateItem) and auditing both (PutItem): every
        # call names its key. The sweeper reads one index: the unfinished executions' keys.
        self._allow(
            role, TABLE_READ_ACTIONS + TABLE_WRITE_ACTIONS, self._table_resources(topology.TABLES, with_indexes=False)
        )
        executions_table = self.tables[topology.EXECUTIONS_TABLE.construct_id].table_arn
        self._allow(role, ["dynamodb:Query"], [f"{executions_table}/index/{topology.IndexName.UNFINISHED}"])
        machines = self.state_machines.values()
        self._allow(role, SWEEPER_TASK_ACTIONS + TRIGGER_STATES_ACTIONS, [sm.state_machine_arn for sm in machines])
        # The sweeper asks whether an execution's run has ended: its own state machines' runs only.
        self._allow(role, SWEEPER_EXECUTION_ACTIONS, self._execution_arns())

    def _execution_arns(self) -> list[str]:
        """The runs of the engine's state machines (an execution ARN names its state machine)."""
        return [
            self.format_arn(
                service="states",
                resource="execution",
                resource_name=f"{sm.state_machine_name}:*",
                arn_format=ArnFormat.COLON_RESOURCE_NAME,
            )
            for sm in self.state_machines.values()
        ]

    # -- state machines -----------------------------------------------------------------------

    def _state_machine(self, spec: topology.StateMachine, executor: lambda_.Function) -> sfn.StateMachine:
        # Under /aws/vendedlogs/ one CloudWatch Logs resource policy covers every state machine's
        # group, instead of one policy entry per group (the resource policy size is limited).
        log_group = logs.LogGroup(
            self,
            f"{spec.construct_id}LogGroup",
            log_group_name=f"/aws/vendedlogs/states/{self.stack_name}-{spec.construct_id}",
            retention=LOG_RETENTION,
        )
        machine = sfn.StateMachine(
            self,
            spec.construct_id,
            definition_body=sfn.DefinitionBody.from_string(spine.template(spec)),
            definition_substitutions=spec.substitutions(executor.function_arn),
            # Execution data stays out of the logs: it carries approval task tokens.
            logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=False),
            tracing_enabled=True,
        )
        # The ASL invokes the unqualified function ARN and nothing else.
        machine.add_to_role_policy(
            iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=[executor.function_arn])
        )
        return machine

    # -- API ----------------------------------------------------------------------------------

    def _rest_api(self, api_function: lambda_.Function) -> apigw.RestApi:
        access_logs = logs.LogGroup(self, API_ACCESS_LOG_GROUP_ID, retention=LOG_RETENTION)
        method_logging: dict[str, Any] = {
            "metrics_enabled": True,
            "logging_level": apigw.MethodLoggingLevel.INFO,
            # Request and response bodies stay out of the logs.
            "data_trace_enabled": False,
        }
        api = apigw.RestApi(
            self,
            API_ID,
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
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
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
        integration = apigw.LambdaIntegration(api_function)
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
        self.api_role_policies = self._api_role_policies(api)
        api.deployment_stage.node.add_dependency(self._api_gateway_account())
        return api

    def _api_role_policies(self, api: apigw.RestApi) -> dict[Role, iam.ManagedPolicy]:
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
        self.api_gateway_logging_role = iam.Role(
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
                                self.format_arn(service="logs", resource="*", arn_format=ArnFormat.NO_RESOURCE_NAME)
                            ],
                        )
                    ]
                )
            },
        )
        self.api_gateway_logging_role.apply_removal_policy(RemovalPolicy.RETAIN)
        return apigw.CfnAccount(
            self, API_GATEWAY_ACCOUNT_ID, cloud_watch_role_arn=self.api_gateway_logging_role.role_arn
        )

    # -- trigger ------------------------------------------------------------------------------

    def _trigger(self) -> tuple[sqs.Queue, events.Rule, events.Rule, events.Rule]:
        """The upstream engine's Recommendation Approved events, on the engine's bus, start executions;
        Step Functions' events of the engine's runs that ended early, on the default bus, reconcile them;
        a schedule sweeps for executions left unfinished all the same (cost_engine.sweeper).

        An event that cannot be handled ends in one dead-letter queue, whichever hop gave up: EventBridge
        delivering it to the function, or the function failing it after its retries.
        """
        dead_letter_queue = sqs.Queue(
            self,
            topology.TRIGGER_DLQ_CONSTRUCT_ID,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=TRIGGER_DLQ_RETENTION,
        )
        trigger = self._function(topology.TRIGGER_FUNCTION, self._execution_start_environment())
        self._allow_trigger(self.roles[topology.TRIGGER_FUNCTION.construct_id])
        # Lambda retries a failed invocation, then sends the event with the error to the queue (this
        # grants the function's role sqs:SendMessage, GetQueueAttributes and GetQueueUrl on it).
        trigger.configure_async_invoke(
            retry_attempts=topology.TRIGGER_MAX_RETRY_ATTEMPTS,
            max_event_age=TRIGGER_MAX_EVENT_AGE,
            on_failure=destinations.SqsDestination(dead_letter_queue),
        )

        # EventBridge retries only a failed hand-over to Lambda (throttling, an outage); the queue
        # policy that lets each rule send to the queue and the function's permission for each rule to
        # invoke it come with the target.
        def to_trigger() -> targets.LambdaFunction:
            return targets.LambdaFunction(
                trigger,
                dead_letter_queue=dead_letter_queue,
                retry_attempts=topology.TRIGGER_MAX_RETRY_ATTEMPTS,
                max_event_age=TRIGGER_MAX_EVENT_AGE,
            )

        rule = events.Rule(
            self,
            topology.TRIGGER_RULE_CONSTRUCT_ID,
            event_bus=self.event_bus,
            description="Starts an execution for each Recommendation Approved event",
            # The topology's pattern (a test holds the synthesized one to it, key for key).
            event_pattern=events.EventPattern(detail_type=topology.trigger_event_pattern()["detail-type"]),
            targets=[to_trigger()],
        )
        run_ended = topology.run_ended_event_pattern(sm.state_machine_arn for sm in self.state_machines.values())
        run_ended_rule = events.Rule(
            self,
            topology.RUN_ENDED_RULE_CONSTRUCT_ID,
            # No bus given: the account's default bus, where Step Functions puts its events.
            description="Reconciles executions whose state machine run was stopped, timed out or failed",
            event_pattern=events.EventPattern(
                source=run_ended["source"], detail_type=run_ended["detail-type"], detail=run_ended["detail"]
            ),
            targets=[to_trigger()],
        )
        # The sweeper: a Scheduled Event to the same function, which finishes stranded executions.
        sweep_rule = events.Rule(
            self,
            topology.SWEEP_RULE_CONSTRUCT_ID,
            description="Finishes executions left unfinished after their state machine run ended",
            schedule=events.Schedule.rate(Duration.minutes(topology.SWEEP_INTERVAL_MINUTES)),
            targets=[to_trigger()],
        )
        return dead_letter_queue, rule, run_ended_rule, sweep_rule
