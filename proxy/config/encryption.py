"""Reading the `encryption` section: the key service of the proxy's region, and its data-key cache.

One key service per proxy, named by `key_service`, configured by its own
section (`transit`, `pkcs11` or `key_file`); a section for any other kind is
refused rather than ignored, so a proxy never runs with settings it does not
use. Secrets (the Transit token, the HSM's PIN) are never in the file: it
names the variable (read here, once) or the mounted file (read on every use)
that holds them. What spans sections (re-sign mode, the upstream's API) is checked in
`proxy.config.load`.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from proxy.config.model import (
    EncryptionConfig,
    KeyCacheSettings,
    KeyFileSettings,
    KeyServiceKind,
    Pkcs11Settings,
    TransitSettings,
)
from proxy.config.reader import Reader, Section

ENCRYPTION_KEYS = frozenset({"key_service", "transit", "pkcs11", "key_file", "key_cache"})
TRANSIT_KEYS = frozenset({"address", "key", "mount", "token_file", "token_env", "ca_bundle", "timeout_seconds"})
PKCS11_KEYS = frozenset({"module", "token_label", "key_label", "pin_file", "pin_env"})
KEY_FILE_KEYS = frozenset({"path", "allow_insecure"})
KEY_CACHE_KEYS = frozenset({"max_keys", "ttl_seconds"})

_KIND_KEYS = {KeyServiceKind.TRANSIT: TRANSIT_KEYS, KeyServiceKind.PKCS11: PKCS11_KEYS,
              KeyServiceKind.FILE: KEY_FILE_KEYS}
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


def read_encryption(r: Reader, value: Any) -> EncryptionConfig:
    section = r.section(value, "encryption", EncryptionConfig, ENCRYPTION_KEYS)
    kind = section.get("key_service")
    kind = None if kind is None else section.choice("key_service", KeyServiceKind)
    for other in KeyServiceKind:
        written = section.raw.get(other.section)
        if written is None:
            continue
        r.mapping(written, f"encryption.{other.section}", _KIND_KEYS[other])  # unknown keys first
        if other is kind or written == {}:
            continue  # an empty section is no setting (a chart's values render one)
        key = f"encryption.{other.section}"
        if kind is None:
            raise r.fail(key, f"no key service is named: set encryption.key_service: {other} to use this "
                              "section, or remove it")
        raise r.fail(key, f"encryption.key_service is {kind}, and a proxy uses one key service: remove this section")
    if kind is not None and section.raw.get(kind.section) is None:
        raise r.fail(f"encryption.{kind.section}", f"is required with key_service: {kind}")
    raw = section.raw
    return EncryptionConfig(
        key_service=kind,
        transit=_transit(r, raw["transit"]) if kind is KeyServiceKind.TRANSIT else None,
        pkcs11=_pkcs11(r, raw["pkcs11"]) if kind is KeyServiceKind.PKCS11 else None,
        key_file=_key_file(r, raw["key_file"]) if kind is KeyServiceKind.FILE else None,
        key_cache=_key_cache(r, raw.get("key_cache")),
    )


def _transit(r: Reader, value: Any) -> TransitSettings:
    section = r.section(value, "encryption.transit", TransitSettings, TRANSIT_KEYS)
    _require(r, section, "address", "key")
    address = section.string("address")
    parts = urlsplit(address)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise r.fail("encryption.transit.address", f"expected an https:// URL of the server, got {address!r}")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise r.fail("encryption.transit.address", "an http:// address would send the token and every data key "
                                                   "in the clear: use https:// (http:// only on loopback)")
    key = section.string("key")
    if "/" in key:
        raise r.fail("encryption.transit.key", f"expected the name of a Transit key, without '/', got {key!r}")
    mount = section.string("mount").strip("/")
    if not mount:
        raise r.fail("encryption.transit.mount", "expected the path the Transit engine is mounted at")
    token_file, token = _secret(r, section, "token")
    ca_bundle = section.optional_string("ca_bundle")
    if ca_bundle is not None and not Path(ca_bundle).is_file():
        raise r.fail("encryption.transit.ca_bundle", f"{ca_bundle} is not a readable file")
    return TransitSettings(
        address=address.rstrip("/"),
        key=key,
        mount=mount,
        token_file=token_file,
        token_env=section.string("token_env"),
        token=token,
        ca_bundle=Path(ca_bundle) if ca_bundle is not None else None,
        timeout_seconds=section.number("timeout_seconds", low=0.1, high=300),
    )


def _pkcs11(r: Reader, value: Any) -> Pkcs11Settings:
    section = r.section(value, "encryption.pkcs11", Pkcs11Settings, PKCS11_KEYS)
    _require(r, section, "module", "token_label", "key_label")
    module = Path(section.string("module"))
    if not module.is_file():
        raise r.fail("encryption.pkcs11.module", f"{module} is not a file: expected the PKCS#11 module (.so) "
                                                 "of the HSM")
    pin_file, pin = _secret(r, section, "pin")
    return Pkcs11Settings(
        module=module,
        token_label=section.string("token_label"),
        key_label=section.string("key_label"),
        pin_file=pin_file,
        pin_env=section.string("pin_env"),
        pin=pin,
    )


def _key_file(r: Reader, value: Any) -> KeyFileSettings:
    section = r.section(value, "encryption.key_file", KeyFileSettings, KEY_FILE_KEYS)
    _require(r, section, "path")
    path = Path(section.string("path"))
    if not section.boolean("allow_insecure"):
        raise r.fail("encryption.key_file.allow_insecure",
                     "a key file keeps the key-encryption key on the proxy's own disk, outside any key service: "
                     "it is for development and the demo only; set allow_insecure: true to use it anyway")
    return KeyFileSettings(path=path, allow_insecure=True)


def _key_cache(r: Reader, value: Any) -> KeyCacheSettings:
    section = r.section(value, "encryption.key_cache", KeyCacheSettings, KEY_CACHE_KEYS)
    return KeyCacheSettings(
        max_keys=section.whole("max_keys", low=0, high=100_000),
        ttl_seconds=section.number("ttl_seconds", low=0.1, high=3600),
    )


def _require(r: Reader, section: Section, *names: str) -> None:
    for name in names:
        if section.raw.get(name) is None:
            raise r.fail(section.path(name), "is required")


def _secret(r: Reader, section: Section, name: str) -> tuple[Path | None, str | None]:
    """`<name>_file` or `<name>_env` (its default when neither is written): (the file, None) or (None, the value).

    A variable is read here, once. A file is read when the secret is used
    (`TransitSettings.current_token`), never held: a renewed token (an agent's
    sink, a rotated Secret) is taken without a restart, and one not yet
    written when the proxy starts does not stop it.
    """
    file_key, env_key = f"{name}_file", f"{name}_env"
    if section.raw.get(file_key) is not None and section.raw.get(env_key) is not None:
        raise r.fail(section.key, f"set one of {file_key} or {env_key}, not both")
    if section.raw.get(file_key) is not None:
        return Path(section.string(file_key)), None
    variable = section.string(env_key)
    secret = r.env.get(variable, "")
    if not secret:
        raise r.fail(section.path(env_key), f"the environment variable {variable} is not set or empty "
                                            f"(or set {file_key} to a mounted file)")
    return None, secret


def _loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
