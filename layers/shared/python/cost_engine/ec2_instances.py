"""What every executor acting on an EC2 instance reads the same way, and the tags they all write."""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import ClientError
from pydantic import Field

from cost_engine.aws import AwsClients, aws_failure, error_code
from cost_engine.ec2_reads import find_instance
from cost_engine.errors import ActionFailed
from cost_engine.models import StepRecord
from cost_engine.prechecks import DryRunProbe

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import ImageTypeDef, InstanceTypeDef

GONE_STATES = frozenset({"shutting-down", "terminated"})
# An image in one of these states never becomes available ("missing": AWS no longer knows it).
FAILED_IMAGE_STATES = frozenset({"failed", "invalid", "deregistered", "error", "missing"})
# Tags the engine puts on what it creates, so that a retried step finds what it already made.
EXECUTION_TAG = "cost-engine:execution-id"
SOURCE_INSTANCE_TAG = "cost-engine:source-instance-id"
RESTORED_FOR_TAG = "cost-engine:restored-for-execution"
# Tags the engine (or AWS) sets are not part of the workload's configuration: copying them to a
# relaunched or replacement instance would make it look like another execution's backup or restore
# (and repeat a key the engine then sets again).
NOT_COPIED_TAG_PREFIXES = ("aws:", "cost-engine:")


def workload_tags(instance: InstanceTypeDef) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in instance.get("Tags", []) if not t["Key"].startswith(NOT_COPIED_TAG_PREFIXES)}


class LaunchConfig(StepRecord):
    """Everything needed to launch an instance like this one again (from an image of it), as the
    backups of the types that replace or relaunch an instance record it."""

    instance_type: str
    subnet_id: str | None = None
    vpc_id: str | None = None
    availability_zone: str | None = None
    security_group_ids: list[str] = Field(default_factory=list)
    key_name: str | None = None
    iam_instance_profile_arn: str | None = None
    ebs_optimized: bool = False
    detailed_monitoring: bool = False
    user_data_base64: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)


class Ec2InstanceReads:
    """Mixed into executors of EC2 instances: reading an instance, its type, its backup image."""

    clients: AwsClients

    # The pre-checks' DryRun questions most EC2 instance types ask (cost_engine.prechecks).
    def _backup_image_probe(self, instance_id: str) -> DryRunProbe:
        return DryRunProbe(
            "ec2:CreateImage",
            # Tagged as the real backup is, so the tag-on-create permission is asked too.
            lambda: self.clients.ec2.create_image(
                InstanceId=instance_id,
                Name=f"cost-engine-dry-run-{instance_id}",
                NoReboot=True,
                TagSpecifications=[{"ResourceType": "image", "Tags": [{"Key": EXECUTION_TAG, "Value": "dry-run"}]}],
                DryRun=True,
            ),
        )

    def _terminate_probe(self, instance_id: str) -> DryRunProbe:
        return DryRunProbe(
            "ec2:TerminateInstances",
            lambda: self.clients.ec2.terminate_instances(InstanceIds=[instance_id], DryRun=True),
        )

    def _instance(self, instance_id: str) -> InstanceTypeDef | None:
        return find_instance(self.clients, instance_id)

    def _require_instance(self, instance_id: str) -> InstanceTypeDef:
        instance = self._instance(instance_id)
        if instance is None:
            raise ActionFailed(f"EC2 instance {instance_id} does not exist in {self.clients.region}")
        return instance

    def _instance_store_gb(self, instance_type: str) -> int:
        info = self.clients.ec2.describe_instance_types(InstanceTypes=[instance_type])["InstanceTypes"]  # type: ignore[list-item]
        if not info or not info[0].get("InstanceStorageSupported"):
            return 0
        return int(info[0].get("InstanceStorageInfo", {}).get("TotalSizeInGB", 0)) or 1

    def _existing_backup_image(self, execution_id: str) -> str | None:
        images = self.clients.ec2.describe_images(
            Owners=["self"], Filters=[{"Name": f"tag:{EXECUTION_TAG}", "Values": [execution_id]}]
        )["Images"]
        return images[0]["ImageId"] if images else None

    def _backup_image(self, instance_id: str, execution_id: str, *, name: str, description: str) -> str:
        """The execution's image of the instance: the one a retried step already started, or a new one.
        Tagged as it is created: a retry finds it by the tag, and the IAM permission to tag is limited
        to tagging on creation."""
        image_id = self._existing_backup_image(execution_id)
        if image_id is not None:
            return image_id
        try:
            return self.clients.ec2.create_image(
                InstanceId=instance_id,
                Name=name,
                Description=description,
                NoReboot=True,
                TagSpecifications=[
                    {
                        "ResourceType": "image",
                        "Tags": [
                            {"Key": EXECUTION_TAG, "Value": execution_id},
                            {"Key": SOURCE_INSTANCE_TAG, "Value": instance_id},
                        ],
                    }
                ],
            )["ImageId"]
        except ClientError as error:
            raise aws_failure("CreateImage", error) from error

    def _image(self, image_id: str) -> ImageTypeDef | None:
        try:
            images = self.clients.ec2.describe_images(ImageIds=[image_id])["Images"]
        except ClientError as error:
            if error_code(error).startswith("InvalidAMIID"):
                return None
            raise aws_failure("DescribeImages", error) from error
        return images[0] if images else None

    def _image_state(self, image_id: str) -> str:
        image = self._image(image_id)
        return image["State"] if image else "missing"

    def _image_ready(self, image_id: str, *, label: str, then: str) -> bool:
        """Whether the image is available; ActionFailed naming it as `label` and saying what
        becomes of the execution (`then`) when it never will be."""
        state = self._image_state(image_id)
        if state in FAILED_IMAGE_STATES:
            raise ActionFailed(f"{label} {image_id} is '{state}': {then}")
        return state == "available"

    def _launch_config(self, instance: InstanceTypeDef) -> LaunchConfig:
        user_data = self.clients.ec2.describe_instance_attribute(
            InstanceId=instance["InstanceId"], Attribute="userData"
        ).get("UserData", {})
        return LaunchConfig(
            instance_type=instance["InstanceType"],
            subnet_id=instance.get("SubnetId"),
            vpc_id=instance.get("VpcId"),
            availability_zone=instance.get("Placement", {}).get("AvailabilityZone"),
            security_group_ids=[g["GroupId"] for g in instance.get("SecurityGroups", [])],
            key_name=instance.get("KeyName"),
            iam_instance_profile_arn=instance.get("IamInstanceProfile", {}).get("Arn"),
            ebs_optimized=bool(instance.get("EbsOptimized", False)),
            detailed_monitoring=instance.get("Monitoring", {}).get("State") == "enabled",
            user_data_base64=user_data.get("Value"),
            tags=workload_tags(instance),
        )
