"""The API's latency over real HTTP connections (each client its own keep-alive connection), and what
of it is the handler's own time: a status read and a registration at 1 and at several clients at once,
and the first page of a customer's executions when the table holds many of theirs."""

from __future__ import annotations

import math
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import requests

from benchmarks.instruments import Invocations
from cost_engine import topology
from cost_engine.models import ExecutionRecord, ExecutionStatus, RecommendationType, utc_now
from cost_engine.stores.executions import ExecutionStore
from local_runtime.runtime import ACCOUNT_ID, REGION, LocalRuntime

# One client's request: (session, its index among that client's requests) -> the response.
Call = Callable[[requests.Session, int], requests.Response]


def percentile(values: list[float], fraction: float) -> float:
    """The value below which `fraction` of the values fall (nearest rank)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def timed_calls(runtime: LocalRuntime, call: Call, clients: int, per_client: int) -> list[float]:
    """Seconds of each request, `clients` threads at once, each with its own connection."""
    seconds: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def client() -> None:
        with requests.Session() as session:
            session.headers["x-api-key"] = runtime.api_key
            call(session, -1)  # the connection is made before the clock runs
            start.wait(timeout=60)
            for index in range(per_client):
                began = time.perf_counter()
                response = call(session, index)
                took = time.perf_counter() - began
                with lock:
                    seconds.append(took)
                    if response.status_code >= 500:
                        failures.append(f"{response.status_code} {response.text[:200]}")

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed, e.g. {failures[0]}")
    return seconds


def status_read(runtime: LocalRuntime, execution_id: str) -> Call:
    url = f"{runtime.api_url}/executions/{execution_id}"
    return lambda session, _: session.get(url, timeout=120)


def registration(runtime: LocalRuntime, customer_id: str) -> Call:
    url = f"{runtime.api_url}/recommendations"

    def register(session: requests.Session, _: int) -> requests.Response:
        body = {
            "customer_id": customer_id,
            "type": RecommendationType.TERMINATE_INSTANCE.value,
            "account_id": ACCOUNT_ID,
            "region": REGION,
            "resource_id": f"i-{uuid.uuid4().hex[:17]}",
            "estimated_monthly_savings": 10.0,
        }
        return session.post(url, json=body, timeout=120)

    return register


def latency(
    runtime: LocalRuntime, invocations: Invocations, call: Call, clients: int, per_client: int
) -> dict[str, float]:
    """p50 and p99 of the requests, and the API handler's own p50 over the same requests."""
    mark = invocations.mark()
    seconds = timed_calls(runtime, call, clients, per_client)
    handler = [i.seconds for i in invocations.since(mark) if i.function == topology.API_FUNCTION.local_name]
    return {
        "clients": clients,
        "requests": len(seconds),
        "p50_ms": 1000 * statistics.median(seconds),
        "p99_ms": 1000 * percentile(seconds, 0.99),
        "handler_p50_ms": 1000 * statistics.median(handler),
    }


def seed_executions(customer_id: str, count: int) -> None:
    """`count` final executions of the customer, written by the engine's own store (as the API would
    find them), on a few threads."""
    store = ExecutionStore(topology.EXECUTIONS_TABLE.local_name, REGION)
    now = utc_now()

    def write(index: int) -> None:
        store.create(
            ExecutionRecord(
                execution_id=f"exec-seed-{customer_id}-{index:06d}",
                recommendation_id=f"rec-seed-{index:06d}",
                customer_id=customer_id,
                recommendation_type=RecommendationType.FIX_CONFIG,
                resource_id=f"bench-log-group-{index}",
                region=REGION,
                account_id=ACCOUNT_ID,
                status=ExecutionStatus.COMPLETED,
                created_at=now - timedelta(seconds=index),
                completed_at=now,
                success=True,
            )
        )

    threads = 8

    def write_every_nth(start: int) -> None:
        for index in range(start, count, threads):
            write(index)

    workers = [threading.Thread(target=write_every_nth, args=(start,)) for start in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def list_latency(runtime: LocalRuntime, records: int, repeats: int = 5) -> dict[str, Any]:
    """The first page of a customer's executions (the API's default page size) when the table holds
    `records` of theirs: the median of `repeats` calls on one connection."""
    customer_id = f"bench-list-{records}"
    started = time.perf_counter()
    seed_executions(customer_id, records)
    seeding = time.perf_counter() - started
    url = f"{runtime.api_url}/executions"
    with requests.Session() as session:
        session.headers["x-api-key"] = runtime.api_key
        seconds = []
        for _ in range(repeats + 1):
            began = time.perf_counter()
            response = session.get(url, params={"customer_id": customer_id}, timeout=600)
            seconds.append(time.perf_counter() - began)
            response.raise_for_status()
    return {
        "records": records,
        "page_items": len(response.json()["items"]),
        "median_ms": 1000 * statistics.median(seconds[1:]),  # the first call opens the connection
        "seeding_seconds": seeding,
    }
