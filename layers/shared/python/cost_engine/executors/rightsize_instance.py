"""`rightsize_instance` for EC2: stop → change the instance type → start → status checks → verify.

Nothing is destroyed by a type change, so the backup is the record of the original type and state.
The change runs in phases (stopping, stopped, pending, running) that the check steps drive from the
real state of the instance each time they are called, so a retried or repeated call never acts
twice; rollback drives the instance the same way back to its original type and state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias

from botocore.exceptions import ClientError
from pydantic import StrictBool, StringConstraints, ValidationError

from cost_engine.aws import aws_failure, error_code
from cost_engine.business_rules import DependencyRule
from cost_engine.ec2_instances import GONE_STATES, Ec2InstanceReads
from cost_engine.ec2_reads import tag_map
from cost_engine.errors import ActionFailed
from cost_engine.executors.base import BaseExecutor, Permission, StepRecord
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
    from mypy_boto3_ec2.type_defs import InstanceTypeDef, InstanceTypeInfoTypeDef

CHANGEABLE_STATES = frozenset({"running", "stopped"})
TRANSITIONAL_STATES = frozenset({"pending", "stopping"})
# AWS answers a start it has no capacity for with these (HTTP 500, "Server." errors). They are not
# retried as transient: capacity may take hours to return, and the instance is down meanwhile, so
# the change is rolled back to the original type, which is the quickest way back into service.
CAPACITY_ERROR_CODES = frozenset(
    {"InsufficientInstanceCapacity", "InsufficientHostCapacity", "InsufficientCapacityOnHost"}
)
# A stop or start that EC2 has not finished settling: the next poll sees the real state.
NOT_YET_ERROR_CODES = frozenset({"IncorrectInstanceState", "IncorrectState"})

_INSTANCE_ARN = "arn:{partition}:ec2:{region}:{account}:instance/*"

InstanceTypeName = Annotated[
    str, StringConstraints(min_length=4, max_length=32, pattern=r"^[a-z][a-z0-9-]*\.[a-z0-9-]+$")
]


class RightsizeInstanceParameters(StrictModel):
    """Parameters of `rightsize_instance`."""

    target_instance_type: InstanceTypeName
    # Whether the OS has NVMe drivers (and mounts by UUID or label) cannot be read from the EC2 API;
    # moving a Xen instance to a type whose EBS volumes are NVMe devices needs this statement.
    nvme_drivers_installed: StrictBool = False


class InstanceTypeBackup(StepRecord):
    """The whole backup of a type change: the original type and state to return to."""

    execution_id: str
    instance_id: str
    original_type: str
    original_state: str
    target_type: str
    public_ip_before: str | None


class InstanceTypeChange(StepRecord):
    """The change asked for, and the state the instance was in when it was asked."""

    instance_id: str
    original_type: str
    original_state: str
    target_type: str
    state_before: str


class InstanceUntouched(StepRecord):
    """The rollback of an execution that recorded no backup: it changed nothing, so nothing is restored."""

    instance_id: str
    restore: Literal[False]


class InstanceTypeRestore(StepRecord):
    """The rollback that drives the instance back to its original type and state."""

    instance_id: str
    restore: Literal[True]
    original_type: str
    original_state: str


# Told apart by `restore`, as the stored record always was.
InstanceTypeRollback: TypeAlias = InstanceUntouched | InstanceTypeRestore


@register_executor
class RightsizeInstanceExecutor(
    Ec2InstanceReads,
    BaseExecutor[
        RightsizeInstanceParameters, "InstanceTypeDef", InstanceTypeBackup, InstanceTypeChange, InstanceTypeRollback
    ],
):
    recommendation_type = RecommendationType.RIGHTSIZE_INSTANCE
    watches = True
    savings_method = "the instance's cost at its old type before, against its new type after"
    flow = (
        "Validate → (dry run → report) → approval → record the original type and state → stop → "
        "poll (change the type, start, status checks) → verify → record; Catch → rollback (back "
        "to the original type and state)."
    )
    resource_name = "EC2 instance"
    risk_level = RiskLevel.MEDIUM
    # The backup is the record of the original type and state: complete once written.
    backup_waits = False
    load_balancer_targets = DependencyRule.WARN
    permissions = (
        Permission(
            (
                "ec2:DescribeInstances",
                "ec2:DescribeInstanceAttribute",
                "ec2:DescribeInstanceTypes",
                "ec2:DescribeInstanceTypeOfferings",
                "ec2:DescribeInstanceStatus",
                "ec2:DescribeAddresses",
                "autoscaling:DescribeAutoScalingInstances",
            )
        ),
        Permission(("ec2:StopInstances", "ec2:StartInstances", "ec2:ModifyInstanceAttribute"), (_INSTANCE_ARN,)),
    )

    # -- reading -------------------------------------------------------------------------------

    def _type_info(self, instance_type: str) -> InstanceTypeInfoTypeDef | None:
        """What EC2 says about an instance type, or None when EC2 does not know it."""
        try:
            found = self.clients.ec2.describe_instance_types(InstanceTypes=[instance_type])["InstanceTypes"]  # type: ignore[list-item]
        except ClientError as error:
            if error_code(error) in ("InvalidInstanceType", "InvalidParameterValue"):
                return None
            raise aws_failure("DescribeInstanceTypes", error) from error
        return found[0] if found else None

    def _offered_in(self, instance_type: str, zone: str) -> bool:
        offerings = self.clients.ec2.describe_instance_type_offerings(
            LocationType="availability-zone",
            Filters=[
                {"Name": "location", "Values": [zone]},
                {"Name": "instance-type", "Values": [instance_type]},
            ],
        )["InstanceTypeOfferings"]
        return bool(offerings)

    def _stop_protected(self, instance_id: str) -> bool:
        protection = self.clients.ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="disableApiStop")
        return bool(protection.get("DisableApiStop", {}).get("Value"))

    def _elastic_ip(self, instance_id: str) -> str | None:
        addresses = self.clients.ec2.describe_addresses(Filters=[{"Name": "instance-id", "Values": [instance_id]}])[
            "Addresses"
        ]
        return addresses[0].get("PublicIp") if addresses else None

    # -- validate and plan ---------------------------------------------------------------------

    def dry_run_probes(self, recommendation: Recommendation) -> tuple[DryRunProbe, ...]:
        instance_id = recommendation.resource_id
        try:
            target = self.parameters(recommendation).target_instance_type
        except ValidationError:
            return ()  # validate() refuses the parameters, with what to fix
        ec2 = self.clients.ec2
        return (
            DryRunProbe("ec2:StopInstances", lambda: ec2.stop_instances(InstanceIds=[instance_id], DryRun=True)),
            DryRunProbe(
                "ec2:ModifyInstanceAttribute",
                lambda: ec2.modify_instance_attribute(
                    InstanceId=instance_id, InstanceType={"Value": target}, DryRun=True
                ),
            ),
            DryRunProbe("ec2:StartInstances", lambda: ec2.start_instances(InstanceIds=[instance_id], DryRun=True)),
        )

    def find(self, recommendation: Recommendation, params: RightsizeInstanceParameters) -> InstanceTypeDef | None:
        return self._instance(recommendation.resource_id)

    def check(
        self, recommendation: Recommendation, params: RightsizeInstanceParameters, instance: InstanceTypeDef
    ) -> ValidationResult:
        instance_id = recommendation.resource_id
        target = params.target_instance_type
        errors: list[str] = []
        warnings: list[str] = []
        current = instance["InstanceType"]
        state = instance["State"]["Name"]
        if state not in CHANGEABLE_STATES:
            errors.append(f"instance {instance_id} is '{state}': only running or stopped instances are resized")
        if target == current:
            errors.append(f"instance {instance_id} is already {current}: there is nothing to change")
        for member in self.clients.autoscaling.describe_auto_scaling_instances(InstanceIds=[instance_id]).get(
            "AutoScalingInstances", []
        ):
            errors.append(
                f"instance {instance_id} belongs to Auto Scaling group '{member['AutoScalingGroupName']}', whose "
                "launch template or configuration decides its type (and which would replace a stopped member): "
                "change the type there instead"
            )
        if instance.get("InstanceLifecycle") == "spot":
            errors.append(f"instance {instance_id} is a Spot Instance, whose type cannot be changed")
        if instance.get("RootDeviceType") == "instance-store":
            errors.append(
                f"instance {instance_id} has an instance-store root device: it cannot be stopped, "
                "so its type cannot be changed"
            )
        current_info = self._type_info(current)
        if state == "running" and current_info and current_info.get("InstanceStorageSupported"):
            errors.append(
                f"instance {instance_id} ({current}) has instance-store volumes, whose data is lost when it is "
                "stopped for the change: move that data to EBS first, or stop the instance yourself once it can go"
            )
        if state == "running" and self._stop_protected(instance_id):
            errors.append(
                f"instance {instance_id} has stop protection (DisableApiStop) on: it must be stopped to change its "
                "type; turn the protection off deliberately if the downtime is agreed"
            )
        if target != current:
            target_info = self._type_info(target)
            if target_info is None:
                errors.append(f"instance type '{target}' is not known to EC2 in {recommendation.region}")
            else:
                errors += self._incompatibilities(instance, current_info, target_info, params)
                zone = instance.get("Placement", {}).get("AvailabilityZone")
                if zone and not self._offered_in(target, zone):
                    errors.append(f"instance type {target} is not offered in {zone}, where instance {instance_id} runs")
        if state == "running":
            warnings.append(
                f"instance {instance_id} is running: it is stopped for the change and started again "
                "(downtime of a few minutes)"
            )
            public_ip = instance.get("PublicIpAddress")
            if public_ip and not self._elastic_ip(instance_id):
                warnings.append(
                    f"instance {instance_id} has no Elastic IP: its public IP {public_ip} changes when it is started "
                    "again"
                )
        savings = self._monthly_savings(state, current, target)
        if savings is not None and savings < 0:
            warnings.append(f"{target} costs ${-savings:,.2f} a month more than {current}: this is an upsize")
        return ValidationResult(
            valid=not errors, errors=errors, warnings=warnings, risk_level=self.risk_level, estimated_duration=10
        )

    def _incompatibilities(
        self,
        instance: InstanceTypeDef,
        current_info: InstanceTypeInfoTypeDef | None,
        target_info: InstanceTypeInfoTypeDef,
        params: RightsizeInstanceParameters,
    ) -> list[str]:
        """Why the instance's image could not boot (or reach the network) on the target type."""
        instance_id = instance["InstanceId"]
        target = params.target_instance_type
        errors: list[str] = []
        architecture = instance.get("Architecture", "x86_64")
        supported = target_info.get("ProcessorInfo", {}).get("SupportedArchitectures", [])
        if architecture not in supported:
            errors.append(
                f"instance {instance_id} runs a {architecture} image, but {target} supports only "
                f"{', '.join(supported)}: choose a {architecture} instance type"
            )
        virtualization = instance.get("VirtualizationType", "hvm")
        virtualizations = target_info.get("SupportedVirtualizationTypes", [])
        if virtualization not in virtualizations:
            errors.append(
                f"instance {instance_id} uses {virtualization} virtualization, but {target} supports only "
                f"{', '.join(virtualizations)}"
            )
        # An instance running on a type that requires ENA necessarily has it, whatever its attribute
        # says (moto does not report the attribute; AWS does): only a move off a non-ENA type needs it set.
        current_requires = (current_info or {}).get("NetworkInfo", {}).get("EnaSupport") == "required"
        if target_info.get("NetworkInfo", {}).get("EnaSupport") == "required" and not (
            instance.get("EnaSupport") or current_requires
        ):
            errors.append(
                f"{target} requires ENA networking, but instance {instance_id} does not have ENA support enabled: "
                "install the ENA driver and set its enaSupport attribute first"
            )
        # On a type whose NvmeSupport is "required" (Nitro), EBS volumes appear as NVMe devices. An
        # instance already on such a type boots from NVMe, so its OS has the drivers. A Xen-era instance
        # (NvmeSupport "unsupported") never needed them, and whether its OS has them, and mounts by
        # UUID rather than /dev/xvd* names, cannot be read from any EC2 API: if it is wrong, the instance
        # does not boot. So that move needs the recommendation to state it (nvme_drivers_installed).
        target_nvme = target_info.get("EbsInfo", {}).get("NvmeSupport")
        current_nvme = (current_info or {}).get("EbsInfo", {}).get("NvmeSupport")
        if target_nvme == "required" and current_nvme != "required" and not params.nvme_drivers_installed:
            errors.append(
                f"{target} presents EBS volumes as NVMe devices, but {instance['InstanceType']} does not, and EC2 "
                f"cannot tell whether the OS of instance {instance_id} has NVMe drivers and mounts its volumes by "
                "UUID: check it (e.g. with AWS's NVMe/ENA check script) and set parameters.nvme_drivers_installed=true"
            )
        return errors

    @staticmethod
    def _monthly_savings(state: str, current_type: str, target_type: str) -> float | None:
        # A stopped instance is not billed for compute: its type costs nothing until it runs.
        if state != "running":
            return 0.0
        catalog = price_catalog()
        current = catalog.instance_monthly(current_type)
        target = catalog.instance_monthly(target_type)
        if current is None or target is None:
            return None
        return round(current - target, 2)

    def _savings_and_basis(
        self, recommendation: Recommendation, state: str, current_type: str, target_type: str
    ) -> tuple[float | None, str]:
        savings = self._monthly_savings(state, current_type, target_type)
        if state != "running":
            return (
                savings,
                f"the instance is stopped: no compute is billed, whatever its type ({price_catalog().basis})",
            )
        if savings is None:
            missing = [t for t in (current_type, target_type) if t not in price_catalog().ec2_hourly]
            return (
                recommendation.estimated_monthly_savings,
                f"no catalog price for {', '.join(missing)}: the recommendation's own estimate",
            )
        return savings, price_catalog().basis

    def plan(self, recommendation: Recommendation, execution_id: str) -> ExecutionPlan:
        instance_id = recommendation.resource_id
        instance = self._require_instance(instance_id)
        target = self.parameters(recommendation).target_instance_type
        current = instance["InstanceType"]
        state = instance["State"]["Name"]
        savings, basis = self._savings_and_basis(recommendation, state, current, target)
        if state == "running":
            actions = [
                f"Record the original type {current} and state {state} of {instance_id}",
                f"Stop {instance_id} and wait until it is stopped",
                f"Change its instance type from {current} to {target}",
                f"Start {instance_id} and wait until it runs and passes its status checks",
                f"Verify it is {target} and running",
            ]
            rollback_steps = [
                f"Stop {instance_id} if it runs with another type",
                f"Change its type back to {current}",
                f"Start it again and wait until it is running as {current}",
            ]
        else:
            actions = [
                f"Record the original type {current} and state {state} of {instance_id}",
                f"Change its instance type from {current} to {target} (it stays stopped)",
                f"Verify it is {target} and stopped",
            ]
            rollback_steps = [f"Change the type of {instance_id} back to {current}; it stays stopped"]
        return ExecutionPlan(
            summary=f"Change EC2 instance {instance_id} from {current} to {target} ({state})",
            actions=actions,
            backup=[
                f"No AMI: a type change destroys nothing. The original type {current} and state {state} are "
                "recorded to return to"
            ],
            rollback_plan=RollbackPlan(
                execution_id=execution_id,
                rollback_steps=rollback_steps,
                estimated_duration=10,
                risk_level=RiskLevel.MEDIUM,
                requires_approval=False,
            ),
            estimated_monthly_savings=savings,
            savings_basis=basis,
            resource={
                "instance_id": instance_id,
                "instance_type": current,
                "target_instance_type": target,
                "state": state,
                "availability_zone": instance.get("Placement", {}).get("AvailabilityZone"),
                "tags": tag_map(instance.get("Tags", [])),
            },
        )

    # -- backup --------------------------------------------------------------------------------

    def backup(self, recommendation: Recommendation, execution_id: str) -> InstanceTypeBackup:
        instance_id = recommendation.resource_id
        instance = self._require_instance(instance_id)
        state = instance["State"]["Name"]
        if state not in CHANGEABLE_STATES:
            raise ActionFailed(f"instance {instance_id} is '{state}' now: the change is not started")
        return InstanceTypeBackup(
            execution_id=execution_id,
            instance_id=instance_id,
            original_type=instance["InstanceType"],
            original_state=state,
            target_type=self.parameters(recommendation).target_instance_type,
            public_ip_before=instance.get("PublicIpAddress"),
        )

    def backup_ready(self, recommendation: Recommendation, backup: InstanceTypeBackup) -> bool:
        # The record is the whole backup: it is ready as soon as it is written.
        return True

    # -- act -----------------------------------------------------------------------------------

    def apply(self, recommendation: Recommendation, backup: InstanceTypeBackup) -> InstanceTypeChange:
        instance_id = backup.instance_id
        instance = self._require_instance(instance_id)
        state = instance["State"]["Name"]
        # Only the stop happens here; the check step takes the next phases from the real state. A
        # retried call finds the instance stopping or stopped and does not stop it again.
        if state == "running" and instance["InstanceType"] == backup.original_type:
            self._stop(instance_id)
        return InstanceTypeChange(
            instance_id=instance_id,
            original_type=backup.original_type,
            original_state=backup.original_state,
            target_type=backup.target_type,
            state_before=state,
        )

    def apply_done(self, recommendation: Recommendation, action: InstanceTypeChange) -> bool:
        """One step towards the target type (in the original state), taken from the real state."""
        instance_id = action.instance_id
        original = action.original_type
        target = action.target_type
        keep_running = action.original_state == "running"
        instance = self._require_instance(instance_id)
        state, current = instance["State"]["Name"], instance["InstanceType"]
        if state in GONE_STATES:
            raise ActionFailed(f"instance {instance_id} is {state}: it was terminated during the type change")
        if state in TRANSITIONAL_STATES:
            return False
        if current not in (original, target):
            raise ActionFailed(
                f"instance {instance_id} is now {current}, neither {original} nor {target}: "
                "its type was changed outside this execution"
            )
        if state == "running":
            if current == original or not keep_running:
                # Still (or again) running with the old type, or started although it was stopped before.
                self._stop(instance_id)
                return False
            return self._status_checks_passed(instance_id)
        # stopped
        if current == original and not self._modify_type(instance_id, target):
            return False
        if keep_running:
            self._start(instance_id, target)
            return False
        return current == target

    def _status_checks_passed(self, instance_id: str) -> bool:
        statuses = self.clients.ec2.describe_instance_status(InstanceIds=[instance_id])["InstanceStatuses"]
        if not statuses:
            return False
        system = statuses[0].get("SystemStatus", {}).get("Status")
        instance = statuses[0].get("InstanceStatus", {}).get("Status")
        if "impaired" in (system, instance):
            raise ActionFailed(
                f"instance {instance_id} fails its status checks after the type change "
                f"(system {system}, instance {instance}): it may not boot on the new type"
            )
        return system == "ok" and instance == "ok"

    def verify(self, recommendation: Recommendation, action: InstanceTypeChange) -> VerificationResult:
        checks: list[str] = []
        failures: list[str] = []
        instance_id = action.instance_id
        instance = self._require_instance(instance_id)
        current, state = instance["InstanceType"], instance["State"]["Name"]
        (checks if current == action.target_type else failures).append(
            f"instance {instance_id} is {current} (target {action.target_type})"
        )
        (checks if state == action.original_state else failures).append(
            f"instance {instance_id} is {state} (it was {action.original_state})"
        )
        if action.original_state == "running" and state == "running":
            statuses = self.clients.ec2.describe_instance_status(InstanceIds=[instance_id])["InstanceStatuses"]
            system = statuses[0].get("SystemStatus", {}).get("Status") if statuses else "unknown"
            status = statuses[0].get("InstanceStatus", {}).get("Status") if statuses else "unknown"
            (checks if system == status == "ok" else failures).append(
                f"status checks: system {system}, instance {status}"
            )
        return VerificationResult(passed=not failures, checks=checks, failures=failures)

    def guardrail_thresholds(self, recommendation: Recommendation, action: Any) -> list[MetricThreshold]:
        return list(EC2_INSTANCE_THRESHOLDS)

    def expected_savings(self, recommendation: Recommendation, backup: InstanceTypeBackup) -> float | None:
        savings, _ = self._savings_and_basis(
            recommendation, backup.original_state, backup.original_type, backup.target_type
        )
        return savings

    # -- rollback ------------------------------------------------------------------------------

    def rollback(
        self,
        recommendation: Recommendation,
        backup: InstanceTypeBackup | None,
        action: InstanceTypeChange | None,
    ) -> InstanceTypeRollback:
        instance_id = recommendation.resource_id
        if backup is None:
            # The backup step records before it could change anything: nothing was touched.
            return InstanceUntouched(instance_id=instance_id, restore=False)
        rollback = InstanceTypeRestore(
            instance_id=instance_id,
            restore=True,
            original_type=backup.original_type,
            original_state=backup.original_state,
        )
        self._drive_back(rollback)
        return rollback

    def rollback_done(self, recommendation: Recommendation, rollback: InstanceTypeRollback) -> bool:
        if isinstance(rollback, InstanceUntouched):
            return True
        return self._drive_back(rollback)

    def _drive_back(self, rollback: InstanceTypeRestore) -> bool:
        """One step back to the original type and state, taken from the real state. True once there."""
        instance_id = rollback.instance_id
        original = rollback.original_type
        keep_running = rollback.original_state == "running"
        instance = self._require_instance(instance_id)
        state, current = instance["State"]["Name"], instance["InstanceType"]
        if state in GONE_STATES:
            raise ActionFailed(f"instance {instance_id} is {state}: there is nothing left to restore")
        if state in TRANSITIONAL_STATES:
            return False
        if state == "running":
            if current == original and keep_running:
                return True
            self._stop(instance_id)
            return False
        # stopped
        if current != original and not self._modify_type(instance_id, original):
            return False
        if not keep_running:
            return current == original
        try:
            self._start(instance_id, original)
        except ActionFailed as error:
            # Never left stopped silently: say where it is and why.
            raise ActionFailed(
                f"instance {instance_id} is stopped with its original type {original} and could not be started "
                f"again ({error}): start it once the cause is gone"
            ) from error
        return False

    # -- EC2 actions ---------------------------------------------------------------------------

    def _stop(self, instance_id: str) -> None:
        try:
            self.clients.ec2.stop_instances(InstanceIds=[instance_id])
        except ClientError as error:
            if error_code(error) not in NOT_YET_ERROR_CODES:
                raise aws_failure("StopInstances", error) from error

    def _start(self, instance_id: str, instance_type: str) -> None:
        try:
            self.clients.ec2.start_instances(InstanceIds=[instance_id])
        except ClientError as error:
            code = error_code(error)
            if code in CAPACITY_ERROR_CODES:
                message = error.response.get("Error", {}).get("Message", "")
                raise ActionFailed(
                    f"StartInstances of {instance_id} as {instance_type} failed: {code}: {message}"
                ) from error
            if code not in NOT_YET_ERROR_CODES:
                raise aws_failure("StartInstances", error) from error

    def _modify_type(self, instance_id: str, instance_type: str) -> bool:
        """True once EC2 took the change; False when the instance is not settled yet (poll again)."""
        try:
            self.clients.ec2.modify_instance_attribute(InstanceId=instance_id, InstanceType={"Value": instance_type})
        except ClientError as error:
            if error_code(error) in NOT_YET_ERROR_CODES:
                return False
            raise aws_failure("ModifyInstanceAttribute", error) from error
        return True
