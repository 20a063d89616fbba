"""The region's key service, made from the configuration (`encryption:`), and nowhere else.

A proxy has exactly one key service: its own region's. Nothing in the
configuration can name a second one, so a proxy has no way to reach another
region's keys. The clients are imported only for the kind configured.
"""

from __future__ import annotations

from collections.abc import Callable

from proxy.config import Config
from proxy.config.model import KeyServiceKind
from proxy.crypto.envelope import storable
from proxy.crypto.keyservice import CachingKeyService, KeyService
from proxy.errors import ConfigError, KeyServiceUnavailable


def _readable(read: Callable[[], str], what: str) -> Callable[[], str]:
    """`read`, with a secret file that cannot be read reported as the key service being unavailable."""
    def secret() -> str:
        try:
            return read()
        except OSError as exc:
            raise KeyServiceUnavailable(f"the {what} cannot be read: {exc.strerror or exc}") from None

    return secret


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
            transit.address, transit.key,
            token=_readable(transit.current_token, f"key service token file {transit.token_file}"),
            mount=transit.mount, ca_bundle=transit.ca_bundle, timeout_seconds=transit.timeout_seconds)
    elif kind is KeyServiceKind.PKCS11:
        from proxy.crypto.pkcs11 import Pkcs11KeyService

        pkcs11 = settings.pkcs11
        if pkcs11 is None:
            raise ConfigError("encryption.key_service is pkcs11, and encryption.pkcs11 is missing")
        service = Pkcs11KeyService(pkcs11.module, pkcs11.token_label, pkcs11.key_label,
                                   pin=_readable(pkcs11.current_pin, f"PKCS#11 PIN file {pkcs11.pin_file}"))
    else:
        from proxy.crypto.keyfile import KeyFileService

        key_file = settings.key_file
        if key_file is None:
            raise ConfigError("encryption.key_service is file, and encryption.key_file is missing")
        service = KeyFileService(key_file.path, allow_insecure=key_file.allow_insecure)
    if not storable(service.key_ref):
        service.close()
        raise ConfigError(
            f"the key reference {service.key_ref!r} cannot be written in object metadata (printable ASCII without "
            "spaces or \";\"): name the Transit mount and key, or the PKCS#11 token and key labels, without them")
    cache = settings.key_cache
    if cache.max_keys > 0:
        service = CachingKeyService(service, cache.max_keys, cache.ttl_seconds, on_lookup=on_cache_lookup)
    return service
