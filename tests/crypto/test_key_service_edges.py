"""The key services at their edges: a key that changes under the proxy, a reference the metadata cannot carry,
a key service that never answers.

Each case is one where the proxy would otherwise write an object no proxy
can read again (the envelope naming another key than the one that wrapped
it), fail every write at the first PUT instead of at start, or hold a
request, and the key threads, for as long as a hung token likes.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from proxy.audit import RecordedKeyRelease
from proxy.config.model import EncryptionConfig, KeyServiceKind, Pkcs11Settings
from proxy.crypto import stage as stage_module
from proxy.crypto.keyfile import KeyFileService, write_key_file
from proxy.crypto.keyservice import CachingKeyService, Justification
from proxy.crypto.services import make_key_service
from proxy.crypto.stage import EncryptionStage
from proxy.errors import ConfigError, KeyServiceUnavailable
from proxy.metrics import Metrics
from tests.conftest import proxy_config
from tests.support.keyservices import SoftHsm, softhsm_fixture  # noqa: F401  (the fixture "softhsm")

WHY = Justification("d-edges", "IE", "dublin-mail", "7")


def test_a_caching_service_names_the_key_it_wraps_with(tmp_path: Path) -> None:
    """The envelope's `ref` is `service.key_ref`: after the key file is replaced, it must name the new key."""
    path = tmp_path / "region.key"
    write_key_file(path)
    inner = KeyFileService(path, allow_insecure=True)
    cached = CachingKeyService(inner, max_keys=4, ttl_seconds=60)
    path.unlink()
    write_key_file(path)   # another key
    cached.generate(b"context", WHY)   # wrapped under the new key
    assert cached.key_ref == inner.key_ref


@pytest.mark.parametrize(("token", "label"), [("bailiwick eu", "kek"), ("bailiwick", "kek;v2"),
                                              ("jeton-\u00e9t\u00e9", "kek")])
def test_a_key_reference_the_metadata_cannot_carry_is_refused_at_start(softhsm: SoftHsm, tmp_path: Path,
                                                                       token: str, label: str) -> None:
    """Token and key labels may hold spaces and any UTF-8; the metadata entry cannot. Say so at start, not
    with a 500 at every write."""
    config = proxy_config("http://127.0.0.1:9", tmp_path / "audit.jsonl")
    # The suite's SoftHSM2 module (loaded with the suite's configuration); the labels are never looked up.
    pkcs11 = Pkcs11Settings(module=softhsm.module, token_label=token, key_label=label, pin=softhsm.pin)
    config = replace(config, encryption=EncryptionConfig(key_service=KeyServiceKind.PKCS11, pkcs11=pkcs11))
    with pytest.raises(ConfigError, match="metadata"):
        make_key_service(config)


class _Hung:
    """A key service that never answers (a token that hangs), until released."""

    kind = "file"
    key_ref = "file:0123456789abcdef"

    def __init__(self) -> None:
        self.release = threading.Event()

    def unwrap(self, wrapped: str, context: bytes, why: Justification) -> bytes:
        self.release.wait(30)
        return b"\x00" * 32

    def close(self) -> None:
        self.release.set()


class _Use:
    key_release: RecordedKeyRelease | None = None


def test_a_key_service_that_does_not_answer_fails_the_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """A release that takes longer than the proxy waits is a 503 (counted, audited), not a request held open."""
    monkeypatch.setattr(stage_module, "KEY_CALL_TIMEOUT_SECONDS", 0.5, raising=False)
    hung = _Hung()
    upstream = SimpleNamespace(config=SimpleNamespace(max_connections=4))   # never asked: no request is sent
    stage = EncryptionStage(cast(Any, hung), Metrics("s3"), None, cast(Any, upstream))
    use = _Use()

    async def release() -> bytes:
        return await asyncio.wait_for(stage.call("unwrap", lambda: hung.unwrap("w", b"c", WHY), use), 5)

    try:
        with pytest.raises(KeyServiceUnavailable):
            asyncio.run(release())
        assert use.key_release is not None
        assert use.key_release.result == "unavailable"
    finally:
        stage.close()
