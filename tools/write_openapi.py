"""`make openapi`: writes the API's OpenAPI document, generated from the handler, to openapi.json.

The same document is served at GET /openapi.json; a test fails when the file in the repository no
longer matches the code, so the committed contract cannot drift.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

OUTPUT = Path(__file__).resolve().parents[1] / "openapi.json"


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


def main() -> int:
    OUTPUT.write_text(generate())
    print(f"wrote {OUTPUT.relative_to(Path.cwd()) if OUTPUT.is_relative_to(Path.cwd()) else OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
