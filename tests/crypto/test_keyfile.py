"""The local key file: refused unless allowed, strict about its content, re-read when it changes, and
deleting it is the kill switch (every release refused at once)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from proxy.crypto.keyfile import KeyFileService, read_key_file, write_key_file
from proxy.crypto.keyservice import Justification
from proxy.errors import ConfigError, KeyReleaseRefused

CONTEXT = b"bailiwick-v1\x00dublin-mail\x00eu-west-1\x00mail-eu-dublin\x00inbox/0001.eml"
WHY = Justification("d-file", "IE", "dublin-mail", "7")


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "region.key"
    write_key_file(path)
    return path


def test_refused_unless_allowed(key_file: Path) -> None:
    with pytest.raises(ConfigError, match=r"development and the demo only.*allow_insecure: true"):
        KeyFileService(key_file, allow_insecure=False)


def test_write_key_file(key_file: Path) -> None:
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    text = key_file.read_text()
    assert len(text) == 65
    assert text.endswith("\n")
    assert len(read_key_file(key_file)) == 32
    with pytest.raises(FileExistsError):
        write_key_file(key_file)   # never overwrites a key


BAD_FILES = [
    ("empty", b"", "one line of 64 hexadecimal"),
    ("too short", b"ab" * 31 + b"\n", "one line of 64 hexadecimal"),
    ("raw bytes", b"\xff" * 32, "not ASCII"),
    ("two lines", b"ab" * 32 + b"\n" + b"cd" * 32 + b"\n", "one line of 64 hexadecimal"),
    ("not hexadecimal", b"zz" * 32 + b"\n", "hexadecimal characters"),
]


@pytest.mark.parametrize(("case", "content", "said"), BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_a_bad_file_is_refused_naming_it(tmp_path: Path, case: str, content: bytes, said: str) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=said) as refused:
        KeyFileService(path, allow_insecure=True)
    assert str(path) in str(refused.value)


def test_a_missing_file_at_start_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        KeyFileService(tmp_path / "absent.key", allow_insecure=True)


def test_deleting_the_file_is_the_kill_switch(key_file: Path) -> None:
    service = KeyFileService(key_file, allow_insecure=True)
    made = service.generate(CONTEXT, WHY)
    key_file.unlink()
    with pytest.raises(KeyReleaseRefused, match="cannot be read"):
        service.unwrap(made.wrapped, CONTEXT, WHY)
    with pytest.raises(KeyReleaseRefused):
        service.generate(CONTEXT, WHY)
    assert "cannot be read" in (service.probe() or "")


def test_a_replaced_file_is_read_again(key_file: Path) -> None:
    service = KeyFileService(key_file, allow_insecure=True)
    before = service.key_ref
    made = service.generate(CONTEXT, WHY)
    key_file.unlink()
    write_key_file(key_file)   # another key (another inode)
    with pytest.raises(KeyReleaseRefused, match="does not authenticate"):
        service.unwrap(made.wrapped, CONTEXT, WHY)
    assert service.key_ref != before
    assert service.key_ref.startswith("file:")
    assert len(service.key_ref) == len("file:") + 16


def test_a_file_spoiled_in_place_refuses(key_file: Path) -> None:
    service = KeyFileService(key_file, allow_insecure=True)
    made = service.generate(CONTEXT, WHY)
    key_file.write_text("not a key\n")
    with pytest.raises(KeyReleaseRefused, match="64 hexadecimal"):
        service.unwrap(made.wrapped, CONTEXT, WHY)


def test_the_key_is_never_shown(key_file: Path) -> None:
    service = KeyFileService(key_file, allow_insecure=True)
    key = read_key_file(key_file).hex()
    assert key not in repr(service)
    assert key[:16] not in service.key_ref   # the reference is a hash of the key, not a part of it
    made = service.generate(CONTEXT, WHY)
    assert made.wrapped.startswith("filev1:")
    assert len(made.wrapped) == len("filev1:") + 80   # base64url of 12 + 32 + 16 bytes, no padding
