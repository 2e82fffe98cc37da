"""Everything an executor's role needs, from one place: what the executor declares for its own
resource, what the common pre-checks read, and what its guardrail watch reads. The stack grants it,
cdk-nag's review and the template tests read it."""

from __future__ import annotations

from cost_engine.executors.base import AnyExecutor
from cost_engine.guardrails import guardrail_permissions
from cost_engine.permissions import Permission
from cost_engine.prechecks import precheck_permissions


def role_permissions(executor: type[AnyExecutor]) -> tuple[Permission, ...]:
    return (*executor.permissions, *precheck_permissions(executor), *guardrail_permissions(executor))
