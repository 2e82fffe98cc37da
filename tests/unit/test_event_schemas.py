"""The committed event schemas (docs/events/) are the ones the code generates: a stale file fails here."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.write_openapi import event_schemas

SCHEMAS = event_schemas()


@pytest.mark.parametrize("path", sorted(SCHEMAS), ids=lambda p: p.name)
def test_the_committed_event_schema_matches_the_code(path: Path) -> None:
    assert path.exists(), f"{path.name} is missing: run `make openapi`"
    assert path.read_text() == SCHEMAS[path], f"{path.name} is stale: run `make openapi`"


def test_the_recommendation_approved_schema_requires_what_a_recommendation_needs() -> None:
    import json

    schema = json.loads(next(text for path, text in SCHEMAS.items() if path.name.startswith("recommendation")))
    assert {"customer_id", "type", "account_id", "region", "resource_id"} <= set(schema["required"])
    assert "terminate_instance" in json.dumps(schema)
