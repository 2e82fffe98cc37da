"""enable_autoscaling: a standalone web server put behind an Auto Scaling group (dry run, then for real)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from local_runtime.demo import Demo

ORDER = 80
TITLE = "enable_autoscaling: a standalone web server behind an Auto Scaling group"

PARAMETERS = {
    "min_size": 1,
    "max_size": 4,
    "desired_capacity": 2,
    "target_tracking": {"metric": "ASGAverageCPUUtilization", "target_value": 50.0},
}


def run(demo: Demo) -> None:
    web = demo.launch_instance(
        "web-frontend", "t3.medium", "one server for all traffic, busy by day", UserData="#!/bin/bash\nnginx\n"
    )
    autoscaling = demo.runtime.client("autoscaling")
    recommendation = demo.recommend("enable_autoscaling", web, 35.0, PARAMETERS)

    print("\n1. Dry run: put web-frontend behind a group of 1..4 (nothing may change)")
    execution = demo.run(recommendation, dry_run=True)
    demo.show_plan(execution)
    groups = autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"]
    demo.record(
        "autoscaling: dry run",
        execution,
        "completed",
        f"{len(groups)} Auto Scaling group(s) in the account",
        not groups,
    )

    print("\n2. Execute, auto-approved")
    execution = demo.run(recommendation, auto_approve=True)
    group_name = (execution.get("action") or {}).get("group", "")
    found = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[group_name])["AutoScalingGroups"]
    healthy = [
        i for g in found for i in g["Instances"] if (i["LifecycleState"], i["HealthStatus"]) == ("InService", "Healthy")
    ]
    policies = autoscaling.describe_policies(AutoScalingGroupName=group_name)["ScalingPolicies"] if found else []
    for instance in healthy:
        demo.names[instance["InstanceId"]] = "web-frontend (group)"
    demo.record(
        "autoscaling: execute",
        execution,
        "completed",
        f"group {group_name[:32]}… has {len(healthy)} healthy instance(s) and {len(policies)} target-tracking "
        f"policy; web-frontend is {demo.state(web)}",
        len(healthy) == 2 and len(policies) == 1 and demo.state(web) == "running",
    )
