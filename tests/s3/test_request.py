"""RequestReader.read end to end, on requests exactly as botocore puts them on the wire."""

from __future__ import annotations

from typing import Any, NamedTuple
from urllib.parse import urlsplit

import botocore
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from proxy.domain import Access, Action, Resource
from proxy.errors import BadRequest
from proxy.framing import METHODS
from proxy.s3 import operations
from proxy.s3.operations import LIST_BUCKETS
from proxy.s3.request import S3Request

from .helpers import PATH_HOST, READER, client, parse, parse_wire, wire
from .test_target import KEYS, key_is_acceptable

# botocore operations that put the same request on the wire as a newer one.
ALIASES = {
    "GetBucketLifecycle": "GetBucketLifecycleConfiguration",
    "PutBucketLifecycle": "PutBucketLifecycleConfiguration",
    "GetBucketNotification": "GetBucketNotificationConfiguration",
    "PutBucketNotification": "PutBucketNotificationConfiguration",
    "ListDirectoryBuckets": "ListBuckets",
}
# Refused on purpose: RenameObject moves a key named in a header the policy does
# not judge; WriteGetObjectResponse goes to an Object Lambda route host.
REFUSED = {"RenameObject", "WriteGetObjectResponse"}
_DUMMIES: dict[str, Any] = {
    "string": "x1", "integer": 1, "long": 1, "boolean": True,
    "timestamp": "2020-01-01T00:00:00Z", "blob": b"x", "structure": {}, "list": [],
}  # fmt: skip


def _minimal_params(operation: str) -> dict[str, Any]:
    shape = client().meta.service_model.operation_model(operation).input_shape
    params: dict[str, Any] = {}
    for name in shape.required_members if shape is not None else ():
        if name == "Bucket":
            params[name] = "bkt"
        elif name == "Key":
            params[name] = "dir/file.txt"
        elif name == "CopySource":
            params[name] = {"Bucket": "src-bkt", "Key": "from/here"}
        else:
            params[name] = _DUMMIES[shape.members[name].type_name]
    return params


OPERATIONS = sorted(client().meta.service_model.operation_names)
# The operations the table classifies. A newer botocore may add operations the
# table has not learnt yet; those must come out as Unknown/admin (fail closed).
KNOWN = frozenset(
    name for op in operations._TABLE.values() for name in (op.name, op.copy.name if op.copy else op.name)
) | {LIST_BUCKETS.name}


@pytest.mark.parametrize("operation", OPERATIONS)
def test_every_botocore_operation_is_recognised(operation: str) -> None:
    """A new S3 operation in botocore fails here until the table classifies it."""
    request = wire(botocore.xform_name(operation), _minimal_params(operation))
    if operation in REFUSED:
        with pytest.raises(BadRequest):
            parse_wire(request)
        return
    if ALIASES.get(operation, operation) not in KNOWN:
        # An operation newer than the table must still fail closed: refused when S3 could read
        # it as another operation (a bucket PUT as CreateBucket, a bucket POST as a form
        # upload), else admin, which policies grant rarely, with the whole bucket in scope.
        bucket_level = urlsplit(request.target).path.rstrip("/").count("/") == 1
        if request.method in ("PUT", "POST") and bucket_level:
            with pytest.raises(BadRequest, match=r"CreateBucket|POST to a bucket"):
                parse_wire(request)
            return
        unknown = parse_wire(request)
        assert unknown.operation.name == "Unknown"
        assert unknown.access.action is Action.ADMIN
        return
    parsed = parse_wire(request)
    assert parsed.operation.name == ALIASES.get(operation, operation)
    if parsed.key is not None:
        assert parsed.key == "dir/file.txt"
        assert parsed.access.resource == Resource("s3", "bkt", "dir/file.txt")
    if "CopySource" in _minimal_params(operation):
        assert parsed.copy_from == Resource("s3", "src-bkt", "from/here")
    else:
        assert parsed.copy_from is None



class Summary(NamedTuple):
    """What a test expects of a request: its operation by name, and what it names."""

    operation: str
    bucket: str | None
    key: str | None
    access: Access
    copy_from: Resource | None
    reads_delete_body: bool


def summary(request: S3Request) -> Summary:
    return Summary(request.operation.name, request.bucket, request.key, request.access, request.copy_from,
                   request.operation.reads_delete_body)


@pytest.mark.parametrize(
    ("operation", "params", "expected"),
    [
        ("get_object", {"Bucket": "bkt", "Key": "a/b"},
         Summary("GetObject", "bkt", "a/b", Access(Action.READ, Resource("s3", "bkt", "a/b")), None, False)),
        ("list_objects_v2", {"Bucket": "bkt", "Prefix": "mail/ie/", "Delimiter": "/"},
         Summary("ListObjectsV2", "bkt", None,
                   Access(Action.LIST, Resource("s3", "bkt", "mail/ie/"), listing=True), None, False)),
        ("copy_object", {"Bucket": "bkt", "Key": "to", "CopySource": {"Bucket": "src-bkt", "Key": "a b+c",
                                                                       "VersionId": "3/L4kq+x"}},
         Summary("CopyObject", "bkt", "to", Access(Action.WRITE, Resource("s3", "bkt", "to")),
                   Resource("s3", "src-bkt", "a b+c"), False)),
        ("upload_part_copy", {"Bucket": "bkt", "Key": "to", "UploadId": "u", "PartNumber": 1,
                              "CopySource": "src-bkt/dir/ä?versionId=v1", "CopySourceRange": "bytes=0-9"},
         Summary("UploadPartCopy", "bkt", "to", Access(Action.WRITE, Resource("s3", "bkt", "to")),
                   Resource("s3", "src-bkt", "dir/ä"), False)),
        ("delete_objects", {"Bucket": "bkt", "Delete": {"Objects": [{"Key": "a"}]}},
         Summary("DeleteObjects", "bkt", None, Access(Action.DELETE, Resource("s3", "bkt", "")), None, True)),
    ],
)
@pytest.mark.parametrize("addressing", ["path", "virtual"])
def test_botocore_requests(operation: str, params: dict[str, Any], expected: Summary, addressing: str) -> None:
    assert summary(parse_wire(wire(operation, params, addressing))) == expected


def test_botocore_list_buckets() -> None:
    assert parse_wire(wire("list_buckets", {})) == S3Request(
        LIST_BUCKETS, None, None, Access(Action.LIST, Resource("s3", "", "")), None
    )


@pytest.mark.parametrize(
    ("operation", "params", "name", "key"),
    [
        ("get_object", {"Bucket": "bkt", "Key": "a b/ä", "ResponseContentDisposition": 'attachment; filename="x"'},
         "GetObject", "a b/ä"),
        ("put_object", {"Bucket": "bkt", "Key": "k", "ACL": "private"}, "PutObject", "k"),
        ("copy_object", {"Bucket": "bkt", "Key": "k", "CopySource": {"Bucket": "src-bkt", "Key": "s"}},
         "CopyObject", "k"),
        ("list_objects_v2", {"Bucket": "bkt", "Prefix": "p/"}, "ListObjectsV2", None),
    ],
)
@pytest.mark.parametrize("signature_version", ["s3v4", "s3"])
def test_presigned_urls(
    operation: str, params: dict[str, Any], name: str, key: str | None, signature_version: str
) -> None:
    from botocore.config import Config

    session = botocore.session.get_session()
    s3 = session.create_client(
        "s3", region_name="us-east-1", endpoint_url=f"http://{PATH_HOST}",
        aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret",
        config=Config(s3={"addressing_style": "path"}, signature_version=signature_version),
    )
    url = urlsplit(s3.generate_presigned_url(operation, Params=params))
    # SigV2 moves the copy source into the query; SigV4 signs it as a header the
    # client must send alongside the URL.
    hoisted = "x-amz-copy-source=" in url.query
    extra = [("x-amz-copy-source", "src-bkt/s")] if operation == "copy_object" and not hoisted else []
    assert hoisted == (operation == "copy_object" and signature_version == "s3")
    method = {"get_object": "GET", "put_object": "PUT", "copy_object": "PUT", "list_objects_v2": "GET"}[operation]
    request = parse(method, f"{url.path}?{url.query}", url.netloc, *extra)
    assert (request.operation.name, request.key) == (name, key)
    expected_source = Resource("s3", "src-bkt", "s") if operation == "copy_object" else None
    assert request.copy_from == expected_source


# ---- copy sources in headers and queries -------------------------------------------


def test_copy_source_in_the_query_is_a_copy() -> None:
    request = parse("PUT", "/bkt/k?X-Amz-Copy-Source=src-bkt%2Fa%2520b")
    assert request.operation.name == "CopyObject"
    assert request.copy_from == Resource("s3", "src-bkt", "a b")


@pytest.mark.parametrize(
    ("method", "target", "pairs", "reason"),
    [
        ("PUT", "/bkt/k?x-amz-copy-source=src-bkt%2Fa", [("x-amz-copy-source", "src-bkt/a")], "both"),
        ("PUT", "/bkt/k", [("x-amz-copy-source", "src-bkt/a"), ("X-Amz-Copy-Source", "src-bkt/b")], "repeated"),
        ("PUT", "/bkt/k?x-amz-copy-source", [], "empty"),
        ("PUT", "/bkt/k?x-amz-copy-source=", [], "empty"),
        ("GET", "/bkt/k", [("x-amz-copy-source", "src-bkt/a")], "only on CopyObject"),
        ("PUT", "/bkt/k?tagging", [("x-amz-copy-source", "src-bkt/a")], "only on CopyObject"),
        ("PUT", "/bkt/k?foo", [("x-amz-copy-source", "src-bkt/a")], "only on CopyObject"),
        ("PUT", "/bkt", [("x-amz-copy-source", "src-bkt/a")], "only on CopyObject"),
        ("POST", "/bkt/k?uploads", [("x-amz-copy-source", "src-bkt/a")], "only on CopyObject"),
        ("GET", "/", [("x-amz-copy-source", "src-bkt/a")], "ListBuckets"),
        ("PUT", "/bkt/k", [("x-amz-copy-source", "arn:aws:s3:us-east-1:1:accesspoint/ap/object/a")], "ARN"),
        ("PUT", "/bkt/k", [("x-amz-copy-source", "src-bkt/a/../b")], "dot segment"),
        ("PUT", "/bkt/k", [("x-amz-rename-source", "/bkt/other")], "RenameObject"),
        ("PUT", "/bkt/k?renameObject&x-amz-rename-source=%2Fbkt%2Fo", [], "RenameObject"),
        ("PUT", "/bkt?foo=1", [], "S3 would read it as CreateBucket"),
    ],
)
def test_refused_requests(method: str, target: str, pairs: list[tuple[str, str]], reason: str) -> None:
    with pytest.raises(BadRequest, match=reason):
        parse(method, target, PATH_HOST, *pairs)


@pytest.mark.parametrize("target", ["/?max-buckets=2", "/?continuation-token=abc", "/?max-buckets=1&prefix=a"])
def test_a_paged_bucket_listing_is_read_as_list_buckets(target: str) -> None:
    # The proxy pages it itself (proxy.storage.accountpages): the token is judged there, never forwarded.
    assert parse("GET", target, PATH_HOST).operation is LIST_BUCKETS


# ---- properties --------------------------------------------------------------


# botocore builds and signs each request: slower than a pure parser, and its first call builds the client.
@settings(deadline=None)
@given(KEYS, st.sampled_from(["path", "virtual"]))
def test_any_key_botocore_sends_round_trips(key: str, addressing: str) -> None:
    request = wire("get_object", {"Bucket": "bkt", "Key": key}, addressing)
    if key_is_acceptable(key):
        parsed = parse_wire(request)
        assert (parsed.bucket, parsed.key, parsed.operation.name) == ("bkt", key, "GetObject")
    else:
        with pytest.raises(BadRequest):
            parse_wire(request)


# botocore builds and signs each request: slower than a pure parser, and its first call builds the client.
@settings(deadline=None)
@given(KEYS)
def test_any_listing_prefix_botocore_sends_round_trips(prefix: str) -> None:
    request = wire("list_objects_v2", {"Bucket": "bkt", "Prefix": prefix})
    if key_is_acceptable(prefix):
        parsed = parse_wire(request)
        assert parsed.access == Access(Action.LIST, Resource("s3", "bkt", prefix), listing=True)
    else:
        with pytest.raises(BadRequest):
            parse_wire(request)


_HEADER_NAMES = st.sampled_from(
    ["Host", "x-amz-copy-source", "X-Forwarded-Host", "X-HTTP-Method-Override", "x-amz-rename-source", "Other"]
)
_TARGETS = st.one_of(
    st.text(),
    st.builds(lambda a, b: f"/{a}?{b}", st.text(), st.text()),
    st.builds(lambda a: f"/bkt/{a}", st.text(alphabet=st.sampled_from("ab/.%25cCeEfF0+;\\?&=#x-"))),
)


@given(
    st.one_of(st.sampled_from(sorted(METHODS)), st.text()),
    _TARGETS,
    st.one_of(st.sampled_from([PATH_HOST, f"bkt.{PATH_HOST}", "localhost:1"]), st.text()),
    st.lists(st.tuples(_HEADER_NAMES, st.text()), max_size=3),
)
def test_reading_only_ever_raises_bad_request(
    method: str, target: str, host: str, pairs: list[tuple[str, str]]
) -> None:
    given_headers: CIMultiDict[str] = CIMultiDict(Host=host)
    for name, value in pairs:
        given_headers.add(name, value)
    try:
        request = READER.read(method, target, given_headers)
    except BadRequest:
        return
    # Whatever is accepted names its target consistently.
    assert request.access.resource.scheme == "s3"
    assert request.bucket is None or request.access.resource.bucket == request.bucket
    if request.key is not None:
        assert request.access.resource.key == request.key


_CRED = "AKIDEXAMPLE/20250101/us-east-1"
_SIG = "SignedHeaders=host;x-amz-date, Signature=" + "0" * 64


@pytest.mark.parametrize("authorization", [
    f"AWS4-HMAC-SHA256 Credential={_CRED}/iam/aws4_request, {_SIG}",
    f"AWS4-HMAC-SHA256 Credential={_CRED}/STS/aws4_request, {_SIG}",
    # The scope is written in lower case; another spelling is read by case by some servers
    f"AWS4-HMAC-SHA256 Credential={_CRED}/S3/aws4_request, {_SIG}",
    f"AWS4-HMAC-SHA256 Credential={_CRED}/S3Express/aws4_request, {_SIG}",
    # moto reads the first token after the algorithm, whatever it is called, and any fifth component
    f"AWS4-HMAC-SHA256 X={_CRED}/iam/aws4_request, Credential={_CRED}/s3/aws4_request, {_SIG}",
    f"AWS4-HMAC-SHA256 Credential={_CRED}/iam/x, {_SIG}",
    f"AWS4-HMAC-SHA256 Credential={_CRED}/iam/aws4_requestx, {_SIG}",
    f"AWS4-HMAC-SHA256 Credential={_CRED}/s3/aws4_request/x, {_SIG}",
    f"AWS4-HMAC-SHA256 {_CRED}/iam/aws4_request, {_SIG}",
    f"AWS4-ECDSA-P256-SHA256 Credential=AKIDEXAMPLE/20250101/iam/aws4_request, {_SIG}",
])
def test_a_signature_scoped_to_another_service_is_refused(authorization: str) -> None:
    with pytest.raises(BadRequest, match="service"):
        parse("GET", "/bkt/dir/file.txt", PATH_HOST, ("Authorization", authorization))


@pytest.mark.parametrize("credential", [f"{_CRED}/iam/aws4_request", f"{_CRED}/iam/x", "a/b"])
def test_a_presigned_credential_for_another_service_is_refused(credential: str) -> None:
    with pytest.raises(BadRequest, match="service"):
        parse("GET", "/bkt/dir/file.txt?X-Amz-Credential=" + credential.replace("/", "%2F"))


@pytest.mark.parametrize("authorization", [
    f"AWS4-HMAC-SHA256 Credential={_CRED}/s3/aws4_request, {_SIG}",
    f"AWS4-HMAC-SHA256 Credential={_CRED}/s3express/aws4_request,{_SIG}",
    f"AWS4-ECDSA-P256-SHA256 Credential=AKIDEXAMPLE/20250101/s3/aws4_request, {_SIG}",
    "AWS AKIDEXAMPLE:frJIUN8DYpKDtOLCwo//yllqDzg=",   # SigV2: no scope (a "/" in base64 is not one)
])
def test_a_signature_for_s3_is_read(authorization: str) -> None:
    assert parse("GET", "/bkt/dir/file.txt", PATH_HOST, ("Authorization", authorization)).operation.name == "GetObject"
