"""The embedded local runtime: moto's server, the real ASL, the real handlers, the real API.

Everything is provisioned from `cost_engine.topology`, the declarations the CDK stack reads too.
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import json
import logging
import os
import secrets
import socket
import sys
import threading
import time
import warnings
import zipfile
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from cost_engine import settings, topology
from cost_engine.access import AccessPolicy, api_key_principal, full_access
from cost_engine.approval_policy import ApprovalPolicy
from cost_engine.environment import ENGINE_VARIABLES, Deployment, function_environment
from local_runtime.api_concurrency import give_each_thread_its_own_request
from local_runtime.api_server import ApiServer
from local_runtime.dispatch import Dispatcher, FunctionOutput, one_metric_flush_at_a_time
from local_runtime.emulations import install_all as install_emulations
from local_runtime.emulations.aws_requests import AwsRequests
from local_runtime.provision import create_tables

REGION = "us-east-1"
ACCOUNT_ID = "123456789012"
LOCAL_ROLE_NAME = "cost-engine-local"
# The principal of the default API key ("apikey:local-dev"): every role for every customer, and
# exempt from four eyes, so that one person can run everything locally.
DEFAULT_KEY_NAME = "local-dev"
# What the local functions are told besides the deployment's choices: polling waits here take no time
# (emulations/poll_waits), so an execution's checks are counted against this budget rather than its
# type's (made for AWS's pace).
MAX_POLL_ATTEMPTS = 200


# Every port free_port has handed out in this process: the system may offer a port again once its probe
# is closed, before the server that was given it binds it.
_HANDED_OUT: set[int] = set()
_HANDING_OUT = threading.Lock()


def free_port() -> int:
    with _HANDING_OUT:
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            if port not in _HANDED_OUT:
                _HANDED_OUT.add(port)
                return port


def _placeholder_zip() -> bytes:
    # moto stores a code package per function; the real code runs in-process instead.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(
            "handler.py", "def lambda_handler(event, context):\n    raise RuntimeError('in-process only')\n"
        )
    return buffer.getvalue()


class LocalRuntime:
    def __init__(
        self,
        *,
        aws_port: int = 5000,
        api_port: int = 8080,
        api_key: str = "local-dev-key",
        api_keys: Mapping[str, Mapping[str, Any]] | None = None,
        host: str = "127.0.0.1",
        approval_timeout_seconds: int = settings.DEFAULT_APPROVAL_TIMEOUT_SECONDS,
        approval_policy: dict[str, Any] | None = None,
        approver_emails: tuple[str, ...] = (),
        log_level: str = "WARNING",
        echo_function_output: bool = False,
        max_concurrent_acting: int = settings.DEFAULT_MAX_CONCURRENT_ACTING,
        resource_cooldown_seconds: int = settings.DEFAULT_RESOURCE_COOLDOWN_SECONDS,
        max_acting_seconds: int = settings.DEFAULT_MAX_ACTING_SECONDS,
        sweep_interval_seconds: float = 60.0 * 5,
    ) -> None:
        self.host = host
        self.aws_port = aws_port
        self.api_port = api_port
        self.api_key = api_key
        # More keys, each {"name": …, "customers": {customer or "*": [roles]}} (cost_engine.access).
        self.api_keys = dict(api_keys or {})
        self.approval_timeout_seconds = approval_timeout_seconds
        self.approval_policy = approval_policy
        self.approver_emails = approver_emails
        self.log_level = log_level
        self.echo_function_output = echo_function_output
        # The seed's limits unless a test or the demo chooses others (cost_engine.limits).
        self.max_concurrent_acting = max_concurrent_acting
        self.resource_cooldown_seconds = resource_cooldown_seconds
        self.max_acting_seconds = max_acting_seconds
        # How often the sweeper runs (cost_engine.sweeper); AWS's schedule by default. Read before each
        # wait, so a change takes effect after the current one (`wake_sweeper` ends that at once).
        self.sweep_interval_seconds = sweep_interval_seconds
        self._sweeper_stop = threading.Event()
        self._sweeper_wake = threading.Event()
        self._sweeper: threading.Thread | None = None
        self.dispatcher = Dispatcher(echo=echo_function_output)
        # Every request the emulated AWS receives, and AWS-level faults (emulations/aws_requests.py).
        self.aws_requests = AwsRequests()
        self._real_stdout: TextIO | None = None
        self.state_machine_arns: dict[str, str] = {}
        # Each function's handler module, by function name (each function has its own: _load_handlers).
        self.function_modules: dict[str, Any] = {}
        self.approval_topic_arn = ""
        self.approval_secret_arn = ""
        self.scheduler_role_arn = ""
        self.trigger_dlq_url = ""
        self.trigger_dlq_arn = ""
        self._moto_server: Any = None
        self._api: ApiServer | None = None

    @property
    def aws_endpoint(self) -> str:
        return f"http://{self.host}:{self.aws_port}"

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    @property
    def faults(self) -> Any:
        return self.dispatcher.faults

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(service, region_name=REGION, endpoint_url=self.aws_endpoint)  # type: ignore[call-overload]

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> LocalRuntime:
        # A wrong option (an approval policy, an API key given twice) fails before anything starts.
        self.deployment()
        self._point_at_emulated_aws()
        # moto reads its port and settings from the environment: import it only now.
        from moto.core.config import default_user_config
        from moto.server import ThreadedMotoServer

        default_user_config["stepfunctions"]["execute_state_machine"] = True
        # Powertools warns whenever a function published no metric; in one long process that is noise.
        warnings.filterwarnings("ignore", message="No application metrics to publish")
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per emulated AWS call otherwise
        # The interpreter logs every Fail state as an error; the executions' own records say more.
        logging.getLogger("moto.stepfunctions.parser").setLevel(logging.CRITICAL)
        self._patch_lambda_invoke()
        install_emulations(self)
        one_metric_flush_at_a_time()
        self._moto_server = ThreadedMotoServer(ip_address=self.host, port=self.aws_port, verbose=False)
        self._moto_server.start()
        self._provision()
        environments = self.function_environments()
        self._set_shared_environment(environments)
        # Installed before the handlers are imported, so their loggers write to it too.
        self._real_stdout = sys.stdout
        self.dispatcher.output = FunctionOutput(sys.stdout)
        sys.stdout = self.dispatcher.output
        self._load_handlers(environments)
        # Faults and holds by phase as well as by task (a task does several phases: cost_engine.steps).
        from cost_engine import steps

        steps.phase_checkpoints.append(self.dispatcher.phase_checkpoint)
        api_name = self._api_function_name()
        self._api = ApiServer(
            lambda event: self.dispatcher.run(api_name, event),
            self.host,
            self.api_port,
            {self.api_key: DEFAULT_KEY_NAME, **{key: str(grant["name"]) for key, grant in self.api_keys.items()}},
        )
        self._api.start()
        self._sweeper = threading.Thread(target=self._sweep_periodically, name="sweeper", daemon=True)
        self._sweeper.start()
        return self

    # -- the sweep schedule ------------------------------------------------------------------------

    def sweep(self) -> dict[str, Any]:
        """One sweep now, as the schedule runs it: the trigger function given a Scheduled Event."""
        event = {
            "version": "0",
            "id": secrets.token_hex(16),
            "detail-type": topology.SCHEDULED_EVENT_DETAIL_TYPE,
            "source": topology.SCHEDULED_EVENT_SOURCE,
            "account": ACCOUNT_ID,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "region": REGION,
            "resources": [f"arn:aws:events:{REGION}:{ACCOUNT_ID}:rule/{topology.SWEEP_RULE_LOCAL_NAME}"],
            "detail": {},
        }
        answer: dict[str, Any] = self.dispatcher.run(topology.TRIGGER_FUNCTION.local_name, event)
        return answer

    def wake_sweeper(self) -> None:
        """End the sweeper's current wait: it sweeps now, then waits `sweep_interval_seconds` again."""
        self._sweeper_wake.set()

    def _sweep_periodically(self) -> None:
        """EventBridge's part locally: the schedule rule fires, the trigger runs (moto fires no schedule)."""
        while not self._sweeper_stop.is_set():
            self._sweeper_wake.wait(self.sweep_interval_seconds)
            self._sweeper_wake.clear()
            if self._sweeper_stop.is_set():
                return
            try:
                self.sweep()
            except Exception:  # a failed invocation; on AWS the next scheduled one comes all the same
                logging.getLogger(__name__).exception("sweep failed")

    def restart_aws(self, down_seconds: float, *, on_down: Callable[[], None] | None = None) -> None:
        """Stop the emulated AWS and start it again on the same port after `down_seconds`, as an
        endpoint that restarts: meanwhile every call fails at the connection. The state is kept
        (moto's backends are module globals that the new server serves again), and so are the
        state machine executions, which run in threads of this process. `on_down` runs once
        nothing answers any more (a test acts then, e.g. releases a held step)."""
        from moto.server import ThreadedMotoServer

        # Requests being served finish (werkzeug closes each connection after its answer): the
        # server stops accepting, as a restarting endpoint does.
        self._moto_server.stop()
        if on_down is not None:
            on_down()
        time.sleep(down_seconds)
        self._moto_server = ThreadedMotoServer(ip_address=self.host, port=self.aws_port, verbose=False)
        self._moto_server.start()

    def stop(self) -> None:
        from cost_engine import steps

        if self.dispatcher.phase_checkpoint in steps.phase_checkpoints:
            steps.phase_checkpoints.remove(self.dispatcher.phase_checkpoint)
        self._sweeper_stop.set()
        self._sweeper_wake.set()
        if self._sweeper is not None:
            self._sweeper.join(timeout=30)
        if self._api is not None:
            self._api.stop()
        if self._moto_server is not None:
            self._moto_server.stop()
        if self._real_stdout is not None:
            sys.stdout = self._real_stdout

    def __enter__(self) -> LocalRuntime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- set-up ----------------------------------------------------------------------------------

    def _point_at_emulated_aws(self) -> None:
        os.environ.update(
            {
                "MOTO_PORT": str(self.aws_port),
                "AWS_ENDPOINT_URL": self.aws_endpoint,
                "AWS_ACCESS_KEY_ID": "local",
                "AWS_SECRET_ACCESS_KEY": "local",
                "AWS_SESSION_TOKEN": "local",
                "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION,
            }
        )

    def deployment(self) -> Deployment:
        """What the local functions are told (cost_engine.environment, as the stack tells its own): the
        emulated resources, once provisioned, and this runtime's options."""
        return Deployment(
            table_names={table: table.local_name for table in topology.TABLES},
            approval_topic_arn=self.approval_topic_arn,
            approval_secret_arn=self.approval_secret_arn,
            event_bus_name=topology.EVENT_BUS_LOCAL_NAME,
            scheduler_role_arn=self.scheduler_role_arn,
            state_machine_arns=json.dumps(self.state_machine_arns),
            api_base_url=self.api_url,
            max_poll_attempts=MAX_POLL_ATTEMPTS,
            approval_timeout_seconds=self.approval_timeout_seconds,
            max_concurrent_acting=self.max_concurrent_acting,
            resource_cooldown_seconds=self.resource_cooldown_seconds,
            max_acting_seconds=self.max_acting_seconds,
            approver_emails=self.approver_emails,
            approval_policy=(
                ApprovalPolicy.model_validate(self.approval_policy) if self.approval_policy is not None else None
            ),
            access_policy=self._access_policy(),
            log_level=self.log_level,
            tracing=False,
        )

    def function_environments(self) -> dict[str, dict[str, str]]:
        """Each function's environment, by function name."""
        deployment = self.deployment()
        return {function.local_name: function_environment(function, deployment) for function in topology.functions()}

    @staticmethod
    def _set_shared_environment(environments: Mapping[str, Mapping[str, str]]) -> None:
        """The functions share this process, so each variable that has one value in every function that
        has it is set for the process; the others (each executor's type) are set while that function's
        module loads (`_load_handlers`). None of the engine's variables from the shell or from a runtime
        started before in this process is kept."""
        for name in ENGINE_VARIABLES:
            os.environ.pop(name, None)
        os.environ.update(_shared(environments))

    def _access_policy(self) -> AccessPolicy:
        """The API keys' grants, as a deployment's access policy names its IAM principals'."""
        principals: dict[str, Any] = {api_key_principal(DEFAULT_KEY_NAME): full_access()}
        for key, grant in self.api_keys.items():
            if key == self.api_key or api_key_principal(str(grant["name"])) in principals:
                raise ValueError(f"API key {grant['name']!r} is given twice, or is the default key")
            principals[api_key_principal(str(grant["name"]))] = {k: v for k, v in grant.items() if k != "name"}
        return AccessPolicy.model_validate({"principals": principals})

    def _patch_lambda_invoke(self) -> None:
        from moto.awslambda.models import LambdaFunction

        dispatcher = self.dispatcher

        def invoke_in_process(function: Any, event: Any = None) -> tuple[str, bool, str]:
            payload, errored = dispatcher.invoke(function.function_name, event)
            return payload, errored, ""

        LambdaFunction._invoke_lambda = invoke_in_process  # type: ignore[method-assign,assignment]

    def _provision(self) -> None:
        from cost_engine import spine

        create_tables(self.client("dynamodb"))

        self.approval_topic_arn = self.client("sns").create_topic(Name=topology.APPROVAL_TOPIC_LOCAL_NAME)["TopicArn"]
        self.client("events").create_event_bus(Name=topology.EVENT_BUS_LOCAL_NAME)
        # The local secret that signs approval links, kept where the deployed engine keeps its own.
        self.approval_secret_arn = self.client("secretsmanager").create_secret(
            Name=topology.APPROVAL_SECRET_LOCAL_NAME, SecretString=secrets.token_urlsafe(48)
        )["ARN"]

        role_arn = self.client("iam").create_role(
            RoleName=LOCAL_ROLE_NAME,
            AssumeRolePolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": ["lambda.amazonaws.com", "states.amazonaws.com"]},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                }
            ),
        )["Role"]["Arn"]
        self.scheduler_role_arn = self.client("iam").create_role(
            RoleName=f"{LOCAL_ROLE_NAME}-scheduler",
            AssumeRolePolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "scheduler.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                }
            ),
        )["Role"]["Arn"]

        lambda_client = self.client("lambda")
        function_arns: dict[str, str] = {}
        for function in topology.functions():
            function_arns[function.local_name] = lambda_client.create_function(
                FunctionName=function.local_name,
                Runtime="python3.12",
                Role=role_arn,
                Handler=function.handler,
                Code={"ZipFile": _placeholder_zip()},
                Timeout=function.timeout_seconds,
            )["FunctionArn"]

        self._provision_trigger(function_arns[topology.TRIGGER_FUNCTION.local_name])

        sfn = self.client("stepfunctions")
        for machine in topology.state_machines():
            definition = spine.definition(machine, function_arns[machine.executor.local_name])
            arn = sfn.create_state_machine(name=machine.local_name, definition=definition, roleArn=role_arn)[
                "stateMachineArn"
            ]
            self.state_machine_arns[machine.recommendation_type.value] = arn
        # Its pattern names the state machines, so it comes after them.
        self._provision_run_ended_rule(function_arns[topology.TRIGGER_FUNCTION.local_name])
        self._provision_sweep_rule(function_arns[topology.TRIGGER_FUNCTION.local_name])
        self._provision_completed_rule(function_arns[topology.TRIGGER_FUNCTION.local_name])

    def _provision_trigger(self, trigger_arn: str) -> None:
        """The Recommendation Approved rule on the engine's bus, as the stack builds it: the trigger
        function as its target, Lambda's retries, then the dead-letter queue (delivered by the
        eventbridge_lambda_targets emulation)."""
        sqs = self.client("sqs")
        self.trigger_dlq_url = sqs.create_queue(QueueName=topology.TRIGGER_DLQ_LOCAL_NAME)["QueueUrl"]
        # Kept: every rule to the trigger sends what it cannot deliver to this queue too.
        self.trigger_dlq_arn = sqs.get_queue_attributes(QueueUrl=self.trigger_dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self.client("lambda").put_function_event_invoke_config(
            FunctionName=topology.TRIGGER_FUNCTION.local_name,
            MaximumRetryAttempts=topology.TRIGGER_MAX_RETRY_ATTEMPTS,
            DestinationConfig={"OnFailure": {"Destination": self.trigger_dlq_arn}},
        )
        self._rule_to_trigger(
            topology.TRIGGER_RULE_LOCAL_NAME, topology.trigger_event_pattern(), trigger_arn, on_engine_bus=True
        )

    def _provision_run_ended_rule(self, trigger_arn: str) -> None:
        """The rule on the default bus that sends the ends of the engine's state machine runs that its
        steps did not write (stopped, timed out, failed) to the trigger, as the stack builds it, with
        the trigger's dead-letter queue (the stepfunctions_status_events emulation puts the events)."""
        pattern = topology.run_ended_event_pattern(self.state_machine_arns.values())
        self._rule_to_trigger(topology.RUN_ENDED_RULE_LOCAL_NAME, pattern, trigger_arn)

    def _provision_completed_rule(self, trigger_arn: str) -> None:
        """The rule on the engine's bus that sends completed executions' status events to the trigger,
        which schedules their savings measurements, as the stack builds it."""
        pattern = topology.completed_event_pattern()
        self._rule_to_trigger(topology.COMPLETED_RULE_LOCAL_NAME, pattern, trigger_arn, on_engine_bus=True)

    def _rule_to_trigger(
        self, name: str, pattern: dict[str, Any], trigger_arn: str, *, on_engine_bus: bool = False
    ) -> None:
        """A rule (on the engine's bus, or the default one) whose events go to the trigger, with the
        trigger's dead-letter queue for what cannot be delivered."""
        bus = {"EventBusName": topology.EVENT_BUS_LOCAL_NAME} if on_engine_bus else {}
        events = self.client("events")
        events.put_rule(Name=name, EventPattern=json.dumps(pattern), **bus)
        events.put_targets(
            Rule=name,
            Targets=[{"Id": "trigger", "Arn": trigger_arn, "DeadLetterConfig": {"Arn": self.trigger_dlq_arn}}],
            **bus,
        )

    def _provision_sweep_rule(self, trigger_arn: str) -> None:
        """The sweep schedule on the default bus, as the stack builds it (the runtime's sweeper thread
        fires it: moto keeps schedule rules but never fires them)."""
        events = self.client("events")
        events.put_rule(
            Name=topology.SWEEP_RULE_LOCAL_NAME,
            ScheduleExpression=f"rate({topology.SWEEP_INTERVAL_MINUTES} minutes)",
        )
        events.put_targets(Rule=topology.SWEEP_RULE_LOCAL_NAME, Targets=[{"Id": "trigger", "Arn": trigger_arn}])

    def _api_function_name(self) -> str:
        return topology.API_FUNCTION.local_name

    def _load_handlers(self, environments: Mapping[str, Mapping[str, str]]) -> None:
        """Load each function's handler once the environment is complete (they read it at import).

        As on Lambda, where each function runs in its own process, a function with an environment of
        its own (an executor function's type) gets a module of its own, loaded with that environment:
        the ten executor functions share their code, not their module state. The API and the trigger
        are the modules tests import."""
        shared = _shared(environments)
        for function in topology.functions():
            module_name, attribute = function.handler.rsplit(".", 1)
            name = f"functions.{function.code_dir}.{module_name}"
            own = {k: v for k, v in environments[function.local_name].items() if k not in shared}
            if not own:
                module = importlib.import_module(name)
            else:
                os.environ.update(own)
                try:
                    module = self._load_module(name, function.local_name)
                finally:
                    for variable in own:
                        os.environ.pop(variable, None)
            self.function_modules[function.local_name] = module
            self.dispatcher.register(function.local_name, getattr(module, attribute))
            if function is topology.API_FUNCTION:
                give_each_thread_its_own_request(module.app)

    @staticmethod
    def _load_module(name: str, function_name: str) -> Any:
        """A fresh module object of `name` for one function (not the one in sys.modules)."""
        found = importlib.util.find_spec(name)
        origin = found.origin if found else None
        spec = importlib.util.spec_from_file_location(f"{name}[{function_name}]", origin) if origin else None
        if spec is None or spec.loader is None:
            raise ImportError(f"no module {name} for {function_name}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module


def _shared(environments: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """The variables that have one value in every function's environment that has them."""
    values: dict[str, set[str]] = {}
    for environment in environments.values():
        for name, value in environment.items():
            values.setdefault(name, set()).add(value)
    return {name: next(iter(found)) for name, found in values.items() if len(found) == 1}
