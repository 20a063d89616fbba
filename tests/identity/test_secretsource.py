"""An access key's secret: fixed, or a mounted file read again when it changes, never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config import AccessKeyRule
from proxy.errors import ConfigError
from proxy.identity.secretsource import SecretSource

IE_KEY, IE_SECRET = "AKIAIRELAND00000001", "irish-secret-0123456789abcdefghijklmnopq"


def test_a_mounted_secret_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text(IE_SECRET + "\n")
    now = [0.0]
    source = SecretSource(AccessKeyRule(IE_KEY, "IE", "ie", secret_access_key_file=path), clock=lambda: now[0])
    assert source.current() == IE_SECRET
    assert IE_SECRET not in repr(source)
    path.write_text("rotated-secret-0123456789")
    assert source.current() == IE_SECRET   # looked at again at most once a second
    now[0] = 2.0
    assert source.current() == "rotated-secret-0123456789"
    path.unlink()
    now[0] = 4.0
    assert source.current() == "rotated-secret-0123456789"   # a Secret being swapped: the last good one
    path.write_text("short")
    now[0] = 6.0
    assert source.current() == "rotated-secret-0123456789"   # not a secret: the last good one
    path.write_bytes(b"\xff" * 40)
    now[0] = 8.0
    assert source.current() == "rotated-secret-0123456789"   # not UTF-8: the last good one


@pytest.mark.parametrize(("content", "message"), [
    (None, "cannot read the secret file"),
    ("short", "does not hold a secret access key"),
    (b"\xff" * 40, "does not hold a secret access key"),
])
def test_a_secret_file_that_holds_no_secret_stops_the_start(tmp_path: Path, content: str | bytes | None,
                                                            message: str) -> None:
    path = tmp_path / "secret"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message) as refused:
        SecretSource(AccessKeyRule(IE_KEY, "IE", "ie", secret_access_key_file=path))
    assert IE_KEY in str(refused.value)


def test_a_fixed_secret_is_the_one_given() -> None:
    source = SecretSource(AccessKeyRule(IE_KEY, "IE", "ie", secret_access_key=IE_SECRET))
    assert source.current() == IE_SECRET
    assert IE_SECRET not in repr(source)
