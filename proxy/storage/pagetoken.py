"""The proxy's own continuation tokens for account listings it pages itself.

A page of a filtered account listing must say where the next one starts, and
the storage server's own marker cannot be handed out: it names the next
bucket or container of the account, which may be one the caller must not
see, and a caller could write one naming any bucket it likes. The proxy
hands out its own token instead: the position (the storage server's marker of
the page it stopped in, and the last name it returned) sealed with AES-GCM
(`cryptography`), so the caller can neither read it nor make one up, and
padded, so that its length does not tell the marker's either. The
token is bound, as the cipher's associated data, to the API, the caller's
jurisdiction and the listing's parameters (``prefix``, ...): a token handed
to an Irish caller, or for another prefix, does not open for anyone else.
Anything that does not open is refused by the caller (never forwarded).

The key is made once per process start, when this module is first imported:
`bailiwick serve --workers N` imports it (through the gateway) before it
forks, so every worker holds the same key; a token then lasts as long as the
process. A key file (``listing_token_key_file``, `page_tokens`) gives
replicas one key, and tokens outlive a restart.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from proxy.errors import ConfigError

_PREFIX = "bw1."
_NONCE = 12
# A token is small (a storage server's marker and a name); anything longer is not one of ours.
MAX_TOKEN_CHARS = 4096
KEY_BYTES = 32
# The sealed position is padded to a multiple of this: AES-GCM keeps the length, and the length of the storage
# server's marker is that of the next name in the account (Azure's is "/ACCOUNT/CONTAINER"), perhaps a hidden one.
_PAD = 256


class TokenRefused(ValueError):
    """The token is not one this proxy sealed for this caller and listing."""


@dataclass(frozen=True, slots=True)
class Position:
    """Where the next page starts: in the storage server's page `marker` (None: its first), after `after`."""

    marker: str | None
    after: str | None


class PageTokens:
    """Seals and opens positions with one key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError("a listing token key is 32 bytes")
        self._cipher = AESGCM(key)

    def seal(self, position: Position, binding: tuple[str, ...]) -> str:
        """The token for `position`, opened only with the same `binding`."""
        nonce = os.urandom(_NONCE)
        plain = json.dumps([position.marker, position.after], separators=(",", ":")).encode()
        plain += b" " * (-len(plain) % _PAD)   # JSON reads trailing spaces as nothing
        sealed = self._cipher.encrypt(nonce, plain, _associated(binding))
        return _PREFIX + _encoded(nonce + sealed)

    def open(self, token: str, binding: tuple[str, ...]) -> Position:
        """The position `token` holds. Raises `TokenRefused` unless it was sealed here with `binding`."""
        if not token.startswith(_PREFIX) or len(token) > MAX_TOKEN_CHARS:
            raise TokenRefused("not a token of this proxy")
        text = token[len(_PREFIX):]
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError) as exc:
            raise TokenRefused("not a token of this proxy") from exc
        if len(raw) <= _NONCE or _encoded(raw) != text:
            # Only the one spelling the proxy writes: base64's spare bits would let a changed token pass.
            raise TokenRefused("not a token of this proxy")
        try:
            plain = self._cipher.decrypt(raw[:_NONCE], raw[_NONCE:], _associated(binding))
        except InvalidTag as exc:
            raise TokenRefused("the token was not sealed by this proxy for this caller and listing") from exc
        marker, after = json.loads(plain)
        return Position(marker, after)


def _encoded(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _associated(binding: tuple[str, ...]) -> bytes:
    return json.dumps(binding, separators=(",", ":")).encode()


def read_key_file(path: Path) -> bytes:
    """A key file's 32 bytes: written as 64 hex digits (``openssl rand -hex 32``). Raises `ConfigError`."""
    try:
        text = path.read_text(encoding="ascii").strip()
        key = bytes.fromhex(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: not readable as 64 hex digits ({exc})") from exc
    if len(key) != KEY_BYTES:
        raise ConfigError(f"{path}: the key must be 32 bytes (64 hex digits, openssl rand -hex 32)")
    return key


# Made at import, before `serve --workers N` forks: every worker of one start holds it.
_PROCESS_TOKENS = PageTokens(os.urandom(KEY_BYTES))


def page_tokens(key_file: Path | None) -> PageTokens:
    """The tokens of the key in `key_file` (replicas sharing it accept each other's); None: this start's key."""
    return _PROCESS_TOKENS if key_file is None else PageTokens(read_key_file(key_file))
