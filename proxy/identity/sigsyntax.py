"""Reading an S3 signature's parts as AWS writes them, one way only: the shared grammar of SigV4 and SigV2.

Whatever version signed it, a request's signature is read from the
``Authorization`` header's scheme or from auth parameters in its query, and
the header values it signs must be readable one way only. This module holds
that grammar: the patterns, the query's auth parameters (each once, in its one
spelling), the signed-headers list (sorted, ``host`` and every ``x-amz-*``
header in it, nothing the proxy does not forward as received), and the
constant-time comparison of the signature computed with the one given.
Anything that does not read exactly so raises `MalformedSignature`; a signature
that is not the one computed raises `SignatureMismatch` (`compare`).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from multidict import MultiMapping

from proxy.config import ACCESS_KEY_ID
from proxy.errors import MalformedSignature, SignatureMismatch
from proxy.tags import HOP_BY_HOP, REQUEST_ONLY_DROPPED, ROUTING_HINTS_DROPPED, TAG_PREFIX

SIGV4 = "AWS4-HMAC-SHA256"
SIGV2 = "AWS"

_KEY = ACCESS_KEY_ID.pattern
SIGV4_HEADER = re.compile(r"AWS4-HMAC-SHA256 Credential=([^,\s]*), ?SignedHeaders=([^,\s]*), ?Signature=([^,\s]*)")
SIGV2_HEADER = re.compile(rf"AWS ({_KEY}):([A-Za-z0-9+/]{{27}}=)")
CREDENTIAL = re.compile(rf"({_KEY})/([0-9]{{8}})/([a-z0-9-]{{1,64}})/([a-z0-9-]{{1,64}})/aws4_request")
HEX64 = re.compile(r"[0-9a-f]{64}")
DIGITS = re.compile(r"[1-9][0-9]{0,11}")
SIGV2_SIGNATURE = re.compile(r"[A-Za-z0-9+/]{27}=")
_SIGNED_HEADERS = re.compile(r"[a-z0-9_.-]+(?:;[a-z0-9_.-]+)*")
# A signed header value: visible ASCII, spaces and tabs. Anything else could be decoded two ways.
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")

V4_PARAMS = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders",
             "X-Amz-Signature")
V2_PARAMS = ("AWSAccessKeyId", "Expires", "Signature")
# Lowered name -> the one spelling AWS reads. Other spellings are refused: a server may fold case.
_AUTH_PARAMS = {name.lower(): name for name in (*V4_PARAMS, *V2_PARAMS, "X-Amz-Security-Token")}
# Headers the proxy never forwards as received: a signature over them could not be checked upstream.
_NOT_FORWARDED = HOP_BY_HOP | REQUEST_ONLY_DROPPED | ROUTING_HINTS_DROPPED | {"authorization"}

HEADER_SYNTAX = ("the Authorization header must read AWS4-HMAC-SHA256 Credential=KEY/DATE/REGION/s3/aws4_request, "
                 "SignedHeaders=a;b, Signature=HEX (these three, in this order, once each) or AWS KEY:SIGNATURE")

Refusal = Callable[[str], MalformedSignature]


@dataclass(frozen=True, slots=True)
class Query:
    """The request-target's query, as pairs of raw (still percent-encoded) names and values."""

    raw: str
    pairs: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, target: str) -> Query:
        raw = target.partition("?")[2]
        return cls(raw, tuple((p.partition("=")[0], p.partition("=")[2]) for p in raw.split("&") if p))

    def auth(self) -> dict[str, str]:
        """The auth parameters, decoded; raises `MalformedSignature` for a repeat or another spelling."""
        found: dict[str, str] = {}
        for name, value in self.pairs:
            decoded = decode(name)
            canonical = _AUTH_PARAMS.get(decoded.lower())
            if canonical is None:
                continue
            if name != canonical:
                raise query_error(f"the query parameter {canonical} must be written exactly so")
            if canonical in found:
                raise query_error(f"the query parameter {canonical} is given more than once")
            found[canonical] = decode(value)
        return found

    def without(self, name: str) -> str:
        return "&".join(f"{n}={v}" for n, v in self.pairs if n != name)


def decode(text: str) -> str:
    """A query name or value percent-decoded; raises `MalformedSignature` when that is not UTF-8."""
    try:
        return unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        raise query_error("the query is not UTF-8 once percent-decoded") from None


def query_error(message: str) -> MalformedSignature:
    """The refusal of a presigned URL's auth parameters (S3's code for them)."""
    return MalformedSignature(message, code="AuthorizationQueryParametersError")


def aws_scheme(value: str) -> str:
    """SIGV4 or SIGV2 ("AWS"). Raises `MalformedSignature` for anything else.

    A token (``Bearer``) never gets here. "AWS4-HMAC-SHA256Credential=…", "aws4-hmac-sha256 …",
    a tab for the space, SigV4a, another scheme in front of SigV4's components: a storage
    server may read any of them as a signature (moto looks for "Credential=" whatever the
    scheme), so none of them is left to fall back to the caller's network.
    """
    scheme = value.split(" ", 1)[0]
    if scheme in (SIGV4, SIGV2):
        return scheme
    raise MalformedSignature(HEADER_SYNTAX)


def signed_headers(text: str, headers: MultiMapping[str], error: Refusal) -> dict[str, list[str]]:
    """The signed headers and their values, checked as AWS requires. Raises `error`'s exception."""
    if not _SIGNED_HEADERS.fullmatch(text):
        raise error("SignedHeaders must be lowercase header names separated by ';'")
    names = text.split(";")
    if names != sorted(set(names)):
        raise error("SignedHeaders must list each header once, in sorted order")
    if "host" not in names:
        raise error("the host header must be signed")
    signed: dict[str, list[str]] = {}
    for name in names:
        if name in _NOT_FORWARDED or name.startswith(TAG_PREFIX):
            raise error(f"the {name} header cannot be signed: the proxy does not forward it as received")
        values = header_values(headers, name, error)
        if not values:
            raise error(f"the signed header {name} is not in the request")
        if len(values) > 1:
            raise error(f"the signed header {name} is given more than once")
        signed[name] = values
    for name in headers:
        lower = name.lower()
        if lower.startswith("x-amz-") and lower not in signed:
            raise error(f"every x-amz-* header must be signed; {lower} is not")
    return signed


def header_values(headers: MultiMapping[str], name: str, error: Refusal) -> list[str]:
    """Every value of the header `name`, each checked by `checked_value`."""
    return [checked_value(name, value, error) for value in headers.getall(name, ())]


def checked_value(name: str, value: str, error: Refusal) -> str:
    """`value`, if it is visible ASCII, spaces and tabs only (anything else may be decoded two ways)."""
    if not _HEADER_VALUE.fullmatch(value):
        raise error(f"the signed header {name.lower()} holds characters other than visible ASCII")
    return value


def compare(expected: str, given: str) -> None:
    """Raises `SignatureMismatch` unless the two signatures are the same (compared in constant time)."""
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise SignatureMismatch("The request signature we calculated does not match the signature you provided. "
                                "Check your key and signing method.")
