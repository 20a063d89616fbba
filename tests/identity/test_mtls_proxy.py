"""Client certificates as identity through the real proxy: boto3 handshakes with a workload certificate.

The proxy listens with TLS and a client CA in front of moto; its workload
rules map one SPIFFE namespace to IE and one ID to US. boto3 presents a SPIFFE
client certificate (`botocore` ``client_cert``) and no token: the certificate
is the caller. Loopback is mapped to IE as a network too, so a certificate that
maps to nothing shows it is refused rather than handed the network's
jurisdiction. Every answer is checked in the audit log by its SPIFFE ID.

Hostile combinations: a certificate and a token naming different jurisdictions
is refused ``AmbiguousIdentity`` (never resolved by picking one), audited, and
nothing reaches moto; a certificate of another CA is refused in the handshake
even beside a valid token, before a byte of the request is read.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError, ConnectionClosedError, SSLError

from proxy.config import NetworkRule
from proxy.config.tls import ListenTlsConfig
from proxy.harness import ProxyThread
from tests.conftest import DUBLIN, US, make_token, proxy_config
from tests.identity.test_mtls import IE_ID, UNMAPPED_ID, US_ID, WORKLOADS
from tests.support.certs import Issued, make_ca, server_certificate, spiffe_client_certificate
from tests.support.recorder import Recorder
from tests.support.records import wait_for_record, written_records
from tests.support.serve import wait_until


@dataclass(frozen=True, slots=True)
class MtlsProxy:
    proxy: ProxyThread
    folder: Path
    ca_file: Path
    audit: Path
    clients: Issued   # the client CA the proxy trusts

    def client(self, spiffe_id: str, token: str | None = None, *, issuer: Issued | None = None) -> Any:
        """boto3 presenting a workload certificate for `spiffe_id` and `token` (a jurisdiction; None: no token).

        `issuer`: the certificate's CA (the client CA the proxy trusts unless given).
        """
        issuer = issuer or self.clients
        name = f"{issuer.certificate.serial_number:x}-{spiffe_id.rsplit('/', 3)[-3]}"
        certificate = spiffe_client_certificate(issuer, spiffe_id).write(self.folder / "clients", name)
        assert self.proxy.running is not None
        port = self.proxy.running.data_address[1]
        client = boto3.client("s3", endpoint_url=f"https://127.0.0.1:{port}", region_name="us-east-1",
                              verify=str(self.ca_file), aws_access_key_id="testing", aws_secret_access_key="testing",
                              config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                                                client_cert=(str(certificate[0]), str(certificate[1]))))
        if token is not None:
            made = make_token(token)
            client.meta.events.register("before-send.s3", lambda request, **_: request.headers.__setitem__(
                "X-Bailiwick-Token", made))
        return client


@pytest.fixture(scope="module")
def mtls(recorder: Recorder, seeded: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MtlsProxy]:
    folder = tmp_path_factory.mktemp("mtls")
    server_ca = make_ca()
    ca_file, _ = server_ca.write(folder, "ca")
    cert, key = server_certificate(server_ca).write(folder / "tls", "server")
    clients = make_ca("workload CA")
    client_ca, _ = clients.write(folder / "clients", "ca")
    audit = folder / "audit.jsonl"
    config = proxy_config(recorder.url, audit, listen_tls=ListenTlsConfig(certificate=cert, key=key,
                                                                          client_ca=client_ca))
    config = replace(config, identity=replace(config.identity, workloads=WORKLOADS, networks=(
        NetworkRule(ipaddress.ip_network("127.0.0.1/32"), "IE"),)))
    running = ProxyThread(config).start()
    yield MtlsProxy(running, folder, ca_file, audit, clients)
    running.stop()


def audited(mtls: MtlsProxy, subject: str, decision: str) -> dict[str, Any]:
    return wait_for_record(mtls.audit, lambda record: (record["caller"] or {}).get("subject") == subject
                           and record["decision"] == decision)


def test_a_workload_mapped_to_ie_reads_irish_data(mtls: MtlsProxy) -> None:
    answer = mtls.client(IE_ID).get_object(Bucket=DUBLIN, Key="alice/inbox/1.eml")
    assert answer["Body"].read() == b"Dublin mail"
    line = audited(mtls, IE_ID, "allow")
    assert line["caller"]["jurisdiction"] == "IE"


@pytest.mark.parametrize(("spiffe_id", "code", "status"), [
    (US_ID, "AccessDenied", 403),
    # Loopback is IE as a network: an unmapped certificate is still nobody, never the network.
    (UNMAPPED_ID, "InvalidToken", 403),
])
def test_a_workload_not_mapped_to_ie_is_refused(mtls: MtlsProxy, spiffe_id: str, code: str, status: int) -> None:
    with pytest.raises(ClientError) as refused:
        mtls.client(spiffe_id).get_object(Bucket=DUBLIN, Key="alice/inbox/1.eml")
    error = refused.value.response
    assert (error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"]) == (code, status)
    decision_id = error["ResponseMetadata"]["RequestId"]
    line = wait_for_record(mtls.audit, lambda record: record["decision_id"] == decision_id)
    assert line["decision"] == "deny"
    if spiffe_id == US_ID:
        assert (line["caller"]["subject"], line["caller"]["jurisdiction"]) == (US_ID, "US")


@pytest.mark.parametrize(("spiffe_id", "token", "bucket", "key"), [
    pytest.param(IE_ID, "US", DUBLIN, "alice/inbox/1.eml", id="IE workload, US token, Irish data"),
    pytest.param(IE_ID, "US", US, "bob/inbox/1.eml", id="IE workload, US token, US data"),
    pytest.param(US_ID, "IE", DUBLIN, "alice/inbox/1.eml", id="US workload, IE token, Irish data"),
])
def test_a_certificate_and_a_token_naming_different_jurisdictions_are_refused(
    mtls: MtlsProxy, recorder: Recorder, spiffe_id: str, token: str, bucket: str, key: str,
) -> None:
    """Whichever source would allow the read, the two disagree: refused, never resolved by picking one."""
    mark = recorder.mark()
    with pytest.raises(ClientError) as refused:
        mtls.client(spiffe_id, token).get_object(Bucket=bucket, Key=key)
    error = refused.value.response
    assert (error["ResponseMetadata"]["HTTPStatusCode"], error["Error"]["Code"]) == (403, "AmbiguousIdentity")
    assert error["ResponseMetadata"]["HTTPHeaders"]["x-bailiwick-error-code"] == "AmbiguousIdentity"
    assert recorder.since(mark) == b""
    line = wait_for_record(mtls.audit, lambda record: record["decision_id"] == error["ResponseMetadata"]["RequestId"])
    assert (line["decision"], line["error_code"]) == ("deny", "AmbiguousIdentity")
    assert spiffe_id in line["reason"]
    assert (line["caller"]["subject"], line["caller"]["jurisdiction"]) == (None, None)


def test_a_token_that_agrees_with_the_certificate_is_the_caller(mtls: MtlsProxy) -> None:
    """The control beside the refusals: agreeing sources are one caller."""
    answer = mtls.client(IE_ID, "IE").get_object(Bucket=DUBLIN, Key="alice/inbox/1.eml")
    assert answer["Body"].read() == b"Dublin mail"


def test_a_certificate_of_another_ca_is_refused_beside_a_valid_token(mtls: MtlsProxy, recorder: Recorder) -> None:
    mark = recorder.mark()
    before = len(handshake_refusals(mtls))
    stranger = mtls.client(IE_ID, "IE", issuer=make_ca("another CA"))
    # TLS 1.3 sends the server's refusal after the client's handshake ends: it may surface on the request.
    with pytest.raises((SSLError, ConnectionClosedError)):
        stranger.get_object(Bucket=DUBLIN, Key="alice/inbox/1.eml")
    assert recorder.since(mark) == b""
    # Audited as a refused handshake: no request was read, so no token was, and no subject is named.
    # (botocore may open a second connection after the first is refused: one line per handshake.)
    wait_until(lambda: len(handshake_refusals(mtls)) > before, timeout=5)
    for line in handshake_refusals(mtls)[before:]:
        assert (line["decision"], line["error_code"], line["status"], line["caller"]["subject"]) == (
            "deny", "ClientCertificateRefused", 495, None)
        assert line["reason"] == "TLS handshake refused: the client certificate is not issued by a CA of " \
                                 "listen_tls.client_ca"


def handshake_refusals(mtls: MtlsProxy) -> list[dict[str, Any]]:
    return [line for line in written_records(mtls.audit) if line["request"]["operation"] == "TlsHandshake"]
