"""EventBridge Scheduler's universal targets and Lambda targets, which moto stores but never fires.

`fire_schedule` does what Scheduler does when a schedule with a universal target comes due: it reads
the schedule through the Scheduler API, checks that Scheduler could assume its role, and calls
`<service>:<Action>` with the schedule's JSON `Input` as the request parameters (PascalCase keys, as
the service's API takes them), or, for a Lambda function's ARN, invokes the function with the `Input`
as its event (as Scheduler's templated Lambda target does, asynchronously on AWS; here at once, so
that the caller sees its answer). Time is not emulated: a test or the demo fires a schedule when it
wants to see its effect.

Firing an `ec2:stopInstances` target with `"Hibernate": true` also needs EC2 to hibernate, which moto
treats as a plain stop: `install` makes moto's StopInstances record the hibernation as AWS reports it
(`StateReason` `Client.UserInitiatedHibernate`) for instances launched with hibernation configured.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import boto3
from botocore import xform_name
from botocore.exceptions import UnknownServiceError

from cost_engine.aws import AwsClients

if TYPE_CHECKING:
    from local_runtime.runtime import LocalRuntime

LAMBDA_TARGET = re.compile(r"arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{12}:function:[A-Za-z0-9_-]+")
UNIVERSAL_TARGET = re.compile(
    r"arn:aws[a-z-]*:scheduler:::aws-sdk:(?P<service>[a-z0-9-]+):(?P<action>[a-z][A-Za-z0-9]*)"
)
# Scheduler refuses universal targets that only read (its user guide, "Unsupported actions").
READ_ONLY_PREFIXES = (
    "get",
    "describe",
    "list",
    "poll",
    "receive",
    "search",
    "scan",
    "query",
    "select",
    "read",
    "lookup",
    "discover",
    "validate",
    "batchGet",
    "batchDescribe",
    "batchRead",
    "transactGet",
    "adminGet",
    "adminList",
    "testMigration",
    "retrieve",
    "testConnection",
    "translateDocument",
    "isAuthorized",
    "invokeModel",
)
SCHEDULER_PRINCIPAL = "scheduler.amazonaws.com"
HIBERNATE_REASON_CODE = "Client.UserInitiatedHibernate"


class ClientFactory(Protocol):
    """Anything that makes boto3 clients for the emulated account, such as the LocalRuntime."""

    def client(self, service: str) -> Any: ...


class TargetRefused(Exception):
    """The schedule's target is one EventBridge Scheduler would not (or this emulation cannot) invoke."""


@dataclass(frozen=True)
class FiredTarget:
    schedule: str
    group: str
    service: str
    operation: str
    input: dict[str, Any]
    response: dict[str, Any]


def install(runtime: LocalRuntime | None) -> None:
    """Teach moto's EC2 to hibernate on StopInstances(Hibernate=true), as a fired stop schedule asks."""
    from moto.ec2.models.instances import StateReason
    from moto.ec2.responses.instances import InstanceResponse

    plain_stop = InstanceResponse.stop_instances
    if getattr(plain_stop, "emulates_hibernation", False):
        return

    def stop_instances(self: Any) -> Any:
        result = plain_stop(self)  # refuses a DryRun and unknown ids, and stops
        if self._get_bool_param("Hibernate", False):
            # AWS hibernates only instances launched with hibernation configured; others get a plain
            # stop, which is what moto already did.
            for instance in self.ec2_backend.get_multi_instances_by_id(self._get_param("InstanceIds", [])):
                if (instance.hibernation_options or {}).get("Configured"):
                    instance.state_reason = StateReason(
                        f"{HIBERNATE_REASON_CODE}: User initiated hibernate", HIBERNATE_REASON_CODE
                    )
        return result

    stop_instances.emulates_hibernation = True  # type: ignore[attr-defined]
    InstanceResponse.stop_instances = stop_instances  # type: ignore[method-assign]


def _client(source: ClientFactory | AwsClients, service: str) -> Any:
    if isinstance(source, AwsClients):
        return boto3.client(service, region_name=source.region)  # type: ignore[call-overload]
    return source.client(service)


def _check_role(source: ClientFactory | AwsClients, role_arn: str) -> None:
    """Scheduler assumes the target's role before it calls anything: the role must exist and trust it."""
    role_name = role_arn.rsplit("/", 1)[-1]
    iam = _client(source, "iam")
    try:
        trust = iam.get_role(RoleName=role_name)["Role"]["AssumeRolePolicyDocument"]
    except iam.exceptions.NoSuchEntityException:
        raise TargetRefused(f"EventBridge Scheduler cannot assume {role_arn}: the role does not exist") from None
    if isinstance(trust, str):
        trust = json.loads(trust)
    for statement in trust.get("Statement", []):
        services = statement.get("Principal", {}).get("Service", [])
        services = [services] if isinstance(services, str) else services
        actions = statement.get("Action", [])
        actions = [actions] if isinstance(actions, str) else actions
        if statement.get("Effect") == "Allow" and SCHEDULER_PRINCIPAL in services and "sts:AssumeRole" in actions:
            return
    raise TargetRefused(f"EventBridge Scheduler cannot assume {role_arn}: its trust policy does not allow it")


def _operation(client: Any, service: str, action: str) -> str:
    """The API operation a universal target's camelCase action names (matched as Scheduler does,
    without regard to case: getQueueURL is GetQueueUrl)."""
    by_lower = {name.lower(): name for name in client.meta.service_model.operation_names}
    operation = by_lower.get(action.lower())
    if operation is None:
        raise TargetRefused(f"'{service}' has no API action '{action}'")
    return str(operation)


def fire_schedule(source: ClientFactory | AwsClients, name: str, group: str = "default") -> FiredTarget:
    """Invoke the universal target of schedule `group/name` now, as EventBridge Scheduler would when
    it comes due. Raises TargetRefused for a target Scheduler would not invoke (disabled schedule,
    role it cannot assume, read-only action) or this emulation does not know (templated targets);
    an error of the target call itself is raised as the service answered it."""
    schedule = _client(source, "scheduler").get_schedule(Name=name, GroupName=group)
    if schedule.get("State") != "ENABLED":
        raise TargetRefused(f"schedule {group}/{name} is {schedule.get('State')}: Scheduler does not invoke it")
    target = schedule["Target"]
    if LAMBDA_TARGET.fullmatch(target["Arn"]):
        return _invoke_function(source, name, group, target)
    match = UNIVERSAL_TARGET.fullmatch(target["Arn"])
    if match is None:
        raise TargetRefused(
            f"schedule {group}/{name} targets {target['Arn']}: only universal targets "
            "(arn:aws:scheduler:::aws-sdk:<service>:<apiAction>) and Lambda functions are emulated"
        )
    service, action = match["service"], match["action"]
    if action.startswith(READ_ONLY_PREFIXES):
        raise TargetRefused(f"'{service}:{action}' only reads: Scheduler does not support it as a universal target")
    try:
        client = _client(source, service)
    except UnknownServiceError:
        raise TargetRefused(f"'{service}' is not an AWS SDK service name") from None
    operation = _operation(client, service, action)
    _check_role(source, target["RoleArn"])
    parameters = json.loads(target.get("Input") or "{}")
    if not isinstance(parameters, dict):
        raise TargetRefused(f"schedule {group}/{name}: a universal target's Input is a JSON object")
    response = dict(getattr(client, xform_name(operation))(**parameters))
    response.pop("ResponseMetadata", None)
    return FiredTarget(name, group, service, operation, parameters, response)


def _invoke_function(source: ClientFactory | AwsClients, name: str, group: str, target: dict[str, Any]) -> FiredTarget:
    """A Lambda target: the function is invoked with the schedule's Input as its event; an error of the
    function is raised (Scheduler would retry, then drop it or send it to the dead-letter queue)."""
    _check_role(source, target["RoleArn"])
    event = json.loads(target.get("Input") or "{}")
    answer = _client(source, "lambda").invoke(FunctionName=target["Arn"], Payload=json.dumps(event).encode())
    payload = json.loads(answer["Payload"].read() or b"null")
    if answer.get("FunctionError"):
        raise RuntimeError(f"schedule {group}/{name}: {target['Arn']} failed: {payload}")
    return FiredTarget(name, group, "lambda", "Invoke", event, {"Payload": payload})
