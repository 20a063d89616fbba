"""Turning a JWKS document into the keys one issuer may sign with.

Keys are parsed by pyjwt (`PyJWKSet`, `PyJWK`), never by hand. Of what a
document holds, only signature keys of a public-key algorithm that the
issuer's allow-list names are kept, and each key is bound to one algorithm
(the JWK's ``alg``, or what pyjwt infers from its type and curve), so a token
can never choose how its key is used: an RSA key is never an HMAC secret.
A document is bounded in size and key count, so a hostile or broken endpoint
cannot make the proxy hold more than that.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from jwt import PyJWK, PyJWKSet
from jwt.exceptions import PyJWTError

from proxy.config import PUBLIC_KEY_ALGORITHMS

log = logging.getLogger(__name__)

MAX_JWKS_BYTES = 1024 * 1024
MAX_JWKS_KEYS = 100
MAX_KID_CHARS = 256


class JwksError(Exception):
    """A JWKS document that cannot be used; the message says why, for the operator."""


@dataclass(frozen=True, slots=True)
class KeySet:
    """The usable keys of one issuer, by key id.

    `keys` holds every usable key (with or without a ``kid``); `by_kid` only
    those whose ``kid`` is unique in the document, since a kid that names two
    keys cannot select one.
    """

    keys: tuple[PyJWK, ...]
    by_kid: Mapping[str, PyJWK]

    def find(self, kid: str | None) -> PyJWK | None:
        """The key for `kid`; for no kid, the issuer's only key if it has exactly one."""
        if kid is None:
            return self.keys[0] if len(self.keys) == 1 else None
        return self.by_kid.get(kid)


def parse_jwks(document: bytes, algorithms: Collection[str]) -> KeySet:
    """The keys in `document` usable with `algorithms`. Raises `JwksError`."""
    if len(document) > MAX_JWKS_BYTES:
        raise JwksError(f"the document is over {MAX_JWKS_BYTES} bytes")
    try:
        data = json.loads(document)
    except (ValueError, RecursionError):
        raise JwksError("the document is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise JwksError('expected a JSON object with a "keys" list')
    raw_keys = data["keys"]
    if len(raw_keys) > MAX_JWKS_KEYS:
        raise JwksError(
            f"the document has {len(raw_keys)} keys; at most {MAX_JWKS_KEYS} are accepted"
        )
    # Encryption keys are not for verifying signatures; drop them before pyjwt sees them.
    signing = [k for k in raw_keys if isinstance(k, dict) and k.get("use", "sig") == "sig"]
    if not signing:
        raise JwksError("the document has no signature keys")
    try:
        parsed = PyJWKSet(signing)
    except PyJWTError as exc:
        raise JwksError(f"no usable keys ({exc})") from None

    allowed = frozenset(algorithms) & PUBLIC_KEY_ALGORITHMS
    usable = tuple(key for key in parsed.keys if _usable(key, allowed))
    if not usable:
        names = ", ".join(sorted(allowed))
        raise JwksError(f"no key is usable with the allowed algorithms ({names})")
    counts = Counter(key.key_id for key in usable if key.key_id is not None)
    duplicated = sorted(kid for kid, n in counts.items() if n > 1)
    if duplicated:
        log.warning("JWKS key ids used by more than one key are ignored: %s", ", ".join(duplicated))
    by_kid = {
        key.key_id: key for key in usable if key.key_id is not None and counts[key.key_id] == 1
    }
    return KeySet(keys=usable, by_kid=MappingProxyType(by_kid))


def _usable(key: PyJWK, allowed: frozenset[str]) -> bool:
    if key.algorithm_name not in allowed:
        return False
    kid = key.key_id
    if kid is not None and (not isinstance(kid, str) or not 0 < len(kid) <= MAX_KID_CHARS):
        return False
    # pyjwt would warn on every verification with a short key; such a key is not used at all.
    return key.Algorithm.check_key_length(key.key) is None
