"""What encryption does to one allowed request, decided from plain values (no I/O).

    decision (+ parsed request, headers) -> None | Seal | Open | OpenHead | Copy | a multipart step
                                            (or a refusal)

Called by `proxy.evaluate` once the policy has allowed a request, before its
headers are signed. A request that touches no encrypted dataset gets None and
goes on exactly as before. One whose target is in a dataset that requires
encryption (or is migrating to it) is either carried out by the proxy's
encryption stage (`proxy.crypto.stage`):

- PutObject: `Seal` (the body encrypted as it streams; its integrity headers
  checked by the proxy against the plaintext, since the storage server only
  sees ciphertext);
- GetObject: `Open` (the stored segments a Range needs, fetched and verified);
- HeadObject: `OpenHead` (the plaintext length reported);
- CopyObject from or into an encrypted dataset: `Copy` (the proxy reads the
  source and writes the copy itself: the storage server could neither open
  the one nor seal the other);
- a multipart upload (`proxy.crypto.multipart`): `CreateUpload` (the upload
  key made, the caller given a token as its upload id,
  `proxy.crypto.uploads`), `SealPart` (UploadPart, sealed like a PutObject),
  `CopyPart` (UploadPartCopy: the source read through the proxy, the part
  sealed), `CompleteUpload` (the parts checked against the format's layout
  rule), `ListUploadParts` and `AbortUpload` (the token turned back into the
  storage server's id);

or passes through unchanged when the operation moves no object bytes
(deletes, tags, ACLs, retention, listings: their sizes are rewritten by
`proxy.crypto.listing`; an abort naming the storage server's own upload
id), or is refused with `NotImplementedHere` (501) naming the operation: a
part read, a Select, anything that would store plaintext or hand out
ciphertext as if it were the object.
The allowlist is explicit so that an operation added later is refused until
someone decides what it means for encrypted data. (The module is over 400
lines for that reason: the whole allowlist, and the plan of each operation
on it, are read in one place.)
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import NamedTuple

from multidict import MultiMapping

from proxy.api import ParsedRequest
from proxy.crypto.dechunk import UNCHECKABLE_CHECKSUMS, Chunked, chunked_upload
from proxy.crypto.segments import SEGMENT_SIZE, TAG_SIZE
from proxy.crypto.uploads import UploadToken, part_number_of, token_of, upload_of
from proxy.errors import (
    BadRequest,
    KeyReleaseRefused,
    KeyServiceUnavailable,
    LengthRequired,
    NotImplementedHere,
    RangeNotSatisfiable,
)
from proxy.policy.decision import Check, Decision, Purpose
from proxy.policy.model import Encryption

# Operations on an encrypted dataset that move no object bytes: forwarded as they are.
PASS_THROUGH = frozenset({
    "DeleteObject", "DeleteObjects", "GetObjectAcl", "PutObjectAcl", "GetObjectTagging", "PutObjectTagging",
    "DeleteObjectTagging", "GetObjectLegalHold", "PutObjectLegalHold", "GetObjectRetention",
    "PutObjectRetention", "ListMultipartUploads", "ListObjects",
    "ListObjectsV2", "ListObjectVersions", "GetBucketLocation", "HeadBucket",
})
# Headers that state the plaintext's integrity, checked by the proxy (then not forwarded, since the storage
# server would check them against the ciphertext), by the digest they carry.
_DIGEST_HEADERS = {
    "content-md5": "md5",
    "x-amz-checksum-crc32": "crc32",
    "x-amz-checksum-sha1": "sha1",
    "x-amz-checksum-sha256": "sha256",
}
_RANGE = re.compile(r"bytes=(?:([0-9]{1,19})-([0-9]{0,19})|-([0-9]{1,19}))")   # ASCII digits, as S3 reads them
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class ObjectRef(NamedTuple):
    """An object of an encrypted dataset, as its keys are bound: the policy's view, never the stored one."""

    dataset: str
    region: str
    bucket: str
    key: str
    migrating: bool            # plaintext found there is served (the dataset is being migrated)


class Seal(NamedTuple):
    """PutObject: encrypt `length` bytes; `digests` ({algorithm: raw digest}) must match the plaintext."""

    obj: ObjectRef
    length: int
    digests: Mapping[str, bytes]
    chunked: Chunked | None = None   # the body is aws-chunked with a trailing checksum (`proxy.crypto.dechunk`)


class Wanted(NamedTuple):
    """A Range as asked: `start`-`end` (end None: to the end), or the last `suffix` bytes."""

    start: int = 0
    end: int | None = None
    suffix: int | None = None


class Open(NamedTuple):
    """GetObject: fetch what `wanted` needs (None: the whole object), verify, hand on the plaintext."""

    obj: ObjectRef
    wanted: Wanted | None
    original_range: str | None   # the caller's Range header, for a plaintext object of a migrating dataset


class OpenHead(NamedTuple):
    """HeadObject: report the plaintext length."""

    obj: ObjectRef


class Copy(NamedTuple):
    """CopyObject touching an encrypted dataset: the proxy reads the source (opening it if it is encrypted)
    and writes the destination (sealing it if its dataset is encrypted), as the caller would see S3 do it."""

    source: ObjectRef
    source_encrypted: bool
    obj: ObjectRef               # the destination
    dest_encrypted: bool
    source_target: str           # the request-target that reads the source, path-style
    replace_metadata: bool       # x-amz-metadata-directive: REPLACE
    replace_tags: bool           # x-amz-tagging-directive: REPLACE


class CreateUpload(NamedTuple):
    """CreateMultipartUpload: an upload key made for the object, its upload id answered as a token."""

    obj: ObjectRef


class SealPart(NamedTuple):
    """UploadPart: part `number` sealed under the upload's key; `digests` must match the part's plaintext."""

    obj: ObjectRef
    upload: UploadToken
    number: int
    length: int
    digests: Mapping[str, bytes]
    chunked: Chunked | None = None   # as Seal's


class CopyPart(NamedTuple):
    """UploadPartCopy: the source (bytes `first`..`last` of it, or all) read through the proxy, written as part
    `number` (sealed if the destination's dataset is encrypted; then `upload` is its token)."""

    obj: ObjectRef
    upload: UploadToken | None
    number: int
    copy: Copy
    source_range: tuple[int, int] | None


class CompleteUpload(NamedTuple):
    """CompleteMultipartUpload: the parts named checked against the stored ones and the layout rule."""

    obj: ObjectRef
    upload: UploadToken


class ListUploadParts(NamedTuple):
    """ListParts: the storage server's list, with the token and the parts' plaintext sizes."""

    obj: ObjectRef
    upload: UploadToken


class AbortUpload(NamedTuple):
    """AbortMultipartUpload naming a token: forwarded with the storage server's id."""

    obj: ObjectRef
    upload: UploadToken


Multipart = CreateUpload | SealPart | CopyPart | CompleteUpload | ListUploadParts | AbortUpload
Plan = Seal | Open | OpenHead | Copy | Multipart
MULTIPART_PLANS = (CreateUpload, SealPart, CopyPart, CompleteUpload, ListUploadParts, AbortUpload)


def encrypted_target(decision: Decision) -> ObjectRef | None:
    """The object the request targets, if its dataset is encrypted (required or migrating)."""
    for check in decision.checks:
        if check.purpose is Purpose.TARGET and check.encryption not in (None, Encryption.NONE):
            resource = check.access.resource
            return ObjectRef(check.dataset or "", check.region or "", resource.bucket, resource.key,
                             check.encryption is Encryption.MIGRATING)
    return None


def touches_encrypted(decision: Decision) -> bool:
    return any(check.encryption not in (None, Encryption.NONE) for check in decision.checks)


def plan(parsed: ParsedRequest, decision: Decision, target: str, headers: MultiMapping[str], *,
         has_key_service: bool, body_exists: bool, region: str | None) -> Plan | None:
    """What the encryption stage does with an allowed request; None: nothing. Raises `RequestRefused`.

    `region`: the proxy's, whose key service it has: only that region's objects are sealed or opened here."""
    if not touches_encrypted(decision):
        return None
    operation = parsed.operation
    if (operation in PASS_THROUGH or _bucket_level(decision, operation)) and not _reads_other_sources(decision):
        return None
    if operation == "CopyObject":
        return _checked_copy(decision, headers, has_key_service, region)
    if operation in _MULTIPART:
        return _multipart(operation, decision, target, headers, has_key_service=has_key_service,
                          body_exists=body_exists, region=region)
    if operation not in ("PutObject", "GetObject", "HeadObject"):
        raise _not_here(operation, decision)
    obj = _own_object(operation, decision, has_key_service, region)
    if "partNumber" in _query_names(target):
        raise NotImplementedHere("reading one part (partNumber) of an object of an encrypted dataset is not "
                                 "supported; read it with a Range")
    if operation == "PutObject":
        if "x-amz-write-offset-bytes" in headers:
            raise NotImplementedHere("appending to an object (x-amz-write-offset-bytes) is not supported on an "
                                     "encrypted dataset: each object is sealed whole")
        chunked = chunked_upload(headers)
        return Seal(obj, _plaintext_length(headers, body_exists, chunked), _digests(headers), chunked)
    if operation == "HeadObject":
        if "Range" in headers:
            raise NotImplementedHere("a HEAD with a Range is not supported on an encrypted dataset")
        return OpenHead(obj)
    ranges = headers.getall("Range", ())
    if len(ranges) > 1:
        raise BadRequest("more than one Range header", code="InvalidArgument")
    if not ranges:
        return Open(obj, None, None)
    return Open(obj, parse_range(ranges[0]), ranges[0])


def _bucket_level(decision: Decision, operation: str) -> bool:
    """A request on a bucket itself (create, delete, its configuration), which moves no object bytes: it passes
    through. An operation the proxy does not know (``Unknown``) is not one of them: it could write objects."""
    return operation != "Unknown" and not decision.deciding.access.resource.key


_MULTIPART = frozenset({"CreateMultipartUpload", "UploadPart", "UploadPartCopy", "CompleteMultipartUpload",
                        "AbortMultipartUpload", "ListParts"})
_COPY_RANGE = re.compile(r"bytes=([0-9]{1,19})-([0-9]{1,19})")   # ASCII digits only, as S3 reads them


def _multipart(operation: str, decision: Decision, target: str, headers: MultiMapping[str], *,
               has_key_service: bool, body_exists: bool, region: str | None) -> Plan | None:
    """A step of a multipart upload whose object is in an encrypted dataset (or whose part is copied from one)."""
    if operation == "UploadPartCopy":
        copy = _checked_copy(decision, headers, has_key_service, region)
        number = part_number_of(target)
        upload = token_of(target) if copy.dest_encrypted else None
        return CopyPart(copy.obj, upload, number, copy, _copy_range(headers))
    if operation in ("AbortMultipartUpload", "ListParts") and not _reads_other_sources(decision) and (
            encrypted_target(decision) is None
            or (operation == "AbortMultipartUpload" and upload_of(target) is None)):
        # Its object is in no encrypted dataset; or an abort of the storage server's own id: as it is.
        return None
    obj = _own_object(operation, decision, has_key_service, region)
    if operation == "CreateMultipartUpload":
        return CreateUpload(obj)
    upload = token_of(target)
    if operation == "UploadPart":
        chunked = chunked_upload(headers)
        return SealPart(obj, upload, part_number_of(target), _plaintext_length(headers, body_exists, chunked),
                        _digests(headers), chunked)
    if operation == "CompleteMultipartUpload":
        return CompleteUpload(obj, upload)
    if operation == "ListParts":
        return ListUploadParts(obj, upload)
    return AbortUpload(obj, upload)


def _own_object(operation: str, decision: Decision, has_key_service: bool, region: str | None) -> ObjectRef:
    """The object of an encrypted dataset the request seals or opens (itself, nothing elsewhere), once this
    proxy may: it has the key service of the object's region."""
    obj = encrypted_target(decision)
    if obj is None or _reads_other_sources(decision):
        raise _not_here(operation, decision)
    if not has_key_service:
        raise KeyServiceUnavailable(
            f"dataset {obj.dataset!r} requires encryption, and this proxy has no key service configured "
            f"(encryption.key_service); nothing was forwarded"
        )
    _check_region(obj, region)
    return obj


def _copy_range(headers: MultiMapping[str]) -> tuple[int, int] | None:
    """An UploadPartCopy's x-amz-copy-source-range, as S3 reads it (bytes=FIRST-LAST, both given)."""
    values = headers.getall("x-amz-copy-source-range", ())
    if not values:
        return None
    match = _COPY_RANGE.fullmatch(values[0].strip()) if len(values) == 1 else None
    if match is None or int(match[1]) > int(match[2]):
        raise BadRequest("x-amz-copy-source-range must be one range bytes=FIRST-LAST", code="InvalidArgument")
    return int(match[1]), int(match[2])


def _not_here(operation: str, decision: Decision) -> NotImplementedHere:
    """The refusal of an operation not carried out on encrypted data."""
    resource = decision.deciding.access.resource
    why = (f"{operation} is not carried out on an encrypted dataset by this proxy: it would store plaintext or "
           "hand out ciphertext as the object (docs/encryption.md lists what is supported)")
    return NotImplementedHere(why, resource=str(resource))


def _check_region(obj: ObjectRef, region: str | None) -> None:
    """Another region's object is never sealed nor opened with this region's key service (a dry-run may
    forward a request for it; a proxy without a `region` has no region's key service)."""
    if region is None or obj.region != region:
        raise KeyReleaseRefused(
            f"dataset {obj.dataset!r} is encrypted with the key service of {obj.region}, and this proxy is "
            f"{'of no region' if region is None else 'of ' + region}: only a proxy of {obj.region} seals or opens "
            "its objects; nothing was forwarded", resource=f"s3://{obj.bucket}/{obj.key}")


def _reads_other_sources(decision: Decision) -> bool:
    """Whether the request moves data to or from another place than its target (a copy's source, a restore's
    output): only a copy is carried out on encrypted data (`_copy`)."""
    return any(check.purpose not in _OWN_PURPOSES for check in decision.checks)


_OWN_PURPOSES = frozenset({Purpose.TARGET, Purpose.NESTED_DATASET})
_COPY_PURPOSES = frozenset({Purpose.TARGET, Purpose.COPY_SOURCE, Purpose.COPY_SOURCE_FOR_DESTINATION})
_DIRECTIVES = {"COPY": False, "REPLACE": True}


def _ref(check: Check) -> tuple[ObjectRef, bool]:
    resource = check.access.resource
    encrypted = check.encryption not in (None, Encryption.NONE)
    return (ObjectRef(check.dataset or "", check.region or "", resource.bucket, resource.key,
                      check.encryption is Encryption.MIGRATING), encrypted)


def _directive(headers: MultiMapping[str], name: str) -> bool:
    values: list[str] = headers.getall(name, [])
    if not values:
        return False
    if len(values) > 1 or values[0].strip().upper() not in _DIRECTIVES:
        raise BadRequest(f"{name} must be COPY or REPLACE", code="InvalidArgument")
    return _DIRECTIVES[values[0].strip().upper()]


def _checked_copy(decision: Decision, headers: MultiMapping[str], has_key_service: bool, region: str | None) -> Copy:
    """A copy (or a part's) from or into an encrypted dataset, once this proxy may open and seal its ends."""
    if not has_key_service:
        raise KeyServiceUnavailable("a copy from or into an encrypted dataset needs the region's key service, "
                                    "and this proxy has none configured (encryption.key_service)")
    copy = _copy(decision, headers)
    for ref, encrypted in ((copy.source, copy.source_encrypted), (copy.obj, copy.dest_encrypted)):
        if encrypted:
            _check_region(ref, region)
    return copy


def _copy(decision: Decision, headers: MultiMapping[str]) -> Copy:
    """CopyObject from or into an encrypted dataset, carried out by the proxy (never server-side: the storage
    server cannot open the source nor seal the destination)."""
    if any(check.purpose not in _COPY_PURPOSES for check in decision.checks):
        raise NotImplementedHere("this copy also sends data elsewhere; it is not carried out on encrypted data")
    target = next(check for check in decision.checks if check.purpose is Purpose.TARGET)
    source = next((check for check in decision.checks if check.purpose is Purpose.COPY_SOURCE), None)
    if source is None:
        raise NotImplementedHere("a copy whose source was not judged is not carried out on encrypted data")
    for name in headers:
        if name.lower().startswith("x-amz-copy-source-server-side-encryption"):
            raise NotImplementedHere("a copy from an SSE-C source is not carried out on encrypted data")
    values = headers.getall("x-amz-copy-source", ())
    if len(values) != 1:
        raise BadRequest("a copy names exactly one x-amz-copy-source", code="InvalidArgument")
    # The header as the caller wrote it ([/]BUCKET/KEY[?versionId=V], the key percent-encoded), already
    # checked by the request reader: read path-style, it names the object the policy judged.
    source_target = "/" + values[0].removeprefix("/")
    source_ref, source_encrypted = _ref(source)
    dest_ref, dest_encrypted = _ref(target)
    return Copy(source_ref, source_encrypted, dest_ref, dest_encrypted, source_target,
                _directive(headers, "x-amz-metadata-directive"), _directive(headers, "x-amz-tagging-directive"))


def _query_names(target: str) -> frozenset[str]:
    query = target.partition("?")[2]
    return frozenset(pair.partition("=")[0] for pair in query.split("&") if pair)


def parse_range(value: str) -> Wanted:
    """A single byte range as S3 reads it; anything else is refused rather than read another way."""
    match = _RANGE.fullmatch(value.strip())
    if match is None:
        raise BadRequest(f"the Range {value!r} is not one byte range (bytes=A-B, bytes=A- or bytes=-N); only those "
                         "are read on an encrypted dataset", code="InvalidArgument")
    first, last, suffix = match.groups()
    if suffix is not None:
        if int(suffix) == 0:
            raise RangeNotSatisfiable("the range bytes=-0 selects nothing")
        return Wanted(suffix=int(suffix))
    start, end = int(first), int(last) if last else None
    if end is not None and end < start:
        raise BadRequest(f"the Range {value!r} ends before it starts", code="InvalidArgument")
    return Wanted(start, end)


def stored_range(wanted: Wanted) -> str:
    """The Range to ask the storage server for: whole segments covering `wanted` (a suffix: enough of them)."""
    stored = SEGMENT_SIZE + TAG_SIZE
    if wanted.suffix is not None:
        return f"bytes=-{(-(-wanted.suffix // SEGMENT_SIZE) + 1) * stored}"
    first = wanted.start // SEGMENT_SIZE
    if wanted.end is None:
        return f"bytes={first * stored}-"
    return f"bytes={first * stored}-{(wanted.end // SEGMENT_SIZE + 1) * stored - 1}"


def _plaintext_length(headers: MultiMapping[str], body_exists: bool, chunked: Chunked | None) -> int:
    if chunked is not None:   # aws-chunked: the plaintext's length is the decoded one
        return chunked.decoded_length
    length = headers.get("Content-Length")
    if length is None:
        if body_exists:
            raise LengthRequired("an upload to an encrypted dataset must state its Content-Length")
        return 0
    return int(length)   # aiohttp's parser has checked that it is one decimal number


def _digests(headers: MultiMapping[str]) -> dict[str, bytes]:
    for name in UNCHECKABLE_CHECKSUMS:
        if name in headers:
            raise NotImplementedHere(
                f"{name} cannot be checked by this proxy on an encrypted dataset (the storage server only sees "
                "ciphertext): use CRC32, SHA-1 or SHA-256")
    for name in (*_DIGEST_HEADERS, "x-amz-content-sha256"):
        if len(headers.getall(name, ())) > 1:
            # Only one is checked here; which one a storage server would have read is anyone's guess.
            raise BadRequest(f"the {name} header is sent more than once", code="InvalidDigest")
    digests: dict[str, bytes] = {}
    for name, algorithm in _DIGEST_HEADERS.items():
        value = headers.get(name)
        if value is None:
            continue
        try:
            digests[algorithm] = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(f"the {name} header is not base64", code="InvalidDigest") from None
    payload = headers.get("X-Amz-Content-SHA256", "").strip()
    if _SHA256_HEX.fullmatch(payload):
        digests["payload-sha256"] = bytes.fromhex(payload)
    return digests
