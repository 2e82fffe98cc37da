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


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, str]]:
    aws_port, api_port = free_port(), free_port()
    env = {**os.environ, "AWS_PORT": str(aws_port), "API_PORT": str(api_port), "API_KEY": "outside-key"}
    env.pop("AWS_ENDPOINT_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "local_runtime", "serve"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    output = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        output.append(line)
        if line.startswith("Ready.") or process.poll() is not None:
            break
    assert any(line.startswith("Ready.") for line in output), "".join(output)
    # The server echoes every function's log lines: read them as they come, or the pipe fills up and
    # the server blocks on its next write (and then cannot stop either).
    reader = threading.Thread(target=lambda: output.extend(process.stdout or ()), daemon=True)
    reader.start()
    yield f"http://127.0.0.1:{aws_port}", f"http://127.0.0.1:{api_port}"
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 0, "".join(output[-50:])
    reader.join(timeout=60)


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
