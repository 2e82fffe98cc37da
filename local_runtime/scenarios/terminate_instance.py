"""terminate_instance on EC2: dry run, execution, manual rollback, approval, automatic rollback, refusal."""

from __future__ import annotations

import json
import re
import time
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import requests

if TYPE_CHECKING:
    from local_runtime.demo import Demo

ORDER = 10
TITLE = "terminate_instance: idle EC2 instances"


def run(demo: Demo) -> None:
    batch = demo.launch_instance("idle-batch-worker", "m5.large", "idle for 30 days")
    dev_box = demo.launch_instance("idle-dev-box", "t3.large", "idle for 45 days")
    reporting = demo.launch_instance("idle-reporting", "m5.xlarge", "idle for 21 days")
    proxy = demo.launch_instance("legacy-proxy", "t3.small", "idle, but termination protection is on")
    demo.ec2.modify_instance_attribute(InstanceId=proxy, DisableApiTermination={"Value": True})

    print("\n1. Dry run: terminate idle-batch-worker (nothing may change)")
    batch_recommendation = demo.recommend("terminate_instance", batch, 70.0)
    execution = demo.run(batch_recommendation, dry_run=True)
    demo.show_plan(execution)
    demo.record(
        "terminate: dry run",
        execution,
        "completed",
        f"instance still {demo.state(batch)}",
        demo.state(batch) == "running",
    )

    print("\n2. Execute: terminate idle-batch-worker (auto_approve asked; termination is high risk)")
    execution = demo.run(batch_recommendation, auto_approve=True)
    image_id = (execution.get("backup") or {}).get("image_id")
    images = demo.ec2.describe_images(ImageIds=[image_id])["Images"] if image_id else []
    demo.record(
        "terminate: execute",
        execution,
        "completed",
        f"instance {demo.state(batch)}, backup AMI {image_id} kept, saves ${execution['expected_savings']}/month",
        demo.state(batch) == "terminated" and bool(images),
    )

    print("\n3. Manual rollback of that execution")
    demo.api.rollback(execution["execution_id"])
    execution = demo.api.wait_for(execution["execution_id"])
    restored = demo.restored_for(execution["execution_id"])
    demo.record(
        "terminate: manual rollback",
        execution,
        "rolled_back",
        "relaunched from the AMI: " + ", ".join(f"{i['InstanceId']} ({i['State']['Name']})" for i in restored),
        len(restored) == 1 and restored[0]["State"]["Name"] == "running",
    )

    print("\n4. Approval by link: terminate idle-dev-box, approved from the emailed page")
    inbox = Inbox(demo)
    execution_id = demo.api.execute(demo.recommend("terminate_instance", dev_box, 60.0))["execution_id"]
    waiting = demo.api.wait_for(execution_id, frozenset({"awaiting_approval", "failed"}))
    email = inbox.message_for(execution_id)
    print("     the approvers' email (read through an SQS queue subscribed to the approval topic):")
    for line in email.splitlines():
        print(f"       | {line}")
    link = next(line for line in email.splitlines() if "/approvals/" in line)
    page = requests.get(link, timeout=30)
    print(
        f"     GET the link (as a mail scanner would): HTTP {page.status_code}, '{_title(page.text)}', "
        f"execution still {demo.api.status(execution_id)['status']}"
    )
    form = {k: v[-1] for k, v in parse_qs(urlsplit(link).query).items()}
    form |= {"decision": "approve", "approver": "lead@acme.example", "comment": "idle for 45 days, agreed"}
    decided = requests.post(link.split("?")[0], data=form, timeout=30)
    print(f"     POST Approve on the page: HTTP {decided.status_code}, '{_title(decided.text)}'")
    again = requests.post(link.split("?")[0], data=form, timeout=30)
    print(f"     a second click: HTTP {again.status_code}, '{_title(again.text)}' (changes nothing)")
    execution = demo.api.wait_for(execution_id)
    approval = execution.get("approval") or {}
    demo.record(
        "terminate: approved by link",
        execution,
        "completed",
        f"instance {demo.state(dev_box)}; approved by {approval.get('approver_name')} "
        f"({approval.get('decided_by')}) via {approval.get('decided_via')}"
        f" before {(waiting.get('pending_approval') or {}).get('deadline')}",
        demo.state(dev_box) == "terminated" and approval.get("decided_via") == "link" and again.status_code == 409,
    )

    print("\n5. A failure after the backup: terminate idle-reporting, the verification step crashes")
    demo.runtime.faults.inject("verify", when="before")
    execution = demo.run(demo.recommend("terminate_instance", reporting, 130.0), auto_approve=True)
    demo.runtime.faults.clear()
    restored = demo.restored_for(execution["execution_id"])
    print(f"     error: {execution['error_message']}")
    demo.record(
        "terminate: failure → rollback",
        execution,
        "rolled_back",
        "rolled back by itself, relaunched as "
        + ", ".join(f"{i['InstanceId']} ({i['State']['Name']})" for i in restored),
        len(restored) == 1 and restored[0]["State"]["Name"] == "running",
    )

    print("\n6. A refusal: terminate legacy-proxy, which has termination protection")
    execution = demo.run(demo.recommend("terminate_instance", proxy, 15.0), auto_approve=True)
    print(f"     reason: {execution['error_message']}")
    demo.record(
        "terminate: refusal", execution, "failed", f"instance {demo.state(proxy)}", demo.state(proxy) == "running"
    )


def _title(page: str) -> str:
    match = re.search(r"<h1>(.*?)</h1>", page)
    return match.group(1) if match else "?"


class Inbox:
    """What an approver's mailbox would get: an SQS queue subscribed to the approval topic."""

    def __init__(self, demo: Demo) -> None:
        self.sqs = demo.runtime.client("sqs")
        self.queue = self.sqs.create_queue(QueueName="approvers")["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        demo.runtime.client("sns").subscribe(TopicArn=demo.runtime.approval_topic_arn, Protocol="sqs", Endpoint=arn)

    def message_for(self, execution_id: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.sqs.receive_message(QueueUrl=self.queue, WaitTimeSeconds=1).get("Messages", []):
                text = str(json.loads(message["Body"])["Message"])
                if execution_id in text:
                    return text
        raise RuntimeError(f"no approval message for {execution_id} arrived")
