"""`make serve`: an outside client creates an instance in the emulated AWS and has the engine act on it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from local_runtime.client import ApiClient
from local_runtime.runtime import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class Served:
    """`python -m local_runtime serve` in a process of its own, its output read as it comes."""

    def __init__(self, *, sigint_ignored: bool) -> None:
        aws_port, api_port = free_port(), free_port()
        self.aws_endpoint, self.api_url = f"http://127.0.0.1:{aws_port}", f"http://127.0.0.1:{api_port}"
        env = {**os.environ, "AWS_PORT": str(aws_port), "API_PORT": str(api_port), "API_KEY": "outside-key"}
        env.pop("AWS_ENDPOINT_URL", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "local_runtime", "serve"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            # As a background job of a non-interactive shell starts it: SIGINT ignored, and inherited.
            preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None,
        )
        assert self.process.stdout is not None
        self.output: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            self.output.append(line)
            if line.startswith("Ready.") or self.process.poll() is not None:
                break
        assert any(line.startswith("Ready.") for line in self.output), "".join(self.output)
        # The server echoes every function's log lines: read them as they come, or the pipe fills up
        # and the server blocks on its next write (and then cannot stop either).
        self.reader = threading.Thread(target=lambda: self.output.extend(self.process.stdout or ()), daemon=True)
        self.reader.start()

    def stop(self, signum: signal.Signals) -> int:
        """Signal the server and wait for it to end; its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout=60)
        finally:
            if self.process.poll() is None:  # never leave it running, whatever failed
                self.process.kill()
                self.process.wait()
        self.reader.join(timeout=60)
        return code


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, str]]:
    server = Served(sigint_ignored=True)
    yield server.aws_endpoint, server.api_url
    # As a supervisor (systemd, a container runtime, a CI runner) stops a service.
    assert server.stop(signal.SIGTERM) == 0, "".join(server.output[-50:])
    assert "Stopped." in "".join(server.output[-5:])


def test_ctrl_c_stops_the_server_even_when_its_shell_ignored_sigint() -> None:
    server = Served(sigint_ignored=True)
    assert server.stop(signal.SIGINT) == 0, "".join(server.output[-50:])
    assert "Stopped." in "".join(server.output[-5:])


def test_an_outside_client_can_create_an_instance_and_have_it_terminated(served: tuple[str, str]) -> None:
    aws_endpoint, api_url = served
    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=aws_endpoint)
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance_id = ec2.run_instances(ImageId=image, InstanceType="t3.micro", MinCount=1, MaxCount=1)["Instances"][0][
        "InstanceId"
    ]
    api = ApiClient(api_url, "outside-key")

    recommendation = api.register(
        {
            "customer_id": "outside",
            "type": "terminate_instance",
            "account_id": "123456789012",
            "region": "us-east-1",
            "resource_id": instance_id,
        }
    )
    # A termination always waits for a person: they approve it through the API.
    execution = api.run(recommendation["recommendation_id"], approver="lead@example.com")

    assert execution["status"] == "completed"
    state = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state == "terminated"
