"""The emulated AWS finds the service of a request once per host, not on every request.

moto's server decides which service answers a request from its host name: it lists the modules of
its own package on disk (`list_of_moto_modules`) and then tries every service's URL patterns in turn,
for every request. In one long local runtime that is about a twentieth of all the CPU spent. Both
answers depend only on the host name and on what is installed, so the first answer for a host is
kept and reused; the routing itself is moto's own, unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from local_runtime.runtime import LocalRuntime


def _remembered(get_backend_for_host: Callable[[Any, str | None], Any]) -> Callable[[Any, str | None], Any]:
    # By host alone: the patterns are moto's, the same for every server (a restarted one too).
    answers: dict[str | None, Any] = {}

    @functools.wraps(get_backend_for_host)
    def remembered(self: Any, host: str | None) -> Any:
        if host not in answers:
            answers[host] = get_backend_for_host(self, host)
        return answers[host]

    remembered.remembered = True  # type: ignore[attr-defined]
    return remembered


def install(runtime: LocalRuntime | None) -> None:
    from moto import backends
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    if not getattr(backends.list_of_moto_modules, "remembered", False):
        modules = tuple(backends.list_of_moto_modules())
        listed = functools.wraps(backends.list_of_moto_modules)(lambda: iter(modules))
        listed.remembered = True  # type: ignore[attr-defined]
        backends.list_of_moto_modules = listed
    if not getattr(DomainDispatcherApplication.get_backend_for_host, "remembered", False):
        DomainDispatcherApplication.get_backend_for_host = _remembered(  # type: ignore[method-assign,assignment]
            DomainDispatcherApplication.get_backend_for_host
        )
