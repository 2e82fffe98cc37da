"""Executions on the local runtime, measured: one per type on its happy path and one on a rollback
path, each alone so that everything the emulated AWS receives meanwhile is its own; and a batch at once.

An execution's window opens before its recommendation is registered and closes once its status is
final, its state machine run has ended and nothing more reaches the emulated AWS or the functions for
a moment (a run that ends FAILED is still reconciled by the trigger). In between, the bench watches the
execution record in the emulator's memory, not through the API or DynamoDB, so that its own polling
is not counted.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from benchmarks import asl, costs
from benchmarks.instruments import DynamoDbWrites, Invocation, Invocations, TableWrite
from benchmarks.setups import Account, recommendation_for
from cost_engine import spine, topology
from cost_engine.models import RecommendationType
from local_runtime.client import FINAL_STATUSES, ApiClient
from local_runtime.emulations.aws_requests import AwsRequest
from local_runtime.runtime import ACCOUNT_ID, REGION, LocalRuntime

APPROVER = "bench@example.com"
# Nothing reached the emulated AWS or a function for this long: the execution's work is over.
QUIET_SECONDS = 0.5
EXECUTION_TIMEOUT_SECONDS = 600.0
FUNCTIONS_CONSTRUCT = topology.PROJECT_ROOT / "infra" / "constructs" / "functions.py"


# -- what the prices need from the deployment -----------------------------------------------------------


@dataclass(frozen=True)
class Deployment:
    architecture: str  # arm64 or x86_64
    memory_mb: dict[str, int]  # by function name
    tables: dict[str, costs.TableDefinition]  # by table name


def _architecture() -> str:
    """The functions' architecture: the topology's when it declares one, else the stack's constant."""
    declared = getattr(topology.API_FUNCTION, "architecture", None)
    text = str(declared) if declared is not None else FUNCTIONS_CONSTRUCT.read_text()
    found = re.search(r"ARM_64|arm64|X86_64|x86_64", text)
    if found is None:
        raise ValueError(f"no Lambda architecture found in {FUNCTIONS_CONSTRUCT}")
    return "arm64" if found.group().lower() in ("arm_64", "arm64") else "x86_64"


def _table_definition(table: topology.Table) -> costs.TableDefinition:
    return costs.TableDefinition(
        name=table.local_name,
        key_attributes=table.key_attributes,
        indexes=tuple(
            costs.IndexDefinition(index.name, (index.partition_key, index.sort_key), table.index_attributes(index))
            for index in table.indexes
        ),
    )


def deployment() -> Deployment:
    """Memory and architecture as the stack deploys the functions; the tables and what each of their
    indexes holds as `cost_engine.topology` declares them (the stack and the runtime create them so)."""
    return Deployment(
        architecture=_architecture(),
        memory_mb={function.local_name: function.memory_mb for function in topology.functions()},
        tables={table.local_name: _table_definition(table) for table in topology.TABLES},
    )


# -- one execution ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    requests: list[AwsRequest]
    writes: list[TableWrite]
    invocations: list[Invocation]


@dataclass(frozen=True)
class ExecutionFigures:
    recommendation_type: str
    path: str  # "happy" or "rollback"
    execution_id: str
    status: str
    fault_step: str | None
    seconds: float  # execute request → final status, on the local runtime
    transitions: int
    lambda_tasks: int  # Lambda invocations the state machine run scheduled
    invocations: int  # every function invocation of the window: the run's, the API's, the trigger's
    gb_seconds: float
    dynamodb_requests: int
    execution_record_writes: int
    write_units: int
    read_units: int
    aws_wait_seconds: float  # the Wait states the run entered, at their configured seconds
    price_per_thousand: dict[str, float]


class Bench:
    """A started runtime, its API, the bench's account and the recorders."""

    def __init__(self, runtime: LocalRuntime, customer_id: str = "bench") -> None:
        self.runtime = runtime
        self.api = ApiClient(runtime.api_url, runtime.api_key, timeout=600)
        self.account = Account(runtime, customer_id)
        self.writes = DynamoDbWrites()
        self.writes.install()
        self.invocations = Invocations()
        self.invocations.install(runtime.dispatcher)
        self.deployment = deployment()
        self.sfn = runtime.client("stepfunctions")

    def close(self) -> None:
        self.writes.uninstall()

    # -- watching without being counted ---------------------------------------------------------

    def record(self, execution_id: str) -> dict[str, Any]:
        """The execution record as the emulator holds it (no request is made)."""
        from moto.dynamodb.models import dynamodb_backends

        item = dynamodb_backends[ACCOUNT_ID][REGION].get_item(
            topology.EXECUTIONS_TABLE.local_name, {"execution_id": {"S": execution_id}}
        )
        if item is None:
            raise LookupError(f"no execution record {execution_id}")
        return {name: next(iter(value.values())) for name, value in item.to_json()["Attributes"].items()}

    def wait_for_status(self, execution_id: str, wanted: Callable[[str], bool]) -> str:
        deadline = time.monotonic() + EXECUTION_TIMEOUT_SECONDS
        while not wanted(status := str(self.record(execution_id)["status"])):
            if time.monotonic() > deadline:
                raise TimeoutError(f"execution {execution_id} still '{status}'")
            time.sleep(0.02)
        return status

    def run_to_the_end(self, execution_id: str) -> str:
        """Wait for the final status, approving through the API when the execution asks a person."""
        status = self.wait_for_status(execution_id, lambda s: s in FINAL_STATUSES | {"awaiting_approval"})
        if status == "awaiting_approval":
            self.api.approve(execution_id, APPROVER, "approved by the bench")
            status = self.wait_for_status(execution_id, lambda s: s in FINAL_STATUSES)
        return status

    def run_arn(self, execution_id: str) -> str:
        return str(self.record(execution_id)["state_machine_execution_arn"])

    def history(self, run_arn: str) -> list[dict[str, Any]]:
        """The run's events once it has ended."""
        deadline = time.monotonic() + EXECUTION_TIMEOUT_SECONDS
        while self.sfn.describe_execution(executionArn=run_arn)["status"] == "RUNNING":
            if time.monotonic() > deadline:
                raise TimeoutError(f"state machine run {run_arn} still running")
            time.sleep(0.02)
        events: list[dict[str, Any]] = []
        token: dict[str, str] = {}
        while True:
            page = self.sfn.get_execution_history(executionArn=run_arn, maxResults=1000, **token)
            events += page["events"]
            if "nextToken" not in page:
                return events
            token = {"nextToken": page["nextToken"]}

    def _marks(self) -> tuple[int, int, int]:
        return self.runtime.aws_requests.mark(), self.writes.mark(), self.invocations.mark()

    def settle(self) -> None:
        """Until nothing reaches the emulated AWS or a function for QUIET_SECONDS."""
        last, quiet_since = self._marks(), time.monotonic()
        deadline = quiet_since + EXECUTION_TIMEOUT_SECONDS
        while time.monotonic() - quiet_since < QUIET_SECONDS:
            if time.monotonic() > deadline:
                raise TimeoutError("the runtime never went quiet: an execution's window would hold others' work")
            time.sleep(0.05)
            if (now := self._marks()) != last:
                last, quiet_since = now, time.monotonic()

    def window(self, marks: tuple[int, int, int]) -> Window:
        requests, writes, invocations = marks
        return Window(
            self.runtime.aws_requests.since(requests), self.writes.since(writes), self.invocations.since(invocations)
        )

    # -- measuring -------------------------------------------------------------------------------

    def execution(self, recommendation_type: RecommendationType, path: str) -> ExecutionFigures:
        """One execution of the type, alone: its happy path, or ("rollback") with the step that
        `asl.fault_step` picks from the type's deployed definition failing before it runs."""
        definition = spine.states_language(recommendation_type)
        fault = asl.fault_step(definition) if path == "rollback" else None
        recommendation = recommendation_for(recommendation_type, self.account)
        self.settle()
        marks = self._marks()
        if fault is not None:
            self.runtime.faults.inject(fault)
        try:
            recommendation_id = self.api.register(recommendation)["recommendation_id"]
            started = time.perf_counter()
            execution_id = self.api.execute(recommendation_id, auto_approve=True)["execution_id"]
            status = self.run_to_the_end(execution_id)
            seconds = time.perf_counter() - started
            history = self.history(self.run_arn(execution_id))
            self.settle()
        finally:
            self.runtime.faults.clear()
        return self._figures(
            recommendation_type, path, execution_id, status, fault, seconds, definition, history, self.window(marks)
        )

    def _figures(
        self,
        recommendation_type: RecommendationType,
        path: str,
        execution_id: str,
        status: str,
        fault: str | None,
        seconds: float,
        definition: dict[str, Any],
        history: list[dict[str, Any]],
        window: Window,
    ) -> ExecutionFigures:
        dynamodb = [request.operation for request in window.requests if request.service == "dynamodb"]
        write_units = sum(
            costs.write_units(
                self.deployment.tables[write.table],
                write.before,
                write.after,
                condition_failed=write.condition_failed,
                transactional=write.transactional,
            )
            for write in window.writes
        )
        gb_seconds = sum(
            costs.lambda_gb_seconds([call.seconds], self.deployment.memory_mb.get(call.function, 512))
            for call in window.invocations
        )
        transitions = asl.transitions(history)
        cost = costs.execution_cost(
            transitions=transitions,
            invocations=len(window.invocations),
            gb_seconds=gb_seconds,
            architecture=self.deployment.architecture,
            write_units=write_units,
            read_units=costs.read_units(dynamodb),
        )
        return ExecutionFigures(
            recommendation_type=recommendation_type.value,
            path=path,
            execution_id=execution_id,
            status=status,
            fault_step=fault,
            seconds=seconds,
            transitions=transitions,
            lambda_tasks=asl.lambda_tasks(history),
            invocations=len(window.invocations),
            gb_seconds=gb_seconds,
            dynamodb_requests=len(dynamodb),
            execution_record_writes=sum(
                1 for write in window.writes if write.table == topology.EXECUTIONS_TABLE.local_name
            ),
            write_units=write_units,
            read_units=costs.read_units(dynamodb),
            aws_wait_seconds=asl.waits_entered(definition, history),
            price_per_thousand=cost.per_thousand(),
        )

    def concurrent(self, count: int) -> dict[str, Any]:
        """`count` fix_config executions submitted at once (auto-approved, each on its own log group):
        how many finish per minute, their state transitions, and the most that held an acting slot at
        once, from their audit events alone (as tests/integration/test_load.py checks it)."""
        recommendations = [
            self.api.register(recommendation_for(RecommendationType.FIX_CONFIG, self.account))["recommendation_id"]
            for _ in range(count)
        ]
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=25) as pool:
            execution_ids = list(
                pool.map(lambda r: self.api.execute(r, auto_approve=True)["execution_id"], recommendations)
            )
        statuses = [self.wait_for_status(e, lambda s: s in FINAL_STATUSES) for e in execution_ids]
        seconds = time.perf_counter() - started
        transitions = [asl.transitions(self.history(self.run_arn(e))) for e in execution_ids]
        return {
            "executions": count,
            "completed": statuses.count("completed"),
            "seconds": seconds,
            "per_minute": count / seconds * 60,
            "median_transitions": statistics.median(transitions),
            "most_acting_at_once": most_at_once([self._acting_interval(e) for e in execution_ids]),
            "max_concurrent_acting": self.runtime.max_concurrent_acting,
        }

    def _acting_interval(self, execution_id: str) -> tuple[datetime, datetime]:
        """When the execution held its acting slot, from its audit events (the release follows the
        final status at once, written by the status change itself)."""
        deadline = time.monotonic() + 60
        while True:
            logged = {e["event_type"]: e["timestamp"] for e in self.api.logs(execution_id)["events"]}
            if "slot_released" in logged or time.monotonic() > deadline:
                return datetime.fromisoformat(logged["slot_acquired"]), datetime.fromisoformat(logged["slot_released"])
            time.sleep(0.1)


def most_at_once(intervals: list[tuple[datetime, datetime]]) -> int:
    """The most intervals open at one moment (a slot handed over at one instant is not two)."""
    points = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    current = peak = 0
    for _, change in points:
        current += change
        peak = max(peak, current)
    return peak
