"""TLS on the data listener: one server `SSLContext`, its certificate reloaded from disk when it changes.

cert-manager (and any Secret rotation) replaces the certificate and key files in
place. `ListenerTls` looks at the certificate's file every `reload_interval_seconds`
(`proxy.watchedfile`, so a Kubernetes ``..data`` swap is seen) and loads the new pair
into a new context; the listener's context hands each new handshake to the newest
one (its ``sni_callback``, which OpenSSL calls for every ClientHello, with or without
a server name). Connections already open keep the certificate they were handed, new
handshakes get the new one, nothing is dropped. Not ``load_cert_chain`` on the
listener's own context: when the key does not match, OpenSSL has already taken the
new certificate, and every later handshake would fail. A new pair that cannot be
loaded (unreadable, a key that does not match, half of a swap) keeps the last good
one in service, is logged and counted, and is tried again at the next look;
meanwhile `problem` says so, as it does when the certificate in service has
expired, for /readyz. The client CA file is read again with each new pair.

The defaults are a mature proxy's: TLS 1.2 at least, the server's cipher preference,
no renegotiation, no compression. With a client CA, a client certificate is required
in the handshake (Envoy's ``require_client_certificate``): a caller without a valid
one never reaches a request, so no request can be mistaken for an unauthenticated one.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from proxy.config.tls import ListenTlsConfig
from proxy.errors import ConfigError
from proxy.watchedfile import WatchedFile

log = logging.getLogger("bailiwick.tls")


@dataclass(frozen=True, slots=True)
class Served:
    """The certificate in service: its serial and validity, to report and to check expiry against."""

    serial: int
    not_before: datetime.datetime
    not_after: datetime.datetime


def server_context(settings: ListenTlsConfig) -> ssl.SSLContext:
    """A server context with the listener's defaults and the client CA; the certificate is loaded by the caller."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = settings.min_version.ssl
    context.options |= (ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_COMPRESSION
                        | ssl.OP_SINGLE_ECDH_USE | ssl.OP_SINGLE_DH_USE)
    # Forward-secret AEAD suites only for TLS 1.2 (TLS 1.3's are all of that kind).
    context.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")
    if settings.client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=settings.client_ca)
    return context


class ListenerTls:
    """The listener's context, and the watch that keeps its certificate the one on disk."""

    def __init__(self, settings: ListenTlsConfig) -> None:
        self.settings = settings
        self.context = server_context(settings)   # the listener's; it holds the first pair
        self._newest = self.context
        self.reloads = 0            # pairs loaded after the first
        self.reload_failures = 0    # pairs found changed that could not be loaded
        self.failure: str | None = None   # why the pair on disk is not the one in service, while it is not
        self.unreadable: str | None = None   # a file of the pair that cannot be opened now (gone, no permission)
        self._task: asyncio.Task[None] | None = None
        self._started = False
        # The first read's errors propagate: at start, a pair that does not load stops the start.
        self._watch = WatchedFile(settings.certificate, self._load, interval=settings.reload_interval_seconds)
        self.served: Served = self._watch.current()
        self._started = True
        self.context.sni_callback = self._hand_over

    def _hand_over(self, connection: ssl.SSLObject, _name: str | None, _context: ssl.SSLContext) -> None:
        if self._newest is not self.context:
            connection.context = self._newest

    def _load(self, certificate: Path) -> Served:
        try:
            served = _describe(certificate.read_bytes())
            context = self.context if not self._started else server_context(self.settings)
            context.load_cert_chain(certificate, self.settings.key)
        except (OSError, ValueError, ssl.SSLError) as exc:
            why = f"{certificate} with key {self.settings.key} cannot be loaded: {exc}"
            if not self._started:
                raise ConfigError(f"listen_tls.certificate: {why}") from exc
            self.reload_failures += 1
            self.failure = why
            log.error("TLS certificate not reloaded, the last good one stays in service: %s", why)
            raise ConfigError(why) from exc
        if self._started:
            self._newest = context
            self.reloads += 1
            log.info("TLS certificate reloaded: serial %x, valid until %s", served.serial, served.not_after)
        self.failure = None
        return served

    def check(self) -> None:
        """Look at the certificate's file now (at most once an interval) and load it if it changed.

        A file that is gone or may no longer be read is not a change the watch sees (it keeps the
        pair in service and looks again); the next restart could not start, so it is reported too.
        """
        self.served = self._watch.current()
        self.unreadable = None
        for path in (self.settings.certificate, self.settings.key):
            try:
                with path.open("rb"):
                    pass
            except OSError as exc:
                self.unreadable = f"{path} cannot be read: {exc.strerror or exc}"
                break

    def problem(self, now: datetime.datetime | None = None) -> str | None:
        """Why the listener should not be sent traffic (None: it should), for /readyz."""
        now = now or datetime.datetime.now(datetime.UTC)
        if self.failure is not None or self.unreadable is not None:
            return f"TLS certificate: {self.failure or self.unreadable}"
        if now >= self.served.not_after:
            return f"TLS certificate expired at {self.served.not_after.isoformat()} (serial {self.served.serial:x})"
        if now < self.served.not_before:
            return (f"TLS certificate not valid before {self.served.not_before.isoformat()} "
                    f"(serial {self.served.serial:x})")
        return None

    def report(self) -> dict[str, object]:
        """The certificate in service, as /readyz shows it."""
        return {"serial": f"{self.served.serial:x}", "not_after": self.served.not_after.isoformat(),
                "reloads": self.reloads, "reload_failures": self.reload_failures}

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._poll())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _poll(self) -> None:
        # In the event loop's thread: the context is not changed under a handshake running elsewhere.
        while True:
            await asyncio.sleep(self.settings.reload_interval_seconds)
            try:
                self.check()
            except Exception:   # never let the watch die: the next look tries again
                log.exception("TLS certificate watch failed")


def _describe(pem: bytes) -> Served:
    """The first certificate of a PEM chain: serial and validity (`ValueError` if there is none)."""
    certificate = x509.load_pem_x509_certificate(pem)
    return Served(certificate.serial_number, certificate.not_valid_before_utc, certificate.not_valid_after_utc)
