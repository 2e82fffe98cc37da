"""The functions' tracer: Powertools' Tracer, made the same way in each function.

On AWS the functions run with active tracing, and the tracer adds each invocation's handler and its AWS
calls to the trace. It patches botocore only: the engine makes no other kind of call, and patching all
that the X-Ray SDK can patch imports requests, sqlite3 and more at every cold start. Where tracing is off
(the local runtime and the tests set POWERTOOLS_TRACE_DISABLED; anywhere outside Lambda) the tracer is
given a provider that records nothing, so that the X-Ray SDK is not even imported.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Generator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from aws_lambda_powertools import Tracer
from aws_lambda_powertools.tracing.base import BaseProvider, BaseSegment

TRACED_MODULES = ("botocore",)
# Powertools' own switches (aws_lambda_powertools.shared.constants), with the values it reads as "true".
TRACE_DISABLED_VARIABLE = "POWERTOOLS_TRACE_DISABLED"
IN_LAMBDA_VARIABLE = "LAMBDA_TASK_ROOT"
TRUE_VALUES = frozenset({"1", "y", "yes", "t", "true", "on"})


def tracing_on() -> bool:
    """Whether Powertools' Tracer would trace here: in Lambda, unless POWERTOOLS_TRACE_DISABLED is true."""
    disabled = os.environ.get(TRACE_DISABLED_VARIABLE, "false").strip().lower() in TRUE_VALUES
    return bool(os.environ.get(IN_LAMBDA_VARIABLE)) and not disabled


def engine_tracer() -> Tracer:
    return Tracer(patch_modules=TRACED_MODULES, provider=None if tracing_on() else _Untraced())


class _Unrecorded(BaseSegment):
    def close(self, end_time: int | None = None) -> None:
        return None

    def add_subsegment(self, subsegment: Any) -> None:
        return None

    def remove_subsegment(self, subsegment: Any) -> None:
        return None

    def put_annotation(self, key: str, value: Any) -> None:
        return None

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        return None

    def add_exception(self, exception: BaseException, stack: list[Any], remote: bool = False) -> None:
        return None


class _Untraced(BaseProvider):
    """What the tracer records with where tracing is off: nothing."""

    @contextmanager
    def in_subsegment(self, name: str | None = None, **kwargs: Any) -> Generator[BaseSegment, None, None]:
        yield _Unrecorded()

    @asynccontextmanager
    async def in_subsegment_async(self, name: str | None = None, **kwargs: Any) -> AsyncGenerator[BaseSegment, None]:
        yield _Unrecorded()

    def put_annotation(self, key: str, value: Any) -> None:
        return None

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        return None

    def patch(self, modules: Sequence[str]) -> None:
        return None

    def patch_all(self) -> None:
        return None
