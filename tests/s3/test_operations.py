"""Method + sub-resources -> S3 operation and policy action (docs/policies.md, "datasets": Actions)."""

from __future__ import annotations

import pytest

from proxy.domain import Access, Action, Resource
from proxy.errors import BadRequest
from proxy.s3.operations import (
    ORDINARY_PARAMS,
    SELECTORS,
    UNKNOWN_BUCKET,
    UNKNOWN_OBJECT,
    Level,
    Scope,
    classify,
)
from proxy.storage.target import parse_target

from .helpers import parse

R, L, W, D, A = Action.READ, Action.LIST, Action.WRITE, Action.DELETE, Action.ADMIN


@pytest.mark.parametrize(
    ("method", "target", "operation", "action"),
    [
        ("GET", "/bkt/k", "GetObject", R),
        ("GET", "/bkt/k?versionId=3%2FL4kq", "GetObject", R),
        ("GET", "/bkt/k?partNumber=2", "GetObject", R),
        ("GET", "/bkt/k?partNumber=2&versionId=v", "GetObject", R),
        ("GET", "/bkt/k?x-id=GetObject&response-content-type=text%2Fplain", "GetObject", R),
        ("HEAD", "/bkt/k", "HeadObject", R),
        ("HEAD", "/bkt/k?versionId=v", "HeadObject", R),
        ("PUT", "/bkt/k", "PutObject", W),
        ("PUT", "/bkt/k?x-id=PutObject", "PutObject", W),
        ("PUT", "/bkt/k?partNumber=1&uploadId=u", "UploadPart", W),
        ("POST", "/bkt/k?uploads", "CreateMultipartUpload", W),
        ("POST", "/bkt/k?uploadId=u", "CompleteMultipartUpload", W),
        ("DELETE", "/bkt/k?uploadId=u", "AbortMultipartUpload", W),
        ("GET", "/bkt/k?uploadId=u&max-parts=10&part-number-marker=2", "ListParts", L),
        ("DELETE", "/bkt/k", "DeleteObject", D),
        ("DELETE", "/bkt/k?versionId=v", "DeleteObject", D),
        ("GET", "/bkt/k?acl", "GetObjectAcl", R),
        ("PUT", "/bkt/k?acl", "PutObjectAcl", A),
        ("GET", "/bkt/k?tagging", "GetObjectTagging", R),
        ("PUT", "/bkt/k?tagging", "PutObjectTagging", W),
        ("PUT", "/bkt/k?tagging&versionId=v", "PutObjectTagging", W),
        ("DELETE", "/bkt/k?tagging", "DeleteObjectTagging", W),
        ("GET", "/bkt/k?attributes", "GetObjectAttributes", R),
        ("GET", "/bkt/k?torrent", "GetObjectTorrent", R),
        ("GET", "/bkt/k?legal-hold", "GetObjectLegalHold", R),
        ("PUT", "/bkt/k?legal-hold", "PutObjectLegalHold", A),
        ("GET", "/bkt/k?retention", "GetObjectRetention", R),
        ("PUT", "/bkt/k?retention&versionId=v", "PutObjectRetention", A),
        ("POST", "/bkt/k?restore", "RestoreObject", W),
        ("POST", "/bkt/k?select&select-type=2", "SelectObjectContent", R),
        ("PUT", "/bkt/k?encryption", "UpdateObjectEncryption", A),
        # presigned URLs, SigV4 and SigV2
        ("GET", "/bkt/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=a%2F2024%2Fus-east-1%2Fs3"
                "%2Faws4_request&X-Amz-Date=20240101T000000Z&X-Amz-Expires=60"
                "&X-Amz-SignedHeaders=host&X-Amz-Signature=abc", "GetObject", R),
        ("GET", "/bkt/k?AWSAccessKeyId=a&Signature=x%2By&Expires=1", "GetObject", R),
        ("PUT", "/bkt/k?x-amz-security-token=t&x-amz-acl=private", "PutObject", W),
        # unknown: fail closed
        ("GET", "/bkt/k?foo", "Unknown", A),
        ("GET", "/bkt/k?ACL", "Unknown", A),  # S3 names are case-sensitive
        ("GET", "/bkt/k?uploads", "Unknown", A),
        ("GET", "/bkt/k?select&select-type=3", "Unknown", A),
        ("PUT", "/bkt/k?uploadId=u", "Unknown", A),
        ("PUT", "/bkt/k?versionId=v", "Unknown", A),
        ("GET", "/bkt/k?torrent&versionId=v", "Unknown", A),
        ("POST", "/bkt/k", "Unknown", A),
        ("GET", "/bkt/k?policy", "Unknown", A),
        ("PUT", "/bkt/k?renameObject", "Unknown", A),
    ],
)
def test_object_operations(method: str, target: str, operation: str, action: Action) -> None:
    request = parse(method, target)
    assert request.operation.name == operation
    assert request.access == Access(action, Resource("s3", "bkt", "k"))
    assert request.key == "k"
    assert request.copy_from is None
    assert request.operation.reads_delete_body is False


@pytest.mark.parametrize(
    ("method", "target", "operation", "action", "key", "listing"),
    [
        ("GET", "/bkt", "ListObjects", L, "", True),
        ("GET", "/bkt/", "ListObjects", L, "", True),
        ("GET", "/bkt?prefix=mail%2Fie%2F&delimiter=%2F&max-keys=10", "ListObjects", L, "mail/ie/", True),
        ("GET", "/bkt?marker=a&encoding-type=url", "ListObjects", L, "", True),
        ("GET", "/bkt?list-type=2", "ListObjectsV2", L, "", True),
        ("GET", "/bkt?list-type=2&prefix=a%20b&continuation-token=x&start-after=y&fetch-owner=true",
         "ListObjectsV2", L, "a b", True),
        ("GET", "/bkt?prefix=", "ListObjects", L, "", True),
        ("GET", "/bkt?prefix", "ListObjects", L, "", True),
        ("GET", "/bkt?versions&prefix=p&key-marker=k&version-id-marker=v", "ListObjectVersions", L, "p", True),
        ("GET", "/bkt?uploads&prefix=p&upload-id-marker=u&max-uploads=1", "ListMultipartUploads", L, "p", True),
        ("GET", "/bkt?location", "GetBucketLocation", L, "", False),
        ("HEAD", "/bkt", "HeadBucket", L, "", False),
        ("POST", "/bkt?delete", "DeleteObjects", D, "", False),
        ("PUT", "/bkt", "CreateBucket", A, "", True),
        ("DELETE", "/bkt", "DeleteBucket", A, "", True),
        ("GET", "/bkt?acl", "GetBucketAcl", A, "", True),
        ("PUT", "/bkt?acl", "PutBucketAcl", A, "", True),
        ("GET", "/bkt?policy", "GetBucketPolicy", A, "", True),
        ("DELETE", "/bkt?policy", "DeleteBucketPolicy", A, "", True),
        ("GET", "/bkt?policyStatus", "GetBucketPolicyStatus", A, "", True),
        ("PUT", "/bkt?lifecycle", "PutBucketLifecycleConfiguration", A, "", True),
        ("DELETE", "/bkt?lifecycle", "DeleteBucketLifecycle", A, "", True),
        ("PUT", "/bkt?replication", "PutBucketReplication", A, "", True),
        ("GET", "/bkt?logging", "GetBucketLogging", A, "", True),
        ("PUT", "/bkt?cors", "PutBucketCors", A, "", True),
        ("GET", "/bkt?versioning", "GetBucketVersioning", A, "", True),
        ("PUT", "/bkt?website", "PutBucketWebsite", A, "", True),
        ("PUT", "/bkt?notification", "PutBucketNotificationConfiguration", A, "", True),
        ("PUT", "/bkt?encryption", "PutBucketEncryption", A, "", True),
        ("PUT", "/bkt?object-lock", "PutObjectLockConfiguration", A, "", True),
        ("GET", "/bkt?tagging", "GetBucketTagging", A, "", True),
        ("PUT", "/bkt?ownershipControls", "PutBucketOwnershipControls", A, "", True),
        ("DELETE", "/bkt?publicAccessBlock", "DeletePublicAccessBlock", A, "", True),
        ("GET", "/bkt?intelligent-tiering", "ListBucketIntelligentTieringConfigurations", A, "", True),
        ("PUT", "/bkt?inventory&id=i", "PutBucketInventoryConfiguration", A, "", True),
        ("DELETE", "/bkt?metrics&id=i", "DeleteBucketMetricsConfiguration", A, "", True),
        ("GET", "/bkt?analytics&id=i", "GetBucketAnalyticsConfiguration", A, "", True),
        ("PUT", "/bkt?accelerate", "PutBucketAccelerateConfiguration", A, "", True),
        ("GET", "/bkt?requestPayment", "GetBucketRequestPayment", A, "", True),
        ("GET", "/bkt?session", "CreateSession", A, "", True),
        ("POST", "/bkt?metadataTable", "CreateBucketMetadataTableConfiguration", A, "", True),
        # unknown: admin over the whole bucket
        ("GET", "/bkt?foo", "Unknown", A, "", True),
        ("GET", "/bkt?prefix=p&foo", "Unknown", A, "", True),
        ("GET", "/bkt?list-type=1", "Unknown", A, "", True),
        ("GET", "/bkt?list-type", "Unknown", A, "", True),
        ("GET", "/bkt?versions&list-type=2", "Unknown", A, "", True),
        ("GET", "/bkt?versionId=v", "Unknown", A, "", True),
        ("GET", "/bkt?id=i", "Unknown", A, "", True),
        ("PUT", "/bkt?delete", None, None, None, None),   # S3 would read an unknown bucket PUT as CreateBucket
        ("GET", "/bkt?delete", "Unknown", A, "", True),
        ("HEAD", "/bkt?acl", "Unknown", A, "", True),
        ("PATCH", "/bkt", None, None, None, None),
    ],
)
def test_bucket_operations(
    method: str, target: str, operation: str | None, action: Action | None, key: str | None, listing: bool | None
) -> None:
    if operation is None:
        with pytest.raises(BadRequest):
            parse(method, target)
        return
    assert action is not None
    assert key is not None
    assert listing is not None
    request = parse(method, target)
    assert request.operation.name == operation
    assert request.access == Access(action, Resource("s3", "bkt", key), listing=listing)
    assert request.key is None
    assert request.operation.reads_delete_body is (operation == "DeleteObjects")


@pytest.mark.parametrize(
    ("target", "operation"),
    [("/", "ListBuckets"), ("/?x-id=ListBuckets", "ListBuckets"),
     ("/?prefix=a&bucket-region=eu-west-1", "ListBuckets")],
)
def test_service_level(target: str, operation: str) -> None:
    request = parse("GET", target)
    assert request.operation.name == operation
    assert (request.bucket, request.key) == (None, None)
    assert request.access == Access(Action.LIST, Resource("s3", "", ""))


@pytest.mark.parametrize(
    ("method", "target"),
    [("PUT", "/"), ("DELETE", "/"), ("POST", "/"), ("HEAD", "/"),
     ("GET", "/?acl"), ("GET", "/?foo"), ("GET", "/?session")],
)
def test_service_level_refuses_everything_but_list_buckets(method: str, target: str) -> None:
    with pytest.raises(BadRequest, match="ListBuckets"):
        parse(method, target)


@pytest.mark.parametrize(
    "target",
    ["/bkt", "/bkt?foo", "/bkt?uploads", "/bkt?delete&foo", "/bkt?delete&versionId=v", "/bkt?acl"],
)
def test_post_to_a_bucket_is_refused_unless_a_known_operation(target: str) -> None:
    # S3 reads an unknown POST to a bucket as a form upload: the key is in the body, unseen.
    with pytest.raises(BadRequest, match="DeleteObjects"):
        parse("POST", target)


@pytest.mark.parametrize(
    ("prefix", "reason"),
    [
        ("a%2F..%2Fb", "dot segment"),
        ("..", "dot segment"),
        ("%2e%2e%2F", "dot segment"),
        ("a%2F%2Fb", "empty segment"),
        ("%2F", "empty segment"),
        ("a%5Cb", "backslash"),
        ("a%252e", "double-encoded"),
        ("x" * 1025, "longer than 1024"),
    ],
)
def test_listing_prefixes_follow_the_key_rules(prefix: str, reason: str) -> None:
    with pytest.raises(BadRequest, match=reason):
        parse("GET", f"/bkt?list-type=2&prefix={prefix}")


@pytest.mark.parametrize(
    "method", ["OPTIONS", "PATCH", "TRACE", "CONNECT", "PROPFIND", "get", "Get", ""]
)
def test_other_methods_are_refused(method: str) -> None:
    with pytest.raises(BadRequest, match="method") as caught:
        parse(method, "/bkt/k")
    assert (caught.value.status, caught.value.code) == (405, "MethodNotAllowed")


@pytest.mark.parametrize(
    "header", ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override", "x-http-method-override"]
)
def test_method_override_headers_are_refused(header: str) -> None:
    with pytest.raises(BadRequest, match="not accepted"):
        parse("GET", "/bkt/k", "s3.example.test", (header, "DELETE"))


def test_classify_directly() -> None:
    params = parse_target("/x?list-type=2&prefix=a").params
    list_v2 = classify(Level.BUCKET, "GET", params)
    assert (list_v2.name, list_v2.action, list_v2.scope) == ("ListObjectsV2", L, Scope.PREFIX)
    assert classify(Level.OBJECT, "GET", params) is UNKNOWN_OBJECT
    assert classify(Level.BUCKET, "GET", parse_target("/x?nope").params) is UNKNOWN_BUCKET


def test_selectors_and_ordinary_parameters_are_disjoint() -> None:
    assert not SELECTORS & ORDINARY_PARAMS
    assert {"acl", "uploads", "uploadId", "partNumber", "versionId", "delete", "list-type", "select-type"} <= SELECTORS
