"""Cold-start imports: how long each function's handler module takes to import, against a bare `import boto3`.

Each import runs in a fresh interpreter (`python -c`), as a new Lambda execution environment loads it,
with the environment the deployed function has: its own variables (cost_engine.environment, an
executor function's type included) and Lambda's, with tracing on as on AWS (`POWERTOOLS_TRACE_DISABLED`
unset; the X-Ray daemon's address is a loopback one, and nothing is sent at import). Only the import
is timed, not the interpreter's start. The targets run in turn within each round, so a busy machine
slows them alike; the median of the rounds is reported, and its ratio to boto3's median in the same run.

    python -m benchmarks.imports [runs]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LAYER_DIR = ROOT / "layers" / "shared" / "python"
if str(LAYER_DIR) not in sys.path:
    sys.path.insert(0, str(LAYER_DIR))

from cost_engine import topology  # noqa: E402  (after the layer is on the path)
from cost_engine.environment import Deployment, function_environment  # noqa: E402

# The goal: a handler imports in at most this many times a bare `import boto3`.
TARGET_RATIO = 1.5
REGION = "us-east-1"
BOTO3 = "boto3"
# What Lambda sets in every execution environment, besides the function's own variables. The
# credentials are fakes and the endpoint a closed loopback port: nothing can reach AWS from here.
LAMBDA_VARIABLES = {
    "AWS_REGION": REGION,
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EXECUTION_ENV": "AWS_Lambda_python3.14",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
    "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
    "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
    "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
    "AWS_ACCESS_KEY_ID": "benchmark",
    "AWS_SECRET_ACCESS_KEY": "benchmark",
    "AWS_SESSION_TOKEN": "benchmark",
    "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
}
# Stand-ins for what the stack passes as CDK tokens (names and ARNs): only their shape matters here.
DEPLOYMENT = Deployment(
    table_names={table: table.local_name for table in topology.TABLES},
    approval_topic_arn=f"arn:aws:sns:{REGION}:123456789012:cost-engine-approvals",
    approval_secret_arn=f"arn:aws:secretsmanager:{REGION}:123456789012:secret:cost-engine-links",
    event_bus_name="cost-engine",
    scheduler_role_arn="arn:aws:iam::123456789012:role/cost-engine-scheduler",
    state_machine_arns="{}",
    api_base_url="https://api.example.com/prod",
)


@dataclass(frozen=True)
class Target:
    name: str
    module: str
    # Where Lambda would find the module (its code directory, then the layer), and the environment.
    path: tuple[str, ...] = ()
    environment: tuple[tuple[str, str], ...] = ()


def targets() -> list[Target]:
    """A bare boto3, then each function of the topology (each executor function with its own type)."""
    found = [Target(BOTO3, BOTO3)]
    for function in topology.functions():
        code_dir = topology.FUNCTIONS_DIR / function.code_dir
        environment = {
            **LAMBDA_VARIABLES,
            **function_environment(function, DEPLOYMENT),
            "AWS_LAMBDA_FUNCTION_NAME": function.local_name,
            "LAMBDA_TASK_ROOT": str(code_dir),
            "_HANDLER": function.handler,
        }
        found.append(
            Target(
                name=function.local_name,
                module=function.handler.rsplit(".", 1)[0],
                path=(str(code_dir), str(LAYER_DIR)),
                environment=tuple(sorted(environment.items())),
            )
        )
    return found


def run_as(target: Target, code: str, **environment: str) -> str:
    """What `code` prints, run in a new interpreter with the target's module path and environment (and
    `environment`): none of the shell's AWS or Powertools variables leaks into a function's."""
    clean = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    done = subprocess.run(
        [sys.executable, "-c", f"import sys\nsys.path[:0] = {list(target.path)!r}\n{code}"],
        env={**clean, **dict(target.environment), **environment},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"running as {target.name} failed:\n{done.stderr}")
    return done.stdout


def _time_import(target: Target) -> float:
    """Seconds to import `target.module` in a new interpreter (its start not counted)."""
    code = f"import time\nstarted = time.perf_counter()\nimport {target.module}\nprint(time.perf_counter() - started)\n"
    return float(run_as(target, code).strip().splitlines()[-1])


def measure_imports(runs: int = 7) -> list[dict[str, Any]]:
    """Each target's median import time over `runs` rounds, and its ratio to a bare `import boto3`
    measured in the same rounds: one row per target, boto3's first."""
    chosen = targets()
    # One import of each first, unmeasured: bytecode written and files in the page cache, as in every
    # later round (the layer ships its bytecode compiled; see infra/constructs/functions.py).
    for target in chosen:
        _time_import(target)
    seconds: dict[str, list[float]] = {target.name: [] for target in chosen}
    for _ in range(runs):
        for target in chosen:
            seconds[target.name].append(_time_import(target))
    baseline = statistics.median(seconds[BOTO3])
    rows = []
    for target in chosen:
        median = statistics.median(seconds[target.name])
        ratio = median / baseline
        rows.append(
            {
                "name": target.name,
                "module": target.module,
                "median_seconds": median,
                "ratio": ratio,
                "target_ratio": TARGET_RATIO,
                "passed": ratio <= TARGET_RATIO,
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    width = max(len(row["name"]) for row in rows)
    lines = [f"{'import':<{width}}  {'median':>8}  {'x boto3':>7}  target"]
    for row in rows:
        verdict = "" if row["name"] == BOTO3 else ("ok" if row["passed"] else "MISSED")
        lines.append(
            f"{row['name']:<{width}}  {row['median_seconds'] * 1000:>6.0f}ms  {row['ratio']:>7.2f}  "
            f"<= {row['target_ratio']:g} {verdict}".rstrip()
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    runs = int(argv[0]) if argv else 7
    rows = measure_imports(runs)
    print(f"Handler imports in fresh interpreters, median of {runs} rounds:")
    print(table(rows))
    return 0 if all(row["passed"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
