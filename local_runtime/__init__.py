"""The embedded local runtime: the whole engine on a laptop, with no AWS account and no Docker."""

import sys
from pathlib import Path

# The shared package is a Lambda layer on AWS; here it is put on the path like the layer would be.
_SHARED = str(Path(__file__).resolve().parents[1] / "layers" / "shared" / "python")
if _SHARED not in sys.path:
    sys.path.insert(0, _SHARED)
