"""EC2 Reserved Instances, which moto 5.2.5 lacks: exactly the calls `purchase_reserved_instances` uses.

- `DescribeReservedInstancesOfferings`: moto has one, but with random upfront prices, one-year terms
  only, and it ignores the request's own parameters (InstanceType, OfferingType, MinDuration …), so
  a lookup there matches nearly everything. It is replaced by a fixed catalog: a few instance types,
  Linux/UNIX, default tenancy, 1 and 3 years, the three payment options, standard and convertible,
  regional and zonal scope, with prices derived from the project's on-demand price catalog and the
  usual RI discounts (so a plan shows plausible dollars, the same every run).
- `PurchaseReservedInstancesOffering`: not in moto. Validates the offering and the count, answers
  `DryRunOperation` to a dry run (as AWS does when the caller is allowed), and records a purchase
  in `payment-pending`.
- `DescribeReservedInstances`: not in moto. Ids, the filters the engine uses, and tags. A purchase
  is `payment-pending` the first time it is described and `active` after that: AWS takes a moment
  to settle the payment, and this lets a caller see both states without any clock.
- `CreateTags` on a reserved-instances id: moto refuses the id (it expects `prefix-hex` ids and
  raises NotImplemented for RIs); tags on known RIs are kept in moto's own tag store.

Everything lives on moto's EC2 backend of the account and region, so `mock_aws()` resets it too.
"""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from moto.core.responses import ActionResult, EmptyResult
from moto.ec2.exceptions import DryRunClientError, EC2ClientError
from moto.ec2.responses.reserved_instances import ReservedInstances
from moto.ec2.responses.tags import TagResponse

from cost_engine.pricing import price_catalog

if TYPE_CHECKING:
    from local_runtime.runtime import LocalRuntime

ONE_YEAR_SECONDS = 31_536_000
THREE_YEARS_SECONDS = 94_608_000
HOURS = {ONE_YEAR_SECONDS: 8_760, THREE_YEARS_SECONDS: 26_280}
PRODUCT = "Linux/UNIX"
TENANCY = "default"
# A few common types; their on-demand price comes from the project's price catalog.
INSTANCE_TYPES = ("t3.micro", "t3.medium", "m5.large", "m5.xlarge", "m5.4xlarge", "c5.large", "r5.large")
# The effective hourly rate of a reservation as a fraction of on-demand, close to AWS's published
# Linux discounts: (offering class, term, payment option) → fraction.
DISCOUNT = {
    ("standard", ONE_YEAR_SECONDS, "No Upfront"): 0.63,
    ("standard", ONE_YEAR_SECONDS, "Partial Upfront"): 0.60,
    ("standard", ONE_YEAR_SECONDS, "All Upfront"): 0.585,
    ("standard", THREE_YEARS_SECONDS, "No Upfront"): 0.44,
    ("standard", THREE_YEARS_SECONDS, "Partial Upfront"): 0.415,
    ("standard", THREE_YEARS_SECONDS, "All Upfront"): 0.40,
    ("convertible", ONE_YEAR_SECONDS, "No Upfront"): 0.72,
    ("convertible", ONE_YEAR_SECONDS, "Partial Upfront"): 0.69,
    ("convertible", ONE_YEAR_SECONDS, "All Upfront"): 0.675,
    ("convertible", THREE_YEARS_SECONDS, "No Upfront"): 0.56,
    ("convertible", THREE_YEARS_SECONDS, "Partial Upfront"): 0.53,
    ("convertible", THREE_YEARS_SECONDS, "All Upfront"): 0.51,
}
_ID_NAMESPACE = uuid.UUID("6f1c2a4e-3d0b-4e59-9a57-5b0f3c1d2e7a")
_STORE = "_cost_engine_reserved_instances"
_PATCHED = "_cost_engine_emulated"


def _price(on_demand_hourly: float, offering_class: str, duration: int, payment: str) -> tuple[float, float]:
    """(upfront USD, recurring hourly USD) of one reservation."""
    hours = HOURS[duration]
    total = on_demand_hourly * DISCOUNT[(offering_class, duration, payment)] * hours
    if payment == "All Upfront":
        return float(round(total)), 0.0
    if payment == "Partial Upfront":
        upfront = float(round(total / 2))
        return upfront, round((total - upfront) / hours, 4)
    return 0.0, round(total / hours, 4)


def offerings(region: str, zones: list[str]) -> list[dict[str, Any]]:
    """The emulated catalog of one region: regional offerings, and zonal ones in each zone."""
    catalog = price_catalog()
    result = []
    scopes: list[str | None] = [None, *zones]
    for instance_type, offering_class, duration, payment, zone in itertools.product(
        INSTANCE_TYPES,
        ("standard", "convertible"),
        (ONE_YEAR_SECONDS, THREE_YEARS_SECONDS),
        ("No Upfront", "Partial Upfront", "All Upfront"),
        scopes,
    ):
        upfront, hourly = _price(catalog.ec2_hourly[instance_type], offering_class, duration, payment)
        key = f"{region}|{instance_type}|{offering_class}|{duration}|{payment}|{zone or 'Region'}"
        offering: dict[str, Any] = {
            "ReservedInstancesOfferingId": str(uuid.uuid5(_ID_NAMESPACE, key)),
            "InstanceType": instance_type,
            "ProductDescription": PRODUCT,
            "InstanceTenancy": TENANCY,
            "Duration": duration,
            "FixedPrice": upfront,
            "UsagePrice": 0.0,
            "RecurringCharges": [{"Frequency": "Hourly", "Amount": hourly}] if hourly else [],
            "CurrencyCode": "USD",
            "OfferingClass": offering_class,
            "OfferingType": payment,
            "Marketplace": False,
            "PricingDetails": [],
            "Scope": "Availability Zone" if zone else "Region",
        }
        if zone:
            offering["AvailabilityZone"] = zone
        result.append(offering)
    return result


# -- the store on moto's backend ------------------------------------------------------------------


def _store(backend: Any) -> dict[str, dict[str, Any]]:
    store: dict[str, dict[str, Any]] = backend.__dict__.setdefault(_STORE, {})
    return store


def _backend(account_id: str, region: str) -> Any:
    from moto.ec2.models import ec2_backends

    return ec2_backends[account_id][region]


def set_state(reserved_instances_id: str, state: str, *, account_id: str, region: str) -> None:
    """What AWS does on its own, for tests and the demo: e.g. `retired` once a Marketplace listing
    has sold (or the term has ended), `payment-failed` when the payment is declined."""
    reservation = _store(_backend(account_id, region)).get(reserved_instances_id)
    if reservation is None:
        raise KeyError(f"no emulated reserved instances {reserved_instances_id} in {account_id}/{region}")
    reservation["State"] = state


def purchases(*, account_id: str, region: str) -> list[dict[str, Any]]:
    """Every emulated purchase of the account and region (for tests: how many were bought)."""
    return [dict(r) for r in _store(_backend(account_id, region)).values()]


# -- the emulated calls -----------------------------------------------------------------------------


def _region_offerings(response: Any) -> list[dict[str, Any]]:
    backend = response.ec2_backend
    cache: list[dict[str, Any]] | None = backend.__dict__.get("_cost_engine_ri_offerings")
    if cache is None:
        zones = [zone.name for zone in backend.describe_availability_zones()]
        cache = offerings(response.region, zones)
        backend.__dict__["_cost_engine_ri_offerings"] = cache
    return cache


def _check_filters(filters: dict[str, list[str]], supported: set[str]) -> None:
    for name in filters:
        if name not in supported and not name.startswith("tag:") and name != "tag-key":
            raise EC2ClientError("InvalidParameterValue", f"The filter '{name}' is invalid")


def _matches(value: Any, wanted: list[str]) -> bool:
    return any(str(value) == w or _number_equal(value, w) for w in wanted)


def _number_equal(value: Any, wanted: str) -> bool:
    try:
        return isinstance(value, int | float) and float(value) == float(wanted)
    except ValueError:
        return False


_OFFERING_FILTERS = {
    "availability-zone": "AvailabilityZone",
    "duration": "Duration",
    "fixed-price": "FixedPrice",
    "instance-type": "InstanceType",
    "marketplace": "Marketplace",
    "product-description": "ProductDescription",
    "reserved-instances-offering-id": "ReservedInstancesOfferingId",
    "scope": "Scope",
    "usage-price": "UsagePrice",
}


def describe_reserved_instances_offerings(self: Any) -> ActionResult:
    self.error_on_dryrun()
    filters: dict[str, list[str]] = self._filters_from_querystring()
    _check_filters(filters, set(_OFFERING_FILTERS))
    wanted_ids = self._get_param("ReservedInstancesOfferingIds", [])
    # AWS's documented default for InstanceTenancy is "default"; the other parameters match anything.
    parameters = {
        "InstanceType": self._get_param("InstanceType"),
        "ProductDescription": self._get_param("ProductDescription"),
        "InstanceTenancy": self._get_param("InstanceTenancy") or TENANCY,
        "OfferingClass": self._get_param("OfferingClass"),
        "OfferingType": self._get_param("OfferingType"),
        "AvailabilityZone": self._get_param("AvailabilityZone"),
    }
    min_duration = self._get_param("MinDuration")
    max_duration = self._get_param("MaxDuration")
    found = []
    for offering in _region_offerings(self):
        if wanted_ids and offering["ReservedInstancesOfferingId"] not in wanted_ids:
            continue
        if any(value is not None and offering.get(key) != value for key, value in parameters.items()):
            continue
        if min_duration is not None and offering["Duration"] < int(min_duration):
            continue
        if max_duration is not None and offering["Duration"] > int(max_duration):
            continue
        if all(_matches(offering.get(_OFFERING_FILTERS[name]), values) for name, values in filters.items()):
            found.append(offering)
    return ActionResult({"ReservedInstancesOfferings": found})


def purchase_reserved_instances_offering(self: Any) -> ActionResult:
    offering_id = self._get_param("ReservedInstancesOfferingId")
    count = int(self._get_param("InstanceCount") or 0)
    offering = next((o for o in _region_offerings(self) if o["ReservedInstancesOfferingId"] == offering_id), None)
    if offering is None:
        raise EC2ClientError(
            "InvalidReservedInstancesOfferingId", f"The Reserved Instance offering '{offering_id}' does not exist"
        )
    if count < 1:
        raise EC2ClientError("InvalidParameterValue", f"Invalid value '{count}' for InstanceCount")
    # AWS checks the request and the caller's permission, then answers a dry run without buying.
    if self._get_param("DryRun", False):
        raise DryRunClientError()
    start = datetime.now(UTC).replace(microsecond=0)
    reservation = {
        key: offering[key]
        for key in (
            "InstanceType",
            "ProductDescription",
            "InstanceTenancy",
            "Duration",
            "FixedPrice",
            "UsagePrice",
            "RecurringCharges",
            "CurrencyCode",
            "OfferingClass",
            "OfferingType",
            "Scope",
        )
    }
    if "AvailabilityZone" in offering:
        reservation["AvailabilityZone"] = offering["AvailabilityZone"]
    reservation |= {
        "ReservedInstancesId": str(uuid.uuid4()),
        "InstanceCount": count,
        "Start": start,
        "End": start + timedelta(seconds=offering["Duration"]),
        "State": "payment-pending",
        # Not part of AWS's answer: which offering was bought, for the tests' eyes.
        "_OfferingId": offering_id,
    }
    _store(self.ec2_backend)[reservation["ReservedInstancesId"]] = reservation
    return ActionResult({"ReservedInstancesId": reservation["ReservedInstancesId"]})


_RESERVED_FILTERS = {
    "availability-zone": "AvailabilityZone",
    "duration": "Duration",
    "fixed-price": "FixedPrice",
    "instance-type": "InstanceType",
    "scope": "Scope",
    "product-description": "ProductDescription",
    "reserved-instances-id": "ReservedInstancesId",
    "state": "State",
    "usage-price": "UsagePrice",
}


def describe_reserved_instances(self: Any) -> ActionResult:
    self.error_on_dryrun()
    filters: dict[str, list[str]] = self._filters_from_querystring()
    _check_filters(filters, set(_RESERVED_FILTERS))
    store = _store(self.ec2_backend)
    wanted_ids = self._get_param("ReservedInstancesIds", [])
    unknown = [i for i in wanted_ids if i not in store]
    if unknown:
        raise EC2ClientError(
            "InvalidReservedInstancesId", f"The Reserved Instance(s) {', '.join(unknown)} do not exist"
        )
    offering_class = self._get_param("OfferingClass")
    offering_type = self._get_param("OfferingType")
    found = []
    for reservation_id, reservation in store.items():
        tags = self.ec2_backend.tags.get(reservation_id, {})
        if wanted_ids and reservation_id not in wanted_ids:
            continue
        if offering_class and reservation["OfferingClass"] != offering_class:
            continue
        if offering_type and reservation["OfferingType"] != offering_type:
            continue
        if not all(_reservation_matches(reservation, tags, name, values) for name, values in filters.items()):
            continue
        shown = {k: v for k, v in reservation.items() if not k.startswith("_")}
        shown["Tags"] = [{"Key": k, "Value": v} for k, v in tags.items()]
        found.append(shown)
    # Payment settles after the purchase has been seen once as pending.
    for shown in found:
        if shown["State"] == "payment-pending":
            store[shown["ReservedInstancesId"]]["State"] = "active"
    return ActionResult({"ReservedInstances": found})


def _reservation_matches(reservation: dict[str, Any], tags: dict[str, str], name: str, values: list[str]) -> bool:
    if name == "tag-key":
        return any(key in values for key in tags)
    if name.startswith("tag:"):
        return tags.get(name[4:]) in values
    return _matches(reservation.get(_RESERVED_FILTERS[name]), values)


def _create_tags_with_reserved_instances(original: Any) -> Any:
    def create_tags(self: Any) -> Any:
        resource_ids: list[str] = self._get_param("Resources", [])
        store = _store(self.ec2_backend)
        if not any(resource_id in store for resource_id in resource_ids):
            return original(self)
        others = [r for r in resource_ids if r not in store]
        if others:
            # Mixed requests are not needed by the engine: keep the emulation to what is used.
            raise EC2ClientError("InvalidParameterValue", "the emulation tags reserved instances only on their own")
        self.error_on_dryrun()
        tags = {tag["Key"]: tag["Value"] for tag in self._get_param("Tags", [])}
        self.ec2_backend.create_tags(resource_ids, tags)
        return EmptyResult()

    return create_tags


def install(runtime: LocalRuntime | None = None) -> None:
    """Patch moto's EC2 responses (idempotent). The runtime is not needed: the patch is global, so
    the local runtime's server and in-process `mock_aws()` tests both get it."""
    if getattr(ReservedInstances, _PATCHED, False):
        return
    ReservedInstances.describe_reserved_instances_offerings = describe_reserved_instances_offerings  # type: ignore[method-assign]
    ReservedInstances.purchase_reserved_instances_offering = purchase_reserved_instances_offering  # type: ignore[method-assign,assignment]
    ReservedInstances.describe_reserved_instances = describe_reserved_instances  # type: ignore[method-assign,assignment]
    TagResponse.create_tags = _create_tags_with_reserved_instances(TagResponse.create_tags)  # type: ignore[method-assign]
    setattr(ReservedInstances, _PATCHED, True)
