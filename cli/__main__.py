"""`cost-engine` (or `python -m cli`): drive the engine from a terminal or a script.

Talks to the local runtime (`--api http://127.0.0.1:8080`, key from `--api-key`) or to a deployed API
(`--api https://….execute-api.….amazonaws.com/prod --sigv4`: requests signed with your AWS credentials,
as the API's IAM authorization requires). The defaults come from COST_ENGINE_API, COST_ENGINE_API_KEY
and COST_ENGINE_SIGV4. Exit codes: 0 done, 1 the execution ended badly (or the API refused), 2 usage,
3 the API could not be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, TextIO

import requests

FINAL = {"completed", "rejected", "expired", "cancelled", "failed", "rolled_back", "rollback_failed"}
GOOD_ENDINGS = {"completed", "rolled_back"}
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


class Api:
    """The HTTP calls, signed with SigV4 for a deployed API or with the local runtime's key."""

    def __init__(self, base_url: str, api_key: str | None, sigv4: bool, region: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.sigv4 = sigv4
        self.region = region
        self.session = requests.Session()

    def _signed_headers(self, method: str, url: str, body: str | None) -> dict[str, str]:
        import boto3
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        session = boto3.Session()
        credentials = session.get_credentials()
        if credentials is None:
            raise CliError("no AWS credentials found to sign the request (aws configure, or AWS_PROFILE)", EXIT_USAGE)
        region = self.region or session.region_name
        if not region:
            raise CliError("give --region (or AWS_REGION) for the deployed API", EXIT_USAGE)
        request = AWSRequest(method=method, url=url, data=body, headers={"content-type": "application/json"})
        SigV4Auth(credentials.get_frozen_credentials(), "execute-api", region).add_auth(request)
        return dict(request.headers.items())

    def call(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None) -> Any:
        url = self.base_url + path
        if params:
            prepared = requests.Request(method, url, params={k: v for k, v in params.items() if v is not None})
            url = str(prepared.prepare().url)
        data = json.dumps(body) if body is not None else None
        headers = {"content-type": "application/json"}
        if self.sigv4:
            headers = self._signed_headers(method, url, data)
        elif self.api_key:
            headers["x-api-key"] = self.api_key
        try:
            response = self.session.request(method, url, data=data, headers=headers, timeout=60)
        except requests.RequestException as error:
            raise CliError(f"the API at {self.base_url} could not be reached: {error}", EXIT_UNREACHABLE) from None
        try:
            payload = response.json()
        except ValueError:
            payload = {"message": response.text[:500]}
        if response.status_code >= 400:
            message = payload.get("message", payload) if isinstance(payload, dict) else payload
            raise CliError(f"HTTP {response.status_code}: {message}")
        return payload


# -- output ------------------------------------------------------------------------------------------


def _table(rows: list[list[str]], headers: list[str], out: TextIO) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    for row in [headers, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip(), file=out)


def _money(value: Any) -> str:
    return f"${value:,.2f}" if isinstance(value, int | float) else "-"


def _show_status(execution: dict[str, Any], out: TextIO) -> None:
    print(
        f"{execution['execution_id']}  {execution['recommendation_type']} on {execution['resource_id']}\n"
        f"  status    {execution['status']} ({execution.get('progress_percent', 0)}%)"
        + (f", step {execution['current_step']}" if execution.get("current_step") else ""),
        file=out,
    )
    policy = execution.get("policy")
    if policy:
        print(f"  risk      {policy['risk_level']}: {policy['reason']}", file=out)
    pending = execution.get("pending_approval")
    if pending:
        who = ", ".join(pending.get("approvers") or []) or pending.get("approvers_notified") or "the approvers"
        print(f"  approval  waiting for {who} until {pending['deadline']}", file=out)
    if execution.get("scheduled_time") and execution["status"] == "scheduled":
        print(f"  scheduled {execution['scheduled_time']}", file=out)
    if execution.get("cancel_requested_by") and execution["status"] not in FINAL:
        print(f"  cancel    asked by {execution['cancel_requested_by']}: rolling back, then cancelled", file=out)
    print(f"  savings   {_savings(execution)}", file=out)
    guardrails = _guardrails(execution)
    if guardrails:
        print(f"  watch     {guardrails}", file=out)
    if execution.get("error_message"):
        print(f"  error     {execution['error_message']}", file=out)
    if execution.get("earlier_steps"):
        print(f"    …         earlier steps: cost-engine logs {execution['execution_id']}", file=out)
    for step in execution.get("steps") or []:
        print(f"    {step['at'][11:19]}  {step['event']:<24} {step['actor']}", file=out)


# -- commands ----------------------------------------------------------------------------------------


def _at(value: str) -> str:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO 8601 time, e.g. 2026-12-01T22:00:00Z") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{value!r} needs a time zone, e.g. 2026-12-01T22:00:00Z")
    return moment.isoformat()


def _ending(execution: dict[str, Any]) -> int:
    status = execution["status"]
    return EXIT_OK if status not in FINAL or status in GOOD_ENDINGS else EXIT_FAILED


def cmd_recommend(api: Api, args: argparse.Namespace, out: TextIO) -> tuple[Any, int]:
    source = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")  # noqa: SIM115
    with source:
        try:
            recommendation = json.load(source)
        except json.JSONDecodeError as error:
            raise CliError(f"{args.file}: not JSON: {error}", EXIT_USAGE) from None
    if args.format == "engine":
        stored = api.call("POST", "/recommendations", recommendation)
    else:
        if not args.customer:
            raise CliError(f"--customer is needed to import a {args.format} recommendation", EXIT_USAGE)
        body = {"format": args.format, "customer_id": args.customer, "recommendation": recommendation}
        stored = api.call("POST", "/recommendations/import", body)
    if not args.json:
        print(f"{stored['recommendation_id']}  {stored['type']} on {stored['resource_id']}", file=out)
    return stored, EXIT_OK


def cmd_execute(api: Api, args: argparse.Namespace, out: TextIO) -> tuple[Any, int]:
    body: dict[str, Any] = {
        "recommendation_id": args.recommendation_id,
        "dry_run": args.dry_run,
        "auto_approve": args.auto_approve,
    }
    if args.at:
        body["scheduled_time"] = args.at
    execution = api.call("POST", "/executions/execute", body)
    if args.wait:
        return _watch(api, execution["execution_id"], args, out)
    if not args.json:
        print(f"{execution['execution_id']}  {execution['status']}", file=out)
    return execution, EXIT_OK


def _watch(api: Api, execution_id: str, args: argparse.Namespace, out: TextIO) -> tuple[Any, int]:
    """Follow an execution until it ends or waits for a person, printing each step as it happens."""
    # The status shows the newest steps only: a step is known by its key, not by its place in the list.
    seen: set[str] | None = None
    deadline = time.monotonic() + args.timeout
    while True:
        execution = api.call("GET", f"/executions/{execution_id}")
        steps = execution.get("steps") or []
        if not args.json:
            if seen is None:
                print(f"{execution_id}  {execution['recommendation_type']} on {execution['resource_id']}", file=out)
            if seen and steps and steps[0]["key"] not in seen and execution.get("earlier_steps"):
                # More steps came between two polls than a status shows: say where the rest are.
                print(f"  …         more steps: cost-engine logs {execution_id}", file=out)
            for step in steps:
                if step["key"] not in (seen or ()):
                    print(f"  {step['at'][11:19]}  {step['event']:<24} {step['actor']}", file=out, flush=True)
        seen = (seen or set()) | {step["key"] for step in steps}
        if execution["status"] in FINAL or execution["status"] == "awaiting_approval":
            if not args.json:
                print(
                    f"  → {execution['status']}"
                    + (f": {execution['error_message']}" if execution.get("error_message") else ""),
                    file=out,
                )
            return execution, _ending(execution)
        if time.monotonic() > deadline:
            raise CliError(f"{execution_id} is still '{execution['status']}' after {args.timeout:.0f}s")
        time.sleep(args.interval)


def cmd_status(api: Api, args: argparse.Namespace, out: TextIO) -> tuple[Any, int]:
    if args.watch:
        return _watch(api, args.execution_id, args, out)
    execution = api.call("GET", f"/executions/{args.execution_id}")
    if not args.json:
        _show_status(execution, out)
    return execution, EXIT_OK


def _decide(decision: str) -> Callable[[Api, argparse.Namespace, TextIO], tuple[Any, int]]:
    def command(api: Api, args: argparse.Namespace, out: TextIO) -> tuple[Any, int]:
        body = {"approver": args.approver, "comment": args.comment}
        execution = api.call("POST", f"/executions/{args.execution_id}/{decision}", body)
        if not args.json:
            print(f"{args.execution_id}  {execution['status']} by {args.approver}", file=out)
        return execution, EXIT_OK

    return command


def _act(action: str) -> Callable[[Api, argparse.Namespace, TextIO], tuple[Any, int]]:
    def command(api: Api, args: argparse.Namespace, out: TextIO) -> tuple[Any, int]:
        execution = api.call("POST", f"/executions/{args.execution_id}/{action}")
        if not args.json:
            note = (
                " (cancel requested: the change is rolled back, then it ends cancelled; follow with status --watch)"
                if execution.get("cancel_requested_by") and execution["status"] not in FINAL
                else ""
            )
            print(f"{args.execution_id}  {execution['status']}{note}", file=out)
        return execution, EXIT_OK

    return command


def _guardrails(execution: dict[str, Any]) -> str:
    """The guardrail watch: until when it lasts, and what its last check found."""
    result = execution.get("guardrails") or {}
    if result.get("breaches"):
        return "breached: " + "; ".join(f"{b['guardrail']}: {b['reason']}" for b in result["breaches"])
    if result.get("passed"):
        return f"passed after {result['checks']} check(s), until {execution.get('watch_until')}"
    if execution.get("status") == "watching":
        return f"watching the change until {execution.get('watch_until')}"
    return ""


def _savings(execution: dict[str, Any]) -> str:
    """Estimated (the recommendation's), expected (the catalog's, at completion) and measured (the bill's,
    with the quality and accuracy of the measurement that stands for it)."""
    parts = [f"estimated {_money(execution.get('estimated_monthly_savings'))}/month"]
    if execution.get("expected_savings") is not None:
        parts.append(f"expected {_money(execution['expected_savings'])}")
    measured = execution.get("actual_savings")
    standing = [m for m in execution.get("measurements") or [] if m.get("monthly_savings") == measured]
    if measured is not None and standing:
        latest = standing[-1]
        accuracy = (
            f", {latest['accuracy_percent']:.0f}% of expected" if latest.get("accuracy_percent") is not None else ""
        )
        parts.append(f"measured {_money(measured)} ({latest['quality']}, {latest['days']} days{accuracy})")
    elif execution.get("status") == "completed" and not execution.get("dry_run"):
        parts.append("not measured yet")
    return ", ".join(parts)


def cmd_measure(api: Api, args: argparse.Namespace, out: TextIO) -> tuple[Any, int]:
    body = {} if args.window_days is None else {"window_days": args.window_days}
    measurement = api.call("POST", f"/executions/{args.execution_id}/measure", body)
    if not args.json:
        window = (
            f"{measurement['before_start']}..{measurement['before_end']} against "
            f"{measurement['after_start']}..{measurement['after_end']}"
            if measurement.get("before_start")
            else "no window yet"
        )
        print(f"{args.execution_id}  {measurement['quality']}  {window}", file=out)
        if measurement.get("monthly_savings") is not None:
            accuracy = measurement.get("accuracy_percent")
            print(
                f"  cost      {_money(measurement['before_cost'])} before, {_money(measurement['after_cost'])} after"
                f" ({measurement['days']} days each, {measurement['attribution']})",
                file=out,
            )
            print(
                f"  saving    {_money(measurement['monthly_savings'])}/month measured, "
                f"{_money(measurement.get('expected_savings'))}/month expected"
                + (f": {accuracy:.1f}% accurate" if accuracy is not None else ""),
                file=out,
            )
        if measurement.get("reason"):
            print(f"  why       {measurement['reason']}", file=out)
        print(f"  method    {measurement['method']}", file=out)
    return measurement, EXIT_OK


def cmd_logs(api: Api, args: argparse.Namespace, out: TextIO) -> tuple[Any, int]:
    logs = api.call("GET", f"/executions/{args.execution_id}/logs")
    if not args.json:
        for event in logs["events"]:
            detail = json.dumps(event["detail"], sort_keys=True) if event["detail"] else ""
            print(f"{event['timestamp']}  {event['event_type']:<24} {event['actor']:<32} {detail[:100]}", file=out)
    return logs, EXIT_OK


def cmd_list(api: Api, args: argparse.Namespace, out: TextIO) -> tuple[Any, int]:
    params = {"customer_id": args.customer, "status": args.status, "limit": args.limit, "cursor": args.cursor}
    page = api.call("GET", "/executions", params=params)
    if not args.json:
        rows = [
            [
                e["execution_id"],
                e["recommendation_type"],
                e["resource_id"],
                e["status"],
                _money(e.get("estimated_monthly_savings")),
                e["created_at"][:19],
            ]
            for e in page["items"]
        ]
        _table(rows, ["EXECUTION", "TYPE", "RESOURCE", "STATUS", "EST./MONTH", "CREATED"], out)
        if page.get("next_cursor"):
            print(f"more: --cursor {page['next_cursor']}", file=out)
    return page, EXIT_OK


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="cost-engine", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    main.add_argument(
        "--api", default=os.environ.get("COST_ENGINE_API", "http://127.0.0.1:8080"), help="the API's base URL"
    )
    main.add_argument(
        "--api-key", default=os.environ.get("COST_ENGINE_API_KEY", "local-dev-key"), help="the local runtime's key"
    )
    main.add_argument(
        "--sigv4",
        action="store_true",
        default=os.environ.get("COST_ENGINE_SIGV4") == "1",
        help="sign with your AWS credentials (a deployed API)",
    )
    main.add_argument("--region", default=None, help="the deployed API's region (default: your AWS configuration's)")
    main.add_argument("--json", action="store_true", help="print the API's JSON answer, for scripts")
    commands = main.add_subparsers(dest="command", required=True, metavar="COMMAND")

    recommend = commands.add_parser("recommend", help="register a recommendation from a JSON file or stdin (-)")
    recommend.add_argument("file", help="a JSON file, or - for stdin")
    recommend.add_argument(
        "--format", choices=["engine", "cost_optimization_hub", "compute_optimizer_ec2"], default="engine"
    )
    recommend.add_argument("--customer", help="the customer, for an imported recommendation")
    recommend.set_defaults(run=cmd_recommend)

    execute = commands.add_parser("execute", help="start an execution of a registered recommendation")
    execute.add_argument("recommendation_id")
    execute.add_argument("--dry-run", action="store_true", help="validate and plan only; change nothing")
    execute.add_argument("--auto-approve", action="store_true", help="ask for automatic approval (the policy decides)")
    execute.add_argument("--at", type=_at, help="run at this time (ISO 8601 with a zone)")
    execute.add_argument("--wait", action="store_true", help="follow it until it ends or waits for a person")
    execute.set_defaults(run=cmd_execute)

    status = commands.add_parser("status", help="an execution's status, plan, approval and steps")
    status.add_argument("execution_id")
    status.add_argument(
        "--watch", action="store_true", help="follow the steps live until it ends or waits for a person"
    )
    status.set_defaults(run=cmd_status)

    for name, helptext in (("approve", "approve a waiting execution"), ("reject", "reject a waiting execution")):
        decide = commands.add_parser(name, help=helptext)
        decide.add_argument("execution_id")
        decide.add_argument(
            "--approver", required=True, help="your name or email (shown beside the identity that signs the call)"
        )
        decide.add_argument("--comment", default="")
        decide.set_defaults(run=_decide(name))

    for name, helptext in (
        ("cancel", "cancel an execution; one that is changing the resource is rolled back first"),
        ("rollback", "roll back an execution from its backup"),
    ):
        act = commands.add_parser(name, help=helptext)
        act.add_argument("execution_id")
        act.set_defaults(run=_act(name))

    measure = commands.add_parser("measure", help="measure a completed execution's saving from the bill now")
    measure.add_argument("execution_id")
    measure.add_argument(
        "--window-days", type=int, help="days before and after the change to compare (default: the longest scheduled)"
    )
    measure.set_defaults(run=cmd_measure)

    logs = commands.add_parser("logs", help="an execution's audit events, oldest first")
    logs.add_argument("execution_id")
    logs.set_defaults(run=cmd_logs)

    listing = commands.add_parser("list", help="a customer's executions, newest first")
    listing.add_argument("--customer", required=True)
    listing.add_argument("--status")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--cursor")
    listing.set_defaults(run=cmd_list)

    for sub in (execute, status):
        sub.add_argument("--timeout", type=float, default=900.0, help="how long to follow, in seconds")
        sub.add_argument("--interval", type=float, default=1.0, help="seconds between checks")
    return main


def main(argv: list[str] | None = None, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    args = parser().parse_args(argv)
    api = Api(args.api, args.api_key, args.sigv4, args.region)
    try:
        result, code = args.run(api, args, out)
    except CliError as error:
        print(f"cost-engine: {error}", file=err)
        return error.code
    except OSError as error:
        print(f"cost-engine: {error}", file=err)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True), file=out)
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
