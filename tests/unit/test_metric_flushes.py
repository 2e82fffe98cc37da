"""In-process Lambda invocations share Powertools' one metric set: with the local runtime's lock, any
number of them adding and flushing at once never fail a handler."""

from __future__ import annotations

import contextlib
import io
import threading
import warnings

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

from local_runtime.dispatch import one_metric_flush_at_a_time


def test_concurrent_invocations_adding_and_flushing_metrics_never_fail() -> None:
    one_metric_flush_at_a_time()
    failures: list[BaseException] = []
    start = threading.Barrier(16)

    def invocation() -> None:
        metrics = Metrics(namespace="CostExecutionEngine", service="test")
        start.wait()
        for _ in range(200):
            try:
                metrics.add_metric(name="StepInvocations", unit=MetricUnit.Count, value=1)
                metrics.flush_metrics()
            except BaseException as error:
                failures.append(error)

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        threads = [threading.Thread(target=invocation) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert failures == []
