"""Reading the EventBridge events the engine's rules deliver: one parse for every target, so each
refuses a malformed event the same way, naming what is wrong before anything is written."""

from __future__ import annotations

from typing import Any, TypeVar

from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from pydantic import ValidationError

from cost_engine.errors import InvalidRequest, validation_problems

Event = TypeVar("Event", bound=EventBridgeModel)


def parse_event(model: type[Event], event: Any, detail_type: str, malformed: type[InvalidRequest], what: str) -> Event:
    """`event` read as `model` (whose `detail` says what it carries), or `malformed` raised with the
    problems. `what` names the event in the error: "a Recommendation Approved event"."""
    try:
        parsed = model.model_validate(event)
    except ValidationError as error:
        problems = validation_problems(error.errors(), whole="(event)")
        raise malformed(f"not {what}: {problems}") from None
    # The rule's pattern already filters on it; checked again because the function can be invoked directly.
    if parsed.detail_type != detail_type:
        raise malformed(f"detail-type is '{parsed.detail_type}', not '{detail_type}'")
    return parsed
