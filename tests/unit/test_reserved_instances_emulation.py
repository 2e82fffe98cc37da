"""The local runtime's emulation of the EC2 Reserved Instances calls moto lacks, driven through boto3
as the engine drives them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.ec2.responses.reserved_instances import ReservedInstances

from cost_engine.pricing import price_catalog
from local_runtime.emulations import reserved_instances
from tests.unit.conftest import ACCOUNT_ID, REGION

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client

ONE_YEAR = reserved_instances.ONE_YEAR_SECONDS


@pytest.fixture
def ec2(aws: None) -> EC2Client:
    reserved_instances.install(None)
    return boto3.client("ec2", region_name=REGION)


def offerings(ec2: EC2Client, **request: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = ec2.describe_reserved_instances_offerings(**request)["ReservedInstancesOfferings"]  # type: ignore[assignment]
    return found


def one_regional_offering(ec2: EC2Client, offering_type: str = "No Upfront") -> dict[str, Any]:
    found = offerings(
        ec2,
        InstanceType="m5.large",
        ProductDescription="Linux/UNIX",
        OfferingClass="standard",
        OfferingType=offering_type,
        MinDuration=ONE_YEAR,
        MaxDuration=ONE_YEAR,
        Filters=[{"Name": "scope", "Values": ["Region"]}],
    )
    assert len(found) == 1
    return found[0]


def test_install_is_idempotent() -> None:
    reserved_instances.install(None)
    first = ReservedInstances.describe_reserved_instances

    reserved_instances.install(None)

    assert ReservedInstances.describe_reserved_instances is first


def test_offerings_honour_every_parameter_of_the_request(ec2: EC2Client) -> None:
    # When the engine asks for one exact offering, regional scope
    offering = one_regional_offering(ec2)

    # Then exactly that one comes back, described as AWS describes it
    assert offering["InstanceType"] == "m5.large"
    assert offering["OfferingType"] == "No Upfront"
    assert offering["Duration"] == ONE_YEAR
    assert offering["Scope"] == "Region"
    assert "AvailabilityZone" not in offering
    assert offering["Marketplace"] is False


def test_offering_prices_are_plausible_discounts_of_the_on_demand_price(ec2: EC2Client) -> None:
    on_demand_year = price_catalog().ec2_hourly["m5.large"] * 8760
    no_upfront = one_regional_offering(ec2, "No Upfront")
    partial = one_regional_offering(ec2, "Partial Upfront")
    all_upfront = one_regional_offering(ec2, "All Upfront")

    def year_cost(offering: dict[str, Any]) -> float:
        hourly = sum(c["Amount"] for c in offering["RecurringCharges"])
        return float(offering["FixedPrice"] + hourly * 8760)

    assert no_upfront["FixedPrice"] == 0
    assert partial["FixedPrice"] > 0
    assert partial["RecurringCharges"]
    assert all_upfront["RecurringCharges"] == []
    # Paying earlier costs less, and every option is cheaper than on-demand.
    assert year_cost(all_upfront) < year_cost(partial) < year_cost(no_upfront) < on_demand_year


def test_offerings_are_the_same_on_every_call(ec2: EC2Client) -> None:
    assert one_regional_offering(ec2) == one_regional_offering(ec2)


def test_a_tenancy_or_type_without_offerings_finds_nothing(ec2: EC2Client) -> None:
    assert offerings(ec2, InstanceType="m5.large", InstanceTenancy="dedicated") == []
    assert offerings(ec2, InstanceType="x1e.32xlarge") == []


def test_zonal_offerings_are_found_by_availability_zone(ec2: EC2Client) -> None:
    found = offerings(ec2, InstanceType="c5.large", AvailabilityZone="us-east-1b", OfferingType="All Upfront")

    assert found
    assert {o["AvailabilityZone"] for o in found} == {"us-east-1b"}
    assert {o["Scope"] for o in found} == {"Availability Zone"}


def test_an_unknown_filter_is_refused_rather_than_ignored(ec2: EC2Client) -> None:
    with pytest.raises(ClientError) as refused:
        ec2.describe_reserved_instances_offerings(Filters=[{"Name": "colour", "Values": ["blue"]}])

    assert refused.value.response["Error"]["Code"] == "InvalidParameterValue"


def test_a_dry_run_purchase_answers_dry_run_operation_and_buys_nothing(ec2: EC2Client) -> None:
    offering = one_regional_offering(ec2)

    with pytest.raises(ClientError) as answered:
        ec2.purchase_reserved_instances_offering(
            ReservedInstancesOfferingId=offering["ReservedInstancesOfferingId"], InstanceCount=2, DryRun=True
        )

    assert answered.value.response["Error"]["Code"] == "DryRunOperation"
    assert ec2.describe_reserved_instances()["ReservedInstances"] == []


def test_a_purchase_of_an_unknown_offering_is_refused_even_as_a_dry_run(ec2: EC2Client) -> None:
    for dry_run in (True, False):
        with pytest.raises(ClientError) as refused:
            ec2.purchase_reserved_instances_offering(
                ReservedInstancesOfferingId="00000000-0000-4000-8000-000000000000", InstanceCount=1, DryRun=dry_run
            )
        assert refused.value.response["Error"]["Code"] == "InvalidReservedInstancesOfferingId"


def test_a_purchase_is_payment_pending_when_first_described_then_active(ec2: EC2Client) -> None:
    # Given a purchase of two reservations
    offering = one_regional_offering(ec2, "Partial Upfront")
    reserved_id = ec2.purchase_reserved_instances_offering(
        ReservedInstancesOfferingId=offering["ReservedInstancesOfferingId"], InstanceCount=2
    )["ReservedInstancesId"]

    # When it is described twice
    first = ec2.describe_reserved_instances(ReservedInstancesIds=[reserved_id])["ReservedInstances"][0]
    second = ec2.describe_reserved_instances(ReservedInstancesIds=[reserved_id])["ReservedInstances"][0]

    # Then the payment settles between the two, and it carries the offering's terms
    assert (first["State"], second["State"]) == ("payment-pending", "active")
    assert second["InstanceCount"] == 2
    assert second["InstanceType"] == "m5.large"
    assert second["FixedPrice"] == offering["FixedPrice"]
    assert second["RecurringCharges"] == offering["RecurringCharges"]
    assert (second["End"] - second["Start"]).total_seconds() == ONE_YEAR
    assert "_OfferingId" not in second


def test_reserved_instances_can_be_tagged_and_found_by_tag_and_filters(ec2: EC2Client) -> None:
    offering = one_regional_offering(ec2)
    tagged = ec2.purchase_reserved_instances_offering(
        ReservedInstancesOfferingId=offering["ReservedInstancesOfferingId"], InstanceCount=1
    )["ReservedInstancesId"]
    ec2.purchase_reserved_instances_offering(
        ReservedInstancesOfferingId=offering["ReservedInstancesOfferingId"], InstanceCount=3
    )

    ec2.create_tags(Resources=[tagged], Tags=[{"Key": "cost-engine:execution-id", "Value": "exec-1"}])

    by_tag = ec2.describe_reserved_instances(Filters=[{"Name": "tag:cost-engine:execution-id", "Values": ["exec-1"]}])[
        "ReservedInstances"
    ]
    assert [r["ReservedInstancesId"] for r in by_tag] == [tagged]
    assert by_tag[0]["Tags"] == [{"Key": "cost-engine:execution-id", "Value": "exec-1"}]
    by_attributes = ec2.describe_reserved_instances(
        Filters=[
            {"Name": "instance-type", "Values": ["m5.large"]},
            {"Name": "duration", "Values": [str(ONE_YEAR)]},
            {"Name": "scope", "Values": ["Region"]},
        ]
    )["ReservedInstances"]
    assert sorted(r["InstanceCount"] for r in by_attributes) == [1, 3]


def test_describing_an_unknown_reservation_is_an_error_as_on_aws(ec2: EC2Client) -> None:
    with pytest.raises(ClientError) as refused:
        ec2.describe_reserved_instances(ReservedInstancesIds=["1f2e3d4c-0000-4000-8000-000000000000"])

    assert refused.value.response["Error"]["Code"] == "InvalidReservedInstancesId"


def test_a_reservation_sold_on_the_marketplace_shows_as_retired(ec2: EC2Client) -> None:
    offering = one_regional_offering(ec2)
    reserved_id = ec2.purchase_reserved_instances_offering(
        ReservedInstancesOfferingId=offering["ReservedInstancesOfferingId"], InstanceCount=1
    )["ReservedInstancesId"]

    reserved_instances.set_state(reserved_id, "retired", account_id=ACCOUNT_ID, region=REGION)

    described = ec2.describe_reserved_instances(Filters=[{"Name": "state", "Values": ["retired"]}])
    assert [r["ReservedInstancesId"] for r in described["ReservedInstances"]] == [reserved_id]


def test_tags_on_other_resources_still_work(ec2: EC2Client) -> None:
    volume = ec2.create_volume(AvailabilityZone="us-east-1a", Size=8)["VolumeId"]

    ec2.create_tags(Resources=[volume], Tags=[{"Key": "team", "Value": "data"}])

    assert ec2.describe_volumes(VolumeIds=[volume])["Volumes"][0]["Tags"] == [{"Key": "team", "Value": "data"}]
