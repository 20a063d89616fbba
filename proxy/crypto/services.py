"""The region's key service, made from the configuration (`encryption:`), and nowhere else.

A proxy has exactly one key service: its own region's. Nothing in the
configuration can name a second one, so a proxy has no way to reach another
region's keys. The clients are imported only for the kind configured.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from proxy.config import Config
from proxy.config.model import KeyServiceKind
from proxy.crypto.keyservice import CachingKeyService, KeyService
from proxy.errors import ConfigError, KeyServiceUnavailable


def _secret(path: Path | None, env: str | None, what: str) -> Callable[[], str]:
    """A secret read when it is needed (a rotated token file is picked up), from a file or the environment."""
    if path is not None:
        file = path

        def from_file() -> str:
            try:
                return file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise KeyServiceUnavailable(f"the {what} file {file} cannot be read: {exc.strerror}") from None

        return from_file
    name = env or ""

    def from_env() -> str:
        value = os.environ.get(name)
        if not value:
            raise KeyServiceUnavailable(f"the {what} is not set (environment variable {name})")
        return value

    return from_env


def make_key_service(config: Config, on_cache_lookup: Callable[[bool], None] | None = None) -> KeyService | None:
    """The key service `encryption.key_service` names, or None when none is configured."""
    settings = config.encryption
    kind = settings.key_service
    if kind is None:
        return None
    service: KeyService
    if kind is KeyServiceKind.TRANSIT:
        from proxy.crypto.transit import TransitKeyService

        transit = settings.transit
        if transit is None:
            raise ConfigError("encryption.key_service is transit, and encryption.transit is missing")
        service = TransitKeyService(
            transit.address, transit.key, token=_secret(transit.token_file, transit.token_env, "key service token"),
            mount=transit.mount, ca_bundle=transit.ca_bundle, timeout_seconds=transit.timeout_seconds)
    elif kind is KeyServiceKind.PKCS11:
        from proxy.crypto.pkcs11 import Pkcs11KeyService

        pkcs11 = settings.pkcs11
        if pkcs11 is None:
            raise ConfigError("encryption.key_service is pkcs11, and encryption.pkcs11 is missing")
        service = Pkcs11KeyService(pkcs11.module, pkcs11.token_label, pkcs11.key_label,
                                   pin=_secret(pkcs11.pin_file, pkcs11.pin_env, "PKCS#11 PIN"))
    else:
        from proxy.crypto.keyfile import KeyFileService

        key_file = settings.key_file
        if key_file is None:
            raise ConfigError("encryption.key_service is file, and encryption.key_file is missing")
        service = KeyFileService(key_file.path, allow_insecure=key_file.allow_insecure)
    cache = settings.key_cache
    if cache.max_keys > 0:
        service = CachingKeyService(service, cache.max_keys, cache.ttl_seconds, on_lookup=on_cache_lookup)
    return service
