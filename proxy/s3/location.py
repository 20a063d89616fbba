"""Which bucket and key an S3 request-target's path names, given the bucket its Host named.

The path is the raw one, already read strictly (`proxy.storage.target`);
path-style requests name the bucket in the first segment, virtual-hosted ones
in the Host (`proxy.s3.host`). The key is decoded exactly once.
"""

from __future__ import annotations

from proxy.errors import BadRequest
from proxy.s3.names import check_bucket_name
from proxy.storage.keys import check_key
from proxy.storage.uri import percent_decode


def bucket_and_key(path: str, host_bucket: str | None) -> tuple[str | None, str | None]:
    """(bucket, decoded key) of a raw path; None for what it does not name. Raises `BadRequest`."""
    if host_bucket is not None:
        rest = path[1:]
        bucket = host_bucket
    else:
        if path == "/":
            return None, None
        bucket, _, rest = path[1:].partition("/")
        if "%" in bucket:
            raise BadRequest("the bucket name in the path must not be percent-encoded", code="InvalidURI")
        if not bucket:
            raise BadRequest("the path has an empty bucket segment", code="InvalidURI")
        if bucket in (".", ".."):
            raise BadRequest(f"the path contains a dot segment ({bucket!r})", code="InvalidURI")
        check_bucket_name(bucket)
    if not rest:
        return bucket, None
    key = percent_decode(rest, "the object key")
    check_key(key)
    return bucket, key
