"""Which storage account a request is for: from the Host (``ACCOUNT.blob.core.windows.net``) or the path.

Azure names the account in the host name (``myaccount.blob.core.windows.net``);
the emulator (Azurite) and other endpoints reached by address name it in the
first path segment (``http://127.0.0.1:10000/devstoreaccount1/...``). The
proxy must agree with the storage server on which applies, so it accepts a
Host only when it is one of the configured path-style endpoints
(`AzureSettings.endpoints`) or exactly one account label in front of a
configured suffix (`AzureSettings.account_host_suffixes`); anything else is
refused, as are headers some servers prefer over Host.

The same reading serves the host of a copy source URL (`proxy.azure.copysource`).
A client sends the same few Host values over and over, so `AccountReader`
remembers the values it accepted (bounded, oldest forgotten first).
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

from multidict import CIMultiDict, CIMultiDictProxy

from proxy.azure.names import account_problem
from proxy.config import AzureSettings
from proxy.errors import BadRequest

# Headers that carry another idea of the host.
_AMBIGUOUS_HOST_HEADERS = ("X-Forwarded-Host", "Forwarded")
HOST_CACHE_SIZE = 1024

_IPV6_HOST = re.compile(r"\[([0-9a-f:.]+)\](?::(\d{1,5}))?")
_NAME_HOST = re.compile(r"([a-z0-9_.-]{1,253})(?::(\d{1,5}))?")
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
_DIGITS = re.compile(r"\d+")

Headers = CIMultiDictProxy[str] | CIMultiDict[str]


@lru_cache(maxsize=16)
def _endpoint_sets(endpoints: tuple[str, ...]) -> tuple[frozenset[str], frozenset[str]]:
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


class AccountReader:
    """Reads the account a Host names under one configuration (None: path-style, the account is in the path)."""

    def __init__(self, settings: AzureSettings, *, cache_size: int = HOST_CACHE_SIZE) -> None:
        self._names, self._ips = _endpoint_sets(settings.endpoints)
        self._suffixes = tuple(sorted({s.lower().strip(".") for s in settings.account_host_suffixes}))
        self._cache_size = cache_size
        self._accepted: dict[str, str | None] = {}

    def account(self, headers: Headers) -> str | None:
        """The account the request's Host names, or None for a path-style endpoint. Raises `BadRequest`."""
        host = the_host(headers)
        accepted = self._accepted
        if host in accepted:
            return accepted[host]
        account = self.read(host, "the Host header")
        if len(accepted) >= self._cache_size:
            del accepted[next(iter(accepted))]
        accepted[host] = account
        return account

    def read(self, original: str, where: str, *, code: str = "InvalidUri") -> str | None:
        """The account `original` (a ``host[:port]``) names, or None for a path-style endpoint.

        `where` names the value in error messages; `code` is the refusal's error code.
        """
        if not original.isascii():
            raise _invalid(where, code)
        host = original.lower()
        literal = _IPV6_HOST.fullmatch(host)
        if literal:
            _check_port(literal.group(2), where, code)
            try:
                address = str(ipaddress.IPv6Address(literal.group(1)))
            except ValueError:
                raise _invalid(where, code) from None
            if address in self._ips:
                return None
            raise _unknown(original, where, code)
        match = _NAME_HOST.fullmatch(host)
        if not match:
            raise _invalid(where, code)
        _check_port(match.group(2), where, code)
        name = match.group(1)
        labels = name.split(".")
        if not all(_LABEL.fullmatch(label) for label in labels):
            raise _invalid(where, code)
        if _DIGITS.fullmatch(labels[-1]):
            try:
                address = str(ipaddress.IPv4Address(name))
            except ValueError:
                raise _invalid(where, code) from None
            if address in self._ips:
                return None
            raise _unknown(original, where, code)
        if name in self._names:
            return None
        # Exactly one label in front of a suffix: "a.b.blob.core.windows.net" names no account.
        account, dot, rest = name.partition(".")
        if dot and rest in self._suffixes:
            reason = account_problem(account)
            if reason:
                raise BadRequest(f"{reason}: {account!r} (from {where})", code=code, resource=account)
            return account
        raise _unknown(original, where, code)


def the_host(headers: Headers) -> str:
    """The one Host value. Raises `BadRequest` for none, several, or a competing header."""
    for name in _AMBIGUOUS_HOST_HEADERS:
        if name in headers:
            raise BadRequest(f"the {name} header is not accepted: the account is read from Host alone")
    values = headers.getall("Host", ())
    if not values:
        raise BadRequest("the Host header is required")
    if len(values) > 1:
        raise BadRequest("the Host header is repeated")
    return values[0]


def _check_port(port: str | None, where: str, code: str) -> None:
    if port is not None and int(port) > 65535:
        raise BadRequest(f"{where} has an invalid port", code=code)


def _invalid(where: str, code: str) -> BadRequest:
    return BadRequest(f"{where} does not name a valid host", code=code)


def _unknown(host: str, where: str, code: str) -> BadRequest:
    return BadRequest(
        f"{where} names a storage host this proxy does not know ({host!r}): it is neither a configured "
        "Azure endpoint nor ACCOUNT.<configured account host suffix>",
        code=code,
    )
