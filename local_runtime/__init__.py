"""The embedded local runtime: the whole engine on a laptop, with no AWS account and no Docker."""

import os
import sys
from pathlib import Path

# The shared package is a Lambda layer on AWS; here it is put on the path like the layer would be.
_SHARED = str(Path(__file__).resolve().parents[1] / "layers" / "shared" / "python")
if _SHARED not in sys.path:
    sys.path.insert(0, _SHARED)

# The emulated account's public images: moto's 44 default AMIs (local_runtime/public_images.json is
# moto's own list) instead of the 1,300 it loads for us-east-1 otherwise. moto builds a volume and a
# snapshot for each image whenever its EC2 backend starts or resets, which took seconds at every
# start and in every unit test that touches EC2. Read by moto when its EC2 module is first imported,
# so it is set here, before anything imports moto; a value of the user's own is kept.
os.environ.setdefault("MOTO_AMIS_PATH", str(Path(__file__).with_name("public_images.json")))
