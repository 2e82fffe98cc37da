"""Signed approval links: what an approver receives by email instead of the task token.

A link names an approval by an unguessable id and carries its expiry, signed with HMAC-SHA256 under a
key kept in Secrets Manager. The server looks the approval up by its id; the signature proves the
link was issued by the engine and that its expiry was not changed. The Step Functions task token
stays in the execution record and never appears in a link, a message or a log.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from urllib.parse import quote, urlencode

from cost_engine.topology import APPROVAL_PAGE_PATH


class LinkCheck(StrEnum):
    VALID = "valid"
    TAMPERED = "tampered"
    EXPIRED = "expired"


def new_approval_id() -> str:
    """192 random bits, URL-safe: guessing one is not a way in."""
    return secrets.token_urlsafe(24)


class SecretKey:
    """The signing key, read once per process (a Lambda container) from where `load` finds it."""

    def __init__(self, load: Callable[[], str]) -> None:
        self._load = load
        self._value: bytes | None = None
        self._lock = threading.Lock()

    def get(self) -> bytes:
        with self._lock:
            if self._value is None:
                value = self._load()
                if len(value) < 32:
                    raise RuntimeError("the approval link key is shorter than 32 characters: generate a longer one")
                self._value = value.encode()
            return self._value


class ApprovalLinks:
    def __init__(self, key: SecretKey, base_url: str | None) -> None:
        self.key = key
        self.base_url = base_url.rstrip("/") if base_url else None

    def signature(self, approval_id: str, expires: int) -> str:
        message = f"approval:{approval_id}:{expires}".encode()
        digest = hmac.new(self.key.get(), message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def path(self, approval_id: str, expires: datetime) -> str:
        expires_at = int(expires.timestamp())
        query = urlencode({"expires": expires_at, "signature": self.signature(approval_id, expires_at)})
        return f"{APPROVAL_PAGE_PATH}/{quote(approval_id, safe='')}?{query}"

    def link(self, approval_id: str, expires: datetime) -> str:
        """The full URL when the API's address is known, else the path on the API."""
        return f"{self.base_url or ''}{self.path(approval_id, expires)}"

    def check(
        self, approval_id: str, expires: str | None, signature: str | None, now: datetime | None = None
    ) -> LinkCheck:
        """Whether a link (its id, expiry and signature as they arrived) may be acted on now.

        Tampering is checked first: a changed expiry is tampering, not a reason to say "expired".
        """
        if not expires or not signature or not expires.isdigit() or len(expires) > 12:
            return LinkCheck.TAMPERED
        expected = self.signature(approval_id, int(expires))
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            return LinkCheck.TAMPERED
        if int(expires) <= int((now or datetime.now(UTC)).timestamp()):
            return LinkCheck.EXPIRED
        return LinkCheck.VALID
