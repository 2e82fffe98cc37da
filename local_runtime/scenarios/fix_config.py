"""fix_config: a CloudWatch Logs group that never expired given 30-day retention, and an instance
given the required cost-allocation tags, then a manual rollback that puts its tags back exactly."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from local_runtime.demo import Demo

ORDER = 90
TITLE = "fix_config: log retention and required cost-allocation tags"
LOG_GROUP = "payments-api-access"
REQUIRED_TAGS = {"cost-center": "cc-4217", "owner": "payments-team"}


def _retention(logs: Any) -> str:
    groups = logs.describe_log_groups(logGroupNamePrefix=LOG_GROUP)["logGroups"]
    days = next(g for g in groups if g["logGroupName"] == LOG_GROUP).get("retentionInDays")
    return "never expire" if days is None else f"{days} days"


def _tags(demo: Demo, instance_id: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in demo.instance(instance_id).get("Tags", [])}


def run(demo: Demo) -> None:
    logs = demo.runtime.client("logs")
    logs.create_log_group(logGroupName=LOG_GROUP)
    print(f"  seeded {LOG_GROUP:<20} log group, retention: {_retention(logs)}")
    web = demo.launch_instance("checkout-web", "t3.small", "no cost-center or owner tag")

    print(f"\n1. Execute: {LOG_GROUP} keeps 30 days of logs")
    execution = demo.run(
        demo.recommend("fix_config", LOG_GROUP, 22.0, {"setting": "log_retention", "retention_in_days": 30}),
        auto_approve=True,
    )
    demo.show_plan(execution)
    demo.record(
        "fix_config: log retention",
        execution,
        "completed",
        f"retention now {_retention(logs)} (was never expire)",
        _retention(logs) == "30 days",
    )

    print("\n2. Execute: checkout-web gets the required cost-allocation tags")
    before = _tags(demo, web)
    execution = demo.run(
        demo.recommend("fix_config", web, 0.0, {"setting": "tags", "tags": REQUIRED_TAGS}), auto_approve=True
    )
    tagged = _tags(demo, web)
    print(f"     savings basis: {(execution.get('plan') or {}).get('savings_basis')}")
    demo.record(
        "fix_config: required tags",
        execution,
        "completed",
        "tags now " + ", ".join(f"{k}={v}" for k, v in sorted(tagged.items())),
        all(tagged.get(k) == v for k, v in REQUIRED_TAGS.items()),
    )

    print("\n3. Manual rollback of those tags")
    demo.api.rollback(execution["execution_id"])
    execution = demo.api.wait_for(execution["execution_id"])
    after = _tags(demo, web)
    demo.record(
        "fix_config: manual rollback of tags",
        execution,
        "rolled_back",
        "tags back to " + ", ".join(f"{k}={v}" for k, v in sorted(after.items())),
        after == before,
    )
