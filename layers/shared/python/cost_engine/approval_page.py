"""The approval page an emailed link opens: the plan, the risk and the deadline, and two buttons.

Plain server-rendered HTML with no script and no external resource, so it works in any mail client's
browser and the Content-Security-Policy can forbid everything else. Every value from a record or a
request is escaped: resource ids, tags and comments come from outside.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from cost_engine.models import ExecutionRecord

# Sent with every page: nothing may be loaded, framed or cached, and the link (which carries its
# signature) must not leak through the Referer header.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; color: #1d232a; }
h1 { font-size: 1.5rem; } dt { font-weight: 600; margin-top: .6rem; } dd { margin: .1rem 0 0 0; }
.risk-high { color: #a61b1b; font-weight: 700; } .risk-medium { color: #8a5300; } .risk-low { color: #1d6b2f; }
.notice { padding: .8rem 1rem; border-radius: .4rem; background: #f1f3f5; }
label { display: block; margin-top: .8rem; font-weight: 600; }
input[type=text], textarea { width: 100%; padding: .4rem; box-sizing: border-box; }
button { margin: 1rem 1rem 0 0; padding: .6rem 1.4rem; font-size: 1rem; border-radius: .4rem; border: 0; }
button.approve { background: #1d6b2f; color: #fff; } button.reject { background: #a61b1b; color: #fff; }
"""


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="robots" content="noindex, nofollow">'
        f"<title>{escape(title)} · Cost Execution Engine</title><style>{_STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1>{body}</body></html>"
    )


def _money(value: float | None) -> str:
    return f"${value:,.2f}" if value is not None else "not estimated"


def _details(record: ExecutionRecord) -> str:
    plan = record.plan
    policy = record.policy
    approval = record.approval
    risk = policy.risk_level.value if policy else "unknown"
    rows: list[tuple[str, str]] = [
        ("What will be done", escape(plan.summary if plan else record.recommendation_type.value)),
        ("Type", escape(record.recommendation_type.value)),
        ("Resource", f"<code>{escape(record.resource_id)}</code> in {escape(record.region)}"),
        ("Customer", escape(record.customer_id)),
        (
            "Risk",
            f'<span class="risk-{escape(risk)}" id="risk">{escape(risk)}</span>'
            + (f" — {escape(policy.reason)}" if policy else ""),
        ),
        (
            "Estimated savings",
            f'<span id="savings">{_money(plan.estimated_monthly_savings if plan else record.estimated_monthly_savings)}'
            "</span> per month" + (f" ({escape(plan.savings_basis)})" if plan and plan.savings_basis else ""),
        ),
    ]
    if plan and plan.one_time_cost:
        rows.append(("One-time cost", _money(plan.one_time_cost)))
    if plan:
        rows.append(("Steps", "<ol>" + "".join(f"<li>{escape(a)}</li>" for a in plan.actions) + "</ol>"))
        rows.append(("Backup", "<ul>" + "".join(f"<li>{escape(b)}</li>" for b in plan.backup) + "</ul>"))
        rows.append(
            (
                "Rollback plan",
                '<ol id="rollback">'
                + "".join(f"<li>{escape(step)}</li>" for step in plan.rollback_plan.rollback_steps)
                + "</ol>",
            )
        )
    if plan and plan.resource:
        # The resource as it was found when planned (its state, tags...): what the approval is for.
        rows.append(("As found", _facts("as-found", plan.resource)))
    if plan and plan.limits:
        # Checked again when acting, against the deployment's limits as they are then.
        rows.append(("Limits (checked again when acting)", _facts("limits", plan.limits)))
    if approval:
        rows.append(("Decide by", f'<span id="deadline">{approval.deadline:%Y-%m-%d %H:%M UTC}</span>'))
    if plan_hash := _plan_hash(record):
        # What the decision is bound to: the engine refuses to carry out any other plan.
        rows.append(("Plan", f'<code id="plan-hash">{escape(plan_hash)}</code>'))
    rows.append(("Execution", f"<code>{escape(record.execution_id)}</code>"))
    return "<dl>" + "".join(f"<dt>{label}</dt><dd>{value}</dd>" for label, value in rows) + "</dl>"


def _plan_hash(record: ExecutionRecord) -> str | None:
    return record.approval.plan_hash if record.approval else None


def review_page(record: ExecutionRecord, approval_id: str, expires: str, signature: str) -> str:
    """The page with the plan and the Approve and Reject buttons (a POST; the GET changed nothing)."""
    hidden = "".join(
        f'<input type="hidden" name="{name}" value="{escape(value)}">'
        for name, value in (("expires", expires), ("signature", signature), ("plan_hash", _plan_hash(record)))
        if value
    )
    form = (
        # A relative action: the form posts back to this very path, whatever stage prefix it has.
        f'<form method="post" action="{escape(approval_id)}">{hidden}'
        '<label for="approver">Your name or email (recorded with the decision)</label>'
        '<input type="text" id="approver" name="approver" required maxlength="128" autocomplete="email">'
        '<label for="comment">Comment (optional)</label>'
        '<textarea id="comment" name="comment" maxlength="1024" rows="3"></textarea>'
        '<button type="submit" class="approve" id="approve" name="decision" value="approve">Approve</button>'
        '<button type="submit" class="reject" id="reject" name="decision" value="reject">Reject</button>'
        "</form>"
    )
    notice = (
        '<p class="notice">Opening this page changed nothing. Approving lets the engine back up the resource, '
        "make the change, verify it and roll back by itself if anything fails. The first decision counts.</p>"
    )
    return _page("Approval needed", notice + _details(record) + form)


def outcome_page(title: str, message: str, record: ExecutionRecord | None = None) -> str:
    """A page that only informs: a decision taken, or why the link cannot be used."""
    body = f'<p class="notice" id="message">{escape(message)}</p>'
    if record is not None:
        body += (
            f"<p>Execution <code>{escape(record.execution_id)}</code> is now "
            f'<strong id="status">{escape(record.status.value)}</strong>.</p>'
        )
    return _page(title, body)


def _facts(list_id: str, facts: dict[str, Any]) -> str:
    """A plan's facts as a list: each key with its value as JSON, cut at 300 characters."""
    items = "".join(
        f"<li><code>{escape(key)}</code>: {escape(json.dumps(value, sort_keys=True, default=str)[:300])}</li>"
        for key, value in facts.items()
    )
    return f'<ul id="{list_id}">{items}</ul>'
