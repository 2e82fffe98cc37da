"""The Cost Execution Engine on AWS: one stack composed of a construct per concern (`infra/constructs/`).

Nothing here lists tables, functions or recommendation types by hand: a new executor registered in the
shared package gets its pipeline (function, role, state machine) and its API wiring from the
declarations in `cost_engine.topology`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import jsii
from aws_cdk import CfnElement, IStableStringProducer, Lazy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct, IConstruct

from cost_engine import topology
from cost_engine.environment import Deployment
from cost_engine.models import RecommendationType
from infra.constructs.api import Api
from infra.constructs.approvals import Approvals
from infra.constructs.data import Data
from infra.constructs.events import EngineEvents
from infra.constructs.functions import EngineFunctions, Shared
from infra.constructs.monitoring import Monitoring
from infra.constructs.pipeline import Pipeline
from infra.constructs.trigger import Trigger
from infra.context import DeploymentContext
from infra.permissions import SLOT_HAND_OVER_ACTIONS


@jsii.implements(IStableStringProducer)
class _Producer:
    def __init__(self, produce: Callable[[], str]) -> None:
        self._produce = produce

    def produce(self) -> str:
        return self._produce()


def _later(produce: Callable[[], str]) -> str:
    """A value known only once a construct built later exists: CDK fills it in when the app synthesizes."""
    return Lazy.string(_Producer(produce))


class CostExecutionEngineStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.deployment_context = context = DeploymentContext.of(self.node)

        self.monitoring = Monitoring(self, "Monitoring")
        self.data = Data(self, "Data")
        self.approvals = Approvals(self, "Approvals", approver_emails=context.approver_emails)
        self.events = EngineEvents(self, "Events")
        shared = Shared(
            deployment=self._deployment(context),
            monitoring=self.monitoring,
            approval_secret=self.approvals.link_secret,
            limits_table=self.data.table(topology.LIMITS_TABLE),
            event_bus=self.events.bus,
        )
        self.engine_functions = EngineFunctions(self, "Functions", shared=shared)
        # Executors first: the state machines invoke them, and the API and the trigger start them.
        self.pipelines = {
            machine.recommendation_type: Pipeline(
                self,
                machine.recommendation_type.value,
                machine=machine,
                functions=self.engine_functions,
                data=self.data,
                approvals=self.approvals,
                monitoring=self.monitoring,
            )
            for machine in topology.state_machines()
        }
        machines = list(self.state_machines.values())
        # A step that frees an acting slot hands it to the oldest waiting execution, of any type, and
        # wakes its run (SendTaskSuccess on that run's task token); a step that finds a slot free
        # answers its own run's wait. In a policy of its own, not the roles' default policies: each
        # function depends on its role's default policy, and the state machines on the functions.
        iam.Policy(
            self,
            "SlotHandOverPolicy",
            roles=[pipeline.role for pipeline in self.pipelines.values()],
            statements=[
                iam.PolicyStatement(
                    actions=list(SLOT_HAND_OVER_ACTIONS), resources=[m.state_machine_arn for m in machines]
                )
            ],
        )
        self.api = Api(
            self,
            "Api",
            functions=self.engine_functions,
            data=self.data,
            state_machines=machines,
            monitoring=self.monitoring,
        )
        self.trigger = Trigger(
            self,
            "Trigger",
            functions=self.engine_functions,
            data=self.data,
            event_bus=self.events.bus,
            state_machines=machines,
            scheduler_role=self.events.scheduler_role,
        )

    def _deployment(self, context: DeploymentContext) -> Deployment:
        """What the functions are told (cost_engine.environment): this stack's resources and the context.
        The state machines and the API are built after the executors, so the values that name them are
        filled in when the app synthesizes."""
        return Deployment(
            table_names={spec: self.data.table(spec).table_name for spec in topology.TABLES},
            approval_topic_arn=self.approvals.topic.topic_arn,
            approval_secret_arn=self.approvals.link_secret.secret_arn,
            event_bus_name=self.events.bus.event_bus_name,
            scheduler_role_arn=self.events.scheduler_role.role_arn,
            state_machine_arns=_later(self._state_machine_arns),
            api_base_url=context.api_base_url or _later(lambda: self.api.links_base_url),
            approval_timeout_seconds=context.approval_timeout_seconds,
            max_concurrent_acting=context.max_concurrent_acting,
            resource_cooldown_seconds=context.resource_cooldown_seconds,
            max_acting_seconds=context.max_acting_seconds,
            max_recommendation_age_days=context.max_recommendation_age_days,
            savings_measure_days=context.savings_measure_days,
            guardrail_settle_minutes=context.guardrail_settle_minutes,
            ri_purchase_limit_usd=context.ri_purchase_limit_usd,
            ri_purchase_limit_per_period_usd=context.ri_purchase_limit_per_period_usd,
            ri_purchase_limit_period=context.ri_purchase_limit_period,
            approver_emails=context.approver_emails,
            approval_policy=context.approval_policy,
            business_rules=context.business_rules,
            access_policy=context.access,
        )

    def _state_machine_arns(self) -> str:
        # Stack.to_json_string, not json.dumps: the ARNs are tokens.
        return self.to_json_string({t.value: sm.state_machine_arn for t, sm in self.state_machines.items()})

    # The topology's view of what the constructs built: by function construct ID, and by type.

    @property
    def functions(self) -> dict[str, lambda_.Function]:
        return {construct_id: built.function for construct_id, built in self.engine_functions.added.items()}

    @property
    def roles(self) -> dict[str, iam.Role]:
        return {construct_id: built.role for construct_id, built in self.engine_functions.added.items()}

    @property
    def state_machines(self) -> dict[RecommendationType, sfn.StateMachine]:
        return {recommendation_type: p.state_machine for recommendation_type, p in self.pipelines.items()}

    def logical_id(self, construct: IConstruct) -> str:
        """The CloudFormation logical ID of an L2 construct's main resource."""
        return self.get_logical_id(cast(CfnElement, construct.node.default_child))
