"""Small emulations of the AWS behaviour moto lacks, installed into the local runtime.

Each module here emulates exactly one missing call or behaviour (or, in `poll_waits`, the one change of
time the local runtime makes), has tests of its own, and exposes `install(runtime)`; the engine's code
stays the same as on AWS.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from local_runtime.runtime import LocalRuntime


def install_all(runtime: LocalRuntime) -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}").install(runtime)
