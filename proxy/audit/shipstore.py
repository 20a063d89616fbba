"""The store side of shipping: the bucket with Object Lock, through a botocore client.

Why botocore (and its own thread): it finds credentials the standard AWS way
(environment, web identity / IRSA, the instance's role) and refreshes them, signs, and
speaks S3's Object Lock headers; its calls block, so only the shipper's thread makes them,
never the event loop. Retries are the shipper's (with its own backoff), so the client tries
each call once. The calls, all of which the shipping role must be allowed
(docs/deployment.md): ``s3:GetBucketLocation`` (at start), ``s3:ListBucket`` and
``s3:GetObject`` (where a chain's shipped part ends, at start), ``s3:PutObject`` and
``s3:PutObjectRetention`` (each piece, with its retention).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
from typing import Any

import botocore.session
from botocore.config import Config as BotoConfig

from proxy.audit.shiplayout import piece_seq
from proxy.config.auditship import AuditShipConfig

# What GetBucketLocation answers for the regions that predate LocationConstraint.
_LEGACY_LOCATIONS = {"": "us-east-1", "EU": "eu-west-1"}


class ShipStore:
    """One bucket and prefix; every method blocks (call them from the shipper's thread)."""

    def __init__(self, config: AuditShipConfig, region: str) -> None:
        self.config = config
        self.region = region
        style = "path" if config.endpoint_url else "auto"
        self._client: Any = botocore.session.get_session().create_client(
            "s3", region_name=region, endpoint_url=config.endpoint_url,
            config=BotoConfig(connect_timeout=5, read_timeout=30, retries={"max_attempts": 1, "mode": "standard"},
                              s3={"addressing_style": style}),
        )

    def bucket_region(self) -> str:
        answer = self._client.get_bucket_location(Bucket=self.config.bucket)
        location = answer.get("LocationConstraint") or ""
        return _LEGACY_LOCATIONS.get(location, location)

    def last_piece(self, chain: str) -> tuple[int, bytes] | None:
        """The highest seq shipped of `chain` and that piece's bytes; None when nothing is shipped yet."""
        chain_prefix = f"{self.config.prefix}{chain}/"
        last: tuple[int, str] | None = None
        for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.config.bucket,
                                                                            Prefix=chain_prefix):
            for item in page.get("Contents", ()):
                seq = piece_seq(item["Key"], chain_prefix)
                if seq is not None and (last is None or seq > last[0]):
                    last = (seq, item["Key"])
        if last is None:
            return None
        body = self._client.get_object(Bucket=self.config.bucket, Key=last[1])["Body"]
        try:
            return last[0], bytes(body.read())
        finally:
            body.close()

    def put_piece(self, key: str, data: bytes, metadata: dict[str, str]) -> None:
        """Upload a piece with its retention (Object Lock mode and retain-until date) and Content-MD5."""
        until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=self.config.retention_days)
        self._client.put_object(
            Bucket=self.config.bucket, Key=key, Body=data,
            ContentMD5=base64.b64encode(hashlib.md5(data).digest()).decode(),   # noqa: S324 - S3's integrity check
            ContentType="application/x-ndjson",
            ObjectLockMode=str(self.config.mode), ObjectLockRetainUntilDate=until,
            Metadata=metadata,
        )

    def close(self) -> None:
        self._client.close()
