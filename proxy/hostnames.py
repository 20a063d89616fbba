"""Host values as both storage APIs read them: one Host header, its syntax, the configured endpoints.

S3 (`proxy.s3.host`) and Azure Blob (`proxy.azure.host`) each read a name out
of the Host (a bucket, an account) in their own way, but on the same ground:
exactly one Host and none of the headers some servers prefer over it (or over
the request line), the
same host-name and IP-literal syntax, and endpoints compared by name or by
canonical IP address. That ground is here, once.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

from multidict import CIMultiDict, CIMultiDictProxy

from proxy.errors import BadRequest
from proxy.tags import ROUTING_HINTS_DROPPED

Headers = CIMultiDictProxy[str] | CIMultiDict[str]

# Headers that carry another idea of the host; a server that honours them could
# pick another bucket or account than the one the proxy judged.
AMBIGUOUS_HOST_HEADERS = ("X-Forwarded-Host", "Forwarded")
# More headers that front proxies, gateways and frameworks read as the request's
# real host or URL (IIS URL Rewrite, Symfony, Spring, nginx and Envoy set-ups):
# a server or middlebox behind the proxy that honours one would serve another
# bucket, account or key than the one judged. Refused, as X-Forwarded-Host is.
# (Headers that only say the scheme or port a front proxy was reached on are not
# refused but dropped before forwarding: see `proxy.tags.ROUTING_HINTS_DROPPED`.)
AMBIGUOUS_ROUTING_HEADERS = (
    "X-Original-Host", "X-Host", "X-Forwarded-Server", "X-HTTP-Host-Override", "X-Proxy-Host",
    "X-Original-URL", "X-Rewrite-URL", "X-Original-URI", "X-Forwarded-URI", "X-Forwarded-Path",
    "X-Forwarded-Prefix", "X-Envoy-Original-Path", "X-Envoy-Original-Host",
)
# Words that, in any other header's name, say it carries a host, URL, path or method (X-Real-Host,
# X-Forwarded-Hostname, X-Request-URI, X-Original-Path, X-Script-Prefix, X-Original-Method ...):
# the lists above are the names known to be honoured somewhere, these are the rest of the family,
# refused alike. No header of either storage API has such a word in its name; metadata headers
# (x-amz-meta-*, x-ms-meta-*) are the caller's own names, which no server routes by.
ROUTING_WORDS = frozenset({"host", "hostname", "url", "uri", "path", "prefix", "method"})
_METADATA_PREFIXES = ("x-amz-meta-", "x-ms-meta-")
# Accepted Host values remembered by one reader.
HOST_CACHE_SIZE = 1024

IPV6_HOST = re.compile(r"\[([0-9a-f:.]+)\](?::(\d{1,5}))?")
NAME_HOST = re.compile(r"([a-z0-9_.-]{1,253})(?::(\d{1,5}))?")
LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
DIGITS = re.compile(r"\d+")


@lru_cache(maxsize=16)
def endpoint_sets(endpoints: tuple[str, ...]) -> tuple[frozenset[str], frozenset[str]]:
    """(host names, IP addresses in canonical form), built once per configuration."""
    names: set[str] = set()
    ips: set[str] = set()
    for endpoint in endpoints:
        text = endpoint.lower().strip("[]")
        try:
            ips.add(str(ipaddress.ip_address(text)))
        except ValueError:
            names.add(text)
    return frozenset(names), frozenset(ips)


def the_host(headers: Headers, named: str) -> str:
    """The one Host value. Raises `BadRequest` for none, several, or a competing header.

    `named` is what the Host names in this API ("bucket", "account"), for the message.
    """
    for name in AMBIGUOUS_HOST_HEADERS:
        if name in headers:
            raise BadRequest(f"the {name} header is not accepted: the {named} is read from Host alone")
    for name in AMBIGUOUS_ROUTING_HEADERS:
        if name in headers:
            raise BadRequest(
                f"the {name} header is not accepted: the {named} and the object are read from Host and "
                "the request line alone"
            )
    for name in headers:
        lowered = name.lower()
        # Scheme hints (X-Url-Scheme) are dropped before forwarding, not refused.
        if lowered == "host" or lowered.startswith(_METADATA_PREFIXES) or lowered in ROUTING_HINTS_DROPPED:
            continue
        if not ROUTING_WORDS.isdisjoint(lowered.replace("_", "-").split("-")):
            raise BadRequest(
                f"the {name} header is not accepted: its name says it carries a host, URL, path or method, "
                f"which a server behind the proxy could honour; the {named} and the object are read from Host "
                "and the request line alone"
            )
    values = headers.getall("Host", ())
    if not values:
        raise BadRequest("the Host header is required")
    if len(values) > 1:
        raise BadRequest("the Host header is repeated")
    return values[0]
