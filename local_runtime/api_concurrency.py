"""One API function, many requests at once: each request thread gets its own resolver state.

On AWS a Lambda execution environment serves one request at a time, so Powertools keeps the
request being resolved (its event, its Lambda context, the routing context with `_route` and the
route's arguments) on the resolver and on its class. The local API server answers each connection
in a thread of its own, all with the one imported handler: without this, two requests at once read
each other's event, and one clears the other's routing context (`KeyError: '_route'`).
"""

from __future__ import annotations

import threading
from typing import Any

from aws_lambda_powertools.event_handler.api_gateway import ApiGatewayResolver


def give_each_thread_its_own_request(app: ApiGatewayResolver) -> None:
    """Makes the resolver's per-request state per thread, as if each thread were its own Lambda
    execution environment; the routes, the exception handlers and the service stay shared."""
    state = threading.local()

    def per_thread(name: str, default: Any) -> property:
        def read(_: ApiGatewayResolver) -> Any:
            if not hasattr(state, name):
                setattr(state, name, default())
            return getattr(state, name)

        def write(_: ApiGatewayResolver, value: Any) -> None:
            setattr(state, name, value)

        return property(read, write)

    base = type(app)

    class PerThreadResolver(base):  # type: ignore[valid-type,misc]
        context = per_thread("context", dict)
        processed_stack_frames = per_thread("processed_stack_frames", list)
        current_event = per_thread("current_event", lambda: None)
        lambda_context = per_thread("lambda_context", lambda: None)

        # Powertools sets the event and the Lambda context on the shared class (BaseRouter) while
        # resolving; these keep this thread's copy, which the properties above answer with.
        def _to_proxy_event(self, event: dict[str, Any]) -> Any:
            self.current_event = super()._to_proxy_event(event)
            return self.current_event

        def resolve(self, event: Any, context: Any) -> dict[str, Any]:
            self.lambda_context = context
            return dict(super().resolve(event, context))

    PerThreadResolver.__name__ = f"PerThread{base.__name__}"
    app.__class__ = PerThreadResolver
