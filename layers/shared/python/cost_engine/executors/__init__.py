"""Executors, one per recommendation type. Importing this package registers every module in it."""

import importlib
import pkgutil

from cost_engine.executors.registry import EXECUTORS, executor_class, register_executor

# Each executor module registers itself when imported; a new type needs no edit here.
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "registry"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["EXECUTORS", "executor_class", "register_executor"]
