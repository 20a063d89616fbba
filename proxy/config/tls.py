"""The `listen_tls` section: TLS on the data listener (certificate, key, optional client CA), read once.

Why a section of its own: TLS is how the listener speaks, not what it decides, and its
files are read again when they change (`proxy.tlsserver`). The files are checked here at
start, so that a key that does not match its certificate, or a file the proxy cannot read,
stops the start with the key at fault named, instead of failing every handshake later.
Paths are typed `Path`, so a relative one is the configuration file's folder's
(`proxy.config.paths`).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509

if TYPE_CHECKING:   # at run time the reader is passed in: importing it here would be a cycle through the model
    from proxy.config.reader import Reader

LISTEN_TLS_KEYS = frozenset({"certificate", "key", "client_ca", "crl", "min_version", "reload_interval_seconds"})


class TlsVersion(StrEnum):
    """The oldest TLS version the listener accepts (`listen_tls.min_version`)."""

    TLS_1_2 = "1.2"
    TLS_1_3 = "1.3"

    @property
    def ssl(self) -> ssl.TLSVersion:
        return ssl.TLSVersion.TLSv1_3 if self is TlsVersion.TLS_1_3 else ssl.TLSVersion.TLSv1_2


@dataclass(frozen=True, slots=True)
class ListenTlsConfig:
    """TLS on the data listener (`listen_tls`); None: plain HTTP."""

    certificate: Path                       # PEM: the server's certificate, then its chain
    key: Path                               # PEM: the certificate's private key (unencrypted)
    # PEM: the CAs a client's certificate must chain to; set, a client without a valid one is refused
    # in the handshake (as Envoy's require_client_certificate, nginx's ssl_verify_client on).
    client_ca: Path | None = None
    # PEM: CRLs of the client CAs (one each); a revoked client certificate is refused in the handshake.
    crl: Path | None = None
    min_version: TlsVersion = TlsVersion.TLS_1_2
    # How often the certificate's file is looked at; a change is loaded for new connections.
    reload_interval_seconds: float = 5.0


def read_listen_tls(r: Reader, value: Any) -> ListenTlsConfig | None:
    """`listen_tls` (None when absent or null: plain HTTP); the files are loaded once to check them."""
    if value is None:
        return None
    section = r.section(value, "listen_tls", ListenTlsConfig, LISTEN_TLS_KEYS)
    for required in ("certificate", "key"):
        if required not in section.raw:
            raise r.fail(f"listen_tls.{required}", "is required for TLS on the data listener (a PEM file)")
    client_ca = section.optional_string("client_ca")
    crl = section.optional_string("crl")
    if crl is not None and client_ca is None:
        raise r.fail("listen_tls.crl", "revokes client certificates: set listen_tls.client_ca too")
    settings = ListenTlsConfig(
        certificate=Path(section.string("certificate")),
        key=Path(section.string("key")),
        client_ca=None if client_ca is None else Path(client_ca),
        crl=None if crl is None else Path(crl),
        min_version=section.choice("min_version", TlsVersion),
        reload_interval_seconds=section.number("reload_interval_seconds", low=0.1, high=3600),
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(settings.certificate, settings.key)
    except (OSError, ssl.SSLError) as exc:
        raise r.fail("listen_tls.certificate", f"{settings.certificate} with key {settings.key} cannot be used: "
                                               f"{_why(exc)}") from exc
    if settings.client_ca is not None:
        try:
            context.load_verify_locations(cafile=settings.client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise r.fail("listen_tls.client_ca", f"{settings.client_ca} cannot be used: {_why(exc)}") from exc
    if settings.crl is not None:
        try:
            x509.load_pem_x509_crl(settings.crl.read_bytes())
        except (OSError, ValueError) as exc:
            raise r.fail("listen_tls.crl", f"{settings.crl} cannot be used: {_why(exc)}") from exc
    return settings


def _why(exc: Exception) -> str:
    """An OS or OpenSSL error in a few words (OpenSSL's own are terse: "[X509: KEY_VALUES_MISMATCH] ...")."""
    if isinstance(exc, ssl.SSLError):
        if exc.reason == "KEY_VALUES_MISMATCH":
            return "the key is not the certificate's (KEY_VALUES_MISMATCH)"
        return f"{exc.reason or exc.args[-1]} (not a PEM certificate and its matching unencrypted key?)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)
