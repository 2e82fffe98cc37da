"""S3 Intelligent-Tiering configurations, which moto 5.2.5 does not keep.

moto answers Put/Get/ListBucketIntelligentTieringConfiguration(s) with an empty success and treats
DeleteBucketIntelligentTieringConfiguration as DeleteBucket (an empty bucket would be deleted!). This
keeps each bucket's configurations by id, as S3 does: put replaces the configuration of that id, get
of an unknown id answers `NoSuchConfiguration` (404), list returns them all, delete removes one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import xmltodict  # type: ignore[import-untyped]

if TYPE_CHECKING:
    from local_runtime.runtime import LocalRuntime

QUERY = "intelligent-tiering"
NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
_CONFIGURATIONS = "_emulated_intelligent_tiering"


def install(runtime: LocalRuntime) -> None:
    _patch()


@contextmanager
def emulated() -> Iterator[None]:
    """The emulation for in-process moto (`mock_aws`), undone afterwards."""
    undo = _patch()
    try:
        yield
    finally:
        undo()


def _configurations(response: Any, bucket_name: str) -> dict[str, dict[str, Any]]:
    bucket = response.backend.get_bucket(bucket_name)  # NoSuchBucket for an unknown bucket
    if not hasattr(bucket, _CONFIGURATIONS):
        setattr(bucket, _CONFIGURATIONS, {})
    configurations: dict[str, dict[str, Any]] = getattr(bucket, _CONFIGURATIONS)
    return configurations


def _xml(root: str, content: dict[str, Any]) -> str:
    return str(xmltodict.unparse({root: {"@xmlns": NAMESPACE, **content}}))


def _get(response: Any, bucket_name: str, querystring: dict[str, Any]) -> Any:
    from moto.s3.exceptions import S3ClientError

    configurations = _configurations(response, bucket_name)
    if "id" not in querystring:
        listed = {"IsTruncated": "false", "IntelligentTieringConfiguration": list(configurations.values())}
        return 200, {}, _xml("ListBucketIntelligentTieringConfigurationsOutput", listed)
    configuration_id = querystring["id"][0]
    if configuration_id not in configurations:
        raise S3ClientError("NoSuchConfiguration", "The specified configuration does not exist.")
    return 200, {}, _xml("IntelligentTieringConfiguration", configurations[configuration_id])


def _put(response: Any, bucket_name: str, querystring: dict[str, Any]) -> Any:
    parsed = xmltodict.parse(response.body)["IntelligentTieringConfiguration"]
    configuration = {key: value for key, value in parsed.items() if not key.startswith("@")}
    _configurations(response, bucket_name)[querystring["id"][0]] = configuration
    return 200, {}, ""


def _delete(response: Any, bucket_name: str, querystring: dict[str, Any]) -> Any:
    _configurations(response, bucket_name).pop(querystring["id"][0], None)
    return 204, {}, ""


def _patch() -> Callable[[], None]:
    """Install the emulation into moto's S3 responses; returns what undoes it. Installing twice is a no-op."""
    from moto.s3.responses import S3Response

    if getattr(S3Response, "_cost_engine_tiering", False):
        return lambda: None
    originals = {
        name: S3Response.__dict__[name]
        for name in ("_bucket_response_get", "_bucket_response_put", "_bucket_response_delete")
    }

    def bucket_get(self: Any, bucket_name: str, querystring: dict[str, Any]) -> Any:
        if QUERY in querystring:
            return _get(self, bucket_name, querystring)
        return originals["_bucket_response_get"](self, bucket_name, querystring)

    def bucket_put(self: Any, request: Any, bucket_name: str, querystring: dict[str, Any]) -> Any:
        if QUERY in querystring:
            return _put(self, bucket_name, querystring)
        return originals["_bucket_response_put"](self, request, bucket_name, querystring)

    def bucket_delete(self: Any, bucket_name: str, querystring: dict[str, Any]) -> Any:
        if QUERY in querystring:
            return _delete(self, bucket_name, querystring)
        return originals["_bucket_response_delete"](self, bucket_name, querystring)

    S3Response._bucket_response_get = bucket_get  # type: ignore[method-assign]
    S3Response._bucket_response_put = bucket_put  # type: ignore[method-assign]
    S3Response._bucket_response_delete = bucket_delete  # type: ignore[method-assign]
    S3Response._cost_engine_tiering = True  # type: ignore[attr-defined]

    def undo() -> None:
        for name, value in originals.items():
            setattr(S3Response, name, value)
        S3Response._cost_engine_tiering = False  # type: ignore[attr-defined]

    return undo
