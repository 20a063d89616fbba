"""`ListenerTls` without a listener: the context's defaults, and when the certificate makes the proxy not ready."""

from __future__ import annotations

import datetime
import ssl
import tempfile
from pathlib import Path

import pytest

from proxy.config.tls import ListenTlsConfig, TlsVersion
from proxy.errors import ConfigError
from proxy.tlsserver import ListenerTls, server_context
from tests.support.certs import make_ca, server_certificate, write_crl

NOW = datetime.datetime.now(datetime.UTC)


def listener(folder: Path, *, valid_from: datetime.datetime, days: float, client_ca: bool = False) -> ListenerTls:
    ca = make_ca()
    cert, key = server_certificate(ca, valid_from=valid_from, days=days).write(folder, "server")
    ca_file, _ = ca.write(folder, "ca")
    return ListenerTls(ListenTlsConfig(cert, key, ca_file if client_ca else None))


@pytest.mark.parametrize(("valid_from", "days", "at", "reason"), [
    (NOW - datetime.timedelta(days=1), 2, NOW, None),
    (NOW - datetime.timedelta(days=3), 2, NOW, "TLS certificate expired at "),
    (NOW - datetime.timedelta(days=1), 2, NOW + datetime.timedelta(days=1, seconds=1), "TLS certificate expired at "),
    (NOW + datetime.timedelta(hours=1), 2, NOW, "TLS certificate not valid before "),
])
def test_the_certificate_in_service_must_be_valid_now(tmp_path: Path, valid_from: datetime.datetime, days: float,
                                                      at: datetime.datetime, reason: str | None) -> None:
    problem = listener(tmp_path, valid_from=valid_from, days=days).problem(at)
    if reason is None:
        assert problem is None
    else:
        assert problem is not None
        assert problem.startswith(reason)


@pytest.mark.parametrize(("client_ca", "verify"), [(False, ssl.CERT_NONE), (True, ssl.CERT_REQUIRED)])
@pytest.mark.parametrize("version", list(TlsVersion))
def test_the_context_has_a_mature_proxys_defaults(tmp_path: Path, client_ca: bool, verify: ssl.VerifyMode,
                                                  version: TlsVersion) -> None:
    tls = listener(tmp_path, valid_from=NOW - datetime.timedelta(minutes=1), days=1, client_ca=client_ca)
    context = server_context(ListenTlsConfig(tls.settings.certificate, tls.settings.key, tls.settings.client_ca,
                                             min_version=version))
    assert context.minimum_version == version.ssl
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    for option in (ssl.OP_NO_RENEGOTIATION, ssl.OP_CIPHER_SERVER_PREFERENCE, ssl.OP_NO_COMPRESSION):
        assert context.options & option
    assert context.verify_mode == verify
    tls12 = {suite["name"] for suite in context.get_ciphers() if suite["protocol"] == "TLSv1.2"}
    assert tls12
    assert all(name.startswith("ECDHE-") and ("GCM" in name or "CHACHA20" in name) for name in tls12)


def test_a_pair_that_does_not_load_at_start_stops_the_start(tmp_path: Path) -> None:
    ca = make_ca()
    cert, _ = server_certificate(ca).write(tmp_path, "server")
    _, other_key = server_certificate(ca).write(tmp_path, "other")
    with pytest.raises(ConfigError, match=r"listen_tls\.certificate: .* cannot be loaded"):
        ListenerTls(ListenTlsConfig(cert, other_key))


def test_a_start_with_a_crl_needs_no_writable_temporary_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-only root filesystem without a /tmp volume: the start reads the CRL file itself (reloads need a copy)."""
    ca, clients = make_ca(), make_ca("workload CA")
    cert, key = server_certificate(ca).write(tmp_path, "server")
    client_ca, _ = clients.write(tmp_path, "clients")
    crl = tmp_path / "crl.pem"
    write_crl(crl, clients, ())
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "not there"))
    tls = ListenerTls(ListenTlsConfig(cert, key, client_ca, crl=crl))
    assert tls.context.verify_flags & ssl.VERIFY_CRL_CHECK_LEAF
    assert tls.problem() is None
