"""What starts and settles executions without an API call: events and a schedule, to the trigger function."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Aws, Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from cost_engine import topology
from cost_engine.service.measurements import MEASURE_SCHEDULE_PREFIX, SCHEDULE_GROUP
from infra.constructs.data import Data
from infra.constructs.functions import EngineFunctions
from infra.permissions import (
    COST_READ_ACTIONS,
    MEASURE_SCHEDULE_ACTIONS,
    SWEEPER_EXECUTION_ACTIONS,
    SWEEPER_TASK_ACTIONS,
    TABLE_READ_ACTIONS,
    TABLE_WRITE_ACTIONS,
    TRIGGER_STATES_ACTIONS,
    allow,
    execution_arns,
)

# How long a Recommendation Approved event may wait for the trigger, on either hop (EventBridge to
# Lambda, Lambda's own retries): 6 hours is Lambda's maximum. After that it goes to the dead-letter queue.
TRIGGER_MAX_EVENT_AGE = Duration.hours(6)
# Long enough to notice and redrive an event after a weekend; SQS's maximum.
TRIGGER_DLQ_RETENTION = Duration.days(14)


class Trigger(Construct):
    """The upstream engine's Recommendation Approved events, on the engine's bus, start executions;
    Step Functions' events of the engine's runs that ended early, on the default bus, reconcile them;
    a schedule sweeps for executions left unfinished all the same (cost_engine.sweeper).

    An event that cannot be handled ends in one dead-letter queue, whichever hop gave up: EventBridge
    delivering it to the function, or the function failing it after its retries.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        functions: EngineFunctions,
        data: Data,
        event_bus: events.IEventBus,
        state_machines: Sequence[sfn.StateMachine],
        scheduler_role: iam.Role,
    ) -> None:
        super().__init__(scope, construct_id)
        self.dead_letter_queue = sqs.Queue(
            self,
            topology.TRIGGER_DLQ_CONSTRUCT_ID,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=TRIGGER_DLQ_RETENTION,
        )
        trigger = functions.add(self, topology.TRIGGER_FUNCTION)
        self.function, self.role = trigger.function, trigger.role
        self._allow_trigger(data, state_machines)
        self._allow_measurements(scheduler_role)
        # Lambda retries a failed invocation, then sends the event with the error to the queue (this
        # grants the function's role sqs:SendMessage, GetQueueAttributes and GetQueueUrl on it).
        self.function.configure_async_invoke(
            retry_attempts=topology.TRIGGER_MAX_RETRY_ATTEMPTS,
            max_event_age=TRIGGER_MAX_EVENT_AGE,
            on_failure=destinations.SqsDestination(self.dead_letter_queue),
        )
        self.rule = events.Rule(
            self,
            topology.TRIGGER_RULE_CONSTRUCT_ID,
            event_bus=event_bus,
            description="Starts an execution for each Recommendation Approved event",
            # The topology's pattern (a test holds the synthesized one to it, key for key).
            event_pattern=events.EventPattern(detail_type=topology.trigger_event_pattern()["detail-type"]),
            targets=[self._to_trigger()],
        )
        run_ended = topology.run_ended_event_pattern(sm.state_machine_arn for sm in state_machines)
        self.run_ended_rule = events.Rule(
            self,
            topology.RUN_ENDED_RULE_CONSTRUCT_ID,
            # No bus given: the account's default bus, where Step Functions puts its events.
            description="Reconciles executions whose state machine run was stopped, timed out or failed",
            event_pattern=events.EventPattern(
                source=run_ended["source"], detail_type=run_ended["detail-type"], detail=run_ended["detail"]
            ),
            targets=[self._to_trigger()],
        )
        # A completed execution (not a dry run): the trigger schedules its savings measurements.
        completed = topology.completed_event_pattern()
        self.completed_rule = events.Rule(
            self,
            topology.COMPLETED_RULE_CONSTRUCT_ID,
            event_bus=event_bus,
            description="Schedules the savings measurements of each completed execution",
            event_pattern=events.EventPattern(
                source=completed["source"], detail_type=completed["detail-type"], detail=completed["detail"]
            ),
            targets=[self._to_trigger()],
        )
        # The sweeper: a Scheduled Event to the same function, which finishes stranded executions.
        self.sweep_rule = events.Rule(
            self,
            topology.SWEEP_RULE_CONSTRUCT_ID,
            description="Finishes executions left unfinished after their state machine run ended",
            schedule=events.Schedule.rate(Duration.minutes(topology.SWEEP_INTERVAL_MINUTES)),
            targets=[self._to_trigger()],
        )

    def _to_trigger(self) -> targets.LambdaFunction:
        """A rule's target: EventBridge retries only a failed hand-over to Lambda (throttling, an outage);
        the queue policy that lets each rule send to the queue and the function's permission for each
        rule to invoke it come with the target."""
        return targets.LambdaFunction(
            self.function,
            dead_letter_queue=self.dead_letter_queue,
            retry_attempts=topology.TRIGGER_MAX_RETRY_ATTEMPTS,
            max_event_age=TRIGGER_MAX_EVENT_AGE,
        )

    def _allow_measurements(self, scheduler_role: iam.Role) -> None:
        """The trigger makes each completed execution's measurement schedules (named for the engine, in
        the default group), passing them the Scheduler role, which may invoke the trigger and nothing
        more of Lambda; when one is due, the trigger reads the costs from Cost Explorer."""
        schedules = (
            f"arn:{Aws.PARTITION}:scheduler:{Aws.REGION}:{Aws.ACCOUNT_ID}:schedule/"
            f"{SCHEDULE_GROUP}/{MEASURE_SCHEDULE_PREFIX}*"
        )
        allow(self.role, MEASURE_SCHEDULE_ACTIONS, [schedules])
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["iam:PassRole"],
                resources=[scheduler_role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}},
            )
        )
        allow(self.role, COST_READ_ACTIONS, ["*"])
        scheduler_role.add_to_policy(
            iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=[self.function.function_arn])
        )

    def _allow_trigger(self, data: Data, state_machines: Sequence[sfn.StateMachine]) -> None:
        # Registering a recommendation (a conditional PutItem, then GetItem), starting its execution once
        # (GetItem by the id its idempotency key gives, a conditional PutItem, UpdateItem), reconciling an
        # execution whose run ended (GetItem, conditional UpdateItem) and auditing both (PutItem): every
        # call names its key. The sweeper reads one index: the unfinished executions' keys.
        allow(self.role, TABLE_READ_ACTIONS + TABLE_WRITE_ACTIONS, data.table_arns(topology.TABLES, with_indexes=False))
        executions_table = data.table(topology.EXECUTIONS_TABLE).table_arn
        allow(self.role, ["dynamodb:Query"], [f"{executions_table}/index/{topology.IndexName.UNFINISHED}"])
        allow(self.role, SWEEPER_TASK_ACTIONS + TRIGGER_STATES_ACTIONS, [sm.state_machine_arn for sm in state_machines])
        # The sweeper asks whether an execution's run has ended: its own state machines' runs only.
        allow(self.role, SWEEPER_EXECUTION_ACTIONS, execution_arns(self, state_machines))
