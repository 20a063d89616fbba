"""The TLS handshake of each connection to the data port, built by the proxy so that a refused one is seen.

With ``listen_tls``, the listener accepts plain TCP and puts TLS over each
connection itself, with the loop's own TLS protocol (asyncio's or uvloop's,
exactly what the loop's server would build when handed the context). When the
loop's server does that, a failed handshake is closed without a word (an
`OSError` is logged only in the loop's debug mode), so a client certificate
refused in it (expired, from another CA, revoked) would leave no trace. Built
here, the protocol is given a future for its handshake, and the outcome comes
back to the proxy: every failure is classified (`HandshakeFailure`) and handed
to `Handshakes.refused`, which counts it and, for a refused client certificate,
writes its audit line (`proxy.recording`). A connection that passes is handed to
aiohttp's request handler by the TLS protocol, as the loop's server does.

The connection caps count a TLS connection from its accept, not from its
handshake's end: each new connection is put to the listener's `Gate` in the TLS
protocol's ``connection_made``, and one over a cap is closed there, before a
byte of its handshake is read (a client holding half-open handshakes takes places
like any other connection, and has no more of them). Its place is given back in
``connection_lost``, which the loop calls once for every connection made, whatever
ended it (a failed handshake, its deadline, either side closing, before or after
the handshake, the shutdown).

Why not the loop's ``start_tls`` (accept plain, then upgrade): uvloop starts
reading a new connection after ``connection_made`` even when the protocol paused
it there, so the ClientHello can reach the plain protocol before ``start_tls``
takes over, and the handshake then hangs. The TLS protocol classes are the
loops' own (``asyncio.sslproto.SSLProtocol``, ``uvloop.loop.SSLProtocol``: one
constructor, the one their servers call); a test runs each.

The classification is OpenSSL's: its verify code for a certificate the
handshake refused (`ssl.SSLCertVerificationError.verify_code`, the
``X509_V_ERR_*`` numbers), its reason for the rest.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from asyncio import sslproto
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, cast

log = logging.getLogger("bailiwick.tls")


class HandshakeFailure(StrEnum):
    """Why a handshake failed: the ``reason`` label of ``bailiwick_tls_handshake_failures_total``."""

    CERTIFICATE_EXPIRED = "certificate_expired"
    CERTIFICATE_NOT_YET_VALID = "certificate_not_yet_valid"
    CERTIFICATE_REVOKED = "certificate_revoked"
    CERTIFICATE_UNTRUSTED = "certificate_untrusted"   # not issued by a CA of listen_tls.client_ca
    CERTIFICATE_INVALID = "certificate_invalid"       # any other verify error (e.g. no current CRL for its CA)
    NO_CERTIFICATE = "no_certificate"                 # none presented, and listen_tls.client_ca requires one
    PROTOCOL = "protocol"   # no common version or cipher, not TLS at all, an alert from the client
    TIMEOUT = "timeout"
    CLOSED = "closed"       # the client went away during the handshake

    @property
    def refuses_certificate(self) -> bool:
        """Whether the proxy refused the client's credential (audited), rather than the connection failing."""
        return self in _CERTIFICATE_REFUSALS


_CERTIFICATE_REFUSALS = frozenset({
    HandshakeFailure.CERTIFICATE_EXPIRED, HandshakeFailure.CERTIFICATE_NOT_YET_VALID,
    HandshakeFailure.CERTIFICATE_REVOKED, HandshakeFailure.CERTIFICATE_UNTRUSTED,
    HandshakeFailure.CERTIFICATE_INVALID, HandshakeFailure.NO_CERTIFICATE,
})

# OpenSSL's X509_V_ERR_* codes (include/openssl/x509_vfy.h).
_BY_VERIFY_CODE = {
    9: HandshakeFailure.CERTIFICATE_NOT_YET_VALID,
    10: HandshakeFailure.CERTIFICATE_EXPIRED,
    23: HandshakeFailure.CERTIFICATE_REVOKED,
    # No chain to a trusted CA: an unknown issuer, a self-signed one, or a signature that does not verify.
    2: HandshakeFailure.CERTIFICATE_UNTRUSTED,
    7: HandshakeFailure.CERTIFICATE_UNTRUSTED,
    18: HandshakeFailure.CERTIFICATE_UNTRUSTED,
    19: HandshakeFailure.CERTIFICATE_UNTRUSTED,
    20: HandshakeFailure.CERTIFICATE_UNTRUSTED,
    21: HandshakeFailure.CERTIFICATE_UNTRUSTED,
}

_WHY = {
    HandshakeFailure.CERTIFICATE_EXPIRED: "the client certificate has expired",
    HandshakeFailure.CERTIFICATE_NOT_YET_VALID: "the client certificate is not valid yet",
    HandshakeFailure.CERTIFICATE_REVOKED: "the client certificate is revoked (listen_tls.crl)",
    HandshakeFailure.CERTIFICATE_UNTRUSTED: "the client certificate is not issued by a CA of listen_tls.client_ca",
    HandshakeFailure.NO_CERTIFICATE: "no client certificate was presented, and listen_tls.client_ca requires one",
}


@dataclass(frozen=True, slots=True)
class RefusedHandshake:
    """One failed handshake: from whom, why, and in words (OpenSSL's own where the proxy has none)."""

    peer: str   # the client's address ("" if the socket had none)
    failure: HandshakeFailure
    reason: str

    @classmethod
    def of(cls, peer: str, exc: BaseException) -> RefusedHandshake:
        """The failure `exc` (what ``start_tls`` raised) stands for."""
        failure = classify(exc)
        detail = (exc.verify_message if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message
                  else getattr(exc, "reason", None) or str(exc) or type(exc).__name__)
        why = _WHY.get(failure) or (f"the client certificate does not verify: {detail}"
                                    if failure is HandshakeFailure.CERTIFICATE_INVALID else str(detail))
        return cls(peer, failure, f"TLS handshake refused: {why}")


def classify(exc: BaseException) -> HandshakeFailure:
    """Why a server-side handshake raised `exc`."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _BY_VERIFY_CODE.get(exc.verify_code, HandshakeFailure.CERTIFICATE_INVALID)
    if isinstance(exc, ssl.SSLError):
        reason = getattr(exc, "reason", None) or ""   # absent when not raised by OpenSSL
        if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
            return HandshakeFailure.NO_CERTIFICATE
        if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)) or reason == "UNEXPECTED_EOF_WHILE_READING":
            return HandshakeFailure.CLOSED
        return HandshakeFailure.PROTOCOL
    # The loop's handshake deadline ends in ConnectionAbortedError ("SSL handshake is taking longer than ...").
    if isinstance(exc, (TimeoutError, ConnectionAbortedError)):
        return HandshakeFailure.TIMEOUT
    if isinstance(exc, (ConnectionError, EOFError)):
        return HandshakeFailure.CLOSED
    return HandshakeFailure.PROTOCOL


class Gate(Protocol):
    """The connection caps a new connection is counted against (`proxy.limiter.ConnectionCaps`)."""

    def admit(self, host: str) -> str | None:
        """Count a connection from `host`; None if it may stay, else why it is over a cap (it stays counted)."""

    def release(self, host: str) -> None:
        """Give back the place of a connection from `host` that was counted."""


class Handshakes:
    """The data listener's handshakes: `protocol` is what each new connection's transport gets."""

    def __init__(self, context: ssl.SSLContext, refused: Callable[[RefusedHandshake], None],
                 timeout: float | None = None) -> None:
        """`context`: the listener's (its ``sni_callback`` hands over to a reloaded one); `refused`: told of every
        failed handshake; `timeout`: the handshake's deadline (None: the loop's, 60 s)."""
        self.context = context
        self.refused = refused
        self.timeout = timeout
        self.open: set[asyncio.Transport] = set()   # the connections' own (TCP) transports, until lost
        # What each connection is counted against from its accept (set by the server that serves them).
        self.gate: Gate | None = None

    def protocol(self, handler: asyncio.Protocol) -> asyncio.BaseProtocol:
        """TLS over the connection, `handler` (connected once the handshake passed) over TLS."""
        loop = asyncio.get_running_loop()
        protocol: asyncio.BaseProtocol = _tls_protocol(loop)(self, loop, handler)
        return protocol

    async def close(self) -> None:
        """Cut every connection still open, at the end of the shutdown.

        aiohttp closes the connections it was handed, but over TLS a close waits for the client's
        close_notify (up to 30 s), and a connection still in its handshake was never handed to it.
        """
        for transport in list(self.open):
            transport.abort()
        self.open.clear()
        await asyncio.sleep(0)   # their connection_lost, called soon, closes their sockets


_ASYNCIO_TLS: type[Any] = vars(sslproto)["SSLProtocol"]   # not in the module's __all__
_TLS: dict[type[Any], type[Any]] = {}   # the loop's TLS protocol -> it, telling `Handshakes` how it went


def _tls_protocol(loop: asyncio.AbstractEventLoop) -> type[Any]:
    """The loop's own TLS protocol (uvloop's transports take only uvloop's), reporting to `Handshakes`."""
    base = _ASYNCIO_TLS
    try:
        import uvloop
        import uvloop.loop
    except ImportError:  # pragma: no cover - uvloop is a dependency everywhere but Windows
        pass
    else:
        if isinstance(loop, uvloop.Loop):
            base = vars(uvloop.loop)["SSLProtocol"]
    made = _TLS.get(base)
    if made is None:
        made = _TLS[base] = _reporting(base)
    return made


def _reporting(base: type[Any]) -> type[Any]:
    """`base`, telling `Handshakes.refused` of a handshake that did not pass."""

    class Tls(base):  # type: ignore[misc]
        def __init__(self, handshakes: Handshakes, loop: asyncio.AbstractEventLoop, handler: asyncio.Protocol) -> None:
            self._handshakes = handshakes
            self._handshake: asyncio.Future[None] = loop.create_future()
            self._peer = ""
            self._raw: asyncio.Transport | None = None   # the connection's own; not the base's (uvloop's hides it)
            self._counted: Gate | None = None   # the gate whose place it holds, until given back (once)
            self._over_cap = False   # closed at accept, over a cap: not a failed handshake
            super().__init__(loop, handler, handshakes.context, self._handshake, server_side=True,
                             ssl_handshake_timeout=handshakes.timeout)

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            peername = transport.get_extra_info("peername")
            self._peer = str(peername[0]) if peername else ""
            self._raw = cast(asyncio.Transport, transport)   # uvloop's is a stream transport by behaviour only
            self._handshakes.open.add(self._raw)
            gate = self._handshakes.gate
            over = None
            if gate is not None:
                over = gate.admit(self._peer)
                self._counted = gate
            super().connection_made(transport)
            if over is not None:
                # Over a cap: closed before any of the handshake is read (no TLS, so no 503 can be written).
                self._over_cap = True
                log.debug("TLS connection from %s closed at accept: over %s", self._peer or "?", over)
                transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            # The handshake's outcome is its future's: an exception if it failed; not done yet if the
            # connection went (the client left, or the deadline cut it: then `exc` says which).
            handshake = self._handshake
            if self._raw is not None:
                self._handshakes.open.discard(self._raw)
            counted, self._counted = self._counted, None
            if counted is not None:
                counted.release(self._peer)
            failed: BaseException | None = None
            if self._over_cap:
                pass   # counted as closed over its cap, not as a failed handshake
            elif not handshake.done():
                failed = exc or ConnectionResetError("the connection closed during the TLS handshake")
            elif not handshake.cancelled():
                failed = handshake.exception()
            super().connection_lost(exc)
            if handshake.done() and not handshake.cancelled():
                handshake.exception()   # retrieved: a failure is reported here, not as "never retrieved"
            if failed is not None:
                refused = RefusedHandshake.of(self._peer, failed)
                log.debug("TLS handshake from %s failed: %s", refused.peer or "?", refused.reason)
                self._handshakes.refused(refused)

    return Tls
