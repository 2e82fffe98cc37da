"""`make prices`: refresh the project's price catalog from the AWS Price List API.

The catalog (`cost_engine/data/prices.json`) is what plans and savings are computed from, with its
source and date; this tool asks the Price List API (in us-east-1, with the caller's credentials) for
the current on-demand price of every EC2 type and RDS class the catalog lists and writes them back
with today's date. Prices it cannot get are kept, and listed. Where the API is not reachable the
catalog is left as it is and the tool says so.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

CATALOG = Path(__file__).resolve().parents[1] / "layers" / "shared" / "python" / "cost_engine" / "data" / "prices.json"
LOCATION = "US East (N. Virginia)"


def _filters(**terms: str) -> list[dict[str, str]]:
    return [{"Type": "TERM_MATCH", "Field": field, "Value": value} for field, value in terms.items()]


def _on_demand_usd(price_list: list[str]) -> float | None:
    """The hourly on-demand USD price in a get_products answer (the first product that has one)."""
    for raw in price_list:
        product = json.loads(raw)
        for term in product.get("terms", {}).get("OnDemand", {}).values():
            for dimension in term.get("priceDimensions", {}).values():
                usd = dimension.get("pricePerUnit", {}).get("USD")
                if usd is not None and float(usd) > 0:
                    return float(usd)
    return None


def ec2_hourly(pricing: Any, instance_type: str) -> float | None:
    answer = pricing.get_products(
        ServiceCode="AmazonEC2",
        Filters=_filters(
            instanceType=instance_type,
            location=LOCATION,
            operatingSystem="Linux",
            tenancy="Shared",
            preInstalledSw="NA",
            capacitystatus="Used",
        ),
        MaxResults=10,
    )
    return _on_demand_usd(answer.get("PriceList", []))


def rds_hourly(pricing: Any, instance_class: str) -> float | None:
    answer = pricing.get_products(
        ServiceCode="AmazonRDS",
        Filters=_filters(
            instanceType=instance_class, location=LOCATION, databaseEngine="MySQL", deploymentOption="Single-AZ"
        ),
        MaxResults=10,
    )
    return _on_demand_usd(answer.get("PriceList", []))


def refresh(catalog: dict[str, Any], pricing: Any, today: str) -> tuple[dict[str, Any], list[str]]:
    """A new catalog with every price the API gave, and the names it gave none for."""
    updated = json.loads(json.dumps(catalog))
    missing: list[str] = []
    for section, lookup in (("ec2_hourly", ec2_hourly), ("rds_hourly", rds_hourly)):
        for name in catalog[section]:
            price = lookup(pricing, name)
            if price is None:
                missing.append(name)
            else:
                updated[section][name] = round(price, 4)
    updated["as_of"] = today
    return updated, missing


def main() -> int:
    catalog = json.loads(CATALOG.read_text())
    pricing = boto3.client("pricing", region_name="us-east-1")
    try:
        updated, missing = refresh(catalog, pricing, datetime.now(UTC).date().isoformat())
    except (BotoCoreError, ClientError) as error:
        print(f"The Price List API is not reachable ({error}); the catalog of {catalog['as_of']} is unchanged.")
        return 1
    CATALOG.write_text(json.dumps(updated, indent=2) + "\n")
    changed = [
        f"{name}: {catalog[section][name]} → {updated[section][name]}"
        for section in ("ec2_hourly", "rds_hourly")
        for name in catalog[section]
        if catalog[section][name] != updated[section][name]
    ]
    print(f"Catalog refreshed as of {updated['as_of']}: {len(changed)} price(s) changed.")
    for line in changed:
        print(f"  {line}")
    if missing:
        print(f"No price found (kept as they were): {', '.join(missing)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
