"""terminate_instance on EC2: dry run, execution, manual rollback, approval, automatic rollback, refusal."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

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

    print("\n2. Execute: terminate idle-batch-worker, auto-approved")
    execution = demo.run(batch_recommendation, auto_approve=True)
    image_id = (execution.get("backup") or {}).get("image_id")
    images = demo.ec2.describe_images(ImageIds=[image_id])["Images"] if image_id else []
    demo.record(
        "terminate: execute",
        execution,
        "completed",
        f"instance {demo.state(batch)}, backup AMI {image_id} kept, saves ${execution['actual_savings']}/month",
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

    print("\n4. Execute with a person's approval: terminate idle-dev-box")
    sqs = demo.runtime.client("sqs")
    queue = sqs.create_queue(QueueName="approvers")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    demo.runtime.client("sns").subscribe(TopicArn=demo.runtime.approval_topic_arn, Protocol="sqs", Endpoint=queue_arn)
    execution_id = demo.api.execute(demo.recommend("terminate_instance", dev_box, 60.0))["execution_id"]
    waiting = demo.api.wait_for(execution_id, frozenset({"awaiting_approval", "failed"}))
    for message in sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1).get("Messages", []):
        print(f"     approvers were notified: {json.loads(message['Body']).get('Subject', '')!r}")
    deadline = (waiting.get("pending_approval") or {}).get("deadline")
    print(f"     waiting until {deadline}; approving as finops@acme.example")
    demo.api.approve(execution_id, "finops@acme.example", "idle for 45 days, agreed with the team")
    execution = demo.api.wait_for(execution_id)
    demo.record(
        "terminate: approved by a person",
        execution,
        "completed",
        f"instance {demo.state(dev_box)}",
        demo.state(dev_box) == "terminated",
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
