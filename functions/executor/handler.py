"""Runs one step of a recommendation type's state machine (see cost_engine.steps)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from cost_engine.context import EngineContext
from cost_engine.executors import executor_class
from cost_engine.settings import load_settings
from cost_engine.steps import StepRequest, StepRunner
from cost_engine.tracing import engine_tracer

logger = Logger()
tracer = engine_tracer()
metrics = Metrics()

# Checked at cold start: a function with a broken environment fails at once, not mid-execution. The
# context, kept for the life of the instance, makes its stores and AWS clients on first use.
settings = load_settings()
runner = StepRunner(EngineContext.from_settings(settings))
# The function runs the steps of one type: its executor is loaded now, with the function, and no other.
if settings.recommendation_type is not None:
    executor_class(settings.recommendation_type)


# The event is not logged: the approval step's event carries the task token.
@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    metrics.add_metric(name="StepInvocations", unit=MetricUnit.Count, value=1)
    request = StepRequest.model_validate(event)
    logger.append_keys(execution_id=request.execution_id, step=request.step.value)
    result = runner.run(request)
    logger.info("step done", extra={"result": result})
    return result
