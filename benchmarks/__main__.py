"""`make bench`: what an execution costs and how fast the engine answers, in one table, each figure
beside its target; also written to benchmarks/results.json.

1. Import time of each function's handler in a fresh interpreter, against a bare `import boto3`.
2. Per type, one execution on its happy path and one on a rollback path (a fault injected before the
   step that `benchmarks.asl.fault_step` picks from the type's definition), each alone on the local
   runtime: state transitions, function invocations, DynamoDB requests, writes of the execution record,
   DynamoDB write and read units (indexes included), and the price of 1,000 such executions on AWS.
3. The fixed waiting a happy path would have on AWS with the deployed poll settings, from the
   definitions (the local runtime's Wait states pass at once).
4. A batch of executions at once: how many finish per minute, their transitions, and the acting limit.
5. The first page of a customer's executions with 1,000 and 10,000 of them in the table.
6. The API's p50 and p99 for a status read and a registration at 1 and 8 clients, over HTTP, and the
   handler's own time beside them.

Exits 1 if a target is missed. Takes three to seven minutes on a shared 2-core machine.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import local_runtime  # noqa: F401  (puts the shared package on the path)
from benchmarks import asl
from benchmarks.api_latency import latency, list_latency, registration, status_read
from benchmarks.executions import Bench, ExecutionFigures
from benchmarks.report import Figure, at_most, info, render, rows, write_json
from cost_engine import spine, topology
from cost_engine.models import RecommendationType
from local_runtime.runtime import LocalRuntime, free_port

RESULTS_FILE = Path(__file__).resolve().parent / "results.json"
IMPORT_RUNS = 7
CONCURRENT_EXECUTIONS = 50
API_CLIENTS = (1, 8)
API_REQUESTS = 200  # per measurement, shared among its clients
LIST_SIZES = (1_000, 10_000)

# The targets.
IMPORT_RATIO = 1.5  # a handler's import, in bare `import boto3`s
HAPPY_TRANSITIONS = 12
ROLLBACK_TRANSITIONS = 20
EXECUTION_RECORD_WRITES = 10
HAPPY_DYNAMODB_REQUESTS = 35
# The work that is done at once costs no wait (each check comes before its first wait).
HAPPY_AWS_WAIT_SECONDS = 0.0
SEED_AVERAGE_SECONDS = 300.0  # the seed's "< 5 minute execution time (average)"
PEAK_MEMORY_MB = 1024.0
# The API answers in about its handler's time: what HTTP adds at one client, in ms.
HTTP_OVERHEAD_MS = 5.0
# Past the API function's timeout, API Gateway answers 504: the longest a list may take.
API_TIMEOUT_MS = topology.API_FUNCTION.timeout_seconds * 1000

NOTES = [
    "Each execution runs alone; its window opens before its recommendation is registered and closes once its "
    "status is final, its state machine run has ended and nothing reached the emulated AWS or a function for "
    "0.5 s: the API's requests (register, execute, approve), every step, and the trigger's reconciliation of a "
    "run that ended FAILED are in it; the bench's own watching is not (it reads the emulator's memory).",
    "State transitions: the *StateEntered events of the run's history (Task, Choice, Wait, Pass, Succeed, Fail), "
    "one per state entered, as Step Functions Standard bills them (no task retried in these runs).",
    "λ calls: every function invocation in the window (the run's tasks, the API's requests, the trigger); "
    "results.json has the run's Lambda tasks alone (its TaskScheduled events) as lambda_tasks.",
    "DDB req: the DynamoDB requests the emulated AWS received in the window; exec writes: the item writes to the "
    "executions table (PutItem, UpdateItem, DeleteItem, refused conditional ones included).",
    "WCU: per item write, the table's ceil(max(size before, size after) / 1 KB), plus per index that holds the item "
    "before or after: ceil(projected size / 1 KB), the old entry's and the new one's when the index key changed, "
    "nothing when no projected attribute changed; a refused conditional write costs the existing item's size. "
    "Item sizes by DynamoDB's rules (names + values; numbers 1 byte per 2 digits + 1; lists and maps 3 + 1 per "
    "element). What each index holds as cost_engine.topology declares it (Table.index_attributes).",
    "RRU: approximate, 1 per read request (GetItem, Query, Scan, BatchGetItem), as a strongly consistent read of "
    "up to 4 KB costs (a batch or a page over 4 KB costs more).",
    "$ per 1k: list prices, us-east-1: Step Functions Standard $0.025 per 1,000 transitions; Lambda $0.20 per "
    "1M requests plus GB-seconds at each function's memory and architecture, the duration being the handler's "
    "wall time here (an approximation: the emulated AWS answers in-process, faster than AWS); DynamoDB on-demand "
    "$0.625 per 1M WRU and $0.125 per 1M RRU.",
    "AWS wait: the least time in Wait states from StartAt through the acting phase to success if every check found "
    "its work done, from the deployed definition (cost_engine.spine.states_language); beside it, the Wait states the "
    "local happy run entered, at their configured seconds (SecondsPath read from the run's input).",
    "List: the emulator's index query reads every item of the customer to find the page, DynamoDB only the page; "
    "the figure grows with the records here and would not on AWS.",
    "API: each client has its own keep-alive connection; p50/p99 over the requests of all clients; handler p50 is "
    "the API function's own time for the same requests.",
]


# -- 1. imports -------------------------------------------------------------------------------------


def imports_measured_apart() -> list[dict[str, Any]] | None:
    """benchmarks/imports.py's rows (each function's environment as deployed), before the runtime
    starts; None when that module is not there."""
    try:
        from benchmarks.imports import measure_imports
    except ImportError:
        return None
    return measure_imports(IMPORT_RUNS)


def imports_in_runtime_environment(runtime: LocalRuntime) -> list[dict[str, Any]]:
    """The fallback: median seconds to import each handler module in a fresh interpreter with its
    function's environment in the local runtime, against `import boto3`."""
    layer = str(topology.SHARED_LAYER_DIR / "python")
    environments = runtime.function_environments()
    targets = [("boto3", "boto3", [layer], dict(os.environ))] + [
        (
            function.local_name,
            function.handler.rsplit(".", 1)[0],
            [str(topology.FUNCTIONS_DIR / function.code_dir), layer],
            {**os.environ, **environments[function.local_name]},
        )
        for function in topology.functions()
    ]
    seconds: dict[str, list[float]] = {name: [] for name, *_ in targets}
    for _ in range(IMPORT_RUNS):
        for name, module, path, environment in targets:
            code = f"import sys, time\nsys.path[:0] = {path!r}\nt = time.perf_counter()\nimport {module}\n"
            code += "print(time.perf_counter() - t)"
            done = subprocess.run(
                [sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=True
            )
            seconds[name].append(float(done.stdout.split()[-1]))
    baseline = statistics.median(seconds["boto3"])
    return [
        {"name": name, "median_seconds": statistics.median(s), "ratio": statistics.median(s) / baseline}
        for name, s in seconds.items()
    ]


def import_figures(measured: list[dict[str, Any]]) -> list[Figure]:
    figures = []
    for row in measured:
        seconds, ratio = float(row["median_seconds"]), float(row["ratio"])
        figures.append(info("1 import", row["name"], "ms", seconds, f"{seconds * 1000:.0f}"))
        if row["name"] != "boto3":
            limit = float(row.get("target", row.get("target_ratio", IMPORT_RATIO)))
            figures.append(at_most("1 import", row["name"], "x boto3", ratio, limit, f"{ratio:.2f}"))
    return figures


# -- 2, 3. executions ---------------------------------------------------------------------------------


def execution_figures(run: ExecutionFigures) -> list[Figure]:
    section = f"2 {run.path}"
    subject = run.recommendation_type + (f" ({run.fault_step} fails)" if run.fault_step else "")
    price = run.price_per_thousand["total"]
    if run.path == "happy":
        outcome = Figure(section, subject, "", run.status, "completed", run.status == "completed")
        checked = [
            at_most(section, subject, "transitions", run.transitions, HAPPY_TRANSITIONS),
            info(section, subject, "λ calls", run.invocations),
            at_most(section, subject, "DDB req", run.dynamodb_requests, HAPPY_DYNAMODB_REQUESTS),
            at_most(section, subject, "exec writes", run.execution_record_writes, EXECUTION_RECORD_WRITES),
        ]
    else:
        outcome = info(section, subject, "", run.status)
        checked = [
            at_most(section, subject, "transitions", run.transitions, ROLLBACK_TRANSITIONS),
            info(section, subject, "λ calls", run.invocations),
            info(section, subject, "DDB req", run.dynamodb_requests),
            info(section, subject, "exec writes", run.execution_record_writes),
        ]
    return [
        outcome,
        *checked,
        info(section, subject, "WCU", run.write_units),
        info(section, subject, "RRU", run.read_units),
        info(section, subject, "per 1k", price, f"${price:.3f}"),
    ]


def aws_wait_figures(run: ExecutionFigures) -> list[Figure]:
    least = asl.happy_path(spine.states_language(RecommendationType(run.recommendation_type)))
    subject = run.recommendation_type
    figures = [
        at_most("3 AWS wait", subject, "s waiting", least.wait_seconds, HAPPY_AWS_WAIT_SECONDS),
        info("3 AWS wait", subject, "s in the Wait states the local run entered", run.aws_wait_seconds),
    ]
    if least.unresolved_waits:
        figures.append(info("3 AWS wait", subject, "", "+ " + ", ".join(least.unresolved_waits) + " (SecondsPath)"))
    return figures


# -- 4. a batch at once -----------------------------------------------------------------------------


def load_figures(load: dict[str, Any]) -> list[Figure]:
    subject = f"{load['executions']} fix_config at once"
    return [
        at_most("4 load", subject, "not completed", load["executions"] - load["completed"], 0),
        info("4 load", subject, "executions/min", load["per_minute"], f"{load['per_minute']:.0f}"),
        info("4 load", subject, "s in all", load["seconds"], f"{load['seconds']:.0f}"),
        at_most("4 load", subject, "median transitions", load["median_transitions"], HAPPY_TRANSITIONS),
        at_most("4 load", subject, "most acting at once", load["most_acting_at_once"], load["max_concurrent_acting"]),
    ]


# -- 5, 6. the API ----------------------------------------------------------------------------------


def list_figures(listed: dict[str, Any]) -> list[Figure]:
    subject = f"GET /executions, {listed['records']:,} records"
    return [
        at_most("5 list", subject, "ms", listed["median_ms"], API_TIMEOUT_MS, f"{listed['median_ms']:.0f}"),
        info("5 list", subject, "items on the page", listed["page_items"]),
    ]


def api_figures(name: str, measured: dict[str, Any]) -> list[Figure]:
    subject = f"{name}, {measured['clients']} client{'s' if measured['clients'] > 1 else ''}"
    figures = [
        info("6 API", subject, "ms p50", measured["p50_ms"], f"{measured['p50_ms']:.1f}"),
        info("6 API", subject, "ms p99", measured["p99_ms"], f"{measured['p99_ms']:.1f}"),
        info("6 API", subject, "ms handler p50", measured["handler_p50_ms"], f"{measured['handler_p50_ms']:.1f}"),
    ]
    if measured["clients"] == 1:
        overhead = measured["p50_ms"] - measured["handler_p50_ms"]
        figures.append(at_most("6 API", subject, "ms HTTP adds", overhead, HTTP_OVERHEAD_MS, f"{overhead:.1f}"))
    return figures


# -- the whole bench --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    runs: list[ExecutionFigures]
    load: dict[str, Any]
    api: dict[str, list[dict[str, Any]]]
    lists: list[dict[str, Any]]


def measure(runtime: LocalRuntime, bench: Bench) -> Measured:
    runs = [
        bench.execution(recommendation_type, path)
        for recommendation_type in topology.implemented_types()
        for path in ("happy", "rollback")
    ]
    # From here on the sweeper runs on the deployed schedule, as it hands slots over under load.
    runtime.sweep_interval_seconds = topology.SWEEP_INTERVAL_MINUTES * 60
    runtime.wake_sweeper()
    load = bench.concurrent(CONCURRENT_EXECUTIONS)
    calls = {
        "status read": status_read(runtime, runs[0].execution_id),
        "registration": registration(runtime, "bench-api"),
    }
    api = {
        name: [latency(runtime, bench.invocations, call, clients, API_REQUESTS // clients) for clients in API_CLIENTS]
        for name, call in calls.items()
    }
    lists = [list_latency(runtime, records) for records in LIST_SIZES]  # last: they fill the table
    return Measured(runs, load, api, lists)


def all_figures(imports: list[dict[str, Any]], measured: Measured, peak_memory_mb: float) -> list[Figure]:
    happy = [run for run in measured.runs if run.path == "happy"]
    figures = import_figures(imports)
    for run in measured.runs:
        figures += execution_figures(run)
    for run in happy:
        figures += aws_wait_figures(run)
    figures += load_figures(measured.load)
    for listed in measured.lists:
        figures += list_figures(listed)
    for name, by_clients in measured.api.items():
        for one in by_clients:
            figures += api_figures(name, one)
    average = statistics.mean(run.seconds for run in happy)
    return [
        *figures,
        at_most("7 overall", "execute → final, mean of the happy runs", "s", average, SEED_AVERAGE_SECONDS),
        at_most("7 overall", "peak memory of the bench process", "MB", peak_memory_mb, PEAK_MEMORY_MB),
    ]


def main() -> int:
    began = time.perf_counter()
    imports = imports_measured_apart()  # first, while nothing else runs
    import_source = "benchmarks/imports.py"
    with LocalRuntime(
        aws_port=free_port(),
        api_port=free_port(),
        # Every RI purchase's resource is its instance type: without a cooldown one type serves each run.
        resource_cooldown_seconds=0,
        # Not while executions are measured one by one: a sweep's requests would fall in their windows.
        sweep_interval_seconds=24 * 3600,
    ) as runtime:
        if imports is None:
            imports = imports_in_runtime_environment(runtime)
            import_source = "the bench's own fallback (benchmarks/imports.py is missing)"
        bench = Bench(runtime)
        try:
            measured = measure(runtime, bench)
        finally:
            bench.close()
    peak_memory_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    figures = all_figures(imports, measured, peak_memory_mb)

    table = rows(figures)
    missed = [row for row in table if row["result"] == "MISSED"]
    notes = [*NOTES, f"Imports measured by {import_source}."]
    seconds = time.perf_counter() - began
    print(render(table) + "\n")
    print("\n".join(f"- {note}" for note in notes))
    write_json(
        RESULTS_FILE,
        figures,
        notes,
        {
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
            "bench_seconds": round(seconds, 1),
            "imports": imports,
            "executions": [asdict(run) for run in measured.runs],
            "load": measured.load,
            "api": measured.api,
            "lists": measured.lists,
            "peak_memory_mb": peak_memory_mb,
        },
    )
    print(
        f"\n{len(missed)} of {len(table)} rows missed a target (✗); {RESULTS_FILE} written in {seconds / 60:.1f} min."
    )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
