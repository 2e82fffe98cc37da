"""Executors, one per recommendation type, each in the module of this package named for its type.

Importing the package loads none of them: `executor_class(type)` (or `EXECUTORS[type]`) imports the
module of the type asked for, so that an executor function loads its own type's executor and nothing
of the others'; walking `EXECUTORS` loads them all (see `registry`). A new type needs no edit here.
"""

from cost_engine.executors.registry import EXECUTORS, executor_class, register_executor

__all__ = ["EXECUTORS", "executor_class", "register_executor"]
