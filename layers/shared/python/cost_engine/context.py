"""What the engine logic works with: settings, stores, AWS clients and a way to get an executor.

A function makes its context when it loads, from its settings (checked then), and keeps it for the life of
its instance (a Lambda container). Making it makes nothing else: the stores, the AWS clients and the
executors are made on first use and kept, so that loading a function reaches for no AWS service and no
invocation makes them again (making a client and its connections costs more than most calls it makes).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from cost_engine.approval_links import ApprovalLinks, SecretKey
from cost_engine.audit_trail import StatusChangeLog
from cost_engine.aws import AwsClients
from cost_engine.events import StatusEventPublisher
from cost_engine.executors import executor_class
from cost_engine.limits import Limits, task_waker
from cost_engine.models import Recommendation, RecommendationType
from cost_engine.purchase_limits import PurchaseLimits
from cost_engine.settings import Settings
from cost_engine.stores.audit import AuditStore
from cost_engine.stores.executions import ExecutionStore, chain_observers
from cost_engine.stores.limits import LimitsStore
from cost_engine.stores.purchase_ledger import PurchaseLedgerStore
from cost_engine.stores.recommendations import RecommendationStore

if TYPE_CHECKING:
    from cost_engine.executors.base import AnyExecutor


@dataclass(frozen=True)
class _Records:
    """The stores that act on one another's writes, made together."""

    executions: ExecutionStore
    audit: AuditStore
    limits: Limits


class EngineContext:
    def __init__(self, settings: Settings) -> None:
        # The one settings object of the function: a change to it (a test's) reaches everything made here.
        self.settings = settings
        # By region: the engine's own, and each region an executor acted in.
        self._clients: dict[str, AwsClients] = {}
        # By type and region: an executor keeps nothing of an execution, so one serves every step.
        self._executors: dict[tuple[RecommendationType, str], AnyExecutor] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> EngineContext:
        return cls(settings)

    @property
    def clients(self) -> AwsClients:
        """The clients of the engine's own region, where its tables, topic, bus and state machines are."""
        return self.clients_in(self.settings.region)

    def clients_in(self, region: str) -> AwsClients:
        clients = self._clients.get(region)
        return clients if clients is not None else self._clients.setdefault(region, AwsClients(region))

    @property
    def executions(self) -> ExecutionStore:
        return self._records.executions

    @property
    def audit(self) -> AuditStore:
        return self._records.audit

    @property
    def limits(self) -> Limits:
        return self._records.limits

    @cached_property
    def recommendations(self) -> RecommendationStore:
        return RecommendationStore(self.settings.recommendations_table, self.settings.region)

    @cached_property
    def links(self) -> ApprovalLinks | None:
        """None when no signing key is configured: approvals then go through the API only."""
        secret_arn = self.settings.approval_secret_arn
        if not secret_arn:
            return None
        clients = self.clients
        key = SecretKey(lambda: clients.secretsmanager.get_secret_value(SecretId=secret_arn)["SecretString"])
        return ApprovalLinks(key, self.settings.api_base_url)

    @cached_property
    def _records(self) -> _Records:
        settings, clients = self.settings, self.clients
        publisher = StatusEventPublisher(clients.events, settings.event_bus_name) if settings.event_bus_name else None
        executions = ExecutionStore(settings.executions_table, settings.region)
        audit = AuditStore(settings.audit_table, settings.region)
        # A freed acting slot wakes the run it is handed to through Step Functions (its task token).
        limits = Limits(
            LimitsStore(settings.limits_table, settings.region),
            settings,
            executions,
            audit,
            task_waker(lambda: clients.stepfunctions),
        )
        # Whoever writes a status change: it is logged (a failed log write does not stop what follows),
        # the limits release what a finished execution held (that must happen, and so must releasing or
        # keeping what an RI purchase reserved of its period's limit), then it is announced.
        ledger = PurchaseLedgerStore(settings.limits_table, settings.region)
        purchase_limits = PurchaseLimits(ledger, settings, executions)
        executions.on_transition = chain_observers(
            StatusChangeLog(audit), limits.on_transition, purchase_limits.on_transition, publisher
        )
        return _Records(executions=executions, audit=audit, limits=limits)

    def executor_for(self, recommendation: Recommendation) -> AnyExecutor:
        """The executor of the recommendation's type, with the clients of the recommendation's own region
        (the resource lives there, not where the engine runs)."""
        key = (recommendation.type, recommendation.region)
        executor = self._executors.get(key)
        if executor is None:
            made = executor_class(recommendation.type)(self.clients_in(recommendation.region), self.settings)
            executor = self._executors.setdefault(key, made)
        return executor
