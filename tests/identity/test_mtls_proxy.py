"""Client certificates as identity through the real proxy: boto3 handshakes with a workload certificate.

The proxy listens with TLS and a client CA in front of moto; its workload
rules map one SPIFFE namespace to IE and one ID to US. boto3 presents a SPIFFE
client certificate (`botocore` ``client_cert``) and no token: the certificate
is the caller. Loopback is mapped to IE as a network too, so a certificate that
maps to nothing shows it is refused rather than handed the network's
jurisdiction. Every answer is checked in the audit log by its SPIFFE ID.
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
from botocore.exceptions import ClientError

from proxy.config import NetworkRule
from proxy.config.tls import ListenTlsConfig
from proxy.harness import ProxyThread
from tests.conftest import DUBLIN, proxy_config
from tests.identity.test_mtls import IE_ID, UNMAPPED_ID, US_ID, WORKLOADS
from tests.support.certs import Issued, make_ca, server_certificate, spiffe_client_certificate
from tests.support.recorder import Recorder
from tests.support.records import wait_for_record


@dataclass(frozen=True, slots=True)
class MtlsProxy:
    proxy: ProxyThread
    folder: Path
    ca_file: Path
    audit: Path
    clients: Issued   # the client CA the proxy trusts

    def client(self, spiffe_id: str) -> Any:
        """boto3 presenting a workload certificate for `spiffe_id` from the client CA, and no token."""
        certificate = spiffe_client_certificate(self.clients, spiffe_id).write(
            self.folder / "clients", spiffe_id.rsplit("/", 3)[-3])
        assert self.proxy.running is not None
        port = self.proxy.running.data_address[1]
        return boto3.client("s3", endpoint_url=f"https://127.0.0.1:{port}", region_name="us-east-1",
                            verify=str(self.ca_file), aws_access_key_id="testing", aws_secret_access_key="testing",
                            config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                                              client_cert=(str(certificate[0]), str(certificate[1]))))


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
