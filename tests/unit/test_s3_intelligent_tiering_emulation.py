"""The local runtime's emulation of S3 Intelligent-Tiering configurations, which moto does not keep."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from local_runtime.emulations import s3_intelligent_tiering
from tests.unit.conftest import REGION

BUCKET = "acme-archive"
ARCHIVE = {
    "Id": "archive",
    "Filter": {"Prefix": "logs/"},
    "Status": "Enabled",
    "Tierings": [{"Days": 90, "AccessTier": "ARCHIVE_ACCESS"}, {"Days": 180, "AccessTier": "DEEP_ARCHIVE_ACCESS"}],
}


@pytest.fixture
def s3(aws: None) -> Iterator[Any]:
    with s3_intelligent_tiering.emulated():
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket=BUCKET)
        yield client


def listed(s3: Any) -> list[dict[str, Any]]:
    configurations: list[dict[str, Any]] = s3.list_bucket_intelligent_tiering_configurations(Bucket=BUCKET).get(
        "IntelligentTieringConfigurationList", []
    )
    return configurations


def test_a_configuration_put_is_read_back_and_listed(s3: Any) -> None:
    s3.put_bucket_intelligent_tiering_configuration(
        Bucket=BUCKET, Id="archive", IntelligentTieringConfiguration=ARCHIVE
    )

    read = s3.get_bucket_intelligent_tiering_configuration(Bucket=BUCKET, Id="archive")[
        "IntelligentTieringConfiguration"
    ]

    assert read == ARCHIVE
    assert listed(s3) == [ARCHIVE]


def test_a_bucket_without_configurations_lists_none(s3: Any) -> None:
    assert listed(s3) == []


def test_delete_removes_only_that_configuration_and_never_the_bucket(s3: Any) -> None:
    other = {"Id": "other", "Status": "Enabled", "Tierings": [{"Days": 100, "AccessTier": "ARCHIVE_ACCESS"}]}
    s3.put_bucket_intelligent_tiering_configuration(
        Bucket=BUCKET, Id="archive", IntelligentTieringConfiguration=ARCHIVE
    )
    s3.put_bucket_intelligent_tiering_configuration(Bucket=BUCKET, Id="other", IntelligentTieringConfiguration=other)

    s3.delete_bucket_intelligent_tiering_configuration(Bucket=BUCKET, Id="archive")

    assert listed(s3) == [other]
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == [BUCKET]


def test_an_unknown_configuration_is_no_such_configuration(s3: Any) -> None:
    with pytest.raises(ClientError) as missing:
        s3.get_bucket_intelligent_tiering_configuration(Bucket=BUCKET, Id="nope")

    assert missing.value.response["Error"]["Code"] == "NoSuchConfiguration"


def test_an_unknown_bucket_is_no_such_bucket(s3: Any) -> None:
    with pytest.raises(ClientError) as missing:
        s3.list_bucket_intelligent_tiering_configurations(Bucket="no-such-bucket-here")

    assert missing.value.response["Error"]["Code"] == "NoSuchBucket"
