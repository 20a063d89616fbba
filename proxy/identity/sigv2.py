"""SigV2: a request signed ``AWS KEY:SIGNATURE`` in its Authorization header, or a SigV2 presigned URL.

SigV2 signs the method, ``Content-MD5``, ``Content-Type``, the date (the
``Date`` header, empty when ``X-Amz-Date`` is sent; a presigned URL's
``Expires``), every ``x-amz-*`` header, the path and a fixed list of
sub-resources (`SIGV2_SIGNED_PARAMS`). What it leaves unsigned is refused
when it could change what S3 does: a query parameter that selects an
operation, a value that botocore would sign after decoding ambiguously, a
streaming payload claim. A presigned URL carries ``AWSAccessKeyId``,
``Expires`` and ``Signature``, and the ``x-amz-*`` headers an SDK signed in
its query. The expected signature is botocore's (`Signers.v2`).
"""

from __future__ import annotations

from multidict import MultiMapping

from proxy.config import ACCESS_KEY_ID
from proxy.errors import ExpiredSignature, MalformedSignature
from proxy.identity.bodycheck import BodyCheck
from proxy.identity.keyring import Authenticated, Keyring
from proxy.identity.sigsyntax import (
    DIGITS,
    HEADER_SYNTAX,
    HEX64,
    SIGV2_HEADER,
    SIGV2_SIGNATURE,
    V2_PARAMS,
    Query,
    checked_value,
    compare,
    decode,
    header_values,
    query_error,
)
from proxy.identity.sigtime import MAX_PRESIGNED_SECONDS, http_time
from proxy.s3.operations import ORDINARY_PARAMS

# The sub-resources botocore's SigV2 signer (HmacV1Auth.QSAOfInterest) puts in what it signs.
SIGV2_SIGNED_PARAMS = frozenset({
    "accelerate", "acl", "cors", "defaultObjectAcl", "location", "logging", "partNumber", "policy",
    "requestPayment", "torrent", "versioning", "versionId", "versions", "website", "uploads", "uploadId",
    "response-content-type", "response-content-language", "response-expires", "response-cache-control",
    "response-content-disposition", "response-content-encoding", "delete", "lifecycle", "tagging", "restore",
    "storageClass", "notification", "replication", "analytics", "metrics", "inventory", "select",
    "select-type", "object-lock",
})


def verify(ring: Keyring, method: str, target: str, query: Query, headers: MultiMapping[str],
           authorization: str | None, params: dict[str, str] | None) -> Authenticated:
    """A SigV2 request, verified: signed in `authorization`, or presigned (`params`: its auth parameters)."""
    amz: dict[str, list[str]] = {}
    for name in headers:
        lower = name.lower()
        if lower.startswith("x-amz-") and lower not in amz:
            amz[lower] = header_values(headers, name, MalformedSignature)
    standard = {name: headers.getall(name, ()) for name in ("Content-MD5", "Content-Type")}
    if params is None:
        assert authorization is not None
        match = SIGV2_HEADER.fullmatch(authorization)
        if match is None:
            raise MalformedSignature(HEADER_SYNTAX)
        key_id, signature = match.groups()
        if "x-amz-date" in amz:
            if len(amz["x-amz-date"]) != 1:
                raise MalformedSignature("the request has more than one X-Amz-Date header")
            moment, date_line = http_time(amz["x-amz-date"][0]), ""   # AWS: then the Date line is empty
        else:
            dates = headers.getall("Date", ())
            if len(dates) != 1:
                raise MalformedSignature("a SigV2 request needs exactly one Date or X-Amz-Date header")
            moment, date_line = http_time(dates[0]), dates[0]
        ring.check_skew(moment)
    else:
        missing = [name for name in V2_PARAMS if name not in params]
        if missing:
            raise query_error("a SigV2 presigned URL needs AWSAccessKeyId, Expires and Signature; missing: "
                              + ", ".join(missing))
        key_id, signature, date_line = params["AWSAccessKeyId"], params["Signature"], params["Expires"]
        if not ACCESS_KEY_ID.fullmatch(key_id) or not SIGV2_SIGNATURE.fullmatch(signature):
            raise query_error("AWSAccessKeyId or Signature is malformed")
        if not DIGITS.fullmatch(date_line):
            raise query_error("Expires must be a time in seconds since 1970")
        now = ring.clock()
        if now > int(date_line):
            raise ExpiredSignature("Request has expired: the presigned URL is past its expiry")
        if int(date_line) - now > MAX_PRESIGNED_SECONDS:
            raise query_error(f"Expires may be at most {MAX_PRESIGNED_SECONDS} seconds from now")
        _hoist_query_headers(query, headers, amz)
    _refuse_unsigned_params(query, presigned=params is not None)
    key = ring.key(key_id)
    signed: list[tuple[str, str]] = []
    for name, values in standard.items():
        if len(values) > 1:
            raise MalformedSignature(f"the request has more than one {name} header")
        signed.extend((name, checked_value(name, value, MalformedSignature)) for value in values)
    signed.extend((name, value) for name, values in amz.items() for value in values)
    bucket = ring.virtual_bucket(headers) if ring.virtual_bucket is not None else None
    assert ring.signers is not None
    expected = ring.signers.v2(key.secret.current(), key_id, method, target, signed, date_line, bucket)
    compare(expected, signature)
    # SigV2 signs no payload; a SHA-256 the caller claims all the same is held to.
    payloads = amz.get("x-amz-content-sha256", [])
    if payloads and (len(payloads) > 1 or payloads[0].startswith("STREAMING-")):
        raise MalformedSignature("a SigV2 request cannot carry chunk signatures", code="InvalidArgument")
    body = BodyCheck(sha256=payloads[0]) if payloads and HEX64.fullmatch(payloads[0]) else None
    return Authenticated(key.rule, body)


def _hoist_query_headers(query: Query, headers: MultiMapping[str], amz: dict[str, list[str]]) -> None:
    """Adds to `amz` the x-amz-* headers a presigned URL carries in its query.

    SDKs carry the x-amz-* headers they signed in the query: S3 reads them as those headers,
    so they are signed as such, and never given twice. (They copy Content-Type and Content-MD5
    there too, but S3 signs the headers sent: a copy that says otherwise is refused.)
    """
    hoisted: set[str] = set()
    for raw_name, raw_value in query.pairs:
        name, value = decode(raw_name).lower(), decode(raw_value)
        if name.startswith("x-amz-"):
            if name in hoisted or name in headers:
                raise query_error(f"{name} is given twice (in the query, or there and as a header)")
            hoisted.add(name)
            amz[name] = [value]
        elif name in ("content-md5", "content-type") and list(headers.getall(name, [])) != [value]:
            raise query_error(f"the query's {name} is not the request's {name} header")


def _refuse_unsigned_params(query: Query, *, presigned: bool) -> None:
    """Refuse a SigV2 query parameter the signature does not cover but that selects what S3 does.

    SigV2 signs the path and a fixed list of sub-resources only (botocore's
    ``HmacV1Auth.QSAOfInterest``): ``?retention``, ``?attributes``, ``?id=``,
    ``?ownershipControls``... added to a signed URL would turn one operation into
    another under the signer's name. Listing controls and response overrides
    (`ORDINARY_PARAMS`) select no operation and pass, unsigned, as with S3; so does
    ``list-type`` (ListObjects or ListObjectsV2, the same listing).
    """
    error = query_error if presigned else MalformedSignature
    for raw_name, raw_value in query.pairs:
        name = decode(raw_name)
        if name in SIGV2_SIGNED_PARAMS:
            if "&" in decode(raw_value):
                # botocore signs the decoded value: "a=1%26b%3D2" would sign as "a=1&b=2".
                raise error(f"the value of {name} holds an encoded '&', which SigV2 signs ambiguously")
        elif name.lower().startswith("x-amz-") or name.lower() in ("content-type", "content-md5"):
            if not presigned:   # signed as headers only in a presigned URL
                raise error(f"the query parameter {name} is not covered by a SigV2 Authorization header")
        elif name not in ORDINARY_PARAMS and name != "list-type":   # ListObjects or V2: one listing
            raise error(f"SigV2 does not sign the query parameter {name}, which selects what S3 does: "
                        "sign the request with SigV4")
