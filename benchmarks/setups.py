"""One resource and one recommendation per type, made in the emulated account as the demo scenarios
make theirs (local_runtime/scenarios/): each call makes a fresh resource, so every execution of the
bench acts on its own."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from cost_engine.models import RecommendationType
from local_runtime.runtime import ACCOUNT_ID, REGION, LocalRuntime

ZONE = f"{REGION}a"
Recommendation = dict[str, Any]


def _suffix() -> str:
    return uuid.uuid4().hex[:10]


class Account:
    """The emulated account the bench's resources are made in."""

    def __init__(self, runtime: LocalRuntime, customer_id: str) -> None:
        self.runtime = runtime
        self.customer_id = customer_id
        self.ec2 = runtime.client("ec2")
        vpc = self.ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
        self.subnet_id = self.ec2.create_subnet(VpcId=vpc, CidrBlock="10.40.1.0/24", AvailabilityZone=ZONE)["Subnet"][
            "SubnetId"
        ]
        self.security_group_id = self.ec2.create_security_group(
            GroupName="bench", Description="bench instances", VpcId=vpc
        )["GroupId"]
        self.image_id = self.ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]

    def recommendation(
        self, recommendation_type: RecommendationType, resource_id: str, parameters: dict[str, Any] | None = None
    ) -> Recommendation:
        return {
            "customer_id": self.customer_id,
            "type": recommendation_type.value,
            "account_id": ACCOUNT_ID,
            "region": REGION,
            "resource_id": resource_id,
            "parameters": parameters or {},
            "estimated_monthly_savings": 50.0,
            "source": "bench",
        }

    def instance(self, instance_type: str, **extra: Any) -> str:
        return str(
            self.ec2.run_instances(
                ImageId=self.image_id,
                InstanceType=instance_type,
                MinCount=1,
                MaxCount=1,
                SubnetId=self.subnet_id,
                SecurityGroupIds=[self.security_group_id],
                TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "team", "Value": "bench"}]}],
                **extra,
            )["Instances"][0]["InstanceId"]
        )

    def volume(self, volume_type: str, size_gb: int) -> str:
        return str(
            self.ec2.create_volume(
                AvailabilityZone=ZONE,
                Size=size_gb,
                VolumeType=volume_type,
                TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": "team", "Value": "bench"}]}],
            )["VolumeId"]
        )

    def log_group(self) -> str:
        name = f"bench-{_suffix()}"
        self.runtime.client("logs").create_log_group(logGroupName=name)
        return name

    def database(self, instance_class: str) -> str:
        identifier = f"bench-{_suffix()}"
        self.runtime.client("rds").create_db_instance(
            DBInstanceIdentifier=identifier,
            DBInstanceClass=instance_class,
            Engine="postgres",
            MasterUsername="app",
            MasterUserPassword="bench-only-password",
            AllocatedStorage=100,
        )
        return identifier


def _terminate_instance(account: Account) -> Recommendation:
    return account.recommendation(RecommendationType.TERMINATE_INSTANCE, account.instance("m5.large"))


def _delete_volume(account: Account) -> Recommendation:
    return account.recommendation(RecommendationType.DELETE_VOLUME, account.volume("gp3", 100))


def _schedule_instance(account: Account) -> Recommendation:
    instance = account.instance(
        "m5.large",
        HibernationOptions={"Configured": True},
        BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 50, "Encrypted": True}}],
    )
    office_hours = {
        "timezone": "America/New_York",
        "weekdays": ["MON", "TUE", "WED", "THU", "FRI"],
        "start_time": "08:00",
        "stop_time": "19:00",
    }
    return account.recommendation(RecommendationType.SCHEDULE_INSTANCE, instance, office_hours)


def _rightsize_instance(account: Account) -> Recommendation:
    return account.recommendation(
        RecommendationType.RIGHTSIZE_INSTANCE, account.instance("m5.2xlarge"), {"target_instance_type": "m5.large"}
    )


def _rightsize_database(account: Account) -> Recommendation:
    return account.recommendation(
        RecommendationType.RIGHTSIZE_DATABASE,
        account.database("db.m5.xlarge"),
        {"target_instance_class": "db.m5.large", "apply_immediately": True},
    )


def _migrate_to_spot(account: Account) -> Recommendation:
    return account.recommendation(
        RecommendationType.MIGRATE_TO_SPOT,
        account.instance("c5.xlarge"),
        {"instance_interruption_behavior": "terminate"},
    )


def _purchase_reserved_instances(account: Account) -> Recommendation:
    # The resource is the instance type; the runtime's cooldown is off, so one type serves every run.
    steady_usage = {
        "instance_type": "m5.large",
        "product_description": "Linux/UNIX",
        "tenancy": "default",
        "term": "1yr",
        "offering_type": "Partial Upfront",
        "instance_count": 1,
    }
    return account.recommendation(RecommendationType.PURCHASE_RESERVED_INSTANCES, "m5.large", steady_usage)


def _enable_autoscaling(account: Account) -> Recommendation:
    group = {
        "min_size": 1,
        "max_size": 4,
        "desired_capacity": 2,
        "target_tracking": {"metric": "ASGAverageCPUUtilization", "target_value": 50.0},
    }
    web_server = account.instance("t3.medium", UserData="#!/bin/bash\nnginx\n")
    return account.recommendation(RecommendationType.ENABLE_AUTOSCALING, web_server, group)


def _optimize_storage(account: Account) -> Recommendation:
    return account.recommendation(RecommendationType.OPTIMIZE_STORAGE, account.volume("gp2", 500))


def _fix_config(account: Account) -> Recommendation:
    return account.recommendation(
        RecommendationType.FIX_CONFIG, account.log_group(), {"setting": "log_retention", "retention_in_days": 30}
    )


SETUPS: dict[RecommendationType, Callable[[Account], Recommendation]] = {
    RecommendationType.TERMINATE_INSTANCE: _terminate_instance,
    RecommendationType.DELETE_VOLUME: _delete_volume,
    RecommendationType.SCHEDULE_INSTANCE: _schedule_instance,
    RecommendationType.RIGHTSIZE_INSTANCE: _rightsize_instance,
    RecommendationType.RIGHTSIZE_DATABASE: _rightsize_database,
    RecommendationType.MIGRATE_TO_SPOT: _migrate_to_spot,
    RecommendationType.PURCHASE_RESERVED_INSTANCES: _purchase_reserved_instances,
    RecommendationType.ENABLE_AUTOSCALING: _enable_autoscaling,
    RecommendationType.OPTIMIZE_STORAGE: _optimize_storage,
    RecommendationType.FIX_CONFIG: _fix_config,
}


def recommendation_for(recommendation_type: RecommendationType, account: Account) -> Recommendation:
    """A fresh resource of the type in the account, and the recommendation to act on it."""
    return SETUPS[recommendation_type](account)
