"""Where the engine is watched from."""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_logs as logs
from constructs import Construct

from cost_engine import topology

LOG_RETENTION = logs.RetentionDays.THREE_MONTHS
API_ACCESS_LOG_GROUP_ID = "ApiAccessLogs"


class Monitoring(Construct):
    """The engine's logs: one log group per function and per state machine, and the API's access log,
    all kept as long. The alarms and dashboards over the functions, state machines, API and trigger
    dead-letter queue go here too, so that what is watched, and how, is read in one place.

    Built before the constructs that log, which ask it for their log groups.
    """

    def function_log_group(self, spec: topology.Function) -> logs.LogGroup:
        return logs.LogGroup(self, f"{spec.construct_id}LogGroup", retention=LOG_RETENTION)

    def state_machine_log_group(self, spec: topology.StateMachine) -> logs.LogGroup:
        # Under /aws/vendedlogs/ one CloudWatch Logs resource policy covers every state machine's
        # group, instead of one policy entry per group (the resource policy size is limited).
        return logs.LogGroup(
            self,
            f"{spec.construct_id}LogGroup",
            log_group_name=f"/aws/vendedlogs/states/{Stack.of(self).stack_name}-{spec.construct_id}",
            retention=LOG_RETENTION,
        )

    def api_access_log_group(self) -> logs.LogGroup:
        return logs.LogGroup(self, API_ACCESS_LOG_GROUP_ID, retention=LOG_RETENTION)
