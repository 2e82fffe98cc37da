"""Shared by every test: nothing may reach real AWS."""

from __future__ import annotations

import os

# Set before any boto3 client exists: fake credentials and a fixed region, so a test that forgot
# to use the emulator fails instead of touching a real account.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }
)
os.environ.pop("AWS_PROFILE", None)

import local_runtime  # noqa: F401  (before moto: the emulated AMIs are chosen at its import)
