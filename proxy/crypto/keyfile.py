"""A local key file as the key service: for development and the demo only.

The key-encryption key is 32 random bytes written as 64 hexadecimal
characters on one line (`write_key_file` makes one, mode 0600). It sits beside
the proxy, so whoever reaches the proxy's disk holds every object's key: that
is why it is refused unless the configuration says `allow_insecure`.

A data key is wrapped with AES-256-GCM (`cryptography`) under the file's key,
with the SHA-256 of the context as associated data:
``filev1:`` + base64url without padding of (12-byte nonce || ciphertext || 16-byte tag).

The file is looked at on every use and read again when it changed (same
inode, modification time and size test as `proxy.watchedfile`); unlike a
watched setting, a file that has gone or cannot be read refuses every release
at once: deleting the file is the development kill switch. There is no key
service to audit releases: bailiwick's own audit line is the only record.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from proxy.crypto.keyservice import (
    DATA_KEY_BYTES,
    DataKey,
    Justification,
    b64url,
    checked_data_key,
    context_digest,
    from_b64url,
)
from proxy.errors import ConfigError, KeyReleaseRefused
from proxy.watchedfile import Stamp, stamp

log = logging.getLogger("bailiwick.encryption")
PREFIX = "filev1:"
NONCE_BYTES = 12


def write_key_file(path: Path) -> None:
    """A fresh key file at `path` (created with mode 0600; refused if it exists)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(os.urandom(DATA_KEY_BYTES).hex() + "\n")


def read_key_file(path: Path) -> bytes:
    """The key in `path`; `ConfigError` (naming the path) when it is not 64 hexadecimal characters."""
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not ASCII text"
        raise ConfigError(f"the key file {path} cannot be read: {reason}") from None
    lines = text.splitlines()
    if len(lines) != 1 or len(lines[0].strip()) != 2 * DATA_KEY_BYTES:
        raise ConfigError(f"the key file {path} must hold one line of {2 * DATA_KEY_BYTES} hexadecimal characters "
                          "(32 random bytes); write one with `write_key_file`")
    try:
        return bytes.fromhex(lines[0].strip())
    except ValueError:
        raise ConfigError(f"the key file {path} must hold {2 * DATA_KEY_BYTES} hexadecimal characters "
                          "(0-9, a-f) and nothing else") from None


def key_id(key: bytes) -> str:
    """The key's public name: 16 hexadecimal characters of its SHA-256 (not reversible to the key)."""
    return hashlib.sha256(key).hexdigest()[:16]


class KeyFileService:
    """The key service of a local key file. Refused (`ConfigError`) unless `allow_insecure`."""

    kind = "file"

    def __init__(self, path: Path, *, allow_insecure: bool) -> None:
        if not allow_insecure:
            raise ConfigError(
                "a local key file is for development and the demo only: the key sits beside the proxy, so "
                "whoever reaches the proxy's disk can open every object; use a Transit or PKCS#11 key service, "
                "or set encryption.key_file.allow_insecure: true to use it anyway")
        self.path = path
        self._lock = threading.Lock()
        self._stamp: Stamp | None = None
        self._key = b""
        self.key_ref = ""   # "file:" + the key's id, set by every (re)load
        with self._lock:
            try:
                self._load()   # a missing or malformed file at start is a configuration error
            except OSError as error:
                raise ConfigError(f"the key file {path} cannot be read: {error.strerror}") from None

    def __repr__(self) -> str:
        return f"KeyFileService({self.path})"   # never the key

    def _load(self) -> bytes:
        now = stamp(self.path)
        if now != self._stamp:
            self._key, self._stamp = read_key_file(self.path), now
            self.key_ref = f"file:{key_id(self._key)}"
        return self._key

    def _current(self) -> bytes:
        """The key as the file holds it now; a missing or unreadable file refuses (the kill switch)."""
        with self._lock:
            try:
                return self._load()
            except OSError as error:
                log.warning("the key file %s cannot be read: %s", self.path, error.strerror)
                raise KeyReleaseRefused(f"the key file cannot be read ({error.strerror}): no key is released") \
                    from None
            except ConfigError as error:
                log.warning("%s", error)
                raise KeyReleaseRefused("the key file does not hold a key (64 hexadecimal characters): no key is "
                                        "released") from None

    def generate(self, context: bytes, why: Justification) -> DataKey:
        plaintext = os.urandom(DATA_KEY_BYTES)
        return DataKey(plaintext, self._wrap(self._current(), plaintext, context))

    def unwrap(self, wrapped: str, context: bytes, why: Justification) -> bytes:
        return self._unwrap(self._current(), wrapped, context)

    def rewrap(self, wrapped: str, context: bytes) -> str:
        key = self._current()
        return self._wrap(key, self._unwrap(key, wrapped, context), context)

    def probe(self) -> str | None:
        try:
            self._current()
        except KeyReleaseRefused as error:
            return error.message
        return None

    def close(self) -> None:
        pass

    @staticmethod
    def _wrap(key: bytes, plaintext: bytes, context: bytes) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(key).encrypt(nonce, plaintext, context_digest(context))
        return PREFIX + b64url(nonce + sealed)

    def _unwrap(self, key: bytes, wrapped: str, context: bytes) -> bytes:
        where = f"the key file (key {key_id(key)})"   # callers see this: not where the file is
        if not wrapped.startswith(PREFIX):
            raise KeyReleaseRefused(f"{where}: the wrapped key is not one of a key file (no {PREFIX} prefix)")
        try:
            raw = from_b64url(wrapped.removeprefix(PREFIX))
        except ValueError:
            raise KeyReleaseRefused(f"{where}: the wrapped key is not valid base64url") from None
        if len(raw) < NONCE_BYTES + 16:
            raise KeyReleaseRefused(f"{where}: the wrapped key is too short")
        try:
            plaintext = AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], context_digest(context))
        except InvalidTag:
            raise KeyReleaseRefused(f"{where}: the wrapped key does not authenticate (another key, another "
                                    "object's context, or altered)") from None
        return checked_data_key(plaintext, where)
