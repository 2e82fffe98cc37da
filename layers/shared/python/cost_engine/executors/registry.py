"""The registry of executors: one registered class per recommendation type.

Each type's executor is in the module of this package named for the type (`cost_engine.executors.<type>`),
which registers it when imported. The registry imports that module the first time its type is asked for:
an executor function asks for its own type only, and so loads no other executor, nor what they use;
whatever walks the whole registry (the stack, the spine's definitions, the meta-tests) loads them all.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, TypeVar

from cost_engine.errors import UnsupportedType
from cost_engine.models import RecommendationType

if TYPE_CHECKING:
    from cost_engine.executors.base import AnyExecutor

PACKAGE = __name__.rpartition(".")[0]
# The package's modules that hold no executor.
NOT_EXECUTORS = frozenset({"base", "registry"})

E = TypeVar("E", bound="type[AnyExecutor]")


def module_of(recommendation_type: RecommendationType) -> str:
    """Where the executor of `recommendation_type` is, and so where the registry looks for it."""
    return f"{PACKAGE}.{recommendation_type.value}"


class ExecutorRegistry(Mapping[RecommendationType, "type[AnyExecutor]"]):
    """The executor class of each type. Looking one up imports its module if it is not loaded yet;
    iterating (or counting) imports every executor module of the package."""

    def __init__(self) -> None:
        self._classes: dict[RecommendationType, type[AnyExecutor]] = {}

    def register(self, cls: E) -> E:
        module = module_of(cls.recommendation_type)
        if cls.__module__ != module and not cls.__module__.startswith(f"{module}."):
            # Elsewhere it would be found only once something had loaded every executor.
            raise RuntimeError(f"{cls.__name__} ({cls.recommendation_type.value}) belongs in {module}")
        existing = self._classes.get(cls.recommendation_type)
        if existing is not None and existing is not cls:
            raise RuntimeError(f"{cls.__name__} and {existing.__name__} both claim {cls.recommendation_type.value}")
        self._classes[cls.recommendation_type] = cls
        return cls

    def __getitem__(self, key: RecommendationType) -> type[AnyExecutor]:
        try:
            recommendation_type = RecommendationType(key)
        except ValueError:
            raise KeyError(key) from None
        if recommendation_type not in self._classes:
            _import_if_present(module_of(recommendation_type))
        return self._classes[recommendation_type]

    def __iter__(self) -> Iterator[RecommendationType]:
        self.load_all()
        return iter([t for t in RecommendationType if t in self._classes])

    def __len__(self) -> int:
        self.load_all()
        return len(self._classes)

    def load_all(self) -> None:
        """Import every executor module of the package (each registers its executor)."""
        package = importlib.import_module(PACKAGE)
        for module in pkgutil.iter_modules(package.__path__):
            if module.name not in NOT_EXECUTORS:
                importlib.import_module(f"{PACKAGE}.{module.name}")


def _import_if_present(name: str) -> None:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name != name:
            raise  # the module is there, but something it imports is not


EXECUTORS = ExecutorRegistry()


def register_executor(cls: E) -> E:
    """Class decorator: make `cls` the executor of its `recommendation_type`."""
    return EXECUTORS.register(cls)


def executor_class(recommendation_type: RecommendationType) -> type[AnyExecutor]:
    try:
        return EXECUTORS[recommendation_type]
    except KeyError:
        supported = ", ".join(t.value for t in EXECUTORS) or "none"
        raise UnsupportedType(
            f"recommendation type '{recommendation_type.value}' has no executor yet (supported: {supported})"
        ) from None
