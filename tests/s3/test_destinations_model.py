"""Every S3 input that names a second place is judged, refused, or reviewed: a walk of botocore's S3 model.

S3 grows: a new operation or member may name another bucket, key, region or
target (a destination, an ARN, a KMS key, a redirect, a route). This test walks
every input member of every operation in the S3 service model botocore ships
(headers, query parameters and body elements, however deep) whose name says it
may name a place, and asserts that each is judged or refused by the proxy
(`proxy.s3.destinations`, the copy source, CreateBucket's placement,
RenameObject's refusal) or listed below with the reason it names no place. A
member botocore adds that is neither fails here until someone has looked at it.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from botocore.loaders import Loader

from proxy.s3 import copysource
from proxy.s3.destinations import BODY_RULES, JUDGED_ELEMENTS, JUDGED_HEADERS
from proxy.s3.request import RENAME_SOURCE

# Names that may name a place (a bucket, key, region, account, target, route ...).
PLACE_WORDS = re.compile(
    r"bucket|destination|target|location|arn|keyid|kms|redirect|replica|output|route|source|host|topic|queue"
    r"|function|role|table|region|account|url|uri|endpoint",
    re.IGNORECASE,
)

# Headers judged or refused elsewhere than `proxy.s3.destinations`.
HEADERS_JUDGED_ELSEWHERE = {
    copysource.HEADER: "judged as the source of a copy (proxy.s3.copysource)",
    RENAME_SOURCE: "refused: RenameObject's source is not judged (proxy.s3.request)",
}

# Reviewed: headers and query parameters whose name matches but that name no place data goes to.
REVIEWED_PARAMETERS: dict[tuple[str, str], str] = {
    ("header", "x-amz-expected-bucket-owner"): "an account id S3 checks the judged bucket against: only narrows",
    ("header", "x-amz-source-expected-bucket-owner"): "the same check on the judged copy source",
    ("header", "x-amz-server-side-encryption-context"): "the KMS encryption context (key-value pairs), no place",
    ("header", "x-amz-server-side-encryption-bucket-key-enabled"): "a boolean",
    ("header", "x-amz-copy-source-server-side-encryption-customer-algorithm"): "SSE-C of the judged source",
    ("header", "x-amz-copy-source-server-side-encryption-customer-key"): "SSE-C of the judged source",
    ("header", "x-amz-copy-source-server-side-encryption-customer-key-MD5"): "SSE-C of the judged source",
    ("header", "x-amz-copy-source-if-match"): "a condition on the judged source",
    ("header", "x-amz-copy-source-if-none-match"): "a condition on the judged source",
    ("header", "x-amz-copy-source-if-modified-since"): "a condition on the judged source",
    ("header", "x-amz-copy-source-if-unmodified-since"): "a condition on the judged source",
    ("header", "x-amz-copy-source-range"): "a byte range of the judged source",
    ("header", "x-amz-rename-source-if-match"): "RenameObject: refused (x-amz-rename-source)",
    ("header", "x-amz-rename-source-if-none-match"): "RenameObject: refused (x-amz-rename-source)",
    ("header", "x-amz-rename-source-if-modified-since"): "RenameObject: refused (x-amz-rename-source)",
    ("header", "x-amz-rename-source-if-unmodified-since"): "RenameObject: refused (x-amz-rename-source)",
    ("header", "If-Match"): "a condition on the judged object",
    ("header", "If-None-Match"): "a condition on the judged object",
    ("header", "If-Modified-Since"): "a condition on the judged object",
    ("header", "If-Unmodified-Since"): "a condition on the judged object",
    ("header", "x-amz-bucket-object-lock-enabled"): "a setting of the bucket created (admin)",
    ("header", "x-amz-bucket-object-lock-token"): "a token of the judged bucket's lock configuration",
    ("header", "x-amz-bucket-namespace"): "the namespace the judged bucket name is unique in, no place",
    ("header", "x-amz-confirm-remove-self-bucket-access"): "PutBucketPolicy: a confirmation (admin)",
    ("header", "x-amz-skip-destination-validation"): "notifications: the targets in the body are judged",
    ("header", "x-amz-request-route"): "WriteGetObjectResponse: refused (no bucket; only ListBuckets is)",
    ("header", "x-amz-fwd-header-x-amz-server-side-encryption-aws-kms-key-id"): "WriteGetObjectResponse: refused",
    ("header", "x-amz-fwd-header-x-amz-server-side-encryption-bucket-key-enabled"):
        "WriteGetObjectResponse: refused",
    ("header", "x-amz-fwd-header-x-amz-replication-status"): "WriteGetObjectResponse: refused",
    ("querystring", "bucket-region"): "ListBuckets: a filter on what is listed",
    ("querystring", "max-buckets"): "ListBuckets: paging",
    ("querystring", "max-directory-buckets"): "ListDirectoryBuckets: refused (no bucket; only ListBuckets is)",
}

# Body leaves judged elsewhere: CreateBucket's placement (proxy.s3.placement).
BODY_JUDGED_ELSEWHERE = {("CreateBucket", "LocationConstraint"): "the bucket's region: rule placement"}

# Reviewed: body leaves whose name matches but that name no place, or bodies the proxy does not read.
REVIEWED_BODY: dict[tuple[str, str], str] = {
    ("PutBucketAnalyticsConfiguration", "BucketAccountId"): "the owner of the judged destination bucket",
    ("PutBucketAnalyticsConfiguration", "OutputSchemaVersion"): "the export's format",
    ("PutBucketEncryption", "BucketKeyEnabled"): "a boolean",
    ("UpdateObjectEncryption", "BucketKeyEnabled"): "a boolean",
    ("PutBucketLogging", "TargetPrefix"): "key names in the judged TargetBucket (judged as a whole)",
    ("PutBucketLogging", "PartitionDateSource"): "how log keys in the judged TargetBucket are dated",
    ("PutBucketMetricsConfiguration", "AccessPointArn"):
        "a filter, not a destination: metrics go to CloudWatch in the bucket's region (body not read)",
    ("PutBucketWebsite", "HttpRedirectCode"): "an HTTP status code",
    ("PutPublicAccessBlock", "RestrictPublicBuckets"): "a boolean",
    ("RestoreObject", "KMSContext"): "the encryption context of the judged output key",
    ("CreateBucketMetadataTableConfiguration", "TableName"): "a table in the judged table bucket",
    ("PutBucketInventoryConfiguration", "AccountId"): "the owner of the judged destination bucket",
    ("PutBucketReplication", "Account"): "the owner of the judged destination bucket",
    ("PutBucketAcl", "URI"): "a grantee group (AllUsers ...): who may act, not a place; the operation is admin",
    ("PutObjectAcl", "URI"): "a grantee group: who may act, not a place; the operation is admin",
    ("PutBucketLogging", "URI"): "a grantee group in TargetGrants, judged as admin on the destination",
    ("RestoreObject", "URI"): "a grantee group in the output's AccessControlList, judged as admin on it",
}

# Operations whose body is read under another operation's rule (the same request line).
BODY_READ_AS = {"PutBucketNotification": "PutBucketNotificationConfiguration"}

_MODEL: dict[str, Any] = Loader().load_service_model("s3", "service-2")
_SHAPES: dict[str, Any] = _MODEL["shapes"]
_SCALARS = frozenset({"string", "boolean", "integer", "long", "timestamp", "blob", "double", "float"})


def _walk(shape: str, seen: frozenset[str], found: set[tuple[str, str]]) -> None:
    """(where, name) of every place-like member under `shape`: headers, query, and body leaves."""
    spec = _SHAPES[shape]
    if spec["type"] == "list":
        if spec["member"]["shape"] not in seen:
            _walk(spec["member"]["shape"], seen | {spec["member"]["shape"]}, found)
        return
    if spec["type"] != "structure":
        return
    for name, member in spec["members"].items():
        where = member.get("location", "body")
        wire = member.get("locationName", name)
        if where == "uri":
            continue   # the bucket and key of the request itself
        is_leaf = _SHAPES[member["shape"]]["type"] in _SCALARS
        if where != "body" or is_leaf:
            if PLACE_WORDS.search(wire) or PLACE_WORDS.search(name):
                found.add((where, wire))
            continue
        if member["shape"] not in seen:
            _walk(member["shape"], seen | {member["shape"]}, found)


def _members() -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    for operation, spec in sorted(_MODEL["operations"].items()):
        if "input" in spec:
            found: set[tuple[str, str]] = set()
            _walk(spec["input"]["shape"], frozenset(), found)
            rows += [(operation, where, name) for where, name in sorted(found)]
    return rows


MEMBERS = _members()


def test_the_walk_finds_the_known_destinations() -> None:
    """The walk itself reaches deep body leaves and headers (or it would prove nothing)."""
    found = {(operation, name) for operation, _, name in MEMBERS}
    for expected in [("RestoreObject", "BucketName"), ("PutBucketReplication", "ReplicaKmsKeyID"),
                     ("PutBucketNotificationConfiguration", "Topic"), ("CopyObject", copysource.HEADER),
                     ("PutBucketLogging", "TargetBucket"),
                     ("PutObject", "x-amz-server-side-encryption-aws-kms-key-id")]:
        assert expected in found
    assert len(MEMBERS) > 150


@pytest.mark.parametrize(("operation", "where", "name"), MEMBERS,
                         ids=[f"{o}-{w}-{n}" for o, w, n in MEMBERS])
def test_every_member_naming_a_place_is_judged_refused_or_reviewed(operation: str, where: str, name: str) -> None:
    if where != "body":
        assert name.lower() in JUDGED_HEADERS or name in HEADERS_JUDGED_ELSEWHERE or (where, name) in \
            REVIEWED_PARAMETERS, (
            f"{operation}: the {where} {name!r} may name another place; judge it in proxy.s3.destinations, "
            "refuse it, or review it into REVIEWED_PARAMETERS with a reason")
        return
    read_as = BODY_READ_AS.get(operation, operation)
    if read_as in BODY_RULES and name in JUDGED_ELEMENTS:
        return
    assert (operation, name) in BODY_JUDGED_ELSEWHERE or (operation, name) in REVIEWED_BODY, (
        f"{operation}: the body element <{name}> may name another place, and "
        + ("the body is read but this element is not judged" if read_as in BODY_RULES
           else "the body is not read (no BODY_RULES entry)")
        + ": judge it in proxy.s3.destinations, or review it into REVIEWED_BODY with a reason")


def test_every_reviewed_entry_is_still_in_the_model() -> None:
    """No stale reviews: an entry for a member botocore no longer has is removed."""
    body = {(operation, name) for operation, where, name in MEMBERS if where == "body"}
    parameters = {(where, name) for _, where, name in MEMBERS if where != "body"}
    assert set(REVIEWED_BODY) | set(BODY_JUDGED_ELSEWHERE) <= body
    assert set(REVIEWED_PARAMETERS) <= parameters
    assert set(BODY_READ_AS) <= set(_MODEL["operations"])
