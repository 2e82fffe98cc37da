"""A small HTTP client of the engine's API, used by the demo and the integration tests."""

from __future__ import annotations

import time
from typing import Any

import requests

FINAL_STATUSES = frozenset(
    {"completed", "rejected", "expired", "cancelled", "failed", "rolled_back", "rollback_failed"}
)


class ApiError(Exception):
    def __init__(self, response: requests.Response) -> None:
        self.status_code = response.status_code
        try:
            self.body: dict[str, Any] = response.json()
        except ValueError:
            self.body = {"message": response.text}
        super().__init__(f"HTTP {response.status_code}: {self.body.get('message', self.body)}")


class ApiClient:
    def __init__(self, base_url: str, api_key: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["x-api-key"] = api_key
        self.timeout = timeout

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, self.base_url + path, timeout=self.timeout, **kwargs)

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise ApiError(response)
        body: dict[str, Any] = response.json()
        return body

    def register(self, recommendation: dict[str, Any]) -> dict[str, Any]:
        return self._json("POST", "/recommendations", json=recommendation)

    def recommendation(self, recommendation_id: str) -> dict[str, Any]:
        return self._json("GET", f"/recommendations/{recommendation_id}")

    def execute(
        self,
        recommendation_id: str,
        *,
        dry_run: bool = False,
        auto_approve: bool = False,
        approval_timeout_seconds: int | None = None,
        scheduled_time: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "recommendation_id": recommendation_id,
            "dry_run": dry_run,
            "auto_approve": auto_approve,
        }
        if approval_timeout_seconds is not None:
            body["approval_timeout_seconds"] = approval_timeout_seconds
        if scheduled_time is not None:
            body["scheduled_time"] = scheduled_time
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else {}
        return self._json("POST", "/executions/execute", json=body, headers=headers)

    def run(
        self,
        recommendation_id: str,
        *,
        approver: str | None = None,
        comment: str = "",
        timeout: float = 60.0,
        **options: Any,
    ) -> dict[str, Any]:
        """Execute and wait for the end. With `approver`, an execution the policy holds for a person
        is approved by them through the API (and the approval shows in its audit log)."""
        execution_id = self.execute(recommendation_id, **options)["execution_id"]
        if approver is None:
            return self.wait_for(execution_id, timeout=timeout)
        execution = self.wait_for(execution_id, FINAL_STATUSES | {"awaiting_approval"}, timeout=timeout)
        if execution["status"] != "awaiting_approval":
            return execution
        self.approve(execution_id, approver, comment)
        return self.wait_for(execution_id, timeout=timeout)

    def status(self, execution_id: str) -> dict[str, Any]:
        return self._json("GET", f"/executions/{execution_id}")

    def logs(self, execution_id: str) -> dict[str, Any]:
        return self._json("GET", f"/executions/{execution_id}/logs")

    def approve(self, execution_id: str, approver: str, comment: str = "") -> dict[str, Any]:
        return self._json(
            "POST", f"/executions/{execution_id}/approve", json={"approver": approver, "comment": comment}
        )

    def reject(self, execution_id: str, approver: str, comment: str = "") -> dict[str, Any]:
        return self._json("POST", f"/executions/{execution_id}/reject", json={"approver": approver, "comment": comment})

    def cancel(self, execution_id: str) -> dict[str, Any]:
        return self._json("POST", f"/executions/{execution_id}/cancel")

    def rollback(self, execution_id: str) -> dict[str, Any]:
        return self._json("POST", f"/executions/{execution_id}/rollback")

    def measure(self, execution_id: str, window_days: int | None = None) -> dict[str, Any]:
        body = {} if window_days is None else {"window_days": window_days}
        return self._json("POST", f"/executions/{execution_id}/measure", json=body)

    def list(self, customer_id: str, **params: Any) -> dict[str, Any]:
        return self._json("GET", "/executions", params={"customer_id": customer_id, **params})

    def wait_for(
        self, execution_id: str, statuses: frozenset[str] = FINAL_STATUSES, timeout: float = 60.0
    ) -> dict[str, Any]:
        """Poll the execution until its status is one of `statuses`."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(execution_id)
            if status["status"] in statuses:
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"execution {execution_id} still '{status['status']}' after {timeout:.0f}s, "
                    f"waiting for one of {sorted(statuses)}"
                )
            time.sleep(0.1)
