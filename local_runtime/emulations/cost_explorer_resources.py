"""Cost Explorer's `GetCostAndUsageWithResources`, which moto 5.2.5 leaves unimplemented.

On AWS it answers as `GetCostAndUsage` does, for the last 14 days and with the RESOURCE_ID dimension
allowed in its filter (once resource-level data is turned on). moto answers `GetCostAndUsage` from a
queue of results set through its own API (`/moto-api/static/ce/cost-and-usage-results`), each taken
by the first request with new parameters and kept for those; here the resource-level call answers
from the same queue, in the same way.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from local_runtime.runtime import LocalRuntime


def install(runtime: LocalRuntime | None) -> None:
    patch_moto()


def patch_moto() -> None:
    """Fill in the call. Safe to call more than once."""
    from moto.ce.responses import CostExplorerResponse

    def get_cost_and_usage_with_resources(self: Any) -> str:
        return json.dumps(self.ce_backend.get_cost_and_usage(self.body))

    setattr(CostExplorerResponse, "get_cost_and_usage_with_resources", get_cost_and_usage_with_resources)  # noqa: B010
