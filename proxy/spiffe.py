"""SPIFFE IDs read strictly, as the SPIFFE ID specification writes them.

A SPIFFE ID names a workload: ``spiffe://trust-domain/path``. The proxy maps
IDs to jurisdictions (`proxy.identity.workload`), so an ID that could be read
two ways (upper case, percent-encoding, ``..`` segments, a port, a query) must
never be read at all: it is refused, never normalised. The rules
(SPIFFE ID spec, section 2): scheme ``spiffe``; a trust domain of
``[a-z0-9._-]`` only; a path of non-empty segments of ``[a-zA-Z0-9._-]``,
none of them ``.`` or ``..``, no trailing ``/``; no userinfo, port, query or
fragment; at most 2048 bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SCHEME = "spiffe://"
MAX_ID_BYTES = 2048
MAX_TRUST_DOMAIN_BYTES = 255
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")
_SEGMENT = re.compile(r"[a-zA-Z0-9._-]+")


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """A parsed SPIFFE ID: its trust domain and its path segments (none for the trust domain's own ID)."""

    trust_domain: str
    segments: tuple[str, ...]

    def __str__(self) -> str:
        return SCHEME + self.trust_domain + "".join("/" + segment for segment in self.segments)


def problem(text: str) -> str | None:
    """Why `text` is not a SPIFFE ID, or None when it is one."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        return f"longer than {MAX_ID_BYTES} bytes"
    if not text.startswith(SCHEME):
        return "does not start with spiffe:// (the scheme is lower case)"
    rest = text[len(SCHEME):]
    trust_domain, slash, path = rest.partition("/")
    if not trust_domain:
        return "has no trust domain"
    if len(trust_domain) > MAX_TRUST_DOMAIN_BYTES:
        return f"a trust domain longer than {MAX_TRUST_DOMAIN_BYTES} bytes"
    if not _TRUST_DOMAIN.fullmatch(trust_domain):
        return ("its trust domain may hold only lower-case letters, digits, '.', '-' and '_' "
                "(no port, user, query, fragment or percent-encoding)")
    if not slash:
        return None
    for segment in path.split("/"):
        if not segment:
            return "has an empty path segment (or a trailing '/')"
        if segment in (".", ".."):
            return "has a '.' or '..' path segment"
        if not _SEGMENT.fullmatch(segment):
            return ("its path may hold only letters, digits, '.', '-' and '_' between '/' "
                    "(no query, fragment or percent-encoding)")
    return None


def parse(text: str) -> SpiffeId | None:
    """The SPIFFE ID `text` is, or None when it is not one exactly."""
    if problem(text) is not None:
        return None
    trust_domain, _, path = text[len(SCHEME):].partition("/")
    return SpiffeId(trust_domain, tuple(path.split("/")) if path else ())
