"""The price catalog refresh reads the Price List API's answers correctly and keeps what it lacks."""

from __future__ import annotations

import json
from typing import Any

import boto3
from botocore.stub import ANY, Stubber

from tools.refresh_prices import refresh


def _product(usd: str) -> str:
    return json.dumps(
        {"terms": {"OnDemand": {"T1": {"priceDimensions": {"D1": {"unit": "Hrs", "pricePerUnit": {"USD": usd}}}}}}}
    )


def test_a_refresh_takes_each_price_the_api_gives_and_keeps_the_others() -> None:
    # Given a catalog with two EC2 types and one RDS class, and an API that knows two of them
    catalog: dict[str, Any] = {
        "as_of": "2025-10-01",
        "ec2_hourly": {"m5.large": 0.096, "t3.micro": 0.0104},
        "rds_hourly": {"db.t3.micro": 0.017},
    }
    pricing = boto3.client("pricing", region_name="us-east-1")
    stubber = Stubber(pricing)
    expected = {"ServiceCode": ANY, "Filters": ANY, "MaxResults": 10}
    stubber.add_response("get_products", {"PriceList": [_product("0.1010000000")]}, expected)
    stubber.add_response("get_products", {"PriceList": []}, expected)
    stubber.add_response("get_products", {"PriceList": [_product("0.0000000000"), _product("0.0180000000")]}, expected)

    # When the catalog is refreshed
    with stubber:
        updated, missing = refresh(catalog, pricing, today="2026-11-26")

    # Then the prices it got are taken, the one it did not get is kept and reported, and the date moves
    assert updated["ec2_hourly"] == {"m5.large": 0.101, "t3.micro": 0.0104}
    assert updated["rds_hourly"] == {"db.t3.micro": 0.018}
    assert missing == ["t3.micro"]
    assert updated["as_of"] == "2026-11-26"
    assert catalog["as_of"] == "2025-10-01"  # the input is not changed
