"""The Transit key service against a real OpenBao dev server (and a fake one for the server's failures).

What only Transit does: the justification headers reach OpenBao's own audit
log; a key that is not derived (or not AES-GCM) is refused; a deleted key
refuses; rotation and rewrap move a wrapped key to ``vault:v2:``; an
unreachable or hanging server is `KeyServiceUnavailable` within the timeout;
the server's answers map to refusals (4xx) or unavailability (429, 5xx).
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from proxy.crypto.keyservice import Justification
from proxy.crypto.transit import TransitKeyService, header_value
from proxy.errors import ConfigError, KeyReleaseRefused, KeyServiceUnavailable
from proxy.localstore import free_port
from tests.support.keyservices import Bao, assert_unusable, bao_fixture, running_bao  # noqa: F401  (fixture "bao")

CONTEXT = b"bailiwick-v1\x00dublin-mail\x00eu-west-1\x00mail-eu-dublin\x00inbox/0001.eml"
WHY = Justification("d-transit", "IE", "dublin-mail", "7")


def audited_headers(server: Bao, decision_id: str, path: str) -> dict[str, list[str]]:
    """The request headers OpenBao's audit log recorded for the request of `decision_id` on `path`."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if server.audit_log.exists():
            for line in server.audit_log.read_text().splitlines():
                entry = json.loads(line)
                request = entry.get("request", {})
                headers: dict[str, list[str]] = request.get("headers", {})
                if entry.get("type") == "request" and request.get("path") == path and \
                        headers.get("x-bailiwick-decision-id") == [decision_id]:
                    return headers
        time.sleep(0.1)
    raise AssertionError(f"no audited request on {path} for {decision_id}")


JUSTIFICATIONS = [
    ("plain", Justification("", "IE", "dublin-mail", "2026-12-01T10:00:00Z"),
     {"x-bailiwick-jurisdiction": ["IE"], "x-bailiwick-dataset": ["dublin-mail"],
      "x-bailiwick-policy-version": ["2026-12-01T10:00:00Z"]}),
    ("not ASCII, percent-encoded", Justification("", "IE", "courrier-é%", "v1\r\nX-Injected: 1"),
     {"x-bailiwick-dataset": ["courrier-%C3%A9%25"], "x-bailiwick-policy-version": ["v1%0D%0AX-Injected: 1"]}),
]


@pytest.mark.parametrize("operation", ["generate", "unwrap"])
@pytest.mark.parametrize(("case", "why", "expected"), JUSTIFICATIONS, ids=[c[0] for c in JUSTIFICATIONS])
def test_justification_reaches_the_audit_log(bao: Bao, operation: str, case: str, why: Justification,
                                             expected: dict[str, list[str]]) -> None:
    why = why._replace(decision_id=f"d-{uuid.uuid4().hex}")
    service = bao.service()
    made = service.generate(CONTEXT, why if operation == "generate" else WHY)
    if operation == "unwrap":
        service.unwrap(made.wrapped, CONTEXT, why)
    path = "transit/datakey/plaintext/bailiwick" if operation == "generate" else "transit/decrypt/bailiwick"
    headers = audited_headers(bao, why.decision_id, path)
    for name, value in expected.items():
        assert headers.get(name) == value
    assert "x-injected" not in headers
    service.close()


@pytest.mark.parametrize(("value", "sent"), [
    ("IE", "IE"), ("a b/c:d", "a b/c:d"), ("100%", "100%25"), ("é", "%C3%A9"), ("\n", "%0A"), ("\x7f", "%7F"),
    (" padded  ", "%20padded%20%20"), ("  ", "%20%20"), ("", ""),
])
def test_header_value(value: str, sent: str) -> None:
    assert header_value(value) == sent


UNUSABLE_KEYS = [
    ("not derived", {"derived": False}, "not derived"),
    ("another type", {"derived": True, "key_type": "chacha20-poly1305"}, "chacha20-poly1305"),
]


@pytest.mark.parametrize(("case", "options", "said"), UNUSABLE_KEYS, ids=[c[0] for c in UNUSABLE_KEYS])
def test_an_unusable_key_is_refused(bao: Bao, case: str, options: dict[str, Any], said: str) -> None:
    name = f"unusable-{uuid.uuid4().hex[:8]}"
    bao.create_key(name, **options)
    service = bao.service(name)
    assert_unusable(service, said, name)
    with pytest.raises(KeyReleaseRefused, match=said):
        service.unwrap("vault:v1:" + "A" * 60, CONTEXT, WHY)


def test_a_deleted_key_refuses(bao: Bao) -> None:
    name = f"deleted-{uuid.uuid4().hex[:8]}"
    bao.create_key(name)
    service = bao.service(name)
    made = service.generate(CONTEXT, WHY)
    assert service.unwrap(made.wrapped, CONTEXT, WHY) == made.plaintext
    bao.delete_key(name)
    with pytest.raises(KeyReleaseRefused, match=name):
        service.unwrap(made.wrapped, CONTEXT, WHY)
    with pytest.raises(KeyReleaseRefused):
        service.generate(CONTEXT, WHY)
    assert "no such key" in (service.probe() or "")


def region_policy(key: str, *, frozen: bool) -> str:
    """A token policy for bailiwick on `key`: read the key always; make, release, rewrap unless frozen."""
    rules = f'path "transit/keys/{key}" {{ capabilities = ["read"] }}\n'
    if not frozen:
        for operation in ("datakey/plaintext", "decrypt", "rewrap"):
            rules += f'path "transit/{operation}/{key}" {{ capabilities = ["update"] }}\n'
    return rules


def test_freeze_and_thaw_by_policy(bao: Bao) -> None:
    """The operator's freeze: the proxy's token loses decrypt; reads are refused until the policy returns."""
    name, policy = f"frozen-{uuid.uuid4().hex[:8]}", f"bailiwick-{uuid.uuid4().hex[:8]}"
    bao.create_key(name)
    client = bao.client()
    client.sys.create_or_update_policy(policy, region_policy(name, frozen=False))
    token = client.auth.token.create(policies=[policy], no_default_policy=True)["auth"]["client_token"]
    service = TransitKeyService(bao.address, name, token=token)
    made = service.generate(CONTEXT, WHY)
    client.sys.create_or_update_policy(policy, region_policy(name, frozen=True))
    with pytest.raises(KeyReleaseRefused, match="permission denied"):
        service.unwrap(made.wrapped, CONTEXT, WHY)
    with pytest.raises(KeyReleaseRefused, match="permission denied"):
        service.generate(CONTEXT, WHY)
    client.sys.create_or_update_policy(policy, region_policy(name, frozen=False))
    assert service.unwrap(made.wrapped, CONTEXT, WHY) == made.plaintext
    service.close()


def test_a_missing_key_and_a_bad_token_are_refused(bao: Bao) -> None:
    assert "no such key" in (bao.service("never-created").probe() or "")
    stranger = TransitKeyService(bao.address, "bailiwick", token="not-a-token")
    with pytest.raises(KeyReleaseRefused, match="permission denied"):
        stranger.generate(CONTEXT, WHY)
    assert "permission denied" in (stranger.probe() or "")


def test_rotation_and_rewrap(bao: Bao) -> None:
    name = f"rotated-{uuid.uuid4().hex[:8]}"
    bao.create_key(name)
    service = bao.service(name)
    made = service.generate(CONTEXT, WHY)
    assert made.wrapped.startswith("vault:v1:")
    client = bao.client()
    client.secrets.transit.rotate_key(name)
    rewrapped = service.rewrap(made.wrapped, CONTEXT)
    assert rewrapped.startswith("vault:v2:")
    assert service.unwrap(rewrapped, CONTEXT, WHY) == made.plaintext
    assert service.generate(CONTEXT, WHY).wrapped.startswith("vault:v2:")
    # Retiring version 1: what was rewrapped still opens, what was not does not.
    client.secrets.transit.update_key_configuration(name, min_decryption_version=2)
    assert service.unwrap(rewrapped, CONTEXT, WHY) == made.plaintext
    with pytest.raises(KeyReleaseRefused):
        service.unwrap(made.wrapped, CONTEXT, WHY)


def test_the_token_function_is_asked_every_time(bao: Bao) -> None:
    asked: list[int] = []

    def token() -> str:
        asked.append(1)
        return bao.token

    service = TransitKeyService(bao.address, "bailiwick", token=token)
    made = service.generate(CONTEXT, WHY)
    service.unwrap(made.wrapped, CONTEXT, WHY)
    assert len(asked) == 3   # the key's first look, datakey, decrypt


@pytest.mark.parametrize(("address", "options", "said"), [
    ("127.0.0.1:8200", {}, "http:// or https://"),
    ("vault.example:8200", {}, "http:// or https://"),
    ("http://127.0.0.1:8200", {"timeout_seconds": 0}, "timeout must be positive"),
])
def test_a_bad_setting_is_a_configuration_error(address: str, options: dict[str, Any], said: str) -> None:
    with pytest.raises(ConfigError, match=said):
        TransitKeyService(address, "bailiwick", token="t", **options)


def test_a_justification_with_spaces_at_the_ends_is_sent(bao: Bao) -> None:
    why = Justification(f"d-{uuid.uuid4().hex}", " IE", "dublin-mail ", "7")
    service = bao.service()
    service.generate(CONTEXT, why)
    headers = audited_headers(bao, why.decision_id, "transit/datakey/plaintext/bailiwick")
    assert headers["x-bailiwick-jurisdiction"] == ["%20IE"]
    assert headers["x-bailiwick-dataset"] == ["dublin-mail%20"]
    service.close()


@pytest.fixture(scope="module")
def bao_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bao]:
    with running_bao(tmp_path_factory.mktemp("bao-tls"), tls=True) as server:
        yield server


def test_tls_with_the_servers_ca(bao_tls: Bao) -> None:
    assert bao_tls.ca is not None
    trusting = bao_tls.service(ca_bundle=bao_tls.ca)
    assert trusting.probe() is None
    made = trusting.generate(CONTEXT, WHY)
    assert trusting.unwrap(made.wrapped, CONTEXT, WHY) == made.plaintext
    trusting.close()
    stranger = bao_tls.service()   # the system's CAs do not know the dev server's
    with pytest.raises(KeyServiceUnavailable, match="cannot be reached: SSLError"):
        stranger.generate(CONTEXT, WHY)
    stranger.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


@pytest.mark.parametrize("where", ["closed port", "silent server"])
def test_unreachable_is_unavailable_within_the_timeout(where: str, silent_port: int) -> None:
    port = free_port() if where == "closed port" else silent_port
    service = TransitKeyService(f"http://127.0.0.1:{port}", "bailiwick", token="t", timeout_seconds=0.5)
    started = time.monotonic()
    with pytest.raises(KeyServiceUnavailable, match="transit:transit/bailiwick"):
        service.generate(CONTEXT, WHY)
    assert time.monotonic() - started < 3
    assert "transit:transit/bailiwick" in (service.probe() or "")
    service.close()


@pytest.mark.parametrize("token", ["t\u20acn", "t\xe9n", "tok\nX-Other: 1"])
def test_a_token_that_is_not_printable_ascii_is_unavailable_not_sent(token: str) -> None:
    # Port 9 (discard) is never asked: the token is refused before any request.
    service = TransitKeyService("http://127.0.0.1:9", "bailiwick", token=token)
    with pytest.raises(KeyServiceUnavailable, match="the token is not printable ASCII"):
        service.generate(CONTEXT, WHY)
    assert "the token is not printable ASCII" in (service.probe() or "")


class Answer(BaseHTTPRequestHandler):
    status = 503
    errors: ClassVar[list[str]] = ["Vault is sealed"]

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        body = json.dumps({"errors": type(self).errors}).encode()
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


STATUSES = [
    (400, ["invalid ciphertext: no prefix"], KeyReleaseRefused, "invalid ciphertext"),
    (403, ["permission denied"], KeyReleaseRefused, "permission denied"),
    # OpenBao's multierror text (a token whose policy lacks the path) is said on one line, items only.
    (403, ["1 error occurred:\n\t* permission denied\n\n"], KeyReleaseRefused, "key: permission denied"),
    (404, [], KeyReleaseRefused, "no such key or mount"),
    (429, [], KeyServiceUnavailable, "too many requests"),
    (500, ["internal error"], KeyServiceUnavailable, "internal error"),
    (502, [], KeyServiceUnavailable, "bad gateway"),
    (503, ["Vault is sealed"], KeyServiceUnavailable, "Vault is sealed"),
]


@pytest.mark.parametrize(("status", "errors", "raised", "said"), STATUSES, ids=[str(s[0]) for s in STATUSES])
def test_the_servers_answers_are_mapped(status: int, errors: list[str], raised: type[Exception], said: str) -> None:
    handler = type("Fixed", (Answer,), {"status": status, "errors": errors})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        service = TransitKeyService(f"http://127.0.0.1:{server.server_address[1]}", "bailiwick", token="t")
        for call in (lambda: service.generate(CONTEXT, WHY), lambda: service.unwrap("vault:v1:x", CONTEXT, WHY),
                     lambda: service.rewrap("vault:v1:x", CONTEXT)):
            with pytest.raises(raised, match=said):
                call()
        assert said in (service.probe() or "")
        service.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
