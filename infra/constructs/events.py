"""The engine's side of EventBridge that every function shares: its own bus and the Scheduler role."""

from __future__ import annotations

from aws_cdk import Aws
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from constructs import Construct

from cost_engine import topology
from infra.permissions import SCHEDULER_ACTIONS

SCHEDULER_ROLE_ID = "SchedulerRole"


class EngineEvents(Construct):
    """The bus where the engine publishes its Execution Status Changed events (docs/events.md) for others
    to follow, and where the upstream engine puts Recommendation Approved events for the trigger; and
    the role EventBridge Scheduler assumes on the off-hours schedules that schedule_instance creates."""

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.bus = events.EventBus(self, topology.EVENT_BUS_CONSTRUCT_ID)
        # Those two actions on instances, nothing else.
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
