"""The engine's EventBridge events: `Recommendation Approved` registers and executes a recommendation
(cost_engine.triggers); `Step Functions Execution Status Change` reconciles an execution whose state
machine run ended without the engine's steps ending it (cost_engine.reconcile); the sweep schedule's
`Scheduled Event` finishes executions left unfinished all the same (cost_engine.sweeper); the engine's
own `Execution Status Changed` of a completed execution schedules its savings measurements, and each
schedule, when due, measures (cost_engine.service.measurements)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from cost_engine.context import EngineContext
from cost_engine.reconcile import Outcome, is_run_ended_event, reconcile_run_ended
from cost_engine.service import ExecutionService
from cost_engine.service.measurements import MEASURE_SAVINGS_KEY, SCHEDULED, is_completed_event, is_measure_event
from cost_engine.settings import load_settings
from cost_engine.sweeper import is_sweep_event, sweep
from cost_engine.tracing import engine_tracer
from cost_engine.triggers import handle_recommendation_approved

logger = Logger()
tracer = engine_tracer()
metrics = Metrics()

# Checked at cold start: a function with a broken environment fails at once. The context, kept for the
# life of the instance, makes its stores and AWS clients on first use.
service = ExecutionService(EngineContext.from_settings(load_settings()))


# The event is logged: it holds a recommendation or a run's execution input, nothing secret, and is
# what a reader of a dead-lettered event needs to see.
@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        if is_sweep_event(event):
            return sweep_unfinished()
        if is_completed_event(event):
            return schedule_measurements(event, context.invoked_function_arn)
        if is_measure_event(event):
            return measure_savings(event)
        return reconcile(event) if is_run_ended_event(event) else start_execution(event)
    except Exception:
        # Raised on: Lambda retries, then the event goes to the dead-letter queue with this error.
        metrics.add_metric(name="TriggerEventsRefused", unit=MetricUnit.Count, value=1)
        logger.exception("event not handled")
        raise


def start_execution(event: dict[str, Any]) -> dict[str, Any]:
    record, started = handle_recommendation_approved(service, event)
    metrics.add_metric(
        name="ExecutionsStarted" if started else "DuplicateTriggerEvents", unit=MetricUnit.Count, value=1
    )
    logger.info(
        "execution started" if started else "duplicate event: execution already exists",
        extra={"execution_id": record.execution_id, "recommendation_id": record.recommendation_id},
    )
    return {"execution_id": record.execution_id, "status": record.status.value, "started": started}


def reconcile(event: dict[str, Any]) -> dict[str, Any]:
    reconciled = reconcile_run_ended(service, event)
    acted = reconciled.outcome in (Outcome.FAILED, Outcome.ROLLING_BACK)
    metrics.add_metric(name="RunsReconciled" if acted else "RunEndsIgnored", unit=MetricUnit.Count, value=1)
    logger.info(
        f"state machine run ended: {reconciled.outcome.value}",
        extra={"execution_id": reconciled.execution_id, "outcome": reconciled.outcome.value},
    )
    return {
        "execution_id": reconciled.execution_id,
        "outcome": reconciled.outcome.value,
        "status": reconciled.status.value if reconciled.status else None,
    }


def sweep_unfinished() -> dict[str, Any]:
    report = sweep(service)
    metrics.add_metric(name="ExecutionsSwept", unit=MetricUnit.Count, value=len(report.decisions))
    metrics.add_metric(name="ExecutionsLeftForNextSweep", unit=MetricUnit.Count, value=len(report.left))
    logger.info(
        "swept",
        extra={"looked_at": report.looked_at, "decisions": dict(report.decisions), "left": sorted(report.left)},
    )
    return {
        "looked_at": report.looked_at,
        "decisions": {execution_id: decision.value for execution_id, decision in report.decisions.items()},
        "left": report.left,
    }


def schedule_measurements(event: dict[str, Any], own_arn: str) -> dict[str, Any]:
    detail = event["detail"]
    execution_id = str(detail["execution_id"])
    completed_at = datetime.fromisoformat(str(detail["changed_at"]))
    # The function's own ARN without an alias or version: what the schedules invoke.
    names = service.schedule_measurements(execution_id, completed_at, ":".join(own_arn.split(":")[:7]))
    metrics.add_metric(name="SavingsMeasurementsScheduled", unit=MetricUnit.Count, value=len(names))
    logger.info("savings measurements scheduled", extra={"execution_id": execution_id, "schedules": names})
    return {"execution_id": execution_id, "schedules": names}


def measure_savings(event: dict[str, Any]) -> dict[str, Any]:
    asked = event[MEASURE_SAVINGS_KEY]
    measurement = service.measure_savings(str(asked["execution_id"]), SCHEDULED, int(asked["window_days"]))
    metrics.add_metric(name="SavingsMeasured", unit=MetricUnit.Count, value=1)
    if measurement.monthly_savings is not None:
        metrics.add_metric(name="MeasuredMonthlySavingsUSD", unit=MetricUnit.NoUnit, value=measurement.monthly_savings)
    logger.info(
        "savings measured",
        extra={"execution_id": asked["execution_id"], "quality": measurement.quality.value},
    )
    return {"execution_id": asked["execution_id"], "measurement": measurement.model_dump(mode="json")}
