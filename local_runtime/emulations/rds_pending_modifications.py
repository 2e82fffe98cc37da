"""RDS pending modifications: a DB instance class change waits for the maintenance window.

On AWS, `ModifyDBInstance(DBInstanceClass=…, ApplyImmediately=False)` (the default) does not change
the class: it shows the new class in `PendingModifiedValues` until the instance's maintenance window,
and `ApplyImmediately=True` applies it together with whatever was pending. moto 5.2.5 applies every
class change at once and has no `PendingModifiedValues`. This emulates exactly that, for the instance
class only; other modifications keep moto's behaviour. `run_maintenance_window()` stands in for the
window passing.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from local_runtime.runtime import LocalRuntime

DEFAULT_ACCOUNT_ID = "123456789012"
DEFAULT_REGION = "us-east-1"
_CLASS = "DBInstanceClass"
_PATCHED_MARK = "_cost_engine_pending_modifications"


def _pending(database: Any) -> dict[str, Any]:
    return dict(getattr(database, "pending_modified_values", None) or {})


def _with_pending_class(original: Any) -> Any:
    def modify_db_instance(self: Any, db_instance_identifier: str, db_kwargs: dict[str, Any]) -> Any:
        database = self.describe_db_instances(db_instance_identifier)[0]
        pending = _pending(database)
        kwargs = dict(db_kwargs)
        new_class = kwargs.get("db_instance_class")
        if kwargs.get("apply_immediately"):
            # As on AWS: applying immediately also applies what was waiting for the window.
            if new_class is None and _CLASS in pending:
                kwargs["db_instance_class"] = pending[_CLASS]
            pending.pop(_CLASS, None)
        elif new_class is not None:
            del kwargs["db_instance_class"]
            if new_class == database.db_instance_class:
                pending.pop(_CLASS, None)  # asking for the current class again cancels the pending change
            else:
                pending[_CLASS] = new_class
        # A new dict each time: moto's read replicas share their source's attributes by copy.copy.
        database.pending_modified_values = pending
        return original(self, db_instance_identifier, kwargs)

    setattr(modify_db_instance, _PATCHED_MARK, True)
    modify_db_instance.__wrapped__ = original  # type: ignore[attr-defined]
    return modify_db_instance


def patch() -> None:
    """Make moto's RDS backend keep class changes pending unless applied immediately. Idempotent."""
    from moto.rds.models import RDSBackend

    if not getattr(RDSBackend.modify_db_instance, _PATCHED_MARK, False):
        RDSBackend.modify_db_instance = _with_pending_class(RDSBackend.modify_db_instance)  # type: ignore[method-assign]


def unpatch() -> None:
    """Back to moto's own behaviour (for tests that patch in-process)."""
    from moto.rds.models import RDSBackend

    if getattr(RDSBackend.modify_db_instance, _PATCHED_MARK, False):
        RDSBackend.modify_db_instance = RDSBackend.modify_db_instance.__wrapped__  # type: ignore[method-assign,attr-defined]


def run_maintenance_window(
    db_instance_identifier: str | None = None,
    *,
    account_id: str = DEFAULT_ACCOUNT_ID,
    region: str = DEFAULT_REGION,
) -> list[str]:
    """Apply the pending class changes (of one DB instance, or all), as the maintenance window would.
    Returns the identifiers of the DB instances that changed."""
    from moto.rds.models import rds_backends

    changed: list[str] = []
    databases: MutableMapping[str, Any] = rds_backends[account_id][region].databases
    for identifier, database in databases.items():
        if db_instance_identifier not in (None, identifier):
            continue
        pending = _pending(database)
        if _CLASS in pending:
            database.db_instance_class = pending.pop(_CLASS)
            database.pending_modified_values = pending
            changed.append(identifier)
    return changed


def install(runtime: LocalRuntime) -> None:
    patch()
