"""Writes that also grant access or lock an object are judged as admin too.

PutObject with ``x-amz-acl: public-read`` does what PutObjectAcl does, and
PutObject with an object-lock header what PutObjectRetention does; both of
those are ``admin``. A caller allowed to write but not to administer a
dataset may store objects, not publish or lock them.
"""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.domain import Access, Action, Resource
from proxy.s3.api import S3Api
from tests.conftest import DUBLIN
from tests.support.recorder import Recorder

from .helpers import PATH_HOST, SETTINGS, parse

OBJECT = Resource("s3", "bkt", "k")


@pytest.mark.parametrize(("method", "target", "pairs", "governs"), [
    ("PUT", "/bkt/k", [("x-amz-acl", "public-read")], True),
    ("PUT", "/bkt/k", [("X-Amz-Grant-Read", 'uri="http://acs.amazonaws.com/groups/global/AllUsers"')], True),
    ("PUT", "/bkt/k", [("x-amz-grant-full-control", "id=someone")], True),
    ("PUT", "/bkt/k", [("x-amz-object-lock-mode", "COMPLIANCE"),
                       ("x-amz-object-lock-retain-until-date", "2099-01-01T00:00:00Z")], True),
    ("PUT", "/bkt/k", [("x-amz-object-lock-legal-hold", "ON")], True),
    ("POST", "/bkt/k?uploads", [("x-amz-acl", "authenticated-read")], True),
    ("PUT", "/bkt/k", [("x-amz-copy-source", "src-bkt/s"), ("x-amz-acl", "public-read")], True),
    ("DELETE", "/bkt/k", [("x-amz-bypass-governance-retention", "true")], True),
    ("PUT", "/bkt/k?x-amz-acl=public-read", [], True),   # hoisted into a SigV2 presigned URL
    # Owner-only canned ACLs grant nothing new (rclone sends "private" with every upload).
    ("PUT", "/bkt/k", [("x-amz-acl", "private")], False),
    ("PUT", "/bkt/k", [("x-amz-acl", "bucket-owner-full-control")], False),
    ("PUT", "/bkt/k", [("x-amz-tagging", "a=b"), ("x-amz-meta-x", "y")], False),
    ("GET", "/bkt/k", [("x-amz-acl", "public-read")], False),   # a read grants nothing
    ("PUT", "/bkt/k", [], False),
])
def test_which_requests_govern_the_object(method: str, target: str, pairs: list[tuple[str, str]],
                                          governs: bool) -> None:
    assert parse(method, target, PATH_HOST, *pairs).governs is governs
    headers = CIMultiDictProxy(CIMultiDict([("Host", PATH_HOST), *pairs]))
    accesses = S3Api(SETTINGS).parse(method, target, headers).request.accesses
    if governs:
        assert len(accesses) == 2
        assert accesses[1] == Access(Action.ADMIN, OBJECT)
        assert accesses[0].action in (Action.WRITE, Action.DELETE)
    else:
        assert len(accesses) == 1


def test_an_irish_writer_may_store_but_not_publish_dublin_mail(
    client_for: Any, direct: Any, recorder: Recorder,
) -> None:
    irish = client_for("IE")   # the example policy: write but not admin on dublin-mail
    irish.put_object(Bucket=DUBLIN, Key="alice/private.eml", Body=b"kept private", ACL="private")
    assert direct.get_object(Bucket=DUBLIN, Key="alice/private.eml")["Body"].read() == b"kept private"
    mark = recorder.mark()
    with pytest.raises(ClientError) as refused:
        irish.put_object(Bucket=DUBLIN, Key="alice/public.eml", Body=b"for everyone", ACL="public-read")
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert "admin" in refused.value.response["Error"]["Message"]
    assert b"for everyone" not in recorder.since(mark)
    with pytest.raises(ClientError):
        direct.head_object(Bucket=DUBLIN, Key="alice/public.eml")


def test_a_multi_object_delete_that_bypasses_locks_is_admin_on_every_key() -> None:
    api = S3Api(SETTINGS)
    body = (b"<Delete><Object><Key>a</Key></Object><Object><Key>b/c</Key></Object></Delete>")
    for pairs, admin in (([("x-amz-bypass-governance-retention", "true")], True), ([], False)):
        headers = CIMultiDictProxy(CIMultiDict([("Host", PATH_HOST), ("Content-Length", str(len(body))), *pairs]))
        parsed = api.expand(api.parse("POST", "/bkt?delete", headers), body)
        keys = [Resource("s3", "bkt", "a"), Resource("s3", "bkt", "b/c")]
        expected = [Access(Action.DELETE, key) for key in keys]
        if admin:
            expected += [Access(Action.ADMIN, key) for key in keys]
        assert list(parsed.request.accesses) == expected
