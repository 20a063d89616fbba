"""Which bucket the Host header names: path-style or virtual-hosted-style addressing.

S3 takes the bucket either from the first path segment (Host is the endpoint
itself) or from the Host (``<bucket>.<endpoint>``). The proxy must agree with
the storage server on which one applies, so it accepts only hosts it is
configured for (`S3Settings.endpoints`) and refuses everything else, including
headers that some servers and load balancers prefer over Host.

Reading a Host value (its syntax, an IP literal, the endpoint it falls
under, the bucket name in front of it) costs more than the rest of parsing
a request, and a client sends the same few Host values over and over. So
`HostReader`, built once per configuration, remembers the values it
accepted and what they named (a bounded table, oldest forgotten first).
Only accepted values are remembered: the answer for a value never changes
under one configuration, and a refused value is read, and refused, anew.
The headers beside Host (repeated Host, ``X-Forwarded-Host``, ``Forwarded``)
are checked on every request.
"""

from __future__ import annotations

import ipaddress

from proxy.config import S3Settings
from proxy.errors import BadRequest
from proxy.hostnames import DIGITS, HOST_CACHE_SIZE, IPV6_HOST, LABEL, NAME_HOST, Headers, endpoint_sets, the_host
from proxy.s3.names import bucket_name_problem


def bucket_from_host(headers: Headers, settings: S3Settings) -> str | None:
    """The bucket a virtual-hosted-style Host names, or None for a path-style request.

    Raises `BadRequest` for a missing, repeated or malformed Host, a Host that
    is not a configured endpoint (or a valid bucket under one), and for
    ``X-Forwarded-Host`` or ``Forwarded`` headers.
    """
    names, ips = endpoint_sets(settings.endpoints)
    return _read_host(the_host(headers, "bucket"), names, ips)


class HostReader:
    """`bucket_from_host` for one configuration, remembering the Host values it accepted."""

    def __init__(self, settings: S3Settings, *, cache_size: int = HOST_CACHE_SIZE) -> None:
        self._names, self._ips = endpoint_sets(settings.endpoints)
        self._cache_size = cache_size
        # Host value, exactly as sent -> the bucket it names (None: path-style).
        self._accepted: dict[str, str | None] = {}

    def bucket(self, headers: Headers) -> str | None:
        """As `bucket_from_host`: the bucket the Host names, or None. Raises `BadRequest`."""
        host = the_host(headers, "bucket")
        accepted = self._accepted
        if host in accepted:
            return accepted[host]
        bucket = _read_host(host, self._names, self._ips)
        if len(accepted) >= self._cache_size:
            del accepted[next(iter(accepted))]
        accepted[host] = bucket
        return bucket



def _read_host(original: str, names: frozenset[str], ips: frozenset[str]) -> str | None:
    """The bucket a Host value names under these endpoints, or None. Raises `BadRequest`."""
    if not original.isascii():
        raise BadRequest("the Host header is not a valid host name")
    host = original.lower()

    literal = IPV6_HOST.fullmatch(host)
    if literal:
        _check_port(literal.group(2))
        try:
            address = str(ipaddress.IPv6Address(literal.group(1)))
        except ValueError:
            raise BadRequest("the Host header is not a valid host name") from None
        if address in ips:
            return None
        raise _not_an_endpoint(original)

    match = NAME_HOST.fullmatch(host)
    if not match:
        raise BadRequest("the Host header is not a valid host name")
    _check_port(match.group(2))
    name = match.group(1)
    labels = name.split(".")
    if not all(LABEL.fullmatch(label) for label in labels):
        raise BadRequest("the Host header is not a valid host name")
    if DIGITS.fullmatch(labels[-1]):
        # A numeric last label is an IPv4 address (or a name some resolvers read as one).
        try:
            address = str(ipaddress.IPv4Address(name))
        except ValueError:
            raise BadRequest("the Host header is not a valid host name") from None
        if address in ips:
            return None
        raise _not_an_endpoint(original)

    if name in names:
        return None
    # Leftmost dot first: the longest endpoint that is a suffix wins.
    dot = name.find(".")
    while dot != -1:
        if name[dot + 1 :] in names:
            bucket = original[:dot]  # the original letters, so upper case is refused, not folded
            reason = bucket_name_problem(bucket)
            if reason:
                raise BadRequest(f"{reason}: {bucket!r} (from the Host header)", resource=bucket)
            return bucket
        dot = name.find(".", dot + 1)
    raise _not_an_endpoint(original)


def _check_port(port: str | None) -> None:
    if port is not None and int(port) > 65535:
        raise BadRequest("the Host header has an invalid port")


def _not_an_endpoint(host: str) -> BadRequest:
    return BadRequest(f"the Host header {host!r} is not a configured S3 endpoint")
