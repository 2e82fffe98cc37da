"""EBS volume modifications as AWS paces them, where moto 5.2.5 does not.

moto completes every ModifyVolume at once and accepts the next one straight away. AWS does neither:

- a modification goes `modifying` → `optimizing` → `completed`. Here each DescribeVolumesModifications
  that reports a modification moves it one state on (the first still shows `modifying`), so a poll
  loop sees every state, in order, without waiting on a clock;
- a volume can be modified again only once its last modification has completed
  (`IncorrectModificationState`) and six hours after that one started
  (`VolumeModificationRateExceeded`, "You've reached the maximum modification rate per volume limit.
  Wait at least 6 hours between modifications per EBS volume.").

Six hours cannot pass in a test: `elapse(volume_id, hours)` moves a volume's modifications back in
time, completed, as the passing of those hours would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from local_runtime.runtime import LocalRuntime

MODIFICATION_INTERVAL = timedelta(hours=6)
STATES = ("modifying", "optimizing", "completed")
PROGRESS = {"modifying": 0, "optimizing": 50, "completed": 100}
ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
# Set on the modifications this emulation paces: how many times DescribeVolumesModifications showed it.
_REPORTS = "_emulated_reports"


def install(runtime: LocalRuntime) -> None:
    _patch()


@contextmanager
def emulated() -> Iterator[None]:
    """The emulation for in-process moto (`mock_aws`), undone afterwards."""
    undo = _patch()
    try:
        yield
    finally:
        undo()


def elapse(volume_id: str, hours: float, account_id: str = ACCOUNT_ID, region: str = REGION) -> None:
    """Let `hours` pass for a volume: its modifications started that much earlier, and have completed."""
    from moto.ec2.models import ec2_backends

    volume = ec2_backends[account_id][region].volumes[volume_id]
    for modification in volume.modifications:
        modification.start_time -= timedelta(hours=hours)
        modification.end_time = (modification.end_time or modification.start_time) - timedelta(hours=hours)
        setattr(modification, _REPORTS, len(STATES))


def _state(modification: Any) -> str:
    reports = getattr(modification, _REPORTS, None)
    if reports is None:  # made before the emulation was installed: moto's own answer
        return "completed"
    return STATES[min(max(reports - 1, 0), len(STATES) - 1)]


def _patch() -> Callable[[], None]:
    """Install the emulation into moto's EBS model; returns what undoes it. Installing twice is a no-op."""
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models.elastic_block_store import EBSBackend, VolumeModification

    if getattr(EBSBackend, "_cost_engine_paced", False):
        return lambda: None
    originals = {
        (VolumeModification, "modification_state"): VolumeModification.__dict__["modification_state"],
        (VolumeModification, "progress"): VolumeModification.__dict__["progress"],
        (EBSBackend, "modify_volume"): EBSBackend.__dict__["modify_volume"],
        (EBSBackend, "describe_volumes_modifications"): EBSBackend.__dict__["describe_volumes_modifications"],
    }
    original_modify = EBSBackend.modify_volume
    original_describe = EBSBackend.describe_volumes_modifications

    def modify_volume(self: Any, volume_id: str, *args: Any, **kwargs: Any) -> Any:
        volume = self.get_volume(volume_id)
        if volume.modifications:
            last = max(volume.modifications, key=lambda m: m.start_time)
            if _state(last) != "completed":
                raise EC2ClientError(
                    "IncorrectModificationState",
                    f"Volume {volume_id} cannot be modified in modification state {_state(last).upper()}",
                )
            if last.start_time + MODIFICATION_INTERVAL > _moto_now():
                raise EC2ClientError(
                    "VolumeModificationRateExceeded",
                    "You've reached the maximum modification rate per volume limit. "
                    "Wait at least 6 hours between modifications per EBS volume.",
                )
        result = original_modify(self, volume_id, *args, **kwargs)
        modification = volume.modifications[-1]
        setattr(modification, _REPORTS, 0)
        modification.end_time = None  # AWS reports an end time once the modification has completed
        return result

    def describe_volumes_modifications(self: Any, *args: Any, **kwargs: Any) -> Any:
        modifications = original_describe(self, *args, **kwargs)
        for modification in modifications:
            reports = getattr(modification, _REPORTS, None)
            if reports is not None:
                setattr(modification, _REPORTS, reports + 1)
                if _state(modification) == "completed" and modification.end_time is None:
                    modification.end_time = _moto_now()
        return modifications

    VolumeModification.modification_state = property(_state)  # type: ignore[method-assign,assignment]
    VolumeModification.progress = property(lambda m: PROGRESS[_state(m)])  # type: ignore[method-assign,assignment]
    EBSBackend.modify_volume = modify_volume  # type: ignore[method-assign]
    EBSBackend.describe_volumes_modifications = describe_volumes_modifications  # type: ignore[method-assign]
    EBSBackend._cost_engine_paced = True  # type: ignore[attr-defined]

    def undo() -> None:
        for (owner, name), value in originals.items():
            setattr(owner, name, value)
        EBSBackend._cost_engine_paced = False  # type: ignore[attr-defined]

    return undo


def _moto_now() -> Any:
    from moto.core.utils import utcnow

    return utcnow()
