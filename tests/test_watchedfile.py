"""A mounted file read again when it changes, at most once an interval, keeping the last good value."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from proxy.errors import ConfigError
from proxy.watchedfile import WatchedFile


def read_number(path: Path) -> int:
    text = path.read_text()
    if not text.isdigit():
        raise ConfigError(f"{path} does not hold a number")
    return int(text)


def test_read_again_only_when_changed_and_looked_at(tmp_path: Path) -> None:
    path = tmp_path / "n"
    path.write_text("1")
    now = [0.0]
    reads: list[int] = []

    def counted(file: Path) -> int:
        reads.append(read_number(file))
        return reads[-1]

    watched = WatchedFile(path, counted, clock=lambda: now[0], interval=1.0)
    assert (watched.current(), reads) == (1, [1])
    path.write_text("22")
    now[0] = 0.5
    assert watched.current() == 1            # not looked at within the interval
    now[0] = 1.0
    assert watched.current() == 22
    now[0] = 2.0
    assert (watched.current(), reads) == (22, [1, 22])   # unchanged: not read again


@pytest.mark.parametrize("spoil", ["remove", "not a number"])
def test_a_file_that_cannot_be_read_keeps_the_last_good_value(tmp_path: Path, spoil: str) -> None:
    path = tmp_path / "n"
    path.write_text("7")
    now = [0.0]
    watched = WatchedFile(path, read_number, clock=lambda: now[0])
    if spoil == "remove":
        path.unlink()
    else:
        path.write_text("seven")
    now[0] = 5.0
    assert watched.current() == 7
    replacement = tmp_path / "n.new"
    replacement.write_text("8")
    os.replace(replacement, path)   # as a rotation swaps the file
    now[0] = 10.0
    assert watched.current() == 8


def test_the_first_read_fails_loudly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        WatchedFile(tmp_path / "missing", read_number)

    def named(path: Path) -> int:
        try:
            return read_number(path)
        except OSError as exc:
            raise ConfigError(f"setting.file: cannot read {path}") from exc

    with pytest.raises(ConfigError, match=r"setting\.file: cannot read"):   # the reader's words, not stat's
        WatchedFile(tmp_path / "missing", named)
    (tmp_path / "bad").write_text("x")
    with pytest.raises(ConfigError):
        WatchedFile(tmp_path / "bad", read_number)
