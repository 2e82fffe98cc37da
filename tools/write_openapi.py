"""`make openapi`: writes the API's OpenAPI document, generated from the handler, to openapi.json, and
the JSON Schema of the events the engine publishes to docs/events/.

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
STATUS_CHANGED_SCHEMA = ROOT / "docs" / "events" / "execution-status-changed.schema.json"


def generate() -> str:
    # The handler reads its environment at import; these names are never used to reach AWS here.
    for name, value in {
        "EXECUTIONS_TABLE_NAME": "executions",
        "AUDIT_TABLE_NAME": "audit",
        "RECOMMENDATIONS_TABLE_NAME": "recommendations",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        os.environ.setdefault(name, value)
    import local_runtime  # noqa: F401  (puts the shared package on the path)
    from functions.api.handler import openapi_document

    return json.dumps(json.loads(openapi_document()), indent=2, sort_keys=True) + "\n"


def event_schema() -> str:
    import local_runtime  # noqa: F401  (puts the shared package on the path)
    from cost_engine.events import status_changed_schema

    return json.dumps(status_changed_schema(), indent=2, sort_keys=True) + "\n"


def main() -> int:
    OUTPUT.write_text(generate())
    STATUS_CHANGED_SCHEMA.parent.mkdir(parents=True, exist_ok=True)
    STATUS_CHANGED_SCHEMA.write_text(event_schema())
    for path in (OUTPUT, STATUS_CHANGED_SCHEMA):
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
