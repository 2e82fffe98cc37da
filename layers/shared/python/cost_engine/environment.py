"""Each function's environment, built in one place for the CDK stack and the local runtime alike.

The stack gives `function_environment` its resources' names and ARNs as CDK tokens and the deployment's
context; the local runtime gives the emulated resources' and its own options. Both read the function's
variables from here, so a variable added here reaches both (tests/infrastructure holds them to the same
names), and the functions read them back with `cost_engine.settings.load_settings`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cost_engine import topology
from cost_engine.access import AccessPolicy
from cost_engine.approval_policy import ApprovalPolicy
from cost_engine.business_rules import BusinessRulesConfig
from cost_engine.models import RecommendationType
from cost_engine.periods import Period
from cost_engine.settings import (
    DEFAULT_APPROVAL_TIMEOUT_SECONDS,
    DEFAULT_GUARDRAIL_SETTLE_MINUTES,
    DEFAULT_MAX_ACTING_SECONDS,
    DEFAULT_MAX_CONCURRENT_ACTING,
    DEFAULT_MAX_RECOMMENDATION_AGE_DAYS,
    DEFAULT_RESOURCE_COOLDOWN_SECONDS,
    DEFAULT_RI_PURCHASE_LIMIT_PER_PERIOD_USD,
    DEFAULT_RI_PURCHASE_LIMIT_USD,
    DEFAULT_SAVINGS_MEASURE_DAYS,
)
from cost_engine.topology import LIMITS_TABLE, EnvVar

# Powertools' own variables: what its logs and metrics are filed under, the same everywhere.
POWERTOOLS_SERVICE = {
    "POWERTOOLS_SERVICE_NAME": "cost-execution-engine",
    "POWERTOOLS_METRICS_NAMESPACE": "CostExecutionEngine",
}
POWERTOOLS_LOG_LEVEL = "POWERTOOLS_LOG_LEVEL"
POWERTOOLS_TRACE_DISABLED = "POWERTOOLS_TRACE_DISABLED"
# Every variable a function's environment may hold.
ENGINE_VARIABLES = (
    *(value for name, value in vars(EnvVar).items() if name.isupper()),
    LIMITS_TABLE.env_var,
    *POWERTOOLS_SERVICE,
    POWERTOOLS_LOG_LEVEL,
    POWERTOOLS_TRACE_DISABLED,
)


@dataclass(frozen=True)
class Deployment:
    """What one deployment tells its functions. The names and ARNs are CDK tokens in the stack (strings
    that CloudFormation fills in) and the emulated resources' in the local runtime; the limits and
    policies are the deployment's choices, the functions' defaults (cost_engine.settings) unless set."""

    table_names: Mapping[topology.Table, str]
    approval_topic_arn: str
    approval_secret_arn: str
    event_bus_name: str
    # The role EventBridge Scheduler assumes on the schedules schedule_instance creates.
    scheduler_role_arn: str
    # Each type's state machine ARN, as JSON {type: ARN} (in the stack, Stack.to_json_string's token).
    state_machine_arns: str
    # Where approval links point.
    api_base_url: str
    approval_timeout_seconds: int = DEFAULT_APPROVAL_TIMEOUT_SECONDS
    max_concurrent_acting: int = DEFAULT_MAX_CONCURRENT_ACTING
    resource_cooldown_seconds: int = DEFAULT_RESOURCE_COOLDOWN_SECONDS
    max_acting_seconds: int = DEFAULT_MAX_ACTING_SECONDS
    max_recommendation_age_days: int = DEFAULT_MAX_RECOMMENDATION_AGE_DAYS
    savings_measure_days: tuple[int, ...] = DEFAULT_SAVINGS_MEASURE_DAYS
    guardrail_settle_minutes: int = DEFAULT_GUARDRAIL_SETTLE_MINUTES
    ri_purchase_limit_usd: float = DEFAULT_RI_PURCHASE_LIMIT_USD
    ri_purchase_limit_per_period_usd: float = DEFAULT_RI_PURCHASE_LIMIT_PER_PERIOD_USD
    ri_purchase_limit_period: Period = Period.MONTH
    # Unset (empty or None): the function is not told, and keeps the defaults of the running code.
    approver_emails: tuple[str, ...] = ()
    approval_policy: ApprovalPolicy | None = None
    business_rules: BusinessRulesConfig | None = None
    access_policy: AccessPolicy | None = None
    # None: each type checks AWS as often as its executor's `polling` allows; a number holds every
    # type to that many checks per wait (the local runtime's waits take no time, so it counts its own).
    max_poll_attempts: int | None = None
    log_level: str = "INFO"
    tracing: bool = True


def function_environment(
    function: topology.Function, deployment: Deployment, *, role_arn: str | None = None
) -> dict[str, str]:
    """The environment of `function` (one of `topology.functions()`) in `deployment`. `role_arn` is the
    function's own role, where it has one of its own (on AWS): an executor's pre-checks ask the IAM
    policy simulator about it."""
    environment = _every_function(deployment)
    if function.recommendation_type is not None:
        return {**environment, **_executor(function.recommendation_type, deployment, role_arn)}
    match function:
        case topology.API_FUNCTION:
            return {**environment, **_execution_start(deployment), **_api(deployment)}
        case topology.TRIGGER_FUNCTION:
            return {**environment, **_execution_start(deployment)}
    raise ValueError(f"{function.construct_id} is not a function of the topology")


def _every_function(deployment: Deployment) -> dict[str, str]:
    """Every function may read and write records, publish status events, sign or check approval links
    and apply the limits, so each is told the tables, the bus, the key and the limits."""
    environment = {
        **{table.env_var: deployment.table_names[table] for table in topology.TABLES},
        EnvVar.APPROVAL_TOPIC_ARN: deployment.approval_topic_arn,
        EnvVar.SCHEDULER_ROLE_ARN: deployment.scheduler_role_arn,
        EnvVar.RI_PURCHASE_LIMIT_USD: str(deployment.ri_purchase_limit_usd),
        EnvVar.RI_PURCHASE_LIMIT_PER_PERIOD_USD: str(deployment.ri_purchase_limit_per_period_usd),
        EnvVar.RI_PURCHASE_LIMIT_PERIOD: deployment.ri_purchase_limit_period.value,
        EnvVar.APPROVAL_TIMEOUT_SECONDS: str(deployment.approval_timeout_seconds),
        EnvVar.APPROVAL_SECRET_ARN: deployment.approval_secret_arn,
        EnvVar.EVENT_BUS_NAME: deployment.event_bus_name,
        EnvVar.MAX_CONCURRENT_ACTING: str(deployment.max_concurrent_acting),
        EnvVar.RESOURCE_COOLDOWN_SECONDS: str(deployment.resource_cooldown_seconds),
        EnvVar.MAX_ACTING_SECONDS: str(deployment.max_acting_seconds),
        EnvVar.MAX_RECOMMENDATION_AGE_DAYS: str(deployment.max_recommendation_age_days),
        EnvVar.SAVINGS_MEASURE_DAYS: ",".join(str(days) for days in deployment.savings_measure_days),
        EnvVar.GUARDRAIL_SETTLE_MINUTES: str(deployment.guardrail_settle_minutes),
        **POWERTOOLS_SERVICE,
        POWERTOOLS_LOG_LEVEL: deployment.log_level,
    }
    if deployment.business_rules is not None:
        # Only what the deployment set; unset means no rules at all.
        environment[EnvVar.BUSINESS_RULES] = deployment.business_rules.model_dump_json(exclude_unset=True)
    if not deployment.tracing:
        environment[POWERTOOLS_TRACE_DISABLED] = "true"
    return environment


def _executor(recommendation_type: RecommendationType, deployment: Deployment, role_arn: str | None) -> dict[str, str]:
    """An executor runs the steps of its own type only, and builds approval requests: the links and
    what the approvers are shown."""
    environment = {
        EnvVar.RECOMMENDATION_TYPE: recommendation_type.value,
        EnvVar.API_BASE_URL: deployment.api_base_url,
        **_approval_policy(deployment),
    }
    if deployment.approver_emails:
        environment[EnvVar.APPROVER_EMAILS] = ",".join(deployment.approver_emails)
    if deployment.max_poll_attempts is not None:
        environment[EnvVar.MAX_POLL_ATTEMPTS] = str(deployment.max_poll_attempts)
    if role_arn is not None:
        environment[EnvVar.OWN_ROLE_ARN] = role_arn
    return environment


def _execution_start(deployment: Deployment) -> dict[str, str]:
    """The API and the trigger start executions: the state machine of each type."""
    return {EnvVar.STATE_MACHINE_ARNS: deployment.state_machine_arns}


def _api(deployment: Deployment) -> dict[str, str]:
    """Who may do what through the API, and the approval policy's self-approval rules (four eyes)."""
    environment = _approval_policy(deployment)
    if deployment.access_policy is not None:
        environment[EnvVar.ACCESS_POLICY] = deployment.access_policy.model_dump_json()
    return environment


def _approval_policy(deployment: Deployment) -> dict[str, str]:
    policy = deployment.approval_policy
    # Only what the deployment set: the rest keeps the defaults of the running code.
    return {EnvVar.APPROVAL_POLICY: policy.model_dump_json(exclude_unset=True)} if policy is not None else {}
