"""`make bench`: how long the engine takes around the work itself, and how much memory it holds.

Runs terminate_instance executions on the local runtime, one after another and then a batch at once,
each approved through the API the moment it asks, and reports the time from the execute request to
the final status (the seed's target: under five
minutes on average; on the local runtime the AWS work is instant, so this measures the engine's
own overhead) and the process's peak memory. Fails (exit 1) if a target is missed.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import local_runtime  # noqa: F401  (puts the shared package on the path)
from local_runtime.client import ApiClient
from local_runtime.runtime import ACCOUNT_ID, REGION, LocalRuntime, free_port

SEQUENTIAL = 10
CONCURRENT = 10
TARGET_AVERAGE_SECONDS = 300.0  # the seed's "< 5 minute execution time (average)"
TARGET_PEAK_RSS_MB = 1024.0


def _one_execution(api: ApiClient, ec2: object, image: str, index: int) -> float:
    instance_id = ec2.run_instances(ImageId=image, InstanceType="t3.micro", MinCount=1, MaxCount=1)[  # type: ignore[attr-defined]
        "Instances"
    ][0]["InstanceId"]
    recommendation = api.register(
        {
            "customer_id": "bench",
            "type": "terminate_instance",
            "account_id": ACCOUNT_ID,
            "region": REGION,
            "resource_id": instance_id,
        }
    )
    started = time.perf_counter()
    # terminate_instance always waits for a person: the approver answers as soon as it asks.
    execution = api.run(recommendation["recommendation_id"], approver="bench@example.com", timeout=600)
    elapsed = time.perf_counter() - started
    if execution["status"] != "completed":
        raise RuntimeError(f"execution {index} ended {execution['status']}: {execution['error_message']}")
    return elapsed


def main() -> int:
    with LocalRuntime(aws_port=free_port(), api_port=free_port()) as runtime:
        api = ApiClient(runtime.api_url, runtime.api_key, timeout=120)
        ec2 = runtime.client("ec2")
        image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        sequential = [_one_execution(api, ec2, image, i) for i in range(SEQUENTIAL)]
        batch_started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=CONCURRENT) as pool:
            concurrent = list(pool.map(lambda i: _one_execution(api, ec2, image, i), range(CONCURRENT)))
        batch_seconds = time.perf_counter() - batch_started
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    average = statistics.mean(sequential)
    print(f"terminate_instance, execute → completed, {SEQUENTIAL} one after another:")
    print(f"  average {average:.2f}s   median {statistics.median(sequential):.2f}s   max {max(sequential):.2f}s")
    print(f"{CONCURRENT} at once: all done in {batch_seconds:.2f}s, slowest {max(concurrent):.2f}s")
    print(f"peak memory of the runtime process: {peak_rss_mb:.0f} MB")
    ok = average < TARGET_AVERAGE_SECONDS and peak_rss_mb < TARGET_PEAK_RSS_MB
    print(
        f"targets: average < {TARGET_AVERAGE_SECONDS:.0f}s, peak memory < {TARGET_PEAK_RSS_MB:.0f} MB: "
        + ("met" if ok else "MISSED")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
