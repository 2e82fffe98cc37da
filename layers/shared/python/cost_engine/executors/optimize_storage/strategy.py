"""What each kind of storage implements: the executor's steps, for that kind."""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime
from typing import TYPE_CHECKING, Any

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


# -- the strategies ------------------------------------------------------------------------------------


class StorageStrategy(ABC):
    """One kind of storage: the executor's steps, for that kind."""

    kind: str

    def __init__(self, clients: AwsClients) -> None:
        self.clients = clients

    @abstractmethod
    def validate(
        self, recommendation: Recommendation, params: OptimizeStorageParameters
    ) -> tuple[list[str], list[str]]:
        """(errors, warnings) of read-only checks."""

    @abstractmethod
    def plan(
        self, recommendation: Recommendation, params: OptimizeStorageParameters, execution_id: str
    ) -> ExecutionPlan:
        """The dry-run report."""

    @abstractmethod
    def backup(self, recommendation: Recommendation, execution_id: str) -> dict[str, Any]:
        """Record exactly what a rollback must put back."""

    @abstractmethod
    def apply(
        self, recommendation: Recommendation, params: OptimizeStorageParameters, backup: dict[str, Any]
    ) -> dict[str, Any]:
        """Make the change, unless the real state shows it is already made."""

    @abstractmethod
    def apply_done(self, action: dict[str, Any]) -> bool:
        """True once the change has taken effect."""

    @abstractmethod
    def verify(self, action: dict[str, Any]) -> VerificationResult:
        """Read back from AWS that the resource is as intended."""

    @abstractmethod
    def rollback(self, recommendation: Recommendation, backup: dict[str, Any] | None) -> dict[str, Any]:
        """Put back what the backup recorded."""

    @abstractmethod
    def rollback_done(self, rollback: dict[str, Any]) -> bool:
        """True once the resource is as recorded again."""

    @abstractmethod
    def measure_savings(self, recommendation: Recommendation, backup: dict[str, Any]) -> float | None:
        """Monthly savings of the verified change."""
