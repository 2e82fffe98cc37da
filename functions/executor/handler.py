"""Runs one step of a recommendation type's state machine (see cost_engine.steps)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from cost_engine.context import EngineContext
from cost_engine.settings import load_settings
from cost_engine.steps import StepRequest, StepRunner

logger = Logger()
tracer = Tracer()
metrics = Metrics()

# Checked at cold start: a function with a broken environment fails at once, not mid-execution.
runner = StepRunner(EngineContext.from_settings(load_settings()))


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
