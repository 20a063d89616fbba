"""A browser's form upload (S3 POST Object) as the policy judges it: the key and settings its form names.

A POST to a bucket with a ``multipart/form-data`` body is S3's POST Object:
the object key and its settings are form fields, read before the file by
`proxy.s3.postform`. This module turns what they say into the accesses the
policy judges, exactly as `proxy.s3.request` judges the same settings sent as
headers on a PutObject:

- the object ``s3://BUCKET/KEY``, ``KEY`` being the ``key`` field with
  ``${filename}`` filled in, is written (``write``); a key S3 could resolve to
  another name is refused (`proxy.storage.keys.check_key`);
- an ``acl`` other than an owner-only one, an ``x-amz-grant-*`` or an
  ``x-amz-object-lock-*`` field also makes it an ``admin`` act on the object;
- an SSE-KMS key named by ARN (``x-amz-server-side-encryption-aws-kms-key-id``)
  must be in the data's region, and ``x-amz-website-redirect-location`` must
  be a path in the same bucket (`proxy.s3.destinations`);
- ``success_action_status`` must be one S3 answers with (200, 201, 204);
- no value but ``tagging`` (XML) may hold a control character: S3 keeps the
  settings and ``x-amz-meta-*`` as the object's headers;
- ``success_action_redirect`` (or the older ``redirect``) is where S3 sends the
  browser after the upload, with the bucket, key and ETag in its query: it
  must be an absolute ``http``/``https`` URL, since no two servers agree on
  what a relative one means.

Only the fields S3 documents for POST Object are accepted (plus
``x-ignore-*``, which S3 ignores, and ``x-amz-meta-*``, and a ``bucket``
field naming the bucket posted to, as the AWS SDK for JavaScript's
``createPresignedPost`` writes it); any other field, a ``bucket`` naming
another bucket, and a copy or rename source, are refused: a field the proxy
does not know is one a storage server might act on unjudged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from proxy.crypto.envelope import METADATA_HEADER
from proxy.domain import Access, Action, Remote, Resource
from proxy.errors import BadRequest
from proxy.s3.destinations import KMS_KEY_HEADER, REDIRECT_HEADER, check_redirect, header_remotes
from proxy.s3.postform import INVALID_ARGUMENT_CODE, KEY_FIELD, NOT_READ_CODE, PostForm
from proxy.storage.keys import check_key

OPERATION = "PostObject"
# The fields S3 documents for POST Object (lower-cased, as the form reader keeps them), besides the file.
KNOWN_FIELDS = frozenset({
    KEY_FIELD, "acl", "cache-control", "content-type", "content-disposition", "content-encoding", "expires",
    "policy", "success_action_redirect", "redirect", "success_action_status", "tagging",
    "x-amz-algorithm", "x-amz-credential", "x-amz-date", "x-amz-security-token", "x-amz-signature",
    "awsaccesskeyid", "signature",
    "x-amz-server-side-encryption", KMS_KEY_HEADER, "x-amz-server-side-encryption-context",
    "x-amz-server-side-encryption-bucket-key-enabled", "x-amz-server-side-encryption-customer-algorithm",
    "x-amz-server-side-encryption-customer-key", "x-amz-server-side-encryption-customer-key-md5",
    "x-amz-storage-class", REDIRECT_HEADER, "x-amz-checksum-algorithm", "x-amz-checksum-crc32",
    "x-amz-checksum-crc32c", "x-amz-checksum-crc64nvme", "x-amz-checksum-sha1", "x-amz-checksum-sha256",
})  # fmt: skip
KNOWN_PREFIXES = ("x-amz-meta-", "x-ignore-")
# Fields with which the upload also does what PutObjectAcl / PutObjectRetention / PutObjectLegalHold do.
GOVERNING_PREFIXES = ("x-amz-grant-", "x-amz-object-lock-")
_OWNER_ONLY_ACLS = frozenset({"private", "bucket-owner-read", "bucket-owner-full-control"})
REDIRECT_FIELDS = ("success_action_redirect", "redirect")
# S3 answers with these; with any other success_action_status it answers 204, while other servers (moto) write
# the value into their status line as sent: a line break in it adds headers to the answer the proxy relays.
SUCCESS_STATUSES = frozenset({"200", "201", "204"})
_MAX_REDIRECT = 2048
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")   # what a header value may not hold (tab may)
BUCKET_FIELD = "bucket"


def form_accesses(bucket: str, form: PostForm) -> tuple[tuple[Access, ...], tuple[Remote, ...]]:
    """The accesses a POST Object form makes (the write, and admin when it governs), and the remote places it
    names. Raises `BadRequest` for a field the proxy does not read or a value S3 could read another way."""
    fields = form.fields
    for name, value in fields.items():
        if name != "tagging" and _CONTROL.search(value):
            # S3 keeps the settings and metadata as the object's headers: a line break would split the answer
            # every later GET of the object gets (moto stores it, then answers 500 to each GET).
            raise BadRequest(f"the form field {name!r} holds a control character: it would be stored as a header",
                             code=INVALID_ARGUMENT_CODE)
        if name == METADATA_HEADER:
            # As on PutObject: only the encryption stage writes it, and form uploads are never sealed.
            raise BadRequest(f"{METADATA_HEADER} is the proxy's own metadata; it cannot be written",
                             code=INVALID_ARGUMENT_CODE)
        if name in KNOWN_FIELDS or name.startswith(KNOWN_PREFIXES):
            continue
        if name.startswith(GOVERNING_PREFIXES) or name == "x-amz-bypass-governance-retention":
            continue
        if name == BUCKET_FIELD:
            if fields[name] != bucket:
                raise BadRequest(f"the form's bucket field names {fields[name]!r}, not the bucket it is posted to",
                                 code=INVALID_ARGUMENT_CODE)
            continue
        if name in ("x-amz-copy-source", "x-amz-rename-source"):
            raise BadRequest(f"the form field {name!r}: a form upload stores its file, it cannot copy or rename "
                             "another object", code=INVALID_ARGUMENT_CODE)
        raise BadRequest(f"the form field {name!r} is not one S3 documents for a form upload, so the proxy does not "
                         "forward it (fields of your own may be named x-ignore-*)", code=NOT_READ_CODE)
    key = form.key
    if not key:
        raise BadRequest("the form's key is empty: an object needs a key", code=INVALID_ARGUMENT_CODE)
    check_key(key, "the form's key")
    resource = Resource("s3", bucket, key)
    write = Access(Action.WRITE, resource)
    accesses = (write, Access(Action.ADMIN, resource)) if _governs(fields) else (write,)
    remotes = header_remotes([fields[KMS_KEY_HEADER]], ()) if KMS_KEY_HEADER in fields else ()
    if REDIRECT_HEADER in fields:
        check_redirect([fields[REDIRECT_HEADER]], ())
    for name in REDIRECT_FIELDS:
        if name in fields:
            _check_after_upload(name, fields[name])
    if fields.get("success_action_status", "204") not in SUCCESS_STATUSES:
        raise BadRequest("the form field 'success_action_status' must be 200, 201 or 204: S3 answers 204 for any other"
                         " value, other storage servers answer with it as sent", code=NOT_READ_CODE)
    return accesses, remotes


def _governs(fields: Mapping[str, str]) -> bool:
    if fields.get("acl", "private").strip() not in _OWNER_ONLY_ACLS:
        return True
    return any(name.startswith(GOVERNING_PREFIXES) or name == "x-amz-bypass-governance-retention" for name in fields)


def _check_after_upload(name: str, value: str) -> None:
    """Refuse a redirect after the upload that servers could read differently: not an absolute http(s) URL."""
    problem = len(value) > _MAX_REDIRECT or any(not 0x21 <= ord(char) <= 0x7E for char in value) or "\\" in value
    if not problem:
        parts = urlsplit(value)
        problem = parts.scheme not in ("http", "https") or not parts.netloc or "@" in parts.netloc
    if problem:
        raise BadRequest(f"the form field {name!r} must be an absolute http or https URL (printable ASCII, no user "
                         "part, at most 2048 characters)", code=INVALID_ARGUMENT_CODE)
