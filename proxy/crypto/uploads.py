"""The upload ids callers see for a multipart upload into an encrypted dataset, and where requests carry them.

A multipart upload's parts may arrive at any proxy process of the region, in
any order, so what sealing a part needs travels with every request instead
of living in one process: the caller is given a token in place of the
storage server's UploadId::

    bwe2.<base64url(the storage server's upload id)>.<base64url(the upload key, wrapped)>.<base64url(seal)>

Any proxy of the region unwraps the upload key (bound to the object, as the
object's metadata entry says; `proxy.crypto.envelope.parted_binding`) and
seals the part; the storage server only ever sees its own id, put back in
the request-target before the request is signed. A token is not secret:
the wrapped key opens only for this object, and only through this region's
key service. The seal (an HMAC of the storage server's id under the upload
key) ties the id to that key: without it a caller could pair a key the proxy
made for the object with the id of another upload of it, one the proxy never
started (begun before the dataset was encrypted, or past the proxy), and
have the proxy complete its plaintext parts as the object.

A raw id (one the storage server made, as ListMultipartUploads shows them)
cannot seal a part: on an encrypted dataset it may only be aborted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from typing import NamedTuple
from urllib.parse import quote, unquote

from proxy.crypto.parts import MAX_PARTS
from proxy.errors import BadRequest, NoSuchUpload

PREFIX = "bwe2."
_B64 = re.compile(r"[A-Za-z0-9_-]+")
_SEAL = re.compile(r"[A-Za-z0-9_-]{22}")   # 16 bytes, base64url
_SEAL_LABEL = b"bailiwick-upload-id\0"
_PART_NUMBER = re.compile(r"[1-9][0-9]{0,4}")
# SigV4's canonical query encodes every byte but these: the id goes into the target as it is signed.
_QUERY_SAFE = "-_.~"


class UploadToken(NamedTuple):
    """What a caller holds for a multipart upload into an encrypted dataset."""

    upstream_id: str      # the storage server's UploadId
    wrapped: str          # the upload key as the region's key service wrapped it
    seal: str             # `_seal` of upstream_id under the upload key

    @classmethod
    def made(cls, upstream_id: str, wrapped: str, key: bytes) -> UploadToken:
        """The token of a new upload, sealed with its (unwrapped) upload key."""
        return cls(upstream_id, wrapped, _seal(key, upstream_id))

    def check_seal(self, key: bytes) -> None:
        """Refuses the token unless its id is the one its upload key (`key`, unwrapped) was made for."""
        if not hmac.compare_digest(self.seal, _seal(key, self.upstream_id)):
            raise NoSuchUpload("the upload id is not one this proxy gave for this upload (its seal does not match "
                               "the storage server's id it names)")

    def encode(self) -> str:
        return f"{PREFIX}{_b64(self.upstream_id)}.{_b64(self.wrapped)}.{self.seal}"


def decode_upload_id(value: str) -> UploadToken | None:
    """The token `value` is, or None if it is not one (a raw id, or anything not written by `encode`)."""
    if not value.startswith(PREFIX):
        return None
    fields = value[len(PREFIX):].split(".")
    if len(fields) != 3 or not _SEAL.fullmatch(fields[2]):
        return None
    try:
        upstream_id, wrapped = (_unb64(field) for field in fields[:2])
    except ValueError:
        return None
    if not upstream_id or not wrapped:
        return None
    return UploadToken(upstream_id, wrapped, fields[2])


def query_value(target: str, name: str) -> str | None:
    """The percent-decoded value of the query parameter `name` (matched exactly, as S3 selects operations),
    or None. A repeated one is refused: which one the storage server would read is anyone's guess."""
    found = [pair.partition("=")[2] for pair in target.partition("?")[2].split("&")
             if pair.partition("=")[0] == name]
    if len(found) > 1:
        raise BadRequest(f"the query parameter {name} is given more than once", code="InvalidArgument")
    if not found:
        return None
    try:
        return unquote(found[0], errors="strict")
    except UnicodeDecodeError:
        raise BadRequest(f"the query parameter {name} is not UTF-8", code="InvalidArgument") from None


def upload_of(target: str) -> UploadToken | None:
    """The token the request names as its uploadId; None for a raw id (which only an abort may name)."""
    value = query_value(target, "uploadId")
    if not value:
        raise NoSuchUpload("the request names no upload (uploadId)")
    return decode_upload_id(value)


def token_of(target: str) -> UploadToken:
    """The token the request names as its uploadId; a raw id is refused."""
    token = upload_of(target)
    if token is None:
        raise NoSuchUpload(
            "the upload id is not one this proxy gave: on an encrypted dataset only the ids answered by "
            "CreateMultipartUpload through the proxy upload, list or complete parts (the storage server's own ids, "
            "as ListMultipartUploads shows them, can only be aborted)")
    return token


def part_number_of(target: str) -> int:
    """The request's partNumber, as S3 accepts it: 1 to 10000."""
    value = query_value(target, "partNumber") or ""
    if not _PART_NUMBER.fullmatch(value) or int(value) > MAX_PARTS:
        raise BadRequest(f"Part number must be an integer between 1 and {MAX_PARTS}, inclusive",
                         code="InvalidArgument")
    return int(value)


def with_upload_id(target: str, upstream_id: str) -> str:
    """`target` naming the storage server's upload id instead of the caller's token (`query_encoded`)."""
    path, _, query = target.partition("?")
    pairs = [f"uploadId={query_encoded(upstream_id)}" if pair.partition("=")[0] == "uploadId" else pair
             for pair in query.split("&")]
    return f"{path}?{'&'.join(pairs)}"


def _seal(key: bytes, upstream_id: str) -> str:
    digest = hmac.new(key, _SEAL_LABEL + upstream_id.encode("utf-8"), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def query_encoded(upstream_id: str) -> str:
    """The storage server's upload id as a query value, encoded as SigV4's canonical query encodes it (so what
    is signed is what is sent)."""
    return quote(upstream_id, safe=_QUERY_SAFE)


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode("utf-8")).rstrip(b"=").decode("ascii")


def _unb64(field: str) -> str:
    if not _B64.fullmatch(field):
        raise ValueError("not base64url")
    try:
        text = base64.urlsafe_b64decode(field + "=" * (-len(field) % 4)).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("not base64url of UTF-8") from None
    if _b64(text) != field:
        raise ValueError("not written canonically")
    return text
