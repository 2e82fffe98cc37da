"""EC2 capacity shortages: AWS can refuse to start a stopped instance because it has no capacity of
the instance's type in its Availability Zone; moto always has capacity.

`no_capacity_for(instance_type=..., instance_id=..., times=...)` marks a shortage, and from then on
StartInstances of a matching stopped instance fails as on AWS: error code
`InsufficientInstanceCapacity`, HTTP status 500 (EC2 lists it among its server errors), nothing
started. `restore_capacity()` ends every shortage. Note that boto3 retries a 500 by itself, so one
StartInstances of a client can meet a shortage more than once: `times` counts calls that reached EC2.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

from werkzeug.exceptions import HTTPException

if TYPE_CHECKING:
    from local_runtime.runtime import LocalRuntime

ERROR_CODE = "InsufficientInstanceCapacity"
HTTP_STATUS = 500


@dataclass
class Shortage:
    """No capacity for the instances it matches: an unset field matches every instance."""

    instance_type: str | None
    instance_id: str | None
    times: int | None  # None: until restore_capacity()
    hits: int = 0

    def matches(self, instance_id: str, instance_type: str) -> bool:
        return (
            self.instance_type in (None, instance_type)
            and self.instance_id in (None, instance_id)
            and (self.times is None or self.hits < self.times)
        )


_shortages: list[Shortage] = []
_lock = threading.Lock()


def no_capacity_for(
    *, instance_type: str | None = None, instance_id: str | None = None, times: int | None = None
) -> Shortage:
    """From now on, starting a matching instance fails for lack of capacity (`times` starts, or until
    `restore_capacity()`). Both filters given: the instance must match both."""
    if instance_type is None and instance_id is None:
        raise ValueError("name the instance_type or the instance_id that has no capacity")
    if times is not None and times < 1:
        raise ValueError("times is at least 1 (or None: until restore_capacity())")
    shortage = Shortage(instance_type=instance_type, instance_id=instance_id, times=times)
    with _lock:
        _shortages.append(shortage)
    return shortage


def restore_capacity() -> None:
    """End every shortage."""
    with _lock:
        _shortages.clear()


def _take_shortage(instance_id: str, instance_type: str) -> Shortage | None:
    with _lock:
        for shortage in _shortages:
            if shortage.matches(instance_id, instance_type):
                shortage.hits += 1
                return shortage
    return None


class InsufficientInstanceCapacity(HTTPException):
    """EC2's answer to a start it has no capacity for, in EC2's error format."""

    code = HTTP_STATUS

    def __init__(self, instance_type: str, zone: str) -> None:
        self.message = (
            f"We currently do not have sufficient {instance_type} capacity in the Availability Zone you requested "
            f"({zone}). Our system will be working on provisioning additional capacity."
        )
        super().__init__(
            description=(
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<Response><Errors><Error><Code>{ERROR_CODE}</Code><Message>{escape(self.message)}</Message>"
                f"</Error></Errors><RequestID>{uuid.uuid4()}</RequestID></Response>"
            )
        )

    def get_headers(self, *args: Any, **kwargs: Any) -> list[tuple[str, str]]:
        return [("Content-Type", "text/xml")]


def install(runtime: LocalRuntime) -> None:
    """Patch moto's StartInstances to honour the shortages. Installing twice changes nothing."""
    # Imported here: moto reads its port from the environment the runtime sets before installing.
    from moto.ec2.models.instances import InstanceBackend

    original = InstanceBackend.start_instances
    if getattr(original, "emulates_capacity", False):
        return

    def start_instances(backend: Any, instance_ids: list[str]) -> Any:
        # Checked before anything starts: a refused StartInstances starts none of its instances.
        for instance in backend.get_multi_instances_by_id(instance_ids):
            if instance.state == "stopped" and _take_shortage(instance.id, instance.instance_type):
                raise InsufficientInstanceCapacity(instance.instance_type, instance.placement.zone)
        return original(backend, instance_ids)

    start_instances.emulates_capacity = True  # type: ignore[attr-defined]
    InstanceBackend.start_instances = start_instances  # type: ignore[method-assign,assignment]
