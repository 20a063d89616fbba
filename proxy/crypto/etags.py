"""The ETag callers see for an encrypted object: the stored one, marked as not the MD5 of its bytes.

The storage server's ETag of an object the proxy encrypted is the MD5 of the
ciphertext. Clients read a 32-hex-digit ETag as the MD5 of what they wrote
and compare (rclone deletes an upload whose ETag differs from its own MD5:
"corrupted on transfer"). The proxy has checked the caller's Content-MD5 and
checksums against the plaintext itself, so it answers with the stored ETag
followed by ``-bwenc``: still a strong, unique validator of this version of the
object, and no longer one a client mistakes for an MD5 (as S3 clients already
do for a multipart ETag ``<hex>-<parts>``). A caller's ``If-Match`` /
``If-None-Match`` naming such an ETag is turned back into the stored one
before it is forwarded.
"""

from __future__ import annotations

MARK = "-bwenc"


def presented(stored: str) -> str:
    """The ETag to show for an encrypted object whose stored ETag is `stored` (quoted or not)."""
    value = stored.strip()
    if len(value) >= 2 and value.endswith('"'):
        return f"{value[:-1]}{MARK}\""
    return value + MARK


def stored_conditions(value: str) -> str:
    """A caller's ``If-Match`` / ``If-None-Match`` value with the mark taken off each entity tag."""
    return value.replace(MARK + '"', '"')
