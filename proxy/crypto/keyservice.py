"""The region's key service: what makes, releases and re-wraps the data keys of encrypted objects.

Every encrypted object carries its own data key, wrapped by the key-encryption
key (KEK) of the region's key service and bound to a *context* (an opaque
encoding of the dataset, region, bucket and object key the integrator builds):
a wrapped key moved to another object, or shown to another region's service,
does not unwrap. Three kinds implement `KeyService`: OpenBao/Vault Transit
(`proxy.crypto.transit`), a PKCS#11 HSM (`proxy.crypto.pkcs11`), and a local
key file for development (`proxy.crypto.keyfile`).

Each release carries a `Justification` (the decision that allowed it) to the
key service, whose own audit records it where the service can: the key
service's operators, not only bailiwick's, see why each key left.

All methods block (network or token I/O): the proxy calls them on a thread
pool, so every implementation is safe to call from several threads at once.
Failures are `KeyReleaseRefused` (the service answered no) or
`KeyServiceUnavailable` (it did not answer), with messages that name the
service and the key and never carry key material.

`CachingKeyService` keeps released data keys briefly (bounded in number and
age) so that repeated reads of one object need no round trip.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple, Protocol

from proxy.errors import KeyReleaseRefused

DATA_KEY_BYTES = 32   # AES-256


class Justification(NamedTuple):
    """Why a key is released: sent to the key service so that its own audit records it."""

    decision_id: str
    jurisdiction: str
    dataset: str
    policy_version: str


class DataKey(NamedTuple):
    """A fresh data key: `plaintext` seals the object, `wrapped` travels in the object's metadata."""

    plaintext: bytes   # 32 bytes (AES-256); never logged, never in a repr
    wrapped: str       # ASCII, e.g. Transit's "vault:v1:..."

    def __repr__(self) -> str:
        return f"DataKey(plaintext=<{len(self.plaintext)} bytes>, wrapped={self.wrapped!r})"


class KeyService(Protocol):
    """The region's key service. Every method is thread-safe and may block."""

    kind: str      # "transit" | "pkcs11" | "file"

    @property
    def key_ref(self) -> str:
        """The key-encryption key's stable name, without a version (a key file's changes with its key)."""
        ...

    def generate(self, context: bytes, why: Justification) -> DataKey:
        """A fresh data key, wrapped bound to `context`."""
        ...

    def unwrap(self, wrapped: str, context: bytes, why: Justification) -> bytes:
        """The data key, only if `context` is the one it was wrapped with."""
        ...

    def rewrap(self, wrapped: str, context: bytes) -> str:
        """The same data key, wrapped under the current version of the key-encryption key."""
        ...

    def probe(self) -> str | None:
        """None when the service is reachable and the key usable; otherwise why not, in plain words."""
        ...

    def close(self) -> None:
        ...


def context_digest(context: bytes) -> bytes:
    """SHA-256 of the context: what a service that needs it short binds the wrapped key to."""
    return hashlib.sha256(context).digest()


def b64url(data: bytes) -> str:
    """`data` as base64url without padding (RFC 4648, section 5): ASCII that fits object metadata."""
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def from_b64url(text: str) -> bytes:
    """The bytes of unpadded base64url `text`; `ValueError` for any character outside its alphabet."""
    # `altchars` would still accept "+" and "/", and trailing bits are ignored: one spelling only.
    if not _B64URL.fullmatch(text):
        raise ValueError("not base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None
    if b64url(raw) != text:
        raise ValueError("not base64url written canonically")
    return raw


_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def checked_data_key(plaintext: bytes, service: str) -> bytes:
    """`plaintext` if it has the length of a data key; anything else was not wrapped by bailiwick."""
    if len(plaintext) != DATA_KEY_BYTES:
        raise KeyReleaseRefused(f"{service} released {len(plaintext)} bytes, not a {DATA_KEY_BYTES}-byte data key: "
                                "the wrapped key was not made by bailiwick")
    return plaintext


class CachingKeyService:
    """`inner`, with released data keys kept at most `ttl_seconds` and at most `max_keys` of them.

    Only `unwrap` is cached, keyed by (wrapped key, context); the least recently
    used entry goes first when full. `generate`, `rewrap` and `probe` pass
    through. `on_lookup(hit)` is called once per `unwrap` (the metrics hook).

    A release answered from the cache is not seen by the key service's own
    audit (bailiwick's audit line still records it), and disabling the key at
    the service takes effect for a cached key only when its entry expires:
    keep `ttl_seconds` short. Failures are never cached.
    """

    def __init__(self, inner: KeyService, max_keys: int, ttl_seconds: float, *,
                 clock: Callable[[], float] = time.monotonic,
                 on_lookup: Callable[[bool], None] | None = None) -> None:
        if max_keys < 1:
            raise ValueError(f"the key cache holds at least one key (max_keys={max_keys})")
        if ttl_seconds <= 0:
            raise ValueError(f"the key cache's TTL must be positive (ttl_seconds={ttl_seconds})")
        self.inner = inner
        self.kind = inner.kind
        self.max_keys = max_keys
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._on_lookup = on_lookup
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, bytes], tuple[float, bytes]] = OrderedDict()

    def __repr__(self) -> str:
        return f"CachingKeyService({self.key_ref}, max_keys={self.max_keys}, ttl_seconds={self.ttl_seconds})"

    @property
    def key_ref(self) -> str:
        return self.inner.key_ref   # never a copy: a key file's reference changes when its key does

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def generate(self, context: bytes, why: Justification) -> DataKey:
        return self.inner.generate(context, why)

    def unwrap(self, wrapped: str, context: bytes, why: Justification) -> bytes:
        return self.unwrap_cached(wrapped, context, why)[0]

    def unwrap_cached(self, wrapped: str, context: bytes, why: Justification) -> tuple[bytes, bool]:
        """`unwrap`, and whether the key came from the cache (then the key service was not asked)."""
        entry = (wrapped, context)
        now = self._clock()
        with self._lock:
            found = self._entries.get(entry)
            if found is not None and now - found[0] < self.ttl_seconds:
                self._entries.move_to_end(entry)
                hit: bytes | None = found[1]
            else:
                if found is not None:
                    del self._entries[entry]
                hit = None
        if self._on_lookup is not None:
            self._on_lookup(hit is not None)
        if hit is not None:
            return hit, True
        # Outside the lock: a slow key service must not hold up hits on other keys.
        plaintext = self.inner.unwrap(wrapped, context, why)
        with self._lock:
            self._entries[entry] = (now, plaintext)
            self._entries.move_to_end(entry)
            while len(self._entries) > self.max_keys:
                self._entries.popitem(last=False)
        return plaintext, False

    def rewrap(self, wrapped: str, context: bytes) -> str:
        return self.inner.rewrap(wrapped, context)

    def probe(self) -> str | None:
        return self.inner.probe()

    def clear(self) -> None:
        """Forget every released key (e.g. once the region's key is frozen)."""
        with self._lock:
            self._entries.clear()

    def close(self) -> None:
        self.clear()
        self.inner.close()
