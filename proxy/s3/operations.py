"""Which S3 operation a request is, and which policy action it performs (docs/policies.md, "datasets": Actions).

S3 selects the operation by the method, by whether the path names the
service, a bucket or an object, and by the query parameters it treats as
sub-resources (``?acl``, ``?uploads``, ``?list-type=2`` ...). This module
holds one table from (level, method, sub-resources) to `Operation`
(`proxy.storage.operations.OperationTable`), built once at import; a request
is classified with one dict lookup.

Fail closed: a query parameter that is neither a known sub-resource nor a
known ordinary parameter, or a combination the table does not list, is the
operation "Unknown" with the action ``admin``, whose access reaches the whole
bucket for bucket-level requests (see `Scope.WHOLE_BUCKET`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from proxy.domain import Action
from proxy.storage.operations import OperationTable
from proxy.storage.target import QueryParam


class Level(Enum):
    SERVICE = "service"  # "/" path-style: no bucket
    BUCKET = "bucket"
    OBJECT = "object"


class Scope(Enum):
    """Which resource the access of an operation is on."""

    KEY = "key"  # the object key of the path
    BUCKET = "bucket"  # the bucket itself (key ""), not what is in it
    PREFIX = "prefix"  # a listing: every key under the `prefix` query parameter
    WHOLE_BUCKET = "whole-bucket"  # bucket configuration: it governs every key in the bucket
    SERVICE = "service"  # no bucket (ListBuckets)


@dataclass(frozen=True, slots=True)
class Operation:
    name: str  # the S3 API name, for audit and metrics
    action: Action
    scope: Scope
    # The operation this one becomes with an x-amz-copy-source (PutObject ->
    # CopyObject); None: a copy source is refused.
    copy: Operation | None = None
    reads_delete_body: bool = False
    # CreateBucket: its body names the region the bucket is created in (proxy.s3.placement).
    reads_placement: bool = False


# Sub-resources whose value is part of what they select: "list-type=2" is
# ListObjectsV2, any other value is not an operation this table knows.
_VALUED_SELECTORS = frozenset({"list-type", "select-type"})

# Query parameters that never select an operation: listing controls,
# response header overrides, botocore's x-id hint, presigned-URL
# authentication (SigV2 and SigV4; "X-Amz-*" is matched by prefix below).
ORDINARY_PARAMS = frozenset({
    "prefix", "delimiter", "max-keys", "marker", "continuation-token", "start-after",
    "fetch-owner", "encoding-type", "key-marker", "version-id-marker", "upload-id-marker",
    "max-uploads", "max-parts", "part-number-marker", "max-buckets", "bucket-region",
    "max-directory-buckets",
    "response-cache-control", "response-content-disposition", "response-content-encoding",
    "response-content-language", "response-content-type", "response-expires",
    "x-id", "AWSAccessKeyId", "Signature", "Expires",
})  # fmt: skip
_ORDINARY_PREFIX = "x-amz-"  # presigned parameters and headers hoisted into the query, any case

R, L, W, D, A = Action.READ, Action.LIST, Action.WRITE, Action.DELETE, Action.ADMIN
_OPERATION_TABLE: OperationTable[Level, Operation] = OperationTable()
_TABLE = _OPERATION_TABLE.entries
_add = _OPERATION_TABLE.add


def _object(method: str, selectors: str, name: str, action: Action, *, versioned: bool = False,
            copy: Operation | None = None) -> None:
    # `versioned`: the same operation on a given version (?versionId=...).
    op = Operation(name, action, Scope.KEY, copy=copy)
    chosen = selectors.split()
    _add(Level.OBJECT, method, chosen, op)
    if versioned:
        _add(Level.OBJECT, method, [*chosen, "versionId"], op)


def _bucket(method: str, selectors: str, name: str, action: Action, scope: Scope,
            *, reads_delete_body: bool = False, reads_placement: bool = False) -> None:
    op = Operation(name, action, scope, reads_delete_body=reads_delete_body, reads_placement=reads_placement)
    _add(Level.BUCKET, method, selectors.split(), op)


# ---- objects -----------------------------------------------------------------
for _method, _name in (("GET", "GetObject"), ("HEAD", "HeadObject")):
    # ?partNumber=N reads one part of a multipart object.
    _object(_method, "", _name, R, versioned=True)
    _object(_method, "partNumber", _name, R, versioned=True)
_object("PUT", "", "PutObject", W, copy=Operation("CopyObject", W, Scope.KEY))
_object("PUT", "partNumber uploadId", "UploadPart", W,
        copy=Operation("UploadPartCopy", W, Scope.KEY))
_object("DELETE", "", "DeleteObject", D, versioned=True)
_object("GET", "acl", "GetObjectAcl", R, versioned=True)
_object("PUT", "acl", "PutObjectAcl", A, versioned=True)
_object("GET", "tagging", "GetObjectTagging", R, versioned=True)
_object("PUT", "tagging", "PutObjectTagging", W, versioned=True)
_object("DELETE", "tagging", "DeleteObjectTagging", W, versioned=True)
_object("GET", "attributes", "GetObjectAttributes", R, versioned=True)
_object("GET", "torrent", "GetObjectTorrent", R)
_object("GET", "legal-hold", "GetObjectLegalHold", R, versioned=True)
_object("PUT", "legal-hold", "PutObjectLegalHold", A, versioned=True)
_object("GET", "retention", "GetObjectRetention", R, versioned=True)
_object("PUT", "retention", "PutObjectRetention", A, versioned=True)
# Re-encrypting under another key changes who can decrypt: configuration, not data.
_object("PUT", "encryption", "UpdateObjectEncryption", A, versioned=True)
_object("POST", "uploads", "CreateMultipartUpload", W)
_object("POST", "uploadId", "CompleteMultipartUpload", W)
_object("DELETE", "uploadId", "AbortMultipartUpload", W)
_object("GET", "uploadId", "ListParts", L)
_object("POST", "restore", "RestoreObject", W, versioned=True)
_object("POST", "select select-type=2", "SelectObjectContent", R)

# ---- buckets: data ---------------------------------------------------------------
_bucket("GET", "", "ListObjects", L, Scope.PREFIX)
_bucket("GET", "list-type=2", "ListObjectsV2", L, Scope.PREFIX)
_bucket("GET", "versions", "ListObjectVersions", L, Scope.PREFIX)
_bucket("GET", "uploads", "ListMultipartUploads", L, Scope.PREFIX)
_bucket("GET", "location", "GetBucketLocation", L, Scope.BUCKET)
_bucket("HEAD", "", "HeadBucket", L, Scope.BUCKET)
# The keys are in the body; the caller reads it and replaces the access.
_bucket("POST", "delete", "DeleteObjects", D, Scope.BUCKET, reads_delete_body=True)

# ---- buckets: configuration (admin over everything in the bucket) -------------
_bucket("PUT", "", "CreateBucket", A, Scope.WHOLE_BUCKET, reads_placement=True)
_bucket("DELETE", "", "DeleteBucket", A, Scope.WHOLE_BUCKET)
# S3 Express: a session credential for the whole bucket.
_bucket("GET", "session", "CreateSession", A, Scope.WHOLE_BUCKET)
# sub-resource -> the operation each method performs on it
_CONFIGURATION: dict[str, dict[str, str]] = {
    "acl": {"GET": "GetBucketAcl", "PUT": "PutBucketAcl"},
    "policy": {"GET": "GetBucketPolicy", "PUT": "PutBucketPolicy", "DELETE": "DeleteBucketPolicy"},
    "policyStatus": {"GET": "GetBucketPolicyStatus"},
    "lifecycle": {"GET": "GetBucketLifecycleConfiguration",
                  "PUT": "PutBucketLifecycleConfiguration", "DELETE": "DeleteBucketLifecycle"},
    "replication": {"GET": "GetBucketReplication", "PUT": "PutBucketReplication",
                    "DELETE": "DeleteBucketReplication"},
    "logging": {"GET": "GetBucketLogging", "PUT": "PutBucketLogging"},
    "cors": {"GET": "GetBucketCors", "PUT": "PutBucketCors", "DELETE": "DeleteBucketCors"},
    "versioning": {"GET": "GetBucketVersioning", "PUT": "PutBucketVersioning"},
    "website": {"GET": "GetBucketWebsite", "PUT": "PutBucketWebsite", "DELETE": "DeleteBucketWebsite"},
    "notification": {"GET": "GetBucketNotificationConfiguration",
                     "PUT": "PutBucketNotificationConfiguration"},
    "encryption": {"GET": "GetBucketEncryption", "PUT": "PutBucketEncryption",
                   "DELETE": "DeleteBucketEncryption"},
    "object-lock": {"GET": "GetObjectLockConfiguration", "PUT": "PutObjectLockConfiguration"},
    "tagging": {"GET": "GetBucketTagging", "PUT": "PutBucketTagging", "DELETE": "DeleteBucketTagging"},
    "ownershipControls": {"GET": "GetBucketOwnershipControls", "PUT": "PutBucketOwnershipControls",
                          "DELETE": "DeleteBucketOwnershipControls"},
    "publicAccessBlock": {"GET": "GetPublicAccessBlock", "PUT": "PutPublicAccessBlock",
                          "DELETE": "DeletePublicAccessBlock"},
    "accelerate": {"GET": "GetBucketAccelerateConfiguration",
                   "PUT": "PutBucketAccelerateConfiguration"},
    "requestPayment": {"GET": "GetBucketRequestPayment", "PUT": "PutBucketRequestPayment"},
    "abac": {"GET": "GetBucketAbac", "PUT": "PutBucketAbac"},
    "metadataConfiguration": {"GET": "GetBucketMetadataConfiguration",
                              "POST": "CreateBucketMetadataConfiguration",
                              "DELETE": "DeleteBucketMetadataConfiguration"},
    "metadataTable": {"GET": "GetBucketMetadataTableConfiguration",
                      "POST": "CreateBucketMetadataTableConfiguration",
                      "DELETE": "DeleteBucketMetadataTableConfiguration"},
    "metadataInventoryTable": {"PUT": "UpdateBucketMetadataInventoryTableConfiguration"},
    "metadataJournalTable": {"PUT": "UpdateBucketMetadataJournalTableConfiguration"},
}
for _selector, _by_method in _CONFIGURATION.items():
    for _method, _name in _by_method.items():
        _bucket(_method, _selector, _name, A, Scope.WHOLE_BUCKET)
# Configurations kept as a set addressed by ?id=...
for _selector, _stem in (("analytics", "BucketAnalyticsConfiguration"),
                         ("inventory", "BucketInventoryConfiguration"),
                         ("metrics", "BucketMetricsConfiguration"),
                         ("intelligent-tiering", "BucketIntelligentTieringConfiguration")):
    _bucket("GET", _selector, f"List{_stem}s", A, Scope.WHOLE_BUCKET)
    for _method in ("GET", "PUT", "DELETE"):
        _bucket(_method, f"{_selector} id", f"{_method.title()}{_stem}", A, Scope.WHOLE_BUCKET)

# A browser's form upload (POST Object): a POST to the bucket whose multipart/form-data body names the key.
# Selected by its Content-Type, not by the table (`proxy.s3.request`); its access is replaced by the form's.
POST_OBJECT = Operation("PostObject", W, Scope.KEY)

# ---- service -----------------------------------------------------------------
LIST_BUCKETS = Operation("ListBuckets", L, Scope.SERVICE)
_add(Level.SERVICE, "GET", (), LIST_BUCKETS)

UNKNOWN_OBJECT = Operation("Unknown", A, Scope.KEY)
UNKNOWN_BUCKET = Operation("Unknown", A, Scope.WHOLE_BUCKET)
UNKNOWN_SERVICE = Operation("Unknown", A, Scope.SERVICE)
_UNKNOWN = {Level.OBJECT: UNKNOWN_OBJECT, Level.BUCKET: UNKNOWN_BUCKET, Level.SERVICE: UNKNOWN_SERVICE}

# Every name that takes part in selecting an operation.
SELECTORS: frozenset[str] = frozenset(
    token.partition("=")[0] for (_, _, tokens) in _TABLE for token in tokens
)


# The entries without sub-resources, for the many requests without a query.
_PLAIN = _OPERATION_TABLE.plain()


def classify(level: Level, method: str, params: Iterable[QueryParam]) -> Operation:
    """The operation a request performs; "Unknown" (admin) for anything not in the table."""
    if isinstance(params, tuple) and not params:
        # The same answer as the table lookup below with no tokens, without building a key set.
        op = _PLAIN.get((level, method))
        return op if op is not None else _UNKNOWN[level]
    tokens: list[str] = []
    for param in params:
        name = param.name
        if name in SELECTORS:
            tokens.append(f"{name}={param.value}" if name in _VALUED_SELECTORS else name)
        elif name not in ORDINARY_PARAMS and not name.lower().startswith(_ORDINARY_PREFIX):
            return _UNKNOWN[level]
    return _TABLE.get((level, method, frozenset(tokens)), _UNKNOWN[level])
