"""S3 lifecycle and Intelligent-Tiering rules: what AWS would refuse, and what costs a minimum duration."""

from __future__ import annotations

import itertools

from cost_engine.executors.optimize_storage.parameters import (
    ARCHIVE_ACCESS_DAYS,
    DAYS_IN_INFREQUENT_ACCESS_BEFORE_NEXT,
    DEEP_ARCHIVE_ACCESS_DAYS,
    INFREQUENT_ACCESS_CLASSES,
    INFREQUENT_ACCESS_MIN_DAYS,
    MINIMUM_STORAGE_DAYS,
    STORAGE_CLASS_ORDER,
    LifecycleTransition,
    OptimizeStorageParameters,
)


def rule_problems(params: OptimizeStorageParameters) -> list[str]:
    """What AWS would reject in the lifecycle rule and Intelligent-Tiering configuration asked for."""
    problems = _transition_problems(params.transitions, "transitions", "Days")
    problems += _transition_problems(
        params.noncurrent_version_transitions, "noncurrent_version_transitions", "NoncurrentDays"
    )
    archive = params.intelligent_tiering
    if archive is not None:
        if archive.archive_days is None and archive.deep_archive_days is None:
            problems.append("parameters.intelligent_tiering needs archive_days and/or deep_archive_days")
        low, high = ARCHIVE_ACCESS_DAYS
        if archive.archive_days is not None and not low <= archive.archive_days <= high:
            problems.append(
                f"intelligent_tiering.archive_days {archive.archive_days}: AWS allows {low} to {high} days for "
                "the Archive Access tier"
            )
        low, high = DEEP_ARCHIVE_ACCESS_DAYS
        if archive.deep_archive_days is not None and not low <= archive.deep_archive_days <= high:
            problems.append(
                f"intelligent_tiering.deep_archive_days {archive.deep_archive_days}: AWS allows {low} to {high} "
                "days for the Deep Archive Access tier"
            )
        if (
            archive.archive_days is not None
            and archive.deep_archive_days is not None
            and archive.deep_archive_days <= archive.archive_days
        ):
            problems.append(
                "intelligent_tiering.deep_archive_days must be more than archive_days: objects reach the deeper "
                "tier later"
            )
    return problems


def _transition_problems(transitions: list[LifecycleTransition], field: str, days_name: str) -> list[str]:
    problems = []
    for transition in transitions:
        if transition.storage_class in INFREQUENT_ACCESS_CLASSES and transition.days < INFREQUENT_ACCESS_MIN_DAYS:
            problems.append(
                f"{field}: {transition.storage_class} after {transition.days} days would be rejected by AWS: objects "
                f"must stay at least {INFREQUENT_ACCESS_MIN_DAYS} days in S3 before moving to STANDARD_IA or "
                f"ONEZONE_IA ({days_name} >= {INFREQUENT_ACCESS_MIN_DAYS})"
            )
    classes = [t.storage_class for t in transitions]
    duplicates = sorted({c for c in classes if classes.count(c) > 1})
    if duplicates:
        problems.append(f"{field}: one transition per storage class, but {', '.join(duplicates)} appear(s) twice")
    ordered = sorted(transitions, key=lambda t: t.days)
    for earlier, later in itertools.pairwise(ordered):
        if later.days == earlier.days or STORAGE_CLASS_ORDER.index(later.storage_class) <= STORAGE_CLASS_ORDER.index(
            earlier.storage_class
        ):
            problems.append(
                f"{field}: {earlier.storage_class} after {earlier.days} days then {later.storage_class} after "
                f"{later.days} days: S3 only moves objects to colder classes ({' → '.join(STORAGE_CLASS_ORDER)}), "
                "each at more days than the one before"
            )
        elif (
            earlier.storage_class in INFREQUENT_ACCESS_CLASSES
            and later.days - earlier.days < DAYS_IN_INFREQUENT_ACCESS_BEFORE_NEXT
        ):
            problems.append(
                f"{field}: {later.storage_class} after {later.days} days comes less than "
                f"{DAYS_IN_INFREQUENT_ACCESS_BEFORE_NEXT} days after {earlier.storage_class} (day {earlier.days}): "
                f"AWS requires objects to stay {DAYS_IN_INFREQUENT_ACCESS_BEFORE_NEXT} days in "
                f"{earlier.storage_class} first"
            )
    return problems


def minimum_duration_warnings(params: OptimizeStorageParameters) -> list[str]:
    """Transitions AWS accepts but bills for a minimum storage duration the objects will not stay."""
    warnings = []
    for field, transitions in (
        ("transitions", params.transitions),
        ("noncurrent_version_transitions", params.noncurrent_version_transitions),
    ):
        ordered = sorted(transitions, key=lambda t: t.days)
        for earlier, later in itertools.pairwise(ordered):
            minimum = MINIMUM_STORAGE_DAYS.get(earlier.storage_class)
            if minimum and later.days - earlier.days < minimum:
                warnings.append(
                    f"{field}: objects leave {earlier.storage_class} after {later.days - earlier.days} days, but "
                    f"are billed for its {minimum}-day minimum storage duration"
                )
    return warnings
