"""Which bucket did the storage server act on? Probes of S3 addressing through the proxy, against moto.

A storage server that reads the bucket from another place than the proxy did
(the path instead of the Host, or the Host instead of the path) acts on a
bucket the policy never judged. These helpers send one request through a
running proxy with any Host and target, signed as the storage server checks
it (moto with IAM authentication on), and say where the request landed: the
caller's signature is made with botocore's signer for exactly the Host and
target sent, so moto verifies what it receives.
"""

from __future__ import annotations

import http.client
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from proxy.config import S3Settings
from proxy.harness import ProxyThread
from tests.conftest import DUBLIN, US, make_token, proxy_config
from tests.support.iam import SignedStore, signed_store
from tests.support.recorder import Recorder
from tests.support.records import wait_for_record

# A bucket of another region that a misread Host could name (the first label of a
# Kubernetes short service name, as moto reads "bailiwick.<namespace>.svc").
DECOY = "bailiwick"
BUCKETS = {DUBLIN: "eu-west-1", US: None, DECOY: None}


@dataclass(frozen=True)
class Store(SignedStore):
    """moto with signature checks on, an IAM user's keys, and the probe buckets."""

    def keys_in(self, bucket: str) -> set[str]:
        listed = self.client().list_objects_v2(Bucket=bucket)
        return {item["Key"] for item in listed.get("Contents", [])}

    def everything(self) -> dict[str, set[str]]:
        return {bucket: self.keys_in(bucket) for bucket in BUCKETS}


@contextmanager
def verifying_store() -> Iterator[Store]:
    """moto's server that checks every signature after its set-up requests."""
    with signed_store("probe", BUCKETS) as signed:
        store = Store(signed.server, signed.key, signed.secret)
        store.client().put_object(Bucket=DUBLIN, Key="alice/inbox/1.eml", Body=b"Dublin mail")
        yield store


@pytest.fixture(scope="module", name="store")
def store_fixture() -> Iterator[Store]:
    """A module's store: bind it in the test module (``store = store_fixture``)."""
    with verifying_store() as running:
        yield running


@pytest.fixture(scope="module", name="recorder")
def recorder_fixture(store: Store) -> Iterator[Recorder]:
    """The relay in front of the module's store, recording what reaches it (``recorder = recorder_fixture``)."""
    relay = Recorder(store.server.port)
    yield relay
    relay.close()


@contextmanager
def proxy_for(settings: S3Settings, store: Store, recorder: Recorder, folder: Path) -> Iterator[ProxyThread]:
    """The real proxy with these S3 settings (as shipped) in front of `store`, through `recorder`."""
    s3 = settings
    if settings.sign is not None:
        credentials = folder / "credentials"
        credentials.write_text(f"[default]\naws_access_key_id = {store.key}\naws_secret_access_key = {store.secret}\n")
        s3 = replace(settings, sign=replace(settings.sign, credentials_file=credentials, profile="default",
                                            region="us-east-1"))
    config = proxy_config(recorder.url, folder / "audit.jsonl")
    running = ProxyThread(replace(config, s3=s3, region=None)).start()
    try:
        yield running
    finally:
        running.stop()


@dataclass(frozen=True)
class Sent:
    status: int
    body: bytes
    reached_upstream: bytes   # every byte the storage server received for this request


def send(proxy: ProxyThread, recorder: Recorder, store: Store, *, method: str, host: str, target: str,
         jurisdiction: str = "IE", body: bytes = b"", service: str = "s3",
         headers: dict[str, str] | None = None) -> Sent:
    """One request to the proxy with exactly this Host and target, signed by the caller for them.

    The Host is signed exactly as sent (botocore would sign it in lower case), as moto checks it.
    """
    request = AWSRequest(method=method, url=f"http://{host.lower()}{target}", data=body,
                         headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD", "Host": host, **(headers or {})})
    signer = S3SigV4Auth if service == "s3" else SigV4Auth   # `service`: the credential scope's service
    signer(Credentials(store.key, store.secret), service, "us-east-1").add_auth(request)
    port = int(proxy.url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    mark = recorder.mark()
    try:
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host)
        for name, value in request.headers.items():
            if name.lower() != "host":
                conn.putheader(name, value)
        conn.putheader("X-Bailiwick-Token", make_token(jurisdiction, sub=f"caller-{jurisdiction}"))
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        answer = conn.getresponse()
        data = answer.read()
    finally:
        conn.close()
    return Sent(answer.status, data, recorder.since(mark))


def unique(prefix: str = "probe") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def judged(audit: Path, marker: str) -> dict[str, Any]:
    """The audit line of the request whose resource holds `marker`."""
    return wait_for_record(audit, lambda r: marker in (r["request"]["resource"] or ""))
