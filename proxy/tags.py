"""The headers bailiwick forwards: what it strips from the caller, what it adds.

The storage server must be able to trust that every ``X-Bailiwick-*`` header it
sees was set by the proxy. So every caller-sent header that could be read as
one (any letter case, ``_`` for ``-``) is removed first, together with
hop-by-hop headers, any header the caller named in ``Connection`` (a classic
way to get a proxy to strip its own headers), and the header that carried the
caller's token. Then the proxy sets its tags (docs/operations.md, "Tags on forwarded
requests"), optionally with a signed ``X-Bailiwick-Tag``.

`check_connection`, `request_headers` and `add_tags` run on every request,
in that order (`proxy.evaluate`), so what they need is built once here (the
dropped-name set, the tag-name prefixes, the tag header names) and each
header name is lowered at most once per function.
"""

from __future__ import annotations

import re
import string
import time
from collections.abc import Set
from dataclasses import dataclass
from urllib.parse import quote

import jwt
from multidict import CIMultiDict, CIMultiDictProxy, istr

from proxy.domain import Caller
from proxy.errors import BadRequest

TAG_PREFIX = "x-bailiwick-"

# RFC 9110 section 7.6.1 plus the legacy ones proxies have always dropped.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
    "upgrade", "proxy-authorization", "proxy-authenticate",
})
# The proxy answers "Expect: 100-continue" itself, after the decision.
REQUEST_ONLY_DROPPED = frozenset({"expect"})
# Headers that tell a server which scheme or port a front proxy was reached on. They
# name no bucket, account or key, but a gateway behind the proxy may build URLs or
# redirects from them; load balancers (AWS ALB, Envoy, Traefik) add them to every
# request, so they are dropped, not refused. Headers naming another host or URL are
# refused instead (`proxy.storage.host.AMBIGUOUS_ROUTING_HEADERS`).
ROUTING_HINTS_DROPPED = frozenset({
    "x-forwarded-proto", "x-forwarded-port", "x-forwarded-scheme", "x-forwarded-protocol", "x-forwarded-ssl",
    "x-url-scheme", "x-scheme", "front-end-https",
})
SUBJECT_SAFE = "!#$&'()*+,/:;=?@[]~"


# Tokens a caller may put in its Connection header. Any other token names an
# end-to-end header the caller wants a proxy to drop after it has been checked
# (Host, a copy source, a content encoding ...): that is refused, never obeyed.
CONNECTION_TOKENS = frozenset({"close", "keep-alive"}) | HOP_BY_HOP


# Headers that ask to switch this connection to another protocol (WebSocket, h2c):
# the proxy speaks HTTP/1.1 requests only, and never forwards what follows a switch.
UPGRADE_HEADERS = ("Upgrade", "HTTP2-Settings")
# User metadata names are opaque to the proxy and to the storage APIs alike; "_" in
# them is everyday (Azure's must be C# identifiers: my_key, not my-key).
_UNDERSCORE_ALLOWED_PREFIXES = ("x-amz-meta-", "x-ms-meta-")

# A lower-cased name is a tag's when it starts with TAG_PREFIX once "_" is read as "-":
# one of these four spellings (the prefix's two "-" each written "-" or "_").
_TAG_PREFIXES = ("x-bailiwick-", "x_bailiwick-", "x-bailiwick_", "x_bailiwick_")
# The caller's certificate as a mesh proxy saw it (`proxy.identity.xfcc`): for this proxy only, never forwarded.
IDENTITY_HEADERS_DROPPED = frozenset({"x-forwarded-client-cert"})
_ALWAYS_DROPPED = HOP_BY_HOP | REQUEST_ONLY_DROPPED | ROUTING_HINTS_DROPPED | IDENTITY_HEADERS_DROPPED
# _ALWAYS_DROPPED with each set of token headers seen: the resolver hands out only a few
# distinct (and reused) sets, so the union is made once for each, not once a request; and the
# header names found to pass under it (whether a name passes depends on the name alone), so that
# the names a client sends on every request are looked at once, up to _KEPT_SIZE of them.
_DROPPED_WITH: dict[frozenset[str], tuple[frozenset[str], set[str]]] = {}
_DROPPED_WITH_SIZE = 64
_KEPT_SIZE = 256
_NOTHING: frozenset[str] = frozenset()

# istr names: multidict folds their case once, here, instead of on every request.
_JURISDICTION = istr("X-Bailiwick-Jurisdiction")
_SUBJECT = istr("X-Bailiwick-Subject")
_DECISION = istr("X-Bailiwick-Decision")
_POLICY = istr("X-Bailiwick-Policy")
_TAG = istr("X-Bailiwick-Tag")
# A subject `quote` returns unchanged: every character is one it never encodes
# (letters, digits, "_.-~") or one of SUBJECT_SAFE. Checking that is cheaper than quoting.
_QUOTED_AS_IS = re.compile("[" + re.escape(string.ascii_letters + string.digits + "_.-~" + SUBJECT_SAFE) + "]*")


def check_connection(headers: CIMultiDictProxy[str]) -> None:
    """Refuse a request whose Connection header names anything but hop-by-hop headers.

    Names of the proxy's own tags are tolerated: they are stripped and set anew anyway.
    Also refused: protocol upgrades (``Upgrade``, ``HTTP2-Settings``, ``Connection:
    upgrade``), and header names with ``_`` (other than tags, ``x-amz-meta-*`` and ``x-ms-meta-*``):
    CGI, WSGI and some servers fold ``_`` and ``-`` together, so ``x_amz_copy_source``
    or ``X_HTTP_Method_Override`` would be read there as headers the proxy judges.
    """
    named = _connection_named(headers)
    if "upgrade" in named or not headers.keys().isdisjoint(UPGRADE_HEADERS):
        raise BadRequest("protocol upgrades (WebSocket, h2c) are not supported")
    for name in headers:
        # Lowering neither adds nor removes "_": only names with one need a closer look.
        if "_" not in name:
            continue
        lower = name.lower()
        if not lower.startswith(_TAG_PREFIXES) and not lower.startswith(_UNDERSCORE_ALLOWED_PREFIXES):
            raise BadRequest(
                f'the header name "{name}" contains "_"; some servers read it as "{lower.replace("_", "-")}"'
            )
    for token in named:
        if token not in CONNECTION_TOKENS and not token.startswith(_TAG_PREFIXES):
            raise BadRequest(
                f'the Connection header names "{token}", which is not a hop-by-hop header; '
                "the proxy does not drop end-to-end headers on a caller's request"
            )


def _connection_named(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> Set[str]:
    """The lower-cased names a Connection header lists (most requests have none)."""
    values = headers.getall("Connection", ())
    if not values:
        return _NOTHING
    named: set[str] = set()
    for value in values:
        named.update(token.strip().lower() for token in value.split(",") if token.strip())
    return named


def request_headers(incoming: CIMultiDictProxy[str], token_headers: frozenset[str]) -> CIMultiDict[str]:
    """The caller's headers as they may be forwarded, before the proxy's tags are added.

    `check_connection` must have accepted the request first: only hop-by-hop
    headers and the proxy's own tags can be named in its Connection header, so
    nothing that was checked (Host above all) is dropped here.
    """
    known = _DROPPED_WITH.get(token_headers)
    if known is None:
        known = (_ALWAYS_DROPPED | token_headers, set())
        if len(_DROPPED_WITH) < _DROPPED_WITH_SIZE:
            _DROPPED_WITH[token_headers] = known
    dropped, kept = known
    named = _connection_named(incoming)
    if named:
        dropped = dropped | named
        kept = set()   # what passes depends on this Connection header too: nothing remembered
    # Copy everything, then take out what may not pass: most requests lose one header (the
    # token's) or none, and a copy is one call. multidict matches names by their
    # str.lower(), so popall removes exactly the entries whose lowered name is `lower`.
    out: CIMultiDict[str] = CIMultiDict(incoming)
    for name in incoming:
        if name in kept:   # a name that passed before under the same dropped names: it passes
            continue
        lower = name.lower()
        if lower in dropped or lower.startswith(_TAG_PREFIXES):
            out.popall(name, None)
        elif len(kept) < _KEPT_SIZE:
            kept.add(name)
    return out


def response_headers(upstream: CIMultiDictProxy[str]) -> CIMultiDict[str]:
    """The storage server's response headers as they may be passed to the caller."""
    dropped = HOP_BY_HOP | _connection_named(upstream)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in upstream.items():
        if name.lower() not in dropped:
            out.add(name, value)
    return out


@dataclass(frozen=True, slots=True)
class TagSigner:
    """Signs ``X-Bailiwick-Tag``: a compact HS256 JWS the storage side can verify with the shared key."""

    key: bytes
    ttl_seconds: int

    def sign(self, claims: dict[str, str], method: str, host: str, path: str) -> str:
        now = int(time.time())
        payload: dict[str, object] = {
            **claims, "method": method, "host": host, "path": path, "iat": now, "exp": now + self.ttl_seconds,
        }
        return jwt.encode(payload, self.key, algorithm="HS256")


def add_tags(
    headers: CIMultiDict[str],
    *,
    caller: Caller,
    decision_id: str,
    policy_version: str,
    method: str,
    path: str,
    signer: TagSigner | None,
) -> None:
    """Set the proxy's own tags on a forwarded request (after `request_headers` stripped the caller's)."""
    subject = caller.subject
    headers[_JURISDICTION] = caller.jurisdiction
    # A subject is the identity provider's text; percent-encode anything that is not a
    # plain visible ASCII character so it can never break or add a header line.
    headers[_SUBJECT] = subject if _QUOTED_AS_IS.fullmatch(subject) else quote(subject, safe=SUBJECT_SAFE)
    headers[_DECISION] = decision_id
    headers[_POLICY] = policy_version
    if signer is not None:
        claims = {
            "jurisdiction": caller.jurisdiction,
            "subject": subject,
            "decision": decision_id,
            "policy": policy_version,
        }
        # Host names the bucket in virtual-hosted requests, so the tag binds it too.
        headers[_TAG] = signer.sign(claims, method, headers.get("Host", ""), path)
