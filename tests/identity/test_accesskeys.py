"""S3 access keys as identity: a request is its key's caller only once its signature verifies.

Requests are signed by botocore's own signers (as the SDKs and the AWS CLI
sign them), then tampered with the way an attacker holding another key
would: every reading that is not exactly AWS's is refused, and no tampering
ever turns a US key holder's request into an Irish one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import botocore.auth
import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.bodies import BodyBudget, Hold
from proxy.config import AccessKeyRule, IdentityConfig, NetworkRule, load_config
from proxy.errors import (
    BadRequest,
    ConfigError,
    ExpiredSignature,
    MalformedSignature,
    RequestRefused,
    RequestTimeTooSkewed,
    SignatureMismatch,
    SlowDown,
    Unauthenticated,
    UnknownAccessKey,
)
from proxy.identity import IdentityResolver
from proxy.identity.accesskeys import AccessKeyTable, Authenticated
from proxy.identity.bodycheck import BodyCheck
from proxy.identity.sigv2 import SIGV2_SIGNED_PARAMS
from proxy.s3.operations import _TABLE as _OPERATIONS
from tests.support.awssign import STREAMING, Signed, signed, streaming_request

IE_KEY, IE_SECRET = "AKIAIRELAND00000001", "irish-secret-0123456789abcdefghijklmnopq"
US_KEY, US_SECRET = "AKIAUNITEDSTATES001", "us-secret-0123456789abcdefghijklmnopqrst"
RULES = (AccessKeyRule(IE_KEY, "IE", "mail-ie", secret_access_key=IE_SECRET),
         AccessKeyRule(US_KEY, "US", "mail-us", secret_access_key=US_SECRET))
URL = "http://127.0.0.1:8080/mail-eu-dublin/alice/inbox/1.eml"
REGION = "eu-west-1"


def table(clock: Callable[[], float] = time.time, bucket: str | None = None) -> AccessKeyTable:
    return AccessKeyTable(RULES, REGION, clock=clock, virtual_bucket=lambda _headers: bucket)


def check(request: Signed, keys: AccessKeyTable | None = None) -> Authenticated | None:
    headers = CIMultiDictProxy(CIMultiDict(request.headers))
    return (keys or table()).authenticate(request.method, request.target, headers)


def ie(method: str = "GET", url: str = URL, **kwargs: object) -> Signed:
    return signed(method, url, IE_KEY, IE_SECRET, **kwargs)  # type: ignore[arg-type]


def us(method: str = "GET", url: str = URL, **kwargs: object) -> Signed:
    return signed(method, url, US_KEY, US_SECRET, **kwargs)  # type: ignore[arg-type]


# ---- what verifies ------------------------------------------------------------------------------

@pytest.mark.parametrize(("request_", "subject", "body"), [
    (lambda: ie(), "mail-ie", "sha256"),
    (lambda: us(), "mail-us", "sha256"),
    (lambda: ie("PUT", body=b"Dublin mail"), "mail-ie", "sha256"),
    (lambda: ie("PUT", body=b"x", payload="UNSIGNED-PAYLOAD"), "mail-ie", None),
    (lambda: ie("PUT", url=URL + "?tagging", body=b"<Tagging/>"), "mail-ie", "sha256"),
    (lambda: ie(url=URL.replace("1.eml", "a%20b~c%2Bd.eml") + "?versionId=a%2Fb&x-id=GetObject"), "mail-ie", "sha256"),
    (lambda: ie("PUT", headers={"x-amz-meta-note": "two  spaces", "Content-Type": "text/plain"}), "mail-ie", "sha256"),
    (lambda: ie(version="v4-query"), "mail-ie", None),
    (lambda: ie("PUT", version="v4-query"), "mail-ie", None),
    (lambda: ie(url=URL + "?versionId=3", version="v4-query"), "mail-ie", None),
    (lambda: ie(version="v2"), "mail-ie", None),
    (lambda: ie("PUT", url=URL + "?acl", version="v2", headers={"x-amz-acl": "private", "Content-Type": "a/b"}),
     "mail-ie", None),
    (lambda: ie(version="v2-query"), "mail-ie", None),
    (lambda: ie(url=URL.rsplit("/", 3)[0] + "?list-type=2&prefix=alice&x-id=ListObjectsV2", version="v2"), "mail-ie",
     None),   # listing controls select no operation: SigV2 leaves them unsigned, as S3 does
    (lambda: ie("PUT", version="v2-query", headers={"x-amz-acl": "private"}), "mail-ie", None),   # hoisted to the query
    (lambda: streaming_request(URL, IE_KEY, IE_SECRET, b"x" * 1000)[0], "mail-ie", "chunks"),
])
def test_a_signature_made_by_an_sdk_verifies(request_: Callable[[], Signed], subject: str, body: str | None) -> None:
    verified = check(request_())
    assert verified is not None
    assert verified.rule.subject == subject
    kind = None if verified.body is None else "sha256" if verified.body.sha256 else "chunks"
    assert kind == body


def test_a_date_header_can_stand_for_x_amz_date() -> None:
    # botocore signs with Date when the request has one (the scope's date is then Date's).
    request = ie(headers={"Date": "Thu, 01 Jan 1970 00:00:00 GMT"})
    assert "X-Amz-Date" not in dict(request.headers)
    assert "date;" in request.header("Authorization")
    assert check(request) is not None


def test_each_day_signs_with_its_own_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # The day's signing key is derived once and remembered: the next day's request needs the next day's key.
    now = [0.0]
    keys = table(clock=lambda: now[0])
    for moment in (datetime(2026, 3, 1, 23, 59, 30), datetime(2026, 3, 2, 0, 0, 30), datetime(2026, 3, 1, 23, 59)):
        monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda moment=moment: moment)
        now[0] = moment.replace(tzinfo=UTC).timestamp()
        verified = check(ie(), keys)
        assert verified is not None
        assert verified.rule.subject == "mail-ie"


def test_sigv2_signs_the_bucket_of_a_virtual_hosted_host() -> None:
    request = signed("GET", "http://mail-eu-dublin.localhost:8080/alice/inbox/1.eml", IE_KEY, IE_SECRET,
                     version="v2", auth_path="/mail-eu-dublin/alice/inbox/1.eml")
    with pytest.raises(SignatureMismatch):
        check(request, table(bucket=None))   # read path-style, the resource is another one
    verified = check(request, table(bucket="mail-eu-dublin"))
    assert verified is not None
    assert verified.rule.jurisdiction == "IE"


def test_no_signature_is_no_key() -> None:
    assert check(Signed("GET", "/b/k", (("Host", "h"),))) is None
    assert check(Signed("GET", "/b/k?list-type=2&prefix=a", (("Host", "h"),))) is None


# ---- what is refused ----------------------------------------------------------------------------

SIGNED_V4: Signed
AUTH = CREDENTIAL = SIGNED_HEADERS = SIGNATURE = ""
US_SIGNED: Signed
US_V4: Signed
US_V2: Signed
US_QUERY: dict[str, Signed]


def sign_shared() -> None:
    """Sign the requests the tables below share, now. Each test signs them again before it runs (the fixture
    below): a signed date more than 15 minutes old is refused, and a long suite reaches this file later."""
    global SIGNED_V4, AUTH, CREDENTIAL, SIGNED_HEADERS, SIGNATURE, US_SIGNED, US_V4, US_V2, US_QUERY
    SIGNED_V4 = ie("PUT", body=b"Dublin mail")
    AUTH = SIGNED_V4.header("Authorization")
    CREDENTIAL, SIGNED_HEADERS, SIGNATURE = (part.split("=", 1)[1] for part in AUTH.split(" ", 1)[1].split(", "))
    US_SIGNED = us("PUT", body=b"Dublin mail")
    US_V4 = us("PUT", body=b"Dublin mail")
    US_V2 = us(version="v2")
    US_QUERY = {"v4": us(version="v4-query"), "v2": us(version="v2-query")}


sign_shared()


@pytest.fixture(autouse=True)
def _signed_now() -> None:
    sign_shared()


def v4(text: str) -> Signed:
    return SIGNED_V4.replace("Authorization", text)


def presigned(**changes: str) -> Signed:
    request = ie(version="v4-query")
    path, _, query = request.target.partition("?")
    pairs = [pair.split("=", 1) for pair in query.split("&")]
    for name, value in changes.items():
        name = name.replace("_", "-")
        if value == "DROP":
            pairs = [p for p in pairs if p[0] != name]
        elif value.startswith("+"):
            pairs.append([name, value[1:]])
        else:
            pairs = [[n, value if n == name else v] for n, v in pairs]
    return Signed(request.method, path + "?" + "&".join("=".join(p) for p in pairs), request.headers)


REFUSED: list[tuple[str, Callable[[], Signed], type[Unauthenticated], str]] = [
    # The three components: exactly, in order, once each.
    ("reordered", lambda: v4(f"AWS4-HMAC-SHA256 SignedHeaders={SIGNED_HEADERS}, Credential={CREDENTIAL}, "
                             f"Signature={SIGNATURE}"), MalformedSignature, "these three"),
    ("credential twice", lambda: v4(AUTH + f", Credential={US_SIGNED.header('Authorization').split('=')[1]}"),
     MalformedSignature, "these three"),
    ("credential first twice", lambda: v4(AUTH.replace("Credential=", f"Credential={US_KEY}/x, Credential=", 1)),
     MalformedSignature, "these three"),
    ("extra component", lambda: v4(AUTH + ", Extra=1"), MalformedSignature, "these three"),
    ("missing signature", lambda: v4(AUTH.rsplit(", ", 1)[0]), MalformedSignature, "these three"),
    ("two spaces", lambda: v4(AUTH.replace(", ", ",  ")), MalformedSignature, "these three"),
    ("space before comma", lambda: v4(AUTH.replace(", ", " , ")), MalformedSignature, "these three"),
    ("tab after scheme", lambda: v4(AUTH.replace(" ", "\t", 1)), MalformedSignature, "these three"),
    ("no space after scheme", lambda: v4(AUTH.replace(" ", "", 1)), MalformedSignature, "these three"),
    ("lower-case scheme", lambda: v4(AUTH.lower()), MalformedSignature, "these three"),
    ("lower-case component", lambda: v4(AUTH.replace("Credential=", "credential=")), MalformedSignature,
     "these three"),
    ("space around =", lambda: v4(AUTH.replace("Signature=", "Signature = ")), MalformedSignature, "these three"),
    ("trailing comma", lambda: v4(AUTH + ","), MalformedSignature, "these three"),
    ("SigV4a", lambda: v4(AUTH.replace("AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256")), MalformedSignature,
     "these three"),
    ("another scheme", lambda: v4("Signature " + AUTH.split(" ", 1)[1]), MalformedSignature, "these three"),
    ("Basic", lambda: v4("Basic dXM6cGFzcw=="), MalformedSignature, "these three"),
    ("upper-case signature", lambda: v4(AUTH.replace(SIGNATURE, SIGNATURE.upper())), MalformedSignature,
     "64 lowercase"),
    ("unsorted headers", lambda: v4(AUTH.replace(SIGNED_HEADERS, ";".join(reversed(SIGNED_HEADERS.split(";"))))),
     MalformedSignature, "sorted"),
    ("repeated Authorization", lambda: SIGNED_V4.add("Authorization", AUTH), MalformedSignature, "more than one"),
    # The scope.
    ("other region", lambda: signed("PUT", URL, IE_KEY, IE_SECRET, region="us-east-1", body=b"Dublin mail"),
     MalformedSignature, "region"),
    ("other service", lambda: v4(AUTH.replace("/s3/", "/s3-object-lambda/")), MalformedSignature, "service"),
    ("scope date", lambda: v4(AUTH.replace(CREDENTIAL.split("/")[1], "20000101")), MalformedSignature,
     "request's date"),
    # What must be signed, and how.
    ("unsigned x-amz header", lambda: SIGNED_V4.add("x-amz-copy-source", "mail-eu-dublin/alice/inbox/1.eml"),
     MalformedSignature, "x-amz-copy-source is not"),
    ("host unsigned", lambda: us("GET", headers={}).replace(
        "Authorization", us().header("Authorization").replace("host;", "")), MalformedSignature, "host"),
    ("signed header absent", lambda: ie(headers={"x-amz-meta-a": "1"}).without("x-amz-meta-a"),
     MalformedSignature, "not in the request"),
    ("signed tag header", lambda: ie(headers={"X-Bailiwick-Jurisdiction": "IE"}), MalformedSignature,
     "does not forward"),
    # Dropped before forwarding (proxy.tags.ROUTING_HINTS_DROPPED): the storage server could not check it.
    ("signed routing hint", lambda: ie(headers={"X-Forwarded-Proto": "https"}), MalformedSignature,
     "does not forward"),
    ("no content sha256", lambda: SIGNED_V4.without("X-Amz-Content-SHA256").replace(
        "Authorization", AUTH.replace("x-amz-content-sha256;", "")), MalformedSignature, "X-Amz-Content-SHA256"),
    ("unknown payload value", lambda: ie(payload="STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD"), MalformedSignature,
     "UNSIGNED-PAYLOAD"),
    # A signed header given twice: the proxy and the storage server could each read another one.
    ("signed header twice", lambda: ie(headers={"x-amz-meta-a": "1"}).add("x-amz-meta-a", "2"),
     MalformedSignature, "x-amz-meta-a is given more than once"),
    ("host twice", lambda: SIGNED_V4.add("Host", "mail-us-east.localhost"), MalformedSignature,
     "host is given more than once"),
    ("date twice", lambda: SIGNED_V4.add("X-Amz-Date", SIGNED_V4.header("X-Amz-Date")), MalformedSignature,
     "x-amz-date is given more than once"),
    ("non-ASCII signed value", lambda: ie(headers={"x-amz-meta-a": "caf\u00e9"}), MalformedSignature, "ASCII"),
    ("security token", lambda: ie(headers={"X-Amz-Security-Token": "t"}), MalformedSignature, "token"),
    # The signature itself.
    ("one digit changed", lambda: v4(AUTH[:-1] + ("0" if AUTH[-1] != "0" else "1")), SignatureMismatch, "does not"),
    ("Irish key id, US secret", lambda: signed("PUT", URL, IE_KEY, US_SECRET, body=b"Dublin mail"),
     SignatureMismatch, "does not match"),
    ("US signature, Irish key id", lambda: US_SIGNED.replace(
        "Authorization", US_SIGNED.header("Authorization").replace(US_KEY, IE_KEY)), SignatureMismatch, "does not"),
    ("path changed", lambda: Signed("PUT", SIGNED_V4.target.replace("1.eml", "2.eml"), SIGNED_V4.headers),
     SignatureMismatch, "does not match"),
    ("query added", lambda: Signed("PUT", SIGNED_V4.target + "?acl", SIGNED_V4.headers), SignatureMismatch,
     "does not match"),
    ("host changed", lambda: SIGNED_V4.replace("Host", "mail-us-east.localhost"), SignatureMismatch, "does not"),
    ("payload changed", lambda: SIGNED_V4.replace("X-Amz-Content-SHA256", "UNSIGNED-PAYLOAD"), SignatureMismatch,
     "does not match"),
    ("unknown key", lambda: signed("GET", URL, "AKIAOTHER", IE_SECRET), UnknownAccessKey, "not one this proxy"),
    # SigV2 and mixtures.
    ("SigV2 wrong secret", lambda: signed("GET", URL, IE_KEY, US_SECRET, version="v2"), SignatureMismatch,
     "does not match"),
    ("SigV2 two colons", lambda: ie(version="v2").replace(
        "Authorization", f"AWS {US_KEY}:{IE_KEY}:" + ie(version="v2").header("Authorization").split(":")[1]),
     MalformedSignature, "these three"),
    ("SigV2 no date", lambda: ie(version="v2").without("Date"), MalformedSignature, "Date"),
    # SigV2 signs no payload: a verified signature could not vouch for chunk signatures.
    ("SigV2 streaming payload", lambda: ie("PUT", version="v2", headers={"X-Amz-Content-SHA256": STREAMING}),
     MalformedSignature, "cannot carry chunk signatures"),
    ("header and query", lambda: Signed("GET", presigned().target, SIGNED_V4.headers), MalformedSignature,
     "not both"),
    ("SigV2 header, SigV4 query", lambda: Signed("GET", presigned().target, ie(version="v2").headers),
     MalformedSignature, "not both"),
    ("SigV4 and SigV2 query", lambda: presigned(AWSAccessKeyId=f"+{US_KEY}"), MalformedSignature, "mixes"),
    # Presigned SigV4.
    ("presigned, credential twice", lambda: presigned(X_Amz_Credential=f"+{US_KEY}%2Fx"), MalformedSignature,
     "more than once"),
    ("presigned, other spelling", lambda: presigned(x_amz_credential=f"+{US_KEY}%2Fx"), MalformedSignature,
     "exactly so"),
    ("presigned, encoded name", lambda: presigned(**{"X-Amz-%43redential": f"+{US_KEY}%2Fx"}),
     MalformedSignature, "exactly so"),
    ("presigned, missing date", lambda: presigned(X_Amz_Date="DROP"), MalformedSignature, "missing: X-Amz-Date"),
    ("presigned, expires 0", lambda: presigned(X_Amz_Expires="0"), MalformedSignature, "X-Amz-Expires"),
    ("presigned, expires 8 days", lambda: presigned(X_Amz_Expires="691200"), MalformedSignature, "X-Amz-Expires"),
    ("presigned, other algorithm", lambda: presigned(X_Amz_Algorithm="AWS4-HMAC-SHA1"), MalformedSignature,
     "Algorithm"),
    ("presigned, expiry lengthened", lambda: presigned(X_Amz_Expires="7200"), SignatureMismatch, "does not"),
    ("presigned, query added", lambda: presigned(versionId="+3"), SignatureMismatch, "does not match"),
    ("presigned, content sha256 header", lambda: presigned().add("X-Amz-Content-SHA256", "UNSIGNED-PAYLOAD"),
     MalformedSignature, "presigned request"),
    ("presigned, unsigned x-amz header", lambda: presigned().add("x-amz-acl", "public-read"), MalformedSignature,
     "x-amz-acl is not"),
    ("presigned, token", lambda: presigned(**{"X-Amz-Security-Token": "+t"}), MalformedSignature, "token"),
    # Presigned SigV2.
    ("SigV2 presigned, hoisted twice", lambda: Signed(
        "PUT", ie("PUT", version="v2-query", headers={"x-amz-acl": "private"}).target + "&x-amz-acl=public-read",
        ie().headers[:1]), MalformedSignature, "given twice"),
    ("SigV2 presigned, hoisted and header", lambda: ie(
        "PUT", version="v2-query", headers={"x-amz-acl": "private"}).add("x-amz-acl", "private"),
     MalformedSignature, "given twice"),
    # SigV2 signs the Content-Type header: a copy in the query that says otherwise is not left for S3 to read.
    ("SigV2 presigned, query content-type not the header's", lambda: Signed(
        "PUT", ie("PUT", version="v2-query", headers={"Content-Type": "text/plain"}).target.replace(
            "content-type=text%2Fplain", "content-type=text%2Fhtml"),
        (*ie().headers[:1], ("Content-Type", "text/plain"))), MalformedSignature, "not the request's content-type"),
    # A request-target that is not a path has no canonical path to sign.
    ("absolute-form target", lambda: Signed("PUT", "http://127.0.0.1:8080" + SIGNED_V4.target, SIGNED_V4.headers),
     MalformedSignature, "must be a path"),
    # SigV2 signs a fixed list of sub-resources: one outside it, added after signing, is refused.
    ("SigV2, unsigned selector", lambda: Signed("PUT", ie("PUT", version="v2").target + "?retention",
                                                ie("PUT", version="v2").headers), MalformedSignature, "retention"),
    ("SigV2 presigned, unsigned selector", lambda: Signed("GET", ie(version="v2-query").target + "&attributes",
                                                          ie().headers[:1]), MalformedSignature, "attributes"),
    ("SigV2, encoded & in a signed value", lambda: ie(url=URL + "?versionId=a%26uploadId%3D1", version="v2"),
     MalformedSignature, "encoded '&'"),
    ("SigV2, x-amz query parameter", lambda: ie(url=URL + "?x-amz-acl=public-read", version="v2"),
     MalformedSignature, "not covered"),
    ("SigV2 presigned, wrong secret", lambda: signed("GET", URL, IE_KEY, US_SECRET, version="v2-query"),
     SignatureMismatch, "does not match"),
]


def test_the_sigv2_sub_resources_are_botocores() -> None:
    from botocore.auth import HmacV1Auth

    assert set(HmacV1Auth.QSAOfInterest) == SIGV2_SIGNED_PARAMS


# Every selector of the operation table SigV2 leaves unsigned (value-selectors by name: "list-type=2" -> "list-type").
UNSIGNED_BY_SIGV2 = sorted({name.split("=")[0] for (_, _, chosen) in _OPERATIONS for name in chosen}
                           - SIGV2_SIGNED_PARAMS - {"list-type"})


@pytest.mark.parametrize("selector", UNSIGNED_BY_SIGV2)
@pytest.mark.parametrize("version", ["v2", "v2-query"])
def test_no_selector_sigv2_leaves_unsigned_can_be_added(selector: str, version: str) -> None:
    for method in ("GET", "PUT"):
        request = ie(method, version=version)
        joined = "&" if "?" in request.target else "?"
        with pytest.raises(MalformedSignature, match=selector):
            check(Signed(method, f"{request.target}{joined}{selector}=1", request.headers))


@pytest.mark.parametrize(("name", "make", "error", "words"), REFUSED, ids=[case[0] for case in REFUSED])
def test_anything_not_read_exactly_as_aws_is_refused(
    name: str, make: Callable[[], Signed], error: type[Unauthenticated], words: str,
) -> None:
    with pytest.raises(error, match=words):
        check(make())


SKEW = 15 * 60


@pytest.mark.parametrize(("make", "good", "bad", "error"), [
    (lambda: ie("PUT", body=b"x"), SKEW - 5, SKEW + 5, RequestTimeTooSkewed),
    (lambda: ie("PUT", body=b"x"), 5 - SKEW, -SKEW - 5, RequestTimeTooSkewed),
    (lambda: ie(version="v2"), SKEW - 5, SKEW + 5, RequestTimeTooSkewed),
    (lambda: ie(version="v2"), 5 - SKEW, -SKEW - 5, RequestTimeTooSkewed),
    (lambda: ie(version="v4-query", expires=60), 55, 65, ExpiredSignature),
    (lambda: ie(version="v4-query", expires=60), 5 - SKEW, -SKEW - 5, RequestTimeTooSkewed),   # dated ahead
    (lambda: ie(version="v2-query", expires=60), 55, 65, ExpiredSignature),
])
def test_the_signed_date_must_be_now(make: Callable[[], Signed], good: float, bad: float,
                                     error: type[Unauthenticated]) -> None:
    request = make()
    assert check(request, table(lambda: time.time() + good)) is not None
    with pytest.raises(error):
        check(request, table(lambda: time.time() + bad))


def test_a_query_signature_expiring_late_is_refused() -> None:
    request = ie(version="v2-query", expires=8 * 24 * 3600)
    with pytest.raises(MalformedSignature, match="at most"):
        check(request)


# ---- no tampering turns a US key into an Irish one ---------------------------------------------

TAMPERINGS = st.sampled_from([
    lambda text, word: text.replace(US_KEY, IE_KEY),
    lambda text, word: text + word,
    lambda text, word: word + text,
    lambda text, word: text.replace(", ", word, 1),
    lambda text, word: text.replace(",", word),
    lambda text, word: text.replace("=", word, 1),
    lambda text, word: text.replace(" ", word, 1),
    lambda text, word: text.replace(US_KEY, f"{IE_KEY}{word}{US_KEY}"),
    lambda text, word: text.replace("Credential=", f"Credential={IE_KEY}/{word}, Credential=", 1),
])
WORDS = st.sampled_from([
    "", " ", "  ", "\t", ",", ", ", ";", "=", "/", ":", f"Credential={IE_KEY}", f" Credential={IE_KEY}/x",
    f", Credential={IE_KEY}/20260101/eu-west-1/s3/aws4_request", f"AWS {IE_KEY}:", IE_KEY, "\x00", "\u00a0",
]) | st.text(max_size=12)


@given(TAMPERINGS, WORDS, st.sampled_from(["v4", "v2"]))
def test_no_tampering_of_the_header_makes_a_us_key_irish(tamper: Callable[[str, str], str], word: str,
                                                         version: str) -> None:
    request = US_V4 if version == "v4" else US_V2
    text = tamper(request.header("Authorization"), word)
    try:
        verified = check(request.replace("Authorization", text))
    except (Unauthenticated, BadRequest):
        return
    assert verified is None or verified.rule.jurisdiction == "US"


IRISH_PARAMS = st.sampled_from([
    f"X-Amz-Credential={IE_KEY}%2F20260101%2Feu-west-1%2Fs3%2Faws4_request", f"x-amz-credential={IE_KEY}%2Fx",
    f"X-Amz-%43redential={IE_KEY}%2Fx", f"AWSAccessKeyId={IE_KEY}", f"awsaccesskeyid={IE_KEY}",
    f"AWSAccessKeyId%00={IE_KEY}", "X-Amz-Signature=" + "0" * 64, "Signature=AAAA", f"X-Amz-Credential={IE_KEY}",
    "X-Amz-Algorithm=AWS4-HMAC-SHA256", "X-Amz-Expires=604800", "Expires=99999999999",
])


@given(st.sampled_from(["v4", "v2"]), st.lists(IRISH_PARAMS, min_size=1, max_size=3), st.integers(0, 8),
       st.booleans())
def test_no_tampering_of_a_presigned_query_makes_a_us_key_irish(version: str, params: list[str], at: int,
                                                                swap: bool) -> None:
    request = US_QUERY[version]
    path, _, query = request.target.partition("?")
    pairs = query.split("&")
    for param in params:
        pairs.insert(at % (len(pairs) + 1), param)
    text = "&".join(pairs)
    if swap:
        text = text.replace(US_KEY, IE_KEY)
    try:
        verified = check(Signed(request.method, f"{path}?{text}", request.headers))
    except Unauthenticated:
        return
    assert verified is None or verified.rule.jurisdiction == "US"


@given(st.text(max_size=200), st.text(max_size=200))
def test_any_header_and_query_give_a_key_none_or_a_refusal(authorization: str, query: str) -> None:
    request = Signed("GET", "/b/k?" + query, (("Host", "127.0.0.1"), ("Authorization", authorization)))
    try:
        verified = check(request)
    except Unauthenticated:
        return
    assert verified is None


# ---- bodies ------------------------------------------------------------------------------------

async def pieces(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        await asyncio.sleep(0)
        yield part


async def drain(check_: BodyCheck, *parts: bytes, budget: Hold | None = None,
                ) -> tuple[list[bytes], RequestRefused | None]:
    out: list[bytes] = []
    try:
        async for piece in check_.stream(pieces(*parts), budget):
            out.append(piece)
    except RequestRefused as exc:
        return out, exc
    return out, None


async def test_a_claimed_sha256_holds_back_the_last_piece_until_it_matches() -> None:
    body = os.urandom(3000)
    verified = check(ie("PUT", body=body))
    assert verified is not None
    assert verified.body is not None
    assert await drain(verified.body, body[:1000], body[1000:2000], body[2000:]) == (
        [body[:1000], body[1000:2000], body[2000:]], None)
    out, error = await drain(verified.body, body[:1000], body[1000:2000], body[2000:-1] + b"!")
    assert out == [body[:1000], body[1000:2000]]   # the last piece never goes out
    assert isinstance(error, SignatureMismatch)
    assert error.code == "XAmzContentSHA256Mismatch"
    out, error = await drain(verified.body, body)   # one piece: nothing at all goes out
    assert out == [body]
    out, error = await drain(verified.body, body + b"more")
    assert out == []
    assert error is not None
    with pytest.raises(SignatureMismatch):
        verified.body.whole(b"")


async def test_chunk_signatures_are_checked_before_a_chunk_goes_out() -> None:
    request, body = streaming_request(URL, IE_KEY, IE_SECRET, os.urandom(200_000), chunk=65536)
    verified = check(request)
    assert verified is not None
    assert verified.body is not None
    assert verified.body.chunks is not None
    out, error = await drain(verified.body, body[:100_000], body[100_000:])
    assert error is None
    assert b"".join(out) == body
    first = len(b"10000;chunk-signature=") + 64 + 2 + 65536 + 2   # the first chunk's wire bytes
    forged = body[:70_000] + bytes([body[70_000] ^ 1]) + body[70_001:]   # a byte of the second chunk
    out, error = await drain(verified.body, forged[:first], forged[first:])
    assert error is not None
    assert error.code == "SignatureDoesNotMatch"
    assert out == [body[:first]]   # the first chunk verified and went out; the forged one never does
    out, error = await drain(verified.body, body[:-10])   # cut short: the final chunk is never released
    assert error is not None
    assert b"".join(out) == body[:body.rindex(b"0;chunk-signature=")]


async def test_a_chunk_held_for_its_signature_takes_from_the_body_budget() -> None:
    request, body = streaming_request(URL, IE_KEY, IE_SECRET, os.urandom(200_000), chunk=65536)
    verified = check(request)
    assert verified is not None
    assert verified.body is not None
    first = len(b"10000;chunk-signature=") + 64 + 2 + 65536 + 2
    # The first piece releases the first chunk and leaves 34,374 bytes of the second held.
    hold = BodyBudget(1024 * 1024).hold("peer")
    out, error = await drain(verified.body, body[:100_000], body[100_000:], budget=hold)
    assert error is None
    assert b"".join(out) == body
    assert 100_000 - first <= hold.size <= first   # the most held at once: part of a chunk, at most a whole one
    hold = BodyBudget(30_000).hold("peer")
    out, error = await drain(verified.body, body[:100_000], body[100_000:], budget=hold)
    assert isinstance(error, SlowDown)
    assert out == []
    assert hold.size == 0


def test_a_streaming_upload_needs_its_decoded_length() -> None:
    for length in ("-1", "01", "1 ", "x"):
        request = ie("PUT", payload=STREAMING, headers={"X-Amz-Decoded-Content-Length": length})
        with pytest.raises(MalformedSignature, match="Decoded-Content-Length"):
            check(request)
    with pytest.raises(MalformedSignature, match="Decoded-Content-Length"):
        check(ie("PUT", payload=STREAMING))
    with pytest.raises(MalformedSignature, match="X-Amz-Trailer"):
        check(ie("PUT", payload=STREAMING + "-TRAILER", headers={"X-Amz-Decoded-Content-Length": "1"}))
    # The trailer variant with the trailer the signed chunks cannot carry: refused before any body.
    with pytest.raises(MalformedSignature, match="cannot be read"):
        check(ie("PUT", payload=STREAMING, headers={"X-Amz-Decoded-Content-Length": "1",
                                                    "X-Amz-Trailer": "x-amz-checksum-crc32"}))


# ---- secrets and configuration -----------------------------------------------------------------

def test_rotating_the_file_moves_the_proxy_to_the_new_secret(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text(IE_SECRET)
    now = [time.time()]
    keys = AccessKeyTable([AccessKeyRule(IE_KEY, "IE", "ie", secret_access_key_file=path)], REGION,
                          clock=lambda: now[0])
    assert check(ie(), keys) is not None
    path.write_text("the-new-secret-0123456789")
    time.sleep(1.1)   # the file is looked at again at most once a second
    with pytest.raises(SignatureMismatch):
        check(ie(), keys)
    assert check(signed("GET", URL, IE_KEY, "the-new-secret-0123456789"), keys) is not None


def load(tmp_path: Path, entry: str, env: dict[str, str] | None = None, region: str = "region: eu-west-1\n") -> object:
    file = tmp_path / "bailiwick.yaml"
    file.write_text(f"{region}identity:\n  access_keys:\n    - {{{entry}}}\n")
    return load_config(file, environ=env or {})


@pytest.mark.parametrize(("entry", "env", "message"), [
    ("access_key_id: AKIAIRELAND, jurisdiction: IE", {},
     r"set exactly one of secret_access_key_env or secret_access_key_file.*no longer taken on their key id alone"),
    ("access_key_id: AKIAIRELAND, jurisdiction: IE, secret_access_key_env: S, secret_access_key_file: /x",
     {"S": IE_SECRET}, "set exactly one"),
    ("access_key_id: AKIAIRELAND, jurisdiction: IE, secret_access_key_env: S", {},
     r"access_keys\[0\]\.secret_access_key_env: the environment variable S is not set"),
    ("access_key_id: AKIAIRELAND, jurisdiction: IE, secret_access_key_env: S", {"S": "short"},
     "does not hold a secret access key"),
    ("access_key_id: AKIAIRELAND, jurisdiction: IE, secret_access_key_file: /nonexistent/secret", {},
     r"secret_access_key_file: cannot read /nonexistent/secret"),
    ("access_key_id: 'AKIA:IRELAND', jurisdiction: IE, secret_access_key_env: S", {"S": IE_SECRET},
     "expected an access key id"),
    ("access_key_id: AKIAIRELAND, jurisdiction: IE, secret_access_key: inline", {}, "unknown setting"),
])
def test_access_key_configuration_errors_name_the_key(tmp_path: Path, entry: str, env: dict[str, str],
                                                     message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, entry, env)


def test_access_keys_need_a_region(tmp_path: Path) -> None:
    entry = "access_key_id: AKIAIRELAND, jurisdiction: IE, secret_access_key_env: S"
    with pytest.raises(ConfigError, match=r"identity\.access_key_region: .*set region"):
        load(tmp_path, entry, {"S": IE_SECRET}, region="")


def test_access_keys_are_s3s(tmp_path: Path) -> None:
    entry = "access_key_id: AKIAIRELAND, jurisdiction: IE, secret_access_key_env: S"
    with pytest.raises(ConfigError, match=r"identity\.access_keys: access keys are S3's; upstream\.api is 'azure'"):
        load(tmp_path, entry, {"S": IE_SECRET}, region="region: eu-west-1\nupstream: {api: azure}\n")


def test_a_secret_is_never_shown(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(US_SECRET + "\n")
    config = load(tmp_path, f"access_key_id: AKIAIRELAND, jurisdiction: IE, secret_access_key_env: S}}\n"
                            f"    - {{access_key_id: AKIAUS, jurisdiction: US, secret_access_key_file: {secret_file}",
                  {"S": IE_SECRET})
    shown = repr(config)
    assert IE_SECRET not in shown
    assert US_SECRET not in shown
    assert "AKIAIRELAND" in shown
    assert str(secret_file) in shown


def test_a_key_id_listed_twice_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="listed twice"):
        AccessKeyTable([RULES[0], RULES[0]], REGION)


def test_a_rule_without_a_secret_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="has no secret"):
        AccessKeyTable([AccessKeyRule(IE_KEY, "IE", "ie")], REGION)


# ---- the resolver ------------------------------------------------------------------------------

NETWORK = (NetworkRule(ipaddress.ip_network("10.20.0.0/16"), "DE"),)
IDENTITY = IdentityConfig(networks=NETWORK, access_keys=RULES, access_key_region=REGION)


@pytest.mark.parametrize(("request_", "peer", "expected"), [
    (lambda: ie(), "192.0.2.1", ("mail-ie", "IE", "access_key")),
    (lambda: us(version="v4-query"), "192.0.2.1", ("mail-us", "US", "access_key")),
    # The key wins over the network it comes from.
    (lambda: ie(), "10.20.1.1", ("mail-ie", "IE", "access_key")),
    # A key the proxy holds no secret for identifies nobody: the network does.
    (lambda: signed("GET", URL, "AKIAOTHER", "whatever-secret"), "10.20.1.1",
     ("network:10.20.0.0/16", "DE", "network")),
])
async def test_the_resolver_takes_a_verified_key_before_the_network(
    request_: Callable[[], Signed], peer: str, expected: tuple[str, str, str],
) -> None:
    request = request_()
    resolver = IdentityResolver(IDENTITY)
    identified = await resolver.identify(CIMultiDictProxy(CIMultiDict(request.headers)), peer, request.target,
                                         request.method)
    caller = identified.caller
    assert (caller.subject, caller.jurisdiction, caller.method) == expected
    assert identified.token_headers == frozenset()   # the signature is forwarded untouched


@pytest.mark.parametrize(("request_", "peer", "code"), [
    (lambda: signed("GET", URL, "AKIAOTHER", "whatever-secret"), "192.0.2.1", "InvalidAccessKeyId"),
    # A signature that does not verify is never laundered into the caller's network identity.
    (lambda: signed("GET", URL, IE_KEY, US_SECRET), "10.20.1.1", "SignatureDoesNotMatch"),
    (lambda: v4(AUTH + ", Credential=x"), "10.20.1.1", "AuthorizationHeaderMalformed"),
    (lambda: v4("Signature " + AUTH.split(" ", 1)[1]), "10.20.1.1", "AuthorizationHeaderMalformed"),
])
async def test_the_resolver_refuses_what_does_not_verify(request_: Callable[[], Signed], peer: str,
                                                         code: str) -> None:
    request = request_()
    resolver = IdentityResolver(replace(IDENTITY, networks=NETWORK if peer.startswith("10.") else ()))
    with pytest.raises(Unauthenticated) as refused:
        await resolver.identify(CIMultiDictProxy(CIMultiDict(request.headers)), peer, request.target,
                                request.method)
    assert refused.value.code == code
