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
remembers the values it accepted (`proxy.storage.host.AcceptedHosts`).
"""

from __future__ import annotations

from functools import lru_cache

from proxy.azure.names import account_problem
from proxy.config import AzureSettings
from proxy.errors import BadRequest
from proxy.storage.host import HOST_CACHE_SIZE, AcceptedHosts, Headers, HostRefusals, endpoint_sets, read_host, the_host
from proxy.storage.uri import INVALID_URI


class AccountReader:
    """Reads the account a Host names under one configuration (None: path-style, the account is in the path)."""

    def __init__(self, settings: AzureSettings, *, cache_size: int = HOST_CACHE_SIZE) -> None:
        self._names, self._ips = endpoint_sets(settings.endpoints)
        self._suffixes = tuple(sorted({s.lower().strip(".") for s in settings.account_host_suffixes}))
        self._accepted = AcceptedHosts(self._read_host, cache_size)

    def account(self, headers: Headers) -> str | None:
        """The account the request's Host names, or None for a path-style endpoint. Raises `BadRequest`."""
        return self._accepted(the_host(headers, "account"))

    def _read_host(self, host: str) -> str | None:
        return self.read(host, "the Host header")

    def read(self, original: str, where: str, *, code: str = INVALID_URI) -> str | None:
        """The account `original` (a ``host[:port]``) names, or None for a path-style endpoint.

        `where` names the value in error messages; `code` is the refusal's error code.
        """
        refusals = _refusals(where, code)
        name = read_host(original, self._names, self._ips, refusals)
        if name is None:
            return None
        # Exactly one label in front of a suffix: "a.b.blob.core.windows.net" names no account.
        account, dot, rest = name.partition(".")
        if dot and rest in self._suffixes:
            reason = account_problem(account)
            if reason:
                raise BadRequest(f"{reason}: {account!r} (from {where})", code=code, resource=account)
            return account
        raise refusals.refuse(refusals.unknown, original)


@lru_cache(maxsize=8)
def _refusals(where: str, code: str) -> HostRefusals:
    # One per place a host is read from (the Host header, a copy source): built once, not per request.
    return HostRefusals(
        invalid=f"{where} does not name a valid host",
        bad_port=f"{where} has an invalid port",
        unknown=(f"{where} names a storage host this proxy does not know ({{host!r}}): it is neither a "
                 "configured Azure endpoint nor ACCOUNT.<configured account host suffix>"),
        code=code,
    )
