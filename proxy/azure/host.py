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

from proxy.azure.names import account_problem
from proxy.config import AzureSettings
from proxy.errors import BadRequest
from proxy.hostnames import DIGITS, HOST_CACHE_SIZE, IPV6_HOST, LABEL, NAME_HOST, Headers, endpoint_sets
from proxy.hostnames import the_host as _the_host


class AccountReader:
    """Reads the account a Host names under one configuration (None: path-style, the account is in the path)."""

    def __init__(self, settings: AzureSettings, *, cache_size: int = HOST_CACHE_SIZE) -> None:
        self._names, self._ips = endpoint_sets(settings.endpoints)
        self._suffixes = tuple(sorted({s.lower().strip(".") for s in settings.account_host_suffixes}))
        self._cache_size = cache_size
        self._accepted: dict[str, str | None] = {}

    def account(self, headers: Headers) -> str | None:
        """The account the request's Host names, or None for a path-style endpoint. Raises `BadRequest`."""
        host = _the_host(headers, "account")
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
        literal = IPV6_HOST.fullmatch(host)
        if literal:
            _check_port(literal.group(2), where, code)
            try:
                address = str(ipaddress.IPv6Address(literal.group(1)))
            except ValueError:
                raise _invalid(where, code) from None
            if address in self._ips:
                return None
            raise _unknown(original, where, code)
        match = NAME_HOST.fullmatch(host)
        if not match:
            raise _invalid(where, code)
        _check_port(match.group(2), where, code)
        name = match.group(1)
        labels = name.split(".")
        if not all(LABEL.fullmatch(label) for label in labels):
            raise _invalid(where, code)
        if DIGITS.fullmatch(labels[-1]):
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
