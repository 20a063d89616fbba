"""Rotation and `log_files`: a log's chain runs on across its files, and tampering in a set of files is found
at its file and line."""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.audit import AuditLog, log_files, verify

from .logs import lines_of, write_log

ROTATED = re.compile(r"^audit(\.worker\d+)?\.\d{8}T\d{6}\.\d{3}Z\.jsonl$")


@pytest.mark.parametrize(("worker", "count", "max_bytes"), [
    (None, 20, 600),
    (None, 3, 100_000),   # never reaches the limit: one file
    (4, 20, 600),
    (None, 5, 50),        # every line is longer than the limit: one file each
])
def test_rotation_keeps_the_chain_across_files(tmp_path: Path, worker: int | None, count: int, max_bytes: int) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, count, worker=worker, max_bytes=max_bytes)
    logs = log_files([tmp_path])
    current = path if worker is None else tmp_path / f"audit.worker{worker}.jsonl"
    assert list(logs) == [current]
    files = logs[current]
    assert files[-1] == current
    assert all(ROTATED.match(f.name) for f in files[:-1])
    assert [f.name for f in files[:-1]] == sorted(f.name for f in files[:-1])
    for file in files:
        size = file.stat().st_size
        assert size <= max_bytes or len(file.read_text().splitlines()) == 1
    # Each file's first line continues the previous file's last.
    for before, after in pairwise(files):
        assert json.loads(after.read_text().splitlines()[0])["prev"] == json.loads(
            before.read_text().splitlines()[-1])["hash"]
    assert [r["decision_id"] for r in lines_of(files)] == [f"d{n}" for n in range(count)]
    result = verify(files)
    assert result.ok, result
    assert (result.lines, result.files) == (count, len(files))


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(min_value=0, max_value=300), min_size=1, max_size=30),
       max_bytes=st.integers(min_value=150, max_value=2000))
def test_rotation_splits_only_between_lines(sizes: list[int], max_bytes: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "audit.jsonl"
        log = AuditLog(str(path), max_bytes=max_bytes)
        for n, size in enumerate(sizes):
            log.write({"n": n, "pad": "x" * size})
        log.close()
        (files,) = log_files([folder]).values()
        assert [r["n"] for r in lines_of(files)] == list(range(len(sizes)))
        for file in files:
            text = file.read_text()
            assert text.endswith("\n")
            assert len(text) <= max_bytes or text.count("\n") == 1
        assert verify(files).ok


def test_reopening_continues_from_the_newest_rotated_file_when_the_current_one_is_gone(tmp_path: Path) -> None:
    # A crash between renaming the full file and writing the next line leaves no current file.
    path = tmp_path / "audit.jsonl"
    write_log(path, 10, max_bytes=600)
    path.rename(tmp_path / "audit.29991231T235959.999Z.jsonl")
    write_log(path, 4, max_bytes=600)
    (files,) = log_files([tmp_path]).values()
    assert files[-1] == path
    assert verify(files).ok
    assert verify(files).lines == 14


def rotated_set(tmp_path: Path, count: int = 30, **options: Any) -> list[Path]:
    write_log(tmp_path / "audit.jsonl", count, max_bytes=600, **options)
    (files,) = log_files([tmp_path]).values()
    assert len(files) >= 4
    return files


def edit_line(files: list[Path], index: int, line: int) -> tuple[Path, int]:
    lines = files[index].read_text().splitlines()
    record = json.loads(lines[line - 1])
    record["decision"] = "deny"
    lines[line - 1] = json.dumps(record)
    files[index].write_text("\n".join(lines) + "\n")
    return files[index], line


def delete_line(files: list[Path], index: int, line: int) -> tuple[Path, int]:
    lines = files[index].read_text().splitlines()
    del lines[line - 1]
    files[index].write_text("\n".join(lines) + "\n")
    if line - 1 < len(lines):
        return files[index], line
    return files[index + 1], 1     # the file's last line: the next file no longer joins


def swap_lines(files: list[Path], index: int, line: int) -> tuple[Path, int]:
    lines = files[index].read_text().splitlines()
    lines[line - 1], lines[line] = lines[line], lines[line - 1]
    files[index].write_text("\n".join(lines) + "\n")
    return files[index], line


def drop_file(files: list[Path], index: int, line: int) -> tuple[Path, int]:
    files[index].unlink()
    del files[index]
    return files[index], 1


def swap_files(files: list[Path], index: int, line: int) -> tuple[Path, int]:
    a, b = files[index], files[index + 1]
    a_text, b_text = a.read_text(), b.read_text()
    a.write_text(b_text)
    b.write_text(a_text)
    return a, 1


def cut_tail(files: list[Path], index: int, line: int) -> tuple[Path, int]:
    lines = files[index].read_text().splitlines()
    files[index].write_text("\n".join(lines[:-1]) + "\n")
    return files[index + 1], 1


@pytest.mark.parametrize(("tamper", "index", "line", "problem"), [
    (edit_line, 0, 2, "edited"),
    (edit_line, 1, 1, "edited"),
    (edit_line, -1, 1, "edited"),
    (delete_line, 1, 2, "removed"),
    (delete_line, 0, 1, "not the start of a chain"),
    (delete_line, 1, 3, "last line of"),
    (swap_lines, 2, 2, "reordered"),
    (drop_file, 1, 0, "last line of"),
    (drop_file, 0, 0, "not the start of a chain"),
    (swap_files, 1, 0, "last line of"),
    (cut_tail, 1, 0, "last line of"),
])
def test_tampering_in_a_rotated_set_is_found_at_its_file_and_line(
    tmp_path: Path, tamper: Callable[[list[Path], int, int], tuple[Path, int]], index: int, line: int, problem: str,
) -> None:
    files = rotated_set(tmp_path)
    assert verify(files).ok
    index = index % len(files)
    if tamper is delete_line and line == 3:
        line = len(files[index].read_text().splitlines())     # the last line of that file
    expected = tamper(files, index, line)
    (found,) = log_files([tmp_path]).values()
    result = verify(found)
    assert not result.ok
    assert (result.file, result.broken_at) == expected, result.problem
    assert problem in result.problem


def test_a_set_whose_older_files_were_archived_verifies_when_told(tmp_path: Path) -> None:
    files = rotated_set(tmp_path)
    files[0].unlink()
    assert "not the start of a chain" in verify(files[1:]).problem
    assert verify(files[1:], starts_mid_chain=True).ok


@pytest.mark.parametrize(("paths", "expected"), [
    (["."], {"audit.jsonl": 4, "audit.worker0.jsonl": 3, "audit.worker1.jsonl": 3}),
    (["audit.jsonl"], {"audit.jsonl": 1}),
    (["audit.2*.jsonl", "audit.jsonl"], {"audit.jsonl": 4}),
    (["audit.worker*.jsonl"], {"audit.worker0.jsonl": 3, "audit.worker1.jsonl": 3}),
    (["audit.worker1.*Z.jsonl", "audit.worker1.jsonl", "."], {
        "audit.jsonl": 4, "audit.worker0.jsonl": 3, "audit.worker1.jsonl": 3}),
])
def test_log_files_groups_files_into_chains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, paths: list[str], expected: dict[str, int],
) -> None:
    names = ["audit.20261123T185512.004Z.jsonl", "audit.20261123T185512.005Z.jsonl",
             "audit.20261124T000000.000Z.jsonl", "audit.jsonl",
             "audit.worker0.20261123T185512.004Z.jsonl", "audit.worker0.20261123T185513.000Z.jsonl",
             "audit.worker0.jsonl", "audit.worker1.20261123T185512.004Z.jsonl",
             "audit.worker1.20261123T185512.005Z.jsonl", "audit.worker1.jsonl", "notes.txt"]
    for name in names:
        (tmp_path / name).write_text("")
    monkeypatch.chdir(tmp_path)
    logs = log_files(paths)
    assert {key.name: len(files) for key, files in logs.items()} == expected
    for files in logs.values():
        assert files == sorted(files, key=lambda f: (not f.name.endswith("Z.jsonl"), f.name))


def test_log_files_refuses_a_path_with_no_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        log_files([tmp_path / "audit.*.jsonl"])
