"""The price catalog kept in the project (source and date inside the data file)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

_CATALOG_FILE = Path(__file__).parent / "data" / "prices.json"


@dataclass(frozen=True)
class PriceCatalog:
    source: str
    as_of: str
    hours_per_month: int
    ec2_hourly: dict[str, float]
    ebs_gb_month: dict[str, float]
    snapshot_gb_month: float
    rds_hourly: dict[str, float]
    rds_storage_gb_month: dict[str, float]
    rds_snapshot_gb_month: float

    def instance_monthly(self, instance_type: str) -> float | None:
        hourly = self.ec2_hourly.get(instance_type)
        return None if hourly is None else round(hourly * self.hours_per_month, 2)

    def volume_monthly(self, volume_type: str, size_gb: int) -> float | None:
        per_gb = self.ebs_gb_month.get(volume_type)
        return None if per_gb is None else round(per_gb * size_gb, 2)

    def snapshot_monthly(self, size_gb: int) -> float:
        # An upper bound: snapshots are incremental and compressed, usually far smaller.
        return round(self.snapshot_gb_month * size_gb, 2)

    def db_instance_monthly(self, instance_class: str, multi_az: bool = False) -> float | None:
        hourly = self.rds_hourly.get(instance_class)
        return None if hourly is None else round(hourly * self.hours_per_month * (2 if multi_az else 1), 2)

    def db_storage_monthly(self, storage_type: str, size_gb: int) -> float | None:
        per_gb = self.rds_storage_gb_month.get(storage_type)
        return None if per_gb is None else round(per_gb * size_gb, 2)

    def db_snapshot_monthly(self, size_gb: int) -> float:
        return round(self.rds_snapshot_gb_month * size_gb, 2)

    @property
    def basis(self) -> str:
        return f"{self.source} (as of {self.as_of})"


@lru_cache(maxsize=1)
def price_catalog() -> PriceCatalog:
    data = json.loads(_CATALOG_FILE.read_text())
    return PriceCatalog(
        source=data["source"],
        as_of=data["as_of"],
        hours_per_month=int(data["hours_per_month"]),
        ec2_hourly={k: float(v) for k, v in data["ec2_hourly"].items()},
        ebs_gb_month={k: float(v) for k, v in data["ebs_gb_month"].items()},
        snapshot_gb_month=float(data["snapshot_gb_month"]),
        rds_hourly={k: float(v) for k, v in data["rds_hourly"].items()},
        rds_storage_gb_month={k: float(v) for k, v in data["rds_storage_gb_month"].items()},
        rds_snapshot_gb_month=float(data["rds_snapshot_gb_month"]),
    )
