"""S3 access keys as identity: the proxy authenticates the caller itself, as an S3 gateway does.

The AWS CLI, rclone, s3cmd and most SDKs sign every request with an access
key and offer no way to send another header. The operator maps access key
ids to a subject and a jurisdiction (``identity.access_keys``) and gives the
proxy each key's secret, as the storage server has it. A request signed with a
mapped key is taken as that caller only once its signature verifies with that
key's secret: reading the key id alone would let anyone who knows a key id
(key ids are not secret) be judged as its owner, and would leave the proxy
and the storage server to read one header two ways.

What is accepted, exactly as AWS documents it and nothing looser:

* ``Authorization: AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/s3/aws4_request, SignedHeaders=a;b, Signature=HEX``
  (SigV4): the three components, in this order, once each, separated by
  ``,`` and at most one space; ``host`` and every ``x-amz-*`` header of the
  request signed; ``x-amz-content-sha256`` present (``UNSIGNED-PAYLOAD``, a
  SHA-256 in hex, or a streaming value whose chunks are verified one by one);
* ``Authorization: AWS AKID:SIGNATURE`` (SigV2);
* a presigned URL: ``X-Amz-Algorithm``, ``X-Amz-Credential``, ``X-Amz-Date``,
  ``X-Amz-Expires``, ``X-Amz-SignedHeaders``, ``X-Amz-Signature`` once each
  (SigV4), or ``AWSAccessKeyId``, ``Expires``, ``Signature`` once each (SigV2).

The signed date must be within 15 minutes of the proxy's clock (a presigned
URL: from its date until its expiry, at most 7 days); the credential scope
must name the region the proxy serves (`IdentityConfig.access_key_region`)
and the service ``s3``. A request that signs in more than one way, names an
auth parameter twice or in another spelling, or carries temporary credentials
(a security token) is refused. The expected signature is computed by
botocore's own signers (`S3SigV4Auth`, `HmacV1Auth`), from the request-target
and header values exactly as they will be forwarded, and compared in constant
time.

A secret is never logged; one mounted as a file is read again within a
second of a change (a rotated Kubernetes Secret), and a file that cannot be
read keeps the last good secret.
"""

from __future__ import annotations

import calendar
import hmac
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

from multidict import MultiMapping

from proxy.config import ACCESS_KEY_ID, AccessKeyRule, access_key_secret_problem, read_secret_file
from proxy.errors import (
    ConfigError,
    ExpiredSignature,
    MalformedSignature,
    RequestTimeTooSkewed,
    SignatureMismatch,
    UnknownAccessKey,
)
from proxy.identity.bodycheck import BodyCheck, ChunkSigning
from proxy.identity.chunksig import CONTENT_SHA256_MODES
from proxy.s3.operations import ORDINARY_PARAMS
from proxy.s3.resign import _canonical_path, _canonical_query
from proxy.tags import HOP_BY_HOP, REQUEST_ONLY_DROPPED, ROUTING_HINTS_DROPPED, TAG_PREFIX

SIGV4 = "AWS4-HMAC-SHA256"
SERVICE = "s3"
# AWS's bounds: a signed date at most 15 minutes from the server's clock, a presigned URL valid 7 days at most.
MAX_SKEW_SECONDS = 15 * 60
MAX_PRESIGNED_SECONDS = 7 * 24 * 3600
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
# A mounted secret file is looked at again at most this often.
_FILE_CHECK_SECONDS = 1.0
# Signing keys remembered (a few a key: a day's, the next day's around midnight, a rotated secret's).
_SIGNING_KEYS = 1024

_KEY = ACCESS_KEY_ID.pattern
_SIGV4_HEADER = re.compile(r"AWS4-HMAC-SHA256 Credential=([^,\s]*), ?SignedHeaders=([^,\s]*), ?Signature=([^,\s]*)")
_SIGV2_HEADER = re.compile(rf"AWS ({_KEY}):([A-Za-z0-9+/]{{27}}=)")
_CREDENTIAL = re.compile(rf"({_KEY})/([0-9]{{8}})/([a-z0-9-]{{1,64}})/([a-z0-9-]{{1,64}})/aws4_request")
_SIGNED_HEADERS = re.compile(r"[a-z0-9_.-]+(?:;[a-z0-9_.-]+)*")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_AMZ_DATE = re.compile(r"[0-9]{8}T[0-9]{6}Z")
_DIGITS = re.compile(r"[1-9][0-9]{0,11}")
_SIGV2_SIGNATURE = re.compile(r"[A-Za-z0-9+/]{27}=")
# A signed header value: visible ASCII, spaces and tabs. Anything else could be decoded two ways.
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")

_V4_PARAMS = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires", "X-Amz-SignedHeaders",
              "X-Amz-Signature")
_V2_PARAMS = ("AWSAccessKeyId", "Expires", "Signature")
# Lowered name -> the one spelling AWS reads. Other spellings are refused: a server may fold case.
_AUTH_PARAMS = {name.lower(): name for name in (*_V4_PARAMS, *_V2_PARAMS, "X-Amz-Security-Token")}
# Headers the proxy never forwards as received: a signature over them could not be checked upstream.
_NOT_FORWARDED = HOP_BY_HOP | REQUEST_ONLY_DROPPED | ROUTING_HINTS_DROPPED | {"authorization"}
_PAYLOADS = frozenset({UNSIGNED_PAYLOAD, *CONTENT_SHA256_MODES})
# The sub-resources botocore's SigV2 signer (HmacV1Auth.QSAOfInterest) puts in what it signs.
_SIGV2_SIGNED_PARAMS = frozenset({
    "accelerate", "acl", "cors", "defaultObjectAcl", "location", "logging", "partNumber", "policy",
    "requestPayment", "torrent", "versioning", "versionId", "versions", "website", "uploads", "uploadId",
    "response-content-type", "response-content-language", "response-expires", "response-cache-control",
    "response-content-disposition", "response-content-encoding", "delete", "lifecycle", "tagging", "restore",
    "storageClass", "notification", "replication", "analytics", "metrics", "inventory", "select",
    "select-type", "object-lock",
})

HEADER_SYNTAX = ("the Authorization header must read AWS4-HMAC-SHA256 Credential=KEY/DATE/REGION/s3/aws4_request, "
                 "SignedHeaders=a;b, Signature=HEX (these three, in this order, once each) or AWS KEY:SIGNATURE")


@dataclass(frozen=True, slots=True)
class Authenticated:
    """A request whose signature verified: who signed it, and what its body must be."""

    rule: AccessKeyRule
    body: BodyCheck | None = None


@dataclass(frozen=True, slots=True)
class _Query:
    """The request-target's query, as pairs of raw (still percent-encoded) names and values."""

    raw: str
    pairs: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, target: str) -> _Query:
        raw = target.partition("?")[2]
        return cls(raw, tuple((p.partition("=")[0], p.partition("=")[2]) for p in raw.split("&") if p))

    def auth(self) -> dict[str, str]:
        """The auth parameters, decoded; raises `MalformedSignature` for a repeat or another spelling."""
        found: dict[str, str] = {}
        for name, value in self.pairs:
            decoded = _decode(name)
            canonical = _AUTH_PARAMS.get(decoded.lower())
            if canonical is None:
                continue
            if name != canonical:
                raise _query_error(f"the query parameter {canonical} must be written exactly so")
            if canonical in found:
                raise _query_error(f"the query parameter {canonical} is given more than once")
            found[canonical] = _decode(value)
        return found

    def without(self, name: str) -> str:
        return "&".join(f"{n}={v}" for n, v in self.pairs if n != name)


def _decode(text: str) -> str:
    try:
        return unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        raise _query_error("the query is not UTF-8 once percent-decoded") from None


def _query_error(message: str) -> MalformedSignature:
    return MalformedSignature(message, code="AuthorizationQueryParametersError")


class SecretSource:
    """One access key's secret: fixed (from the environment) or a file read again when it changes."""

    def __init__(self, rule: AccessKeyRule, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._path = rule.secret_access_key_file
        self._clock = clock
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._checked = 0.0
        if self._path is None:
            if rule.secret_access_key is None:
                raise ConfigError(f"identity.access_keys: {rule.access_key_id} has no secret: set "
                                  "secret_access_key_env or secret_access_key_file")
            self._secret = rule.secret_access_key
        else:
            try:
                self._secret, self._stamp = self._read(self._path)
            except OSError as exc:
                raise ConfigError(f"identity.access_keys: {rule.access_key_id}: cannot read the secret file "
                                  f"{self._path}: {exc.strerror}") from exc
            if access_key_secret_problem(self._secret):
                raise ConfigError(f"identity.access_keys: {rule.access_key_id}: the secret file {self._path} "
                                  "does not hold a secret access key")
            self._checked = clock()

    def __repr__(self) -> str:
        return f"SecretSource(file={self._path})"   # never the secret

    @staticmethod
    def _read(path: Path) -> tuple[str, tuple[int, int, int]]:
        info = path.stat()   # follows the ..data symlink Kubernetes swaps on rotation
        return read_secret_file(path), (info.st_ino, info.st_mtime_ns, info.st_size)

    def current(self) -> str:
        path = self._path
        if path is None:
            return self._secret
        now = self._clock()
        if now - self._checked < _FILE_CHECK_SECONDS:
            return self._secret
        with self._lock:
            self._checked = now
            try:
                info = path.stat()
                if (info.st_ino, info.st_mtime_ns, info.st_size) != self._stamp:
                    secret, stamp = self._read(path)
                    if access_key_secret_problem(secret) is None:
                        self._secret, self._stamp = secret, stamp
            except OSError:
                pass   # a Secret being swapped: keep the last good one
        return self._secret


@dataclass(frozen=True, slots=True)
class _Key:
    rule: AccessKeyRule
    secret: SecretSource = field(repr=False)


class _Signers:
    """botocore's SigV4 and SigV2 signers, fed the request exactly as it will be forwarded."""

    def __init__(self) -> None:
        # Imported only when access keys are configured (botocore costs ~15 MiB and ~0.2 s).
        from botocore.auth import HmacV1Auth, S3SigV4Auth
        from botocore.awsrequest import AWSRequest, HTTPHeaders
        from botocore.credentials import Credentials

        class V4(S3SigV4Auth):  # type: ignore[misc]  # botocore ships no type hints
            # The headers signed are the ones the caller named, with the values received;
            # the payload line is the caller's x-amz-content-sha256 (UNSIGNED-PAYLOAD presigned).
            def headers_to_sign(self, request: Any) -> Any:
                return request.context["signed"]

            def payload(self, request: Any) -> str:
                return str(request.context["payload"])

        class V2(HmacV1Auth):  # type: ignore[misc]
            def __init__(self, credentials: Any, date: str) -> None:
                super().__init__(credentials)
                self._date = date

            def _get_date(self) -> str:   # the Date line: the request's own, never "now"
                return self._date

        self._v4, self._v2 = V4, V2
        self._request, self._headers, self._credentials = AWSRequest, HTTPHeaders, Credentials
        # (secret, day, region) -> the SigV4 signing key of that day.
        self._keys: dict[tuple[str, str, str], bytes] = {}

    def v4(self, secret: str, key_id: str, region: str, method: str, target: str, query: str,
           signed: dict[str, list[str]], payload: str, timestamp: str) -> tuple[str, bytes]:
        """The SigV4 signature of this request, and the signing key (for chunk signatures)."""
        path = target.partition("?")[0]
        url = "http://host" + _canonical_path(path)
        canonical_query = _canonical_query(query)
        if canonical_query:
            url += "?" + canonical_query
        request = self._request(method=method, url=url)
        request.context.update(signed=_SignedHeaders(signed), payload=payload, timestamp=timestamp)
        auth = self._v4(self._credentials(key_id, secret), SERVICE, region)
        string_to_sign = auth.string_to_sign(request, auth.canonical_request(request))
        # botocore's `signature` derives the day's signing key anew each time (four HMACs, two
        # thirds of the cost); the key is the same all day, so it is derived once, with its `_sign`.
        cached = (secret, timestamp[:8], region)
        key = self._keys.get(cached)
        if key is None:
            key = auth._sign(f"AWS4{secret}".encode(), timestamp[:8])
            for part in (region, SERVICE, "aws4_request"):
                key = auth._sign(key, part)
            if len(self._keys) >= _SIGNING_KEYS:
                self._keys.clear()
            self._keys[cached] = key
        return str(auth._sign(key, string_to_sign, hex=True)), bytes(key)

    def v2(self, secret: str, key_id: str, method: str, target: str, headers: list[tuple[str, str]],
           date: str, bucket: str | None) -> str:
        """The SigV2 signature of this request (`bucket`: the one a virtual-hosted Host names)."""
        split = urlsplit("http://host" + target)
        box = self._headers()
        for name, value in headers:
            box[name] = value   # HTTPHeaders: assignment adds
        auth = self._v2(self._credentials(key_id, secret), date)
        auth_path = f"/{bucket}{split.path}" if bucket is not None else None
        return str(auth.sign_string(auth.canonical_string(method, split, box, auth_path=auth_path)))


class _SignedHeaders(dict[str, list[str]]):
    """The signed headers as botocore's canonicaliser reads them (`get_all`)."""

    def get_all(self, name: str) -> list[str]:
        return self[name]


class AccessKeyTable:
    """Access key id -> its rule and secret (`identity.access_keys`); verifies signatures."""

    def __init__(
        self, rules: Iterable[AccessKeyRule], region: str | None = None, *,
        clock: Callable[[], float] = time.time,
        virtual_bucket: Callable[[MultiMapping[str]], str | None] | None = None,
    ) -> None:
        """`virtual_bucket`: the bucket a virtual-hosted Host names (SigV2 signs it), None when path-style."""
        self._keys: dict[str, _Key] = {}
        for rule in rules:
            if rule.access_key_id in self._keys:
                raise ConfigError(f"identity.access_keys: {rule.access_key_id} is listed twice")
            self._keys[rule.access_key_id] = _Key(rule, SecretSource(rule))
        if self._keys and region is None:
            raise ConfigError("identity.access_key_region: access keys are verified against the region callers "
                              "sign for: set region (or identity.access_key_region)")
        self._region = region or ""
        self._clock = clock
        self._virtual_bucket = virtual_bucket
        self._signers = _Signers() if self._keys else None

    def __bool__(self) -> bool:
        return bool(self._keys)

    def authenticate(self, method: str, target: str, headers: MultiMapping[str]) -> Authenticated | None:
        """Who signed this request, verified; None if it carries no AWS signature at all.

        Raises `UnknownAccessKey` for a well-formed signature by a key the proxy does not
        hold (the caller may fall back to other ways of identifying it), and another
        `Unauthenticated` for anything that does not verify or cannot be read one way only.
        """
        authorizations: list[str] = list(headers.getall("Authorization", []))
        if not target.startswith("/"):
            # S3 signs origin-form targets only; an absolute URL or "*" has no canonical path.
            raise MalformedSignature("the request-target must be a path", code="InvalidArgument")
        query = _Query.of(target)
        params = query.auth()
        header: str | None = None
        if authorizations:
            if len(authorizations) > 1:
                raise MalformedSignature("the request has more than one Authorization header")
            header = _aws_scheme(authorizations[0])
        if header is not None and params:
            raise MalformedSignature("a request may be signed in its Authorization header or in its query, "
                                     "not both", code="InvalidArgument")
        if params.keys() & {"X-Amz-Security-Token"} or "X-Amz-Security-Token" in headers:
            raise MalformedSignature("temporary credentials (a security token) are not accepted with access keys",
                                     code="InvalidArgument")
        if header == SIGV4:
            return self._sigv4_header(method, target, query, headers, authorizations[0])
        if header == "AWS":
            return self._sigv2(method, target, query, headers, authorizations[0], None)
        if not params:
            return None
        v4 = [name for name in _V4_PARAMS if name in params]
        v2 = [name for name in _V2_PARAMS if name in params]
        if v4 and v2:
            raise _query_error("the query mixes SigV4 (X-Amz-*) and SigV2 (AWSAccessKeyId, Signature) parameters")
        if v4:
            return self._sigv4_query(method, target, query, headers, params)
        return self._sigv2(method, target, query, headers, None, params)

    # ---- SigV4 -------------------------------------------------------------------------------

    def _credential(self, text: str, error: Callable[[str], MalformedSignature]) -> tuple[_Key, str]:
        """The key a credential names and its scope's date. Raises `UnknownAccessKey` for a key not held."""
        match = _CREDENTIAL.fullmatch(text)
        if match is None:
            raise error("the credential must read KEY/YYYYMMDD/REGION/s3/aws4_request")
        key_id, date, region, service = match.groups()
        if service != SERVICE:
            raise error(f"the credential's service is {service!r}; this proxy serves s3")
        if region != self._region:
            raise error(f"the credential's region is {region!r}; sign for {self._region!r}, the region this "
                        "proxy serves")
        key = self._keys.get(key_id)
        if key is None:
            raise UnknownAccessKey("the access key id is not one this proxy knows")
        return key, date

    def _sigv4_header(self, method: str, target: str, query: _Query, headers: MultiMapping[str],
                      authorization: str) -> Authenticated:
        match = _SIGV4_HEADER.fullmatch(authorization)
        if match is None:
            raise MalformedSignature(HEADER_SYNTAX)
        credential, signed_list, signature = match.groups()
        key, scope_date = self._credential(credential, MalformedSignature)
        if not _HEX64.fullmatch(signature):
            raise MalformedSignature("the signature must be 64 lowercase hexadecimal digits")
        signed = _signed_headers(signed_list, headers, MalformedSignature)
        amz_dates = headers.getall("X-Amz-Date", ())
        if len(amz_dates) > 1:
            raise MalformedSignature("the request has more than one X-Amz-Date header")
        if amz_dates:
            timestamp = amz_dates[0]
            if not _AMZ_DATE.fullmatch(timestamp):
                raise MalformedSignature("X-Amz-Date must read YYYYMMDDTHHMMSSZ")
            moment = _amz_time(timestamp)
        else:
            if "date" not in signed:
                raise MalformedSignature("a SigV4 request must sign its date: X-Amz-Date or a signed Date")
            moment = _http_time(signed["date"][0])
            timestamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(moment))
        if timestamp[:8] != scope_date:
            raise MalformedSignature("the credential's date is not the request's date")
        self._check_skew(moment)
        payloads = headers.getall("X-Amz-Content-SHA256", ())
        if len(payloads) != 1:
            raise MalformedSignature("a SigV4 request needs exactly one X-Amz-Content-SHA256 header")
        payload = payloads[0]
        if payload not in _PAYLOADS and not _HEX64.fullmatch(payload):
            raise MalformedSignature("X-Amz-Content-SHA256 must be UNSIGNED-PAYLOAD, a SHA-256 in lowercase hex, "
                                     "or STREAMING-AWS4-HMAC-SHA256-PAYLOAD", code="InvalidArgument")
        assert self._signers is not None
        expected, signing_key = self._signers.v4(
            key.secret.current(), key.rule.access_key_id, self._region, method, target, query.raw, signed,
            payload, timestamp)
        _compare(expected, signature)
        return Authenticated(key.rule, _body_check(payload, headers, signing_key, timestamp,
                                                   f"{scope_date}/{self._region}/{SERVICE}/aws4_request", signature))

    def _sigv4_query(self, method: str, target: str, query: _Query, headers: MultiMapping[str],
                     params: dict[str, str]) -> Authenticated:
        missing = [name for name in _V4_PARAMS if name not in params]
        if missing:
            raise _query_error("a presigned URL needs X-Amz-Algorithm, X-Amz-Credential, X-Amz-Date, "
                               "X-Amz-Expires, X-Amz-SignedHeaders and X-Amz-Signature; missing: " + ", ".join(missing))
        if params["X-Amz-Algorithm"] != SIGV4:
            raise _query_error("X-Amz-Algorithm must be AWS4-HMAC-SHA256")
        key, scope_date = self._credential(params["X-Amz-Credential"], _query_error)
        timestamp, expires, signature = params["X-Amz-Date"], params["X-Amz-Expires"], params["X-Amz-Signature"]
        if not _AMZ_DATE.fullmatch(timestamp) or timestamp[:8] != scope_date:
            raise _query_error("X-Amz-Date must read YYYYMMDDTHHMMSSZ, on the credential's date")
        if not _DIGITS.fullmatch(expires) or int(expires) > MAX_PRESIGNED_SECONDS:
            raise _query_error(f"X-Amz-Expires must be a number of seconds from 1 to {MAX_PRESIGNED_SECONDS}")
        if not _HEX64.fullmatch(signature):
            raise _query_error("X-Amz-Signature must be 64 lowercase hexadecimal digits")
        if "X-Amz-Content-SHA256" in headers:
            raise _query_error("a presigned request carries no X-Amz-Content-SHA256 header (its payload is unsigned)")
        signed = _signed_headers(params["X-Amz-SignedHeaders"], headers, _query_error)
        moment, now = _amz_time(timestamp), self._clock()
        if moment - now > MAX_SKEW_SECONDS:
            raise RequestTimeTooSkewed("the presigned URL is dated in the future")
        if now > moment + int(expires):
            raise ExpiredSignature("Request has expired: the presigned URL is past its expiry")
        assert self._signers is not None
        expected, _ = self._signers.v4(
            key.secret.current(), key.rule.access_key_id, self._region, method, target,
            query.without("X-Amz-Signature"), signed, UNSIGNED_PAYLOAD, timestamp)
        _compare(expected, signature)
        return Authenticated(key.rule)

    # ---- SigV2 -------------------------------------------------------------------------------

    def _sigv2(self, method: str, target: str, query: _Query, headers: MultiMapping[str],
               authorization: str | None, params: dict[str, str] | None) -> Authenticated:
        amz: dict[str, list[str]] = {}
        for name in headers:
            lower = name.lower()
            if lower.startswith("x-amz-") and lower not in amz:
                amz[lower] = _values(headers, name, MalformedSignature)
        standard = {name: headers.getall(name, ()) for name in ("Content-MD5", "Content-Type")}
        if params is None:
            assert authorization is not None
            match = _SIGV2_HEADER.fullmatch(authorization)
            if match is None:
                raise MalformedSignature(HEADER_SYNTAX)
            key_id, signature = match.groups()
            if "x-amz-date" in amz:
                if len(amz["x-amz-date"]) != 1:
                    raise MalformedSignature("the request has more than one X-Amz-Date header")
                moment, date_line = _http_time(amz["x-amz-date"][0]), ""   # AWS: then the Date line is empty
            else:
                dates = headers.getall("Date", ())
                if len(dates) != 1:
                    raise MalformedSignature("a SigV2 request needs exactly one Date or X-Amz-Date header")
                moment, date_line = _http_time(dates[0]), dates[0]
            self._check_skew(moment)
        else:
            missing = [name for name in _V2_PARAMS if name not in params]
            if missing:
                raise _query_error("a SigV2 presigned URL needs AWSAccessKeyId, Expires and Signature; missing: "
                                   + ", ".join(missing))
            key_id, signature, date_line = params["AWSAccessKeyId"], params["Signature"], params["Expires"]
            if not ACCESS_KEY_ID.fullmatch(key_id) or not _SIGV2_SIGNATURE.fullmatch(signature):
                raise _query_error("AWSAccessKeyId or Signature is malformed")
            if not _DIGITS.fullmatch(date_line):
                raise _query_error("Expires must be a time in seconds since 1970")
            now = self._clock()
            if now > int(date_line):
                raise ExpiredSignature("Request has expired: the presigned URL is past its expiry")
            if int(date_line) - now > MAX_PRESIGNED_SECONDS:
                raise _query_error(f"Expires may be at most {MAX_PRESIGNED_SECONDS} seconds from now")
            # SDKs carry the x-amz-* headers they signed in the query: S3 reads them as those headers,
            # so they are signed as such, and never given twice. (They copy Content-Type and Content-MD5
            # there too, but S3 signs the headers sent: a copy that says otherwise is refused.)
            hoisted: set[str] = set()
            for raw_name, raw_value in query.pairs:
                name, value = _decode(raw_name).lower(), _decode(raw_value)
                if name.startswith("x-amz-"):
                    if name in hoisted or name in headers:
                        raise _query_error(f"{name} is given twice (in the query, or there and as a header)")
                    hoisted.add(name)
                    amz[name] = [value]
                elif name in ("content-md5", "content-type") and list(headers.getall(name, [])) != [value]:
                    raise _query_error(f"the query's {name} is not the request's {name} header")
        _sigv2_query_signed(query, presigned=params is not None)
        key = self._keys.get(key_id)
        if key is None:
            raise UnknownAccessKey("the access key id is not one this proxy knows")
        signed: list[tuple[str, str]] = []
        for name, values in standard.items():
            if len(values) > 1:
                raise MalformedSignature(f"the request has more than one {name} header")
            signed.extend((name, _checked_value(name, value, MalformedSignature)) for value in values)
        signed.extend((name, value) for name, values in amz.items() for value in values)
        bucket = self._virtual_bucket(headers) if self._virtual_bucket is not None else None
        assert self._signers is not None
        expected = self._signers.v2(key.secret.current(), key_id, method, target, signed, date_line, bucket)
        _compare(expected, signature)
        # SigV2 signs no payload; a SHA-256 the caller claims all the same is held to.
        payloads = amz.get("x-amz-content-sha256", [])
        if payloads and (len(payloads) > 1 or payloads[0].startswith("STREAMING-")):
            raise MalformedSignature("a SigV2 request cannot carry chunk signatures", code="InvalidArgument")
        body = BodyCheck(sha256=payloads[0]) if payloads and _HEX64.fullmatch(payloads[0]) else None
        return Authenticated(key.rule, body)

    def _check_skew(self, moment: float) -> None:
        if abs(self._clock() - moment) > MAX_SKEW_SECONDS:
            raise RequestTimeTooSkewed("the difference between the request time and the proxy's time is more "
                                       "than 15 minutes")


def _aws_scheme(value: str) -> str:
    """SIGV4 or "AWS". Raises `MalformedSignature` for anything else.

    A token (``Bearer``) never gets here. "AWS4-HMAC-SHA256Credential=…", "aws4-hmac-sha256 …",
    a tab for the space, SigV4a, another scheme in front of SigV4's components: a storage
    server may read any of them as a signature (moto looks for "Credential=" whatever the
    scheme), so none of them is left to fall back to the caller's network.
    """
    scheme = value.split(" ", 1)[0]
    if scheme in (SIGV4, "AWS"):
        return scheme
    raise MalformedSignature(HEADER_SYNTAX)


def _sigv2_query_signed(query: _Query, *, presigned: bool) -> None:
    """Refuse a SigV2 query parameter the signature does not cover but that selects what S3 does.

    SigV2 signs the path and a fixed list of sub-resources only (botocore's
    ``HmacV1Auth.QSAOfInterest``): ``?retention``, ``?attributes``, ``?id=``,
    ``?ownershipControls``... added to a signed URL would turn one operation into
    another under the signer's name. Listing controls and response overrides
    (`ORDINARY_PARAMS`) select no operation and pass, unsigned, as with S3; so does
    ``list-type`` (ListObjects or ListObjectsV2, the same listing).
    """
    error = _query_error if presigned else MalformedSignature
    for raw_name, raw_value in query.pairs:
        name = _decode(raw_name)
        if name in _SIGV2_SIGNED_PARAMS:
            if "&" in _decode(raw_value):
                # botocore signs the decoded value: "a=1%26b%3D2" would sign as "a=1&b=2".
                raise error(f"the value of {name} holds an encoded '&', which SigV2 signs ambiguously")
        elif name.lower().startswith("x-amz-") or name.lower() in ("content-type", "content-md5"):
            if not presigned:   # signed as headers only in a presigned URL
                raise error(f"the query parameter {name} is not covered by a SigV2 Authorization header")
        elif name not in ORDINARY_PARAMS and name != "list-type":   # ListObjects or V2: one listing
            raise error(f"SigV2 does not sign the query parameter {name}, which selects what S3 does: "
                        "sign the request with SigV4")


def _signed_headers(text: str, headers: MultiMapping[str],
                    error: Callable[[str], MalformedSignature]) -> dict[str, list[str]]:
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
        values = _values(headers, name, error)
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


def _values(headers: MultiMapping[str], name: str, error: Callable[[str], MalformedSignature]) -> list[str]:
    return [_checked_value(name, value, error) for value in headers.getall(name, ())]


def _checked_value(name: str, value: str, error: Callable[[str], MalformedSignature]) -> str:
    if not _HEADER_VALUE.fullmatch(value):
        raise error(f"the signed header {name.lower()} holds characters other than visible ASCII")
    return value


def _amz_time(text: str) -> float:
    """Seconds since 1970 of a YYYYMMDDTHHMMSSZ date (the caller has matched `_AMZ_DATE`)."""
    try:
        moment = datetime(int(text[0:4]), int(text[4:6]), int(text[6:8]), int(text[9:11]), int(text[11:13]),
                          int(text[13:15]), tzinfo=UTC)
    except ValueError:
        raise MalformedSignature("the signed date is not a valid date") from None
    return moment.timestamp()


def _http_time(text: str) -> float:
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        raise MalformedSignature("the request's date must be an HTTP date (RFC 7231)") from None
    offset = moment.utcoffset()
    if offset is None:   # "-0000" (how Python's formatdate writes GMT): UTC
        return float(calendar.timegm(moment.timetuple()))
    if offset.total_seconds() != 0:
        raise MalformedSignature("the request's date must be given in GMT")
    return moment.timestamp()


def _compare(expected: str, given: str) -> None:
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise SignatureMismatch("The request signature we calculated does not match the signature you provided. "
                                "Check your key and signing method.")


def _body_check(payload: str, headers: MultiMapping[str], signing_key: bytes, timestamp: str, scope: str,
                seed: str) -> BodyCheck | None:
    if _HEX64.fullmatch(payload):
        return BodyCheck(sha256=payload)
    if payload not in CONTENT_SHA256_MODES:
        return None   # UNSIGNED-PAYLOAD: the body is the caller's to vouch for, as with S3
    lengths: list[str] = list(headers.getall("X-Amz-Decoded-Content-Length", []))
    if len(lengths) != 1 or not (lengths[0] == "0" or _DIGITS.fullmatch(lengths[0])):
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

