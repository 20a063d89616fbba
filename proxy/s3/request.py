"""An S3 request as the policy sees it: operation, bucket, key, access and copy source.

`RequestReader.read` takes the method, the raw request-target and the
headers, and either returns an `S3Request` that names every resource the
request touches or raises `BadRequest`. It never guesses: a request that S3
could read as touching other data than the proxy judged is refused
(docs/policies.md, "How a request is decided", step 2). A reader is built
once per configuration and remembers the Host values it accepted
(`proxy.s3.host.HostReader`).

The body is never read here. A multi-object delete names its keys in the
body; ``S3Request.operation.reads_delete_body`` tells the caller to read it
(bounded by `S3Settings.max_delete_body_bytes`) and call
`proxy.s3.delete.parse_delete_body`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from proxy.config import S3Settings
from proxy.domain import Access, Action, Remote, Resource
from proxy.errors import BadRequest
from proxy.framing import check_frame
from proxy.s3.copysource import HEADER as COPY_SOURCE
from proxy.s3.copysource import parse_copy_source
from proxy.s3.destinations import (
    KMS_KEY_HEADER,
    REDIRECT_HEADER,
    check_redirect,
    header_remotes,
)
from proxy.s3.host import HostReader
from proxy.s3.location import bucket_and_key
from proxy.s3.operations import LIST_BUCKETS, POST_OBJECT, Level, Operation, Scope, classify
from proxy.s3.postform import NOT_MULTIPART_CODE, form_boundary
from proxy.storage.host import Headers
from proxy.storage.keys import check_key
from proxy.storage.target import QueryParam, is_plain_path, parse_target

MAX_CONTENT_LENGTH = 5 * 1024**3  # S3's largest single PUT or part
# A credential scope ends with this; tokens of an Authorization value are split at spaces and commas.
_SCOPE_END = "aws4_request"
_TARGET_HEADER = "X-Amz-Target"
_S3_SERVICES = frozenset({"s3", "s3express"})
# RenameObject moves a key named in this header; its source is not judged, so it is refused.
RENAME_SOURCE = "x-amz-rename-source"
# Headers with which a write or delete of an object also does what PutObjectAcl,
# PutObjectRetention / PutObjectLegalHold (admin) do: grant access, lock the object, or
# override a lock. Such a request is judged as admin on the object too.
GOVERNING_HEADERS = frozenset({
    "x-amz-acl", "x-amz-grant-full-control", "x-amz-grant-read", "x-amz-grant-read-acp",
    "x-amz-grant-write", "x-amz-grant-write-acp",
    "x-amz-object-lock-mode", "x-amz-object-lock-retain-until-date", "x-amz-object-lock-legal-hold",
    "x-amz-bypass-governance-retention",
})
_GOVERNED_ACTIONS = frozenset({Action.WRITE, Action.DELETE})
_NO_PARAMS: tuple[QueryParam, ...] = ()
_NO_NAMES: Mapping[str, QueryParam] = MappingProxyType({})
# Canned ACLs that grant no one but the owners anything (rclone sends "private" on every
# upload): a write with one of them is a plain write.
_OWNER_ONLY_ACLS = frozenset({"private", "bucket-owner-read", "bucket-owner-full-control"})



@dataclass(frozen=True, slots=True)
class S3Request:
    """What an S3 request does, for the policy engine, the audit log and metrics."""

    operation: Operation  # its name is S3's ("GetObject", "ListObjectsV2", ...; "Unknown" if not recognised)
    bucket: str | None  # None only for service-level requests (ListBuckets)
    key: str | None  # decoded object key; None for bucket- and service-level requests
    access: Access  # the target; for a listing, key is the decoded prefix and listing=True
    copy_from: Resource | None  # the source of CopyObject / UploadPartCopy
    # Sets the object's ACL or lock, or overrides a lock, by headers (GOVERNING_HEADERS):
    # the request is judged as admin on the object as well as its own action.
    governs: bool = False
    # The SSE-KMS key named by ARN in x-amz-server-side-encryption-aws-kms-key-id, with its
    # region (proxy.s3.destinations): the policy refuses one outside the data's region.
    remotes: tuple[Remote, ...] = ()
    # POST Object: the boundary of its multipart/form-data body, whose fields name the key (`proxy.s3.postobject`).
    form_boundary: bytes | None = None


class RequestReader:
    """Reads S3 requests for one configuration, remembering the Host values it accepted."""

    def __init__(self, settings: S3Settings) -> None:
        self._hosts = HostReader(settings)

    def read(self, method: str, target: str, headers: Headers) -> S3Request:
        """Read an S3 request. Raises `BadRequest` for anything not readable unambiguously."""
        check_frame(method, headers, MAX_CONTENT_LENGTH, "S3")
        if is_plain_path(target):   # most requests: a plain path and no query
            raw_path, params, by_name = target, _NO_PARAMS, _NO_NAMES
        else:
            parsed = parse_target(target)
            raw_path, params, by_name = parsed.raw_path, parsed.params, parsed.by_name
        _check_service(headers, params)
        bucket, key = bucket_and_key(raw_path, self._hosts.bucket(headers))
        copy_source = _copy_source_value(headers, params)
        if RENAME_SOURCE in headers or (params and any(p.name.lower() == RENAME_SOURCE for p in params)):
            raise BadRequest("RenameObject is not supported: its source is not checked by the policy")

        if bucket is None:
            op = classify(Level.SERVICE, method, params)
            if op is not LIST_BUCKETS or copy_source is not None:
                raise BadRequest("the only request accepted without a bucket is ListBuckets (GET /)")
            return S3Request(op, None, None, Access(op.action, Resource("s3", "", "")), None)

        level = Level.OBJECT if key is not None else Level.BUCKET
        op = classify(level, method, params)
        if level is Level.BUCKET and method == "POST" and op.name == "Unknown":
            # A browser's form upload: the key is in the body, read before the decision (`proxy.s3.postobject`).
            boundary = _post_object(params, headers, copy_source)
            access = Access(POST_OBJECT.action, Resource("s3", bucket, ""))   # the form's key replaces it
            return S3Request(POST_OBJECT, bucket, None, access, None, form_boundary=boundary)
        if level is Level.BUCKET and method == "PUT" and op.name == "Unknown":
            # S3 (and MinIO, and moto) read it as CreateBucket, whose region the proxy must check.
            raise BadRequest("a PUT to a bucket with query parameters the proxy does not know is not accepted: "
                             "S3 would read it as CreateBucket")
        copy_from = None
        if copy_source is not None:
            if op.copy is None:
                raise BadRequest(
                    f"{COPY_SOURCE} is accepted only on CopyObject and UploadPartCopy (PUT to an object)"
                )
            op = op.copy
            copy_from = parse_copy_source(copy_source)
        governed = (op.scope is Scope.KEY and op.action in _GOVERNED_ACTIONS) or op.reads_delete_body
        # Quick: none of the governing headers sent (the names compared without case) and no query to hoist them.
        governs = governed and (bool(params) or not headers.keys().isdisjoint(GOVERNING_HEADERS)) and \
            _governs(headers, params)
        remotes: tuple[Remote, ...] = ()
        if params or KMS_KEY_HEADER in headers or REDIRECT_HEADER in headers:
            # A key or redirect named in a header, or hoisted into a presigned URL's query.
            remotes = header_remotes(headers.getall(KMS_KEY_HEADER, []), params)
            check_redirect(headers.getall(REDIRECT_HEADER, []), params)
        return S3Request(op, bucket, key, _access(op, bucket, key, by_name), copy_from, governs, remotes)


def _post_object(params: tuple[QueryParam, ...], headers: Headers, copy_source: str | None) -> bytes:
    """The form's boundary, for a POST to a bucket that is not DeleteObjects: a form upload (POST Object),
    with no query, signed by its form alone."""
    if params:
        raise BadRequest("a POST to a bucket is DeleteObjects (?delete) or a form upload, which has no query")
    types = headers.getall("Content-Type", ())
    if len(types) != 1:
        raise BadRequest("a POST to a bucket is DeleteObjects (?delete) or a form upload, whose Content-Type is "
                         "multipart/form-data (once)", code=NOT_MULTIPART_CODE)
    boundary = form_boundary(types[0])
    if copy_source is not None:
        raise BadRequest(f"{COPY_SOURCE} is not accepted on a form upload", code="InvalidArgument")
    if any(value[:4].upper() in ("AWS4", "AWS ") for value in headers.getall("Authorization", ())):
        raise BadRequest("a form upload is signed by the POST policy in its form, not by an Authorization header",
                         code="InvalidArgument")
    if "x-amz-decoded-content-length" in headers or any(
            value.upper().startswith("STREAMING-") for value in headers.getall("x-amz-content-sha256", ())):
        # A server that honours them decodes the whole form as aws-chunked and stores other bytes than its file.
        raise BadRequest("a form upload's body is the form itself: aws-chunked framing (x-amz-content-sha256 "
                         "STREAMING-*, x-amz-decoded-content-length) is not accepted on it", code="InvalidArgument")
    sent = [name for name in (*GOVERNING_HEADERS, KMS_KEY_HEADER, REDIRECT_HEADER) if name in headers]
    if sent:
        # S3 reads a form upload's settings from its fields only; another server might act on the header.
        raise BadRequest(f"the {sent[0]} header is not accepted on a form upload: send it as a form field",
                         code="InvalidArgument")
    return boundary


def _check_service(headers: Headers, params: tuple[QueryParam, ...]) -> None:
    """Refuse a request addressed to another service than S3: a signature scoped to one, or X-Amz-Target.

    A storage server that serves several services on one port (moto's server, LocalStack) picks the
    service from the credential scope of the signature or from ``X-Amz-Target``; such a request judged
    as an S3 one would be served by another service. moto reads the scope loosely (the first token
    after the algorithm, whatever its name, split at ``/`` into five), so in a SigV4 (or SigV4a)
    ``Authorization`` or presigned ``X-Amz-Credential`` every token with a ``/`` must be a whole
    scope, ``KEY/DATE/REGION/SERVICE/aws4_request`` (SigV4a: no region), naming S3 (``s3``, or
    ``s3express`` as botocore signs S3 Express calls); in any other ``Authorization`` no token may
    read as a five-part scope of another service.
    """
    if _TARGET_HEADER in headers:
        raise BadRequest(f"the {_TARGET_HEADER} header is not accepted: it selects another service than S3")
    for value in headers.getall("Authorization", ()):
        if "/" in value:
            _check_scopes(value, strict=value[:4].upper() == "AWS4")
    for param in params:
        if param.name.lower() == "x-amz-credential":
            _check_scopes(param.value or "", strict=True)


def _check_scopes(value: str, *, strict: bool) -> None:
    # Tokens are split at runs of white space (`str.isspace`, as the regex `[\s,]+` reads it) and commas;
    # `str.split` drops the empty first or last token such a regex gives, which names no scope anyway.
    for token in value.replace(",", " ").split():
        if strict and "/" not in token:
            continue
        parts = token.split("=", 1)[-1].split("/")
        if strict:
            if len(parts) == 5 and parts[4] == _SCOPE_END:
                service = parts[3]
            elif len(parts) == 4 and parts[3] == _SCOPE_END:
                service = parts[2]
            else:
                raise BadRequest(f"the credential scope {token[:200]!r} does not name its service as "
                                 "KEY/DATE/REGION/SERVICE/aws4_request does", code="AuthorizationHeaderMalformed")
        elif len(parts) == 5:
            service = parts[3]
        else:
            continue
        if service not in _S3_SERVICES:   # exactly as signers write it: a server may match the name by case
            raise BadRequest(
                f"the request is signed for the service {service[:64]!r}: only requests signed for S3 ('s3', or "
                "'s3express' for directory buckets) are accepted", code="AuthorizationHeaderMalformed",
            )


def _access(op: Operation, bucket: str, key: str | None, by_name: Mapping[str, QueryParam]) -> Access:
    if op.scope is Scope.KEY:
        return Access(op.action, Resource("s3", bucket, key or ""))
    if op.scope is Scope.PREFIX:
        param = by_name.get("prefix")
        prefix = (param.value or "") if param is not None else ""
        check_key(prefix, "the prefix query parameter")
        return Access(op.action, Resource("s3", bucket, prefix), listing=True)
    # A bucket's configuration governs every key in it, so it touches every dataset nested in it.
    return Access(op.action, Resource("s3", bucket, ""), listing=op.scope is Scope.WHOLE_BUCKET)


def _governs(headers: Headers, params: tuple[QueryParam, ...]) -> bool:
    """Whether a governing header is sent, or hoisted into the query (SigV2 presigned URLs do)."""
    sent = [(name, value) for name in GOVERNING_HEADERS for value in headers.getall(name, ())]
    sent += [(p.name.lower(), p.value or "") for p in params if p.name.lower() in GOVERNING_HEADERS]
    return any(name != "x-amz-acl" or value.strip() not in _OWNER_ONLY_ACLS for name, value in sent)




def _copy_source_value(headers: Headers, params: tuple[QueryParam, ...]) -> str | None:
    """The copy source from the header or, in a presigned URL, the query; never both."""
    values = headers.getall(COPY_SOURCE, ())
    if len(values) > 1:
        raise BadRequest(f"the {COPY_SOURCE} header is repeated", code="InvalidArgument")
    if not params:
        return values[0] if values else None
    in_query = [p for p in params if p.name.lower() == COPY_SOURCE]
    if values and in_query:
        raise BadRequest(f"{COPY_SOURCE} is given both as a header and as a query parameter", code="InvalidArgument")
    if in_query:
        value = in_query[0].value
        if not value:
            raise BadRequest(f"the {COPY_SOURCE} query parameter is empty", code="InvalidArgument")
        return value
    return values[0] if values else None

