"""The client certificate a TLS handshake verified, as a plain value the identity layer can read.

With `listen_tls.client_ca`, every connection to the data port carries a client
certificate that chains to one of those CAs (the handshake refuses the rest).
The gateway reads it from the connection (`ssl.SSLObject.getpeercert`, the
certificate as OpenSSL verified it) into a `PeerCertificate` on the request head,
so that what decides never touches a socket: the SPIFFE ID (the one URI SAN of
an X.509-SVID, ``spiffe://trust-domain/path``) and the subject, in RFC 4514's
order and form. A certificate with several URI SANs, or one that is not a SPIFFE
ID exactly as the specification writes it (`proxy.spiffe`), has no SPIFFE ID;
its URIs are kept for the record. A connection's certificate is read at its
first request and kept for the later ones (decoding it costs ~30 µs): the
listener refuses renegotiation, so it cannot change while the connection lasts.
"""

from __future__ import annotations

import ssl
import weakref
from typing import Any, NamedTuple

from proxy import spiffe

# getpeercert()'s attribute names, as RFC 4514 writes them (others are written as getpeercert names them).
_SHORT = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C",
          "localityName": "L", "stateOrProvinceName": "ST", "streetAddress": "STREET", "domainComponent": "DC",
          "userId": "UID"}


class PeerCertificate(NamedTuple):
    """A verified client certificate: its SPIFFE ID (None: it has none) and subject."""

    spiffe_id: str | None
    subject: str                  # RFC 4514, most specific first: "CN=reader,O=Example"
    uris: tuple[str, ...] = ()    # every URI SAN, as written


# Per connection (its SSLObject), forgotten with it.
_READ: weakref.WeakKeyDictionary[ssl.SSLObject, PeerCertificate | None] = weakref.WeakKeyDictionary()


def connection_certificate(tls: ssl.SSLObject) -> PeerCertificate | None:
    """The verified client certificate of the connection `tls` (None: none), read at its first request."""
    try:
        return _READ[tls]
    except KeyError:
        found = _READ[tls] = peer_certificate(tls.getpeercert())
        return found


def peer_certificate(decoded: dict[str, Any] | None) -> PeerCertificate | None:
    """The value of ``getpeercert()`` (None or empty: no verified certificate) as a `PeerCertificate`."""
    if not decoded:
        return None
    uris = tuple(str(value) for kind, value in decoded.get("subjectAltName", ()) if kind == "URI")
    spiffe_id = uris[0] if len(uris) == 1 and spiffe.problem(uris[0]) is None else None
    return PeerCertificate(spiffe_id, _subject(decoded.get("subject", ())), uris)


def _subject(rdns: Any) -> str:
    # getpeercert() lists the RDNs as the certificate does (most general first); RFC 4514 reverses them.
    parts = []
    for rdn in reversed(tuple(rdns)):
        parts.append("+".join(f"{_SHORT.get(name, name)}={_escape(str(value))}" for name, value in rdn))
    return ",".join(parts)


def _escape(value: str) -> str:
    escaped = "".join(f"\\{char}" if char in ',+"\\<>;=' else char for char in value)
    if escaped.startswith((" ", "#")):
        escaped = "\\" + escaped
    if escaped.endswith(" ") and not escaped.endswith("\\ "):
        escaped = escaped[:-1] + "\\ "
    return escaped
