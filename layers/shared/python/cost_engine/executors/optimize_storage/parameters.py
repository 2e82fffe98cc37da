"""The parameters of `optimize_storage`, and the storage classes and rules they may name."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, StrictInt

from cost_engine.models import StrictModel

# -- parameters -------------------------------------------------------------------------------------

# The storage classes a lifecycle rule can move objects to, warmest first: AWS only moves objects down
# this "waterfall" (S3 User Guide, "Transitioning objects using Amazon S3 Lifecycle", supported
# transitions), so in one rule a colder class must come later than a warmer one.
STORAGE_CLASS_ORDER = ("STANDARD_IA", "INTELLIGENT_TIERING", "ONEZONE_IA", "GLACIER_IR", "GLACIER", "DEEP_ARCHIVE")
StorageClass = Literal["STANDARD_IA", "INTELLIGENT_TIERING", "ONEZONE_IA", "GLACIER_IR", "GLACIER", "DEEP_ARCHIVE"]
# S3 API reference, Transition.Days: to STANDARD_IA or ONEZONE_IA only after 30 days in S3 (a rule with
# fewer days is rejected); to the other classes from day 0. The same holds for NoncurrentDays.
INFREQUENT_ACCESS_CLASSES = frozenset({"STANDARD_IA", "ONEZONE_IA"})
INFREQUENT_ACCESS_MIN_DAYS = 30
# S3 User Guide, "Constraints and considerations for transitions": an object must stay 30 days in
# STANDARD_IA or ONEZONE_IA before a rule may move it on; AWS rejects a rule whose next transition comes
# sooner ("'Days' in the Transition action for StorageClass 'GLACIER' ... must be 30 days more than ...").
DAYS_IN_INFREQUENT_ACCESS_BEFORE_NEXT = 30
# Minimum storage durations (S3 pricing): moving objects on earlier is allowed, but they are charged
# for the whole minimum, so it is only a warning.
MINIMUM_STORAGE_DAYS = {"GLACIER_IR": 90, "GLACIER": 90, "DEEP_ARCHIVE": 180}
# S3 API reference, Tiering.Days: Archive Access after 90 to 730 days without access, Deep Archive
# Access after 180 to 730.
ARCHIVE_ACCESS_DAYS = (90, 730)
DEEP_ARCHIVE_ACCESS_DAYS = (180, 730)
# Objects under 128 KiB: lifecycle does not transition them by default
# (TransitionDefaultMinimumObjectSize=all_storage_classes_128K), the IA classes bill them as 128 KiB,
# and Intelligent-Tiering never moves them out of its Frequent Access tier.
SMALL_OBJECT_BYTES = 128 * 1024
OBJECT_SAMPLE_SIZE = 1000
DEFAULT_RULE_ID = "cost-engine-storage-tiering"

_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class LifecycleTransition(StrictModel):
    days: StrictInt = Field(ge=0, le=36500)
    storage_class: StorageClass


class IntelligentTieringArchive(StrictModel):
    """An S3 Intelligent-Tiering archive configuration: after how many days without access objects in
    INTELLIGENT_TIERING move to the Archive Access and/or Deep Archive Access tiers."""

    id: str = Field(min_length=1, max_length=64, pattern=_ID)
    archive_days: StrictInt | None = None
    deep_archive_days: StrictInt | None = None


class OptimizeStorageParameters(StrictModel):
    """Parameters of `optimize_storage`. The fields of one resource kind are refused for the other.

    EBS volume: `target_volume_type` (gp3), and optionally `iops`/`throughput` above what the volume
    needs. S3 bucket: a lifecycle rule (`rule_id`, `prefix`, `transitions`,
    `noncurrent_version_transitions`) and/or `intelligent_tiering`. Expiration is deliberately not
    offered: deleted objects are not storage tiering, and no rollback could bring them back.
    """

    target_volume_type: Literal["gp3"] = "gp3"
    iops: StrictInt | None = Field(default=None, ge=3000, le=16000)
    throughput: StrictInt | None = Field(default=None, ge=125, le=1000)

    rule_id: str = Field(default=DEFAULT_RULE_ID, min_length=1, max_length=255, pattern=_ID)
    prefix: str = Field(default="", max_length=1024)
    transitions: list[LifecycleTransition] = Field(default_factory=list, max_length=6)
    noncurrent_version_transitions: list[LifecycleTransition] = Field(default_factory=list, max_length=6)
    intelligent_tiering: IntelligentTieringArchive | None = None


VOLUME_FIELDS = frozenset({"target_volume_type", "iops", "throughput"})
BUCKET_FIELDS = frozenset({"rule_id", "prefix", "transitions", "noncurrent_version_transitions", "intelligent_tiering"})

VOLUME_ID = re.compile(r"^vol-[0-9a-f]{8}(?:[0-9a-f]{9})?$")
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
