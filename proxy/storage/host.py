"""Host values as both storage APIs read them: one Host header, its syntax, the configured endpoints.

S3 (`proxy.s3.host`) and Azure Blob (`proxy.azure.host`) each read a name out
of the Host (a bucket, an account) in their own way, but on the same ground:
exactly one Host and none of the headers some servers prefer over it (or over
the request line) (`the_host`), the same host-name and IP-literal syntax, and
endpoints compared by name or by canonical IP address (`read_host`). That
ground is here, once, with the table in which each API's reader remembers
the Host values it accepted (`AcceptedHosts`).

Reading a Host value costs more than the rest of parsing a request, and a
client sends the same few values over and over; the answer for a value never
changes under one configuration. So only accepted values are remembered (a
bounded table, oldest forgotten first): a refused value is read, and refused,
anew.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Generic, TypeVar

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
# Header names found harmless by `the_host` (any API, any configuration: the check is the name's alone),
# remembered up to this many; a name past that is checked every time it comes.
_ACCEPTED_NAMES: set[str] = set()
_ACCEPTED_NAMES_SIZE = 1024

IPV6_HOST = re.compile(r"\[([0-9a-f:.]+)\](?::(\d{1,5}))?")
NAME_HOST = re.compile(r"([a-z0-9_.-]{1,253})(?::(\d{1,5}))?")
LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
DIGITS = re.compile(r"\d+")

T = TypeVar("T")


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
    # Whether a header's name is refused depends on the name alone, and clients send the same few names
    # on every request: names already found harmless are not looked at again.
    accepted = _ACCEPTED_NAMES
    for name in headers:
        if name not in accepted:
            _check_names(headers, named)
            break
    values = headers.getall("Host", ())
    if not values:
        raise BadRequest("the Host header is required")
    if len(values) > 1:
        raise BadRequest("the Host header is repeated")
    return values[0]


def _check_names(headers: Headers, named: str) -> None:
    """Refuse a header the storage server could take the host, URL, path or method from; remember the names
    found harmless (never one of the ambiguous headers, which are refused by name whatever their words)."""
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
        if not (lowered == "host" or lowered.startswith(_METADATA_PREFIXES) or lowered in ROUTING_HINTS_DROPPED) \
                and not ROUTING_WORDS.isdisjoint(lowered.replace("_", "-").split("-")):
            raise BadRequest(
                f"the {name} header is not accepted: its name says it carries a host, URL, path or method, "
                f"which a server behind the proxy could honour; the {named} and the object are read from Host "
                "and the request line alone"
            )
        if len(_ACCEPTED_NAMES) < _ACCEPTED_NAMES_SIZE:
            # Not ambiguous by name either: the loops above found none of those in the headers.
            _ACCEPTED_NAMES.add(name)


@dataclass(frozen=True, slots=True)
class HostRefusals:
    """What `read_host` answers a value it refuses with, in one API's words."""

    invalid: str  # not a host name or IP literal
    bad_port: str  # a port above 65535
    # Neither a configured endpoint nor a name under one; formatted with ``host``, the value as sent.
    unknown: str
    code: str | None = None  # the `BadRequest` code; None: its default
    # Names that must not carry a port (AWS S3's: moto reads "s3.amazonaws.com:PORT" as a bucket's
    # name), and the refusal, formatted with ``host``; checked before the name's labels.
    portless: re.Pattern[str] | None = None
    with_port: str = ""

    def refuse(self, message: str, host: str | None = None) -> BadRequest:
        """The refusal `message` says; `host` fills in a message that names the value."""
        return BadRequest(message if host is None else message.format(host=host), code=self.code)


def read_host(
    original: str, names: frozenset[str], ips: frozenset[str], refusals: HostRefusals,
) -> str | None:
    """None when a ``host[:port]`` value is a configured endpoint itself; else its name, in lower case.

    `names` and `ips` are the endpoints (`endpoint_sets`). A name returned is
    valid host-name syntax and not an IP address; what it names under an
    endpoint is the API's business. Raises `BadRequest` for anything else.
    """
    if not original.isascii():
        raise refusals.refuse(refusals.invalid)
    host = original.lower()
    literal = IPV6_HOST.fullmatch(host)
    if literal:
        _check_port(literal.group(2), refusals)
        try:
            address = str(ipaddress.IPv6Address(literal.group(1)))
        except ValueError:
            raise refusals.refuse(refusals.invalid) from None
        if address in ips:
            return None
        raise refusals.refuse(refusals.unknown, original)
    match = NAME_HOST.fullmatch(host)
    if not match:
        raise refusals.refuse(refusals.invalid)
    _check_port(match.group(2), refusals)
    name = match.group(1)
    if match.group(2) is not None and refusals.portless is not None and refusals.portless.fullmatch(name):
        raise refusals.refuse(refusals.with_port, original)
    labels = name.split(".")
    if not all(LABEL.fullmatch(label) for label in labels):
        raise refusals.refuse(refusals.invalid)
    if DIGITS.fullmatch(labels[-1]):
        # A numeric last label is an IPv4 address (or a name some resolvers read as one).
        try:
            address = str(ipaddress.IPv4Address(name))
        except ValueError:
            raise refusals.refuse(refusals.invalid) from None
        if address in ips:
            return None
        raise refusals.refuse(refusals.unknown, original)
    return None if name in names else name


def _check_port(port: str | None, refusals: HostRefusals) -> None:
    if port is not None and int(port) > 65535:
        raise refusals.refuse(refusals.bad_port)


class AcceptedHosts(Generic[T]):
    """`read` for Host values, remembering what the accepted ones named (bounded, oldest forgotten first)."""

    def __init__(self, read: Callable[[str], T], size: int = HOST_CACHE_SIZE) -> None:
        self._read = read
        self._size = size
        # Host value, exactly as sent -> what it names.
        self._accepted: dict[str, T] = {}

    @property
    def remembered(self) -> tuple[str, ...]:
        """The Host values remembered, oldest first."""
        return tuple(self._accepted)

    def __call__(self, host: str) -> T:
        accepted = self._accepted
        if host in accepted:
            return accepted[host]
        named = self._read(host)
        if self._size:
            if len(accepted) >= self._size:
                del accepted[next(iter(accepted))]
            accepted[host] = named
        return named
