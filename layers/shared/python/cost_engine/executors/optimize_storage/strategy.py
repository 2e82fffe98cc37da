"""What each kind of storage implements: the executor's steps, for that kind, with its own records."""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from cost_engine.errors import ActionFailed
from cost_engine.executors.base import StepRecord
from cost_engine.executors.optimize_storage.parameters import OptimizeStorageParameters
from cost_engine.models import (
    ExecutionPlan,
    Recommendation,
    VerificationResult,
)

if TYPE_CHECKING:
    from cost_engine.aws import AwsClients


def as_datetime(value: datetime | str) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def json_safe(value: Any) -> Any:
    """What AWS answered, as the execution record can keep it (timestamps as ISO 8601 strings, which
    boto3 accepts back as timestamps)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items() if k != "ResponseMetadata"}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


RecordT = TypeVar("RecordT", bound=StepRecord)


def recorded(model: type[RecordT], record: StepRecord, recommendation: Recommendation) -> RecordT:
    """A step's record as the strategy of the recommendation's resource reads it: the one it wrote (the
    step runner parses a stored record into the model of the kind that fits it)."""
    if not isinstance(record, model):
        raise ActionFailed(
            f"the record of {recommendation.resource_id} is a {type(record).__name__}, not the {model.__name__} "
            "its kind of storage writes"
        )
    return record


# -- the strategies ------------------------------------------------------------------------------------

T = TypeVar("T")  # the resource as validation finds it
B = TypeVar("B", bound=StepRecord)  # what the backup records
A = TypeVar("A", bound=StepRecord)  # what the change records
R = TypeVar("R", bound=StepRecord)  # what the rollback records


class StorageStrategy(ABC, Generic[T, B, A, R]):
    """One kind of storage: the executor's steps, for that kind, typed with that kind's records."""

    kind: ClassVar[str]

    def __init__(self, clients: AwsClients) -> None:
        self.clients = clients

    @abstractmethod
    def find(self, recommendation: Recommendation) -> T | None:
        """The resource as it is now; None when it does not exist."""

    @abstractmethod
    def not_found(self, recommendation: Recommendation) -> str:
        """Why a recommendation whose resource does not exist is refused."""

    @abstractmethod
    def check(
        self, recommendation: Recommendation, params: OptimizeStorageParameters, resource: T
    ) -> tuple[list[str], list[str]]:
        """(errors, warnings) of read-only checks of a resource that exists."""

    @abstractmethod
    def plan(
        self, recommendation: Recommendation, params: OptimizeStorageParameters, execution_id: str
    ) -> ExecutionPlan:
        """The dry-run report."""

    @abstractmethod
    def backup(self, recommendation: Recommendation, execution_id: str) -> B:
        """Record exactly what a rollback must put back."""

    @abstractmethod
    def apply(self, recommendation: Recommendation, params: OptimizeStorageParameters, backup: B) -> A:
        """Make the change, unless the real state shows it is already made."""

    @abstractmethod
    def apply_done(self, action: A) -> bool:
        """True once the change has taken effect."""

    @abstractmethod
    def verify(self, action: A) -> VerificationResult:
        """Read back from AWS that the resource is as intended."""

    @abstractmethod
    def rollback(self, recommendation: Recommendation, params: OptimizeStorageParameters, backup: B | None) -> R:
        """Put back what the backup recorded."""

    @abstractmethod
    def rollback_done(self, rollback: R) -> bool:
        """True once the resource is as recorded again."""

    @abstractmethod
    def expected_savings(
        self, recommendation: Recommendation, params: OptimizeStorageParameters, backup: B
    ) -> float | None:
        """Monthly savings of the verified change."""
