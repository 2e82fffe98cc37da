"""`make demo`: a small account, its idle and oversized resources, and the engine acting on them
through its API, one scenario module per recommendation type (`local_runtime/scenarios/`).

Every scenario checks its outcome against the emulated AWS; the demo exits non-zero if one does not
end as it should, so it is a proof as much as a show.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any

from local_runtime import scenarios
from local_runtime.client import FINAL_STATUSES, ApiClient
from local_runtime.runtime import ACCOUNT_ID, REGION, LocalRuntime, free_port

CUSTOMER = "acme"
APPROVER = "finops@acme.example"
RESTORED_FOR_TAG = "cost-engine:restored-for-execution"


@dataclass
class Outcome:
    scenario: str
    execution: dict[str, Any]
    ok: bool


class Demo:
    """What scenarios use: the API, the emulated account, and a record of the outcomes."""

    def __init__(self, runtime: LocalRuntime) -> None:
        self.runtime = runtime
        self.api = ApiClient(runtime.api_url, runtime.api_key)
        self.ec2 = runtime.client("ec2")
        self.outcomes: list[Outcome] = []
        self.failed_checks: list[str] = []  # checks without an execution of their own
        self.names: dict[str, str] = {}  # resource id → the name the demo gave it
        vpc = self.ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
        self.subnet_id = self.ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.1.0/24", AvailabilityZone="us-east-1a")[
            "Subnet"
        ]["SubnetId"]
        self.security_group_id = self.ec2.create_security_group(GroupName="app", Description="app servers", VpcId=vpc)[
            "GroupId"
        ]
        self.image_id = self.ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]

    def launch_instance(self, name: str, instance_type: str, note: str, **extra: Any) -> str:
        instance = self.ec2.run_instances(
            ImageId=self.image_id,
            InstanceType=instance_type,
            MinCount=1,
            MaxCount=1,
            SubnetId=self.subnet_id,
            SecurityGroupIds=[self.security_group_id],
            TagSpecifications=[
                {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": name}, {"Key": "team", "Value": "data"}]}
            ],
            **extra,
        )["Instances"][0]
        self.names[instance["InstanceId"]] = name
        print(f"  seeded {name:<20} {instance['InstanceId']}  {instance_type:<10} {note}")
        return str(instance["InstanceId"])

    def recommend(
        self, recommendation_type: str, resource_id: str, savings: float, parameters: dict[str, Any] | None = None
    ) -> str:
        recommendation = self.api.register(
            {
                "customer_id": CUSTOMER,
                "type": recommendation_type,
                "account_id": ACCOUNT_ID,
                "region": REGION,
                "resource_id": resource_id,
                "parameters": parameters or {},
                "estimated_monthly_savings": savings,
                "source": "recommendation-engine",
            }
        )
        return str(recommendation["recommendation_id"])

    def run(self, recommendation_id: str, **options: Any) -> dict[str, Any]:
        """Execute and wait for the final status. When the approval policy holds the execution for a
        person, the demo's approver approves it through the API, and says why it was held."""
        execution_id = self.api.execute(recommendation_id, **options)["execution_id"]
        execution = self.api.wait_for(execution_id, FINAL_STATUSES | {"awaiting_approval"})
        if execution["status"] != "awaiting_approval":
            return execution
        print(f"     held for a person: {execution['policy']['reason']}")
        print(f"     {APPROVER} approves through the API")
        self.api.approve(execution_id, APPROVER, "reviewed in the demo")
        return self.api.wait_for(execution_id)

    def instance(self, instance_id: str) -> dict[str, Any]:
        reservations = self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        instance: dict[str, Any] = reservations[0]["Instances"][0]
        return instance

    def state(self, instance_id: str) -> str:
        return str(self.instance(instance_id)["State"]["Name"])

    def restored_for(self, execution_id: str) -> list[dict[str, Any]]:
        reservations = self.ec2.describe_instances(
            Filters=[{"Name": f"tag:{RESTORED_FOR_TAG}", "Values": [execution_id]}]
        )["Reservations"]
        return [i for r in reservations for i in r["Instances"]]

    def show_plan(self, execution: dict[str, Any]) -> None:
        plan = execution.get("plan") or {}
        for action in plan.get("actions", []):
            print(f"     would: {action}")
        print(f"     estimated monthly savings: ${plan.get('estimated_monthly_savings')}")

    def record(self, scenario: str, execution: dict[str, Any], expected: str, check: str, ok: bool) -> None:
        ok = ok and execution["status"] == expected
        self.outcomes.append(Outcome(scenario, execution, ok))
        print(f"  [{'ok ' if ok else 'FAILED'}] {execution['status']}: {check}")

    def check(self, what: str, ok: bool) -> None:
        """A check without an execution of its own (e.g. that nothing was registered or started)."""
        if not ok:
            self.failed_checks.append(what)
        print(f"  [{'ok ' if ok else 'FAILED'}] {what}")

    def summary(self) -> bool:
        print("\nSummary of executions")
        print(f"  {'scenario':<36} {'type':<20} {'status':<13} {'expected/month':>14}  result")
        for outcome in self.outcomes:
            savings = outcome.execution.get("expected_savings")
            shown = "-" if savings is None else f"${savings:,.2f}"
            print(
                f"  {outcome.scenario:<36} {outcome.execution['recommendation_type']:<20} "
                f"{outcome.execution['status']:<13} {shown:>14}  {'ok' if outcome.ok else 'UNEXPECTED'}"
            )
        print("\nFinal state of each EC2 instance")
        reservations = self.ec2.describe_instances()["Reservations"]
        for instance in sorted((i for r in reservations for i in r["Instances"]), key=lambda i: i["LaunchTime"]):
            tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
            origin = f"restored by {tags[RESTORED_FOR_TAG][:15]}" if RESTORED_FOR_TAG in tags else "original"
            print(
                f"  {tags.get('Name', '?'):<20} {instance['InstanceId']}  {instance['InstanceType']:<10} "
                f"{instance.get('InstanceLifecycle', 'on-demand'):<9} {instance['State']['Name']:<11} {origin}"
            )
        databases = self.runtime.client("rds").describe_db_instances()["DBInstances"]
        if databases:
            print("\nFinal state of each RDS instance")
            for database in databases:
                print(
                    f"  {database['DBInstanceIdentifier']:<28} {database['DBInstanceClass']:<14} "
                    f"{database['DBInstanceStatus']}"
                )
        images = self.ec2.describe_images(Owners=["self"])["Images"]
        print(f"\nBackup AMIs kept: {len(images)}")
        for what in self.failed_checks:
            print(f"\nUNEXPECTED: {what}")
        return all(outcome.ok for outcome in self.outcomes) and not self.failed_checks


def scenario_modules() -> list[Any]:
    """The scenario modules, in the order of their ORDER attribute."""
    modules = [
        importlib.import_module(f"{scenarios.__name__}.{m.name}") for m in pkgutil.iter_modules(scenarios.__path__)
    ]
    return sorted(modules, key=lambda module: (module.ORDER, module.__name__))


def run_demo() -> int:
    runtime = LocalRuntime(aws_port=free_port(), api_port=free_port())
    print("Starting the embedded local runtime (moto, the real ASL, the real handlers) …")
    with runtime:
        print(f"  API {runtime.api_url}   emulated AWS {runtime.aws_endpoint}")
        demo = Demo(runtime)
        for module in scenario_modules():
            print(f"\n== {module.TITLE} ==")
            module.run(demo)
        ok = demo.summary()
    print("\nDemo finished: every scenario ended as expected." if ok else "\nDemo FAILED: see UNEXPECTED above.")
    return 0 if ok else 1
