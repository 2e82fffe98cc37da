"""purchase_reserved_instances: a purchase that waits for a person even with auto_approve, is approved
and completes; and one refused because it costs more than the configured limit."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from local_runtime.demo import Demo

ORDER = 85
TITLE = "purchase_reserved_instances: steady m5.large usage, bought once, with a person's approval"

STEADY_M5_LARGE = {
    "instance_type": "m5.large",
    "product_description": "Linux/UNIX",
    "tenancy": "default",
    "term": "1yr",
    "offering_type": "Partial Upfront",
    "instance_count": 2,
}


def run(demo: Demo) -> None:
    for name in ("api-steady-1", "api-steady-2"):
        demo.launch_instance(name, "m5.large", "busy around the clock for a year")

    print("\n1. Buy 2 x m5.large 1yr Partial Upfront, asked with auto_approve (a purchase always needs a person)")
    recommendation = demo.recommend("purchase_reserved_instances", "m5.large", 45.0, STEADY_M5_LARGE)
    execution_id = demo.api.execute(recommendation, auto_approve=True)["execution_id"]
    waiting = demo.api.wait_for(execution_id, frozenset({"awaiting_approval", "failed", "completed"}))
    plan = waiting.get("plan") or {}
    print(f"     {waiting['status']}: {plan.get('summary', '')}")
    print(f"     rollback: {(plan.get('rollback_plan') or {}).get('rollback_steps', ['?'])[0][:110]}…")
    bought_before_approval = demo.ec2.describe_reserved_instances(
        Filters=[{"Name": "tag:cost-engine:execution-id", "Values": [execution_id]}]
    )["ReservedInstances"]
    print("     approving as finops@acme.example")
    demo.api.approve(execution_id, "finops@acme.example", "steady usage confirmed for 12 months")
    execution = demo.api.wait_for(execution_id)
    bought = demo.ec2.describe_reserved_instances(
        Filters=[{"Name": "tag:cost-engine:execution-id", "Values": [execution_id]}]
    )["ReservedInstances"]
    demo.record(
        "RI purchase: approved by a person",
        execution,
        "completed",
        f"waited for approval ({waiting['status']}), then bought "
        + ", ".join(
            f"{r['ReservedInstancesId'][:8]}… {r['InstanceCount']} x {r['InstanceType']} {r['State']}" for r in bought
        ),
        waiting["status"] == "awaiting_approval"
        and not bought_before_approval
        and [(r["InstanceCount"], r["State"]) for r in bought] == [(2, "active")],
    )

    print("\n2. A refusal: 5 x m5.4xlarge 3yr All Upfront, above the purchase limit")
    big = demo.recommend(
        "purchase_reserved_instances",
        "m5.4xlarge",
        900.0,
        {
            **STEADY_M5_LARGE,
            "instance_type": "m5.4xlarge",
            "term": "3yr",
            "offering_type": "All Upfront",
            "instance_count": 5,
        },
    )
    execution = demo.run(big, auto_approve=True)
    print(f"     reason: {execution['error_message']}")
    held = demo.ec2.describe_reserved_instances(Filters=[{"Name": "instance-type", "Values": ["m5.4xlarge"]}])
    demo.record(
        "RI purchase: refused above the cap",
        execution,
        "failed",
        f"{len(held['ReservedInstances'])} m5.4xlarge reservation(s) bought",
        not held["ReservedInstances"],
    )
