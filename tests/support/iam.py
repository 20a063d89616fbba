"""moto's server checking every signature, with an IAM user whose keys the test holds.

moto verifies SigV4 signatures only with IAM authentication on; its first
``INITIAL_NO_AUTH_ACTION_COUNT`` requests are free. `signed_store` spends
exactly those on the set-up (the user, its access key, an allow-all policy,
then one bucket per entry), so every request a test sends afterwards must be
signed correctly with the user's keys.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config as BotoConfig

from proxy.localstore import MotoServer

ALLOW_ALL = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}'
USER_CALLS = 3   # create_user, create_access_key, put_user_policy


def _config() -> BotoConfig:
    return BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1})


@dataclass(frozen=True)
class SignedStore:
    """A running moto that checks signatures, and the keys of a user allowed everything in it."""

    server: MotoServer
    key: str
    secret: str

    def client(self, region: str = "us-east-1") -> Any:
        """An S3 client signing with the user's keys."""
        return boto3.client("s3", endpoint_url=self.server.url, region_name=region,
                            aws_access_key_id=self.key, aws_secret_access_key=self.secret, config=_config())


@contextmanager
def signed_store(user: str, buckets: Mapping[str, str | None]) -> Iterator[SignedStore]:
    """moto with `user` and `buckets` (name: LocationConstraint, None for us-east-1), checking after that."""
    with MotoServer(environ={"INITIAL_NO_AUTH_ACTION_COUNT": str(USER_CALLS + len(buckets))}) as server:
        setup: dict[str, Any] = {"endpoint_url": server.url, "region_name": "us-east-1",
                                 "aws_access_key_id": "setup", "aws_secret_access_key": "setup",
                                 "config": _config()}
        iam = boto3.client("iam", **setup)
        iam.create_user(UserName=user)
        keys = iam.create_access_key(UserName=user)["AccessKey"]
        iam.put_user_policy(UserName=user, PolicyName="all", PolicyDocument=ALLOW_ALL)
        s3 = boto3.client("s3", **setup)
        for bucket, region in buckets.items():
            placement = {"CreateBucketConfiguration": {"LocationConstraint": region}} if region else {}
            s3.create_bucket(Bucket=bucket, **placement)
        yield SignedStore(server, keys["AccessKeyId"], keys["SecretAccessKey"])
