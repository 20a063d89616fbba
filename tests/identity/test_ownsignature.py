"""A verified SigV4 header signature made again for another query, with the key it verified with.

The signature made for a changed query is the one botocore (an AWS SDK) makes
for the changed request with the caller's key; the verifier accepts it for
that request and refuses it for the caller's; everything but the signature is
the caller's header as sent. Only a signature in the Authorization header can
be made again: a presigned URL's and SigV2's are not, nor another key's.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.errors import MalformedSignature, SignatureMismatch
from proxy.identity.ownsignature import CallerSignature
from tests.identity.test_accesskeys import IE_KEY, IE_SECRET, REGION, check, ie, table, us
from tests.support.awssign import Signed

LISTING = "http://127.0.0.1:8080/?max-buckets=5&prefix=pie-"
PAGE = "/?prefix=pie-&max-buckets=10000&continuation-token=b%2F1%3D"


def headers_of(request: Signed) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(request.headers))


def own(request: Signed) -> CallerSignature | None:
    verified = check(request)
    assert verified is not None
    return verified.signature


def test_a_changed_query_is_signed_as_an_sdk_signs_it() -> None:
    theirs = ie(url=LISTING)
    signature = own(theirs)
    assert signature is not None
    made = signature.sign("GET", PAGE, headers_of(theirs))
    # What botocore makes for the page request, with the caller's key, date and signed headers.
    names = theirs.header("Authorization").partition("SignedHeaders=")[2].partition(",")[0].split(";")
    page = AWSRequest(method="GET", url="http://127.0.0.1:8080" + PAGE,
                      headers={name: theirs.header(name) for name in names})
    page.context["timestamp"] = theirs.header("X-Amz-Date")
    auth = S3SigV4Auth(Credentials(IE_KEY, IE_SECRET), "s3", REGION)
    expected = auth.signature(auth.string_to_sign(page, auth.canonical_request(page)), page)
    assert made == theirs.header("Authorization").partition("Signature=")[0] + "Signature=" + expected
    assert expected not in theirs.header("Authorization")


def test_the_signature_made_verifies_for_the_page_request_only() -> None:
    theirs = ie(url=LISTING)
    signature = own(theirs)
    assert signature is not None
    headers = CIMultiDict(theirs.headers)
    headers["Authorization"] = signature.sign("GET", PAGE, headers_of(theirs))
    keys = table()
    verified = keys.authenticate("GET", PAGE, CIMultiDictProxy(headers))
    assert verified is not None
    assert verified.rule.access_key_id == IE_KEY
    with pytest.raises(SignatureMismatch):
        keys.authenticate("GET", theirs.target, CIMultiDictProxy(headers))


@pytest.mark.parametrize("version", ["v4-query", "v2", "v2-query"])
def test_only_a_header_signature_is_made_again(version: str) -> None:
    assert own(ie(url=LISTING, version=version)) is None


def test_one_serves_every_request_of_a_key() -> None:
    keys = table()
    first, second = (keys.authenticate("GET", r.target, headers_of(r)) for r in (ie(url=LISTING), ie(url=LISTING)))
    assert first is not None
    assert second is not None
    assert first.signature is not None
    assert first.signature is second.signature


@pytest.mark.parametrize("other", [
    lambda: us(url=LISTING),   # another key's signature
    lambda: ie(url=LISTING, version="v2"),
    lambda: ie(url=LISTING, version="v4-query"),
])
def test_nothing_is_signed_for_another_key_or_way(other: Callable[[], Signed]) -> None:
    signature = own(ie(url=LISTING))
    assert signature is not None
    with pytest.raises(MalformedSignature):
        signature.sign("GET", PAGE, headers_of(other()))


def test_no_secret_is_shown() -> None:
    signature = own(ie(url=LISTING))
    assert signature is not None
    assert IE_SECRET not in repr(signature)
    assert IE_KEY not in repr(signature)   # the key is not shown at all
