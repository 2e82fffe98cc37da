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
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar, cast

from cost_engine.business_rules import DependencyRule
from cost_engine.cost_scope import RDS, CostScope, rds_arn
from cost_engine.errors import ActionFailed
from cost_engine.executors.base import BaseExecutor, Polling
from cost_engine.executors.registry import register_executor
from cost_engine.executors.terminate_instance.ec2 import (
    Ec2Backup,
    Ec2InstanceTermination,
    Ec2Restore,
    Ec2Termination,
)
from cost_engine.executors.terminate_instance.rds import (
    RdsBackup,
    RdsDeletion,
    RdsInstanceTermination,
    RdsRestore,
)
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
    from mypy_boto3_ec2.type_defs import InstanceTypeDef
    from mypy_boto3_rds.type_defs import DBInstanceTypeDef

    from cost_engine.aws import AwsClients
    from cost_engine.settings import Settings

# EC2 instance ids are `i-` and 8 or 17 hex digits; a DB identifier may also start with "i-".
EC2_INSTANCE_ID = re.compile(r"^i-(?:[0-9a-f]{8}|[0-9a-f]{17})$")

# What each step records, by strategy: the step runner parses a stored record into the one of the
# two models it fits (their fields differ), which is the model of the strategy that wrote it.
TerminationBackup: TypeAlias = Ec2Backup | RdsBackup
TerminationAction: TypeAlias = Ec2Termination | RdsDeletion
TerminationRestore: TypeAlias = Ec2Restore | RdsRestore

RecordT = TypeVar("RecordT")


def _recorded(kind: type[RecordT], record: object, recommendation: Recommendation) -> RecordT:
    """A step's record as the strategy of the recommendation's resource reads it."""
    if not isinstance(record, kind):
        raise ActionFailed(
            f"the record of {recommendation.resource_id} is a {type(record).__name__}, not the {kind.__name__} "
            "its strategy wrote"
        )
    return record


@register_executor
class TerminateInstanceExecutor(
    BaseExecutor[
        TerminateInstanceParameters,
        "InstanceTypeDef | DBInstanceTypeDef",
        TerminationBackup,
        TerminationAction,
        TerminationRestore,
    ]
):
    """`terminate_instance`: EC2 instance ids go to the EC2 strategy, DB identifiers to the RDS one."""

    recommendation_type = RecommendationType.TERMINATE_INSTANCE
    savings_method = "deletion: the instance's cost before, against none after"
    flow = (
        "Validate → (dry run → report) → approval → AMI backup → terminate → poll → verify → "
        "record; Catch → rollback (relaunch from the AMI)."
    )
    risk_level = RiskLevel.HIGH
    # An AMI or a DB snapshot, a deletion with a final snapshot, a restore: each can take hours.
    polling = Polling(first_seconds=15, longest_seconds=120, budget_seconds=4 * 3600)
    load_balancer_targets = DependencyRule.REFUSE
    requires_human_approval = True
    permissions = Ec2InstanceTermination.permissions + RdsInstanceTermination.permissions

    def __init__(self, clients: AwsClients, settings: Settings | None = None) -> None:
        super().__init__(clients, settings)
        self._ec2 = Ec2InstanceTermination(clients, settings)
        self._rds = RdsInstanceTermination(clients, settings)

    @staticmethod
    def _is_ec2(recommendation: Recommendation) -> bool:
        return EC2_INSTANCE_ID.match(recommendation.resource_id) is not None

    def _for(self, recommendation: Recommendation) -> Ec2InstanceTermination | RdsInstanceTermination:
        return self._ec2 if self._is_ec2(recommendation) else self._rds

    def resource(self, recommendation: Recommendation) -> Resource:
        if self._is_ec2(recommendation):
            return Resource(ResourceKind.EC2_INSTANCE, recommendation.resource_id)
        return Resource(ResourceKind.RDS_DB_INSTANCE, recommendation.resource_id)

    def dry_run_probes(self, recommendation: Recommendation) -> tuple[DryRunProbe, ...]:
        return self._for(recommendation).dry_run_probes(recommendation)

    def find(
        self, recommendation: Recommendation, params: TerminateInstanceParameters
    ) -> InstanceTypeDef | DBInstanceTypeDef | None:
        return self._for(recommendation).find(recommendation, params)

    def not_found(self, recommendation: Recommendation) -> str:
        return self._for(recommendation).not_found(recommendation)

    def check(
        self,
        recommendation: Recommendation,
        params: TerminateInstanceParameters,
        resource: InstanceTypeDef | DBInstanceTypeDef,
    ) -> ValidationResult:
        # The resource is what `find` got from the same strategy (a TypedDict cannot be told apart
        # by isinstance).
        if self._is_ec2(recommendation):
            return self._ec2.check(recommendation, params, cast("InstanceTypeDef", resource))
        return self._rds.check(recommendation, params, cast("DBInstanceTypeDef", resource))

    def plan(self, recommendation: Recommendation, execution_id: str) -> ExecutionPlan:
        return self._for(recommendation).plan(recommendation, execution_id)

    def backup(self, recommendation: Recommendation, execution_id: str) -> TerminationBackup:
        return self._for(recommendation).backup(recommendation, execution_id)

    def backup_ready(self, recommendation: Recommendation, backup: TerminationBackup) -> bool:
        if self._is_ec2(recommendation):
            return self._ec2.backup_ready(recommendation, _recorded(Ec2Backup, backup, recommendation))
        return self._rds.backup_ready(recommendation, _recorded(RdsBackup, backup, recommendation))

    def apply(self, recommendation: Recommendation, backup: TerminationBackup) -> TerminationAction:
        if self._is_ec2(recommendation):
            return self._ec2.apply(recommendation, _recorded(Ec2Backup, backup, recommendation))
        return self._rds.apply(recommendation, _recorded(RdsBackup, backup, recommendation))

    def apply_done(self, recommendation: Recommendation, action: TerminationAction) -> bool:
        if self._is_ec2(recommendation):
            return self._ec2.apply_done(recommendation, _recorded(Ec2Termination, action, recommendation))
        return self._rds.apply_done(recommendation, _recorded(RdsDeletion, action, recommendation))

    def verify(self, recommendation: Recommendation, action: TerminationAction) -> VerificationResult:
        if self._is_ec2(recommendation):
            return self._ec2.verify(recommendation, _recorded(Ec2Termination, action, recommendation))
        return self._rds.verify(recommendation, _recorded(RdsDeletion, action, recommendation))

    def finalize(self, recommendation: Recommendation, action: TerminationAction) -> TerminationAction | None:
        if self._is_ec2(recommendation):
            return self._ec2.finalize(recommendation, _recorded(Ec2Termination, action, recommendation))
        return self._rds.finalize(recommendation, _recorded(RdsDeletion, action, recommendation))

    def cost_scope(self, recommendation: Recommendation, action: Any) -> CostScope:
        if self._is_ec2(recommendation):
            return CostScope(
                self.savings_method, self.billing_service, (recommendation.resource_id,), removes_resource=True
            )
        arn = rds_arn(recommendation.region, recommendation.account_id, recommendation.resource_id)
        return CostScope(self.savings_method, RDS, (arn,), removes_resource=True)

    def expected_savings(self, recommendation: Recommendation, backup: TerminationBackup) -> float | None:
        if self._is_ec2(recommendation):
            return self._ec2.expected_savings(recommendation, _recorded(Ec2Backup, backup, recommendation))
        return self._rds.expected_savings(recommendation, _recorded(RdsBackup, backup, recommendation))

    def rollback(
        self,
        recommendation: Recommendation,
        backup: TerminationBackup | None,
        action: TerminationAction | None,
    ) -> TerminationRestore:
        if self._is_ec2(recommendation):
            return self._ec2.rollback(
                recommendation,
                None if backup is None else _recorded(Ec2Backup, backup, recommendation),
                None if action is None else _recorded(Ec2Termination, action, recommendation),
            )
        return self._rds.rollback(
            recommendation,
            None if backup is None else _recorded(RdsBackup, backup, recommendation),
            None if action is None else _recorded(RdsDeletion, action, recommendation),
        )

    def rollback_done(self, recommendation: Recommendation, rollback: TerminationRestore) -> bool:
        if self._is_ec2(recommendation):
            return self._ec2.rollback_done(recommendation, _recorded(Ec2Restore, rollback, recommendation))
        return self._rds.rollback_done(recommendation, _recorded(RdsRestore, rollback, recommendation))
