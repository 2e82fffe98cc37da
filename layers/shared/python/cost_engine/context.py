"""What the engine logic works with: settings, stores and a way to get an executor."""

from __future__ import annotations

from dataclasses import dataclass, field

from cost_engine.approval_links import ApprovalLinks, SecretKey
from cost_engine.audit_trail import StatusChangeLog
from cost_engine.aws import AwsClients
from cost_engine.events import StatusEventPublisher
from cost_engine.executors import executor_class
from cost_engine.executors.base import AnyExecutor
from cost_engine.limits import Limits
from cost_engine.models import Recommendation
from cost_engine.purchase_limits import PurchaseLimits
from cost_engine.settings import Settings
from cost_engine.stores.audit import AuditStore
from cost_engine.stores.executions import ExecutionStore, chain_observers
from cost_engine.stores.limits import LimitsStore
from cost_engine.stores.purchase_ledger import PurchaseLedgerStore
from cost_engine.stores.recommendations import RecommendationStore


@dataclass
class EngineContext:
    settings: Settings
    executions: ExecutionStore
    audit: AuditStore
    recommendations: RecommendationStore
    clients: AwsClients
    limits: Limits
    # None when no signing key is configured: approvals then go through the API only.
    links: ApprovalLinks | None = None
    # The clients of each other region an executor acted in: made once per function instance (a
    # Lambda container), not on every step, as making a client and its connections costs more than
    # most of the calls it makes.
    _regional_clients: dict[str, AwsClients] = field(default_factory=dict, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> EngineContext:
        clients = AwsClients(settings.region)
        links = None
        secret_arn = settings.approval_secret_arn
        if secret_arn:
            key = SecretKey(lambda: clients.secretsmanager.get_secret_value(SecretId=secret_arn)["SecretString"])
            links = ApprovalLinks(key, settings.api_base_url)
        publisher = StatusEventPublisher(clients.events, settings.event_bus_name) if settings.event_bus_name else None
        executions = ExecutionStore(settings.executions_table, settings.region)
        audit = AuditStore(settings.audit_table, settings.region)
        limits = Limits(LimitsStore(settings.limits_table, settings.region), settings, executions, audit)
        # Whoever writes a status change: it is logged (a failed log write does not stop what follows),
        # the limits release what a finished execution held (that must happen, and so must releasing or
        # keeping what an RI purchase reserved of its period's limit), then it is announced.
        ledger = PurchaseLedgerStore(settings.limits_table, settings.region)
        purchase_limits = PurchaseLimits(ledger, settings, executions)
        executions.on_transition = chain_observers(
            StatusChangeLog(audit), limits.on_transition, purchase_limits.on_transition, publisher
        )
        return cls(
            settings=settings,
            executions=executions,
            audit=audit,
            recommendations=RecommendationStore(settings.recommendations_table, settings.region),
            clients=clients,
            limits=limits,
            links=links,
        )

    def executor_for(self, recommendation: Recommendation) -> AnyExecutor:
        # The recommendation's own region: the resource lives there, not where the engine runs.
        region = recommendation.region
        clients = (
            self.clients
            if region == self.clients.region
            else self._regional_clients.setdefault(region, AwsClients(region))
        )
        return executor_class(recommendation.type)(clients, self.settings)
