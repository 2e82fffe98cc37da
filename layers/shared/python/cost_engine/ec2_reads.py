"""One way to read one EC2 instance or EBS volume, and the tags on it.

The executors, the pre-checks and `fix_config` all ask "what is this instance / volume now?", and all
need the same answer for an id that AWS does not know: None, whether the id names nothing or is not
an id at all (a recommendation can carry either), so that each caller says "does not exist" in its
own words instead of failing the step on a Describe error. Any other refusal still fails
(or, throttled, retries) as every AWS call does (`cost_engine.aws.aws_failure`).

This module imports neither `cost_engine.ec2_instances` nor `cost_engine.prechecks`: both import it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

from cost_engine.aws import AwsClients, aws_failure, error_code
from cost_engine.errors import ActionFailed

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import InstanceTypeDef, TagTypeDef, VolumeTypeDef

# What DescribeInstances / DescribeVolumes answer for an id that names nothing or is no id at all.
# EC2 answers a volume id that is not `vol-…` with InvalidParameterValue ("Expected: 'vol-...'").
_NO_SUCH_INSTANCE = frozenset({"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"})
_NO_SUCH_VOLUME = frozenset({"InvalidVolume.NotFound", "InvalidVolumeID.Malformed", "InvalidParameterValue"})


def find_instance(
    clients: AwsClients, instance_id: str, *, action: str = "DescribeInstances"
) -> InstanceTypeDef | None:
    """The instance, or None when AWS knows no instance by that id.

    `action` is what any other failure is reported as doing (`"<action> failed: <code>: …"`), for a
    caller whose message must say what it was reading for.
    """
    try:
        reservations = clients.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    except ClientError as error:
        if error_code(error) in _NO_SUCH_INSTANCE:
            return None
        raise aws_failure(action, error) from error
    instances = [i for r in reservations for i in r.get("Instances", [])]
    return instances[0] if instances else None


def find_volume(clients: AwsClients, volume_id: str, *, action: str = "DescribeVolumes") -> VolumeTypeDef | None:
    """The volume, or None when AWS knows no volume by that id (`action` as for `find_instance`)."""
    try:
        volumes = clients.ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"]
    except ClientError as error:
        if error_code(error) in _NO_SUCH_VOLUME:
            return None
        raise aws_failure(action, error) from error
    return volumes[0] if volumes else None


def require_volume(clients: AwsClients, volume_id: str) -> VolumeTypeDef:
    """The volume, for a step that cannot go on without it: past validation, a missing one fails the step."""
    volume = find_volume(clients, volume_id)
    if volume is None:
        raise ActionFailed(f"EBS volume {volume_id} does not exist in {clients.region}")
    return volume


def tag_map(tags: Iterable[TagTypeDef]) -> dict[str, str]:
    """AWS's `[{"Key": …, "Value": …}]` tag list (EC2, RDS) as a dict of key to value."""
    return {t["Key"]: t["Value"] for t in tags}
