"""What the engine is made of, declared once.

The CDK stack (`infra/`) and the local runtime (`local_runtime/`) both build from these declarations,
so the tables, functions and state machines on AWS and on the laptop cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cost_engine.models import RecommendationType

_HERE = Path(__file__).resolve()
# In the repository this file is layers/shared/python/cost_engine/topology.py. In a Lambda layer it
# sits at /opt/python/cost_engine/, where the project paths below are never used.
PROJECT_ROOT = _HERE.parents[4] if len(_HERE.parents) > 4 else _HERE.parent
STATEMACHINES_DIR = PROJECT_ROOT / "statemachines"
FUNCTIONS_DIR = PROJECT_ROOT / "functions"
SHARED_LAYER_DIR = PROJECT_ROOT / "layers" / "shared"


class EnvVar:
    """Environment variable names. The same thing has the same name in every function."""

    EXECUTIONS_TABLE = "EXECUTIONS_TABLE_NAME"
    AUDIT_TABLE = "AUDIT_TABLE_NAME"
    RECOMMENDATIONS_TABLE = "RECOMMENDATIONS_TABLE_NAME"
    STATE_MACHINE_ARNS = "STATE_MACHINE_ARNS"
    APPROVAL_TOPIC_ARN = "APPROVAL_TOPIC_ARN"
    APPROVAL_TIMEOUT_SECONDS = "APPROVAL_TIMEOUT_SECONDS"
    MAX_POLL_ATTEMPTS = "MAX_POLL_ATTEMPTS"
    API_BASE_URL = "API_BASE_URL"
    # The role EventBridge Scheduler assumes to stop and start instances (schedule_instance).
    SCHEDULER_ROLE_ARN = "SCHEDULER_ROLE_ARN"
    # The most one Reserved Instances purchase may cost, in USD (purchase_reserved_instances).
    RI_PURCHASE_LIMIT_USD = "RI_PURCHASE_LIMIT_USD"
    # The most RI purchases may commit per account and period, all executions together, and the
    # period (day, week, month, quarter or year; see cost_engine.purchase_limits).
    RI_PURCHASE_LIMIT_PER_PERIOD_USD = "RI_PURCHASE_LIMIT_PER_PERIOD_USD"
    RI_PURCHASE_LIMIT_PERIOD = "RI_PURCHASE_LIMIT_PERIOD"
    # The Secrets Manager secret that signs approval links (the local runtime keeps its own there).
    APPROVAL_SECRET_ARN = "APPROVAL_SECRET_ARN"
    # Which executions may be approved automatically, per customer and per type (JSON; see
    # cost_engine.approval_policy). Unset: the built-in defaults.
    APPROVAL_POLICY = "APPROVAL_POLICY"
    # Who the approval topic mails, comma-separated: shown in an execution's pending approval.
    APPROVER_EMAILS = "APPROVER_EMAILS"
    # The EventBridge bus the engine publishes its own events to (Execution Status Changed).
    EVENT_BUS_NAME = "EVENT_BUS_NAME"
    # The safety limits (cost_engine.limits): executions changing resources at once across the
    # deployment, the quiet time of a resource after an execution changed it, and the longest an
    # acting phase may run before it is rolled back.
    MAX_CONCURRENT_ACTING = "MAX_CONCURRENT_ACTING"
    RESOURCE_COOLDOWN_SECONDS = "RESOURCE_COOLDOWN_SECONDS"
    MAX_ACTING_SECONDS = "MAX_ACTING_SECONDS"
    # How long an approved execution waits before asking again for an acting slot.
    # Per customer, what the engine may change: allow and deny lists by type, account and resource
    # tag (JSON; see cost_engine.business_rules.BusinessRulesConfig). Unset: no rules.
    BUSINESS_RULES = "BUSINESS_RULES"
    # Recommendations older than this many days are not acted on.
    MAX_RECOMMENDATION_AGE_DAYS = "MAX_RECOMMENDATION_AGE_DAYS"
    # After how many days a completed execution's saving is measured from the bill, comma-separated
    # (each a one-time schedule; cost_engine.savings).
    SAVINGS_MEASURE_DAYS = "SAVINGS_MEASURE_DAYS"
    # How long a change that can hurt a workload is watched before it is complete, unless its
    # recommendation says (cost_engine.guardrails); 0: no watch unless a recommendation asks for one.
    GUARDRAIL_SETTLE_MINUTES = "GUARDRAIL_SETTLE_MINUTES"
    # The one recommendation type an executor function runs steps for: it refuses any other, as its
    # role allows only that type's AWS calls.
    RECOMMENDATION_TYPE = "RECOMMENDATION_TYPE"
    # The executor function's own IAM role, path included: what the pre-checks ask the IAM policy
    # simulator about (the assumed-role ARN the function sees at run time has no path).
    OWN_ROLE_ARN = "OWN_ROLE_ARN"
    # Who may do what through the API: roles per customer for each principal (JSON; see
    # cost_engine.access.AccessPolicy). Unset: nobody may do anything but open approval links.
    ACCESS_POLICY = "ACCESS_POLICY"


@dataclass(frozen=True)
class Index:
    name: str
    partition_key: str
    sort_key: str
    # What an index item holds besides its keys and the table's: nothing (KEYS_ONLY) or every attribute
    # (ALL). Every write that changes an attribute the index holds is written into the index too, so
    # an index holds only what its queries read: keys, by which the store then reads the records.
    projects_all: bool = False

    @property
    def projection_type(self) -> str:
        """The index's ProjectionType, as CloudFormation and CreateTable name it."""
        return "ALL" if self.projects_all else "KEYS_ONLY"


@dataclass(frozen=True)
class Table:
    construct_id: str
    env_var: str
    local_name: str
    partition_key: str
    sort_key: str | None = None
    indexes: tuple[Index, ...] = ()

    @property
    def key_attributes(self) -> tuple[str, ...]:
        return (self.partition_key, self.sort_key) if self.sort_key else (self.partition_key,)

    def index_attributes(self, index: Index) -> frozenset[str] | None:
        """The attributes an item of `index` holds (None: all of the table item's), for whoever sizes
        what a write costs in each index (benchmarks/)."""
        if index.projects_all:
            return None
        return frozenset({*self.key_attributes, index.partition_key, index.sort_key})


class IndexName:
    CUSTOMER_CREATED = "by-customer"
    CUSTOMER_STATUS_CREATED = "by-customer-status"
    # Sparse: only executions that asked for approval carry an `approval_id` (an approval link's id).
    APPROVAL = "by-approval"
    # Sparse: only executions that are not final carry `unfinished`; the sweeper reads it
    # (cost_engine.sweeper).
    UNFINISHED = "by-unfinished"


EXECUTIONS_TABLE = Table(
    construct_id="ExecutionsTable",
    env_var=EnvVar.EXECUTIONS_TABLE,
    local_name="cost-engine-executions",
    partition_key="execution_id",
    # Every index holds keys only: a record is rewritten some twenty times in an execution, and an index
    # holding all of it was rewritten with it each time. The listings read a page's records by their
    # keys (BatchGetItem), the approval link and the sweeper read the one record they act on.
    indexes=(
        # "Executions of a customer, newest first" and "… with a given status, newest first":
        # `customer_status` is written as "<customer_id>#<status>" with every status change.
        Index(IndexName.CUSTOMER_CREATED, "customer_id", "created_at"),
        Index(IndexName.CUSTOMER_STATUS_CREATED, "customer_status", "created_at"),
        Index(IndexName.APPROVAL, "approval_id", "created_at"),
        Index(IndexName.UNFINISHED, "unfinished", "created_at"),
    ),
)
AUDIT_TABLE = Table(
    construct_id="AuditTable",
    env_var=EnvVar.AUDIT_TABLE,
    local_name="cost-engine-audit",
    partition_key="execution_id",
    sort_key="event_key",
)
RECOMMENDATIONS_TABLE = Table(
    construct_id="RecommendationsTable",
    env_var=EnvVar.RECOMMENDATIONS_TABLE,
    local_name="cost-engine-recommendations",
    partition_key="recommendation_id",
)
# The safety limits' shared state: the acting slots ("slots"), the queue waiting for one ("queue",
# keyed by time so it reads in order), one lock per resource ("resource#<account>#<region>#<id>"), and
# what RI purchases commit per account and period ("ri-purchases#<account>" / "<period>").
LIMITS_TABLE = Table(
    construct_id="LimitsTable",
    env_var="LIMITS_TABLE_NAME",
    local_name="cost-engine-limits",
    partition_key="scope",
    sort_key="key",
)
TABLES: tuple[Table, ...] = (EXECUTIONS_TABLE, AUDIT_TABLE, RECOMMENDATIONS_TABLE, LIMITS_TABLE)


@dataclass(frozen=True)
class Function:
    construct_id: str
    local_name: str
    code_dir: str  # relative to FUNCTIONS_DIR
    handler: str
    timeout_seconds: int
    memory_mb: int = 512
    description: str = ""
    # An executor function's type: the one type it runs steps for (its environment names it).
    recommendation_type: RecommendationType | None = None


API_FUNCTION = Function(
    construct_id="ApiFunction",
    local_name="cost-engine-api",
    code_dir="api",
    handler="handler.lambda_handler",
    timeout_seconds=29,
    description="REST API of the Cost Execution Engine",
)


def _camel(value: str) -> str:
    return "".join(part.capitalize() for part in value.split("_"))


def executor_function(recommendation_type: RecommendationType) -> Function:
    """One function per type, so each gets exactly the permissions its executor declares."""
    return Function(
        construct_id=f"{_camel(recommendation_type.value)}Executor",
        local_name=f"cost-engine-{recommendation_type.value.replace('_', '-')}-executor",
        code_dir="executor",
        handler="handler.lambda_handler",
        timeout_seconds=120,
        description=f"State machine steps of {recommendation_type.value}",
        recommendation_type=recommendation_type,
    )


@dataclass(frozen=True)
class StateMachine:
    recommendation_type: RecommendationType
    construct_id: str
    local_name: str
    executor: Function
    # Placeholders of the definition, each mapped to what fills it (see `substitutions`).
    placeholders: tuple[str, ...] = field(default=("ExecutorFunctionArn",))

    def substitutions(self, executor_function_arn: str) -> dict[str, str]:
        return {"ExecutorFunctionArn": executor_function_arn}


def state_machine(recommendation_type: RecommendationType) -> StateMachine:
    return StateMachine(
        recommendation_type=recommendation_type,
        construct_id=f"{_camel(recommendation_type.value)}StateMachine",
        local_name=f"cost-engine-{recommendation_type.value.replace('_', '-')}",
        executor=executor_function(recommendation_type),
    )


def implemented_types() -> tuple[RecommendationType, ...]:
    """Every type, in declaration order: each has a registered executor (tests/infrastructure/
    test_registry.py holds it to that), and the topology stays below the executors it names."""
    return tuple(RecommendationType)


def state_machines() -> tuple[StateMachine, ...]:
    return tuple(state_machine(t) for t in implemented_types())


# Starts executions from the upstream engine's Recommendation Approved events (docs/events.md),
# reconciles executions whose state machine run ended without the engine's steps ending them, and
# sweeps, on a schedule, for executions that were left unfinished all the same (cost_engine.sweeper).
TRIGGER_FUNCTION = Function(
    construct_id="TriggerFunction",
    local_name="cost-engine-trigger",
    code_dir="trigger",
    handler="handler.lambda_handler",
    timeout_seconds=60,
    description=(
        "Executes recommendations from Recommendation Approved events; reconciles stopped state machine runs; "
        "sweeps for stranded executions"
    ),
)


def functions() -> tuple[Function, ...]:
    return (API_FUNCTION, TRIGGER_FUNCTION, *(sm.executor for sm in state_machines()))


APPROVAL_TOPIC_CONSTRUCT_ID = "ApprovalTopic"
APPROVAL_TOPIC_LOCAL_NAME = "cost-engine-approvals"
APPROVAL_SECRET_CONSTRUCT_ID = "ApprovalLinkSecret"
APPROVAL_SECRET_LOCAL_NAME = "cost-engine/approval-link-key"
# The public (signature-checked, not IAM-authorized) routes of the approval pages.
APPROVAL_PAGE_PATH = "/approvals"
# The API's stage: part of every URL, so the executors can build approval links without a
# reference to the stage resource (which would make a dependency cycle in the template).
API_STAGE_NAME = "prod"
# Long enough for a 24-hour approval wait plus the acting phase; the acting phase has its own limit.
STATE_MACHINE_TIMEOUT_SECONDS = 25 * 3600
# How long one wait for an acting slot lasts before the run asks again (and renews its place): a
# wake-up that was lost costs at most this, and the periodic sweep hands slots over meanwhile.
SLOT_WAIT_TIMEOUT_SECONDS = 3600

EVENT_BUS_CONSTRUCT_ID = "EventBus"
EVENT_BUS_LOCAL_NAME = "cost-engine-events"
# The source and detail-type of the events the engine publishes (docs/events.md).
EVENT_SOURCE = "cost-execution-engine"
STATUS_CHANGED_DETAIL_TYPE = "Execution Status Changed"

# The upstream recommendation engine's event: detail = a recommendation (docs/events.md). It is put on
# the engine's bus; a rule there sends it to TRIGGER_FUNCTION (an asynchronous invocation).
RECOMMENDATION_APPROVED_DETAIL_TYPE = "Recommendation Approved"
TRIGGER_RULE_CONSTRUCT_ID = "RecommendationApprovedRule"
TRIGGER_RULE_LOCAL_NAME = "cost-engine-recommendation-approved"
# Where an event ends when it cannot be handled: a malformed event after the trigger refuses it, or
# any event once its retries are spent (the function's on-failure destination and the rule
# target's dead-letter queue both point here).
TRIGGER_DLQ_CONSTRUCT_ID = "TriggerDeadLetterQueue"
TRIGGER_DLQ_LOCAL_NAME = "cost-engine-trigger-dlq"
# Lambda's asynchronous retries of a failed trigger invocation (its maximum, and its default).
TRIGGER_MAX_RETRY_ATTEMPTS = 2


def trigger_event_pattern() -> dict[str, list[str]]:
    """The rule's pattern: any source may announce an approved recommendation; the engine's own
    events have another detail-type, so they never match."""
    return {"detail-type": [RECOMMENDATION_APPROVED_DETAIL_TYPE]}


# Step Functions' own events, which it puts on the account's default bus: a run of one of the engine's
# state machines that ended without the engine's steps ending the execution (someone stopped it, it
# timed out, or it failed where no Catch applies). A rule there sends them to TRIGGER_FUNCTION, which
# reconciles the execution (cost_engine.reconcile), with the same retries and dead-letter queue.
STEP_FUNCTIONS_SOURCE = "aws.states"
STEP_FUNCTIONS_STATUS_CHANGE_DETAIL_TYPE = "Step Functions Execution Status Change"
RUN_ENDED_STATUSES = ("ABORTED", "TIMED_OUT", "FAILED")
RUN_ENDED_RULE_CONSTRUCT_ID = "StateMachineRunEndedRule"
RUN_ENDED_RULE_LOCAL_NAME = "cost-engine-state-machine-run-ended"


def run_ended_event_pattern(state_machine_arns: Iterable[str]) -> dict[str, Any]:
    """The rule's pattern: runs of the engine's own state machines only (the default bus carries
    every state machine of the account), and only the endings the engine's steps did not write."""
    return {
        "source": [STEP_FUNCTIONS_SOURCE],
        "detail-type": [STEP_FUNCTIONS_STATUS_CHANGE_DETAIL_TYPE],
        "detail": {"status": list(RUN_ENDED_STATUSES), "stateMachineArn": list(state_machine_arns)},
    }


# The engine's own `Execution Status Changed` event of a completed execution (not a dry run): a rule on
# the engine's bus sends it to TRIGGER_FUNCTION, which schedules the execution's savings measurements
# (cost_engine.service.measurements); each schedule invokes TRIGGER_FUNCTION when it is due.
COMPLETED_RULE_CONSTRUCT_ID = "ExecutionCompletedRule"
COMPLETED_RULE_LOCAL_NAME = "cost-engine-execution-completed"


def completed_event_pattern() -> dict[str, Any]:
    return {
        "source": [EVENT_SOURCE],
        "detail-type": [STATUS_CHANGED_DETAIL_TYPE],
        "detail": {"new_status": ["completed"], "dry_run": [False]},
    }


# The sweeper (cost_engine.sweeper): a schedule on the default bus invokes TRIGGER_FUNCTION with a
# Scheduled Event; it finishes executions whose run ended while they were left unfinished (the run-ended
# event's handling failed, or the store was down when the run recorded its end).
SWEEP_RULE_CONSTRUCT_ID = "ExecutionSweepRule"
SWEEP_RULE_LOCAL_NAME = "cost-engine-execution-sweep"
SWEEP_INTERVAL_MINUTES = 5
SCHEDULED_EVENT_SOURCE = "aws.events"
SCHEDULED_EVENT_DETAIL_TYPE = "Scheduled Event"
