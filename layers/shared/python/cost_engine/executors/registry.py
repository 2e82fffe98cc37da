"""The registry of executors: one registered class per recommendation type."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from cost_engine.errors import UnsupportedType
from cost_engine.models import RecommendationType

if TYPE_CHECKING:
    from cost_engine.executors.base import AnyExecutor

EXECUTORS: dict[RecommendationType, type[AnyExecutor]] = {}

E = TypeVar("E", bound="type[AnyExecutor]")


def register_executor(cls: E) -> E:
    """Class decorator: make `cls` the executor of its `recommendation_type`."""
    existing = EXECUTORS.get(cls.recommendation_type)
    if existing is not None and existing is not cls:
        raise RuntimeError(f"{cls.__name__} and {existing.__name__} both claim {cls.recommendation_type.value}")
    EXECUTORS[cls.recommendation_type] = cls
    return cls


def executor_class(recommendation_type: RecommendationType) -> type[AnyExecutor]:
    try:
        return EXECUTORS[recommendation_type]
    except KeyError:
        supported = ", ".join(t.value for t in EXECUTORS) or "none"
        raise UnsupportedType(
            f"recommendation type '{recommendation_type.value}' has no executor yet (supported: {supported})"
        ) from None
