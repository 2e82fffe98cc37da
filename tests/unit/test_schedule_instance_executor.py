"""ScheduleInstanceExecutor against emulated EC2, Auto Scaling and EventBridge Scheduler: its
parameters, what it refuses, what it plans and saves, and backup → create schedules → verify → roll
back called step by step, without a state machine."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from pydantic import ValidationError

from cost_engine.aws import AwsClients
from cost_engine.errors import ActionFailed
from cost_engine.executors.schedule_instance import (
    START_TARGET_ARN,
    STOP_TARGET_ARN,
    ScheduleBackup,
    ScheduleCreation,
    ScheduleInstanceExecutor,
    ScheduleInstanceParameters,
    cron_expression,
    next_occurrence,
    off_hours_per_week,
    parameter_errors,
    schedule_names,
    stop_weekdays,
)
from cost_engine.models import Recommendation, RecommendationType, new_execution_id
from cost_engine.pricing import price_catalog
from cost_engine.settings import Settings
from tests.unit.conftest import ACCOUNT_ID, REGION

if TYPE_CHECKING:
    from mypy_boto3_autoscaling import AutoScalingClient
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.literals import InstanceTypeType
    from mypy_boto3_scheduler import EventBridgeSchedulerClient

AMI_ID = "ami-12c6146b"  # an EBS-backed Amazon Linux image moto registers in every region
ROLE_ARN = f"arn:aws:iam::{ACCOUNT_ID}:role/cost-engine-scheduler"
OFFICE_HOURS: dict[str, Any] = {
    "timezone": "Europe/Paris",
    "weekdays": ["MON", "TUE", "WED", "THU", "FRI"],
    "start_time": "08:00",
    "stop_time": "19:00",
}
# 5 days x 11 h on: 168 - 55 = 113 h off a week.
OFFICE_OFF_HOURS_PER_WEEK = 113


def recommendation_for(instance_id: str, **parameters: Any) -> Recommendation:
    return Recommendation(
        customer_id="acme-corp",
        type=RecommendationType.SCHEDULE_INSTANCE,
        account_id=ACCOUNT_ID,
        region=REGION,
        resource_id=instance_id,
        parameters={**OFFICE_HOURS, **parameters},
        estimated_monthly_savings=42.0,
    )


def settings(scheduler_role_arn: str | None = ROLE_ARN) -> Settings:
    return Settings(
        executions_table="executions",
        audit_table="audit",
        recommendations_table="recommendations",
        limits_table="limits",
        scheduler_role_arn=scheduler_role_arn,
    )


@pytest.fixture
def ec2(aws: None) -> EC2Client:
    return boto3.client("ec2", region_name=REGION)


@pytest.fixture
def scheduler(aws: None) -> EventBridgeSchedulerClient:
    return boto3.client("scheduler", region_name=REGION)


@pytest.fixture
def autoscaling(aws: None) -> AutoScalingClient:
    return boto3.client("autoscaling", region_name=REGION)


@pytest.fixture
def executor(aws: None) -> ScheduleInstanceExecutor:
    return ScheduleInstanceExecutor(AwsClients(REGION), settings())


@pytest.fixture
def execution_id() -> str:
    return new_execution_id()


def launch(
    ec2: EC2Client, instance_type: InstanceTypeType = "t3.large", *, hibernation: bool = False, encrypted: bool = False
) -> str:
    return ec2.run_instances(
        ImageId=AMI_ID,
        InstanceType=instance_type,
        MinCount=1,
        MaxCount=1,
        HibernationOptions={"Configured": hibernation},
        BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 20, "Encrypted": encrypted}}],
    )["Instances"][0]["InstanceId"]


def state_of(ec2: EC2Client, instance_id: str) -> str:
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"]


def schedule_count(scheduler: EventBridgeSchedulerClient) -> int:
    return len(scheduler.list_schedules()["Schedules"])


# -- parameters -------------------------------------------------------------------------------------


def test_weekdays_are_accepted_in_any_case_and_order_and_kept_monday_first() -> None:
    params = ScheduleInstanceParameters.model_validate({**OFFICE_HOURS, "weekdays": ["fri", "Mon", "wed"]})

    assert params.weekdays == ["MON", "WED", "FRI"]
    assert params.schedule_group == "default"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"timezone": "Mars/Olympus_Mons"}, "timezone: 'Mars/Olympus_Mons' is not an IANA time zone name"),
        ({"timezone": "localtime"}, "timezone: 'localtime' is not an IANA time zone name"),
        ({"weekdays": ["MON", "FUNDAY"]}, "weekdays: 'FUNDAY' is not a weekday: use MON, TUE, WED, THU, FRI, SAT, SUN"),
        ({"weekdays": ["MON", "mon"]}, "weekdays: MON listed more than once"),
        ({"weekdays": []}, "weekdays: no weekday given"),
        ({"weekdays": "MON-FRI"}, "weekdays: Input should be a valid list: give it like ['MON', 'TUE'"),
        ({"start_time": "25:00"}, "start_time: '25:00' is not a time of day: use HH:MM on a 24-hour clock"),
        ({"stop_time": "7pm"}, "stop_time: '7pm' is not a time of day"),
        ({"stop_time": "08:00"}, "parameters: start_time and stop_time are both 08:00"),
        ({"schedule_group": "no spaces"}, "schedule_group: 'no spaces' is not a schedule group name"),
        ({"hibernate": True}, "hibernate: unknown parameter: the parameters are timezone, weekdays"),
    ],
    ids=lambda value: str(value)[:40],
)
def test_impossible_parameters_are_refused_with_what_to_fix(change: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValidationError) as refused:
        ScheduleInstanceParameters.model_validate({**OFFICE_HOURS, **change})

    [message] = parameter_errors(refused.value)
    assert message.startswith("invalid parameters for schedule_instance: ")
    assert expected in message


def test_a_missing_parameter_is_named_with_an_example() -> None:
    with pytest.raises(ValidationError) as refused:
        ScheduleInstanceParameters.model_validate({k: v for k, v in OFFICE_HOURS.items() if k != "timezone"})

    assert parameter_errors(refused.value) == [
        "invalid parameters for schedule_instance: timezone: missing: give it, e.g. 'Europe/Paris'"
    ]


# -- the schedule's times -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("days", "expected"),
    [
        (["MON", "TUE", "WED", "THU", "FRI"], "cron(0 19 ? * MON-FRI *)"),
        (["MON", "WED"], "cron(0 19 ? * MON,WED *)"),
        (["MON", "TUE", "THU", "FRI", "SAT"], "cron(0 19 ? * MON,TUE,THU-SAT *)"),
        (["SAT", "SUN"], "cron(0 19 ? * SAT,SUN *)"),
        (["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"], "cron(0 19 ? * MON-SAT,SUN *)"),
    ],
)
def test_cron_expressions_name_the_days_without_a_range_that_wraps(days: list[str], expected: str) -> None:
    assert cron_expression("19:00", days) == expected


def test_on_hours_past_midnight_stop_on_the_next_day() -> None:
    night_shift = ScheduleInstanceParameters.model_validate(
        {**OFFICE_HOURS, "weekdays": ["FRI", "SUN"], "start_time": "22:00", "stop_time": "06:30"}
    )

    assert stop_weekdays(night_shift) == ["MON", "SAT"]
    assert off_hours_per_week(night_shift) == 168 - 2 * 8.5


def test_the_next_occurrence_is_in_the_schedules_time_zone() -> None:
    # A Friday 18:30 UTC is 19:30 in Paris (winter): Friday's 19:00 stop has passed, Monday's is next.
    friday_evening = datetime(2026, 1, 16, 18, 30, tzinfo=UTC)

    following = next_occurrence("19:00", ["MON", "TUE", "WED", "THU", "FRI"], "Europe/Paris", friday_evening)

    assert following.isoformat() == "2026-01-19T19:00:00+01:00"


def test_schedule_names_fit_the_64_character_limit_and_carry_instance_and_execution(execution_id: str) -> None:
    names = schedule_names("i-0123456789abcdef0", execution_id)

    token = execution_id.removeprefix("exec-")
    assert names == {
        "stop": f"ce-i-0123456789abcdef0-{token}-stop",
        "start": f"ce-i-0123456789abcdef0-{token}-start",
    }
    assert max(len(name) for name in names.values()) <= 64


# -- validate ---------------------------------------------------------------------------------------


def test_a_running_instance_is_valid(ec2: EC2Client, executor: ScheduleInstanceExecutor) -> None:
    result = executor.validate(recommendation_for(launch(ec2)))

    assert result.valid
    assert result.errors == []
    assert result.warnings == []


def test_invalid_parameters_are_refused_at_validation(ec2: EC2Client, executor: ScheduleInstanceExecutor) -> None:
    result = executor.validate(recommendation_for(launch(ec2), timezone="Europe/Pariss"))

    assert not result.valid
    assert result.errors == [
        "invalid parameters for schedule_instance: timezone: 'Europe/Pariss' is not an IANA time zone name: "
        "use one such as 'Europe/Paris', 'America/New_York' or 'UTC'"
    ]


def test_an_unknown_instance_is_refused(executor: ScheduleInstanceExecutor) -> None:
    result = executor.validate(recommendation_for("i-0123456789abcdef0"))

    assert not result.valid
    assert result.errors == [f"EC2 instance i-0123456789abcdef0 does not exist in {REGION}"]


def test_a_terminated_instance_is_refused(ec2: EC2Client, executor: ScheduleInstanceExecutor) -> None:
    instance_id = launch(ec2)
    ec2.terminate_instances(InstanceIds=[instance_id])

    result = executor.validate(recommendation_for(instance_id))

    assert not result.valid
    assert result.errors == [f"instance {instance_id} is 'terminated': only running or stopped instances are scheduled"]


def test_an_instance_of_an_auto_scaling_group_is_refused_with_the_reason(
    ec2: EC2Client, autoscaling: AutoScalingClient, executor: ScheduleInstanceExecutor
) -> None:
    # Given an instance launched by an Auto Scaling group
    ec2.create_launch_template(
        LaunchTemplateName="web-template", LaunchTemplateData={"ImageId": AMI_ID, "InstanceType": "t3.large"}
    )
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="web-asg",
        LaunchTemplate={"LaunchTemplateName": "web-template", "Version": "$Latest"},
        MinSize=1,
        MaxSize=1,
        DesiredCapacity=1,
        AvailabilityZones=[f"{REGION}a"],
    )
    group = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["web-asg"])["AutoScalingGroups"][0]
    instance_id = group["Instances"][0]["InstanceId"]

    result = executor.validate(recommendation_for(instance_id))

    # Then it is refused: the group would replace the instance a schedule stopped
    assert not result.valid
    assert len(result.errors) == 1
    assert "belongs to Auto Scaling group 'web-asg', which would replace it" in result.errors[0]


def test_without_a_scheduler_role_the_schedule_is_refused(ec2: EC2Client) -> None:
    executor = ScheduleInstanceExecutor(AwsClients(REGION), settings(scheduler_role_arn=None))

    result = executor.validate(recommendation_for(launch(ec2)))

    assert not result.valid
    assert result.errors[0].startswith("no EventBridge Scheduler role is configured (SCHEDULER_ROLE_ARN)")


def test_a_schedule_group_that_does_not_exist_is_refused(ec2: EC2Client, executor: ScheduleInstanceExecutor) -> None:
    result = executor.validate(recommendation_for(launch(ec2), schedule_group="office-hours"))

    assert not result.valid
    assert result.errors == [
        f"schedule group 'office-hours' does not exist in {REGION}: create it, or leave schedule_group out "
        "to use 'default'"
    ]


def test_a_stopped_instance_is_valid_with_a_warning_that_it_will_be_started(
    ec2: EC2Client, executor: ScheduleInstanceExecutor
) -> None:
    instance_id = launch(ec2)
    ec2.stop_instances(InstanceIds=[instance_id])

    result = executor.validate(recommendation_for(instance_id))

    assert result.valid
    assert result.warnings == [
        f"instance {instance_id} is stopped now: the start schedule will run it from 08:00 on MON,TUE,WED,THU,FRI"
    ]


def test_existing_engine_schedules_of_the_instance_are_a_warning(
    ec2: EC2Client, scheduler: EventBridgeSchedulerClient, executor: ScheduleInstanceExecutor
) -> None:
    # Given an instance already scheduled by an earlier execution
    instance_id = launch(ec2)
    earlier = new_execution_id()
    recommendation = recommendation_for(instance_id)
    executor.apply(recommendation, executor.backup(recommendation, earlier))

    result = executor.validate(recommendation)

    assert result.valid
    [warning] = result.warnings
    assert warning.startswith(f"instance {instance_id} already has cost-engine schedules (default/ce-{instance_id}-")


def test_hibernation_without_an_encrypted_root_volume_falls_back_to_a_plain_stop_with_a_warning(
    ec2: EC2Client, executor: ScheduleInstanceExecutor
) -> None:
    instance_id = launch(ec2, hibernation=True, encrypted=False)

    result = executor.validate(recommendation_for(instance_id))
    plan = executor.plan(recommendation_for(instance_id), new_execution_id())

    assert result.valid
    assert result.warnings == [
        f"plain stop: the root volume of {instance_id} is not encrypted, which hibernation needs"
    ]
    assert plan.resource["hibernate"] is False


# -- plan -------------------------------------------------------------------------------------------


def test_the_plan_saves_the_hourly_price_for_every_hour_off_and_says_ebs_still_costs(
    ec2: EC2Client, executor: ScheduleInstanceExecutor, execution_id: str
) -> None:
    catalog = price_catalog()
    instance_id = launch(ec2, "t3.large")

    plan = executor.plan(recommendation_for(instance_id), execution_id)

    off_hours_per_month = OFFICE_OFF_HOURS_PER_WEEK / 168 * catalog.hours_per_month
    assert plan.estimated_monthly_savings == pytest.approx(
        catalog.ec2_hourly["t3.large"] * off_hours_per_month, abs=0.01
    )
    assert plan.savings_basis.startswith(catalog.basis)
    assert "EBS volumes still cost while it is stopped" in plan.savings_basis
    assert plan.resource["schedules"]["stop"]["expression"] == "cron(0 19 ? * MON-FRI *)"
    assert plan.resource["schedules"]["start"]["expression"] == "cron(0 8 ? * MON-FRI *)"
    assert "plain stop" in plan.summary


def test_the_plan_of_a_hibernation_ready_instance_says_it_hibernates_and_why(
    ec2: EC2Client, executor: ScheduleInstanceExecutor, execution_id: str
) -> None:
    instance_id = launch(ec2, hibernation=True, encrypted=True)

    plan = executor.plan(recommendation_for(instance_id), execution_id)

    assert plan.resource["hibernate"] is True
    assert plan.resource["schedules"]["stop"]["input"] == {"InstanceIds": [instance_id], "Hibernate": True}
    assert f"hibernate: {instance_id} is configured for hibernation with an encrypted EBS root volume" in plan.summary


def test_without_a_catalog_price_the_plan_falls_back_to_the_recommendations_estimate(
    ec2: EC2Client, executor: ScheduleInstanceExecutor, execution_id: str
) -> None:
    assert "t2.xlarge" not in price_catalog().ec2_hourly
    instance_id = launch(ec2, "t2.xlarge")

    plan = executor.plan(recommendation_for(instance_id), execution_id)

    assert plan.estimated_monthly_savings == 42.0
    assert plan.savings_basis == "no catalog price for t2.xlarge: the recommendation's own estimate"


def test_the_plan_refuses_when_a_schedule_of_its_name_belongs_to_someone_else(
    ec2: EC2Client, scheduler: EventBridgeSchedulerClient, executor: ScheduleInstanceExecutor, execution_id: str
) -> None:
    instance_id = launch(ec2)
    stop_name = schedule_names(instance_id, execution_id)["stop"]
    scheduler.create_schedule(
        Name=stop_name,
        ScheduleExpression="rate(1 day)",
        FlexibleTimeWindow={"Mode": "OFF"},
        Target={"Arn": STOP_TARGET_ARN, "RoleArn": ROLE_ARN},
    )

    with pytest.raises(ActionFailed, match=f"schedule\\(s\\) {stop_name} already exist in group 'default'"):
        executor.plan(recommendation_for(instance_id), execution_id)


# -- backup, create schedules, verify, roll back --------------------------------------------------------


@pytest.fixture
def dev_box(ec2: EC2Client) -> str:
    return launch(ec2, "t3.large")


@pytest.fixture
def scheduled(
    executor: ScheduleInstanceExecutor, dev_box: str, execution_id: str
) -> tuple[ScheduleBackup, ScheduleCreation]:
    """The dev box put on office hours by the executor: (backup, action)."""
    recommendation = recommendation_for(dev_box)
    backup = executor.backup(recommendation, execution_id)
    assert executor.backup_ready(recommendation, backup)
    return backup, executor.apply(recommendation, backup)


def test_backup_records_the_state_and_is_ready_at_once(
    executor: ScheduleInstanceExecutor, dev_box: str, execution_id: str
) -> None:
    recommendation = recommendation_for(dev_box)

    backup = executor.backup(recommendation, execution_id)

    assert backup.original_state == "running"
    assert backup.instance_type == "t3.large"
    assert backup.hibernate is False
    assert executor.backup_ready(recommendation, backup) is True


def test_apply_creates_both_schedules_in_the_instances_time_zone(
    scheduler: EventBridgeSchedulerClient,
    executor: ScheduleInstanceExecutor,
    dev_box: str,
    execution_id: str,
    scheduled: tuple[ScheduleBackup, ScheduleCreation],
) -> None:
    _, action = scheduled
    names = schedule_names(dev_box, execution_id)

    stop = scheduler.get_schedule(Name=names["stop"])
    start = scheduler.get_schedule(Name=names["start"])

    assert (stop["ScheduleExpression"], start["ScheduleExpression"]) == (
        "cron(0 19 ? * MON-FRI *)",
        "cron(0 8 ? * MON-FRI *)",
    )
    assert stop["ScheduleExpressionTimezone"] == start["ScheduleExpressionTimezone"] == "Europe/Paris"
    assert stop["FlexibleTimeWindow"] == start["FlexibleTimeWindow"] == {"Mode": "OFF"}
    assert (stop["Target"]["Arn"], start["Target"]["Arn"]) == (STOP_TARGET_ARN, START_TARGET_ARN)
    assert json.loads(stop["Target"]["Input"]) == json.loads(start["Target"]["Input"]) == {"InstanceIds": [dev_box]}
    assert stop["Target"]["RoleArn"] == start["Target"]["RoleArn"] == ROLE_ARN
    assert execution_id in stop["Description"]
    assert execution_id in start["Description"]
    assert executor.apply_done(recommendation_for(dev_box), action) is True
    verification = executor.verify(recommendation_for(dev_box), action)
    assert verification.passed, verification.failures
    assert len(verification.checks) == 3


def test_a_hibernation_ready_instance_is_stopped_with_hibernate(
    ec2: EC2Client, scheduler: EventBridgeSchedulerClient, executor: ScheduleInstanceExecutor, execution_id: str
) -> None:
    instance_id = launch(ec2, hibernation=True, encrypted=True)
    recommendation = recommendation_for(instance_id)

    executor.apply(recommendation, executor.backup(recommendation, execution_id))

    stop = scheduler.get_schedule(Name=schedule_names(instance_id, execution_id)["stop"])
    assert json.loads(stop["Target"]["Input"]) == {"InstanceIds": [instance_id], "Hibernate": True}


def test_a_repeated_apply_does_not_create_the_schedules_twice(
    scheduler: EventBridgeSchedulerClient,
    executor: ScheduleInstanceExecutor,
    dev_box: str,
    scheduled: tuple[ScheduleBackup, ScheduleCreation],
) -> None:
    backup, _ = scheduled

    again = executor.apply(recommendation_for(dev_box), backup)

    assert again.created_now == []
    assert schedule_count(scheduler) == 2


def test_apply_never_adopts_a_schedule_it_did_not_create(
    scheduler: EventBridgeSchedulerClient, executor: ScheduleInstanceExecutor, dev_box: str, execution_id: str
) -> None:
    recommendation = recommendation_for(dev_box)
    backup = executor.backup(recommendation, execution_id)
    scheduler.create_schedule(
        Name=schedule_names(dev_box, execution_id)["start"],
        ScheduleExpression="rate(1 hour)",
        FlexibleTimeWindow={"Mode": "OFF"},
        Target={"Arn": START_TARGET_ARN, "RoleArn": ROLE_ARN},
    )

    with pytest.raises(ActionFailed, match="exists and was not created by"):
        executor.apply(recommendation, backup)


def test_verify_catches_a_schedule_changed_behind_the_engines_back(
    scheduler: EventBridgeSchedulerClient,
    executor: ScheduleInstanceExecutor,
    dev_box: str,
    execution_id: str,
    scheduled: tuple[ScheduleBackup, ScheduleCreation],
) -> None:
    _, action = scheduled
    name = schedule_names(dev_box, execution_id)["stop"]
    stop = scheduler.get_schedule(Name=name)
    scheduler.update_schedule(
        Name=name,
        Description=stop["Description"],
        ScheduleExpression="cron(0 17 ? * MON-FRI *)",
        ScheduleExpressionTimezone="UTC",
        FlexibleTimeWindow={"Mode": "OFF"},
        Target=stop["Target"],
    )

    verification = executor.verify(recommendation_for(dev_box), action)

    assert not verification.passed
    [failure] = verification.failures
    assert "expression is 'cron(0 17 ? * MON-FRI *)', expected 'cron(0 19 ? * MON-FRI *)'" in failure
    assert "time zone is 'UTC', expected 'Europe/Paris'" in failure


def test_rollback_deletes_the_schedules_and_starts_a_stopped_instance(
    ec2: EC2Client,
    scheduler: EventBridgeSchedulerClient,
    executor: ScheduleInstanceExecutor,
    dev_box: str,
    scheduled: tuple[ScheduleBackup, ScheduleCreation],
) -> None:
    # Given the schedule has stopped the instance
    backup, action = scheduled
    ec2.stop_instances(InstanceIds=[dev_box])
    recommendation = recommendation_for(dev_box)

    # When it is rolled back and polled until done
    rollback = executor.rollback(recommendation, backup, action)
    polls = 1
    while not executor.rollback_done(recommendation, rollback):
        polls += 1
        assert polls < 5

    # Then no schedule is left and the instance runs
    assert sorted(rollback.deleted_schedules) == sorted(schedule_names(dev_box, backup.execution_id).values())
    assert schedule_count(scheduler) == 0
    assert state_of(ec2, dev_box) == "running"


def test_rollback_leaves_other_schedules_alone(
    ec2: EC2Client,
    scheduler: EventBridgeSchedulerClient,
    executor: ScheduleInstanceExecutor,
    dev_box: str,
    scheduled: tuple[ScheduleBackup, ScheduleCreation],
) -> None:
    # Given another execution's schedules for the same instance
    other = recommendation_for(dev_box, stop_time="21:00")
    executor.apply(other, executor.backup(other, new_execution_id()))
    backup, action = scheduled

    rollback = executor.rollback(recommendation_for(dev_box), backup, action)

    assert executor.rollback_done(recommendation_for(dev_box), rollback)
    remaining = scheduler.list_schedules()["Schedules"]
    assert len(remaining) == 2
    assert all(backup.execution_id.removeprefix("exec-") not in s["Name"] for s in remaining)


def test_rollback_before_any_backup_only_makes_sure_the_instance_runs(
    ec2: EC2Client, executor: ScheduleInstanceExecutor, dev_box: str
) -> None:
    rollback = executor.rollback(recommendation_for(dev_box), None, None)

    assert rollback.deleted_schedules == []
    assert executor.rollback_done(recommendation_for(dev_box), rollback)
    assert state_of(ec2, dev_box) == "running"


def test_measured_savings_are_those_of_the_plan(
    executor: ScheduleInstanceExecutor,
    dev_box: str,
    execution_id: str,
    scheduled: tuple[ScheduleBackup, ScheduleCreation],
) -> None:
    backup, _ = scheduled
    plan = executor.plan(recommendation_for(dev_box), execution_id)

    assert executor.expected_savings(recommendation_for(dev_box), backup) == plan.estimated_monthly_savings
