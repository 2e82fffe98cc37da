"""Signed approval links and the approval page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from cost_engine.approval_links import ApprovalLinks, LinkCheck, SecretKey, new_approval_id
from cost_engine.approval_page import PAGE_HEADERS, outcome_page, review_page
from cost_engine.models import (
    ApprovalState,
    ExecutionPlan,
    ExecutionRecord,
    ExecutionStatus,
    PolicyDecision,
    RecommendationType,
    RiskLevel,
    RollbackPlan,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
KEY = "k" * 48


def links(key: str = KEY) -> ApprovalLinks:
    return ApprovalLinks(SecretKey(lambda: key), "https://api.example.com/prod/")


def parts(link: str) -> tuple[str, str, str]:
    url = urlsplit(link)
    query = parse_qs(url.query)
    return url.path.rsplit("/", 1)[1], query["expires"][0], query["signature"][0]


def test_a_link_names_the_approval_and_carries_a_signed_expiry() -> None:
    approval_id = new_approval_id()
    link = links().link(approval_id, NOW + timedelta(hours=24))
    assert link.startswith(f"https://api.example.com/prod/approvals/{approval_id}?expires=")
    got_id, expires, signature = parts(link)
    assert got_id == approval_id
    assert int(expires) == int((NOW + timedelta(hours=24)).timestamp())
    assert links().check(approval_id, expires, signature, now=NOW) == LinkCheck.VALID


def test_approval_ids_are_long_random_and_url_safe() -> None:
    ids = {new_approval_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 32 and i.replace("-", "").replace("_", "").isalnum() for i in ids)


def test_a_changed_signature_expiry_or_id_is_tampering() -> None:
    approval_id = new_approval_id()
    _, expires, signature = parts(links().link(approval_id, NOW + timedelta(hours=1)))
    check = links().check
    assert (
        check(approval_id, expires, signature[:-1] + ("A" if signature[-1] != "A" else "B"), now=NOW)
        == LinkCheck.TAMPERED
    )
    assert check(approval_id, str(int(expires) + 3600), signature, now=NOW) == LinkCheck.TAMPERED
    assert check(new_approval_id(), expires, signature, now=NOW) == LinkCheck.TAMPERED
    assert check(approval_id, None, signature, now=NOW) == LinkCheck.TAMPERED
    assert check(approval_id, expires, None, now=NOW) == LinkCheck.TAMPERED
    assert check(approval_id, "-1", signature, now=NOW) == LinkCheck.TAMPERED
    assert check(approval_id, "9" * 40, signature, now=NOW) == LinkCheck.TAMPERED
    assert check(approval_id, expires, "ü" * 43, now=NOW) == LinkCheck.TAMPERED


def test_a_link_signed_with_another_key_is_tampering() -> None:
    approval_id = new_approval_id()
    _, expires, signature = parts(links("o" * 48).link(approval_id, NOW + timedelta(hours=1)))
    assert links().check(approval_id, expires, signature, now=NOW) == LinkCheck.TAMPERED


def test_a_genuine_link_past_its_expiry_is_expired() -> None:
    approval_id = new_approval_id()
    _, expires, signature = parts(links().link(approval_id, NOW + timedelta(hours=1)))
    assert links().check(approval_id, expires, signature, now=NOW + timedelta(hours=1)) == LinkCheck.EXPIRED


def test_the_key_is_read_once_and_a_short_key_is_refused() -> None:
    reads: list[int] = []

    def load() -> str:
        reads.append(1)
        return KEY

    key = SecretKey(load)
    signer = ApprovalLinks(key, None)
    signer.signature("a", 1)
    signer.signature("b", 2)
    assert len(reads) == 1
    assert signer.link("a", NOW).startswith("/approvals/a?")
    with pytest.raises(RuntimeError, match="shorter than 32"):
        SecretKey(lambda: "short").get()


def record(resource_id: str = "i-0abc", summary: str = "Terminate EC2 instance i-0abc") -> ExecutionRecord:
    return ExecutionRecord(
        execution_id="exec-" + "0" * 32,
        recommendation_id="rec-1",
        customer_id="acme",
        recommendation_type=RecommendationType.TERMINATE_INSTANCE,
        resource_id=resource_id,
        region="us-east-1",
        status=ExecutionStatus.AWAITING_APPROVAL,
        plan=ExecutionPlan(
            summary=summary,
            actions=["Create an AMI", "Terminate the instance"],
            backup=["An AMI of the instance"],
            rollback_plan=RollbackPlan(
                execution_id="exec-1",
                rollback_steps=["Relaunch from the AMI"],
                estimated_duration=10,
                risk_level=RiskLevel.MEDIUM,
            ),
            estimated_monthly_savings=70.08,
            savings_basis="on-demand list price",
        ),
        policy=PolicyDecision(risk_level=RiskLevel.HIGH, auto_approve=False, reason="terminate cannot be undone"),
        approval=ApprovalState(requested_at=NOW, deadline=NOW + timedelta(hours=24)),
    )


def test_the_review_page_shows_plan_risk_rollback_savings_and_deadline_with_two_post_buttons() -> None:
    page = review_page(record(), "abc_-123", "1795000000", "sig")
    for expected in (
        "Terminate EC2 instance i-0abc",
        '<span class="risk-high" id="risk">high</span>',
        "terminate cannot be undone",
        "Relaunch from the AMI",
        '<span id="savings">$70.08</span>',
        '<span id="deadline">2026-11-28 12:00 UTC</span>',
        '<form method="post" action="abc_-123">',
        '<input type="hidden" name="expires" value="1795000000">',
        '<input type="hidden" name="signature" value="sig">',
        'id="approve" name="decision" value="approve"',
        'id="reject" name="decision" value="reject"',
    ):
        assert expected in page
    assert "<script" not in page


def test_values_from_outside_are_escaped_on_the_page() -> None:
    attack = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
    page = review_page(record(summary=attack), "id", '"><b>', "sig")
    assert "<script>alert(1)" not in page
    assert "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert '"><b>' not in page
    assert "<script" not in outcome_page("x", attack)


def test_pages_forbid_scripts_framing_caching_and_referrers() -> None:
    assert "default-src 'none'" in PAGE_HEADERS["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in PAGE_HEADERS["Content-Security-Policy"]
    assert PAGE_HEADERS["Referrer-Policy"] == "no-referrer"
    assert PAGE_HEADERS["Cache-Control"] == "no-store"
