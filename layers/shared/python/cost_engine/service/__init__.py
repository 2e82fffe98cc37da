"""What the API and the trigger do: register recommendations, start executions and act on them.

The state machines do the work; this package starts them, answers questions about them and carries
people's decisions (approve, reject, cancel, rollback) to them, each as a conditional write first.

    runs.py           an execution's state machine runs: start, the current one, their history
    start.py          starting executions: the request's checks, idempotency, the resource's lock
    decisions.py      approvals, through the API or the emailed link
    interventions.py  cancel and rollback
    measurements.py   savings measured from the bill, asked for and scheduled
"""

from __future__ import annotations

from cost_engine.errors import TASK_WAIT_OVER_ERRORS
from cost_engine.models import AuditEvent, ExecutionRecord, ExecutionStatus
from cost_engine.service.decisions import Decisions, LinkOutcome
from cost_engine.service.interventions import STRANDED_ROLLBACK_STATES, Interventions
from cost_engine.service.measurements import Measurements
from cost_engine.service.runs import Runs, execution_arn, rollback_run_name
from cost_engine.service.start import MAX_SCHEDULE_AHEAD, StartExecutions, execution_id_for_key
from cost_engine.stores.executions import Page

__all__ = [
    "MAX_SCHEDULE_AHEAD",
    "STRANDED_ROLLBACK_STATES",
    "TASK_WAIT_OVER_ERRORS",
    "ExecutionService",
    "LinkOutcome",
    "Runs",
    "execution_arn",
    "execution_id_for_key",
    "rollback_run_name",
]


class ExecutionService(StartExecutions, Decisions, Interventions, Measurements):
    """The service the API and the trigger function use: each part in its module, one object."""

    def get(self, execution_id: str) -> ExecutionRecord:
        return self.ctx.executions.get(execution_id)

    def list_executions(self, customer_id: str, status: ExecutionStatus | None, limit: int, cursor: str | None) -> Page:
        return self.ctx.executions.list_by_customer(customer_id, status, limit, cursor)

    def logs(self, execution_id: str) -> list[AuditEvent]:
        self.ctx.executions.get(execution_id)  # 404 for an unknown execution
        return self.ctx.audit.events(execution_id)
