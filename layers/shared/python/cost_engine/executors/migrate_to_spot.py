"""`migrate_to_spot` for EC2: replace an on-demand instance with a spot instance of the same configuration.

Backup is an AMI of the original with its launch configuration recorded. The spot instance is launched
from that AMI; only once it runs with passing status checks is the original stopped, and only once the
verification has passed is the original terminated (`finalize`). Until then the original is the way
back: rollback starts it again and ends the spot instance. After completion, a manual rollback relaunches
an on-demand instance from the AMI, as terminate_instance's rollback does, and ends the spot instance.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import ClientError
from pydantic import Field, StrictFloat

from cost_engine.aws import aws_failure, error_code
from cost_engine.business_rules import DependencyRule
from cost_engine.cost_scope import CostScope
from cost_engine.ec2_instances import (
    GONE_STATES,
    RESTORED_FOR_TAG,
    SOURCE_INSTANCE_TAG,
    Ec2InstanceReads,
    LaunchConfig,
    workload_tags,
)
from cost_engine.errors import ActionFailed
from cost_engine.executors.base import BaseExecutor, Permission, Polling, StepRecord
from cost_engine.executors.registry import register_executor
from cost_engine.guardrails import EC2_INSTANCE_THRESHOLDS
from cost_engine.models import (
    ExecutionPlan,
    MetricThreshold,
    Recommendation,
    RecommendationType,
    RiskLevel,
    RollbackPlan,
    StrictModel,
    ValidationResult,
    VerificationResult,
)
from cost_engine.prechecks import DryRunProbe
from cost_engine.pricing import price_catalog

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import InstanceTypeDef

MIGRATABLE_STATES = frozenset({"running", "stopped"})
LIVE_STATES = ["pending", "running", "stopping", "stopped"]
SPOT_FOR_TAG = "cost-engine:spot-for-execution"
# AWS advertises spot discounts of "up to 90%": a reported price far below that is not a real market
# price (moto answers 0.00001 USD/hour for every type), and one above on-demand is not a saving.
_MIN_SPOT_SHARE_OF_ON_DEMAND = 0.05
_MAX_SPOT_PRICE_AGE = timedelta(days=90)

_INSTANCE_ARN = "arn:{partition}:ec2:{region}:{account}:instance/*"
_IMAGE_ARN = "arn:{partition}:ec2:{region}::image/*"
_SNAPSHOT_ARN = "arn:{partition}:ec2:{region}::snapshot/*"
_VOLUME_ARN = "arn:{partition}:ec2:{region}:{account}:volume/*"
_NETWORK_INTERFACE_ARN = "arn:{partition}:ec2:{region}:{account}:network-interface/*"
_SPOT_REQUEST_ARN = "arn:{partition}:ec2:{region}:{account}:spot-instances-request/*"


InterruptionBehavior = Literal["terminate", "stop", "hibernate"]


class MigrateToSpotParameters(StrictModel):
    """Parameters of `migrate_to_spot`."""

    max_price: StrictFloat | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="USD per hour; none means the on-demand price is the cap",
    )
    instance_interruption_behavior: InterruptionBehavior = "terminate"


class SpotBackup(StepRecord):
    """The original's state and launch configuration, and the AMI a replacement is launched from."""

    execution_id: str
    instance_id: str
    original_state: str
    launch_config: LaunchConfig
    image_id: str


class SpotExpectation(StepRecord):
    """What verification compares the spot instance with: the original's configuration."""

    instance_type: str
    subnet_id: str | None
    security_group_ids: list[str]
    tags: dict[str, str]


class SpotMigration(StepRecord):
    """The spot instance launched in place of the original, which is kept until verification."""

    execution_id: str
    original_instance_id: str
    original_state: str
    spot_instance_id: str
    image_id: str
    max_price: float | None
    instance_interruption_behavior: InterruptionBehavior
    expected: SpotExpectation
    # Added by finalize, once the original is terminated.
    ended_instance_ids: list[str] | None = None


class SpotRestore(StepRecord):
    """The instance that serves again (the original, or an on-demand relaunch from the AMI), and the
    spot instances ended once it does."""

    instance_id: str
    relaunched: bool
    from_image_id: str | None = None
    replaces_instance_id: str | None = None
    target_state: str
    spot_instance_ids: list[str]


@dataclass(frozen=True)
class SpotPrice:
    """The recent spot price of a type in an AZ, or why there is no usable one."""

    hourly: float | None
    detail: str


def _tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": key, "Value": value} for key, value in tags.items()]


def _run_request(config: LaunchConfig, image_id: str, engine_tags: dict[str, str], client_token: str) -> dict[str, Any]:
    """A RunInstances request for the recorded launch configuration: the instance carries the original's
    tags and the engine's, its volumes the engine's, all tagged on create. The client token makes AWS
    answer a repeated request with the instance it already launched."""
    request: dict[str, Any] = {
        "ImageId": image_id,
        "InstanceType": config.instance_type,
        "MinCount": 1,
        "MaxCount": 1,
        "ClientToken": client_token,
        "EbsOptimized": config.ebs_optimized,
        "Monitoring": {"Enabled": config.detailed_monitoring},
        "TagSpecifications": [
            {"ResourceType": "instance", "Tags": _tag_list({**config.tags, **engine_tags})},
            {"ResourceType": "volume", "Tags": _tag_list(engine_tags)},
        ],
    }
    if config.subnet_id:
        request["SubnetId"] = config.subnet_id
    elif config.availability_zone:
        request["Placement"] = {"AvailabilityZone": config.availability_zone}
    if config.security_group_ids:
        request["SecurityGroupIds"] = config.security_group_ids
    if config.key_name:
        request["KeyName"] = config.key_name
    if config.iam_instance_profile_arn:
        request["IamInstanceProfile"] = {"Arn": config.iam_instance_profile_arn}
    if config.user_data_base64:
        request["UserData"] = base64.b64decode(config.user_data_base64).decode("utf-8", "replace")
    return request


@register_executor
class MigrateToSpotExecutor(
    Ec2InstanceReads,
    BaseExecutor[MigrateToSpotParameters, "InstanceTypeDef", SpotBackup, SpotMigration, SpotRestore],
):
    recommendation_type = RecommendationType.MIGRATE_TO_SPOT
    watches = True
    savings_method = "the on-demand instance's cost before, against its spot replacement's after"
    flow = (
        "Validate → (dry run → report) → approval → AMI backup → launch the spot instance → poll "
        "until it runs and the original is stopped → verify → record (terminates the original); "
        "Catch → rollback (start the original, or relaunch on-demand from the AMI, then end the "
        "spot instance)."
    )
    resource_name = "EC2 instance"
    risk_level = RiskLevel.HIGH
    # The AMI of the original comes first, and can take an hour for large volumes.
    polling = Polling(first_seconds=5, longest_seconds=30, budget_seconds=2 * 3600)
    # The spot instance that replaces it has a new id: the load balancer would lose its target.
    load_balancer_targets = DependencyRule.REFUSE
    requires_human_approval = True
    finalizes = True
    permissions = (
        Permission(
            (
                "ec2:DescribeInstances",
                "ec2:DescribeInstanceAttribute",
                "ec2:DescribeInstanceStatus",
                "ec2:DescribeInstanceTypes",
                "ec2:DescribeImages",
                "ec2:DescribeVolumes",
                "ec2:DescribeSpotPriceHistory",
                "autoscaling:DescribeAutoScalingInstances",
            )
        ),
        Permission(("ec2:CreateImage",), (_INSTANCE_ARN, _IMAGE_ARN, _SNAPSHOT_ARN)),
        Permission(
            ("ec2:CreateTags",),
            (_IMAGE_ARN, _SNAPSHOT_ARN, _INSTANCE_ARN, _VOLUME_ARN, _NETWORK_INTERFACE_ARN),
            conditions={"StringEquals": {"ec2:CreateAction": ["CreateImage", "RunInstances"]}},
        ),
        Permission(("ec2:StartInstances", "ec2:StopInstances", "ec2:TerminateInstances"), (_INSTANCE_ARN,)),
        # A spot launch through RunInstances also creates a spot-instances-request resource.
        Permission(
            ("ec2:RunInstances",),
            (
                _INSTANCE_ARN,
                _IMAGE_ARN,
                _VOLUME_ARN,
                _NETWORK_INTERFACE_ARN,
                "arn:{partition}:ec2:{region}:{account}:subnet/*",
                "arn:{partition}:ec2:{region}:{account}:security-group/*",
                "arn:{partition}:ec2:{region}:{account}:key-pair/*",
                _SPOT_REQUEST_ARN,
            ),
        ),
        # A persistent request (interruption behaviour stop/hibernate) would relaunch the spot instance
        # that a rollback terminates: it is cancelled first.
        Permission(("ec2:CancelSpotInstanceRequests",), (_SPOT_REQUEST_ARN,)),
        # Launching with the original's instance profile passes the profile's role to EC2.
        Permission(
            ("iam:PassRole",),
            ("arn:{partition}:iam::{account}:role/*",),
            conditions={"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
        ),
    )

    # -- reading -------------------------------------------------------------------------------

    def _tagged_instances(self, tag: str, execution_id: str) -> list[str]:
        reservations = self.clients.ec2.describe_instances(
            Filters=[
                {"Name": f"tag:{tag}", "Values": [execution_id]},
                {"Name": "instance-state-name", "Values": LIVE_STATES},
            ]
        )["Reservations"]
        return [i["InstanceId"] for r in reservations for i in r.get("Instances", [])]

    def _protections(self, instance_id: str) -> tuple[bool, bool]:
        """(termination protection, stop protection) of the instance."""
        describe = self.clients.ec2.describe_instance_attribute
        termination = describe(InstanceId=instance_id, Attribute="disableApiTermination")
        stop = describe(InstanceId=instance_id, Attribute="disableApiStop")
        return (
            bool(termination.get("DisableApiTermination", {}).get("Value")),
            bool(stop.get("DisableApiStop", {}).get("Value")),
        )

    def _root_volume_encrypted(self, instance: InstanceTypeDef) -> bool:
        root = instance.get("RootDeviceName")
        volume_ids = [
            m["Ebs"]["VolumeId"]
            for m in instance.get("BlockDeviceMappings", [])
            if "Ebs" in m and m["DeviceName"] == root
        ]
        if not volume_ids:
            return False
        volumes = self.clients.ec2.describe_volumes(VolumeIds=volume_ids)["Volumes"]
        return all(v.get("Encrypted", False) for v in volumes)

    def _spot_price(self, instance_type: str, availability_zone: str, on_demand_hourly: float) -> SpotPrice:
        """The newest spot price of the type in the AZ, if it looks like a real market price."""
        now = datetime.now(UTC)
        try:
            history = self.clients.ec2.describe_spot_price_history(
                InstanceTypes=[instance_type],  # type: ignore[list-item]
                ProductDescriptions=["Linux/UNIX", "Linux/UNIX (Amazon VPC)"],
                Filters=[{"Name": "availability-zone", "Values": [availability_zone]}],
                StartTime=now - timedelta(days=1),
            )["SpotPriceHistory"]
        except ClientError as error:
            return SpotPrice(None, f"DescribeSpotPriceHistory failed: {error_code(error)}")
        history = [h for h in history if h.get("AvailabilityZone") == availability_zone and "SpotPrice" in h]
        if not history:
            return SpotPrice(None, "the spot price history has no price for it")
        newest = max(history, key=lambda h: h["Timestamp"])
        quoted = newest["SpotPrice"]
        hourly = float(quoted)
        when = newest["Timestamp"].astimezone(UTC)
        if now - when > _MAX_SPOT_PRICE_AGE:
            return SpotPrice(
                None, f"the newest price in the spot price history ({quoted} USD/hour) dates from {when:%Y-%m-%d}"
            )
        if not on_demand_hourly * _MIN_SPOT_SHARE_OF_ON_DEMAND <= hourly <= on_demand_hourly:
            return SpotPrice(
                None,
                f"the reported {quoted} USD/hour is not a plausible spot price against {on_demand_hourly} USD/hour "
                "on demand",
            )
        return SpotPrice(
            hourly, f"{quoted} USD/hour in the EC2 spot price history of {availability_zone} at {when:%Y-%m-%d %H:%M}Z"
        )

    def _savings(
        self, recommendation: Recommendation, instance_type: str, availability_zone: str
    ) -> tuple[float | None, str]:
        """On-demand monthly price less the expected spot monthly price, and where the numbers come from."""
        catalog = price_catalog()
        estimate = recommendation.estimated_monthly_savings
        on_demand_hourly = catalog.ec2_hourly.get(instance_type)
        if on_demand_hourly is None:
            return estimate, f"no catalog price for {instance_type}: the recommendation's own estimate"
        spot = self._spot_price(instance_type, availability_zone, on_demand_hourly)
        if spot.hourly is None:
            return estimate, (
                f"no usable spot price for {instance_type} in {availability_zone} ({spot.detail}): "
                "the recommendation's own estimate"
            )
        monthly = round((on_demand_hourly - spot.hourly) * catalog.hours_per_month, 2)
        return monthly, (
            f"on-demand {on_demand_hourly} USD/hour from {catalog.basis} less spot {spot.detail}, "
            f"{catalog.hours_per_month} hours a month"
        )

    # -- validate and plan ---------------------------------------------------------------------

    def dry_run_probes(self, recommendation: Recommendation) -> tuple[DryRunProbe, ...]:
        # The backup image, and the original's termination once the spot instance is verified.
        return (self._backup_image_probe(recommendation.resource_id), self._terminate_probe(recommendation.resource_id))

    def find(self, recommendation: Recommendation, params: MigrateToSpotParameters) -> InstanceTypeDef | None:
        return self._instance(recommendation.resource_id)

    def check(
        self, recommendation: Recommendation, params: MigrateToSpotParameters, instance: InstanceTypeDef
    ) -> ValidationResult:
        errors: list[str] = []
        warnings: list[str] = []
        instance_id = recommendation.resource_id
        state = instance["State"]["Name"]
        instance_type = instance["InstanceType"]
        if state not in MIGRATABLE_STATES:
            errors.append(f"instance {instance_id} is '{state}': only running or stopped instances are migrated")
        lifecycle = instance.get("InstanceLifecycle")
        if lifecycle == "spot":
            errors.append(f"instance {instance_id} is already a spot instance: there is nothing to migrate")
        elif lifecycle:
            errors.append(f"instance {instance_id} is a '{lifecycle}' instance: only on-demand instances are migrated")
        groups = self.clients.autoscaling.describe_auto_scaling_instances(InstanceIds=[instance_id])
        for member in groups.get("AutoScalingInstances", []):
            errors.append(
                f"instance {instance_id} belongs to Auto Scaling group '{member['AutoScalingGroupName']}', "
                "which would replace it: use spot capacity in the group itself (a mixed instances policy) instead"
            )
        termination_protected, stop_protected = self._protections(instance_id)
        if termination_protected:
            errors.append(
                f"instance {instance_id} has termination protection (DisableApiTermination) on, and the original "
                "is terminated once the spot instance is verified: turn it off deliberately if it really may go"
            )
        if stop_protected:
            errors.append(
                f"instance {instance_id} has stop protection (DisableApiStop) on, and the original is stopped "
                "while the spot instance takes over: turn it off deliberately if it really may stop"
            )
        if instance.get("RootDeviceType") == "instance-store":
            errors.append(f"instance {instance_id} has an instance-store root device: no AMI backup is possible")
        elif self._instance_store_gb(instance_type):
            errors.append(
                f"instance type {instance_type} has instance-store volumes whose data is not in the AMI the spot "
                "instance is launched from, and is lost with the original: move that data to EBS first"
            )
        if params.instance_interruption_behavior == "hibernate" and not self._root_volume_encrypted(instance):
            errors.append(
                f"instance {instance_id} has an unencrypted root volume, and spot hibernation needs an encrypted "
                "one: choose instance_interruption_behavior 'stop' or 'terminate'"
            )

        availability_zone = instance.get("Placement", {}).get("AvailabilityZone", "")
        on_demand_hourly = price_catalog().ec2_hourly.get(instance_type)
        if on_demand_hourly is None:
            warnings.append(
                f"the price catalog has no price for {instance_type}: savings are the recommendation's own estimate"
            )
        elif params.max_price is not None:
            spot = self._spot_price(instance_type, availability_zone, on_demand_hourly)
            if spot.hourly is not None and params.max_price < spot.hourly:
                errors.append(
                    f"max_price {params.max_price} USD/hour is below the current spot price ({spot.detail}): "
                    "AWS would not fulfil the request; raise max_price or leave it out"
                )
        if state == "stopped":
            warnings.append(
                f"instance {instance_id} is stopped: the spot instance that replaces it will be running, and billed"
            )
        warnings.append(
            f"the spot instance is a new instance: it gets a new instance id and IP addresses, anything that "
            f"addresses {instance_id} directly must be updated, and AWS may interrupt it "
            f"({params.instance_interruption_behavior} on interruption)"
        )
        return ValidationResult(
            valid=not errors, errors=errors, warnings=warnings, risk_level=self.risk_level, estimated_duration=15
        )

    def plan(self, recommendation: Recommendation, execution_id: str) -> ExecutionPlan:
        params = self.parameters(recommendation)
        instance_id = recommendation.resource_id
        instance = self._require_instance(instance_id)
        instance_type = instance["InstanceType"]
        state = instance["State"]["Name"]
        availability_zone = instance.get("Placement", {}).get("AvailabilityZone", "")
        savings, basis = self._savings(recommendation, instance_type, availability_zone)
        cap = "the on-demand price" if params.max_price is None else f"{params.max_price} USD/hour"
        return ExecutionPlan(
            summary=(
                f"Replace on-demand EC2 instance {instance_id} ({instance_type}, {state}) with a spot instance of "
                "the same configuration"
            ),
            actions=[
                f"Create AMI 'cost-engine-{execution_id}' of {instance_id} without reboot and record its launch "
                "configuration (type, subnet, security groups, key pair, instance profile, tags, user data, "
                "EBS optimization, monitoring); data written after the AMI is taken does not reach the spot instance",
                "Wait until the AMI is available",
                f"Launch a spot instance from the AMI with that configuration (maximum price {cap}, "
                f"{params.instance_interruption_behavior} on interruption)",
                f"Wait until it runs with passing status checks, then stop {instance_id} and wait until it is stopped",
                "Verify the spot instance runs with the original's type, subnet, security groups and tags",
                f"Terminate {instance_id}",
            ],
            backup=[
                f"AMI of {instance_id} with snapshots of its EBS volumes",
                f"{instance_id} itself, stopped, until the spot instance is verified",
            ],
            rollback_plan=RollbackPlan(
                execution_id=execution_id,
                rollback_steps=[
                    f"Start {instance_id} again if it still exists; once terminated, launch an on-demand instance "
                    "from the backup AMI with the recorded configuration instead",
                    "Once it runs, terminate the spot instance this execution launched",
                ],
                estimated_duration=10,
                risk_level=RiskLevel.MEDIUM,
                requires_approval=False,
            ),
            estimated_monthly_savings=savings,
            savings_basis=basis,
            resource={
                "instance_id": instance_id,
                "instance_type": instance_type,
                "state": state,
                "availability_zone": availability_zone,
                "tags": workload_tags(instance),
                "max_price": params.max_price,
                "instance_interruption_behavior": params.instance_interruption_behavior,
            },
        )

    # -- backup --------------------------------------------------------------------------------

    def backup(self, recommendation: Recommendation, execution_id: str) -> SpotBackup:
        instance_id = recommendation.resource_id
        instance = self._require_instance(instance_id)
        original_state = instance["State"]["Name"]
        launch_config = self._launch_config(instance)
        image_id = self._backup_image(
            instance_id,
            execution_id,
            name=f"cost-engine-{execution_id}",
            description=f"Backup of {instance_id} before migrate_to_spot ({execution_id})",
        )
        return SpotBackup(
            execution_id=execution_id,
            instance_id=instance_id,
            original_state=original_state,
            launch_config=launch_config,
            image_id=image_id,
        )

    def backup_ready(self, recommendation: Recommendation, backup: SpotBackup) -> bool:
        return self._image_ready(backup.image_id, label="backup AMI", then="the instance is left untouched")

    # -- act -----------------------------------------------------------------------------------

    def apply(self, recommendation: Recommendation, backup: SpotBackup) -> SpotMigration:
        params = self.parameters(recommendation)
        instance_id = recommendation.resource_id
        execution_id = backup.execution_id
        original = self._require_instance(instance_id)
        if original["State"]["Name"] in GONE_STATES:
            raise ActionFailed(f"instance {instance_id} is {original['State']['Name']}: there is nothing to migrate")
        config = backup.launch_config
        # A retried step finds the spot instance it already launched instead of launching a second one.
        launched = self._tagged_instances(SPOT_FOR_TAG, execution_id)
        spot_id = launched[0] if launched else self._launch_spot(backup, params)
        return SpotMigration(
            execution_id=execution_id,
            original_instance_id=instance_id,
            original_state=backup.original_state,
            spot_instance_id=spot_id,
            image_id=backup.image_id,
            max_price=params.max_price,
            instance_interruption_behavior=params.instance_interruption_behavior,
            expected=SpotExpectation(
                instance_type=config.instance_type,
                subnet_id=config.subnet_id,
                security_group_ids=sorted(config.security_group_ids),
                tags=config.tags,
            ),
        )

    def _launch_spot(self, backup: SpotBackup, params: MigrateToSpotParameters) -> str:
        execution_id = backup.execution_id
        tags = {SPOT_FOR_TAG: execution_id, SOURCE_INSTANCE_TAG: backup.instance_id}
        request = _run_request(backup.launch_config, backup.image_id, tags, f"{execution_id}-spot")
        behavior = params.instance_interruption_behavior
        # Only a persistent request can stop or hibernate an interrupted instance (and resume it later).
        spot_options: dict[str, Any] = {
            "SpotInstanceType": "one-time" if behavior == "terminate" else "persistent",
            "InstanceInterruptionBehavior": behavior,
        }
        if params.max_price is not None:
            spot_options["MaxPrice"] = f"{params.max_price:f}"
        request["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": spot_options}
        if behavior == "hibernate":
            request["HibernationOptions"] = {"Configured": True}
        try:
            return str(self.clients.ec2.run_instances(**request)["Instances"][0]["InstanceId"])
        except ClientError as error:
            raise aws_failure("RunInstances (spot)", error) from error

    def _status_checks_ok(self, instance_id: str) -> bool:
        statuses = self.clients.ec2.describe_instance_status(InstanceIds=[instance_id])["InstanceStatuses"]
        if not statuses:
            return False
        checks = {
            "instance": statuses[0].get("InstanceStatus", {}).get("Status"),
            "system": statuses[0].get("SystemStatus", {}).get("Status"),
        }
        impaired = [name for name, status in checks.items() if status == "impaired"]
        if impaired:
            raise ActionFailed(f"spot instance {instance_id} fails its {' and '.join(impaired)} status checks")
        return all(status == "ok" for status in checks.values())

    def apply_done(self, recommendation: Recommendation, action: SpotMigration) -> bool:
        spot_id = action.spot_instance_id
        spot = self._instance(spot_id)
        spot_state = "gone" if spot is None else spot["State"]["Name"]
        if spot_state in ("gone", "shutting-down", "terminated", "stopping", "stopped"):
            raise ActionFailed(
                f"spot instance {spot_id} is {spot_state} before it was verified (interrupted, or no spot "
                "capacity): the original is kept"
            )
        if spot_state != "running" or not self._status_checks_ok(spot_id):
            return False
        # The spot instance serves: only now is the original stopped (kept until verification).
        original_id = action.original_instance_id
        original = self._instance(original_id)
        original_state = "gone" if original is None else original["State"]["Name"]
        if original_state in ("gone", "shutting-down", "terminated"):
            raise ActionFailed(
                f"the original instance {original_id} is {original_state}: it was ended outside the engine"
            )
        if original_state == "running":
            self._stop(original_id)
        return original_state == "stopped"

    def verify(self, recommendation: Recommendation, action: SpotMigration) -> VerificationResult:
        checks: list[str] = []
        failures: list[str] = []

        def check(passed: bool, what: str) -> None:
            (checks if passed else failures).append(what)

        spot_id = action.spot_instance_id
        expected = action.expected
        spot = self._instance(spot_id)
        if spot is None:
            failures.append(f"spot instance {spot_id} does not exist")
        else:
            state = spot["State"]["Name"]
            check(state == "running", f"spot instance {spot_id} is {state}")
            lifecycle = spot.get("InstanceLifecycle", "on-demand")
            check(lifecycle == "spot", f"{spot_id} is a {lifecycle} instance")
            check(spot["InstanceType"] == expected.instance_type, f"{spot_id} is a {spot['InstanceType']}")
            check(spot.get("SubnetId") == expected.subnet_id, f"{spot_id} is in subnet {spot.get('SubnetId')}")
            groups = sorted(g["GroupId"] for g in spot.get("SecurityGroups", []))
            check(groups == expected.security_group_ids, f"{spot_id} has security groups {', '.join(groups)}")
            tags = workload_tags(spot)
            missing = {k: v for k, v in expected.tags.items() if tags.get(k) != v}
            check(not missing, f"{spot_id} carries the original's tags" + (f" except {missing}" if missing else ""))
        original = self._instance(action.original_instance_id)
        original_state = "gone" if original is None else original["State"]["Name"]
        check(original_state == "stopped", f"the original {action.original_instance_id} is {original_state}")
        return VerificationResult(passed=not failures, checks=checks, failures=failures)

    def finalize(self, recommendation: Recommendation, action: SpotMigration) -> SpotMigration:
        """The spot instance is verified: the original, kept stopped until now, is terminated."""
        original_id = action.original_instance_id
        original = self._instance(original_id)
        if original is not None and original["State"]["Name"] not in GONE_STATES:
            try:
                self.clients.ec2.terminate_instances(InstanceIds=[original_id])
            except ClientError as error:
                raise aws_failure("TerminateInstances", error) from error
        return action.model_copy(update={"ended_instance_ids": [original_id]})

    def cost_scope(self, recommendation: Recommendation, action: SpotMigration | None) -> CostScope:
        # The replacement is another instance: the saving is both instances' cost, before and after.
        replacement = (action.spot_instance_id,) if action is not None else ()
        return CostScope(self.savings_method, self.billing_service, (recommendation.resource_id, *replacement))

    def guardrail_thresholds(self, recommendation: Recommendation, action: SpotMigration) -> list[MetricThreshold]:
        return list(EC2_INSTANCE_THRESHOLDS)

    def guardrail_dimensions(
        self, recommendation: Recommendation, action: SpotMigration, namespace: str
    ) -> dict[str, str]:
        # The workload runs on the spot instance now: that is the one to watch.
        if namespace == "AWS/EC2":
            return {"InstanceId": action.spot_instance_id}
        return super().guardrail_dimensions(recommendation, action, namespace)

    def expected_savings(self, recommendation: Recommendation, backup: SpotBackup) -> float | None:
        config = backup.launch_config
        savings, _ = self._savings(recommendation, config.instance_type, config.availability_zone or "")
        return savings

    # -- rollback ------------------------------------------------------------------------------

    def rollback(
        self,
        recommendation: Recommendation,
        backup: SpotBackup | None,
        action: SpotMigration | None,
    ) -> SpotRestore:
        instance_id = recommendation.resource_id
        recorded = backup if backup is not None else action
        execution_id = None if recorded is None else recorded.execution_id
        # The spot instance may have been launched by a step that crashed before recording it: look for
        # it by its tag too.
        spot_ids = [action.spot_instance_id] if action is not None else []
        if execution_id:
            spot_ids += [i for i in self._tagged_instances(SPOT_FOR_TAG, execution_id) if i not in spot_ids]

        instance = self._instance(instance_id)
        current = None if instance is None else instance["State"]["Name"]
        # Without a backup nothing was changed yet: the state to return to is the one it is in.
        target = backup.original_state if backup else (current if current in MIGRATABLE_STATES else "running")
        if current is not None and current not in GONE_STATES:
            # The original was kept: it takes over again (started by rollback_done if still stopping).
            if target == "running" and current == "stopped":
                self._start(instance_id)
            return SpotRestore(
                instance_id=instance_id, relaunched=False, target_state=target, spot_instance_ids=spot_ids
            )
        if backup is None:
            raise ActionFailed(f"instance {instance_id} is gone and no backup AMI was recorded: nothing to restore")
        relaunched = self._tagged_instances(RESTORED_FOR_TAG, backup.execution_id)
        return SpotRestore(
            instance_id=relaunched[0] if relaunched else self._relaunch_on_demand(backup),
            relaunched=True,
            from_image_id=backup.image_id,
            replaces_instance_id=instance_id,
            target_state=target,
            spot_instance_ids=spot_ids,
        )

    def _relaunch_on_demand(self, backup: SpotBackup) -> str:
        execution_id = backup.execution_id
        tags = {RESTORED_FOR_TAG: execution_id, SOURCE_INSTANCE_TAG: backup.instance_id}
        request = _run_request(backup.launch_config, backup.image_id, tags, f"{execution_id}-restore")
        try:
            return str(self.clients.ec2.run_instances(**request)["Instances"][0]["InstanceId"])
        except ClientError as error:
            raise aws_failure("RunInstances (on-demand relaunch)", error) from error

    def _start(self, instance_id: str) -> None:
        try:
            self.clients.ec2.start_instances(InstanceIds=[instance_id])
        except ClientError as error:
            raise aws_failure("StartInstances", error) from error

    def _stop(self, instance_id: str) -> None:
        try:
            self.clients.ec2.stop_instances(InstanceIds=[instance_id])
        except ClientError as error:
            raise aws_failure("StopInstances", error) from error

    def _end_spot_instance(self, spot: InstanceTypeDef) -> None:
        try:
            # A persistent request would launch a new instance in place of the terminated one.
            if spot.get("SpotInstanceRequestId"):
                self.clients.ec2.cancel_spot_instance_requests(SpotInstanceRequestIds=[spot["SpotInstanceRequestId"]])
            self.clients.ec2.terminate_instances(InstanceIds=[spot["InstanceId"]])
        except ClientError as error:
            raise aws_failure("TerminateInstances (spot)", error) from error

    def rollback_done(self, recommendation: Recommendation, rollback: SpotRestore) -> bool:
        instance_id = rollback.instance_id
        instance = self._require_instance(instance_id)
        state = instance["State"]["Name"]
        target = rollback.target_state
        if state in GONE_STATES:
            raise ActionFailed(f"restored instance {instance_id} is {state}")
        if state != target:
            if target == "running" and state == "stopped":
                self._start(instance_id)
            elif target == "stopped" and state == "running":
                self._stop(instance_id)
            return False
        # The restored instance is back: only now is the spot instance let go.
        ending = False
        for spot_id in rollback.spot_instance_ids:
            spot = self._instance(spot_id)
            if spot is None or spot["State"]["Name"] == "terminated":
                continue
            ending = True
            if spot["State"]["Name"] != "shutting-down":
                self._end_spot_instance(spot)
        return not ending
