"""`rightsize_database`: change an RDS DB instance's class, after a DB snapshot.

By default the change waits for the instance's maintenance window (`ApplyImmediately=False`, as on
AWS): the execution completes once AWS shows it pending, and the record says when it happens. With
`apply_immediately` it happens now (a few minutes of unavailability, a failover with Multi-AZ).
Rollback returns to the original class the same way: a pending change is cancelled by asking for
the current class again; an applied one is changed back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias

from botocore.exceptions import ClientError
from pydantic import StrictBool, StringConstraints

from cost_engine.aws import aws_failure, error_code
from cost_engine.cost_scope import RDS, CostScope, rds_arn
from cost_engine.errors import ActionFailed, TransientError
from cost_engine.executors.base import BaseExecutor, Permission, Polling, StepRecord
from cost_engine.executors.registry import register_executor
from cost_engine.guardrails import RDS_INSTANCE_THRESHOLDS
from cost_engine.models import (
    ExecutionPlan,
    MetricThreshold,
    Recommendation,
    RecommendationType,
    RiskLevel,
    RollbackPlan,
    StrictModel,
    ValidationResult,
    VerificationResult,
)
from cost_engine.prechecks import Resource, ResourceKind
from cost_engine.pricing import price_catalog
from cost_engine.rds_databases import (
    DB_ARN,
    DB_SNAPSHOT_ARN,
    ENGINE_DB_SNAPSHOT_ARN,
    FAILED_DB_STATES,
    RdsDatabases,
    backup_snapshot_id,
    pending_instance_class,
)

if TYPE_CHECKING:
    from mypy_boto3_rds.type_defs import DBInstanceTypeDef

    from cost_engine.aws import AwsClients
    from cost_engine.settings import Settings

# db.<family>.<size>, and the longer Oracle forms such as db.r5.large.tpc2.mem2x.
DbInstanceClass = Annotated[str, StringConstraints(pattern=r"^db\.[a-z0-9]+(\.[a-z0-9]+)+$")]


class RightsizeDatabaseParameters(StrictModel):
    """Parameters of `rightsize_database`."""

    target_instance_class: DbInstanceClass
    # Never immediately by surprise: as on AWS, the default is the maintenance window.
    apply_immediately: StrictBool = False


class DatabaseClassBackup(StepRecord):
    """The DB snapshot taken before the change, and the original class to return to."""

    execution_id: str
    db_instance_identifier: str
    snapshot_id: str
    original_instance_class: str
    target_instance_class: str
    multi_az: bool
    apply_immediately: bool
    preferred_maintenance_window: str | None


class DatabaseClassChange(StepRecord):
    """The class change asked for, and when it takes effect."""

    db_instance_identifier: str
    original_instance_class: str
    target_instance_class: str
    apply_immediately: bool
    preferred_maintenance_window: str | None
    takes_effect: str
    snapshot_id: str


class DatabaseUntouched(StepRecord):
    """The rollback of an execution that recorded no backup: it changed nothing, so nothing is undone."""

    db_instance_identifier: str
    changed: Literal[False]


class DatabaseClassRestore(StepRecord):
    """The rollback to the original class (a pending change cancelled, an applied one changed back)."""

    db_instance_identifier: str
    changed: Literal[True]
    original_instance_class: str
    apply_immediately: bool
    takes_effect: str


# Told apart by `changed`, as the stored record always was.
DatabaseClassRollback: TypeAlias = DatabaseUntouched | DatabaseClassRestore


def takes_effect(apply_immediately: bool, maintenance_window: str | None) -> str:
    if apply_immediately:
        return "immediately"
    return f"in the maintenance window {maintenance_window or '(not set)'} (UTC)"


def _pending_summary(database: DBInstanceTypeDef) -> list[str]:
    pending = database.get("PendingModifiedValues", {})
    return [f"{name}={value}" for name, value in pending.items() if value not in (None, "", [], {})]


@register_executor
class RightsizeDatabaseExecutor(
    BaseExecutor[
        RightsizeDatabaseParameters,
        "DBInstanceTypeDef",
        DatabaseClassBackup,
        DatabaseClassChange,
        DatabaseClassRollback,
    ]
):
    recommendation_type = RecommendationType.RIGHTSIZE_DATABASE
    watches = True
    savings_method = "the DB instance's cost at its old class before, against its new class after"
    billing_service = RDS
    flow = (
        "Validate → (dry run → report) → approval → DB snapshot → modify the DB instance class "
        "(now, or pending for the maintenance window) → poll → verify → record; Catch → rollback "
        "(back to the original class, or the pending change cancelled)."
    )
    resource_name = "RDS DB instance"
    risk_level = RiskLevel.MEDIUM
    # A DB snapshot and a class change (with a Multi-AZ failover) take tens of minutes, or hours.
    polling = Polling(first_seconds=30, longest_seconds=300, budget_seconds=4 * 3600)
    permissions = (
        Permission(("rds:DescribeDBInstances",), (DB_ARN,)),
        Permission(("rds:DescribeDBSnapshots",), (DB_ARN, DB_SNAPSHOT_ARN)),
        # Orderable options are public catalog data: the action takes no resource ARN.
        Permission(("rds:DescribeOrderableDBInstanceOptions",)),
        Permission(("rds:CreateDBSnapshot",), (DB_ARN, ENGINE_DB_SNAPSHOT_ARN)),
        # Tags given to CreateDBSnapshot need AddTagsToResource on the new snapshot.
        Permission(("rds:AddTagsToResource",), (ENGINE_DB_SNAPSHOT_ARN,)),
        Permission(("rds:ModifyDBInstance",), (DB_ARN,)),
    )

    def __init__(self, clients: AwsClients, settings: Settings | None = None) -> None:
        super().__init__(clients, settings)
        self.databases = RdsDatabases(clients.rds, clients.region)

    # -- validate and plan ---------------------------------------------------------------------

    def _orderable(self, engine: str, engine_version: str | None, instance_class: str) -> bool | None:
        """Whether AWS offers `instance_class` for this engine and version, from
        DescribeOrderableDBInstanceOptions; None when that lists nothing at all for the engine.
        (moto 5.2.5 lists options only for aurora-postgresql and neptune, so for the other engines
        the caller falls back to the price catalog; on AWS every engine has options.)"""
        request: dict[str, Any] = {"Engine": engine, "DBInstanceClass": instance_class, "MaxRecords": 20}
        if engine_version:
            request["EngineVersion"] = engine_version
        try:
            if self.clients.rds.describe_orderable_db_instance_options(**request)["OrderableDBInstanceOptions"]:
                return True
            known_engine = self.clients.rds.describe_orderable_db_instance_options(Engine=engine, MaxRecords=20)
        except ClientError as error:
            raise aws_failure("DescribeOrderableDBInstanceOptions", error) from error
        return False if known_engine["OrderableDBInstanceOptions"] else None

    def resource(self, recommendation: Recommendation) -> Resource:
        return Resource(ResourceKind.RDS_DB_INSTANCE, recommendation.resource_id)

    def find(self, recommendation: Recommendation, params: RightsizeDatabaseParameters) -> DBInstanceTypeDef | None:
        return self.databases.get(recommendation.resource_id)

    def check(
        self, recommendation: Recommendation, params: RightsizeDatabaseParameters, database: DBInstanceTypeDef
    ) -> ValidationResult:
        identifier = recommendation.resource_id
        errors: list[str] = []
        warnings: list[str] = []
        status = database["DBInstanceStatus"]
        current = database["DBInstanceClass"]
        target = params.target_instance_class
        if status != "available":
            errors.append(f"DB instance {identifier} is '{status}': only an available DB instance is resized")
        if cluster := database.get("DBClusterIdentifier"):
            errors.append(
                f"DB instance {identifier} is a member of DB cluster '{cluster}': resize cluster members through "
                "the cluster (a DB snapshot of one member is not possible)"
            )
        if target == current:
            errors.append(f"DB instance {identifier} is already {current}: nothing to change")
        if pending := _pending_summary(database):
            errors.append(
                f"DB instance {identifier} has pending modifications ({', '.join(pending)}): they would be applied "
                "together with this change; let them apply in the maintenance window, or apply them first"
            )
        if target != current:
            orderable = self._orderable(database["Engine"], database.get("EngineVersion"), target)
            if orderable is None:
                orderable = target in price_catalog().rds_hourly
            if not orderable:
                errors.append(
                    f"{target} is not offered for {database['Engine']} {database.get('EngineVersion', '')}".rstrip()
                    + ": choose a class listed by DescribeOrderableDBInstanceOptions for this engine and version"
                )
        savings = self._monthly_savings(current, target, bool(database.get("MultiAZ")))
        if savings is not None and savings < 0:
            warnings.append(f"{target} costs more than {current}: this change adds ${-savings}/month")
        if params.apply_immediately:
            warnings.append(
                f"applied immediately: DB instance {identifier} is unavailable for a few minutes while its class "
                "changes (with Multi-AZ, a failover)"
            )
        return ValidationResult(
            valid=not errors,
            errors=errors,
            warnings=warnings,
            risk_level=self.risk_level,
            estimated_duration=20 if params.apply_immediately else 5,
        )

    def _monthly_savings(self, current: str, target: str, multi_az: bool) -> float | None:
        catalog = price_catalog()
        before = catalog.db_instance_monthly(current, multi_az)
        after = catalog.db_instance_monthly(target, multi_az)
        return None if before is None or after is None else round(before - after, 2)

    def plan(self, recommendation: Recommendation, execution_id: str) -> ExecutionPlan:
        params = self.parameters(recommendation)
        identifier = recommendation.resource_id
        database = self.databases.require(identifier)
        current = database["DBInstanceClass"]
        target = params.target_instance_class
        multi_az = bool(database.get("MultiAZ"))
        window = database.get("PreferredMaintenanceWindow")
        when = takes_effect(params.apply_immediately, window)
        savings = self._monthly_savings(current, target, multi_az)
        basis = price_catalog().basis
        if savings is None:
            catalog = price_catalog().rds_hourly
            missing = ", ".join(c for c in (current, target) if c not in catalog)
            savings = recommendation.estimated_monthly_savings
            basis = f"no catalog price for {missing}: the recommendation's own estimate"
        change = (
            f"Modify {identifier} to {target} with ApplyImmediately=true: the change happens now"
            if params.apply_immediately
            else f"Modify {identifier} to {target} with ApplyImmediately=false: the change is pending until the "
            f"maintenance window {window} (UTC)"
        )
        done = (
            f"Wait until {identifier} is {target} and available"
            if params.apply_immediately
            else f"Wait until AWS shows {target} as the pending class of {identifier}"
        )
        return ExecutionPlan(
            summary=f"Resize RDS DB instance {identifier} from {current} to {target} {when}, after a DB snapshot",
            actions=[
                f"Create manual DB snapshot '{backup_snapshot_id(execution_id)}' of {identifier} and record its "
                f"class {current}",
                "Wait until the snapshot is available",
                change,
                done,
                f"Verify {identifier} is {target}"
                + ("" if params.apply_immediately else " or has it pending for the maintenance window"),
            ],
            backup=[
                f"Manual DB snapshot of {identifier} ({database.get('AllocatedStorage', 0)} GiB), kept afterwards",
                f"The original class {current}",
            ],
            rollback_plan=RollbackPlan(
                execution_id=execution_id,
                rollback_steps=[
                    f"Modify {identifier} back to {current} with the same ApplyImmediately "
                    f"({str(params.apply_immediately).lower()}); a change still pending is cancelled by this",
                    f"Wait until {identifier} is back to {current}"
                    + ("" if params.apply_immediately else " (or has it pending for the maintenance window)"),
                ],
                estimated_duration=20 if params.apply_immediately else 5,
                risk_level=RiskLevel.LOW,
                requires_approval=False,
            ),
            estimated_monthly_savings=savings,
            savings_basis=basis,
            resource={
                "db_instance_identifier": identifier,
                "engine": database["Engine"],
                "instance_class": current,
                "target_instance_class": target,
                "multi_az": multi_az,
                "apply_immediately": params.apply_immediately,
                "preferred_maintenance_window": window,
                "takes_effect": when,
            },
        )

    # -- backup --------------------------------------------------------------------------------

    def backup(self, recommendation: Recommendation, execution_id: str) -> DatabaseClassBackup:
        params = self.parameters(recommendation)
        identifier = recommendation.resource_id
        database = self.databases.require(identifier)
        snapshot_id = self.databases.ensure_backup_snapshot(identifier, execution_id, "rightsize_database")
        return DatabaseClassBackup(
            execution_id=execution_id,
            db_instance_identifier=identifier,
            snapshot_id=snapshot_id,
            original_instance_class=database["DBInstanceClass"],
            target_instance_class=params.target_instance_class,
            multi_az=bool(database.get("MultiAZ")),
            apply_immediately=params.apply_immediately,
            preferred_maintenance_window=database.get("PreferredMaintenanceWindow"),
        )

    def backup_ready(self, recommendation: Recommendation, backup: DatabaseClassBackup) -> bool:
        if not self.databases.snapshot_ready(backup.snapshot_id, recommendation.resource_id):
            return False
        # A snapshot can hold the instance in 'backing-up' for a while; it can be modified only after.
        return self.databases.require(recommendation.resource_id)["DBInstanceStatus"] == "available"

    # -- act -----------------------------------------------------------------------------------

    def _modify_class(self, identifier: str, instance_class: str, apply_immediately: bool) -> None:
        try:
            self.clients.rds.modify_db_instance(
                DBInstanceIdentifier=identifier, DBInstanceClass=instance_class, ApplyImmediately=apply_immediately
            )
        except ClientError as error:
            if error_code(error) in ("InvalidDBInstanceState", "InvalidDBInstanceStateFault"):
                # Busy with something else for a moment (a backup, a previous change): worth retrying.
                raise TransientError(f"ModifyDBInstance: DB instance {identifier} is busy: {error}") from error
            raise aws_failure("ModifyDBInstance", error) from error

    def apply(self, recommendation: Recommendation, backup: DatabaseClassBackup) -> DatabaseClassChange:
        identifier = recommendation.resource_id
        target = backup.target_instance_class
        immediately = backup.apply_immediately
        database = self.databases.require(identifier)
        # A retried step finds the change already made (or already pending) and does not ask again.
        requested = target in (database["DBInstanceClass"], pending_instance_class(database))
        if not requested:
            self._modify_class(identifier, target, immediately)
        return DatabaseClassChange(
            db_instance_identifier=identifier,
            original_instance_class=backup.original_instance_class,
            target_instance_class=target,
            apply_immediately=immediately,
            preferred_maintenance_window=backup.preferred_maintenance_window,
            takes_effect=takes_effect(immediately, backup.preferred_maintenance_window),
            snapshot_id=backup.snapshot_id,
        )

    def _raise_if_failed(self, database: DBInstanceTypeDef) -> None:
        if database["DBInstanceStatus"] in FAILED_DB_STATES:
            raise ActionFailed(f"DB instance {database['DBInstanceIdentifier']} is '{database['DBInstanceStatus']}'")

    def _at(self, database: DBInstanceTypeDef, instance_class: str, apply_immediately: bool) -> bool:
        """True once the DB is `instance_class` (available, when applied immediately), or, in the
        maintenance window case, has it pending."""
        pending = pending_instance_class(database)
        if apply_immediately:
            return (
                database["DBInstanceClass"] == instance_class
                and pending is None
                and database["DBInstanceStatus"] == "available"
            )
        return pending == instance_class or (database["DBInstanceClass"] == instance_class and pending is None)

    def apply_done(self, recommendation: Recommendation, action: DatabaseClassChange) -> bool:
        database = self.databases.require(action.db_instance_identifier)
        self._raise_if_failed(database)
        return self._at(database, action.target_instance_class, action.apply_immediately)

    def verify(self, recommendation: Recommendation, action: DatabaseClassChange) -> VerificationResult:
        checks: list[str] = []
        failures: list[str] = []
        identifier = action.db_instance_identifier
        target = action.target_instance_class
        database = self.databases.require(identifier)
        current = database["DBInstanceClass"]
        pending = pending_instance_class(database)
        status = database["DBInstanceStatus"]
        if current == target and pending is None:
            (checks if status == "available" else failures).append(f"DB instance {identifier} is {target}, {status}")
        elif not action.apply_immediately and pending == target:
            checks.append(
                f"DB instance {identifier} is {current} with {target} pending: it changes {action.takes_effect}"
            )
        else:
            failures.append(
                f"DB instance {identifier} is {current}"
                + (f" with {pending} pending" if pending else "")
                + f", not {target}"
            )
        snapshot = self.databases.snapshot_status(action.snapshot_id)
        (checks if snapshot == "available" else failures).append(f"DB snapshot {action.snapshot_id} is {snapshot}")
        return VerificationResult(passed=not failures, checks=checks, failures=failures)

    def cost_scope(self, recommendation: Recommendation, action: Any) -> CostScope:
        arn = rds_arn(recommendation.region, recommendation.account_id, recommendation.resource_id)
        return CostScope(self.savings_method, self.billing_service, (arn,))

    def guardrail_thresholds(self, recommendation: Recommendation, action: Any) -> list[MetricThreshold]:
        return list(RDS_INSTANCE_THRESHOLDS)

    def expected_savings(self, recommendation: Recommendation, backup: DatabaseClassBackup) -> float | None:
        # The run-rate once the new class is in place (after the maintenance window when it waits for it).
        return self._monthly_savings(backup.original_instance_class, backup.target_instance_class, backup.multi_az)

    # -- rollback ------------------------------------------------------------------------------

    def _return_to(self, database: DBInstanceTypeDef, original: str, apply_immediately: bool) -> None:
        """Ask for the original class again, unless that is where the DB is or is already heading."""
        if database["DBInstanceStatus"] != "available":
            return  # a change in progress: asked again on the next check
        pending = pending_instance_class(database)
        if pending == original or (database["DBInstanceClass"] == original and pending is None):
            return
        # With a change still pending, asking for the current (original) class cancels it.
        self._modify_class(database["DBInstanceIdentifier"], original, apply_immediately)

    def rollback(
        self,
        recommendation: Recommendation,
        backup: DatabaseClassBackup | None,
        action: DatabaseClassChange | None,
    ) -> DatabaseClassRollback:
        identifier = recommendation.resource_id
        if backup is None:
            # The backup step never recorded anything: nothing was changed either.
            return DatabaseUntouched(db_instance_identifier=identifier, changed=False)
        original = backup.original_instance_class
        immediately = backup.apply_immediately
        database = self.databases.require(identifier)
        self._raise_if_failed(database)
        pending = pending_instance_class(database)
        if database["DBInstanceClass"] == original and pending is None:
            when = f"nothing to undo: already {original}"
        elif immediately or pending == backup.target_instance_class:
            when = "immediately"  # cancelling a pending change takes effect at once
        else:
            when = takes_effect(False, database.get("PreferredMaintenanceWindow"))
        self._return_to(database, original, immediately)
        return DatabaseClassRestore(
            db_instance_identifier=identifier,
            changed=True,
            original_instance_class=original,
            apply_immediately=immediately,
            takes_effect=when,
        )

    def rollback_done(self, recommendation: Recommendation, rollback: DatabaseClassRollback) -> bool:
        if isinstance(rollback, DatabaseUntouched):
            return True
        database = self.databases.require(rollback.db_instance_identifier)
        self._raise_if_failed(database)
        original = rollback.original_instance_class
        if self._at(database, original, rollback.apply_immediately):
            return True
        self._return_to(database, original, rollback.apply_immediately)
        return False
