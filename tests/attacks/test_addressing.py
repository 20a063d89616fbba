"""Virtual-hosted vs path-style: the proxy and the storage server must read the bucket from the same place.

The reproduction: with the separate-proxy example configuration (endpoints
such as ``bailiwick.mail-eu-west-1.svc.cluster.local``), a Host
``BUCKET.<endpoint>`` was read by the proxy as virtual-hosted and judged on
BUCKET, and forwarded as sent; moto reads a ``*.svc.cluster.local`` Host
path-style, so it took the bucket from the path. An Irish caller judged on
the Dublin bucket wrote into a US bucket, and a US caller judged on its own
bucket read Dublin mail. And the reverse: a Host the proxy read path-style
(``bailiwick.mail-eu-west-1.svc``, then an endpoint) moto read as the bucket
``bailiwick``.

Each case runs the real proxy in front of moto with its signature checks on
(IAM authentication), with the shipped configuration's S3 settings in re-sign
mode as shipped, and the same endpoints with callers signing for themselves.
It asserts that nothing of the other bucket was read or written (moto's
state, read directly), and that the audit line names the caller's real
jurisdiction and the bucket the request really touched.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from proxy.config import S3Settings, load_config
from proxy.harness import ProxyThread
from tests.conftest import DUBLIN, ROOT, US
from tests.support.addressing import DECOY, Store, judged, proxy_for, recorder_fixture, send, store_fixture, unique
from tests.support.recorder import Recorder

SEPARATE_PROXY = ROOT / "deploy/kubernetes/variants/separate-proxy/bailiwick.yaml"
SERVICE = "bailiwick.mail-eu-west-1.svc.cluster.local"
REFUSED = {400, 403}


def separate_proxy_settings(tmp: Path) -> S3Settings:
    raw = yaml.safe_load(SEPARATE_PROXY.read_text())
    file = tmp / "bailiwick.yaml"
    file.write_text(yaml.safe_dump({"s3": raw["s3"]}))
    return load_config(file, environ={}).s3


# moto checking every signature, and the relay in front of it: one of each per module.
store, recorder = store_fixture, recorder_fixture


@pytest.fixture(scope="module", params=["re-signed", "caller-signed"])
def proxy(request: pytest.FixtureRequest, store: Store, recorder: Recorder,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ProxyThread, Path]]:
    """The separate-proxy example's S3 settings: as shipped (re-sign mode), and without re-signing."""
    folder = tmp_path_factory.mktemp(f"addressing-{request.param}")
    settings = separate_proxy_settings(folder)
    assert settings.sign is not None
    assert SERVICE in settings.endpoints
    if request.param == "caller-signed":
        settings = replace(settings, sign=None)
    with proxy_for(settings, store, recorder, folder) as running:
        yield running, folder / "audit.jsonl"


def test_an_irish_caller_judged_on_dublin_does_not_write_into_a_us_bucket(
    proxy: tuple[ProxyThread, Path], store: Store, recorder: Recorder,
) -> None:
    running, audit = proxy
    port = running.url.rsplit(":", 1)[1]
    marker = unique("exfil")
    before = store.everything()
    sent = send(running, recorder, store, method="PUT", host=f"{DUBLIN}.{SERVICE}:{port}",
                target=f"/{US}/{marker}", body=b"Irish mail, for the US bucket")
    after = store.everything()
    assert after[US] == before[US], "the US bucket was written"
    assert after[DECOY] == before[DECOY]
    if sent.status in REFUSED:
        assert sent.reached_upstream == b"", "a refused request reached the storage server"
        assert after == before
        return
    # Accepted (re-sign mode): forwarded path-style, it lands in Dublin, under the key the caller wrote.
    assert sent.status == 200, sent
    assert f"PUT /{DUBLIN}/{US}/{marker} HTTP/1.1\r\n".encode() in sent.reached_upstream
    assert after[DUBLIN] - before[DUBLIN] == {f"{US}/{marker}"}
    line = judged(audit, marker)
    assert line["caller"]["jurisdiction"] == "IE"
    assert line["request"]["resource"] == f"s3://{DUBLIN}/{US}/{marker}"


def test_a_us_caller_does_not_read_dublin_mail(
    proxy: tuple[ProxyThread, Path], store: Store, recorder: Recorder,
) -> None:
    running, audit = proxy
    port = running.url.rsplit(":", 1)[1]
    marker = "alice/inbox/1.eml"
    sent = send(running, recorder, store, method="GET", host=f"{US}.{SERVICE}:{port}",
                target=f"/{DUBLIN}/{marker}", jurisdiction="US")
    assert b"Dublin mail" not in sent.body
    # Nothing that reached the storage server names the Dublin object path-style.
    assert f" /{DUBLIN}/".encode() not in sent.reached_upstream
    if sent.status in REFUSED:
        assert sent.reached_upstream == b""
        return
    assert sent.status == 404, sent   # the key "mail-eu-dublin/alice/inbox/1.eml" of the US bucket: none
    assert f"GET /{US}/{DUBLIN}/{marker} HTTP/1.1\r\n".encode() in sent.reached_upstream
    line = judged(audit, f"s3://{US}/{DUBLIN}/{marker}")
    assert line["caller"]["jurisdiction"] == "US"


@pytest.mark.parametrize("host", [
    "bailiwick.mail-eu-west-1.svc",       # moto reads it as the bucket "bailiwick"
    "bailiwick.mail-eu-west-1.svc:{port}",
])
def test_a_host_the_storage_server_reads_as_a_bucket_is_not_taken_for_an_endpoint(
    host: str, proxy: tuple[ProxyThread, Path], store: Store, recorder: Recorder,
) -> None:
    running, _audit = proxy
    marker = unique("decoy")
    before = store.everything()
    sent = send(running, recorder, store, method="PUT", host=host.format(port=running.url.rsplit(":", 1)[1]),
                target=f"/{DUBLIN}/{marker}", body=b"for Dublin")
    after = store.everything()
    assert after[DECOY] == before[DECOY], f"the bucket {DECOY!r} (another region) was written"
    assert sent.status in REFUSED, sent
    assert sent.reached_upstream == b""
    assert after == before


@pytest.mark.parametrize(("host", "reason"), [
    (f"my.{DUBLIN}.{SERVICE}", b"dots"),            # moto would read the bucket "my"
    (f"www.{SERVICE}", b"www"),                     # moto drops "www."
    (f"localhost-x.{SERVICE}", b"localhost"),       # moto reads a Host starting "localhost" path-style
])
def test_caller_signed_virtual_hosted_forms_the_storage_server_splits_otherwise_are_refused(
    host: str, reason: bytes, store: Store, recorder: Recorder, tmp_path: Path,
) -> None:
    # Even where the storage server is said to serve virtual-hosted requests.
    settings = S3Settings(endpoints=(SERVICE,), virtual_hosts=(SERVICE,))
    with proxy_for(settings, store, recorder, tmp_path) as running:
        before = store.everything()
        sent = send(running, recorder, store, method="PUT", host=host, target=f"/{DUBLIN}/{unique()}", body=b"x")
        assert sent.status == 400, sent
        assert reason in sent.body
        assert sent.reached_upstream == b""
        assert store.everything() == before


def test_re_signed_virtual_hosted_requests_reach_the_data_path_style(
    store: Store, recorder: Recorder, tmp_path: Path,
) -> None:
    """A client's virtual-hosted requests, rewritten: read back, listed and deleted through the proxy."""
    settings = separate_proxy_settings(tmp_path)
    with proxy_for(settings, store, recorder, tmp_path) as running:
        port = running.url.rsplit(":", 1)[1]
        # moto's own signature check mis-reads "+", "%", "!" and non-ASCII in a path (path-style too),
        # so this key has only a space and "~"; the unit tests check every byte of the rewrite.
        key = f"{unique('alice')}/a key~1"
        quoted = "/" + key.replace(" ", "%20")
        put = send(running, recorder, store, method="PUT", host=f"{DUBLIN}.{SERVICE}:{port}", target=quoted,
                   body=b"body")
        assert put.status == 200, put
        assert f"PUT /{DUBLIN}{quoted} HTTP/1.1\r\nHost: {SERVICE}:{port}\r\n".encode() in put.reached_upstream
        assert key in store.keys_in(DUBLIN)
        got = send(running, recorder, store, method="GET", host=f"{DUBLIN}.{SERVICE}", target=quoted)
        assert (got.status, got.body) == (200, b"body")
        listed = send(running, recorder, store, method="GET", host=f"{DUBLIN}.{SERVICE}",
                      target="/?list-type=2&prefix=" + key.split("/")[0])
        assert listed.status == 200, listed
        assert key.split("/")[0].encode() in listed.body
        assert send(running, recorder, store, method="DELETE", host=f"{DUBLIN}.{SERVICE}",
                    target=quoted).status == 204
        assert key not in store.keys_in(DUBLIN)


@pytest.mark.parametrize("host", [
    # moto compares ".svc.cluster.local" with case: these it reads as the bucket "bailiwick" (or "BAILIWICK").
    f"{SERVICE[: -len('local')]}LOCAL",
    f"{SERVICE[: -len('local')]}LOCAL:{{port}}",
    f"{SERVICE.upper()}:{{port}}",
    "Bailiwick.mail-eu-west-1.svc.cluster.local",
    "{dublin}.Bailiwick.mail-eu-west-1.svc.cluster.local",
    "{dublin}.bailiwick.mail-eu-west-1.svc.cluster.LOCAL",
])
def test_a_host_in_another_case_is_refused_unforwarded(
    host: str, proxy: tuple[ProxyThread, Path], store: Store, recorder: Recorder,
) -> None:
    running, _audit = proxy
    marker = unique("case")
    before = store.everything()
    sent = send(running, recorder, store, method="PUT",
                host=host.format(port=running.url.rsplit(":", 1)[1], dublin=DUBLIN),
                target=f"/{DUBLIN}/{marker}", body=b"for Dublin")
    after = store.everything()
    assert after[DECOY] == before[DECOY], f"the bucket {DECOY!r} (another region) was written"
    assert sent.status == 400, sent
    assert b"lower case" in sent.body
    assert sent.reached_upstream == b""
    assert after == before


# A storage server that serves several services on one port (moto's server, LocalStack) picks the
# service from the signature's credential scope (or X-Amz-Target): a request the proxy judged as an
# S3 read of an allowed object reached moto's IAM instead.
@pytest.mark.parametrize(("service", "headers"), [
    ("iam", {}),
    ("sts", {}),
    ("IAM", {}),
    ("s3", {"X-Amz-Target": "DynamoDB_20120810.ListTables"}),
    ("s3", {"x-amz-target": "AmazonSQS.ListQueues"}),
])
def test_a_request_for_another_service_is_refused_unforwarded(
    service: str, headers: dict[str, str], proxy: tuple[ProxyThread, Path], store: Store, recorder: Recorder,
) -> None:
    running, _audit = proxy
    sent = send(running, recorder, store, method="GET", host=SERVICE, target=f"/{US}/bob/inbox/1.eml",
                jurisdiction="US", service=service, headers=headers)
    assert sent.status == 400, sent
    assert sent.reached_upstream == b""
