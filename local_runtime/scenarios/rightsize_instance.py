"""rightsize_instance on EC2: a downsize (dry run, then for real), a refusal, and a start without
capacity that rolls back to the original type."""

from __future__ import annotations

from typing import TYPE_CHECKING

from local_runtime.emulations import ec2_capacity

if TYPE_CHECKING:
    from local_runtime.demo import Demo

ORDER = 40
TITLE = "rightsize_instance: oversized EC2 instances"


def _type_and_state(demo: Demo, instance_id: str) -> tuple[str, str]:
    instance = demo.instance(instance_id)
    return str(instance["InstanceType"]), str(instance["State"]["Name"])


def run(demo: Demo) -> None:
    api = demo.launch_instance("oversized-api", "m5.2xlarge", "CPU under 10% for 30 days")
    search = demo.launch_instance("search-indexer", "m5.2xlarge", "CPU under 15% for 30 days")
    reports = demo.launch_instance("nightly-reports", "m5.xlarge", "CPU under 20%; m5.large is short of capacity")

    print("\n1. Dry run: oversized-api m5.2xlarge → m5.large (nothing may change)")
    recommendation = demo.recommend("rightsize_instance", api, 210.24, {"target_instance_type": "m5.large"})
    execution = demo.run(recommendation, dry_run=True)
    demo.show_plan(execution)
    demo.record(
        "rightsize: dry run",
        execution,
        "completed",
        "instance still {} and {}".format(*_type_and_state(demo, api)),
        _type_and_state(demo, api) == ("m5.2xlarge", "running"),
    )

    print("\n2. Execute: stop, change to m5.large, start, status checks; auto-approved")
    execution = demo.run(recommendation, auto_approve=True)
    demo.record(
        "rightsize: execute",
        execution,
        "completed",
        "instance now {} and {}, saves ${}/month".format(*_type_and_state(demo, api), execution["expected_savings"]),
        _type_and_state(demo, api) == ("m5.large", "running"),
    )

    print("\n3. A refusal: search-indexer to m6g.large, an arm64 type for an x86_64 image")
    execution = demo.run(
        demo.recommend("rightsize_instance", search, 225.57, {"target_instance_type": "m6g.large"}), auto_approve=True
    )
    print(f"     reason: {execution['error_message']}")
    demo.record(
        "rightsize: refusal (arm64)",
        execution,
        "failed",
        "instance untouched: {} and {}".format(*_type_and_state(demo, search)),
        _type_and_state(demo, search) == ("m5.2xlarge", "running"),
    )

    print("\n4. No capacity: nightly-reports to m5.large, which EC2 cannot start now (emulated shortage)")
    ec2_capacity.no_capacity_for(instance_id=reports, instance_type="m5.large")
    try:
        execution = demo.run(
            demo.recommend("rightsize_instance", reports, 70.08, {"target_instance_type": "m5.large"}),
            auto_approve=True,
        )
    finally:
        ec2_capacity.restore_capacity()
    print(f"     error: {execution['error_message']}")
    demo.record(
        "rightsize: no capacity → rollback",
        execution,
        "rolled_back",
        "back to {} and {}".format(*_type_and_state(demo, reports)),
        _type_and_state(demo, reports) == ("m5.xlarge", "running"),
    )
