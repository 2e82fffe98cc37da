"""`make demo`: a small account, its idle instances, and the engine acting on them through its API.

Every scenario checks its outcome against the emulated AWS; the demo exits non-zero if one does not
end as it should, so it is a proof as much as a show.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from local_runtime.client import ApiClient
from local_runtime.runtime import ACCOUNT_ID, REGION, LocalRuntime, free_port

CUSTOMER = "acme"
RESTORED_FOR_TAG = "cost-engine:restored-for-execution"


@dataclass
class Outcome:
    scenario: str
    execution: dict[str, Any]
    expected_status: str
    check: str
    ok: bool


class Demo:
    def __init__(self, runtime: LocalRuntime) -> None:
        self.runtime = runtime
        self.api = ApiClient(runtime.api_url, runtime.api_key)
        self.ec2 = runtime.client("ec2")
        self.instances: dict[str, str] = {}
        self.outcomes: list[Outcome] = []

    # -- the account -------------------------------------------------------------------------------

    def seed(self) -> None:
        vpc = self.ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
        subnet = self.ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.1.0/24", AvailabilityZone="us-east-1a")
        group = self.ec2.create_security_group(GroupName="app", Description="app servers", VpcId=vpc)["GroupId"]
        image = self.ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        fleet = [
            ("web-frontend", "t3.medium", False, "busy: serves traffic, no recommendation"),
            ("idle-batch-worker", "m5.large", False, "idle for 30 days"),
            ("idle-dev-box", "t3.large", False, "idle for 45 days"),
            ("idle-reporting", "m5.xlarge", False, "idle for 21 days"),
            ("legacy-proxy", "t3.small", True, "idle, but termination protection is on"),
        ]
        print("Seeding the emulated account 123456789012 (us-east-1):")
        for name, instance_type, protected, note in fleet:
            instance = self.ec2.run_instances(
                ImageId=image,
                InstanceType=instance_type,
                MinCount=1,
                MaxCount=1,
                SubnetId=subnet["Subnet"]["SubnetId"],
                SecurityGroupIds=[group],
                TagSpecifications=[
                    {
                        "ResourceType": "instance",
                        "Tags": [{"Key": "Name", "Value": name}, {"Key": "team", "Value": "data"}],
                    }
                ],
            )["Instances"][0]
            self.instances[name] = instance["InstanceId"]
            if protected:
                self.ec2.modify_instance_attribute(
                    InstanceId=instance["InstanceId"], DisableApiTermination={"Value": True}
                )
            print(f"  {name:<18} {instance['InstanceId']}  {instance_type:<10} {note}")
        # An approver's mailbox stand-in: a queue subscribed to the approval topic.
        sqs = self.runtime.client("sqs")
        self.approval_queue = sqs.create_queue(QueueName="approvers")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=self.approval_queue, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        self.runtime.client("sns").subscribe(
            TopicArn=self.runtime.approval_topic_arn, Protocol="sqs", Endpoint=queue_arn
        )

    def recommend(self, name: str, savings: float) -> str:
        recommendation = self.api.register(
            {
                "customer_id": CUSTOMER,
                "type": "terminate_instance",
                "account_id": ACCOUNT_ID,
                "region": REGION,
                "resource_id": self.instances[name],
                "estimated_monthly_savings": savings,
                "source": "recommendation-engine",
            }
        )
        return str(recommendation["recommendation_id"])

    def state(self, instance_id: str) -> str:
        reservations = self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        return str(reservations[0]["Instances"][0]["State"]["Name"])

    def restored_for(self, execution_id: str) -> list[dict[str, Any]]:
        reservations = self.ec2.describe_instances(
            Filters=[{"Name": f"tag:{RESTORED_FOR_TAG}", "Values": [execution_id]}]
        )["Reservations"]
        return [i for r in reservations for i in r["Instances"]]

    def record(self, scenario: str, execution: dict[str, Any], expected: str, check: str, ok: bool) -> None:
        ok = ok and execution["status"] == expected
        self.outcomes.append(Outcome(scenario, execution, expected, check, ok))
        mark = "ok " if ok else "FAILED"
        print(f"  [{mark}] {execution['status']}: {check}")

    # -- the scenarios -----------------------------------------------------------------------------

    def dry_run(self) -> None:
        print("\n1. Dry run: terminate idle-batch-worker (nothing may change)")
        rec = self.recommend("idle-batch-worker", 70.0)
        execution = self.api.wait_for(self.api.execute(rec, dry_run=True)["execution_id"])
        plan = execution["plan"] or {}
        for action in plan.get("actions", []):
            print(f"     would: {action}")
        print(
            f"     estimated monthly savings: ${plan.get('estimated_monthly_savings')}  ({plan.get('savings_basis')})"
        )
        still = self.state(self.instances["idle-batch-worker"])
        self.record("dry run", execution, "completed", f"instance still {still}, plan reported", still == "running")
        self.batch_recommendation = rec

    def execute(self) -> None:
        print("\n2. Execute: terminate idle-batch-worker, auto-approved")
        execution = self.api.wait_for(self.api.execute(self.batch_recommendation, auto_approve=True)["execution_id"])
        image_id = (execution.get("backup") or {}).get("image_id")
        images = self.ec2.describe_images(ImageIds=[image_id])["Images"] if image_id else []
        state = self.state(self.instances["idle-batch-worker"])
        self.record(
            "execute",
            execution,
            "completed",
            f"instance {state}, backup AMI {image_id} {images[0]['State'] if images else 'missing'}, "
            f"saves ${execution['actual_savings']}/month",
            state == "terminated" and bool(images),
        )
        self.batch_execution = execution["execution_id"]

    def manual_rollback(self) -> None:
        print("\n3. Manual rollback of that execution")
        self.api.rollback(self.batch_execution)
        execution = self.api.wait_for(self.batch_execution)
        restored = self.restored_for(self.batch_execution)
        described = ", ".join(f"{i['InstanceId']} ({i['InstanceType']}, {i['State']['Name']})" for i in restored)
        self.record(
            "manual rollback",
            execution,
            "rolled_back",
            f"relaunched from the AMI: {described or 'nothing'}",
            len(restored) == 1 and restored[0]["State"]["Name"] == "running",
        )

    def approval(self) -> None:
        print("\n4. Execute with a person's approval: terminate idle-dev-box")
        rec = self.recommend("idle-dev-box", 60.0)
        execution_id = self.api.execute(rec)["execution_id"]
        waiting = self.api.wait_for(execution_id, frozenset({"awaiting_approval", "failed"}))
        messages = (
            self.runtime.client("sqs")
            .receive_message(QueueUrl=self.approval_queue, WaitTimeSeconds=1)
            .get("Messages", [])
        )
        if messages:
            subject = json.loads(messages[0]["Body"]).get("Subject", "")
            print(f"     approvers were notified: {subject!r}")
        deadline = (waiting.get("pending_approval") or {}).get("deadline")
        print(f"     waiting for approval until {deadline}; approving as finops@acme.example")
        self.api.approve(execution_id, "finops@acme.example", "idle for 45 days, agreed with the team")
        execution = self.api.wait_for(execution_id)
        state = self.state(self.instances["idle-dev-box"])
        self.record(
            "approval", execution, "completed", f"approved by a person, instance {state}", state == "terminated"
        )

    def automatic_rollback(self) -> None:
        print("\n5. A failure after the backup: terminate idle-reporting, verification step crashes")
        rec = self.recommend("idle-reporting", 130.0)
        self.runtime.faults.inject("verify", when="before")
        execution = self.api.wait_for(self.api.execute(rec, auto_approve=True)["execution_id"])
        self.runtime.faults.clear()
        restored = self.restored_for(execution["execution_id"])
        print(f"     error: {execution['error_message']}")
        self.record(
            "failure → rollback",
            execution,
            "rolled_back",
            "rolled back automatically, relaunched as "
            + ", ".join(f"{i['InstanceId']} ({i['State']['Name']})" for i in restored),
            len(restored) == 1 and restored[0]["State"]["Name"] == "running",
        )

    def refusal(self) -> None:
        print("\n6. A refusal: terminate legacy-proxy, which has termination protection")
        rec = self.recommend("legacy-proxy", 15.0)
        execution = self.api.wait_for(self.api.execute(rec, auto_approve=True)["execution_id"])
        print(f"     reason: {execution['error_message']}")
        state = self.state(self.instances["legacy-proxy"])
        self.record("refusal", execution, "failed", f"refused before acting, instance {state}", state == "running")

    # -- the summary -------------------------------------------------------------------------------

    def summary(self) -> bool:
        print("\nSummary of executions")
        print(f"  {'scenario':<20} {'execution':<16} {'status':<13} {'savings/month':>13}  result")
        for outcome in self.outcomes:
            savings = outcome.execution.get("actual_savings")
            shown = "-" if savings is None else f"${savings:,.2f}"
            print(
                f"  {outcome.scenario:<20} {outcome.execution['execution_id'][:15]:<16} "
                f"{outcome.execution['status']:<13} {shown:>13}  {'ok' if outcome.ok else 'UNEXPECTED'}"
            )
        print("\nFinal state of each resource")
        reservations = self.ec2.describe_instances()["Reservations"]
        for instance in sorted((i for r in reservations for i in r["Instances"]), key=lambda i: i["LaunchTime"]):
            tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
            origin = f"restored by {tags[RESTORED_FOR_TAG][:15]}" if RESTORED_FOR_TAG in tags else "original"
            print(
                f"  {tags.get('Name', '?'):<18} {instance['InstanceId']}  {instance['InstanceType']:<10} "
                f"{instance['State']['Name']:<11} {origin}"
            )
        images = self.ec2.describe_images(Owners=["self"])["Images"]
        print(f"  backup AMIs kept: {', '.join(sorted(i['ImageId'] for i in images)) or 'none'}")
        return all(outcome.ok for outcome in self.outcomes)


def run_demo() -> int:
    runtime = LocalRuntime(aws_port=free_port(), api_port=free_port())
    print("Starting the embedded local runtime (moto, the real ASL, the real handlers) …")
    with runtime:
        print(f"  API {runtime.api_url}   emulated AWS {runtime.aws_endpoint}\n")
        demo = Demo(runtime)
        demo.seed()
        scenarios: list[Callable[[], None]] = [
            demo.dry_run,
            demo.execute,
            demo.manual_rollback,
            demo.approval,
            demo.automatic_rollback,
            demo.refusal,
        ]
        for scenario in scenarios:
            scenario()
        ok = demo.summary()
    print("\nDemo finished: every scenario ended as expected." if ok else "\nDemo FAILED: see UNEXPECTED above.")
    return 0 if ok else 1
