"""The SigV4 POST policy of a browser form upload (S3 POST Object), verified as S3 verifies it.

A browser uploading with a presigned POST sends no Authorization header: the
form carries the signature. Its ``policy`` field is a base64 JSON document (an
expiry and a list of conditions on the form's fields), and ``x-amz-signature``
is HMAC-SHA256 of that base64 text, exactly as sent, under the SigV4 signing
key of the ``x-amz-credential``'s date, region and service (AWS: "Authenticating
Requests in Browser-Based Uploads Using POST (AWS Signature Version 4)", "POST
Policy"; botocore's ``S3SigV4PostAuth`` is what boto3's
``generate_presigned_post`` writes). The proxy identifies such a caller by the
access key of that credential, once the signature verifies with the key's
secret and the policy admits the form, so it holds the form to the policy as
S3 does: a form the proxy accepts is one S3 accepts too.

This module is that check, with no I/O: `verify_post_policy` takes the form's
fields (`proxy.s3.postform.PostForm.fields`), in this order:

1. the form's syntax: no security token; ``x-amz-algorithm``
   = ``AWS4-HMAC-SHA256``, ``x-amz-credential`` (scoped to the proxy's region
   and ``s3``), ``x-amz-date`` (``YYYYMMDDTHHMMSSZ``, on the credential's
   date), ``x-amz-signature`` (64 lowercase hex digits) and ``policy``, each
   present;
2. the key: `UnknownAccessKey` for a key the proxy holds no secret for (the
   caller may then be identified another way), only once all of the above
   reads; then ``x-amz-date`` not more than 15 minutes ahead of the clock;
3. the signature, compared in constant time: nothing of the policy is decoded
   before it verifies;
4. the policy: strict base64 of a UTF-8 JSON object holding exactly
   ``expiration`` (ISO 8601 in UTC: ``2026-12-07T03:00:00Z``, or with a
   fraction ``.000Z``) and ``conditions`` (a list), no key twice at any depth;
   then its expiry; then each condition against the form, and every field of
   the form against the conditions.

Conditions are read as AWS documents them. ``{"field": "value"}`` and ``["eq",
"$field", "value"]`` match exactly (values are case-sensitive, field names
are not); ``["starts-with", "$field", "prefix"]`` matches a prefix (``""``
matches anything), only for the fields S3 allows it on (``acl``, ``key``,
``cache-control``, ``content-type``, ``content-disposition``,
``content-encoding``, ``expires``, ``success_action_redirect``, ``redirect``
and ``x-amz-meta-*``), and on a Content-Type that lists several types
(``a,b``) each of them must match; ``["content-length-range", min, max]``
bounds the file's size (JSON integers, ``0 <= min <= max``), which the form's
head cannot show: it is handed back (`PolicyLimits`) for whoever reads the
file to enforce (S3 answers ``EntityTooSmall``/``EntityTooLarge``, 400). The
``bucket`` condition is held to the bucket the POST is addressed to. A field
the form does not have reads as empty (as MinIO and other S3 implementations
read it), so only ``""`` matches it. Every field of the form must be named by a condition, except
``x-amz-signature``, ``policy``, ``file`` and ``x-ignore-*`` ones.

Refused where S3 would accept, because the proxy could not read it one way:
a policy with several ``content-length-range`` conditions, or with a key other
than ``expiration`` and ``conditions``; a ``bucket`` form field that names
another bucket than the URL; a condition on ``key`` that depends on the file's
name, when the form's key holds ``${filename}`` (the fields hold the key as
written: ``["starts-with", "$key", prefix]`` is accepted when ``prefix`` ends
before the first ``${filename}``, as boto3 writes it, so it holds whatever the
file is called; an exact ``key`` condition is not). Refused as the
access-key identity always refuses: temporary credentials
(``x-amz-security-token``).

A SigV2 form (``AWSAccessKeyId``, ``signature``: what boto3's
``generate_presigned_post`` writes unless its client signs with SigV4) is
verified too, as S3 still does: ``signature`` is the base64 HMAC-SHA1 of the
``policy`` field under the key's secret; it has no date or scope, and its
policy need not name its two signature fields. Its policy is then read and
checked exactly as a SigV4 one.

The codes are S3's where S3 documents one for the case (InvalidAccessKeyId,
SignatureDoesNotMatch, RequestTimeTooSkewed, InvalidPolicyDocument, and
AccessDenied with S3's "Invalid according to Policy" messages); a form field
missing or malformed is InvalidArgument, as S3 answers a POST without one of
its fields ("Bucket POST must contain a field named ..."):

===================================================  ====  ==========================  ===========================
Case                                                 HTTP  Code                        Class
===================================================  ====  ==========================  ===========================
a field missing, or not as documented (algorithm,    400   InvalidArgument             MalformedSignature
credential, date, signature), security token
credential for another region or service             400   InvalidArgument             MalformedSignature
a bucket field naming another bucket than the URL    400   InvalidArgument             MalformedSignature
key id not held by the proxy                         403   InvalidAccessKeyId          UnknownAccessKey
x-amz-date more than 15 minutes ahead                403   RequestTimeTooSkewed        RequestTimeTooSkewed
signature not the one computed                       403   SignatureDoesNotMatch       SignatureMismatch
policy not base64 / JSON / an object with both keys  400   InvalidPolicyDocument       MalformedSignature
(duplicate key, other key, bad expiration, a simple
condition with several properties, two ranges)
policy expired                                       403   AccessDenied                ExpiredSignature
a condition unmet, malformed or of an unknown kind   403   AccessDenied                PolicyConditionFailed
a field no condition names                           403   AccessDenied                PolicyConditionFailed
===================================================  ====  ==========================  ===========================

The messages of the last three are S3's ("Invalid according to Policy: Policy
expired.", "... Policy Condition failed: [...]", "... Extra input fields: ...").
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from proxy.errors import ExpiredSignature, MalformedSignature, RequestTimeTooSkewed, Unauthenticated
from proxy.identity.keyring import Authenticated, Keyring
from proxy.identity.signers import SERVICE
from proxy.identity.sigsyntax import CREDENTIAL, HEX64, SIGV4, compare
from proxy.identity.sigtime import AMZ_DATE, MAX_SKEW_SECONDS, amz_time
from proxy.identity.sigv4hmac import signing_key

ALGORITHM_FIELD = "x-amz-algorithm"
CREDENTIAL_FIELD = "x-amz-credential"
DATE_FIELD = "x-amz-date"
SIGNATURE_FIELD = "x-amz-signature"
POLICY_FIELD = "policy"
SESSION_FIELD = "x-amz-security-token"
SIGV2_FIELDS = ("awsaccesskeyid", "signature")
_SIGNATURE_FIELDS = frozenset({SIGNATURE_FIELD, CREDENTIAL_FIELD, POLICY_FIELD, *SIGV2_FIELDS})
# Fields no condition need name (AWS: "except x-amz-signature, file, policy, and field names that have an
# x-ignore- prefix").
_UNCONDITIONED = frozenset({SIGNATURE_FIELD, "file", POLICY_FIELD})
# A SigV2 form's signature fields: its policy names neither (boto3 writes no condition for them).
_UNCONDITIONED_V2 = _UNCONDITIONED | frozenset(SIGV2_FIELDS)
_BASE64_SHA1 = re.compile(r"[A-Za-z0-9+/]{27}=")
_IGNORED_PREFIX = "x-ignore-"
_FILENAME = "${filename}"
# The fields AWS allows starts-with on (its table of conditions); every other field is matched exactly.
_STARTS_WITH_FIELDS = frozenset({"acl", "key", "cache-control", "content-type", "content-disposition",
                                 "content-encoding", "expires", "success_action_redirect", "redirect"})
_META_PREFIX = "x-amz-meta-"
_EXPIRATION = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.[0-9]{1,9})?Z")

POLICY_DOCUMENT_CODE = "InvalidPolicyDocument"
FORM_CODE = "InvalidArgument"
EXPIRED = "Invalid according to Policy: Policy expired."
CONDITION_FAILED = "Invalid according to Policy: Policy Condition failed: "
EXTRA_FIELDS = "Invalid according to Policy: Extra input fields: "


class PolicyConditionFailed(Unauthenticated):
    """A form its POST policy does not admit: a condition unmet or unreadable, or a field no condition names."""

    default_code = "AccessDenied"


@dataclass(frozen=True, slots=True)
class PolicyLimits:
    """What a verified POST policy still bounds after the form's head: the file's size."""

    min_length: int = 0
    max_length: int | None = None    # None: the policy sets no content-length-range


def has_post_signature(fields: Mapping[str, str]) -> bool:
    """Whether the form carries a signature of any kind (x-amz-signature, x-amz-credential, signature,
    awsaccesskeyid, policy)."""
    return not _SIGNATURE_FIELDS.isdisjoint(fields)


def verify_post_policy(ring: Keyring, fields: Mapping[str, str], bucket: str
                       ) -> tuple[Authenticated, PolicyLimits]:
    """The access key that signed this form's POST policy, verified, and the file size the policy allows.

    `fields`: the form's fields by lower-cased name (`PostForm.fields`, the key as written); `bucket`: the
    bucket the form is posted to. Raises `UnknownAccessKey` for a key the proxy does not hold (the caller may
    be identified another way), and another `Unauthenticated` for a form that does not verify or that its
    policy does not admit (see the module's table).
    """
    if SESSION_FIELD in fields:
        raise _form_error("temporary credentials (a security token) are not accepted with access keys")
    if any(name in fields for name in SIGV2_FIELDS):
        return _verify_v2(ring, fields, bucket)
    for name in (ALGORITHM_FIELD, CREDENTIAL_FIELD, DATE_FIELD, SIGNATURE_FIELD, POLICY_FIELD):
        if name not in fields:
            raise _form_error(f"Bucket POST must contain a field named '{name}'. If it is specified, please check "
                              "the order of the fields.")
    if fields[ALGORITHM_FIELD] != SIGV4:
        raise _form_error("x-amz-algorithm must be AWS4-HMAC-SHA256")
    credential, timestamp = fields[CREDENTIAL_FIELD], fields[DATE_FIELD]
    signature, policy = fields[SIGNATURE_FIELD], fields[POLICY_FIELD]
    # All of the form's syntax before its key is looked up: only a well-formed form by a key the proxy
    # does not hold is an `UnknownAccessKey` (which the caller may answer with another identity).
    scope = CREDENTIAL.fullmatch(credential)
    if not AMZ_DATE.fullmatch(timestamp) or (scope is not None and timestamp[:8] != scope.group(2)):
        raise _form_error("x-amz-date must read YYYYMMDDTHHMMSSZ, on the credential's date")
    if not HEX64.fullmatch(signature):
        raise _form_error("x-amz-signature must be 64 lowercase hexadecimal digits")
    try:
        moment = amz_time(timestamp)
    except MalformedSignature:
        raise _form_error("x-amz-date is not a valid date") from None
    key, scope_date = ring.credential(credential, _form_error)
    if moment - ring.clock() > MAX_SKEW_SECONDS:
        raise RequestTimeTooSkewed("the form's x-amz-date is more than 15 minutes ahead of the proxy's time")
    day_key = signing_key(key.secret.current(), scope_date, ring.region, SERVICE)
    compare(hmac.digest(day_key, policy.encode("utf-8"), "sha256").hex(), signature)
    expiration, conditions = _document(policy)
    if ring.clock() >= expiration:
        raise ExpiredSignature(EXPIRED)
    return Authenticated(key.rule), _check(conditions, fields, bucket)


def _verify_v2(ring: Keyring, fields: Mapping[str, str], bucket: str) -> tuple[Authenticated, PolicyLimits]:
    """A SigV2 form: ``signature`` is base64 of HMAC-SHA1 of the ``policy`` field under the key's secret (what
    boto3's `generate_presigned_post` writes unless the client is set to sign with SigV4)."""
    mixed = [name for name in (ALGORITHM_FIELD, CREDENTIAL_FIELD, DATE_FIELD, SIGNATURE_FIELD) if name in fields]
    if mixed:
        raise _form_error(f"the form mixes SigV2 (AWSAccessKeyId, signature) and SigV4 ({mixed[0]}) fields")
    for name in (*SIGV2_FIELDS, POLICY_FIELD):
        if name not in fields:
            raise _form_error(f"Bucket POST must contain a field named '{name}'. If it is specified, please check "
                              "the order of the fields.")
    signature, policy = fields["signature"], fields[POLICY_FIELD]
    if not _BASE64_SHA1.fullmatch(signature):
        raise _form_error("signature must be the 28-character base64 of an HMAC-SHA1")
    key = ring.key(fields["awsaccesskeyid"])
    expected = base64.b64encode(hmac.digest(key.secret.current().encode("utf-8"), policy.encode("utf-8"), "sha1"))
    compare(expected.decode("ascii"), signature)
    expiration, conditions = _document(policy)
    if ring.clock() >= expiration:
        raise ExpiredSignature(EXPIRED)
    return Authenticated(key.rule), _check(conditions, fields, bucket, _UNCONDITIONED_V2)


def _form_error(message: str) -> MalformedSignature:
    """The refusal of a form's signature fields (S3 answers InvalidArgument for them)."""
    return MalformedSignature(message, code=FORM_CODE)


def _document_error(message: str) -> MalformedSignature:
    return MalformedSignature(f"Invalid Policy: {message}", code=POLICY_DOCUMENT_CODE)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise _document_error("a JSON object names a key twice.")
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise _document_error(f"Invalid JSON ({name} is not JSON).")


def _document(policy: str) -> tuple[float, list[Any]]:
    """The policy's expiry (seconds since 1970) and conditions; raises InvalidPolicyDocument."""
    try:
        raw = base64.b64decode(policy, validate=True)
    except (binascii.Error, ValueError):
        raise _document_error("the policy field is not base64.") from None
    try:
        document = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _document_error("Invalid JSON.") from None
    if not isinstance(document, dict):
        raise _document_error("Invalid JSON: the policy must be an object.")
    if "expiration" not in document:
        raise _document_error("Missing expiration.")
    if "conditions" not in document:
        raise _document_error("Missing conditions.")
    extra = sorted(set(document) - {"expiration", "conditions"})
    if extra:
        raise _document_error("Unexpected " + ", ".join(extra) + " (a policy holds expiration and conditions).")
    expiration, conditions = document["expiration"], document["conditions"]
    match = _EXPIRATION.fullmatch(expiration) if isinstance(expiration, str) else None
    if match is None:
        raise _document_error("Invalid expiration (ISO 8601 in UTC: 2026-12-07T03:00:00Z).")
    try:
        year, month, day, hour, minute, second = (int(part) for part in match.groups())
        moment = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        raise _document_error("Invalid expiration (not a date).") from None
    if not isinstance(conditions, list):
        raise _document_error("Invalid conditions: a list.")
    return moment.timestamp(), conditions


@dataclass(frozen=True, slots=True)
class _Condition:
    op: str             # "eq", "starts-with" or "content-length-range"
    field: str          # lower-cased, without "$" ("" for a range)
    value: str
    low: int
    high: int
    shown: str          # as S3 echoes it: ["eq", "$key", "a"]


def _failed(shown: str) -> PolicyConditionFailed:
    return PolicyConditionFailed(CONDITION_FAILED + shown)


def _show(parts: list[Any]) -> str:
    return "[" + ", ".join(json.dumps(part, ensure_ascii=False) for part in parts) + "]"


def _condition(item: Any) -> _Condition:
    """One condition, read; raises InvalidPolicyDocument or PolicyConditionFailed (as S3: one it cannot read fails)."""
    if isinstance(item, dict):
        if len(item) != 1:
            raise _document_error("Invalid Simple-Condition: Simple-Conditions must have exactly one property "
                                  "specified.")
        [(name, value)] = item.items()
        parts: list[Any] = ["eq", "$" + name, value]
    elif isinstance(item, list):
        parts = item
    else:
        raise _failed(json.dumps(item, ensure_ascii=False))
    shown = _show(parts)
    if len(parts) != 3 or not isinstance(parts[0], str):
        raise _failed(shown)
    op = parts[0]
    if op == "content-length-range":
        low, high = parts[1], parts[2]
        # JSON integers only: bool is an int to Python, and "10" or 10.0 is not a bound S3 reads.
        if type(low) is not int or type(high) is not int or not 0 <= low <= high:
            raise _failed(shown)
        return _Condition(op, "", "", low, high, shown)
    name, value = parts[1], parts[2]
    if op not in ("eq", "starts-with") or not isinstance(name, str) or not name.startswith("$") \
            or not isinstance(value, str) or len(name) < 2:
        raise _failed(shown)
    field = name[1:].lower()
    if op == "starts-with" and field not in _STARTS_WITH_FIELDS and not field.startswith(_META_PREFIX):
        raise _failed(shown)
    return _Condition(op, field, value, 0, 0, shown)


def _check(items: list[Any], fields: Mapping[str, str], bucket: str,
           unconditioned: frozenset[str] = _UNCONDITIONED) -> PolicyLimits:
    """Each condition against the form, every field against the conditions; the size the policy allows."""
    conditions = [_condition(item) for item in items]
    ranges = [condition for condition in conditions if condition.op == "content-length-range"]
    if len(ranges) > 1:
        raise _document_error("more than one content-length-range.")
    if "bucket" in fields and fields["bucket"] != bucket:
        raise _form_error("the form's bucket field names another bucket than the one the form is posted to")
    values = {**fields, "bucket": bucket}
    key = fields.get("key", "")
    named: set[str] = set()
    for condition in conditions:
        if condition.op == "content-length-range":
            continue
        named.add(condition.field)
        value = values.get(condition.field, "")
        if condition.field == "key" and _FILENAME in key and not (
                condition.op == "starts-with" and len(condition.value) <= key.index(_FILENAME)):
            # S3 holds the key once ${filename} is filled in; only a prefix before it holds for any file name.
            raise _failed(condition.shown + " (the form's key holds ${filename}: only a starts-with prefix "
                                            "that ends before it can be checked)")
        if not _holds(condition, value):
            raise _failed(condition.shown)
    extra = sorted(name for name in fields if name not in named and name not in unconditioned
                   and not name.startswith(_IGNORED_PREFIX))
    if extra:
        raise PolicyConditionFailed(EXTRA_FIELDS + ", ".join(extra))
    if ranges:
        return PolicyLimits(ranges[0].low, ranges[0].high)
    return PolicyLimits()


def _holds(condition: _Condition, value: str) -> bool:
    if condition.op == "eq":
        return value == condition.value
    if condition.field == "content-type":
        # AWS: a Content-Type that lists several types matches starts-with when each of them does.
        return all(part.strip(" ").startswith(condition.value) for part in value.split(","))
    return value.startswith(condition.value)
