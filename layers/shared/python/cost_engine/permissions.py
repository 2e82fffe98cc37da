"""The IAM statements the engine's functions need, as the code that makes the calls declares them.

Its own module, below both the executors (which declare theirs) and the pre-checks (which add what
their reads need), so that neither has to import the other for it; the stack turns them into each
function's policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Permission:
    """An IAM statement an executor needs. Resources may use {partition}, {region}, {account}."""

    actions: tuple[str, ...]
    resources: tuple[str, ...] = ("*",)
    conditions: dict[str, dict[str, Any]] | None = None
