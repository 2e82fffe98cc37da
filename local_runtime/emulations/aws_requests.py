"""What the emulated AWS receives, and AWS answering with errors: throttling, 5xx.

moto answers every request it can, at once and without limits, so code that survives AWS's bad days
could not be tested against it. This module puts one WSGI interceptor in front of moto's server
(`DomainDispatcherApplication.__call__`, which every request of a `ThreadedMotoServer` goes through)
and attaches an `AwsRequests` to the runtime as `runtime.aws_requests`:

- a log of every request the server received: the service (from the SigV4 credential scope), the
  operation (the `Action` parameter of query-protocol services such as EC2 and RDS, the
  `X-Amz-Target` of JSON services such as DynamoDB, else `"<METHOD> <path>"` for REST services such
  as S3 and Scheduler), and the HTTP status answered;
- faults: `fail("ec2", "TerminateInstances", code="Throttling", times=2)` makes the next two matching
  requests answer that error in the service's own protocol, without reaching moto, so nothing changes;
  with `times=None` every matching request does until the fault is removed (`remove(fault)` or
  `clear()`): an outage that lasts as long as a test needs, without the test waiting out its length.

The interceptor serves the server on the runtime's port only, so two runtimes in one process (as in
some tests) keep separate logs and faults.

Step Functions calls Lambda through the same server here (on AWS they are separate services), so
while the emulated AWS restarts (`LocalRuntime.restart_aws`) the interpreter's Lambda invocations fail
at the connection too; `install` makes the interpreter report that as Step Functions reports an
unreachable Lambda, `Lambda.SdkClientException`, which the state machines retry, rather than as the
`States.Runtime` error moto's interpreter would make of it.
"""

from __future__ import annotations

import functools
import io
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

if TYPE_CHECKING:
    from local_runtime.runtime import LocalRuntime

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# The service whose query-protocol errors have EC2's own shape (<Response><Errors>…).
EC2_SERVICES = frozenset({"ec2"})
# REST services that answer errors in XML (<Error>…); other REST services answer JSON.
REST_XML_SERVICES = frozenset({"s3", "s3control", "route53", "cloudfront"})
# What Step Functions reports when it cannot reach Lambda (see the module docstring).
LAMBDA_UNREACHABLE_ERROR = "Lambda.SdkClientException"


@dataclass(frozen=True)
class AwsRequest:
    at: float  # time.time() when it arrived
    service: str
    operation: str
    method: str
    path: str
    status: int
    # An EC2 request with DryRun=true: a permission question, which changes nothing.
    dry_run: bool = False


@dataclass
class AwsFault:
    """The next `times` requests of `operation` on `service` answer `code` with `status` (None: all of
    them, until the fault is removed)."""

    service: str
    operation: str
    code: str
    status: int
    times: int | None
    hits: int = 0
    # Whether the fault answers DryRun requests (the permission check) instead of the real ones.
    dry_run: bool = False
    # How many matching requests go through before the fault answers (to fail a step's second write).
    passes: int = 0
    passed: int = 0

    def matches(self, call: Call) -> bool:
        return (
            self.service == call.service
            and self.operation == call.operation
            and self.dry_run == call.dry_run
            and (self.times is None or self.hits < self.times)
        )


class AwsRequests:
    """The request log and the faults of one emulated AWS endpoint (thread-safe). A request is
    logged once answered, so the log is in the order of the answers; `at` is when it arrived."""

    def __init__(self, kept: int = 100_000) -> None:
        self._log: deque[AwsRequest] = deque(maxlen=kept)
        self._received = 0  # every request ever logged: marks stay valid when the oldest are dropped
        self._faults: list[AwsFault] = []
        self._lock = threading.Lock()

    # -- the log -------------------------------------------------------------------------------------

    def mark(self) -> int:
        """The position in the log now, for `since`."""
        with self._lock:
            return self._received

    def since(self, mark: int) -> list[AwsRequest]:
        """The requests logged after `mark`, in order (as many as the log still keeps)."""
        with self._lock:
            newer = self._received - mark
            if newer <= 0:
                return []
            return list(self._log)[-newer:] if newer < len(self._log) else list(self._log)

    def _record(self, request: AwsRequest) -> None:
        with self._lock:
            self._log.append(request)
            self._received += 1

    # -- faults --------------------------------------------------------------------------------------

    def fail(
        self,
        service: str,
        operation: str,
        *,
        code: str = "Throttling",
        status: int = 400,
        times: int | None = 1,
        dry_run: bool = False,
        passes: int = 0,
    ) -> AwsFault:
        """The next `times` requests of `operation` answer the AWS error `code` with HTTP `status`
        (400 for throttling, 500/503 for a server error) instead of reaching moto; with `times=None`,
        every one until the fault is removed. Only the real requests, unless `dry_run`: then only
        EC2's DryRun permission checks of that operation. With `passes`, that many matching requests
        are answered normally first."""
        if times is not None and times < 1:
            raise ValueError("times is at least 1")
        if not 400 <= status <= 599:
            raise ValueError("an AWS error has an HTTP status from 400 to 599")
        fault = AwsFault(
            service=service, operation=operation, code=code, status=status, times=times, dry_run=dry_run, passes=passes
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def remove(self, fault: AwsFault) -> None:
        """End one fault (an outage given `times=None`); the others stay."""
        with self._lock:
            self._faults = [kept for kept in self._faults if kept is not fault]

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, call: Call) -> AwsFault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(call):
                    if fault.passed < fault.passes:
                        fault.passed += 1
                        return None
                    fault.hits += 1
                    return fault
        return None

    # -- the interceptor -----------------------------------------------------------------------------

    def serve(self, app: WsgiApp, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        arrived = time.time()
        call = identify(environ)

        def log(status: int) -> None:
            method, path = str(environ.get("REQUEST_METHOD", "")), str(environ.get("PATH_INFO", ""))
            self._record(AwsRequest(arrived, call.service, call.operation, method, path, status, call.dry_run))

        fault = self._take_fault(call)
        if fault is not None:
            status, headers, body = error_response(call, fault.code, fault.status)
            start_response(status, headers)
            log(fault.status)
            return [body]
        answered: list[int] = []

        def recording_start_response(status: str, headers: Any, *args: Any) -> Any:
            answered.append(int(status.split()[0]))
            return start_response(status, headers, *args)

        # moto's Flask apps make their whole body at once (no streaming): the status is known here.
        body_parts = list(app(environ, recording_start_response))
        log(answered[-1] if answered else 0)
        return body_parts


# -- reading a request ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    service: str
    operation: str
    protocol: str  # "json", "query" or "rest": how the service would answer an error
    dry_run: bool = False


def identify(environ: dict[str, Any]) -> Call:
    """The service, operation and protocol of a request, as the module docstring describes."""
    service = signing_service(str(environ.get("HTTP_AUTHORIZATION", "")))
    target = str(environ.get("HTTP_X_AMZ_TARGET", ""))
    if target:
        return Call(service, target.rsplit(".", 1)[-1], "json")
    parameters = _query_parameters(environ)
    if action := parameters.get("Action"):
        return Call(service, action, "query", parameters.get("DryRun", "").lower() == "true")
    return Call(service, f"{environ.get('REQUEST_METHOD', '')} {environ.get('PATH_INFO', '')}", "rest")


def signing_service(authorization: str) -> str:
    """The service of a SigV4 `Authorization` header's credential scope (key/date/region/service/aws4_request)."""
    for part in authorization.replace(",", " ").split():
        if part.startswith("Credential="):
            scope = part.removeprefix("Credential=").split("/")
            if len(scope) == 5:
                return scope[3]
    return "unsigned"


def _query_parameters(environ: dict[str, Any]) -> dict[str, str]:
    """The parameters of a query-protocol request (in the query string or a form body), first values."""
    found = {k: v[0] for k, v in parse_qs(str(environ.get("QUERY_STRING", ""))).items()}
    if "Action" in found:
        return found
    if not str(environ.get("CONTENT_TYPE", "")).startswith("application/x-www-form-urlencoded"):
        return found
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return found
    if not length:
        return found
    body: bytes = environ["wsgi.input"].read(length)
    environ["wsgi.input"] = io.BytesIO(body)  # put back for moto, which reads the body again
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", errors="replace")).items()}


# -- answering an error -----------------------------------------------------------------------------


def error_response(call: Call, code: str, status: int) -> tuple[str, list[tuple[str, str]], bytes]:
    """An AWS error in the protocol of the request: what a real endpoint would send back."""
    request_id = str(uuid.uuid4())
    message = f"Injected by the local runtime: {code}"
    status_line = f"{status} {_reason(status)}"
    common = [("x-amzn-RequestId", request_id), ("x-amz-request-id", request_id)]
    if call.protocol == "json":  # DynamoDB, Logs, Step Functions, ...
        body = json.dumps({"__type": code, "message": message}).encode()
        return status_line, [("Content-Type", "application/x-amz-json-1.0"), *common], body
    if call.protocol == "query" and call.service in EC2_SERVICES:
        xml = (
            f"<?xml version='1.0' encoding='UTF-8'?><Response><Errors><Error><Code>{escape(code)}</Code>"
            f"<Message>{escape(message)}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>"
        )
        return status_line, [("Content-Type", "text/xml"), *common], xml.encode()
    if call.protocol == "query":  # RDS, Auto Scaling, SNS, STS, ...
        kind = "Receiver" if status >= 500 else "Sender"
        xml = (
            f"<?xml version='1.0' encoding='UTF-8'?><ErrorResponse><Error><Type>{kind}</Type>"
            f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        )
        return status_line, [("Content-Type", "text/xml"), *common], xml.encode()
    if call.service in REST_XML_SERVICES:
        xml = (
            f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{escape(code)}</Code>"
            f"<Message>{escape(message)}</Message><RequestId>{request_id}</RequestId></Error>"
        )
        return status_line, [("Content-Type", "application/xml"), *common], xml.encode()
    body = json.dumps({"message": message, "code": code}).encode()  # REST-JSON (Lambda, Scheduler, ...)
    return status_line, [("Content-Type", "application/json"), ("x-amzn-ErrorType", code), *common], body


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


# -- installing -------------------------------------------------------------------------------------

_by_port: dict[int, AwsRequests] = {}


# DomainDispatcherApplication.__call__: (the dispatcher, environ, start_response) -> body.
DispatcherCall = Callable[[Any, dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _intercepted(call: DispatcherCall) -> DispatcherCall:
    @functools.wraps(call)
    def intercept(dispatcher: Any, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        requests = _by_port.get(int(environ.get("SERVER_PORT") or 0))
        if requests is None:  # a moto server of no runtime
            return call(dispatcher, environ, start_response)
        return requests.serve(functools.partial(call, dispatcher), environ, start_response)

    intercept.intercepted = True  # type: ignore[attr-defined]
    return intercept


def _reporting_unreachable_lambda(invoke: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(invoke)
    def invoke_or_report(*args: Any, **kwargs: Any) -> Any:
        try:
            return invoke(*args, **kwargs)
        except (BotoConnectionError, HTTPClientError) as error:
            # The interpreter names a ClientError "X" of Lambda "Lambda.X", as Step Functions does.
            response: Any = {
                "Error": {"Code": LAMBDA_UNREACHABLE_ERROR.removeprefix("Lambda."), "Message": str(error)},
                "ResponseMetadata": {"HTTPStatusCode": 0, "RequestId": ""},
            }
            raise ClientError(response, "Invoke") from error

    invoke_or_report.intercepted = True  # type: ignore[attr-defined]
    return invoke_or_report


def install(runtime: LocalRuntime) -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils

    if not getattr(DomainDispatcherApplication.__call__, "intercepted", False):
        DomainDispatcherApplication.__call__ = _intercepted(DomainDispatcherApplication.__call__)  # type: ignore[method-assign,assignment]
    if not getattr(lambda_eval_utils._invoke_lambda_function, "intercepted", False):
        lambda_eval_utils._invoke_lambda_function = _reporting_unreachable_lambda(
            lambda_eval_utils._invoke_lambda_function
        )
    # The runtime's own log and faults serve the server on its port.
    _by_port[runtime.aws_port] = runtime.aws_requests
