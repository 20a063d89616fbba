"""SigV4: a request signed in its Authorization header or as a presigned URL, read and verified.

The header form is ``AWS4-HMAC-SHA256 Credential=KEY/DATE/REGION/s3/aws4_request,
SignedHeaders=a;b, Signature=HEX``, its date in ``X-Amz-Date`` (or a signed
``Date``) and its payload line in exactly one ``X-Amz-Content-SHA256``: a
SHA-256 the body is then held to, ``UNSIGNED-PAYLOAD``, or a streaming value
whose chunks are verified one by one (`ChunkSigning`). A presigned URL carries
the six ``X-Amz-*`` parameters, signs no payload, and is valid from its date
until its expiry. The expected signature is botocore's (`Signers.v4`).
"""

from __future__ import annotations

from multidict import MultiMapping

from proxy.errors import ExpiredSignature, MalformedSignature, RequestTimeTooSkewed
from proxy.identity.bodycheck import BodyCheck, ChunkSigning
from proxy.identity.chunksig import CONTENT_SHA256_MODES
from proxy.identity.keyring import Authenticated, Keyring
from proxy.identity.signers import SERVICE
from proxy.identity.sigsyntax import (
    DIGITS,
    HEADER_SYNTAX,
    HEX64,
    SIGV4,
    SIGV4_HEADER,
    V4_PARAMS,
    Query,
    compare,
    query_error,
    signed_headers,
)
from proxy.identity.sigtime import AMZ_DATE, MAX_PRESIGNED_SECONDS, MAX_SKEW_SECONDS, amz_time, signed_date

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_PAYLOADS = frozenset({UNSIGNED_PAYLOAD, *CONTENT_SHA256_MODES})


def verify_header(ring: Keyring, method: str, target: str, query: Query, headers: MultiMapping[str],
                  authorization: str) -> Authenticated:
    """A request signed in its Authorization header (scheme AWS4-HMAC-SHA256), verified."""
    match = SIGV4_HEADER.fullmatch(authorization)
    if match is None:
        raise MalformedSignature(HEADER_SYNTAX)
    credential, signed_list, signature = match.groups()
    key, scope_date = ring.credential(credential, MalformedSignature)
    if not HEX64.fullmatch(signature):
        raise MalformedSignature("the signature must be 64 lowercase hexadecimal digits")
    signed = signed_headers(signed_list, headers, MalformedSignature)
    # Like every x-amz-* header, X-Amz-Date is signed, so given once at most (`signed_headers`).
    moment, timestamp = signed_date(signed)
    if timestamp[:8] != scope_date:
        raise MalformedSignature("the credential's date is not the request's date")
    ring.check_skew(moment)
    payloads = headers.getall("X-Amz-Content-SHA256", ())
    if len(payloads) != 1:
        raise MalformedSignature("a SigV4 request needs exactly one X-Amz-Content-SHA256 header")
    payload = payloads[0]
    if payload not in _PAYLOADS and not HEX64.fullmatch(payload):
        raise MalformedSignature("X-Amz-Content-SHA256 must be UNSIGNED-PAYLOAD, a SHA-256 in lowercase hex, "
                                 "or STREAMING-AWS4-HMAC-SHA256-PAYLOAD", code="InvalidArgument")
    assert ring.signers is not None
    expected, signing_key = ring.signers.v4(
        key.secret.current(), key.rule.access_key_id, ring.region, method, target, query.raw, signed,
        payload, timestamp)
    compare(expected, signature)
    return Authenticated(key.rule, _body_check(payload, headers, signing_key, timestamp,
                                               f"{scope_date}/{ring.region}/{SERVICE}/aws4_request", signature),
                         ring.signing(key))


def verify_presigned(ring: Keyring, method: str, target: str, query: Query, headers: MultiMapping[str],
                     params: dict[str, str]) -> Authenticated:
    """A presigned URL (`params`: its decoded X-Amz-* auth parameters), verified."""
    missing = [name for name in V4_PARAMS if name not in params]
    if missing:
        raise query_error("a presigned URL needs X-Amz-Algorithm, X-Amz-Credential, X-Amz-Date, "
                          "X-Amz-Expires, X-Amz-SignedHeaders and X-Amz-Signature; missing: " + ", ".join(missing))
    if params["X-Amz-Algorithm"] != SIGV4:
        raise query_error("X-Amz-Algorithm must be AWS4-HMAC-SHA256")
    key, scope_date = ring.credential(params["X-Amz-Credential"], query_error)
    timestamp, expires, signature = params["X-Amz-Date"], params["X-Amz-Expires"], params["X-Amz-Signature"]
    if not AMZ_DATE.fullmatch(timestamp) or timestamp[:8] != scope_date:
        raise query_error("X-Amz-Date must read YYYYMMDDTHHMMSSZ, on the credential's date")
    if not DIGITS.fullmatch(expires) or int(expires) > MAX_PRESIGNED_SECONDS:
        raise query_error(f"X-Amz-Expires must be a number of seconds from 1 to {MAX_PRESIGNED_SECONDS}")
    if not HEX64.fullmatch(signature):
        raise query_error("X-Amz-Signature must be 64 lowercase hexadecimal digits")
    if "X-Amz-Content-SHA256" in headers:
        raise query_error("a presigned request carries no X-Amz-Content-SHA256 header (its payload is unsigned)")
    signed = signed_headers(params["X-Amz-SignedHeaders"], headers, query_error)
    moment, now = amz_time(timestamp), ring.clock()
    if moment - now > MAX_SKEW_SECONDS:
        raise RequestTimeTooSkewed("the presigned URL is dated in the future")
    if now > moment + int(expires):
        raise ExpiredSignature("Request has expired: the presigned URL is past its expiry")
    assert ring.signers is not None
    expected, _ = ring.signers.v4(
        key.secret.current(), key.rule.access_key_id, ring.region, method, target,
        query.without("X-Amz-Signature"), signed, UNSIGNED_PAYLOAD, timestamp)
    compare(expected, signature)
    return Authenticated(key.rule)


def _body_check(payload: str, headers: MultiMapping[str], signing_key: bytes, timestamp: str, scope: str,
                seed: str) -> BodyCheck | None:
    """What the signed payload line says the body must be: a SHA-256, chunk signatures, or nothing."""
    if HEX64.fullmatch(payload):
        return BodyCheck(sha256=payload)
    if payload not in CONTENT_SHA256_MODES:
        return None   # UNSIGNED-PAYLOAD: the body is the caller's to vouch for, as with S3
    lengths: list[str] = list(headers.getall("X-Amz-Decoded-Content-Length", []))
    if len(lengths) != 1 or not (lengths[0] == "0" or DIGITS.fullmatch(lengths[0])):
        raise MalformedSignature("an aws-chunked upload needs one X-Amz-Decoded-Content-Length header",
                                 code="MissingContentLength")
    trailers: list[str] = list(headers.getall("X-Amz-Trailer", []))
    if len(trailers) > 1 or (payload.endswith("-TRAILER") and not trailers):
        raise MalformedSignature("a -TRAILER upload names its trailer in exactly one X-Amz-Trailer header",
                                 code="InvalidArgument")
    signing = ChunkSigning(mode=payload, signing_key=signing_key, amz_date=timestamp, scope=scope,
                           seed_signature=seed, decoded_length=int(lengths[0]),
                           trailer=trailers[0].strip().lower() if trailers else None)
    signing.verifier()   # refuses now what no body could make right
    return BodyCheck(chunks=signing)
