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

Revocation: with ``listen_tls.crl`` (PEM, one CRL per client CA), the handshake
checks the client's certificate against it (OpenSSL's ``VERIFY_CRL_CHECK_LEAF``:
a revoked certificate, or one whose CA has no current CRL in the file, is refused
before a request is read). The CRL is watched like the certificate, and a new one
goes into a new context the same way; one that does not load keeps the last good
one in service and makes `problem` say so. A new pair's context gets the CRLs in
service (their bytes, kept), not the file's at that moment: a CRL that does not
load holds no certificate rotation back. The verify flags are the listener's
own context's (OpenSSL keeps a connection's flags from the context it began in),
so every context sets them; the CRLs are the newest context's store.

The defaults are a mature proxy's: TLS 1.2 at least, the server's cipher preference,
no renegotiation, no compression. With a client CA, a client certificate is required
in the handshake (Envoy's ``require_client_certificate``): a caller without a valid
one never reaches a request, so no request can be mistaken for an unauthenticated one.
"""

from __future__ import annotations

import datetime
import logging
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from proxy.config.tls import ListenTlsConfig
from proxy.errors import ConfigError
from proxy.metrics import Metrics
from proxy.poller import Poller
from proxy.watchedfile import WatchedFile

log = logging.getLogger("bailiwick.tls")


@dataclass(frozen=True, slots=True)
class Served:
    """The certificate in service: its serial and validity, to report and to check expiry against."""

    serial: int
    not_before: datetime.datetime
    not_after: datetime.datetime


def server_context(settings: ListenTlsConfig, crl: bytes | None = None) -> ssl.SSLContext:
    """A server context with the listener's defaults, the client CA and the CRLs (`crl`, else the file's); the
    certificate is loaded by the caller."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = settings.min_version.ssl
    context.options |= (ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_COMPRESSION
                        | ssl.OP_SINGLE_ECDH_USE | ssl.OP_SINGLE_DH_USE)
    # Forward-secret AEAD suites only for TLS 1.2 (TLS 1.3's are all of that kind).
    context.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")
    if settings.client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=settings.client_ca)
    if settings.crl is not None:
        if crl is None:
            context.load_verify_locations(cafile=settings.crl)   # OpenSSL reads the CRLs of a PEM file too
        else:
            # OpenSSL reads CRLs from a file only (``cadata`` takes certificates): these bytes go through
            # one of their own, which may sit anywhere, a CRL being public.
            with tempfile.NamedTemporaryFile(suffix=".pem") as copy:
                copy.write(crl)
                copy.flush()
                context.load_verify_locations(cafile=copy.name)
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return context


class ListenerTls:
    """The listener's context, and the watch that keeps its certificate the one on disk."""

    def __init__(self, settings: ListenTlsConfig) -> None:
        self.settings = settings
        self.reloads = 0            # pairs loaded after the first
        self.reload_failures = 0    # pairs found changed that could not be loaded
        self.failure: str | None = None   # why the pair on disk is not the one in service, while it is not
        self.unreadable: str | None = None   # a file of the pair that cannot be opened now (gone, no permission)
        self.crl_failure: str | None = None   # why the CRL on disk is not the one in service, while it is not
        self._crl_in_service: bytes | None = None   # what a new certificate's context is given, not the file's now
        # In the event loop's thread: the context is not changed under a handshake running elsewhere.
        self._poller = Poller(settings.reload_interval_seconds, self._look, log, "TLS certificate watch failed")
        self._metrics: Metrics | None = None
        self._started = False
        # The first reads' errors propagate: at start, a CRL or a pair that does not load stops the start.
        self._crl = (WatchedFile(settings.crl, self._load_crl, interval=settings.reload_interval_seconds)
                     if settings.crl is not None else None)
        # The listener's; it holds the first pair. It reads the CRL file itself: a copy of the bytes (a temporary
        # file) is for reloads only, so a start needs no writable temporary folder (a read-only root filesystem).
        self.context = server_context(settings)
        self._newest = self.context
        self._watch = WatchedFile(settings.certificate, self._load, interval=settings.reload_interval_seconds)
        self.served: Served = self._watch.current()
        self._started = True
        self.context.sni_callback = self._hand_over

    def report_to(self, metrics: Metrics) -> None:
        """Keep `metrics` told of the certificate in service and of every reload."""
        self._metrics = metrics
        metrics.tls_expiry.set(self.served.not_after.timestamp())

    def _hand_over(self, connection: ssl.SSLObject, _name: str | None, _context: ssl.SSLContext) -> None:
        if self._newest is not self.context:
            connection.context = self._newest

    def _load(self, certificate: Path) -> Served:
        try:
            served = _describe(certificate.read_bytes())
            # With the CRLs in service: a CRL on disk that does not load holds no rotation back.
            context = self.context if not self._started else server_context(self.settings, self._crl_in_service)
            context.load_cert_chain(certificate, self.settings.key)
        except (OSError, ValueError, ssl.SSLError) as exc:
            self.failure = self._refused("certificate", f"{certificate} with key {self.settings.key}", exc)
            raise ConfigError(self.failure) from exc
        if self._started:
            self._in_service(context, served)
            log.info("TLS certificate reloaded: serial %x, valid until %s", served.serial, served.not_after)
        self.failure = None
        return served

    def _load_crl(self, crl: Path) -> None:
        try:
            data = crl.read_bytes()
            x509.load_pem_x509_crl(data)   # OpenSSL would take a file with no CRL in it
            # At start, the listener's context is made next, from the file itself.
            context = server_context(self.settings, data) if self._started else None
        except (OSError, ValueError, ssl.SSLError) as exc:
            self.crl_failure = self._refused("crl", str(crl), exc)
            raise ConfigError(self.crl_failure) from exc
        if context is not None:
            try:
                context.load_cert_chain(self.settings.certificate, self.settings.key)
            except (OSError, ValueError, ssl.SSLError) as exc:
                # The certificate's own look reports the pair; the CRL waits for a pair that loads.
                self.crl_failure = self._refused(
                    "crl", str(crl), ValueError(f"it waits for a certificate pair that loads ({exc})"))
                raise ConfigError(self.crl_failure) from exc
            self._in_service(context, self.served)
            log.info("CRL reloaded from %s", crl)
        self._crl_in_service = data
        self.crl_failure = None

    def _refused(self, setting: str, what: str, exc: Exception) -> str:
        """Why `what` (of `listen_tls.<setting>`) did not load; at start, `ConfigError` (the start stops)."""
        why = f"{what} cannot be loaded: {exc}"
        if not self._started:
            raise ConfigError(f"listen_tls.{setting}: {why}") from exc
        self.reload_failures += 1
        if self._metrics is not None:
            self._metrics.tls_reloaded(False, self.served.not_after.timestamp())
        log.error("TLS %s not reloaded, the last good one stays in service: %s", setting, why)
        return why

    def _in_service(self, context: ssl.SSLContext, served: Served) -> None:
        """Hand new handshakes to `context`, whose certificate is `served`."""
        self._newest = context
        self.reloads += 1
        if self._metrics is not None:
            self._metrics.tls_reloaded(True, served.not_after.timestamp())

    def check(self) -> None:
        """Look at the certificate's file now (at most once an interval) and load it if it changed.

        A file that is gone or may no longer be read is not a change the watch sees (it keeps the
        pair in service and looks again); the next restart could not start, so it is reported too.
        """
        self.served = self._watch.current()
        if self._crl is not None:
            self._crl.current()
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
        if self.crl_failure is not None:
            return f"CRL: {self.crl_failure}"
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
        self._poller.start()

    async def stop(self) -> None:
        await self._poller.stop()

    async def _look(self) -> None:
        self.check()


def _describe(pem: bytes) -> Served:
    """The first certificate of a PEM chain: serial and validity (`ValueError` if there is none)."""
    certificate = x509.load_pem_x509_certificate(pem)
    return Served(certificate.serial_number, certificate.not_valid_before_utc, certificate.not_valid_after_utc)
