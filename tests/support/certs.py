"""Certificates made at test time with `cryptography`: a CA, server and client certificates it issues.

Every test that speaks TLS makes its own, so none expires in the repository and
each case (expired, another CA, a SPIFFE workload) is one call. Keys are P-256
(quick to make); `Issued.write` puts the PEM files where the proxy reads them.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    def write(self, folder: Path, name: str) -> tuple[Path, Path]:
        """``folder/name.crt`` and ``folder/name.key``, written; returns their paths."""
        folder.mkdir(parents=True, exist_ok=True)
        cert, key = folder / f"{name}.crt", folder / f"{name}.key"
        cert.write_bytes(self.cert_pem)
        key.write_bytes(self.key_pem)
        return cert, key


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _window(valid_from: datetime.datetime | None, days: float) -> tuple[datetime.datetime, datetime.datetime]:
    start = valid_from or datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    return start, start + days * DAY


def make_ca(common_name: str = "bailiwick test CA", *, days: float = 30) -> Issued:
    """A self-signed CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _window(None, days)
    certificate = (
        x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(certificate, key)


def issue(ca: Issued, common_name: str, names: list[x509.GeneralName], usage: x509.ObjectIdentifier, *,
          valid_from: datetime.datetime | None = None, days: float = 7, serial: int | None = None) -> Issued:
    """A leaf certificate `ca` signs, with `names` as its subject alternative names and `usage` as its EKU."""
    key = ec.generate_private_key(ec.SECP256R1())
    start, end = _window(valid_from, days)
    certificate = (
        x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(ca.certificate.subject)
        .public_key(key.public_key()).serial_number(serial or x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(certificate, key)


def server_certificate(ca: Issued, hosts: tuple[str, ...] = ("localhost", "127.0.0.1"), *,
                       valid_from: datetime.datetime | None = None, days: float = 7,
                       serial: int | None = None) -> Issued:
    """A server certificate for `hosts` (names and IP addresses)."""
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return issue(ca, hosts[0], names, ExtendedKeyUsageOID.SERVER_AUTH, valid_from=valid_from, days=days,
                 serial=serial)


def expired_server_certificate(ca: Issued, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")) -> Issued:
    """A server certificate whose validity ended a day ago."""
    return server_certificate(ca, hosts, valid_from=datetime.datetime.now(datetime.UTC) - 3 * DAY, days=2)


def spiffe_client_certificate(ca: Issued, spiffe_id: str = "spiffe://cluster.local/ns/mail/sa/reader", *,
                              valid_from: datetime.datetime | None = None, days: float = 7) -> Issued:
    """A workload's client certificate as SPIRE or Istio issue it: the SPIFFE ID is its one URI SAN."""
    common_name = spiffe_id.rsplit("/", 1)[-1]
    return issue(ca, common_name, [x509.UniformResourceIdentifier(spiffe_id)], ExtendedKeyUsageOID.CLIENT_AUTH,
                 valid_from=valid_from, days=days)


def write_crl(path: Path, ca: Issued, revoked: tuple[Issued, ...]) -> None:
    """A CRL from `ca` revoking `revoked`, swapped in whole as a Secret's rotation does."""
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca.certificate.subject)
               .last_update(now - datetime.timedelta(minutes=5)).next_update(now + datetime.timedelta(days=1)))
    for issued in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(issued.certificate.serial_number)
            .revocation_date(now - datetime.timedelta(minutes=1)).build())
    part = path.with_name(f".{path.name}.new")
    part.write_bytes(builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    os.replace(part, path)
