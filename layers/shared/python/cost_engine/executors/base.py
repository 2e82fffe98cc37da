"""The contract every executor fulfils, step by step along the common state machine spine.

Validate → Plan → (approval) → Backup → Act → poll until done → Verify → Record, and on any failure
in an acting step: Rollback → poll until done. Each method does one short piece of work; waiting
happens in Step Functions (`Wait` states), never by sleeping in a Lambda.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from pydantic import BaseModel

from cost_engine.aws import AwsClients
from cost_engine.business_rules import DependencyRule
from cost_engine.models import (
    ExecutionPlan,
    ExecutionRecord,
    Recommendation,
    RecommendationType,
    RiskLevel,
    ValidationResult,
    VerificationResult,
)
from cost_engine.permissions import Permission
from cost_engine.prechecks import DryRunProbe, Resource, resource_by_id
from cost_engine.settings import Settings

__all__ = ["BaseExecutor", "Permission"]  # Permission is declared by every executor, next to its base


class BaseExecutor(ABC):
    recommendation_type: ClassVar[RecommendationType]
    # What this type's state machine does, step by step: the Comment of the definition made from the
    # spine (cost_engine.spine), and so what the console shows.
    flow: ClassVar[str]
    # The end state of a rollback a person asked for: what it left behind.
    rolled_back_note: ClassVar[str] = "A manual rollback restored the resource."
    parameters_model: ClassVar[type[BaseModel]]
    permissions: ClassVar[tuple[Permission, ...]]
    risk_level: ClassVar[RiskLevel]
    # High-risk types whose change cannot be fully undone (a termination loses the instance's
    # identity and local disks, a purchase is final, a spot instance can be reclaimed): they always
    # wait for a person, whatever the request's auto_approve or the approval policy says.
    requires_human_approval: ClassVar[bool] = False
    # A resource of a CloudFormation stack: most changes alter what its template declares (drift the
    # next stack update undoes or fails on), so they are refused; a type that only changes run-time
    # state warns instead (cost_engine.prechecks).
    cloudformation_managed: ClassVar[DependencyRule] = DependencyRule.REFUSE
    # An instance registered with a load balancer: refused by the types that remove or replace it,
    # a warning from those that stop it for a while.
    load_balancer_targets: ClassVar[DependencyRule] = DependencyRule.IGNORE
    # Whether `finalize` does something: a verified change of such a type is complete only once
    # finalized (the sweeper rolls back rather than leave, say, a spot migration's original stopped).
    finalizes: ClassVar[bool] = False

    def __init__(self, clients: AwsClients, settings: Settings | None = None) -> None:
        self.clients = clients
        self.settings = settings

    def _invalid(self, errors: list[str], warnings: list[str] | None = None) -> ValidationResult:
        """A refusal: the validation result of a change that must not be made, and why."""
        return ValidationResult(
            valid=False, errors=errors, warnings=warnings or [], risk_level=self.risk_level, estimated_duration=0
        )

    def resource(self, recommendation: Recommendation) -> Resource:
        """The resource the change is made to, for the common pre-checks. EC2 ids say what they
        name; a type whose resource ids do not (DB identifiers, bucket names) says it here."""
        return resource_by_id(recommendation.resource_id)

    def dry_run_probes(self, recommendation: Recommendation) -> tuple[DryRunProbe, ...]:
        """The type's EC2 changes on this resource, asked with DryRun by the pre-checks (nothing by
        default: the other services have no DryRun, and the policy simulator answers for them)."""
        return ()

    def parameters(self, recommendation: Recommendation) -> BaseModel:
        return self.parameters_model.model_validate(recommendation.parameters)

    def before_approval(self, recommendation: Recommendation, record: ExecutionRecord) -> None:
        """Called when a person approves, before the approval is written: raise ApprovalRefused to
        refuse it (the execution keeps waiting). Nothing by default."""
        return None

    @abstractmethod
    def validate(self, recommendation: Recommendation) -> ValidationResult:
        """Read-only checks that the change is safe and possible now."""

    @abstractmethod
    def plan(self, recommendation: Recommendation, execution_id: str) -> ExecutionPlan:
        """What would be done, backed up and rolled back, and what it saves. Read-only."""

    @abstractmethod
    def backup(self, recommendation: Recommendation, execution_id: str) -> dict[str, Any]:
        """Start the backup and return what a restore needs. Must be safe to call again."""

    @abstractmethod
    def backup_ready(self, recommendation: Recommendation, backup: dict[str, Any]) -> bool:
        """True once the backup can be relied on."""

    @abstractmethod
    def apply(self, recommendation: Recommendation, backup: dict[str, Any]) -> dict[str, Any]:
        """Make the change. Checks the real state first, so a retry does not act twice."""

    @abstractmethod
    def apply_done(self, recommendation: Recommendation, action: dict[str, Any]) -> bool:
        """True once the change has taken effect."""

    @abstractmethod
    def verify(self, recommendation: Recommendation, action: dict[str, Any]) -> VerificationResult:
        """Check from AWS that the resource is now as intended."""

    @abstractmethod
    def rollback(
        self,
        recommendation: Recommendation,
        backup: dict[str, Any] | None,
        action: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """Return the resource to its state before the execution, from what was recorded."""

    @abstractmethod
    def rollback_done(self, recommendation: Recommendation, rollback: dict[str, Any]) -> bool:
        """True once the restored resource is back in service."""

    def finalize(self, recommendation: Recommendation, action: dict[str, Any]) -> dict[str, Any]:
        """After verification, before the execution completes: end what was kept only as a safety net
        until the change was verified (e.g. the original instance of a spot migration). Nothing by
        default. A failure here still rolls back."""
        return {}

    @abstractmethod
    def measure_savings(self, recommendation: Recommendation, backup: dict[str, Any]) -> float | None:
        """Monthly run-rate removed by the verified change, in USD."""
