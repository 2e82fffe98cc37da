"""Executors, one per recommendation type. Importing this package registers them all."""

from cost_engine.executors import terminate  # noqa: F401  (registers TerminateExecutor)
from cost_engine.executors.registry import EXECUTORS, executor_class, register_executor

__all__ = ["EXECUTORS", "executor_class", "register_executor"]
