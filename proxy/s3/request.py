"""An S3 request as the policy sees it: operation, bucket, key, access and copy source.

`parse_request` is the one entry point from the server: it reads the method,
the raw request-target and the headers, and either returns an `S3Request`
that names every resource the request touches or raises `BadRequest`. It
never guesses: a request that S3 could read as touching other data than the
proxy judged is refused (POLICY.md, "How a request is decided", step 2).

The body is never read here. A multi-object delete names its keys in the
body; `S3Request.reads_delete_body` tells the caller to read it (bounded by
`S3Settings.max_delete_body_bytes`) and call `proxy.s3.delete.parse_delete_body`.
"""

from __future__ import annotations

from dataclasses import dataclass

from multidict import CIMultiDict, CIMultiDictProxy

from proxy.config import S3Settings
from proxy.domain import Access, Resource
from proxy.errors import BadRequest, PayloadTooLarge
from proxy.s3.copysource import HEADER as COPY_SOURCE
from proxy.s3.copysource import parse_copy_source
from proxy.s3.host import bucket_from_host
from proxy.s3.names import check_key
from proxy.s3.operations import LIST_BUCKETS, Level, Operation, Scope, classify
from proxy.s3.target import Target, locate, parse_target

METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE"})
# Headers that ask a server to perform another method than the one the proxy judged.
_METHOD_OVERRIDES = ("X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override")
_NO_BODY_METHODS = frozenset({"GET", "HEAD", "DELETE"})
MAX_CONTENT_LENGTH = 5 * 1024**3  # S3's largest single PUT or part
# RenameObject moves a key named in this header; its source is not judged, so it is refused.
_RENAME_SOURCE = "x-amz-rename-source"

Headers = CIMultiDictProxy[str] | CIMultiDict[str]


@dataclass(frozen=True, slots=True)
class S3Request:
    """What an S3 request does, for the policy engine, the audit log and metrics."""

    operation: str  # S3 API name ("GetObject", "ListObjectsV2", ...; "Unknown" if not recognised)
    bucket: str | None  # None only for service-level requests (ListBuckets)
    key: str | None  # decoded object key; None for bucket- and service-level requests
    access: Access  # the target; for a listing, key is the decoded prefix and listing=True
    copy_from: Resource | None  # the source of CopyObject / UploadPartCopy
    reads_delete_body: bool  # POST ?delete: read the body, then parse_delete_body


def parse_request(method: str, target: str, headers: Headers, settings: S3Settings) -> S3Request:
    """Read an S3 request. Raises `BadRequest` for anything not readable unambiguously."""
    if method not in METHODS:
        raise BadRequest(f"the method {method!r} is not supported", resource=method)
    for name in _METHOD_OVERRIDES:
        if name in headers:
            raise BadRequest(f"the {name} header is not accepted")
    if method in _NO_BODY_METHODS and _declares_body(headers):
        # No S3 operation reads one; a server that ignores it would read it as the next request.
        raise BadRequest(f"a {method} request must not have a body")
    for value in headers.getall("Content-Length", []):
        # aiohttp's pure-Python parser takes any number; S3 takes at most 5 GiB in one request.
        if value.strip().isdigit() and int(value) > MAX_CONTENT_LENGTH:
            raise PayloadTooLarge(f"the request body is over S3's {MAX_CONTENT_LENGTH}-byte limit")
    parsed = parse_target(target)
    location = locate(parsed, bucket_from_host(headers, settings))
    copy_source = _copy_source_value(headers, parsed)
    if _RENAME_SOURCE in headers or any(p.name.lower() == _RENAME_SOURCE for p in parsed.params):
        raise BadRequest("RenameObject is not supported: its source is not checked by the policy")

    bucket, key = location.bucket, location.key
    if bucket is None:
        op = classify(Level.SERVICE, method, parsed.params)
        if op is not LIST_BUCKETS or copy_source is not None:
            raise BadRequest("the only request accepted without a bucket is ListBuckets (GET /)")
        return S3Request(op.name, None, None, Access(op.action, Resource("s3", "", "")), None, False)

    level = Level.OBJECT if key is not None else Level.BUCKET
    op = classify(level, method, parsed.params)
    if level is Level.BUCKET and method == "POST" and op.name == "Unknown":
        # A POST to a bucket is otherwise a browser form upload: the key is in the body.
        raise BadRequest("POST to a bucket is supported only for DeleteObjects (?delete)")
    copy_from = None
    if copy_source is not None:
        if op.copy is None:
            raise BadRequest(
                f"{COPY_SOURCE} is accepted only on CopyObject and UploadPartCopy (PUT to an object)"
            )
        op = op.copy
        copy_from = parse_copy_source(copy_source)
    return S3Request(
        operation=op.name,
        bucket=bucket,
        key=key,
        access=_access(op, bucket, key, parsed),
        copy_from=copy_from,
        reads_delete_body=op.reads_delete_body,
    )


def _access(op: Operation, bucket: str, key: str | None, target: Target) -> Access:
    if op.scope is Scope.KEY:
        return Access(op.action, Resource("s3", bucket, key or ""))
    if op.scope is Scope.PREFIX:
        param = target.get("prefix")
        prefix = (param.value or "") if param is not None else ""
        check_key(prefix, "the prefix query parameter")
        return Access(op.action, Resource("s3", bucket, prefix), listing=True)
    # A bucket's configuration governs every key in it, so it touches every dataset nested in it.
    return Access(op.action, Resource("s3", bucket, ""), listing=op.scope is Scope.WHOLE_BUCKET)


def _declares_body(headers: Headers) -> bool:
    """Whether the headers frame a body: any Transfer-Encoding, or a Content-Length but "0"."""
    if "Transfer-Encoding" in headers:
        return True
    return any(value.strip() != "0" for value in headers.getall("Content-Length", []))


def _copy_source_value(headers: Headers, target: Target) -> str | None:
    """The copy source from the header or, in a presigned URL, the query; never both."""
    values = headers.getall(COPY_SOURCE, [])
    if len(values) > 1:
        raise BadRequest(f"the {COPY_SOURCE} header is repeated")
    in_query = [p for p in target.params if p.name.lower() == COPY_SOURCE]
    if values and in_query:
        raise BadRequest(f"{COPY_SOURCE} is given both as a header and as a query parameter")
    if in_query:
        value = in_query[0].value
        if not value:
            raise BadRequest(f"the {COPY_SOURCE} query parameter is empty")
        return value
    return values[0] if values else None

