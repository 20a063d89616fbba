"""The SigV4 POST policy of a browser form upload: a form is its key's caller only once S3 would accept it.

The forms are boto3's own (`generate_presigned_post`, botocore's clock held
at a fixed moment), or written here field by field and signed with the key's
secret where boto3 would not write them (a policy that is not base64, a
duplicate JSON key). Each refusal is checked for its class, S3's code and
the words of its message; no altered byte of a policy or a signature ever
verifies.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import boto3
import pytest
from botocore.config import Config
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.config import AccessKeyRule
from proxy.errors import (
    ExpiredSignature,
    MalformedSignature,
    RequestRefused,
    RequestTimeTooSkewed,
    SignatureMismatch,
    Unauthenticated,
    UnknownAccessKey,
)
from proxy.identity.keyring import AccessKey, Keyring
from proxy.identity.postpolicy import (
    PolicyConditionFailed,
    PolicyLimits,
    has_post_signature,
    verify_post_policy,
)
from proxy.identity.secretsource import SecretSource

IE_KEY, IE_SECRET = "AKIAIRELAND00000001", "irish-secret-0123456789abcdefghijklmnopq"
US_KEY, US_SECRET = "AKIAUNITEDSTATES001", "us-secret-0123456789abcdefghijklmnopqrst"
RULES = (AccessKeyRule(IE_KEY, "IE", "mail-ie", secret_access_key=IE_SECRET),
         AccessKeyRule(US_KEY, "US", "mail-us", secret_access_key=US_SECRET))
REGION = "eu-west-1"
BUCKET = "mail-eu-dublin"
NOW = datetime(2026, 12, 7, 1, 30, 0, tzinfo=UTC)
STAMP = "20261207T013000Z"
CREDENTIAL = f"{IE_KEY}/20261207/{REGION}/s3/aws4_request"
HOUR_LATER = "2026-12-07T02:30:00Z"


def ring(offset: float = 0.0) -> Keyring:
    """The keys, as the access-key table holds them, with a clock `offset` seconds after NOW."""
    keys = {rule.access_key_id: AccessKey(rule, SecretSource(rule)) for rule in RULES}
    return Keyring(keys, REGION, lambda: NOW.timestamp() + offset, None)


@contextmanager
def botocore_at(moment: datetime) -> Iterator[None]:
    """botocore's clock held at `moment` (it reads the time for x-amz-date and the policy's expiration)."""
    def frozen(remove_tzinfo: bool = True) -> datetime:
        return moment.replace(tzinfo=None) if remove_tzinfo else moment
    with mock.patch("botocore.auth.get_current_datetime", frozen), \
            mock.patch("botocore.signers.get_current_datetime", frozen):
        yield


def presigned(key: str = "alice/1.eml", *, fields: dict[str, str] | None = None,
              conditions: list[Any] | None = None, expires: int = 3600, access: str = IE_KEY,
              secret: str = IE_SECRET, region: str = REGION, token: str | None = None,
              bucket: str = BUCKET, version: str = "s3v4") -> dict[str, str]:
    """The form fields boto3's generate_presigned_post writes, by lower-cased name (as `PostForm.fields`).

    `version`: the client's signature version ("s3": SigV2, what boto3 writes for a client not set to SigV4)."""
    client = boto3.client("s3", endpoint_url="http://127.0.0.1:9", region_name=region, aws_access_key_id=access,
                          aws_secret_access_key=secret, aws_session_token=token,
                          config=Config(signature_version=version))
    try:
        with botocore_at(NOW):
            post = client.generate_presigned_post(bucket, key, Fields=fields, Conditions=conditions,
                                                  ExpiresIn=expires)
    finally:
        client.close()
    return {name.lower(): value for name, value in post["fields"].items()}


def signature(policy: str, secret: str = IE_SECRET, date: str = "20261207", region: str = REGION) -> str:
    """SigV4's POST signature, computed here from AWS's description (not the module's code)."""
    key = ("AWS4" + secret).encode()
    for part in (date, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, policy.encode(), hashlib.sha256).hexdigest()


def written(document: Any = None, *, raw: bytes | None = None, policy: str | None = None,
            more: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
    """A form written by hand: the policy (a document, its raw bytes, or the field as sent), signed."""
    if policy is None:
        if raw is None:
            raw = json.dumps(document).encode()
        policy = base64.b64encode(raw).decode()
    form = {"key": "alice/1.eml", "x-amz-algorithm": "AWS4-HMAC-SHA256", "x-amz-credential": CREDENTIAL,
            "x-amz-date": STAMP, "policy": policy, **(more or {}), **extra}
    form["x-amz-signature"] = signature(policy)
    return form


def conditions(*more: Any, key: Any = None) -> list[Any]:
    """The conditions boto3 would write for BUCKET and alice/1.eml, then `more`."""
    return [{"bucket": BUCKET}, key or {"key": "alice/1.eml"}, {"x-amz-algorithm": "AWS4-HMAC-SHA256"},
            {"x-amz-credential": CREDENTIAL}, {"x-amz-date": STAMP}, *more]


def document(*more: Any, key: Any = None, expiration: Any = HOUR_LATER) -> dict[str, Any]:
    return {"expiration": expiration, "conditions": conditions(*more, key=key)}


def changed(form: dict[str, str], **values: str) -> dict[str, str]:
    return {**form, **{name.replace("_", "-"): value for name, value in values.items()}}


def repoliced(form: dict[str, str], edit: Callable[[dict[str, Any]], None]) -> dict[str, str]:
    """`form` with its policy decoded, edited, encoded again, and its signature left as it was."""
    policy = json.loads(base64.b64decode(form["policy"]))
    edit(policy)
    return {**form, "policy": base64.b64encode(json.dumps(policy).encode()).decode()}


# --- forms that verify ---------------------------------------------------------------------------

ACCEPTED: list[tuple[str, Callable[[], dict[str, str]], str, PolicyLimits]] = [
    ("boto3, an exact key", lambda: presigned(), "mail-ie", PolicyLimits()),
    ("boto3, the US key", lambda: presigned(access=US_KEY, secret=US_SECRET), "mail-us", PolicyLimits()),
    ("boto3, ${filename}", lambda: presigned("uploads/${filename}"), "mail-ie", PolicyLimits()),
    ("boto3, fields and conditions", lambda: presigned(
        "alice/1.eml",
        fields={"acl": "private", "x-amz-meta-owner": "alice-ie", "Content-Type": "message/rfc822"},
        conditions=[{"acl": "private"}, ["starts-with", "$x-amz-meta-owner", "alice"],
                    ["starts-with", "$Content-Type", "message/"], ["content-length-range", 1, 1048576]]),
     "mail-ie", PolicyLimits(1, 1048576)),
    ("boto3, eq written as a list", lambda: presigned(
        fields={"success_action_status": "201"}, conditions=[["eq", "$success_action_status", "201"]]),
     "mail-ie", PolicyLimits()),
    ("boto3, a range from 0", lambda: presigned(conditions=[["content-length-range", 0, 0]]),
     "mail-ie", PolicyLimits(0, 0)),
    ("an x-ignore- field needs no condition", lambda: {**presigned(), "x-ignore-note": "anything"},
     "mail-ie", PolicyLimits()),
    ("field names in conditions are case-insensitive", lambda: written(
        document({"ACL": "private"}, ["starts-with", "$Key", "alice/"], key={"bucket": BUCKET}), acl="private"),
     "mail-ie", PolicyLimits()),
    ("starts-with '' matches anything", lambda: written(
        document(["starts-with", "$content-type", ""]), more={"content-type": "text/plain"}), "mail-ie",
     PolicyLimits()),
    ("each Content-Type of a list matches starts-with", lambda: written(
        document(["starts-with", "$content-type", "image/"]), more={"content-type": "image/png, image/jpeg"}),
     "mail-ie", PolicyLimits()),
    ("an absent field reads as empty", lambda: written(document({"success_action_redirect": ""})),
     "mail-ie", PolicyLimits()),
    ("a bucket field naming the URL's bucket", lambda: written(document(), bucket=BUCKET), "mail-ie",
     PolicyLimits()),
    ("an expiration with milliseconds", lambda: written(document(expiration="2026-12-07T02:30:00.000Z")),
     "mail-ie", PolicyLimits()),
    ("boto3, SigV2", lambda: presigned(version="s3"), "mail-ie", PolicyLimits()),
    ("boto3, SigV2, the US key", lambda: presigned(version="s3", access=US_KEY, secret=US_SECRET), "mail-us",
     PolicyLimits()),
    ("boto3, SigV2, ${filename} and a range", lambda: presigned(
        "uploads/${filename}", version="s3", conditions=[["content-length-range", 1, 9]]), "mail-ie",
     PolicyLimits(1, 9)),
]


@pytest.mark.parametrize(("form", "subject", "limits"), [case[1:] for case in ACCEPTED],
                         ids=[case[0] for case in ACCEPTED])
def test_a_form_signed_by_a_known_key_verifies(form: Callable[[], dict[str, str]], subject: str,
                                               limits: PolicyLimits) -> None:
    authenticated, allowed = verify_post_policy(ring(), form(), BUCKET)
    assert authenticated.rule.subject == subject
    assert authenticated.body is None
    assert allowed == limits


def test_boto3_writes_the_form_the_proxy_reads() -> None:
    """What this module relies on boto3 writing: the three x-amz-* fields, conditions on bucket and key."""
    form = presigned("uploads/${filename}")
    assert form["x-amz-date"] == STAMP
    assert form["x-amz-credential"] == CREDENTIAL
    policy = json.loads(base64.b64decode(form["policy"]))
    assert policy["expiration"] == HOUR_LATER
    assert {"bucket": BUCKET} in policy["conditions"]
    assert ["starts-with", "$key", "uploads/"] in policy["conditions"]


# --- forms that are refused ----------------------------------------------------------------------

def _tampered_signature() -> dict[str, str]:
    form = presigned()
    last = form["x-amz-signature"][-1]
    return changed(form, x_amz_signature=form["x-amz-signature"][:-1] + ("0" if last != "0" else "1"))


def _sigv2() -> dict[str, str]:
    policy = base64.b64encode(json.dumps(document()).encode()).decode()
    return {"key": "alice/1.eml", "awsaccesskeyid": IE_KEY, "policy": policy, "signature": "c2lnbmF0dXJl"}


def _missing(name: str) -> Callable[[], dict[str, str]]:
    return lambda: {field: value for field, value in presigned().items() if field != name}


def _key_prefix(prefix: str) -> dict[str, str]:
    return written(document(key=["starts-with", "$key", prefix]), key="uploads/${filename}")


REFUSED: list[tuple[str, Callable[[], dict[str, str]], float, str, type[RequestRefused], str, str]] = [
    # name, form, clock offset, bucket, class, code, words of the message
    ("tampered policy", lambda: repoliced(presigned(), lambda p: p["conditions"].__setitem__(1, {"key": "bob"})),
     0, BUCKET, SignatureMismatch, "SignatureDoesNotMatch", "does not match"),
    ("tampered key condition widened", lambda: repoliced(
        presigned(), lambda p: p["conditions"].__setitem__(1, ["starts-with", "$key", ""])),
     0, BUCKET, SignatureMismatch, "SignatureDoesNotMatch", "does not match"),
    ("tampered signature", _tampered_signature, 0, BUCKET, SignatureMismatch, "SignatureDoesNotMatch",
     "does not match"),
    ("wrong secret", lambda: presigned(secret=US_SECRET), 0, BUCKET, SignatureMismatch, "SignatureDoesNotMatch",
     "does not match"),
    ("another key's credential", lambda: changed(presigned(), x_amz_credential=CREDENTIAL.replace(IE_KEY, US_KEY)),
     0, BUCKET, SignatureMismatch, "SignatureDoesNotMatch", "does not match"),
    ("unknown key", lambda: presigned(access="AKIANOTKNOWN00000001"), 0, BUCKET, UnknownAccessKey,
     "InvalidAccessKeyId", "not one this proxy knows"),
    ("unknown key, malformed signature", lambda: changed(presigned(access="AKIANOTKNOWN00000001"),
                                                         x_amz_signature="0" * 63),
     0, BUCKET, MalformedSignature, "InvalidArgument", "64 lowercase"),
    ("unknown key, date not the credential's", lambda: changed(presigned(access="AKIANOTKNOWN00000001"),
                                                               x_amz_date="20261206T013000Z"),
     0, BUCKET, MalformedSignature, "InvalidArgument", "credential's date"),
    ("other region", lambda: presigned(region="us-east-1"), 0, BUCKET, MalformedSignature, "InvalidArgument",
     "region"),
    ("expired", lambda: presigned(expires=60), 61, BUCKET, ExpiredSignature, "AccessDenied", "Policy expired"),
    ("expired at its instant", lambda: presigned(expires=60), 60, BUCKET, ExpiredSignature, "AccessDenied",
     "Policy expired"),
    ("date in the future", lambda: presigned(), -16 * 60, BUCKET, RequestTimeTooSkewed, "RequestTimeTooSkewed",
     "15 minutes"),
    ("SigV2, a signature not base64 of 20 bytes", _sigv2, 0, BUCKET, MalformedSignature, "InvalidArgument",
     "28-character"),
    ("SigV2 field beside SigV4", lambda: {**presigned(), "awsaccesskeyid": IE_KEY}, 0, BUCKET,
     MalformedSignature, "InvalidArgument", "mixes SigV2"),
    ("SigV2, the wrong secret", lambda: presigned(version="s3", secret=US_SECRET), 0, BUCKET, SignatureMismatch,
     "SignatureDoesNotMatch", "does not match"),
    ("SigV2, tampered policy", lambda: repoliced(
        presigned(version="s3"), lambda p: p["conditions"].__setitem__(1, {"key": "bob"})),
     0, BUCKET, SignatureMismatch, "SignatureDoesNotMatch", "does not match"),
    ("SigV2, an unknown key", lambda: presigned(version="s3", access="AKIANOTKNOWN00000001"), 0, BUCKET,
     UnknownAccessKey, "InvalidAccessKeyId", "not one this proxy knows"),
    ("SigV2, no signature", lambda: {k: v for k, v in presigned(version="s3").items() if k != "signature"}, 0,
     BUCKET, MalformedSignature, "InvalidArgument", "'signature'"),
    ("SigV2, expired", lambda: presigned(version="s3", expires=60), 61, BUCKET, ExpiredSignature, "AccessDenied",
     "Policy expired"),
    ("SigV2, a field no condition names", lambda: {**presigned(version="s3"), "acl": "private"}, 0, BUCKET,
     PolicyConditionFailed, "AccessDenied", "Extra input fields: acl"),
    ("security token", lambda: presigned(token="FQoGZXIvYXdzEXAMPLE"), 0, BUCKET, MalformedSignature,
     "InvalidArgument", "security token"),
    ("no x-amz-signature", _missing("x-amz-signature"), 0, BUCKET, MalformedSignature, "InvalidArgument",
     "x-amz-signature"),
    ("no policy", _missing("policy"), 0, BUCKET, MalformedSignature, "InvalidArgument", "'policy'"),
    ("no x-amz-credential", _missing("x-amz-credential"), 0, BUCKET, MalformedSignature, "InvalidArgument",
     "x-amz-credential"),
    ("no x-amz-date", _missing("x-amz-date"), 0, BUCKET, MalformedSignature, "InvalidArgument", "x-amz-date"),
    ("SigV4a algorithm", lambda: changed(presigned(), x_amz_algorithm="AWS4-ECDSA-P256-SHA256"), 0, BUCKET,
     MalformedSignature, "InvalidArgument", "AWS4-HMAC-SHA256"),
    ("uppercase signature", lambda: changed(presigned(), x_amz_signature=presigned()["x-amz-signature"].upper()),
     0, BUCKET, MalformedSignature, "InvalidArgument", "lowercase"),
    ("date not the credential's", lambda: changed(presigned(), x_amz_date="20261206T013000Z"), 0, BUCKET,
     MalformedSignature, "InvalidArgument", "credential's date"),
    ("date not a date", lambda: changed(presigned(), x_amz_date="20261207T256000Z"), 0, BUCKET,
     MalformedSignature, "InvalidArgument", "not a valid date"),
    ("malformed credential", lambda: changed(presigned(), x_amz_credential=f"{IE_KEY}/20261207/{REGION}/s3"),
     0, BUCKET, MalformedSignature, "InvalidArgument", "KEY/YYYYMMDD/REGION/s3/aws4_request"),
    ("extra field not in conditions", lambda: {**presigned(), "acl": "public-read"}, 0, BUCKET,
     PolicyConditionFailed, "AccessDenied", "Extra input fields: acl"),
    ("key condition failed", lambda: changed(presigned(), key="bob/1.eml"), 0, BUCKET, PolicyConditionFailed,
     "AccessDenied", 'Policy Condition failed: ["eq", "$key", "alice/1.eml"]'),
    ("bucket condition failed", lambda: presigned(), 0, "mail-us-virginia", PolicyConditionFailed,
     "AccessDenied", f'Policy Condition failed: ["eq", "$bucket", "{BUCKET}"]'),
    ("${filename} key outside its prefix", lambda: changed(presigned("uploads/${filename}"), key="x/${filename}"),
     0, BUCKET, PolicyConditionFailed, "AccessDenied", '["starts-with", "$key", "uploads/"]'),
    ("key prefix reaching into ${filename}", lambda: _key_prefix("uploads/ph"), 0, BUCKET, PolicyConditionFailed,
     "AccessDenied", "${filename}"),
    ("exact key with ${filename}", lambda: written(document(key={"key": "uploads/${filename}"}),
                                                   key="uploads/${filename}"),
     0, BUCKET, PolicyConditionFailed, "AccessDenied", "${filename}"),
    ("acl condition failed", lambda: presigned(fields={"acl": "public-read"}, conditions=[{"acl": "private"}]),
     0, BUCKET, PolicyConditionFailed, "AccessDenied", '["eq", "$acl", "private"]'),
    ("condition on an absent field", lambda: written(document({"acl": "private"})), 0, BUCKET,
     PolicyConditionFailed, "AccessDenied", '["eq", "$acl", "private"]'),
    ("value compared case-sensitively", lambda: written(document({"acl": "private"}), acl="Private"), 0, BUCKET,
     PolicyConditionFailed, "AccessDenied", '["eq", "$acl", "private"]'),
    ("starts-with on bucket", lambda: written(
        {"expiration": HOUR_LATER, "conditions": [*conditions()[1:], ["starts-with", "$bucket", ""]]}),
     0, BUCKET, PolicyConditionFailed, "AccessDenied", '["starts-with", "$bucket", ""]'),
    ("a Content-Type of a list not matching", lambda: written(
        document(["starts-with", "$content-type", "image/"]), more={"content-type": "image/png,text/html"}),
     0, BUCKET, PolicyConditionFailed, "AccessDenied", "$content-type"),
    ("unknown condition op", lambda: written(document(["in", "$acl", ["private"]]), acl="private"), 0, BUCKET,
     PolicyConditionFailed, "AccessDenied", '["in", "$acl", ["private"]]'),
    ("condition without $", lambda: written(document(["eq", "acl", "private"]), acl="private"), 0, BUCKET,
     PolicyConditionFailed, "AccessDenied", '["eq", "acl", "private"]'),
    ("condition of four items", lambda: written(document(["eq", "$acl", "private", "x"]), acl="private"), 0,
     BUCKET, PolicyConditionFailed, "AccessDenied", "Policy Condition failed"),
    ("condition a string", lambda: written(document("acl")), 0, BUCKET, PolicyConditionFailed, "AccessDenied",
     'Policy Condition failed: "acl"'),
    ("condition value not a string", lambda: written(document({"success_action_status": 201})), 0, BUCKET,
     PolicyConditionFailed, "AccessDenied", "success_action_status"),
    ("range bounds as strings", lambda: written(document(["content-length-range", "1", "10"])), 0, BUCKET,
     PolicyConditionFailed, "AccessDenied", "content-length-range"),
    ("range bounds as booleans", lambda: written(document(["content-length-range", False, True])), 0, BUCKET,
     PolicyConditionFailed, "AccessDenied", "content-length-range"),
    ("range bounds as floats", lambda: written(document(["content-length-range", 1.0, 10.0])), 0, BUCKET,
     PolicyConditionFailed, "AccessDenied", "content-length-range"),
    ("range min above max", lambda: written(document(["content-length-range", 10, 1])), 0, BUCKET,
     PolicyConditionFailed, "AccessDenied", "[\"content-length-range\", 10, 1]"),
    ("range below 0", lambda: written(document(["content-length-range", -1, 1])), 0, BUCKET,
     PolicyConditionFailed, "AccessDenied", "content-length-range"),
    ("two content-length-range", lambda: presigned(
        conditions=[["content-length-range", 0, 10], ["content-length-range", 0, 1000]]), 0, BUCKET,
     MalformedSignature, "InvalidPolicyDocument", "more than one content-length-range"),
    ("simple condition of two properties", lambda: written(document({"acl": "private", "key": "x"})), 0, BUCKET,
     MalformedSignature, "InvalidPolicyDocument", "exactly one property"),
    ("malformed base64", lambda: written(policy="eyJleHBpcmF0aW9uIjo*"), 0, BUCKET, MalformedSignature,
     "InvalidPolicyDocument", "base64"),
    ("base64 with a newline", lambda: written(policy=base64.encodebytes(json.dumps(document()).encode()).decode()),
     0, BUCKET, MalformedSignature, "InvalidPolicyDocument", "base64"),
    ("not JSON", lambda: written(raw=b"{expiration: 1}"), 0, BUCKET, MalformedSignature, "InvalidPolicyDocument",
     "Invalid JSON"),
    ("not UTF-8", lambda: written(raw=b'{"expiration": "\xff"}'), 0, BUCKET, MalformedSignature,
     "InvalidPolicyDocument", "Invalid JSON"),
    ("NaN", lambda: written(raw=b'{"expiration": NaN, "conditions": []}'), 0, BUCKET, MalformedSignature,
     "InvalidPolicyDocument", "NaN"),
    ("not an object", lambda: written(raw=b"[]"), 0, BUCKET, MalformedSignature, "InvalidPolicyDocument",
     "object"),
    ("duplicate JSON keys", lambda: written(
        raw=f'{{"expiration": "{HOUR_LATER}", "conditions": [], "conditions": [{{"bucket": "{BUCKET}"}}]}}'
        .encode()), 0, BUCKET, MalformedSignature, "InvalidPolicyDocument", "twice"),
    ("duplicate keys in a condition", lambda: written(
        raw=f'{{"expiration": "{HOUR_LATER}", "conditions": [{{"key": "a", "key": "alice/1.eml"}}]}}'.encode()),
     0, BUCKET, MalformedSignature, "InvalidPolicyDocument", "twice"),
    ("no expiration", lambda: written({"conditions": conditions()}), 0, BUCKET, MalformedSignature,
     "InvalidPolicyDocument", "Missing expiration"),
    ("no conditions", lambda: written({"expiration": HOUR_LATER}), 0, BUCKET, MalformedSignature,
     "InvalidPolicyDocument", "Missing conditions"),
    ("conditions not a list", lambda: written({"expiration": HOUR_LATER, "conditions": {"bucket": BUCKET}}), 0,
     BUCKET, MalformedSignature, "InvalidPolicyDocument", "list"),
    ("another top-level key", lambda: written({**document(), "Version": "2012-10-17"}), 0, BUCKET,
     MalformedSignature, "InvalidPolicyDocument", "Version"),
    ("expiration with an offset", lambda: written(document(expiration="2026-12-07T02:30:00+00:00")), 0, BUCKET,
     MalformedSignature, "InvalidPolicyDocument", "Invalid expiration"),
    ("expiration a number", lambda: written(document(expiration=1796614200)), 0, BUCKET, MalformedSignature,
     "InvalidPolicyDocument", "Invalid expiration"),
    ("expiration not a date", lambda: written(document(expiration="2026-02-30T02:30:00Z")), 0, BUCKET,
     MalformedSignature, "InvalidPolicyDocument", "Invalid expiration"),
    ("a bucket field naming another bucket", lambda: written(document(), bucket="mail-us-virginia"), 0, BUCKET,
     MalformedSignature, "InvalidArgument", "another bucket"),
]


@pytest.mark.parametrize(("form", "offset", "bucket", "error", "code", "words"), [case[1:] for case in REFUSED],
                         ids=[case[0] for case in REFUSED])
def test_a_form_that_does_not_verify_is_refused(form: Callable[[], dict[str, str]], offset: float, bucket: str,
                                                error: type[RequestRefused], code: str, words: str) -> None:
    with pytest.raises(error) as refused:
        verify_post_policy(ring(offset), form(), bucket)
    assert type(refused.value) is error
    assert refused.value.code == code
    assert words in refused.value.message
    assert refused.value.status == (400 if code in ("InvalidArgument", "InvalidPolicyDocument") else 403)


def test_the_signature_is_verified_before_the_policy_is_read() -> None:
    """An unsigned policy is never decoded: a forged one that is not even JSON gets SignatureDoesNotMatch."""
    form = {**written(raw=b"not json"), "x-amz-signature": signature("something else")}
    with pytest.raises(SignatureMismatch):
        verify_post_policy(ring(), form, BUCKET)


@pytest.mark.parametrize(("fields", "signed"), [
    ({"key": "a"}, False),
    ({"key": "a", "acl": "private", "x-amz-date": STAMP, "x-amz-algorithm": "AWS4-HMAC-SHA256"}, False),
    ({"key": "a", "x-amz-signature": "0" * 64}, True),
    ({"key": "a", "x-amz-credential": CREDENTIAL}, True),
    ({"key": "a", "policy": "e30="}, True),
    ({"key": "a", "signature": "c2ln"}, True),
    ({"key": "a", "awsaccesskeyid": IE_KEY}, True),
])
def test_has_post_signature(fields: dict[str, str], signed: bool) -> None:
    assert has_post_signature(fields) is signed


def test_no_altered_byte_of_the_policy_or_signature_verifies() -> None:
    form = presigned("uploads/${filename}", fields={"acl": "private"},
                     conditions=[{"acl": "private"}, ["content-length-range", 1, 1000]])
    keys = ring()
    assert verify_post_policy(keys, form, BUCKET)[0].rule.subject == "mail-ie"

    @settings(max_examples=400, deadline=None)
    @given(st.sampled_from(["policy", "x-amz-signature"]), st.data())
    def altered(name: str, data: st.DataObject) -> None:
        value = form[name]
        index = data.draw(st.integers(0, len(value) - 1))
        replacement = data.draw(st.characters(codec="utf-8").filter(lambda c: c != value[index]))
        with pytest.raises(Unauthenticated):
            verify_post_policy(keys, {**form, name: value[:index] + replacement + value[index + 1:]}, BUCKET)

    altered()


@given(st.integers(-3600, 3600 * 3))
@settings(max_examples=50, deadline=None)
def test_the_clock_decides_expiry_and_skew_only(offset: int) -> None:
    """A valid form is refused only as expired (after its hour) or too early (over 15 minutes ahead)."""
    form = written(document())
    try:
        verify_post_policy(ring(offset), form, BUCKET)
    except ExpiredSignature:
        assert offset >= 3600
    except RequestTimeTooSkewed:
        assert offset < -15 * 60
    else:
        assert -15 * 60 <= offset < 3600


def test_a_form_one_second_within_its_expiry_verifies() -> None:
    verify_post_policy(ring(3599), presigned(), BUCKET)
    verify_post_policy(ring(-15 * 60), presigned(), BUCKET)
    with pytest.raises(RequestTimeTooSkewed):
        verify_post_policy(ring(-15 * 60 - 1), presigned(), BUCKET)
    assert timedelta(seconds=3600) == datetime(2026, 12, 7, 2, 30, tzinfo=UTC) - NOW
