"""The signed tag as the storage side sees it: verified with pyjwt, bound to the request it came on.

The storage side's check is the one docs/operations.md ("Signed tags")
shows, written out here as `storage_side_check`: the proxy's tag must verify
with the shared key, be unexpired, and name the method, host and target of
the very request that carries it. The forwarded bytes come from the recording
relay between the proxy and moto.
"""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest

from proxy.config import TagConfig
from proxy.harness import ProxyThread
from tests.conftest import DUBLIN, make_token, proxy_config, s3_client
from tests.support.recorder import Recorder

KEY = b"storage-side-shared-key-0123456789abcdef"


def storage_side_check(tag: str, key: bytes, method: str, host: str, target: str) -> dict[str, str]:
    """What a storage-side service does with X-Bailiwick-Tag (docs/operations.md)."""
    claims = jwt.decode(tag, key, algorithms=["HS256"], options={"require": ["exp", "iat"]})
    if (claims["method"], claims["host"], claims["path"]) != (method, host, target):
        raise jwt.InvalidTokenError("the tag was issued for another request")
    return dict(claims)


def forwarded(recorded: bytes) -> tuple[str, str, dict[str, str]]:
    head = recorded.split(b"\r\n\r\n", 1)[0].decode()
    request_line, *fields = head.split("\r\n")
    method, target, _ = request_line.split(" ")
    return method, target, {name.lower(): value.strip() for name, value in (f.split(":", 1) for f in fields)}


@pytest.mark.usefixtures("seeded")
def test_the_storage_side_verifies_the_tag_of_the_request_it_received(recorder: Recorder, tmp_path: Path) -> None:
    config = proxy_config(recorder.url, tmp_path / "audit.jsonl", tag=TagConfig(signing_key=KEY, ttl_seconds=30))
    proxy = ProxyThread(config).start()
    try:
        mark = recorder.mark()
        s3_client(proxy.url, make_token("IE", sub="alice")).get_object(Bucket=DUBLIN, Key="alice/inbox/1.eml")
        method, target, headers = forwarded(recorder.since(mark))
    finally:
        proxy.stop()
    claims = storage_side_check(headers["x-bailiwick-tag"], KEY, method, headers["host"], target)
    assert (claims["jurisdiction"], claims["subject"]) == ("IE", "alice")
    assert claims["decision"] == headers["x-bailiwick-decision"]
    assert claims["policy"] == headers["x-bailiwick-policy"]
    assert int(claims["exp"]) - int(claims["iat"]) == 30
    # The same tag on another request, or checked with another key, is refused.
    with pytest.raises(jwt.InvalidTokenError):
        storage_side_check(headers["x-bailiwick-tag"], KEY, "DELETE", headers["host"], target)
    with pytest.raises(jwt.InvalidTokenError):
        storage_side_check(headers["x-bailiwick-tag"], KEY, method, headers["host"], f"/{DUBLIN}/other")
    with pytest.raises(jwt.InvalidSignatureError):
        storage_side_check(headers["x-bailiwick-tag"], b"another-key-0123456789abcdef0123", method,
                           headers["host"], target)
