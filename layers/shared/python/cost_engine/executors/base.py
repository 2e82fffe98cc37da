"""The contract every executor fulfils, step by step along the common state machine spine.

Validate → Plan → (approval) → Backup → Act → checked until done → Verify → Record, and on any
failure in an acting step: Rollback → checked until done. Each method does one short piece of work;
the step that starts a piece of work checks it once, and any waiting happens in Step Functions
(`Wait` states, as long as the type's `Polling` says), never by sleeping in a Lambda.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, Generic, TypeVar, cast, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError

from cost_engine.aws import AwsClients
from cost_engine.business_rules import DependencyRule
from cost_engine.cost_scope import EC2_COMPUTE, CostScope
from cost_engine.models import (
    ExecutionPlan,
    ExecutionRecord,
    MetricThreshold,
    Recommendation,
    RecommendationType,
    RiskLevel,
    StepRecord,
    ValidationResult,
    VerificationResult,
)
from cost_engine.permissions import Permission
from cost_engine.prechecks import DryRunProbe, Resource, resource_by_id
from cost_engine.settings import Settings

__all__ = [
    "BaseExecutor",
    "Permission",
    "Polling",
    "StepRecord",
]  # Permission is declared by every executor, next to its base


@dataclass(frozen=True)
class Polling:
    """How a type's state machine waits for AWS. Each piece of work is checked once as soon as it is
    started (work already done costs no wait); then the pauses between checks start at
    `first_seconds` and double up to `longest_seconds`, so a quick change is seen quickly and a long
    one (an RDS modification, a snapshot of a big volume) is not checked every few seconds for hours.
    Past `budget_seconds` of waiting in all, the step fails (and the change is rolled back)."""

    first_seconds: int = 5
    longest_seconds: int = 30
    budget_seconds: int = 1800

    def wait_after(self, checks: int) -> int:
        """The pause after the `checks`-th check that found the work unfinished (1, 2, ...)."""
        return min(self.longest_seconds, self.first_seconds << min(max(checks, 1) - 1, 16))

    @property
    def max_checks(self) -> int:
        """How many unfinished checks fit in the budget."""
        checks, waited = 0, 0
        while waited < self.budget_seconds:
            checks += 1
            waited += self.wait_after(checks)
        return max(1, checks)


P = TypeVar("P", bound=BaseModel)  # the type's parameters
T = TypeVar("T")  # the resource as validation finds it (a boto3 description, mostly)
# What the backup, the change and the rollback recorded: a StepRecord, or a union of them where a
# type has strategies (terminate_instance's EC2 and RDS), hence no bound.
B = TypeVar("B")
A = TypeVar("A")
R = TypeVar("R")


# The dimension of a namespace's metrics that names the resource a type changes.
RESOURCE_DIMENSIONS = {
    "AWS/EC2": "InstanceId",
    "AWS/RDS": "DBInstanceIdentifier",
    "AWS/EBS": "VolumeId",
    "AWS/AutoScaling": "AutoScalingGroupName",
}


class BaseExecutor(ABC, Generic[P, T, B, A, R]):
    """An executor declares its contract in its base: `BaseExecutor[Parameters, Resource, Backup,
    Action, Rollback]`. The step runner parses what the steps recorded into those models before it
    calls a step, and stores what a step returns, so no executor reads a record by string keys."""

    recommendation_type: ClassVar[RecommendationType]
    # What this type's state machine does, step by step: the Comment of the definition made from the
    # spine (cost_engine.spine), and so what the console shows.
    flow: ClassVar[str]
    # The end state of a rollback a person asked for: what it left behind.
    rolled_back_note: ClassVar[str] = "A manual rollback restored the resource."
    # What the resource is called in a refusal when it is gone ("EBS volume vol-1 does not exist").
    resource_name: ClassVar[str] = "resource"
    # The phases of the spine that vary by type (cost_engine.spine): how its waits poll, and whether
    # its backup is something AWS makes in the background (a snapshot, an image) that the machine
    # waits for, or a record that is complete once written (then the spine goes on to act at once).
    polling: ClassVar[Polling] = Polling()
    backup_waits: ClassVar[bool] = True
    # Read from the class's BaseExecutor[...] base (__init_subclass__): declared once, there.
    parameters_model: ClassVar[type[BaseModel]]
    record_types: ClassVar[tuple[Any, Any, Any]]
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
    # How the type's saving is measured from the bill (cost_engine.savings), shown with each
    # measurement, and the Cost Explorer service its resource is billed under.
    savings_method: ClassVar[str]
    billing_service: ClassVar[str] = EC2_COMPUTE
    # Whether a verified change is watched for a settling period before it is complete, and rolled
    # back on a breach (the types whose change can hurt a workload; cost_engine.guardrails).
    watches: ClassVar[bool] = False
    # What the type checks through its own API while its change settles (`guardrail_breaches`), for
    # people reading what was watched; empty when it checks nothing of its own.
    live_guardrails: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for base in getattr(cls, "__orig_bases__", ()):
            if get_origin(base) is BaseExecutor:
                parameters, _, backup, action, rollback = get_args(base)
                cls.parameters_model = parameters
                cls.record_types = (backup, action, rollback)

    def __init__(self, clients: AwsClients, settings: Settings | None = None) -> None:
        self.clients = clients
        self.settings = settings

    # -- the records, parsed and written by the step runner -----------------------------------------

    @cached_property
    def _adapters(self) -> tuple[TypeAdapter[B], TypeAdapter[A], TypeAdapter[R]]:
        backup, action, rollback = self.record_types
        return TypeAdapter(backup), TypeAdapter(action), TypeAdapter(rollback)

    def read_backup(self, stored: dict[str, Any]) -> B:
        return self._adapters[0].validate_python(stored)

    def read_action(self, stored: dict[str, Any]) -> A:
        return self._adapters[1].validate_python(stored)

    def read_rollback(self, stored: dict[str, Any]) -> R:
        return self._adapters[2].validate_python(stored)

    @staticmethod
    def stored(record: B | A | R) -> dict[str, Any]:
        """A step's record as the execution stores it (and the audit log shows it): JSON values, and
        only the fields the step set (a field it left to its default reads back as that default)."""
        return cast(dict[str, Any], TypeAdapter(Any).dump_python(record, mode="json", exclude_unset=True))

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

    def parameters(self, recommendation: Recommendation) -> P:
        """The recommendation's parameters, as this type's model (raises ValidationError)."""
        return cast(P, self.parameters_model.model_validate(recommendation.parameters))

    def before_approval(self, recommendation: Recommendation, record: ExecutionRecord) -> None:
        """Called when a person approves, before the approval is written: raise ApprovalRefused to
        refuse it (the execution keeps waiting). Nothing by default."""
        return None

    def validate(self, recommendation: Recommendation) -> ValidationResult:
        """Read-only checks that the change is safe and possible now. The opening is the same for
        every type: parameters that parse, a resource that exists; then the type's own `check`."""
        try:
            params = self.parameters(recommendation)
        except ValidationError as error:
            return self._invalid([f"invalid parameters for {self.recommendation_type.value}: {error}"])
        found = self.find(recommendation, params)
        if found is None:
            return self._invalid([self.not_found(recommendation)])
        return self.check(recommendation, params, found)

    def not_found(self, recommendation: Recommendation) -> str:
        """Why a recommendation whose resource is gone is refused."""
        return f"{self.resource_name} {recommendation.resource_id} does not exist in {recommendation.region}"

    @abstractmethod
    def find(self, recommendation: Recommendation, params: P) -> T | None:
        """The resource as it is now; None when it does not exist (the execution is refused)."""

    @abstractmethod
    def check(self, recommendation: Recommendation, params: P, resource: T) -> ValidationResult:
        """The type's own read-only checks of a resource that exists."""

    @abstractmethod
    def plan(self, recommendation: Recommendation, execution_id: str) -> ExecutionPlan:
        """What would be done, backed up and rolled back, and what it saves. Read-only."""

    @abstractmethod
    def backup(self, recommendation: Recommendation, execution_id: str) -> B:
        """Start the backup and return what a restore needs. Must be safe to call again."""

    @abstractmethod
    def backup_ready(self, recommendation: Recommendation, backup: B) -> bool:
        """True once the backup can be relied on."""

    @abstractmethod
    def apply(self, recommendation: Recommendation, backup: B) -> A:
        """Make the change. Checks the real state first, so a retry does not act twice."""

    @abstractmethod
    def apply_done(self, recommendation: Recommendation, action: A) -> bool:
        """True once the change has taken effect."""

    @abstractmethod
    def verify(self, recommendation: Recommendation, action: A) -> VerificationResult:
        """Check from AWS that the resource is now as intended."""

    @abstractmethod
    def rollback(
        self,
        recommendation: Recommendation,
        backup: B | None,
        action: A | None,
    ) -> R:
        """Return the resource to its state before the execution, from what was recorded."""

    @abstractmethod
    def rollback_done(self, recommendation: Recommendation, rollback: R) -> bool:
        """True once the restored resource is back in service."""

    def finalize(self, recommendation: Recommendation, action: A) -> A | None:
        """After verification, before the execution completes: end what was kept only as a safety net
        until the change was verified (e.g. the original instance of a spot migration), and answer
        the action record with what it did; None (the default) when there is nothing to end. A
        failure here still rolls back."""
        return None

    # -- the guardrail watch (cost_engine.guardrails) --------------------------------------------

    def guardrail_thresholds(self, recommendation: Recommendation, action: A) -> list[MetricThreshold]:
        """The type's own thresholds, watched unless the recommendation's guardrails leave them out."""
        return []

    def guardrail_dimensions(self, recommendation: Recommendation, action: A, namespace: str) -> dict[str, str]:
        """The changed resource's dimensions in a namespace: what a threshold without its own applies to."""
        key = RESOURCE_DIMENSIONS.get(namespace)
        return {key: recommendation.resource_id} if key else {}

    def guardrail_breaches(self, recommendation: Recommendation, action: A) -> list[str]:
        """What the type checks through its own API while the change settles: each breach's reason."""
        return []

    def cost_scope(self, recommendation: Recommendation, action: A | None) -> CostScope:
        """Where the change's saving shows in the bill: by default, the resource's own cost."""
        return CostScope(self.savings_method, self.billing_service, (recommendation.resource_id,))

    @abstractmethod
    def expected_savings(self, recommendation: Recommendation, backup: B) -> float | None:
        """The monthly run-rate the verified change is expected to remove, in USD: the catalog's price
        difference for what was done. An expectation, not a measurement: the bill measures it later
        (cost_engine.savings)."""


# An executor of any type, as the step runner, the registry and the pre-checks hold one.
AnyExecutor = BaseExecutor[Any, Any, Any, Any, Any]
