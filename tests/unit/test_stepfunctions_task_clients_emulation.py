"""The emulated Step Functions' task clients: one per region and service, answering as moto's own."""

from __future__ import annotations

import pytest

from local_runtime.emulations import stepfunctions_task_clients


def test_tasks_of_one_region_and_service_share_one_client_and_others_get_their_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils

    made = lambda_eval_utils.__dict__["boto_client_for"]
    original = getattr(made, "__wrapped__", made)
    monkeypatch.setattr(lambda_eval_utils, "boto_client_for", original)
    monkeypatch.setenv("MOTO_PORT", "5999")

    stepfunctions_task_clients.install(None)
    kept = lambda_eval_utils.__dict__["boto_client_for"]
    first = kept(region="us-east-1", service="lambda", state_credentials=None)

    assert kept(region="us-east-1", service="lambda", state_credentials=object()) is first
    assert kept(region="eu-west-1", service="lambda") is not first
    assert kept(region="us-east-1", service="sqs") is not first
    # The same client moto would make: its endpoint, region and no retries of its own.
    fresh = original(region="us-east-1", service="lambda")
    assert first.meta.endpoint_url == fresh.meta.endpoint_url == "http://localhost:5999"
    assert first.meta.region_name == "us-east-1"
    assert first.meta.config.retries == fresh.meta.config.retries
    # Another moto server port (a restarted runtime elsewhere) gets a client of its own.
    monkeypatch.setenv("MOTO_PORT", "6001")
    assert kept(region="us-east-1", service="lambda").meta.endpoint_url == "http://localhost:6001"
