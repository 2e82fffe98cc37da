"""migrate_to_spot on EC2: a batch worker moves to spot, and a failed migration rolls back."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from local_runtime.demo import Demo

ORDER = 50
TITLE = "migrate_to_spot: interruption-tolerant EC2 workers"
SPOT_FOR_TAG = "cost-engine:spot-for-execution"


def spot_instances(demo: Demo, execution_id: str) -> list[dict[str, Any]]:
    reservations = demo.ec2.describe_instances(Filters=[{"Name": f"tag:{SPOT_FOR_TAG}", "Values": [execution_id]}])
    return [i for r in reservations["Reservations"] for i in r["Instances"]]


def describe(instances: list[dict[str, Any]]) -> str:
    return ", ".join(
        f"{i['InstanceId']} ({i.get('InstanceLifecycle', 'on-demand')}, {i['State']['Name']})" for i in instances
    )


def run(demo: Demo) -> None:
    worker = demo.launch_instance("queue-batch-worker", "c5.xlarge", "on-demand, works off a queue, retries")
    renderer = demo.launch_instance("render-worker", "m5.xlarge", "on-demand, restartable render jobs")

    print("\n1. Execute: move queue-batch-worker to spot (auto_approve asked; spot is high risk)")
    execution = demo.run(
        demo.recommend("migrate_to_spot", worker, 75.0, {"instance_interruption_behavior": "terminate"}),
        auto_approve=True,
    )
    print(f"     savings basis: {(execution.get('plan') or {}).get('savings_basis')}")
    spot = spot_instances(demo, execution["execution_id"])
    original = demo.instance(worker)
    demo.record(
        "spot: execute",
        execution,
        "completed",
        f"now {describe(spot)}; the original {worker} is {original['State']['Name']}",
        len(spot) == 1
        and spot[0].get("InstanceLifecycle") == "spot"
        and spot[0]["State"]["Name"] == "running"
        and spot[0]["InstanceType"] == original["InstanceType"]
        and spot[0]["SubnetId"] == original["SubnetId"]
        and original["State"]["Name"] == "terminated",
    )

    print("\n2. A failure after the spot launch: move render-worker, the verification step crashes")
    demo.runtime.faults.inject("verify", when="before")
    execution = demo.run(demo.recommend("migrate_to_spot", renderer, 95.0), auto_approve=True)
    demo.runtime.faults.clear()
    spot = spot_instances(demo, execution["execution_id"])
    print(f"     error: {execution['error_message']}")
    demo.record(
        "spot: failure → rollback",
        execution,
        "rolled_back",
        f"the original {renderer} is {demo.state(renderer)} again; the spot one: {describe(spot)}",
        demo.state(renderer) == "running" and [i["State"]["Name"] for i in spot] == ["terminated"],
    )
