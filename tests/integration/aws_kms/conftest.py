"""AWS KMS area fixtures: a boto3 oracle on the lab's moto server and a factory of keys made with boto3.

moto creates about 12 keys a second, so tests make few keys and share them within a module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.config import Config

from tests.integration.aws_kms.kms_helpers import alias_arn, unique_alias


@pytest.fixture(scope="module")
def kms(lab: dict[str, Any]) -> Any:
    return boto3.client(
        "kms",
        endpoint_url=lab["AWS_ENDPOINT_URL"],
        region_name=lab["AWS_DEFAULT_REGION"],
        aws_access_key_id=lab["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=lab["AWS_SECRET_ACCESS_KEY"],
        config=Config(max_pool_connections=32, retries={"mode": "standard", "max_attempts": 3}),
    )


@pytest.fixture(scope="module")
def new_key(kms: Any) -> Callable[..., dict[str, Any]]:
    """Create a key with boto3 (not the code under test) and return its metadata plus alias and alias ARN."""

    def create(key_type: str = "kek", **kwargs: Any) -> dict[str, Any]:
        meta = kms.create_key(**kwargs)["KeyMetadata"]
        alias = unique_alias(key_type)
        kms.create_alias(AliasName=alias, TargetKeyId=meta["KeyId"])
        return {**meta, "Alias": alias, "AliasArn": alias_arn(kms, alias)}

    return create
