"""Domain models of the engine (pydantic v2): what it is given, what it records, what it answers."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    field_validator,
)


def utc_now() -> datetime:
    return datetime.now(UTC)


class RecommendationType(StrEnum):
    TERMINATE_INSTANCE = "terminate_instance"
    DELETE_VOLUME = "delete_volume"
    SCHEDULE_INSTANCE = "schedule_instance"
    RIGHTSIZE_INSTANCE = "rightsize_instance"
    RIGHTSIZE_DATABASE = "rightsize_database"
    MIGRATE_TO_SPOT = "migrate_to_spot"
    PURCHASE_RESERVED_INSTANCES = "purchase_reserved_instances"
    ENABLE_AUTOSCALING = "enable_autoscaling"
    OPTIMIZE_STORAGE = "optimize_storage"
    FIX_CONFIG = "fix_config"


class ExecutionStatus(StrEnum):
    PENDING = "pending"
    # Held by the state machine until its scheduled_time; nothing has been checked or touched yet.
    SCHEDULED = "scheduled"
    VALIDATING = "validating"
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    EXECUTING = "executing"
    VERIFYING = "verifying"
    # The change is verified and in place; its guardrails are watched for a settling period, with the
    # resource's lock held but no acting slot (cost_engine.guardrails). A breach rolls it back.
    WATCHING = "watching"
    COMPLETED = "completed"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    FAILED = "failed"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"


class RiskLevel(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


# Ids end up in DynamoDB keys, ARNs, Step Functions execution names and log lines: keep them to a
# safe alphabet so nothing downstream has to escape them.
SafeId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$"),
]
# Native AWS resource ids (instance ids, bucket names, DB identifiers, log group names like /aws/lambda/x).
ResourceId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=512, pattern=r"^[A-Za-z0-9/][A-Za-z0-9._/#:-]*$"),
]
# [0-9], not \d: \d also matches non-ASCII digits, which AWS would refuse later.
AccountId = Annotated[str, StringConstraints(pattern=r"^[0-9]{12}$")]
Region = Annotated[str, StringConstraints(pattern=r"^[a-z]{2}(-gov)?-[a-z]+-[0-9]$")]


def new_execution_id() -> str:
    return f"exec-{uuid.uuid4().hex}"


def new_recommendation_id() -> str:
    return f"rec-{uuid.uuid4().hex}"


# A billion dollars a month is beyond any one resource's cost: above that the number is a mistake.
MAX_MONTHLY_SAVINGS_USD = 1_000_000_000


class StrictModel(BaseModel):
    """Refuses unknown fields so a typo in a request is an error, not a silently ignored value."""

    model_config = ConfigDict(extra="forbid")


class StepRecord(BaseModel):
    """What a step records for the steps after it (the backup, the action, the rollback), stored on
    the execution as JSON. Unknown keys are ignored rather than refused: a record written by an
    earlier release must still be readable by the rollback of this one."""

    model_config = ConfigDict(extra="ignore")


# The longest a change's guardrails may be watched: a day.
MAX_SETTLE_MINUTES = 1440
MetricName = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f]+$")]


class MetricThreshold(StrictModel):
    """A CloudWatch metric that must not pass a threshold while a change settles: `datapoints`
    consecutive periods beyond it trip the guardrail. Without `dimensions`, the changed resource's
    own (InstanceId, DBInstanceIdentifier, AutoScalingGroupName or VolumeId, by the namespace)."""

    namespace: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9/._#:-]{1,255}$")]
    metric_name: MetricName
    dimensions: dict[MetricName, MetricName] | None = Field(default=None, max_length=30)
    statistic: Literal["Average", "Maximum", "Minimum", "Sum", "SampleCount"] = "Average"
    comparison: Literal["above", "below"]
    threshold: StrictFloat | StrictInt = Field(allow_inf_nan=False)
    datapoints: StrictInt = Field(default=3, ge=1, le=100)
    period_seconds: Literal[60, 300, 900, 3600] = 60

    def describe(self) -> str:
        return (
            f"{self.namespace} {self.metric_name} {self.statistic} {self.comparison} {self.threshold:g} "
            f"for {self.datapoints} period(s) of {self.period_seconds}s"
        )


class GuardrailSpec(StrictModel):
    """What to watch after the change and for how long (cost_engine.guardrails). A type that watches
    adds its own thresholds (CPU, status checks...) unless `type_defaults` is false."""

    settle_minutes: StrictInt | None = Field(default=None, ge=0, le=MAX_SETTLE_MINUTES)
    alarms: list[Annotated[str, StringConstraints(min_length=1, max_length=255)]] = Field(
        default_factory=list, max_length=20
    )
    thresholds: list[MetricThreshold] = Field(default_factory=list, max_length=20)
    type_defaults: StrictBool = True


class Recommendation(StrictModel):
    """A recommendation as the engine is given it (DESIGN.md, "A recommendation")."""

    recommendation_id: SafeId = Field(default_factory=new_recommendation_id)
    customer_id: SafeId
    type: RecommendationType
    account_id: AccountId
    region: Region
    resource_id: ResourceId
    parameters: dict[str, Any] = Field(default_factory=dict)
    estimated_monthly_savings: StrictFloat | None = Field(
        default=None, ge=0, le=MAX_MONTHLY_SAVINGS_USD, allow_inf_nan=False
    )
    source: Annotated[str, StringConstraints(max_length=128)] = "recommendation-engine"
    created_at: datetime = Field(default_factory=utc_now)
    # What to watch after a change that can hurt a workload (the types that watch; others ignore it).
    guardrails: GuardrailSpec | None = None


class ExecutionRequest(StrictModel):
    recommendation_id: SafeId
    dry_run: StrictBool = False
    auto_approve: StrictBool = False
    scheduled_time: datetime | None = None
    # How long approvers have, when a person must approve; the deployment's setting (24 hours by
    # default) when left out. Up to 7 days: a Step Functions standard workflow could wait a year,
    # but an approval that old no longer describes the resource.
    approval_timeout_seconds: StrictInt | None = Field(default=None, ge=1, le=7 * 86400)

    @field_validator("scheduled_time")
    @classmethod
    def _scheduled_time_has_zone(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("scheduled_time needs a time zone, e.g. 2026-12-01T22:00:00Z")
        return value


class ApprovalDecision(StrictModel):
    approver: Annotated[str, StringConstraints(min_length=1, max_length=128, strip_whitespace=True)]
    comment: Annotated[str, StringConstraints(max_length=1024)] = ""
    # The plan the decider saw (`pending_approval.plan_hash`, or the page's hidden field): when given,
    # a decision for any other plan is refused (409 plan_changed) instead of being applied to it.
    plan_hash: Annotated[str, StringConstraints(pattern=r"^sha256:[0-9a-f]{64}$")] | None = None


# The longest window a savings measurement may ask for: Cost Explorer answers for the last 13 months,
# and two windows of half a year, before and after the change, fit in them.
MAX_WINDOW_DAYS = 180


class MeasureRequest(StrictModel):
    """`POST /executions/{id}/measure`: measure over windows of this many days (by default the
    deployment's longest scheduled window; cost_engine.savings)."""

    window_days: StrictInt | None = Field(default=None, ge=1, le=MAX_WINDOW_DAYS)


class ValidationResult(BaseModel):
    valid: bool
    errors: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    risk_level: RiskLevel = RiskLevel.MEDIUM
    estimated_duration: int = Field(default=5, description="minutes")


class RollbackPlan(BaseModel):
    execution_id: str
    rollback_steps: list[str]
    estimated_duration: int = Field(description="minutes")
    risk_level: RiskLevel
    requires_approval: bool = False


class ExecutionPlan(BaseModel):
    """What an execution would do: the dry-run report, and what an approver is shown."""

    summary: str
    actions: list[str]
    backup: list[str]
    rollback_plan: RollbackPlan
    estimated_monthly_savings: float | None
    savings_basis: str
    resource: dict[str, Any] = Field(default_factory=dict)
    # Money spent once by carrying out the plan (e.g. an upfront payment), for the approval policy.
    one_time_cost: float | None = None
    # The deployment's limits the plan counts against, as they were when it was made. Shown, but not
    # bound to the approval: each is checked again at the moment of action, and a limit the deployment
    # changes while the execution waits changes nothing the plan does (the check decides).
    limits: dict[str, Any] = Field(default_factory=dict)

    def _bound(self) -> dict[str, Any]:
        """What an approval is bound to: everything the plan says but the deployment's limits."""
        return self.model_dump(mode="json", exclude={"limits"})

    def fingerprint(self) -> str:
        """A hash of everything the plan says, so an approval can be bound to the plan it was given
        for: the same resource in the same state gives the same plan, and so the same hash."""
        canonical = json.dumps(self._bound(), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()

    def differences(self, other: ExecutionPlan) -> list[str]:
        """Where `other` says something else than this plan, as dotted paths (`resource.tags`)."""
        mine, theirs = self._bound(), other._bound()
        changed = []
        for key in sorted(set(mine) | set(theirs)):
            if key == "resource" and isinstance(mine.get(key), dict) and isinstance(theirs.get(key), dict):
                inner = set(mine[key]) | set(theirs[key])
                changed += [f"resource.{k}" for k in sorted(inner) if mine[key].get(k) != theirs[key].get(k)]
            elif mine.get(key) != theirs.get(key):
                changed.append(key)
        return changed


class VerificationResult(BaseModel):
    passed: bool
    checks: list[str] = Field(default_factory=list)
    failures: list[str] = Field(default_factory=list)


class PolicyDecision(BaseModel):
    """What the approval policy decided for one execution, and why (cost_engine.approval_policy)."""

    risk_level: RiskLevel
    auto_approve: bool
    reason: str


class ApprovalState(BaseModel):
    requested_at: datetime
    deadline: datetime
    # Where the request went (the topic) and who it reaches (the approvers' addresses, if known).
    approvers_notified: str | None = None
    approvers: list[str] = Field(default_factory=list)
    risk_level: RiskLevel | None = None
    reason: str | None = None
    # Who decided, as the engine knows it: the authenticated caller ("iam:<ARN>", "apikey:<name>"), or
    # for the emailed page the link itself ("link:<approval_id>"), a capability: whoever holds the mail.
    decided_by: str | None = None
    # The name the approver gave (the API's body, the page's form): shown, never checked.
    approver_name: str | None = None
    decided_at: datetime | None = None
    decision: str | None = None
    # "link" (the emailed approval page) or "api" (an authenticated call).
    decided_via: str | None = None
    comment: str = ""
    # The plan the approver was shown (ExecutionPlan.fingerprint): the decision is for that plan
    # only, and the acting steps refuse to carry out any other.
    plan_hash: str | None = None


class MeasurementQuality(StrEnum):
    COMPLETE = "complete"  # both windows over, every day's cost final
    PARTIAL = "partial"  # a figure, with the reason it is not final (window not over, data missing...)
    NOT_MEASURABLE = "not_measurable"  # no figure, and why


class SavingsMeasurement(BaseModel):
    """One measurement of an execution's realized saving from billing data (cost_engine.savings): the
    cost over equal windows before and after the change, normalized to a month."""

    measured_at: datetime
    requested_by: str  # "schedule" for the automatic ones, else the caller
    window_days: int  # the length asked for; `days` is how many were measured
    days: int
    before_start: date | None = None
    before_end: date | None = None
    after_start: date | None = None
    after_end: date | None = None
    before_cost: float | None = None  # USD over the before window
    after_cost: float | None = None
    monthly_savings: float | None = None
    expected_savings: float | None = None
    # How close the measured saving came to the expected one, in percent (the seed's target: 90).
    accuracy_percent: float | None = None
    quality: MeasurementQuality
    reason: str | None = None  # why partial or not measurable
    method: str  # how this type's saving is measured
    attribution: str | None = None  # "resource", or the filter the cost was attributed by


class ExecutionRecord(BaseModel):
    """One execution, as stored in the executions table (the seed's columns and what steps record)."""

    execution_id: str
    recommendation_id: str
    customer_id: str
    recommendation_type: RecommendationType
    resource_id: str
    region: str
    # The account the resource lives in (with region and id, what the resource lock is keyed on).
    account_id: str | None = None
    status: ExecutionStatus = ExecutionStatus.PENDING
    # Who asked for it: the API caller's principal (four eyes: it does not approve it), or
    # "event:<source>" for an execution an EventBridge event started (no person asked).
    requested_by: str | None = None
    created_at: datetime = Field(default_factory=utc_now)
    started_at: datetime = Field(default_factory=utc_now)
    updated_at: datetime = Field(default_factory=utc_now)
    completed_at: datetime | None = None
    dry_run: bool = False
    auto_approve_requested: bool = False
    auto_approved: bool = False
    approval_timeout_seconds: int = 86400
    success: bool | None = None
    error_message: str | None = None
    rollback_available: bool = False
    rollback_executed: bool = False
    # USD per month. Estimated: the recommendation's figure, as planned. Expected: the catalog's price
    # difference for what was actually done, recorded at completion. Actual: measured from billing
    # data (cost_engine.savings), empty until a measurement has a figure.
    estimated_monthly_savings: float | None = None
    expected_savings: float | None = None
    actual_savings: float | None = None
    measurements: list[SavingsMeasurement] = Field(default_factory=list)
    # The guardrail watch after the change: when it began, until when it lasts, and what the last
    # check found (cost_engine.guardrails.GuardrailResult).
    watch_started_at: datetime | None = None
    watch_until: datetime | None = None
    guardrails: dict[str, Any] | None = None
    scheduled_time: datetime | None = None
    current_step: str | None = None
    validation: ValidationResult | None = None
    plan: ExecutionPlan | None = None
    backup: dict[str, Any] | None = None
    action: dict[str, Any] | None = None
    rollback: dict[str, Any] | None = None
    verification: VerificationResult | None = None
    approval: ApprovalState | None = None
    policy: PolicyDecision | None = None
    # The id of the current approval link (indexed, so the approval page can find the execution).
    approval_id: str | None = None
    poll_attempts: int = 0
    state_machine_execution_arn: str | None = None
    rollback_runs: int = 0
    # Who asked to cancel while the resource was being changed: the acting steps stop at the next
    # step, the change is rolled back and the execution ends `cancelled`.
    cancel_requested_by: str | None = None
    # Set when the request carried an idempotency key (the execution id derives from it) or came
    # from an event; a repeat with the same key must be the same request (its fingerprint).
    idempotency_key: str | None = None
    request_fingerprint: str | None = None
    # The acting limits: when it joined the queue for an acting slot, which slot it got and when,
    # and whether its acting phase ran past the deployment's limit (then it is rolled back and fails).
    queued_at: datetime | None = None
    acting_slot: int | None = None
    acting_started_at: datetime | None = None
    acting_timed_out: bool = False
    # Set when the re-check right before the change refused it (the resource or the rules changed
    # while the execution waited): its rollback then only ends the execution `failed`.
    refused_before_change: bool = False
    # Set once that re-check passed, before the change is attempted: from then on a retried step may
    # come after the change, so the re-check is not run again and the refusal above cannot happen.
    rechecked_before_change: bool = False


class ExecutionResult(BaseModel):
    """The seed's ExecutionResult: the outcome summary of one execution."""

    execution_id: str
    recommendation_id: str
    status: ExecutionStatus
    started_at: datetime
    completed_at: datetime | None
    success: bool
    error_message: str | None
    rollback_available: bool
    expected_savings: float | None
    actual_savings: float | None

    @classmethod
    def from_record(cls, record: ExecutionRecord) -> ExecutionResult:
        return cls(
            execution_id=record.execution_id,
            recommendation_id=record.recommendation_id,
            status=record.status,
            started_at=record.started_at,
            completed_at=record.completed_at,
            success=bool(record.success),
            error_message=record.error_message,
            rollback_available=record.rollback_available,
            expected_savings=record.expected_savings,
            actual_savings=record.actual_savings,
        )


class RollbackResult(BaseModel):
    execution_id: str
    success: bool
    status: ExecutionStatus
    restored: dict[str, Any] = Field(default_factory=dict)
    error_message: str | None = None


class AuditEvent(BaseModel):
    """One append-only entry of an execution's audit log."""

    execution_id: str
    timestamp: datetime
    event_id: str
    event_type: str
    actor: str
    detail: dict[str, Any] = Field(default_factory=dict)


class TerminateInstanceParameters(StrictModel):
    """Parameters of `terminate_instance`: none are needed; this one makes data loss explicit."""

    acknowledge_instance_store_loss: StrictBool = False
