"""The source of a server-side copy: the ``x-amz-copy-source`` header.

A copy moves data between buckets without passing through the caller, so its
source is a resource the policy must judge (docs/policies.md, "How a request is
decided", step 2). The header is ``[/]BUCKET/KEY[?versionId=ID]`` with the key
percent-encoded (botocore quotes it with ``safe="/~"``). The key is decoded
exactly once and checked by the same rules as a key in the path; access point
ARNs are refused because the bucket behind them is not in the header.

Codes: a value S3 cannot read either is S3's InvalidArgument, a bad bucket
name InvalidBucketName and a key over 1024 bytes KeyTooLongError, as S3 says;
an ARN, which S3 reads but the proxy will not, is the proxy's own
InvalidRequest.
"""

from __future__ import annotations

from proxy.domain import Resource
from proxy.errors import BadRequest
from proxy.s3.names import check_bucket_name
from proxy.storage.keys import check_key
from proxy.storage.uri import PATH_CHARS, UNRESERVED, describe, first_outside, percent_decode

HEADER = "x-amz-copy-source"
_CODE = "InvalidArgument"
_VERSION_PREFIX = "versionId="
# botocore appends the version id unencoded, and S3 version ids contain "+" and
# "/"; the id does not change which resource is read, so it is only kept clear
# of delimiters that could smuggle in another parameter.
_VERSION_CHARS = UNRESERVED | frozenset("+/=%")


def parse_copy_source(value: str) -> Resource:
    """The resource an ``x-amz-copy-source`` value names. Raises `BadRequest`."""
    for char in value:
        if not 0x21 <= ord(char) <= 0x7E:
            raise BadRequest(
                f"the {HEADER} header contains a space, control or non-ASCII character "
                f"({describe(char)})",
                code=_CODE,
            )
    source = value.removeprefix("/")
    if source[:4].lower() == "arn:":
        raise BadRequest("copy sources in ARN form are not supported", code="InvalidRequest")
    source, question, query = source.partition("?")
    if question:
        version = query.removeprefix(_VERSION_PREFIX)
        if version == query or not version or first_outside(version, _VERSION_CHARS) is not None:
            raise BadRequest(
                f"the only parameter allowed in the {HEADER} header is versionId", code=_CODE
            )
    bad = first_outside(source, PATH_CHARS)
    if bad is not None:
        raise BadRequest(f"the {HEADER} header must not contain {describe(bad)} unencoded", code=_CODE)
    bucket, slash, raw_key = source.partition("/")
    if not slash or not bucket or not raw_key:
        raise BadRequest(f"the {HEADER} header must name BUCKET/KEY", code=_CODE)
    if "%" in bucket:
        raise BadRequest(f"the bucket in the {HEADER} header must not be percent-encoded", code=_CODE)
    check_bucket_name(bucket)
    where = f"the key in the {HEADER} header"
    key = percent_decode(raw_key, where, code=_CODE)
    check_key(key, where, code=_CODE)
    return Resource("s3", bucket, key)
