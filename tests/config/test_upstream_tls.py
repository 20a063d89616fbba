"""`upstream.ca_bundle` and `upstream.pin_sha256`: read relative to the file, checked, https:// only."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from proxy.config import Config, load_config
from proxy.errors import ConfigError

PIN = base64.b64encode(b"\1" * 32).decode()
OTHER = base64.b64encode(b"\2" * 32).decode()


def load(tmp_path: Path, upstream: str) -> Config:
    (tmp_path / "ca.pem").write_text("a CA bundle\n")
    path = tmp_path / "bailiwick.yaml"
    path.write_text(f"upstream: {upstream}\n")
    return load_config(path, environ={})


@pytest.mark.parametrize(("upstream", "ca_bundle", "pins"), [
    ("{url: 'https://s3.test'}", None, ()),
    ("{url: 'https://s3.test', ca_bundle: ca.pem}", "ca.pem", ()),
    (f"{{url: 'https://s3.test', pin_sha256: '{PIN}'}}", None, (PIN,)),
    (f"{{url: 'https://s3.test', pin_sha256: ['{PIN}', '{OTHER}']}}", None, (PIN, OTHER)),
])
def test_tls_settings_are_read(tmp_path: Path, upstream: str, ca_bundle: str | None, pins: tuple[str, ...]) -> None:
    config = load(tmp_path, upstream)
    assert config.upstream.ca_bundle == (tmp_path / ca_bundle if ca_bundle else None)
    assert config.upstream.pin_sha256 == pins


@pytest.mark.parametrize(("upstream", "error"), [
    ("{url: 'http://s3.test', ca_bundle: ca.pem}", "upstream.ca_bundle: applies to an https:// upstream only"),
    (f"{{url: 'http://s3.test', pin_sha256: '{PIN}'}}", "upstream.pin_sha256: applies to an https:// upstream only"),
    ("{url: 'https://s3.test', ca_bundle: missing.pem}", "missing.pem is not a readable file"),
    ("{url: 'https://s3.test', pin_sha256: 'c2hvcnQ='}", "upstream.pin_sha256[0]: expected the base64 SHA-256"),
    ("{url: 'https://s3.test', pin_sha256: 'not base64!'}", "upstream.pin_sha256[0]: expected the base64 SHA-256"),
    ("{url: 'https://s3.test', pin_sha256: {a: b}}", "upstream.pin_sha256: expected a base64 SHA-256 digest"),
    ("{url: 'https://s3.test', verify: false}", "verify"),   # there is no way to turn verification off
])
def test_tls_settings_are_checked(tmp_path: Path, upstream: str, error: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(error)):
        load(tmp_path, upstream)

