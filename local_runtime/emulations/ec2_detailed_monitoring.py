"""EC2 `MonitorInstances` and `UnmonitorInstances`, which moto 5.2.5 leaves unimplemented.

On AWS, MonitorInstances turns on detailed (1-minute) CloudWatch monitoring of an instance: the call
answers "pending" and DescribeInstances shows "enabled" a little later; UnmonitorInstances answers
"disabling", then "disabled". moto already keeps an instance's monitoring state and shows it in
DescribeInstances; here the calls set it at once and answer with the transitional state, as AWS does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from local_runtime.runtime import LocalRuntime


def install(runtime: LocalRuntime) -> None:
    patch_moto()


def patch_moto() -> None:
    """Fill in the two calls. Safe to call more than once."""
    from moto.ec2.responses.monitoring import Monitoring

    # setattr, as moto's classes are typed and their methods' signatures differ from these.
    setattr(Monitoring, "monitor_instances", _monitoring_call("enabled", "pending"))  # noqa: B010
    setattr(Monitoring, "unmonitor_instances", _monitoring_call("disabled", "disabling"))  # noqa: B010


def _monitoring_call(final_state: str, answered_state: str) -> Any:
    def change_monitoring(self: Any) -> Any:
        from moto.core.responses import ActionResult

        instance_ids: list[str] = self._get_param("InstanceIds", [])
        self.error_on_dryrun()
        # Every id is checked before any changes, so an unknown id changes nothing (as on AWS).
        instances = [self.ec2_backend.get_instance(instance_id) for instance_id in instance_ids]
        for instance in instances:
            instance.monitoring_state = final_state
        return ActionResult(
            {
                "InstanceMonitorings": [
                    {"InstanceId": instance.id, "Monitoring": {"State": answered_state}} for instance in instances
                ]
            }
        )

    return change_monitoring
