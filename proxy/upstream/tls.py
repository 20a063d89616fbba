"""TLS to the storage server: always verified, optionally pinned to the keys it may present.

An ``https://`` upstream's certificate is verified against `upstream.ca_bundle`
(or the system's roots) and the URL's host name, with TLS 1.2 at least; there is
no setting that turns this off. The name verified is the one sent as SNI, and
the one the pool's ``Host`` (`Pool.netloc`) is made of: all three come from
`upstream.url`, so they cannot disagree.

`upstream.pin_sha256` adds a check the chain cannot satisfy alone: the
certificate's SubjectPublicKeyInfo must hash to one of the pins (HPKP's and
Envoy's ``verify_certificate_spki`` form), so a certificate another trusted CA
issued for the same name is refused. Pins name the key, not the certificate,
so a certificate renewed on the same key still matches.

Every refusal is an `UpstreamTlsRefused` raised before a byte of the request
is written: the exchange is a 502 for the caller, never a request sent on
without the checks (and never in clear).
"""

from __future__ import annotations

import base64
import hashlib
import ssl
from collections.abc import Collection
from urllib.parse import urlsplit

import aiohttp
from aiohttp.client_proto import ResponseHandler
from aiohttp.client_reqrep import ClientRequest
from aiohttp.tracing import Trace
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from proxy.config import UpstreamConfig
from proxy.errors import ConfigError, UpstreamTlsRefused


def client_context(config: UpstreamConfig) -> ssl.SSLContext:
    """The context every connection to an https:// upstream is made with (read when the proxy starts)."""
    try:
        context = ssl.create_default_context(cafile=str(config.ca_bundle) if config.ca_bundle is not None else None)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"upstream.ca_bundle: {config.ca_bundle} holds no usable CA certificate (PEM): "
                          f"{exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # create_default_context's defaults, stated: they are what this module promises.
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def spki_sha256(certificate_der: bytes) -> str:
    """The base64 SHA-256 of a DER certificate's SubjectPublicKeyInfo: what `upstream.pin_sha256` lists."""
    key = x509.load_der_x509_certificate(certificate_der).public_key()
    info = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(info).digest()).decode()


def check_pins(ssl_object: ssl.SSLObject | ssl.SSLSocket | None, pins: Collection[str], where: str) -> None:
    """Refuse a connection whose leaf certificate's key is none of `pins` (no pins: nothing to check)."""
    if not pins:
        return
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        raise UpstreamTlsRefused(f"the storage server {where} presented no certificate to check against "
                                 "upstream.pin_sha256, so nothing was sent to it")
    seen = spki_sha256(der)
    if seen not in pins:
        raise UpstreamTlsRefused(f"the storage server {where} presented a certificate whose key ({seen}) is not "
                                 "one of upstream.pin_sha256, so nothing was sent to it")


def refused(error: ssl.SSLError, where: str) -> UpstreamTlsRefused:
    """The handshake with `where` failed: why, in the operator's words."""
    if isinstance(error, ssl.SSLCertVerificationError):
        why = f"its certificate did not verify ({error.verify_message})"
    else:
        why = f"the TLS handshake failed ({error.reason or error})"
    return UpstreamTlsRefused(f"the storage server {where} was refused: {why}, so nothing was sent to it")


class VerifiedConnector(aiohttp.TCPConnector):
    """aiohttp's connector for a client of the storage server (the recovery tools): `client_context`'s
    checks, and the pins checked once on each new connection, before a request is written on it.

    The pins are checked where aiohttp makes a connection (`_create_connection`, which its own Unix-socket
    and named-pipe connectors override too), not in `connect`: a pooled connection is the same TLS session,
    its certificate already checked, so its key is not hashed again for every request.
    """

    def __init__(self, config: UpstreamConfig) -> None:
        https = config.url.startswith("https://")
        super().__init__(ssl=client_context(config) if https else True)
        self._pins = frozenset(config.pin_sha256) if https else frozenset()
        # Named as the pool names it (`Pool.netloc`): host and port, never a userinfo part of the URL.
        self._where = urlsplit(config.url).netloc.rpartition("@")[2]

    async def _create_connection(
        self, req: ClientRequest, traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - aiohttp's signature, overridden
    ) -> ResponseHandler:
        proto = await super()._create_connection(req, traces, timeout)
        transport = proto.transport
        try:
            check_pins(transport.get_extra_info("ssl_object") if transport is not None else None, self._pins,
                       self._where)
        except UpstreamTlsRefused as exc:
            proto.close()   # never pooled: `connect` releases its slot when this raises
            raise aiohttp.ClientConnectionError(exc.message) from None
        return proto
