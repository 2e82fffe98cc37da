"""What the audit log records by itself, whatever code runs: who is acting for which execution, and
every status change.

Who acts is a context variable: the state machine's step runner sets it around each step, the API
around a person's decision. The AWS call hook (`cost_engine.aws_calls`) and the status change
observer here read it, so neither needs the actor passed through every executor and store.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from cost_engine.models import ExecutionRecord
from cost_engine.stores.audit import AuditStore

logger = logging.getLogger(__name__)

# The event types this module and `cost_engine.aws_calls` write.
STATUS_CHANGED = "status_changed"
AWS_CALL = "aws_call"
# The actor of a status change written outside any step or decision (none is known to exist).
ENGINE_ACTOR = "engine"


@dataclass(frozen=True)
class AuditScope:
    """Who is acting for which execution, and the log their actions go to."""

    execution_id: str
    actor: str
    audit: AuditStore


_scope: ContextVar[AuditScope | None] = ContextVar("cost_engine_audit_scope", default=None)


@contextmanager
def acting(execution_id: str, actor: str, audit: AuditStore) -> Iterator[AuditScope]:
    """Within the block, AWS calls and status changes are logged for this execution as `actor`."""
    scope = AuditScope(execution_id, actor, audit)
    token = _scope.set(scope)
    try:
        yield scope
    finally:
        _scope.reset(token)


def current_scope() -> AuditScope | None:
    return _scope.get()


class StatusChangeLog:
    """A transition observer: `status_changed {from, to}` for every status change that was written,
    so the status history is in the log whichever code changed it and whatever else it logged."""

    def __init__(self, audit: AuditStore) -> None:
        self.audit = audit

    def __call__(self, before: ExecutionRecord, after: ExecutionRecord) -> None:
        scope = current_scope()
        actor = scope.actor if scope is not None and scope.execution_id == after.execution_id else ENGINE_ACTOR
        try:
            self.audit.append(
                after.execution_id, STATUS_CHANGED, actor, {"from": before.status.value, "to": after.status.value}
            )
        except (BotoCoreError, ClientError):
            # The change is written and stands: raising now would fail the step after its work was
            # done, and its retry (already in the new status) would not log it either. So the
            # function's log keeps what the audit log could not.
            logger.exception(
                "status change of %s (%s → %s) not in the audit log",
                after.execution_id,
                before.status.value,
                after.status.value,
            )
