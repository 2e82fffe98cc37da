"""`python -m local_runtime demo|serve` (what `make demo` and `make serve` run)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from types import FrameType


def serve() -> int:
    from local_runtime.runtime import LocalRuntime

    runtime = LocalRuntime(
        aws_port=int(os.environ.get("AWS_PORT", "5000")),
        api_port=int(os.environ.get("API_PORT", "8080")),
        api_key=os.environ.get("API_KEY", "local-dev-key"),
        approval_timeout_seconds=int(os.environ.get("APPROVAL_TIMEOUT_SECONDS", "86400")),
        log_level=os.environ.get("LOG_LEVEL", "INFO"),
        echo_function_output=True,
    )
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Both set here rather than left to Python's defaults: a supervisor stops a server with
    # SIGTERM, and a process started from a shell that ignores SIGINT (a background job of a
    # non-interactive shell, some CI runners) inherits that ignore, so Ctrl-C would do nothing.
    # Installed before the server says Ready: a client that signals as soon as it reads Ready must
    # not find SIGINT still ignored, or the signal is lost and the server runs on.
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    with runtime:
        print(
            f"Cost Execution Engine, local runtime\n"
            f"  API           {runtime.api_url}   (header x-api-key: {runtime.api_key})\n"
            f"  emulated AWS  {runtime.aws_endpoint}   (region us-east-1, account 123456789012, any credentials)\n"
            f"Try:\n"
            f"  aws --endpoint-url {runtime.aws_endpoint} ec2 run-instances --image-id ami-12c6146b "
            f"--instance-type m5.large\n"
            f"  curl -s -H 'x-api-key: {runtime.api_key}' -H 'content-type: application/json' "
            f'{runtime.api_url}/recommendations -d \'{{"customer_id": "acme", "type": "terminate_instance", '
            f'"account_id": "123456789012", "region": "us-east-1", "resource_id": "i-…"}}\'\n'
            f"Ready. Ctrl-C stops.",
            flush=True,
        )
        # A timed wait, so the main thread comes back to run the handlers as signals arrive.
        while not stop.wait(1.0):
            pass
        print("\nStopped.", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_runtime", description=__doc__)
    parser.add_argument("command", choices=["demo", "serve"])
    args = parser.parse_args(argv)
    if args.command == "demo":
        from local_runtime.demo import run_demo

        return run_demo()
    return serve()


if __name__ == "__main__":
    sys.exit(main())
