"""`terminate_instance`: an idle EC2 instance or RDS DB instance is removed after a backup.

One registered executor, two strategies chosen by the resource id (`ec2.py`, `rds.py`):
- an EC2 instance id (`i-…`): back up to an AMI with the launch configuration, terminate, verify;
  rollback relaunches an instance from that AMI with the recorded configuration, or, when the
  original instance was never terminated, makes sure it is in the state it was in;
- anything else is an RDS DB instance identifier: back up to a manual DB snapshot with the
  configuration a restore needs, delete (with a final snapshot), verify; rollback restores the DB
  under its own identifier from the snapshot with the recorded configuration.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from cost_engine.business_rules import DependencyRule
from cost_engine.executors.base import BaseExecutor
from cost_engine.executors.registry import register_executor
from cost_engine.executors.terminate_instance.ec2 import Ec2InstanceTermination
from cost_engine.executors.terminate_instance.rds import RdsInstanceTermination
from cost_engine.models import (
    ExecutionPlan,
    Recommendation,
    RecommendationType,
    RiskLevel,
    TerminateInstanceParameters,
    ValidationResult,
    VerificationResult,
)
from cost_engine.prechecks import DryRunProbe, Resource, ResourceKind

if TYPE_CHECKING:
    from cost_engine.aws import AwsClients
    from cost_engine.settings import Settings

# EC2 instance ids are `i-` and 8 or 17 hex digits; a DB identifier may also start with "i-".
EC2_INSTANCE_ID = re.compile(r"^i-(?:[0-9a-f]{8}|[0-9a-f]{17})$")


@register_executor
class TerminateInstanceExecutor(BaseExecutor):
    """`terminate_instance`: EC2 instance ids go to the EC2 strategy, DB identifiers to the RDS one."""

    recommendation_type = RecommendationType.TERMINATE_INSTANCE
    flow = (
        "Validate → (dry run → report) → approval → AMI backup → terminate → poll → verify → "
        "record; Catch → rollback (relaunch from the AMI)."
    )
    parameters_model = TerminateInstanceParameters
    risk_level = RiskLevel.HIGH
    load_balancer_targets = DependencyRule.REFUSE
    requires_human_approval = True
    permissions = Ec2InstanceTermination.permissions + RdsInstanceTermination.permissions

    def __init__(self, clients: AwsClients, settings: Settings | None = None) -> None:
        super().__init__(clients, settings)
        self._ec2 = Ec2InstanceTermination(clients, settings)
        self._rds = RdsInstanceTermination(clients, settings)

    def _for(self, recommendation: Recommendation) -> BaseExecutor:
        return self._ec2 if EC2_INSTANCE_ID.match(recommendation.resource_id) else self._rds

    def resource(self, recommendation: Recommendation) -> Resource:
        if EC2_INSTANCE_ID.match(recommendation.resource_id):
            return Resource(ResourceKind.EC2_INSTANCE, recommendation.resource_id)
        return Resource(ResourceKind.RDS_DB_INSTANCE, recommendation.resource_id)

    def dry_run_probes(self, recommendation: Recommendation) -> tuple[DryRunProbe, ...]:
        return self._for(recommendation).dry_run_probes(recommendation)

    def validate(self, recommendation: Recommendation) -> ValidationResult:
        return self._for(recommendation).validate(recommendation)

    def plan(self, recommendation: Recommendation, execution_id: str) -> ExecutionPlan:
        return self._for(recommendation).plan(recommendation, execution_id)

    def backup(self, recommendation: Recommendation, execution_id: str) -> dict[str, Any]:
        return self._for(recommendation).backup(recommendation, execution_id)

    def backup_ready(self, recommendation: Recommendation, backup: dict[str, Any]) -> bool:
        return self._for(recommendation).backup_ready(recommendation, backup)

    def apply(self, recommendation: Recommendation, backup: dict[str, Any]) -> dict[str, Any]:
        return self._for(recommendation).apply(recommendation, backup)

    def apply_done(self, recommendation: Recommendation, action: dict[str, Any]) -> bool:
        return self._for(recommendation).apply_done(recommendation, action)

    def verify(self, recommendation: Recommendation, action: dict[str, Any]) -> VerificationResult:
        return self._for(recommendation).verify(recommendation, action)

    def finalize(self, recommendation: Recommendation, action: dict[str, Any]) -> dict[str, Any]:
        return self._for(recommendation).finalize(recommendation, action)

    def measure_savings(self, recommendation: Recommendation, backup: dict[str, Any]) -> float | None:
        return self._for(recommendation).measure_savings(recommendation, backup)

    def rollback(
        self,
        recommendation: Recommendation,
        backup: dict[str, Any] | None,
        action: dict[str, Any] | None,
    ) -> dict[str, Any]:
        return self._for(recommendation).rollback(recommendation, backup, action)

    def rollback_done(self, recommendation: Recommendation, rollback: dict[str, Any]) -> bool:
        return self._for(recommendation).rollback_done(recommendation, rollback)
