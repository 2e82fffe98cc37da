"""EventBridge rules whose target is a Lambda function, which moto 5.2.5 refuses (NotImplementedError).

On AWS, EventBridge invokes a Lambda target asynchronously: PutEvents returns at once, and Lambda
queues the event and runs the function in the background. Here each matching event is delivered in a
daemon thread through moto's Lambda backend (so the local runtime's in-process dispatch runs the real
handler), after the target's `InputTransformer` or constant `Input`, else as the whole event.

What Lambda does with a failed asynchronous invocation is emulated too, from the function's
asynchronous-invocation config (moto stores it but never acts on it): up to `MaximumRetryAttempts`
retries (2 by default), then a record of the invocation to its `OnFailure` SQS destination, else the
event to the function's own `DeadLetterConfig` SQS queue (which moto does not keep: `install` keeps
it), else the event is dropped. A target function that does not exist is an EventBridge delivery
failure: the event goes to the target's `DeadLetterConfig` SQS queue, with the message attributes
EventBridge adds, and is not retried, as on AWS.

Left out: the target's `RetryPolicy` (EventBridge retries only failures to hand the event to Lambda,
such as throttling, which do not happen here), `MaximumEventAgeInSeconds` (retries take a fraction of
a second), `InputPath` (the whole event goes), qualified targets' own configs, on-success
destinations and destinations other than SQS queues (logged and dropped). Non-Lambda targets keep
moto's behaviour. `wait_idle` lets a test or the demo wait for the deliveries in flight.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from moto.awslambda.models import LambdaFunction
    from moto.events.models import Rule

    from local_runtime.runtime import LocalRuntime

logger = logging.getLogger(__name__)

LAMBDA_FUNCTION = re.compile(r"arn:aws[a-z-]*:lambda:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):function:[^:]+(:.+)?")
SQS_QUEUE = re.compile(r"arn:aws[a-z-]*:sqs:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):(?P<name>[^:]+)")
# Lambda's default for an asynchronous invocation without an event invoke config (its maximum too).
DEFAULT_MAXIMUM_RETRY_ATTEMPTS = 2
# Lambda waits about 1 minute before the first retry and 2 before the second; locally the wait only
# needs to keep the attempts apart.
RETRY_DELAY_SECONDS = 0.2
FUNCTION_ERROR_HEADER = "x-amz-function-error"
_DEAD_LETTER_CONFIG = "_emulated_dead_letter_config"  # where a moto function keeps its DeadLetterConfig


class _Deliveries:
    """The deliveries in flight, so a caller can wait until every background invocation is done."""

    def __init__(self) -> None:
        self._count = 0
        self._changed = threading.Condition()

    def begin(self) -> None:
        with self._changed:
            self._count += 1

    def end(self) -> None:
        with self._changed:
            self._count -= 1
            self._changed.notify_all()

    def wait_idle(self, timeout: float) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: self._count == 0, timeout):
                raise TimeoutError(f"{self._count} EventBridge deliveries to Lambda still in flight after {timeout}s")


_deliveries = _Deliveries()


def wait_idle(timeout: float = 10.0) -> None:
    """Return once no event is being delivered to (or retried on) a Lambda target; TimeoutError if
    some still are after `timeout` seconds."""
    _deliveries.wait_idle(timeout)


def install(runtime: LocalRuntime | None) -> None:
    """Make moto's EventBridge rules deliver to Lambda targets, and its functions keep their
    DeadLetterConfig. Safe to call more than once."""
    from moto.events.models import Rule

    plain_send = Rule.send_to_targets
    if getattr(plain_send, "delivers_to_lambda", False):
        return
    _keep_function_dead_letter_config()

    def send_to_targets(self: Rule, original_event: Any, transform_input: bool = True) -> None:
        if self.scheduled_expression and not self.event_pattern._pattern:
            # A schedule rule is sent no events (moto's empty pattern would match them all); the
            # local runtime fires it itself (LocalRuntime's sweeper thread).
            return
        lambda_targets = [target for target in self.targets if LAMBDA_FUNCTION.fullmatch(target["Arn"])]
        if not lambda_targets:
            plain_send(self, original_event, transform_input)
            return
        if other_targets := [target for target in self.targets if target not in lambda_targets]:
            # moto's own delivery, shown only the targets it knows; a proxy rather than a change to
            # the rule, which other threads may be reading.
            plain_send(_WithTargets(self, other_targets), original_event, transform_input)  # type: ignore[arg-type]
        # moto passes every put event to every rule of the bus and lets the rule match it.
        if self.state != "ENABLED" or not self.event_pattern.matches_event(original_event):
            return
        for target in lambda_targets:
            event = _target_input(target, original_event) if transform_input else _whole_event(original_event)
            _deliveries.begin()
            threading.Thread(
                target=_deliver,
                args=(self.arn, target, event),
                name=f"eventbridge-to-{target['Arn'].split(':function:')[1]}",
                daemon=True,
            ).start()

    setattr(send_to_targets, "delivers_to_lambda", True)  # noqa: B010
    setattr(Rule, "send_to_targets", send_to_targets)  # noqa: B010


class _WithTargets:
    """A rule seen with only some of its targets."""

    def __init__(self, rule: Rule, targets: list[dict[str, Any]]) -> None:
        self._rule = rule
        self.targets = targets

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rule, name)


def _keep_function_dead_letter_config() -> None:
    """moto drops a function's DeadLetterConfig; keep it from CreateFunction and
    UpdateFunctionConfiguration, where the asynchronous retries' last resort reads it."""
    from moto.awslambda.models import LambdaFunction

    plain_init = LambdaFunction.__init__
    plain_update = LambdaFunction.update_configuration

    def __init__(
        self: LambdaFunction, account_id: str, spec: dict[str, Any], region: str, version: str | int = 1
    ) -> None:
        plain_init(self, account_id, spec, region, version)
        setattr(self, _DEAD_LETTER_CONFIG, spec.get("DeadLetterConfig") or {})

    def update_configuration(self: LambdaFunction, config_updates: dict[str, Any]) -> dict[str, Any]:
        if "DeadLetterConfig" in config_updates:
            setattr(self, _DEAD_LETTER_CONFIG, config_updates["DeadLetterConfig"] or {})
        return plain_update(self, config_updates)

    setattr(LambdaFunction, "__init__", __init__)  # noqa: B010
    setattr(LambdaFunction, "update_configuration", update_configuration)  # noqa: B010


def _iso_time(value: Any) -> Any:
    """EventBridge delivers `time` as ISO 8601; moto keeps the epoch seconds of the put."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return value
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _whole_event(original_event: Mapping[str, Any]) -> dict[str, Any]:
    event = {key: value for key, value in original_event.items() if key != "ingestion-time"}
    if "time" in event:
        event["time"] = _iso_time(event["time"])
    return event


def _target_input(target: Mapping[str, Any], original_event: Mapping[str, Any]) -> Any:
    """What EventBridge sends the target: its transformed input, its constant Input, or the event."""
    from moto.events.utils import EventTemplateParser

    if transformer := target.get("InputTransformer"):
        # moto's own template parser, as its other targets use, with the time as AWS renders it.
        return EventTemplateParser.parse(
            input_template=transformer.get("InputTemplate"),
            input_paths_map=transformer.get("InputPathsMap", {}),
            event={**original_event, "time": _iso_time(original_event.get("time"))},  # type: ignore[typeddict-item]
        )
    if "Input" in target:
        return json.loads(target["Input"])
    return _whole_event(original_event)


def _deliver(rule_arn: str, target: Mapping[str, Any], event: Any) -> None:
    try:
        _invoke_asynchronously(rule_arn, target, event)
    except Exception:
        # A daemon thread's error would otherwise only reach stderr; say which delivery it was.
        logger.exception("delivering an event of %s to %s failed", rule_arn, target["Arn"])
    finally:
        _deliveries.end()


def _invoke_asynchronously(rule_arn: str, target: Mapping[str, Any], event: Any) -> None:
    """Lambda's handling of one asynchronous invocation: attempts, then the failure's destination."""
    from moto.awslambda.exceptions import UnknownFunctionException
    from moto.awslambda.utils import get_backend

    function_arn = target["Arn"]
    where = LAMBDA_FUNCTION.fullmatch(function_arn)
    assert where is not None  # only Lambda targets are delivered here
    backend = get_backend(where["account"], where["region"])
    try:
        function = backend.get_function(function_arn)
    except UnknownFunctionException as error:
        # EventBridge cannot hand the event to Lambda at all; it does not retry a missing target.
        _to_target_dead_letter_queue(rule_arn, target, event, "RESOURCE_NOT_FOUND", error.message)
        return

    config = function.event_invoke_config[-1].config if function.event_invoke_config else {}
    max_retries = int(config.get("MaximumRetryAttempts", DEFAULT_MAXIMUM_RETRY_ATTEMPTS))
    attempts = 0
    while True:
        attempts += 1
        response_headers: dict[str, Any] = {}
        payload = backend.invoke(
            function_name=function_arn,
            qualifier=None,
            body=json.dumps(event),
            headers={"x-amz-invocation-type": "Event"},
            response_headers=response_headers,
        )
        if FUNCTION_ERROR_HEADER not in response_headers:
            return
        if attempts > max_retries:
            break
        time.sleep(RETRY_DELAY_SECONDS)

    on_failure = config.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
    dead_letter_queue = getattr(function, _DEAD_LETTER_CONFIG, {}).get("TargetArn")
    if on_failure:
        record = _failure_record(function.function_arn, event, attempts, payload)
        _send_to_sqs(on_failure, json.dumps(record), f"{function.function_name}'s on-failure destination")
    elif dead_letter_queue:
        # A function's dead-letter queue receives the event alone, without the invocation's details.
        _send_to_sqs(dead_letter_queue, json.dumps(event), f"{function.function_name}'s dead-letter queue")
    else:
        logger.warning(
            "%s failed %d times on an event from %s, which has nowhere to go: dropped",
            function.function_name,
            attempts,
            rule_arn,
        )


def _failure_record(function_arn: str, event: Any, attempts: int, payload: str | bytes | None) -> dict[str, Any]:
    """The invocation record Lambda sends to an on-failure destination (its documented format)."""
    text = payload.decode() if isinstance(payload, bytes) else (payload or "")
    try:
        response_payload: Any = json.loads(text)
    except ValueError:
        response_payload = text
    return {
        "version": "1.0",
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "requestContext": {
            "requestId": str(uuid.uuid4()),
            "functionArn": f"{function_arn}:$LATEST",
            "condition": "RetriesExhausted",
            "approximateInvokeCount": attempts,
        },
        "requestPayload": event,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": response_payload,
    }


def _to_target_dead_letter_queue(
    rule_arn: str, target: Mapping[str, Any], event: Any, error_code: str, error_message: str
) -> None:
    queue_arn = target.get("DeadLetterConfig", {}).get("Arn")
    if not queue_arn:
        logger.warning(
            "%s cannot deliver to %s (%s), and has no dead-letter queue", rule_arn, target["Arn"], error_code
        )
        return
    # The attributes EventBridge adds to each message in a target's dead-letter queue.
    attributes = {
        "RULE_ARN": rule_arn,
        "TARGET_ARN": target["Arn"],
        "ERROR_CODE": error_code,
        "ERROR_MESSAGE": error_message,
    }
    _send_to_sqs(queue_arn, json.dumps(event), f"the dead-letter queue of {rule_arn}", attributes)


def _send_to_sqs(queue_arn: str, body: str, purpose: str, attributes: Mapping[str, str] | None = None) -> None:
    """Send through moto's SQS backend directly: this runs inside the emulator, with no client."""
    from moto.sqs.models import sqs_backends

    queue = SQS_QUEUE.fullmatch(queue_arn)
    if queue is None:
        logger.warning("%s is %s, not an SQS queue: only SQS is emulated, the message is dropped", purpose, queue_arn)
        return
    sqs_backends[queue["account"]][queue["region"]].send_message(
        queue_name=queue["name"],
        message_body=body,
        message_attributes={
            name: {"DataType": "String", "StringValue": value} for name, value in (attributes or {}).items()
        },
    )
