"""schedule_instance: a dev instance put on weekday office hours, its stop schedule fired (moto
never fires schedules: the local runtime's emulation of Scheduler's universal targets does), then a
manual rollback that removes the schedules and starts the instance again."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from local_runtime.emulations.scheduler_targets import fire_schedule

if TYPE_CHECKING:
    from local_runtime.demo import Demo

ORDER = 30
TITLE = "schedule_instance: a dev instance on office hours (EventBridge Scheduler)"
OFFICE_HOURS = {
    "timezone": "America/New_York",
    "weekdays": ["MON", "TUE", "WED", "THU", "FRI"],
    "start_time": "08:00",
    "stop_time": "19:00",
}


def _schedules(demo: Demo, execution: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The execution's schedules as EventBridge Scheduler has them, by action (stopInstances, ...)."""
    scheduler = demo.runtime.client("scheduler")
    found = {}
    for name in ((execution.get("backup") or {}).get("schedule_names") or {}).values():
        try:
            schedule = scheduler.get_schedule(Name=name)
        except scheduler.exceptions.ResourceNotFoundException:
            continue
        found[schedule["Target"]["Arn"].rsplit(":", 1)[-1]] = schedule
    return found


def run(demo: Demo) -> None:
    dev_box = demo.launch_instance(
        "dev-workstation",
        "m5.large",
        "used in office hours only; launched for hibernation",
        HibernationOptions={"Configured": True},
        BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 50, "Encrypted": True}}],
    )

    print("\n1. Execute: run dev-workstation only 08:00-19:00 on weekdays (New York time), auto-approved")
    execution = demo.run(demo.recommend("schedule_instance", dev_box, 55.0, OFFICE_HOURS), auto_approve=True)
    demo.show_plan(execution)
    schedules = _schedules(demo, execution)
    for action, schedule in sorted(schedules.items()):
        print(
            f"     schedule {schedule['Name']}: {schedule['ScheduleExpression']} "
            f"{schedule['ScheduleExpressionTimezone']} {schedule['State']} → ec2:{action} {schedule['Target']['Input']}"
        )
    stop = schedules.get("stopInstances", {})
    hibernates = json.loads(stop.get("Target", {}).get("Input") or "{}").get("Hibernate") is True
    demo.record(
        "schedule: execute",
        execution,
        "completed",
        f"{len(schedules)} schedules enabled, the stop hibernates: {hibernates}; "
        f"saves ${execution['expected_savings']}/month",
        set(schedules) == {"stopInstances", "startInstances"} and hibernates,
    )

    print("\n2. 19:00 on a weekday: the stop schedule fires (emulated Scheduler → EC2)")
    if stop:
        fire_schedule(demo.runtime, stop["Name"])
    instance = demo.instance(dev_box)
    reason = instance.get("StateReason", {}).get("Code", "")
    print(f"     dev-workstation is {instance['State']['Name']} ({reason})")
    demo.record(
        "schedule: stop fires",
        execution,
        "completed",
        f"instance {instance['State']['Name']}, {reason}",
        instance["State"]["Name"] == "stopped" and reason == "Client.UserInitiatedHibernate",
    )

    print("\n3. Manual rollback: the schedules go, the instance runs again")
    demo.api.rollback(execution["execution_id"])
    execution = demo.api.wait_for(execution["execution_id"])
    left = _schedules(demo, execution)
    demo.record(
        "schedule: manual rollback",
        execution,
        "rolled_back",
        f"{len(left)} schedules left, instance {demo.state(dev_box)}",
        not left and demo.state(dev_box) == "running",
    )
