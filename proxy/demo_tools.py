"""What both acts of `bailiwick demo` use: the callers' tokens and S3 clients, and the table of outcomes.

The first act (`proxy.demo`) plays the policy's decisions, the second
(`proxy.demo_encryption`) what the storage server holds of encrypted data;
both show their outcomes in the same table and count them the same way.
"""

from __future__ import annotations

import time
from typing import Any

import jwt

ISSUER = "https://idp.demo.bailiwick.invalid"
AUDIENCE = "bailiwick"
# The variable the demo's proxies read the token secret from (`identity.jwt[].hs256_secret_env`).
SECRET_ENV = "BAILIWICK_DEMO_SECRET"  # noqa: S105 - a variable's name, not a secret

# caller, request, what it should get, what it got, what the storage shows, the check, what it was told.
Row = tuple[str, str, str, str, str, str, str]


def token(secret: str, jurisdiction: str, subject: str) -> str:
    """A caller's token from the demo's issuer, valid for five minutes."""
    now = int(time.time())
    return jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": subject, "iat": now,
                       "exp": now + 300, "jurisdiction": jurisdiction}, secret, algorithm="HS256")


def client(endpoint: str, caller_token: str | None) -> Any:
    """A boto3 S3 client of `endpoint` (path-style, no retries) sending `caller_token`, if any, with every request."""
    import boto3
    from botocore.config import Config as BotoConfig

    s3 = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="demo", aws_secret_access_key="demo-secret",  # noqa: S106 - moto accepts any
        config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    if caller_token is not None:
        def add_token(request: Any, **_: Any) -> None:
            request.headers["X-Bailiwick-Token"] = caller_token

        s3.meta.events.register("before-send.s3", add_token)
    return s3


def exists(store: Any, bucket: str, key: str) -> bool:
    """Whether the storage server (a client of it, past the proxy) holds `key` in `bucket`."""
    from botocore.exceptions import ClientError

    try:
        store.head_object(Bucket=bucket, Key=key)
    except ClientError:
        return False
    return True


def print_table(header: Row, rows: list[Row]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    print(line.format(*header).rstrip())
    print("  ".join("-" * w for w in widths).rstrip())
    for row in rows:
        print(line.format(*row).rstrip())
