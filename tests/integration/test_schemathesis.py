"""The API against its own OpenAPI document: schemathesis generates requests from the document the
live local API serves (every route, body, parameter and header it describes, valid and deliberately
invalid) and checks that no answer is a 5xx and that each answer is one the document describes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from local_runtime.runtime import LocalRuntime
from tools.write_openapi import OUTPUT

# The committed document names the operations (test_openapi.py proves it is the one served). Invalid
# requests are generated for those with something to get wrong besides their path's id, which the
# document leaves free (an unknown id is a 404).
DOCUMENT = json.loads(Path(OUTPUT).read_text())
CASES = [
    pytest.param(path, method.upper(), mode, id=f"{method.upper()} {path} {mode.value}")
    for path, operations in sorted(DOCUMENT["paths"].items())
    for method, operation in sorted(operations.items())
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode == GenerationMode.POSITIVE
    or "requestBody" in operation
    or any(parameter["in"] != "path" for parameter in operation.get("parameters", []))
]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def served_document(runtime: LocalRuntime) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{runtime.api_url}/openapi.json", headers={"x-api-key": runtime.api_key})


# Bounded and repeatable: a fixed number of examples per operation, the same ones on every run,
# and a time limit per test.
@pytest.mark.timeout(60)
@pytest.mark.parametrize(("path", "method", "mode"), CASES)
def test_every_documented_operation_answers_as_documented_and_never_with_a_5xx(
    served_document: schemathesis.BaseSchema, runtime: LocalRuntime, path: str, method: str, mode: GenerationMode
) -> None:
    operation = served_document[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=15, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    def answers_as_documented(case: schemathesis.Case[Any]) -> None:
        case.call_and_validate(headers={"x-api-key": runtime.api_key}, checks=CHECKS)

    answers_as_documented()
