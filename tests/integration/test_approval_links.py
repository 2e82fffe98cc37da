"""Approval by emailed link, end to end on the local runtime.

The approval request is read from the SNS topic through a real subscription (an SQS queue), its link
is opened in headless Chromium, and the page's buttons decide. The resource is checked in the
emulated account afterwards.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from cost_engine.approval_links import ApprovalLinks, SecretKey
from cost_engine.topology import APPROVAL_SECRET_LOCAL_NAME, EXECUTIONS_TABLE
from local_runtime.client import ApiClient
from local_runtime.runtime import LocalRuntime
from tests.integration.conftest import instance_state

LINK = re.compile(r"^(https?://\S+/approvals/\S+)$", re.MULTILINE)
# What the machines' closed network needs (see the project README, "Developing").
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not chromedriver:
        pytest.fail("headless Chromium is missing: `make browser` installs Debian's chromium and chromium-driver")
    options = Options()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    with tempfile.TemporaryDirectory() as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
        driver.set_page_load_timeout(30)
        try:
            yield driver
        finally:
            driver.quit()


@pytest.fixture
def inbox(runtime: LocalRuntime, customer_id: str) -> Callable[[str], str]:
    """The approval emails of this test's customer, through an SQS queue subscribed to the topic."""
    sqs = runtime.client("sqs")
    queue_url = sqs.create_queue(QueueName=f"approvers-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    runtime.client("sns").subscribe(
        TopicArn=runtime.approval_topic_arn,
        Protocol="sqs",
        Endpoint=queue_arn,
        Attributes={"FilterPolicy": json.dumps({"customer_id": [customer_id]})},
    )

    def message_for(execution_id: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1).get("Messages", []):
                text = str(json.loads(message["Body"])["Message"])
                if execution_id in text:
                    return text
        raise AssertionError(f"no approval message for {execution_id} reached the subscribed queue")

    return message_for


@pytest.fixture
def links(runtime: LocalRuntime) -> ApprovalLinks:
    """Links signed with the runtime's own key, to forge what a tamperer cannot (expired, unknown)."""
    secrets = runtime.client("secretsmanager")
    key = SecretKey(lambda: secrets.get_secret_value(SecretId=APPROVAL_SECRET_LOCAL_NAME)["SecretString"])
    return ApprovalLinks(key, runtime.api_url)


@pytest.fixture
def waiting(
    api: ApiClient,
    launch_instance: Callable[..., str],
    recommend: Callable[..., str],
    inbox: Callable[[str], str],
) -> dict[str, Any]:
    """An idle instance, a terminate execution waiting for a person, and the email it sent."""
    instance_id = launch_instance()
    # auto_approve is asked for, but terminate_instance is high risk: the policy holds it.
    execution_id = api.execute(recommend(instance_id), auto_approve=True)["execution_id"]
    execution = api.wait_for(execution_id, frozenset({"awaiting_approval", "failed"}))
    assert execution["status"] == "awaiting_approval", execution.get("error_message")
    message = inbox(execution_id)
    match = LINK.search(message)
    assert match, f"the approval message has no link:\n{message}"
    return {"instance_id": instance_id, "execution_id": execution_id, "message": message, "link": match.group(1)}


def audit_events(api: ApiClient, execution_id: str) -> list[dict[str, Any]]:
    return list(api.logs(execution_id)["events"])


def task_token(runtime: LocalRuntime, execution_id: str) -> str:
    item = runtime.client("dynamodb").get_item(
        TableName=EXECUTIONS_TABLE.local_name, Key={"execution_id": {"S": execution_id}}, ConsistentRead=True
    )["Item"]
    return str(item["approval_task_token"]["S"])


def post_form(link: str, decision: str, approver: str = "ops@example.com", **overrides: str) -> requests.Response:
    """What the page's form sends: the link's expiry and signature as hidden fields, and the choice."""
    parts = urlsplit(link)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    form = {**query, "decision": decision, "approver": approver, "comment": "", **overrides}
    return requests.post(f"{parts.scheme}://{parts.netloc}{parts.path}", data=form, timeout=30)


def test_approver_opens_the_emailed_link_in_chromium_approves_and_the_instance_is_terminated(
    api: ApiClient, runtime: LocalRuntime, ec2: Any, waiting: dict[str, Any], browser: webdriver.Chrome
) -> None:
    execution_id, instance_id = waiting["execution_id"], waiting["instance_id"]
    # The email says what, why a person is asked and until when; the task token is not in it.
    message = waiting["message"]
    assert instance_id in message
    assert "Risk:       high" in message
    savings = api.status(execution_id)["plan"]["estimated_monthly_savings"]
    assert f"${savings:,.2f}/month" in message
    assert task_token(runtime, execution_id) not in message

    # Opening the page (as a mail scanner would) shows the plan and changes nothing.
    browser.get(waiting["link"])
    assert browser.title.startswith("Approval needed")
    page = browser.find_element(By.TAG_NAME, "body").text
    assert instance_id in page
    assert browser.find_element(By.ID, "risk").text == "high"
    assert browser.find_element(By.ID, "savings").text == f"${savings:,.2f}"
    assert "AMI" in browser.find_element(By.ID, "rollback").text
    status = api.status(execution_id)
    assert browser.find_element(By.ID, "deadline").text == datetime.fromisoformat(
        status["pending_approval"]["deadline"]
    ).strftime("%Y-%m-%d %H:%M UTC")
    token = task_token(runtime, execution_id)
    assert token not in browser.page_source
    assert status["status"] == "awaiting_approval"
    assert instance_state(ec2, instance_id) == "running"

    # The approver names themself, comments and clicks Approve.
    browser.find_element(By.ID, "approver").send_keys("lead@example.com")
    browser.find_element(By.ID, "comment").send_keys("idle for a month, agreed")
    browser.find_element(By.ID, "approve").click()
    # The click submits the form; the answer page loads after it.
    WebDriverWait(browser, 30).until(lambda driver: driver.title.startswith("Approved"))
    assert "lead@example.com" in browser.find_element(By.ID, "message").text

    execution = api.wait_for(execution_id)
    assert execution["status"] == "completed"
    assert instance_state(ec2, instance_id) == "terminated"
    approval = execution["approval"]
    approval_id = waiting["link"].split("/approvals/")[1].split("?")[0]
    # The engine knows only that whoever held the link decided; the typed name is shown beside it.
    assert (approval["decision"], approval["decided_by"], approval["approver_name"], approval["decided_via"]) == (
        "approved",
        f"link:{approval_id}",
        "lead@example.com",
        "link",
    )
    assert approval["comment"] == "idle for a month, agreed"
    approved = [e for e in audit_events(api, execution_id) if e["event_type"] == "approved"]
    assert len(approved) == 1
    assert approved[0]["actor"] == f"approver:link:{approval_id}"
    assert approved[0]["detail"]["name"] == "lead@example.com"
    # Neither the audit log nor the step-by-step history shows the task token.
    assert token not in json.dumps(api.logs(execution_id))
    assert approved[0]["detail"]["via"] == "link"
    assert approved[0]["detail"]["source"].startswith("link:127.0.0.1")


def test_reject_on_the_page_ends_rejected_and_leaves_the_instance_running(
    api: ApiClient, ec2: Any, waiting: dict[str, Any], browser: webdriver.Chrome
) -> None:
    browser.get(waiting["link"])
    browser.find_element(By.ID, "approver").send_keys("owner@example.com")
    browser.find_element(By.ID, "comment").send_keys("still needed for the quarter end")
    browser.find_element(By.ID, "reject").click()
    WebDriverWait(browser, 30).until(lambda driver: driver.title.startswith("Rejected"))

    execution = api.wait_for(waiting["execution_id"])
    assert execution["status"] == "rejected"
    assert execution["backup"] is None
    assert execution["action"] is None
    assert "still needed for the quarter end" in execution["error_message"]
    assert instance_state(ec2, waiting["instance_id"]) == "running"


def test_a_second_click_or_a_replayed_post_changes_nothing(api: ApiClient, ec2: Any, waiting: dict[str, Any]) -> None:
    first = post_form(waiting["link"], "approve", "first@example.com")
    assert first.status_code == 200
    assert "Approved" in first.text
    execution = api.wait_for(waiting["execution_id"])
    assert execution["status"] == "completed"

    for decision, who in (("approve", "first@example.com"), ("reject", "second@example.com")):
        again = post_form(waiting["link"], decision, who)
        assert again.status_code == 409
        assert "already approved by first@example.com" in again.text
    # Opening the link afterwards shows the decision, without buttons.
    page = requests.get(waiting["link"], timeout=30)
    assert page.status_code == 409
    assert 'id="approve"' not in page.text

    after = api.status(waiting["execution_id"])
    assert after["status"] == "completed"
    assert after["approval"]["approver_name"] == "first@example.com"
    events = [e["event_type"] for e in audit_events(api, waiting["execution_id"])]
    assert events.count("approved") == 1
    assert "rejected" not in events
    assert instance_state(ec2, waiting["instance_id"]) == "terminated"


def test_a_tampered_or_cut_link_is_refused_and_changes_nothing(api: ApiClient, waiting: dict[str, Any]) -> None:
    link = waiting["link"]
    query = parse_qs(urlsplit(link).query)
    signature, expires = query["signature"][0], query["expires"][0]
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    later = str(int(expires) + 86400)
    before = audit_events(api, waiting["execution_id"])

    tampered = [
        link.replace(signature, flipped),
        link.replace(f"expires={expires}", f"expires={later}"),
        link.split("&signature=")[0],
        link.split("?")[0],
    ]
    for url in tampered:
        page = requests.get(url, timeout=30)
        assert page.status_code == 403, url
        assert "not valid" in page.text
        assert 'id="approve"' not in page.text
    assert post_form(link, "approve", signature=flipped).status_code == 403
    assert post_form(link, "approve", expires=later).status_code == 403

    after = api.status(waiting["execution_id"])
    assert after["status"] == "awaiting_approval"
    assert audit_events(api, waiting["execution_id"]) == before


def test_an_expired_link_and_an_unknown_approval_id_get_clear_pages(
    api: ApiClient, links: ApprovalLinks, waiting: dict[str, Any]
) -> None:
    approval_id = urlsplit(waiting["link"]).path.rsplit("/", 1)[1]
    expired = links.link(approval_id, datetime.now(UTC) - timedelta(minutes=1))
    page = requests.get(expired, timeout=30)
    assert page.status_code == 410
    assert "expired" in page.text
    assert post_form(expired, "approve").status_code == 410

    unknown = links.link("x" * 32, datetime.now(UTC) + timedelta(hours=1))
    page = requests.get(unknown, timeout=30)
    assert page.status_code == 404
    assert "No such approval" in page.text
    assert post_form(unknown, "approve").status_code == 404

    assert api.status(waiting["execution_id"])["status"] == "awaiting_approval"


def test_a_flood_of_gets_changes_nothing_and_the_link_still_works(
    api: ApiClient, ec2: Any, waiting: dict[str, Any]
) -> None:
    before = api.status(waiting["execution_id"])
    events_before = audit_events(api, waiting["execution_id"])

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(lambda _: requests.get(waiting["link"], timeout=60).status_code, range(120)))
    assert statuses == [200] * 120

    after = api.status(waiting["execution_id"])
    assert after["status"] == "awaiting_approval"
    assert after["updated_at"] == before["updated_at"]
    assert audit_events(api, waiting["execution_id"]) == events_before
    assert instance_state(ec2, waiting["instance_id"]) == "running"

    assert post_form(waiting["link"], "approve").status_code == 200
    assert api.wait_for(waiting["execution_id"])["status"] == "completed"


def test_a_form_without_a_name_decides_nothing(api: ApiClient, waiting: dict[str, Any]) -> None:
    response = post_form(waiting["link"], "approve", approver="   ")
    assert response.status_code == 400
    assert "name or email" in response.text
    response = post_form(waiting["link"], "maybe")
    assert response.status_code == 400
    assert api.status(waiting["execution_id"])["status"] == "awaiting_approval"


def test_no_decision_before_the_deadline_ends_expired_and_touches_nothing(
    api: ApiClient,
    ec2: Any,
    launch_instance: Callable[..., str],
    recommend: Callable[..., str],
    inbox: Callable[[str], str],
) -> None:
    instance_id = launch_instance()
    execution_id = api.execute(recommend(instance_id), approval_timeout_seconds=2)["execution_id"]
    message = inbox(execution_id)
    link = LINK.search(message)
    assert link is not None

    execution = api.wait_for(execution_id, timeout=60)
    assert execution["status"] == "expired"
    assert execution["backup"] is None
    assert execution["action"] is None
    assert instance_state(ec2, instance_id) == "running"
    # The link expired with the wait: approving now changes nothing.
    late = post_form(link.group(1), "approve")
    assert late.status_code == 410
    assert api.status(execution_id)["status"] == "expired"


def test_simultaneous_approve_and_reject_clicks_let_exactly_one_decision_win(
    api: ApiClient, ec2: Any, waiting: dict[str, Any]
) -> None:
    clicks = [("approve", "alice@example.com"), ("reject", "bob@example.com")] * 4
    with ThreadPoolExecutor(max_workers=len(clicks)) as pool:
        responses = list(pool.map(lambda click: post_form(waiting["link"], *click), clicks))

    codes = sorted(r.status_code for r in responses)
    assert codes == [200] + [409] * (len(clicks) - 1)
    execution = api.wait_for(waiting["execution_id"])
    decisions = [e for e in audit_events(api, waiting["execution_id"]) if e["event_type"] in ("approved", "rejected")]
    assert len(decisions) == 1
    winner = decisions[0]
    expected = {"approved": ("completed", "terminated"), "rejected": ("rejected", "running")}[winner["event_type"]]
    assert (execution["status"], instance_state(ec2, waiting["instance_id"])) == expected
    assert execution["approval"]["approver_name"] == winner["detail"]["name"]


def test_a_retried_approval_request_resends_the_same_link_and_it_still_decides(
    runtime: LocalRuntime,
    api: ApiClient,
    ec2: Any,
    launch_instance: Callable[..., str],
    recommend: Callable[..., str],
    inbox: Callable[[str], str],
) -> None:
    # The first attempt sends the email, then its Lambda fails with an error the state machine retries.
    fault = runtime.faults.inject("request_approval", when="after", error_type="TransientError")
    instance_id = launch_instance()
    execution_id = api.execute(recommend(instance_id))["execution_id"]
    first, second = inbox(execution_id), inbox(execution_id)
    assert fault.hits == 1
    first_link, second_link = LINK.search(first), LINK.search(second)
    assert first_link is not None
    assert second_link is not None
    assert first_link.group(1) == second_link.group(1)
    assert api.status(execution_id)["status"] == "awaiting_approval"

    assert post_form(first_link.group(1), "approve").status_code == 200
    assert api.wait_for(execution_id)["status"] == "completed"
    assert instance_state(ec2, instance_id) == "terminated"
    requested = [e for e in audit_events(api, execution_id) if e["event_type"] == "approval_requested"]
    assert len(requested) == 1
