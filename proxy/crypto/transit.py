"""OpenBao / HashiCorp Vault Transit as the region's key service (through `hvac`).

The key-encryption key is a Transit key of type ``aes256-gcm96`` created with
``derived=true``: Transit then derives a key per *derivation context*, and
bailiwick's context is the base64 of the SHA-256 of the object's context
bytes, so a wrapped key opens only for the object it was made for. A key that
is not derived would ignore the context silently: it is refused (at `probe`
and at first use) with a message that says how to create a suitable one.

Requests: ``POST <mount>/datakey/plaintext/<key>`` (bits 256) to make a data
key, ``POST <mount>/decrypt/<key>`` to release it, ``POST <mount>/rewrap/<key>``
to move it to the key's latest version, ``GET <mount>/keys/<key>`` to probe.
Each carries the release's `Justification` as the headers
``X-Bailiwick-Decision-Id``, ``X-Bailiwick-Jurisdiction``,
``X-Bailiwick-Dataset`` and ``X-Bailiwick-Policy-Version``, which the
server's audit devices record once the operator lists them
(``sys/config/auditing/request-headers/<name>``). A value that is not
printable ASCII is percent-encoded (UTF-8), as a header must be ASCII. The
justification cannot be part of the derivation context: that must be the
same at every read of an object, and each read is a decision of its own.

`token` is a string, or a function called on every request (a token read
from a rotated file). Each calling thread has its own HTTP session: the proxy
calls from a thread pool, and a `requests` session is not meant to be shared.
"""

from __future__ import annotations

import base64
import os
import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import hvac.adapters
import hvac.exceptions
import requests

from proxy.crypto.keyservice import (
    DATA_KEY_BYTES,
    DataKey,
    Justification,
    checked_data_key,
    context_digest,
)
from proxy.errors import ConfigError, KeyReleaseRefused, KeyServiceUnavailable

KEY_TYPE = "aes256-gcm96"
HEADERS = ("X-Bailiwick-Decision-Id", "X-Bailiwick-Jurisdiction", "X-Bailiwick-Dataset",
           "X-Bailiwick-Policy-Version")
# The server's answer "no": a bad request (wrong context, altered or foreign ciphertext, a deleted key),
# a token that may not, a key or mount that is not there, an operation the key does not support.
_REFUSALS = (hvac.exceptions.InvalidRequest, hvac.exceptions.Unauthorized, hvac.exceptions.Forbidden,
             hvac.exceptions.InvalidPath, hvac.exceptions.UnsupportedOperation)
_DOING = {"keys": "reading the key", "datakey/plaintext": "making a data key", "decrypt": "releasing a data key",
          "rewrap": "rewrapping a data key"}
_MULTIERROR = re.compile(r"\d+ errors? occurred:")
_PRINTABLE = frozenset(chr(c) for c in range(0x20, 0x7F)) - {"%"}


def header_value(value: str) -> str:
    """`value` as it can travel in an HTTP header: printable ASCII kept, anything else percent-encoded.

    Spaces at either end are encoded too (a header value cannot begin or end with one).
    """
    encoded = "".join(c if c in _PRINTABLE else quote(c, safe="") for c in value)
    lead = len(encoded) - len(encoded.lstrip(" "))
    body = encoded[lead:]
    trail = len(body) - len(body.rstrip(" "))
    return "%20" * lead + body[:len(body) - trail] + "%20" * trail


def justification_headers(why: Justification) -> dict[str, str]:
    return {name: header_value(value) for name, value in zip(HEADERS, why, strict=True)}


def derivation_context(context: bytes) -> str:
    return base64.b64encode(context_digest(context)).decode("ascii")


def key_problem(data: Mapping[str, Any]) -> str | None:
    """Why a Transit key, as ``GET keys/<key>`` describes it, cannot serve as bailiwick's KEK (None: it can)."""
    if data.get("type") != KEY_TYPE:
        return f"its type is {data.get('type')!r}, not {KEY_TYPE}"
    if not data.get("derived"):
        return ("it is not derived, so it would ignore the object's context: create the key with derived=true "
                f"(bao write -f transit/keys/NAME type={KEY_TYPE} derived=true)")
    for operation in ("encryption", "decryption", "derivation"):
        if not data.get(f"supports_{operation}", False):
            return f"it does not support {operation}"
    return None


class TransitKeyService:
    """A Transit key of an OpenBao or Vault server, derived, type aes256-gcm96."""

    kind = "transit"

    def __init__(self, address: str, key: str, *, token: str | Callable[[], str], mount: str = "transit",
                 ca_bundle: Path | None = None, timeout_seconds: float = 5.0) -> None:
        if not address.startswith(("http://", "https://")):
            raise ConfigError(f"the Transit address {address!r} must be an http:// or https:// URL")
        if timeout_seconds <= 0:
            raise ConfigError(f"the Transit timeout must be positive (timeout_seconds={timeout_seconds})")
        self.address = address.rstrip("/")
        self.key = key
        self.mount = mount.strip("/")
        self.key_ref = f"transit:{self.mount}/{key}"
        self._token = token
        self._verify: str | bool = str(ca_bundle) if ca_bundle is not None else True
        self._timeout = timeout_seconds
        self._local = threading.local()
        self._lock = threading.Lock()
        self._adapters: list[hvac.adapters.JSONAdapter] = []
        self._checked = False   # the key was seen derived: no need to look again
        self._where = f"Transit key {self.key_ref}"   # callers see this: not where the server is

    def __repr__(self) -> str:
        return f"TransitKeyService({self.key_ref} at {self.address})"   # never the token

    def _path(self, operation: str) -> str:
        return f"/v1/{quote(self.mount)}/{operation}/{quote(self.key, safe='')}"

    def _adapter(self) -> hvac.adapters.JSONAdapter:
        mine: tuple[int, hvac.adapters.JSONAdapter] | None = getattr(self._local, "adapter", None)
        if mine is not None and mine[0] == os.getpid():
            return mine[1]
        # New in this thread, or in a forked worker (whose copy of the parent's connections is not its own).
        # token=None: the token goes in each request's headers, so that a rotated one is picked up.
        adapter = hvac.adapters.JSONAdapter(base_uri=self.address, token=None, verify=self._verify,
                                            timeout=self._timeout)
        self._local.adapter = (os.getpid(), adapter)
        with self._lock:
            self._adapters.append(adapter)
        return adapter

    def _call(self, method: str, operation: str, body: dict[str, Any] | None = None,
              why: Justification | None = None) -> dict[str, Any]:
        """The JSON ``data`` of the answer; the server's refusals and failures mapped to bailiwick's."""
        token = self._token() if callable(self._token) else self._token
        if not (token.isascii() and token.isprintable()):
            # Not sendable as a header as it is (http.client raises outside `requests`' errors, or sends
            # Latin-1 bytes the server reads otherwise): a token file with a stray character.
            raise KeyServiceUnavailable(f"{self._where}: the token is not printable ASCII (check the token's "
                                        "file or variable)")
        headers = {"X-Vault-Token": token, **(justification_headers(why) if why is not None else {})}
        doing = _DOING[operation]
        try:
            answer = self._adapter().request(method, self._path(operation), headers=headers, json=body)
        except _REFUSALS as error:
            raise KeyReleaseRefused(f"{self._where} refused {doing}: {_reason(error)}") from None
        except hvac.exceptions.VaultError as error:
            raise KeyServiceUnavailable(f"{self._where} failed {doing}: {_reason(error)}") from None
        except requests.exceptions.Timeout:
            raise KeyServiceUnavailable(f"{self._where} did not answer in {self._timeout:g} s ({doing})") from None
        except requests.exceptions.RequestException as error:
            raise KeyServiceUnavailable(f"{self._where} cannot be reached: {type(error).__name__}") from None
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, dict):
            raise KeyServiceUnavailable(f"{self._where} answered without data ({doing})")
        return data

    def _check_key(self) -> None:
        """Refuse a key that is not derived, once: a derived key stays derived."""
        if self._checked:
            return
        problem = key_problem(self._call("GET", "keys"))
        if problem is not None:
            raise KeyReleaseRefused(f"{self._where} cannot be used: {problem}")
        self._checked = True

    def generate(self, context: bytes, why: Justification) -> DataKey:
        self._check_key()
        data = self._call("POST", "datakey/plaintext",
                          {"context": derivation_context(context), "bits": 8 * DATA_KEY_BYTES}, why)
        try:
            plaintext = base64.b64decode(data["plaintext"], validate=True)
            wrapped = str(data["ciphertext"])
        except (KeyError, TypeError, ValueError):
            raise KeyServiceUnavailable(f"{self._where} answered without a usable data key") from None
        return DataKey(checked_data_key(plaintext, self._where), wrapped)

    def unwrap(self, wrapped: str, context: bytes, why: Justification) -> bytes:
        self._check_key()
        data = self._call("POST", "decrypt", {"ciphertext": wrapped, "context": derivation_context(context)}, why)
        try:
            plaintext = base64.b64decode(data["plaintext"], validate=True)
        except (KeyError, TypeError, ValueError):
            raise KeyServiceUnavailable(f"{self._where} answered without a usable data key") from None
        return checked_data_key(plaintext, self._where)

    def rewrap(self, wrapped: str, context: bytes) -> str:
        self._check_key()
        data = self._call("POST", "rewrap", {"ciphertext": wrapped, "context": derivation_context(context)})
        if not isinstance(data.get("ciphertext"), str):
            raise KeyServiceUnavailable(f"{self._where} answered without a wrapped key (rewrapping)")
        return str(data["ciphertext"])

    def probe(self) -> str | None:
        try:
            problem = key_problem(self._call("GET", "keys"))
        except (KeyReleaseRefused, KeyServiceUnavailable) as error:
            return error.message
        return None if problem is None else f"{self._where} cannot be used: {problem}"

    def close(self) -> None:
        with self._lock:
            adapters, self._adapters = self._adapters, []
        for adapter in adapters:
            adapter.close()


_PLAIN = {
    hvac.exceptions.InvalidRequest: "the request was refused (400)",
    hvac.exceptions.Unauthorized: "the token is not accepted (401)",
    hvac.exceptions.Forbidden: "the token may not do this (403)",
    hvac.exceptions.InvalidPath: "no such key or mount (404)",
    hvac.exceptions.UnsupportedOperation: "the operation is not supported (405)",
    hvac.exceptions.RateLimitExceeded: "too many requests (429)",
    hvac.exceptions.InternalServerError: "internal server error (500)",
    hvac.exceptions.VaultNotInitialized: "the server is not initialized (501)",
    hvac.exceptions.BadGateway: "bad gateway (502)",
    hvac.exceptions.VaultDown: "the server is sealed or down (503)",
}


def _reason(error: hvac.exceptions.VaultError) -> str:
    """The server's own words (its ``errors``), else the status in plain words; never hvac's URL suffix."""
    errors = getattr(error, "errors", None)
    if isinstance(errors, list) and errors:
        # The server wraps some errors in Go's multierror text ("1 error occurred:\n\t* permission denied\n\n"):
        # only the items are kept, on one line, as they go into an S3 error message and an audit line.
        items = [line.strip().removeprefix("* ").strip() for e in errors for line in str(e).splitlines()]
        said = "; ".join(item for item in items if item and not _MULTIERROR.fullmatch(item))
        if said:
            return said
    return _PLAIN.get(type(error), f"unexpected answer ({type(error).__name__})")
