"""The CLI driving a full execution on the local runtime, as a user would from a terminal."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cli.__main__ import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, main
from local_runtime.runtime import LocalRuntime, free_port
from tests.integration.conftest import instance_state, step_events, terminate_recommendation

ROOT = Path(__file__).resolve().parents[2]
INSTALLED = ROOT / ".venv" / "bin" / "cost-engine"


def cli(runtime: LocalRuntime, *argv: str, stdin: str | None = None) -> tuple[int, str, str]:
    """Run the CLI in-process against the local runtime: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    old_stdin = sys.stdin
    if stdin is not None:
        sys.stdin = io.StringIO(stdin)
    try:
        code = main(["--api", runtime.api_url, "--api-key", runtime.api_key, *argv], out, err)
    finally:
        sys.stdin = old_stdin
    return code, out.getvalue(), err.getvalue()


def test_the_cli_drives_a_termination_from_recommendation_to_completion(
    runtime: LocalRuntime, ec2: object, launch_instance: Callable[..., str], customer_id: str
) -> None:
    instance_id = launch_instance()
    recommendation = terminate_recommendation(customer_id, instance_id)
    code, out, _ = cli(runtime, "--json", "recommend", "-", stdin=json.dumps(recommendation))
    assert code == EXIT_OK
    recommendation_id = json.loads(out)["recommendation_id"]

    # Followed live until it waits for a person (terminations always do).
    code, out, _ = cli(runtime, "execute", recommendation_id, "--auto-approve", "--wait", "--interval", "0.2")
    assert code == EXIT_OK
    assert "approval_policy_decided" in out
    assert "approval_requested" in out
    assert out.rstrip().endswith("→ awaiting_approval")
    execution_id = out.split()[0]

    code, out, _ = cli(runtime, "status", execution_id)
    assert code == EXIT_OK
    assert "risk      high" in out
    assert "waiting for finops@example.com, lead@example.com until" in out

    code, out, _ = cli(runtime, "approve", execution_id, "--approver", "lead@example.com", "--comment", "idle")
    assert (code, out.strip()) == (EXIT_OK, f"{execution_id}  approved by lead@example.com")

    code, out, _ = cli(runtime, "status", execution_id, "--watch", "--interval", "0.2", "--timeout", "60")
    assert code == EXIT_OK
    assert out.rstrip().endswith("→ completed")
    assert instance_state(ec2, instance_id) == "terminated"

    code, out, _ = cli(runtime, "logs", execution_id)
    assert code == EXIT_OK
    events = step_events([line.split()[1] for line in out.splitlines()])
    assert events[0] == "execution_requested"
    assert events[-1] == "completed"
    assert "approved" in events

    code, out, _ = cli(runtime, "list", "--customer", customer_id)
    assert code == EXIT_OK
    header, row = out.splitlines()[:2]
    assert header.split() == ["EXECUTION", "TYPE", "RESOURCE", "STATUS", "EST./MONTH", "CREATED"]
    assert row.split()[:4] == [execution_id, "terminate_instance", instance_id, "completed"]

    code, out, _ = cli(runtime, "--json", "list", "--customer", customer_id, "--status", "completed")
    assert code == EXIT_OK
    assert [e["execution_id"] for e in json.loads(out)["items"]] == [execution_id]

    code, out, _ = cli(runtime, "rollback", execution_id)
    assert (code, out.strip()) == (EXIT_OK, f"{execution_id}  rolling_back")


def test_an_execution_that_ends_badly_exits_non_zero(
    runtime: LocalRuntime, launch_instance: Callable[..., str], recommend: Callable[..., str]
) -> None:
    instance_id = launch_instance()
    runtime.client("ec2").modify_instance_attribute(InstanceId=instance_id, DisableApiTermination={"Value": True})
    code, out, _ = cli(runtime, "execute", recommend(instance_id), "--wait", "--interval", "0.2")
    assert code == EXIT_FAILED
    assert "→ failed: validation failed" in out
    assert "termination protection" in out


@pytest.mark.parametrize(
    ("argv", "exit_code", "message"),
    [
        (("status", "exec-" + "0" * 32), EXIT_FAILED, "HTTP 404: execution 'exec-"),
        (("execute", "rec-unknown"), EXIT_FAILED, "HTTP 404"),
        (("approve", "exec-" + "0" * 32, "--approver", " "), EXIT_FAILED, "HTTP 422"),
        (("recommend", "/no/such/file.json"), EXIT_USAGE, "No such file"),
        (("recommend", "-", "--format", "compute_optimizer_ec2"), EXIT_USAGE, "--customer is needed"),
    ],
)
def test_errors_are_clear_messages_with_non_zero_exit_codes(
    runtime: LocalRuntime, argv: tuple[str, ...], exit_code: int, message: str
) -> None:
    code, out, err = cli(runtime, *argv, stdin="{}")
    assert code == exit_code
    assert out == ""
    assert err.startswith("cost-engine: ")
    assert message in err


def test_a_bad_time_is_a_usage_error_and_an_unreachable_api_says_so(runtime: LocalRuntime) -> None:
    with pytest.raises(SystemExit) as usage:
        cli(runtime, "execute", "rec-1", "--at", "tomorrow")
    assert usage.value.code == EXIT_USAGE
    err = io.StringIO()
    code = main(["--api", f"http://127.0.0.1:{free_port()}", "status", "exec-1"], io.StringIO(), err)
    assert code == EXIT_UNREACHABLE
    assert "could not be reached" in err.getvalue()


def test_the_installed_command_runs_from_anywhere(runtime: LocalRuntime, customer_id: str, tmp_path: Path) -> None:
    if not INSTALLED.exists():
        pytest.fail(f"{INSTALLED} is missing: `make cli` installs it (make test and make integration do)")
    result = subprocess.run(
        [str(INSTALLED), "--api", runtime.api_url, "--api-key", runtime.api_key, "list", "--customer", customer_id],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == EXIT_OK, result.stderr
    assert result.stdout.split() == ["EXECUTION", "TYPE", "RESOURCE", "STATUS", "EST./MONTH", "CREATED"]


def test_the_cli_schedules_an_execution_shows_it_scheduled_and_cancels_it(
    runtime: LocalRuntime, ec2: object, launch_instance: Callable[..., str], customer_id: str
) -> None:
    instance_id = launch_instance()
    recommendation = terminate_recommendation(customer_id, instance_id)
    code, out, _ = cli(runtime, "--json", "recommend", "-", stdin=json.dumps(recommendation))
    recommendation_id = json.loads(out)["recommendation_id"]
    at = (datetime.now(UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")

    code, out, _ = cli(runtime, "execute", recommendation_id, "--at", at)
    assert code == EXIT_OK
    execution_id, status = out.split()
    assert status == "scheduled"
    code, out, _ = cli(runtime, "status", execution_id)
    assert f"scheduled {at}" in out

    code, out, _ = cli(runtime, "cancel", execution_id)
    assert (code, out.strip()) == (EXIT_OK, f"{execution_id}  cancelled")
    assert instance_state(ec2, instance_id) == "running"
