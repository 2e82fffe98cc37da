"""CloudTrail `LookupEvents` for the EBS AttachVolume and DetachVolume calls, which moto 5.2.5 lacks.

On AWS, CloudTrail's event history keeps every management event of the last 90 days, whether or not
a trail exists, and `LookupEvents` searches it by one attribute (event name, resource name, ...),
newest first, 50 at most per page. `delete_volume` reads it to know when a volume was last attached.

Here the EC2 AttachVolume and DetachVolume API calls made through moto are recorded as those events
(with their time, the volume and the instance), and `LookupEvents` answers from them. Only calls to
those two APIs are recorded, as on AWS: a volume attached by RunInstances has a RunInstances event,
not an AttachVolume one. `record_volume_event` seeds older history (e.g. "detached yesterday"), since
moto's clock is the real one. The events live on moto's CloudTrail backend, so they are reset with it.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from local_runtime.runtime import LocalRuntime

RETENTION = timedelta(days=90)
MAX_RESULTS = 50
# The lookup attributes this emulation answers; AWS has a few more (Username, AccessKeyId, ReadOnly).
LOOKUP_KEYS = frozenset({"EventId", "EventName", "EventSource", "ResourceName", "ResourceType"})
VOLUME_EVENTS = ("AttachVolume", "DetachVolume")
_EVENTS_ATTRIBUTE = "_emulated_event_history"


def install(runtime: LocalRuntime) -> None:
    patch_moto()


def patch_moto() -> None:
    """Record AttachVolume/DetachVolume and answer LookupEvents. Safe to call more than once."""
    from moto.cloudtrail.responses import CloudTrailResponse
    from moto.ec2.responses.elastic_block_store import ElasticBlockStore

    if getattr(CloudTrailResponse, "lookup_events", None) is not None:
        return  # already patched (or a later moto implements it)
    # setattr, as moto's classes are typed and have no such method to assign to.
    setattr(CloudTrailResponse, "lookup_events", _lookup_events)  # noqa: B010
    for method, event_name in (("attach_volume", "AttachVolume"), ("detach_volume", "DetachVolume")):
        setattr(ElasticBlockStore, method, _recording(getattr(ElasticBlockStore, method), event_name))


def record_volume_event(
    account_id: str,
    region: str,
    event_name: str,
    volume_id: str,
    instance_id: str,
    event_time: datetime,
) -> dict[str, Any]:
    """Put an AttachVolume/DetachVolume event in the emulated history, at any time."""
    from moto.cloudtrail.models import cloudtrail_backends

    if event_name not in VOLUME_EVENTS:
        raise ValueError(f"only {', '.join(VOLUME_EVENTS)} events are emulated")
    event_id = str(uuid.uuid4())
    detail = {
        "eventVersion": "1.09",
        "userIdentity": {"type": "IAMUser", "accountId": account_id, "principalId": "AIDAEMULATED"},
        "eventTime": event_time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": "ec2.amazonaws.com",
        "eventName": event_name,
        "awsRegion": region,
        "requestParameters": {"volumeId": volume_id, "instanceId": instance_id},
        "eventID": event_id,
        "readOnly": False,
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": account_id,
        "eventCategory": "Management",
    }
    event = {
        "EventId": event_id,
        "EventName": event_name,
        "ReadOnly": "false",
        "EventTime": event_time.astimezone(UTC),
        "EventSource": "ec2.amazonaws.com",
        "Username": "emulated-user",
        "Resources": [
            {"ResourceType": "AWS::EC2::Volume", "ResourceName": volume_id},
            {"ResourceType": "AWS::EC2::Instance", "ResourceName": instance_id},
        ],
        "CloudTrailEvent": json.dumps(detail),
    }
    _history(cloudtrail_backends[account_id][region]).append(event)
    return event


def _history(backend: Any) -> list[dict[str, Any]]:
    # Kept on moto's backend object: a moto reset re-creates its attributes, and the history with them.
    events: list[dict[str, Any]] = backend.__dict__.setdefault(_EVENTS_ATTRIBUTE, [])
    return events


def _recording(original: Any, event_name: str) -> Any:
    def call_and_record(self: Any) -> Any:
        result = original(self)  # a refused call (or a dry run) raises and, as on AWS, is not recorded
        attachment = result.result  # the call's answer names the volume and the instance
        record_volume_event(
            self.current_account,
            self.region,
            event_name,
            attachment["VolumeId"],
            attachment["InstanceId"],
            datetime.now(UTC),
        )
        return result

    return call_and_record


def _lookup_events(self: Any) -> str:
    from moto.cloudtrail.models import cloudtrail_backends
    from moto.core.exceptions import JsonRESTError

    attributes: list[dict[str, str]] = self._get_param("LookupAttributes") or []
    if len(attributes) > 1:
        raise JsonRESTError("InvalidLookupAttributesException", "You can specify only one lookup attribute.")
    for attribute in attributes:
        if attribute.get("AttributeKey") not in LOOKUP_KEYS:
            raise JsonRESTError(
                "InvalidLookupAttributesException",
                f"The local emulation answers lookups by {', '.join(sorted(LOOKUP_KEYS))} only.",
            )
    max_results = int(self._get_param("MaxResults") or MAX_RESULTS)
    if not 1 <= max_results <= MAX_RESULTS:
        raise JsonRESTError("InvalidMaxResultsException", "MaxResults must be between 1 and 50.")
    now = datetime.now(UTC)
    start = _time(self._get_param("StartTime")) or now - RETENTION
    end = _time(self._get_param("EndTime")) or now
    oldest_kept = now - RETENTION
    events = [
        event
        for event in _history(cloudtrail_backends[self.current_account][self.region])
        if max(start, oldest_kept) <= event["EventTime"] <= end and all(_matches(event, a) for a in attributes)
    ]
    events.sort(key=lambda event: event["EventTime"], reverse=True)
    offset = int(self._get_param("NextToken") or 0)
    page = events[offset : offset + max_results]
    answer: dict[str, Any] = {"Events": [{**event, "EventTime": event["EventTime"].timestamp()} for event in page]}
    if offset + max_results < len(events):
        answer["NextToken"] = str(offset + max_results)
    return json.dumps(answer)


def _time(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC)


def _matches(event: dict[str, Any], attribute: dict[str, str]) -> bool:
    key, value = attribute["AttributeKey"], attribute.get("AttributeValue")
    if key in ("ResourceName", "ResourceType"):
        return any(resource[key] == value for resource in event["Resources"])
    return bool(event.get(key) == value)
