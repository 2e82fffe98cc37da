"""`make demo`: every scenario runs on a local runtime of its own and ends as expected."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from local_runtime.demo import scenario_modules

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_runs_every_scenario_to_the_outcome_it_expects() -> None:
    env = {**os.environ}
    env.pop("AWS_ENDPOINT_URL", None)  # the demo starts its own emulated AWS

    demo = subprocess.run(
        [sys.executable, "-m", "local_runtime", "demo"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

    output = demo.stdout + demo.stderr
    assert demo.returncode == 0, output[-4000:]
    assert "Demo finished: every scenario ended as expected." in output
    assert "UNEXPECTED" not in output
    # Each scenario ran, in its order
    titles = [line.removeprefix("== ").removesuffix(" ==") for line in output.splitlines() if line.startswith("== ")]
    assert titles == [module.TITLE for module in scenario_modules()]
