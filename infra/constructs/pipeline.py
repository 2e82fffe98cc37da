"""One recommendation type's pipeline, instantiated for each of `topology.state_machines()`."""

from __future__ import annotations

from aws_cdk import aws_iam as iam
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from cost_engine import spine, topology
from cost_engine.executors import executor_class
from cost_engine.role_permissions import role_permissions
from infra.constructs.approvals import Approvals
from infra.constructs.data import Data
from infra.constructs.functions import EngineFunctions
from infra.constructs.monitoring import Monitoring
from infra.permissions import (
    AUDIT_BATCH_ACTIONS,
    TABLE_READ_ACTIONS,
    TABLE_WRITE_ACTIONS,
    TOPIC_KEY_ACTIONS,
    allow,
    permission_statement,
)


class Pipeline(Construct):
    """A type's executor function, whose role holds exactly the permissions its executor class declares
    (and the common pre-checks'), and its state machine, made from the spine, which invokes that
    function and nothing else. Executors never refer to a state machine, so there is no cycle."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        machine: topology.StateMachine,
        functions: EngineFunctions,
        data: Data,
        approvals: Approvals,
        monitoring: Monitoring,
    ) -> None:
        super().__init__(scope, construct_id)
        executor = functions.add(self, machine.executor)
        self.function, self.role = executor.function, executor.role
        self._allow_executor(machine, data, approvals)
        self.state_machine = sfn.StateMachine(
            self,
            machine.construct_id,
            definition_body=sfn.DefinitionBody.from_string(spine.template(machine)),
            definition_substitutions=machine.substitutions(self.function.function_arn),
            # Execution data stays out of the logs: it carries approval task tokens.
            logs=sfn.LogOptions(
                destination=monitoring.state_machine_log_group(machine),
                level=sfn.LogLevel.ALL,
                include_execution_data=False,
            ),
            tracing_enabled=True,
        )
        # The ASL invokes the unqualified function ARN and nothing else.
        self.state_machine.add_to_role_policy(
            iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=[self.function.function_arn])
        )

    def _allow_executor(self, machine: topology.StateMachine, data: Data, approvals: Approvals) -> None:
        role = self.role
        # Their records, the audit log and the limits (acting slots, resource locks) they take and free.
        own_records = data.table_arns(
            (topology.EXECUTIONS_TABLE, topology.AUDIT_TABLE, topology.LIMITS_TABLE), with_indexes=False
        )
        allow(role, TABLE_READ_ACTIONS + TABLE_WRITE_ACTIONS, own_records)
        allow(role, AUDIT_BATCH_ACTIONS, data.table_arns((topology.AUDIT_TABLE,), with_indexes=False))
        allow(role, TABLE_READ_ACTIONS, data.table_arns((topology.RECOMMENDATIONS_TABLE,), with_indexes=False))
        # Executors send the approval request (with its task token) to the approvers.
        allow(role, ["sns:Publish"], [approvals.topic.topic_arn])
        allow(role, TOPIC_KEY_ACTIONS, [approvals.topic_key.key_arn])
        executor = executor_class(machine.recommendation_type)
        for permission in role_permissions(executor):
            role.add_to_policy(permission_statement(permission))
        # The pre-checks ask the policy simulator about this role only (cost_engine.prechecks).
        allow(role, ["iam:SimulatePrincipalPolicy"], [role.role_arn])
