"""The IAM actions the engine's roles hold besides what each executor declares, and the helpers that
grant them: least privilege is read here, and each construct grants from these sets."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from aws_cdk import ArnFormat, Aws, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_stepfunctions as sfn
from constructs import IConstruct

from cost_engine.executors.base import Permission

# Exactly the DynamoDB calls of cost_engine.stores: nothing deletes (the audit log is append-only) and
# nothing scans (listings are served by indexes).
TABLE_READ_ACTIONS = ("dynamodb:GetItem", "dynamodb:Query")
TABLE_WRITE_ACTIONS = ("dynamodb:PutItem", "dynamodb:UpdateItem")
# Leaving the queue for an acting slot deletes the entry: on the limits table only.
LIMITS_DELETE_ACTIONS = ("dynamodb:DeleteItem",)
# A state machine task writes its audit events together (cost_engine.stores.audit): on the audit table only.
AUDIT_BATCH_ACTIONS = ("dynamodb:BatchWriteItem",)
# A listing reads its page's records by the keys its (keys-only) index returns: on the executions table.
LISTING_READ_ACTIONS = ("dynamodb:BatchGetItem",)
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
# Waking a run that waits for an acting slot (cost_engine.limits): every executor function.
SLOT_HAND_OVER_ACTIONS = ("states:SendTaskSuccess",)
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
        *AUDIT_BATCH_ACTIONS,
        *SLOT_HAND_OVER_ACTIONS,
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
# What EventBridge Scheduler may do on the schedules schedule_instance creates.
SCHEDULER_ACTIONS = ("ec2:StopInstances", "ec2:StartInstances")
# Reading what Cost Explorer knows of a resource's or a service's daily cost (savings measurements).
# Cost Explorer has no resource-level permissions: these are granted on "*".
COST_READ_ACTIONS = ("ce:GetCostAndUsage", "ce:GetCostAndUsageWithResources")
# Making the one-time schedules of an execution's savings measurements (they delete themselves).
MEASURE_SCHEDULE_ACTIONS = ("scheduler:CreateSchedule",)


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


def allow(role: iam.Role, actions: Sequence[str], resources: Sequence[str]) -> None:
    role.add_to_policy(iam.PolicyStatement(actions=list(actions), resources=list(resources)))


def execution_arns(scope: IConstruct, machines: Iterable[sfn.StateMachine]) -> list[str]:
    """The runs of the engine's state machines (an execution ARN names its state machine)."""
    return [
        Stack.of(scope).format_arn(
            service="states",
            resource="execution",
            resource_name=f"{machine.state_machine_name}:*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        for machine in machines
    ]
