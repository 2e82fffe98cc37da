"""schedule_instance end to end: the real state machine on the local runtime, driven through the API,
with the emulated EC2 and EventBridge Scheduler checked afterwards, and the schedules fired through
the local runtime's emulation of Scheduler's universal targets (moto never fires them)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from cost_engine.pricing import price_catalog
from local_runtime.client import ApiClient, ApiError
from local_runtime.emulations.scheduler_targets import fire_schedule
from local_runtime.runtime import LocalRuntime
from tests.integration.conftest import DRY_RUN, ROLLED_BACK, instance_state, step_events

OFFICE_HOURS: dict[str, Any] = {
    "timezone": "Europe/Berlin",
    "weekdays": ["MON", "TUE", "WED", "THU", "FRI"],
    "start_time": "07:30",
    "stop_time": "18:30",
}
STOP_TARGET = "arn:aws:scheduler:::aws-sdk:ec2:stopInstances"
START_TARGET = "arn:aws:scheduler:::aws-sdk:ec2:startInstances"


@pytest.fixture
def scheduler(runtime: LocalRuntime) -> Any:
    return runtime.client("scheduler")


@pytest.fixture
def schedule(recommend: Callable[..., str]) -> Callable[..., str]:
    """Register a schedule_instance recommendation for office hours (parameters may be overridden)."""

    def register(instance_id: str, **parameters: Any) -> str:
        return recommend(
            instance_id,
            type="schedule_instance",
            parameters={**OFFICE_HOURS, **parameters},
            estimated_monthly_savings=40,
        )

    return register


def schedules_of(scheduler: Any, instance_id: str, execution_id: str | None = None) -> dict[str, dict[str, Any]]:
    """The engine's schedules of an instance (of one execution if given), by name, as Scheduler has them."""
    listed = scheduler.list_schedules(NamePrefix=f"ce-{instance_id}-")["Schedules"]
    token = execution_id.removeprefix("exec-") if execution_id else ""
    return {
        s["Name"]: scheduler.get_schedule(Name=s["Name"], GroupName=s["GroupName"])
        for s in listed
        if token in s["Name"]
    }


def by_action(schedules: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {s["Target"]["Arn"].rsplit(":", 1)[-1]: s for s in schedules.values()}


def describe(ec2: Any, instance_id: str) -> Any:
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def run(api: ApiClient, recommendation_id: str, **options: Any) -> dict[str, Any]:
    return api.wait_for(api.execute(recommendation_id, **options)["execution_id"])


def test_dry_run_reports_the_plan_and_creates_no_schedule(
    api: ApiClient, ec2: Any, scheduler: Any, launch_instance: Callable[..., str], schedule: Callable[..., str]
) -> None:
    # Given a running dev instance and a recommendation to run it in office hours only
    instance_id = launch_instance("t3.large", name="dev-box")

    # When a dry run is executed
    execution = run(api, schedule(instance_id), dry_run=True)

    # Then the plan names both schedules and the savings, and nothing exists or changed
    assert execution["status"] == "completed"
    plan = execution["plan"]
    assert any("cron(30 18 ? * MON-FRI *) in Europe/Berlin → ec2:StopInstances" in a for a in plan["actions"])
    assert any("cron(30 7 ? * MON-FRI *) in Europe/Berlin → ec2:StartInstances" in a for a in plan["actions"])
    catalog = price_catalog()
    off_hours_per_month = (168 - 5 * 11) / 168 * catalog.hours_per_month
    assert plan["estimated_monthly_savings"] == pytest.approx(
        catalog.ec2_hourly["t3.large"] * off_hours_per_month, 0.01
    )
    assert "EBS volumes still cost" in plan["savings_basis"]
    assert schedules_of(scheduler, instance_id) == {}
    assert instance_state(ec2, instance_id) == "running"
    events = [event["event_type"] for event in api.logs(execution["execution_id"])["events"]]
    assert step_events(events) == DRY_RUN


def test_execution_creates_both_schedules_and_firing_them_stops_and_starts_the_instance(
    api: ApiClient,
    ec2: Any,
    scheduler: Any,
    runtime: LocalRuntime,
    launch_instance: Callable[..., str],
    schedule: Callable[..., str],
) -> None:
    # Given a running dev instance
    instance_id = launch_instance("t3.large", name="dev-box")

    # When its office-hours schedule is executed
    execution = run(api, schedule(instance_id), auto_approve=True)

    # Then both schedules exist, enabled, in the instance's time zone, with the engine's role
    assert execution["status"] == "completed", execution["error_message"]
    assert execution["verification"]["passed"] is True
    schedules = by_action(schedules_of(scheduler, instance_id, execution["execution_id"]))
    assert set(schedules) == {"stopInstances", "startInstances"}
    stop, start = schedules["stopInstances"], schedules["startInstances"]
    assert (stop["ScheduleExpression"], start["ScheduleExpression"]) == (
        "cron(30 18 ? * MON-FRI *)",
        "cron(30 7 ? * MON-FRI *)",
    )
    assert {stop["ScheduleExpressionTimezone"], start["ScheduleExpressionTimezone"]} == {"Europe/Berlin"}
    assert {stop["State"], start["State"]} == {"ENABLED"}
    assert json.loads(stop["Target"]["Input"]) == {"InstanceIds": [instance_id]}
    scheduler_role = runtime.client("iam").get_role(RoleName="cost-engine-local-scheduler")["Role"]["Arn"]
    assert stop["Target"]["RoleArn"] == start["Target"]["RoleArn"] == scheduler_role
    assert execution["expected_savings"] == pytest.approx(execution["plan"]["estimated_monthly_savings"])
    assert instance_state(ec2, instance_id) == "running"

    # and when the stop schedule fires, the instance stops (a plain stop: no hibernation configured)
    fire_schedule(runtime, stop["Name"])
    assert instance_state(ec2, instance_id) == "stopped"
    assert describe(ec2, instance_id)["StateReason"]["Code"] == "Client.UserInitiatedShutdown"

    # and when the start schedule fires, it runs again
    fire_schedule(runtime, start["Name"])
    assert instance_state(ec2, instance_id) == "running"


def test_a_hibernation_ready_instance_is_hibernated_by_its_stop_schedule(
    api: ApiClient,
    ec2: Any,
    scheduler: Any,
    runtime: LocalRuntime,
    launch_instance: Callable[..., str],
    schedule: Callable[..., str],
) -> None:
    # Given an instance launched for hibernation, with an encrypted root volume
    instance_id = launch_instance(
        "m5.large",
        name="notebook",
        HibernationOptions={"Configured": True},
        BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 30, "Encrypted": True}}],
    )

    execution = run(api, schedule(instance_id), auto_approve=True)

    # Then the plan said why it hibernates, and the stop schedule asks EC2 to hibernate
    assert execution["status"] == "completed", execution["error_message"]
    assert execution["plan"]["resource"]["hibernate"] is True
    assert "configured for hibernation with an encrypted EBS root volume" in execution["plan"]["summary"]
    stop = by_action(schedules_of(scheduler, instance_id, execution["execution_id"]))["stopInstances"]
    assert json.loads(stop["Target"]["Input"]) == {"InstanceIds": [instance_id], "Hibernate": True}

    # and firing it hibernates the instance
    fire_schedule(runtime, stop["Name"])
    instance = describe(ec2, instance_id)
    assert instance["State"]["Name"] == "stopped"
    assert instance["StateReason"]["Code"] == "Client.UserInitiatedHibernate"


@pytest.mark.parametrize(
    ("step", "when"),
    [
        ("backup", "before"),
        ("backup", "after"),
        ("check_backup", "before"),
        ("act", "before"),
        ("act", "after"),
        ("check_action", "before"),
        ("verify", "before"),
        ("record", "before"),
    ],
    ids=lambda value: value,
)
def test_a_failure_in_an_acting_step_rolls_back_leaving_no_schedule_and_the_instance_running(
    api: ApiClient,
    ec2: Any,
    scheduler: Any,
    runtime: LocalRuntime,
    launch_instance: Callable[..., str],
    schedule: Callable[..., str],
    step: str,
    when: str,
) -> None:
    # Given a step that fails (before it acts, or after)
    instance_id = launch_instance("t3.large", name="dev-box")
    runtime.faults.inject(step, when=when)

    # When the schedule is executed
    execution = run(api, schedule(instance_id), auto_approve=True)

    # Then it rolled back by itself: no schedule of the execution is left and the instance runs
    assert execution["status"] == "rolled_back"
    assert execution["success"] is False
    assert "InjectedFault" in execution["error_message"]
    assert schedules_of(scheduler, instance_id, execution["execution_id"]) == {}
    assert instance_state(ec2, instance_id) == "running"
    events = [event["event_type"] for event in api.logs(execution["execution_id"])["events"]]
    assert step_events(events)[-3:] == ROLLED_BACK[-3:]


def test_manual_rollback_removes_the_schedules_and_starts_the_instance_they_stopped(
    api: ApiClient,
    ec2: Any,
    scheduler: Any,
    runtime: LocalRuntime,
    launch_instance: Callable[..., str],
    schedule: Callable[..., str],
) -> None:
    # Given a completed schedule whose stop has fired
    instance_id = launch_instance("t3.large", name="dev-box")
    execution_id = run(api, schedule(instance_id), auto_approve=True)["execution_id"]
    stop = by_action(schedules_of(scheduler, instance_id, execution_id))["stopInstances"]
    fire_schedule(runtime, stop["Name"])
    assert instance_state(ec2, instance_id) == "stopped"

    # When a rollback is asked for
    accepted = api.rollback(execution_id)
    execution = api.wait_for(execution_id, frozenset({"rolled_back", "rollback_failed"}))

    # Then the schedules are gone and the instance runs again
    assert accepted["status"] == "rolling_back"
    assert execution["status"] == "rolled_back", execution["error_message"]
    assert execution["success"] is True  # the execution itself had succeeded
    assert schedules_of(scheduler, instance_id, execution_id) == {}
    assert sorted(execution["rollback"]["deleted_schedules"]) == sorted(execution["backup"]["schedule_names"].values())
    assert instance_state(ec2, instance_id) == "running"
    with pytest.raises(ApiError) as refused:
        api.rollback(execution_id)
    assert refused.value.status_code == 409


def _refusal(api: ApiClient, register: Callable[[], str]) -> tuple[str, str]:
    """Where and why a recommendation is refused: at registration, or else when its execution validates."""
    try:
        recommendation_id = register()
    except ApiError as error:
        return f"registration {error.status_code}", str(error.body["message"])
    execution = run(api, recommendation_id, auto_approve=True)
    stage = f"validation {execution['status']} valid={execution['validation']['valid']}"
    return stage, str(execution["error_message"])


@pytest.mark.parametrize(
    ("parameters", "reason"),
    [
        ({"timezone": "Europe/Berlim"}, "timezone: 'Europe/Berlim' is not an IANA time zone name"),
        ({"weekdays": ["MON", "FRY"]}, "weekdays: 'FRY' is not a weekday: use MON, TUE, WED, THU, FRI, SAT, SUN"),
        ({"start_time": "7:30"}, "start_time: '7:30' is not a time of day: use HH:MM on a 24-hour clock"),
        ({"stop_time": "07:30"}, "start_time and stop_time are both 07:30"),
        ({"schedule_group": "nightly"}, "schedule group 'nightly' does not exist"),
    ],
    ids=["time-zone", "weekday", "time", "same-times", "group"],
)
def test_impossible_parameters_are_refused_with_what_to_fix_and_touch_nothing(
    api: ApiClient,
    ec2: Any,
    scheduler: Any,
    launch_instance: Callable[..., str],
    schedule: Callable[..., str],
    parameters: dict[str, Any],
    reason: str,
) -> None:
    instance_id = launch_instance("t3.large", name="dev-box")

    stage, message = _refusal(api, lambda: schedule(instance_id, **parameters))

    assert stage in ("registration 422", "validation failed valid=False")
    assert reason in message
    assert schedules_of(scheduler, instance_id) == {}
    assert instance_state(ec2, instance_id) == "running"


def test_an_instance_of_an_auto_scaling_group_is_refused_with_the_reason_and_touched_nothing(
    api: ApiClient, ec2: Any, scheduler: Any, runtime: LocalRuntime, schedule: Callable[..., str]
) -> None:
    # Given an instance launched by an Auto Scaling group
    autoscaling = runtime.client("autoscaling")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    ec2.create_launch_template(
        LaunchTemplateName="office-web", LaunchTemplateData={"ImageId": image, "InstanceType": "t3.large"}
    )
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="office-web",
        LaunchTemplate={"LaunchTemplateName": "office-web", "Version": "$Latest"},
        MinSize=1,
        MaxSize=1,
        DesiredCapacity=1,
        AvailabilityZones=["us-east-1a"],
    )
    group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["office-web"])["AutoScalingGroups"][0]
    instance_id = group["Instances"][0]["InstanceId"]

    execution = run(api, schedule(instance_id), auto_approve=True)

    assert execution["status"] == "failed"
    assert "belongs to Auto Scaling group 'office-web', which would replace it" in execution["error_message"]
    assert schedules_of(scheduler, instance_id) == {}
    assert instance_state(ec2, instance_id) == "running"


def test_an_instance_that_does_not_exist_is_refused(
    api: ApiClient, scheduler: Any, schedule: Callable[..., str]
) -> None:
    execution = run(api, schedule("i-0123456789abcdef0"), auto_approve=True)

    assert execution["status"] == "failed"
    assert "EC2 instance i-0123456789abcdef0 does not exist" in execution["error_message"]
    assert schedules_of(scheduler, "i-0123456789abcdef0") == {}
