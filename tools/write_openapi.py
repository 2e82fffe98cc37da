"""`make openapi`: writes the API's OpenAPI document, generated from the handler, to openapi.json, and
the JSON Schemas of the events the engine publishes and reads to docs/events/.

The same document is served at GET /openapi.json; tests fail when the files in the repository no
longer match the code, so the committed contracts cannot drift.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "openapi.json"
EVENT_SCHEMAS_DIR = ROOT / "docs" / "events"


def generate() -> str:
    # The handler reads its environment at import; these names are never used to reach AWS here.
    import local_runtime  # noqa: F401  (puts the shared package on the path)
    from cost_engine.topology import TABLES

    for name, value in {
        **{table.env_var: table.local_name for table in TABLES},
        "POWERTOOLS_TRACE_DISABLED": "true",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        os.environ.setdefault(name, value)
    from functions.api.handler import openapi_document

    return json.dumps(json.loads(openapi_document()), indent=2, sort_keys=True) + "\n"


def event_schemas() -> dict[Path, str]:
    """Each event's detail schema, by the file it is committed as."""
    import local_runtime  # noqa: F401  (puts the shared package on the path)
    from cost_engine.events import status_changed_schema
    from cost_engine.triggers import recommendation_approved_schema

    schemas = {
        "execution-status-changed": status_changed_schema(),
        "recommendation-approved": recommendation_approved_schema(),
    }
    return {
        EVENT_SCHEMAS_DIR / f"{name}.schema.json": json.dumps(schema, indent=2, sort_keys=True) + "\n"
        for name, schema in schemas.items()
    }


def main() -> int:
    written = {OUTPUT: generate(), **event_schemas()}
    EVENT_SCHEMAS_DIR.mkdir(parents=True, exist_ok=True)
    for path, text in written.items():
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
