"""Every accepted cdk-nag finding and why it is accepted. No other file suppresses a finding.

Wildcard findings are accepted one resource string at a time (`applies_to`), so a new wildcard that
nobody has justified still fails the synth.
"""

from __future__ import annotations

from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import IConstruct

from cost_engine import topology
from cost_engine.access import routes_of
from cost_engine.executors import executor_class
from cost_engine.role_permissions import role_permissions
from cost_engine.service.measurements import MEASURE_SCHEDULE_PREFIX, SCHEDULE_GROUP
from infra.constructs.api import route_resource
from infra.stack import CostExecutionEngineStack

ANY_RESOURCE = "Resource::*"
TRACING_REASON = "X-Ray PutTraceSegments and PutTelemetryRecords support no resource-level permissions."
APPROVAL_PAGE_REASON = (
    "Approval links are opened from email by approvers without AWS credentials; each request is authorized "
    "by an HMAC-SHA256 signature over an unguessable approval id and its expiry, checked by the function; "
    "GET only reads."
)


def _suppress(
    construct: IConstruct,
    rule: str,
    reason: str,
    applies_to: list[str] | None = None,
    *,
    apply_to_children: bool = True,
) -> None:
    NagSuppressions.add_resource_suppressions(
        construct,
        [NagPackSuppression(id=f"AwsSolutions-{rule}", reason=reason, applies_to=applies_to)],
        apply_to_children=apply_to_children,
    )


def _finding(resource: str) -> str:
    """How cdk-nag spells a declared executor resource once the stack has filled its placeholders."""
    filled = resource.format(partition="<AWS::Partition>", region="<AWS::Region>", account="<AWS::AccountId>")
    return f"Resource::{filled}"


def suppress_accepted_findings(stack: CostExecutionEngineStack) -> None:
    for machine in topology.state_machines():
        executor = executor_class(machine.recommendation_type)
        role = stack.roles[machine.executor.construct_id]
        declared = role_permissions(executor)
        unscoped = sorted({a for p in declared if "*" in p.resources for a in p.actions})
        _suppress(
            role,
            "IAM5",
            f"{TRACING_REASON} The read-only calls {', '.join(unscoped) or 'none'} declared by "
            f"{executor.__name__}.permissions, the common pre-checks and the guardrail watch support no resource-level "
            "permissions either.",
            [ANY_RESOURCE],
        )
        scoped = sorted({_finding(r) for p in executor.permissions for r in p.resources if r != "*" and "*" in r})
        if scoped:
            _suppress(
                role,
                "IAM5",
                f"Declared by {executor.__name__}.permissions: the resources it backs up, changes and restores "
                "are known only at run time. Each ARN is pinned to this account and region (the partition for "
                "public images), and tagging and iam:PassRole carry conditions.",
                scoped,
            )
        _suppress(
            stack.state_machines[machine.recommendation_type],
            "IAM5",
            "Added by CDK for logging and tracing: the CloudWatch Logs vended-delivery calls (CreateLogDelivery "
            f"and friends) take no resource ARN. {TRACING_REASON} Its only other permission is to invoke its "
            "own executor function.",
            [ANY_RESOURCE],
        )

    _suppress(
        stack.roles[topology.API_FUNCTION.construct_id],
        "IAM5",
        f"{TRACING_REASON} Cost Explorer's reads (POST /executions/{{id}}/measure) support no resource-level "
        "permissions either. StopExecution, DescribeExecution and GetExecutionHistory are granted on the "
        "executions of this stack's state machines only, whose names Step Functions generates at run time.",
        [ANY_RESOURCE]
        + [
            "Resource::arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:"
            f"<{stack.logical_id(sm)}.Name>:*"
            for sm in stack.state_machines.values()
        ],
    )
    _suppress(
        stack.roles[topology.TRIGGER_FUNCTION.construct_id],
        "IAM5",
        f"{TRACING_REASON} Cost Explorer's GetCostAndUsage and GetCostAndUsageWithResources (savings "
        "measurements) support no resource-level permissions either. Its other permissions name their "
        "resources: this stack's tables, state machines (StartExecution and SendTaskSuccess) and trigger "
        "dead-letter queue; the sweeper's DescribeExecution is granted on the executions of this stack's state "
        "machines only, whose names Step Functions generates at run time; CreateSchedule on the engine's "
        "measurement schedules only (cost-engine-measure-<execution>-<days>d, one per execution and window).",
        [
            ANY_RESOURCE,
            f"Resource::arn:<AWS::Partition>:scheduler:<AWS::Region>:<AWS::AccountId>:schedule/{SCHEDULE_GROUP}/{MEASURE_SCHEDULE_PREFIX}*",
        ]
        + [
            "Resource::arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:"
            f"<{stack.logical_id(sm)}.Name>:*"
            for sm in stack.state_machines.values()
        ],
    )
    # On the queue itself, not on its queue policy.
    _suppress(
        stack.trigger.dead_letter_queue,
        "SQS3",
        "This queue is itself the dead-letter queue: of the targets of the Recommendation Approved and state "
        "machine run ended rules, and of the trigger function's failed asynchronous invocations. What lands here "
        "is kept 14 days to be inspected and redriven; a queue behind it would only move the same messages one "
        "step further.",
        apply_to_children=False,
    )
    for api_role, policy in stack.api.role_policies.items():
        api = f"<{stack.logical_id(stack.api.rest_api)}>"
        _suppress(
            policy,
            "IAM5",
            f"Invokes exactly the API routes of the {api_role.value} role, on this API's stage; a wildcard stands for "
            "the id in a route's path, which is not known in advance (the engine then checks the customer).",
            [
                f"Resource::arn:<AWS::Partition>:execute-api:<AWS::Region>:<AWS::AccountId>:{api}/"
                f"{topology.API_STAGE_NAME}/{method}{route_resource(path)}"
                for method, path in routes_of(api_role)
                if "*" in route_resource(path)
            ],
        )
    _suppress(
        stack.api.gateway_logging_role,
        "IAM5",
        "API Gateway's logging role is a regional account setting shared by every REST API of the account, "
        "which creates its own execution log groups (API-Gateway-Execution-Logs_<api>/<stage>); it is limited "
        "to CloudWatch Logs of this account and region.",
        ["Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:*"],
    )
    _suppress(
        stack.events.scheduler_role,
        "IAM5",
        "EventBridge Scheduler stops and starts whichever instances schedule_instance puts on a schedule, known "
        "only at run time; the role can do nothing else, on instances of this account and region only.",
        ["Resource::arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:instance/*"],
    )
    # On each method itself, not on its children (the Lambda permissions of its integration).
    approval_page_paths = {method.node.path for method in stack.api.approval_page_methods}
    for method in stack.api.rest_api.methods:
        if method.node.path in approval_page_paths:
            _suppress(method, "APIG4", APPROVAL_PAGE_REASON, apply_to_children=False)
            _suppress(method, "COG4", APPROVAL_PAGE_REASON, apply_to_children=False)
        else:
            _suppress(
                method,
                "COG4",
                "Callers are AWS principals (the CLI, EventBridge targets, other services and people with IAM "
                "credentials), so this method uses AWS_IAM (SigV4) authorization instead of a Cognito user pool.",
                apply_to_children=False,
            )
    _suppress(
        stack.api.rest_api.deployment_stage,
        "APIG3",
        "Every method but the approval pages requires a SigV4 signature from an IAM principal. The approval pages "
        "act only on a link with a valid HMAC-SHA256 signature and have their own throttling, below the stage's, "
        "so a flood of them cannot starve the signed routes; a WAFv2 web ACL would add cost for little more. "
        "Attach one where the API is exposed to untrusted networks at scale.",
    )
    _suppress(
        stack.approvals.link_secret,
        "SMG4",
        "Rotating the approval link key would invalidate the links already emailed and still inside their "
        "approval window (24 hours at most). Rotation can come once the API function also accepts the previous "
        "version (AWSPREVIOUS) for one window.",
    )
