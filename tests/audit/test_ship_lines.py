"""The shipper's reading of the local files (proxy.audit.shiplines) and the bucket's layout (shiplayout)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from proxy.audit.files import rotated_name
from proxy.audit.shiplayout import chain_id, piece_key, piece_seq
from proxy.audit.shiplines import (
    Cursor,
    Discontinuity,
    chain_files,
    first_line,
    locate,
    next_piece,
    past_torn_end,
    start_cursor,
)
from tests.audit.logs import write_log


def all_pieces(file: Path, cap: int, target: str | None = None) -> list[bytes]:
    files = chain_files(file)
    cursor: Cursor = start_cursor(files)
    out: list[bytes] = []
    for _ in range(10_000):
        piece = next_piece(chain_files(file), cursor, target, cap=cap)
        if piece is None:
            return out
        assert piece.end.seq == cursor.seq + 1
        assert piece.last_hash == json.loads(piece.data.splitlines()[-1])["hash"]
        out.append(piece.data)
        cursor = piece.end
    raise AssertionError("no end")


def whole(file: Path) -> bytes:
    return b"".join(p.read_bytes() for p in chain_files(file))


@pytest.mark.parametrize("cap", [1, 700, 5000, 1 << 20])
def test_pieces_are_the_files_lines_byte_for_byte_across_rotations(tmp_path: Path, cap: int) -> None:
    file = tmp_path / "audit.jsonl"
    write_log(file, 120, max_bytes=4096)
    assert len(chain_files(file)) > 2                      # rotated files, then the current one
    pieces = all_pieces(file, cap)
    assert b"".join(pieces) == whole(file)
    assert all(p.endswith(b"\n") for p in pieces)
    if cap == 1:
        assert len(pieces) == whole(file).count(b"\n")     # at least one line a piece, whole


def test_a_piece_ends_with_the_line_asked_for(tmp_path: Path) -> None:
    file = tmp_path / "audit.jsonl"
    write_log(file, 30)
    lines = file.read_bytes().splitlines(keepends=True)
    target = json.loads(lines[9])["hash"]
    files = chain_files(file)
    piece = next_piece(files, start_cursor(files), target, cap=1 << 20)
    assert piece is not None
    assert piece.reached
    assert piece.data == b"".join(lines[:10])
    rest = next_piece(files, piece.end, target, cap=1 << 20)
    assert rest is not None
    assert not rest.reached
    assert rest.data == b"".join(lines[10:])


def test_a_line_still_being_written_is_not_shipped(tmp_path: Path) -> None:
    file = tmp_path / "audit.jsonl"
    write_log(file, 3)
    done = file.read_bytes()
    with file.open("ab") as fh:
        fh.write(b'{"decision_id":"half')
    files = chain_files(file)
    piece = next_piece(files, start_cursor(files), None, cap=1 << 20)
    assert piece is not None
    assert piece.data == done
    assert next_piece(files, piece.end, None, cap=1 << 20) is None
    with file.open("ab") as fh:
        fh.write(b'"}\n')
    later = next_piece(files, piece.end, None, cap=1 << 20)
    assert later is not None
    assert later.data == b'{"decision_id":"half"}\n'


def test_where_a_shipped_line_is_found_again(tmp_path: Path) -> None:
    file = tmp_path / "audit.jsonl"
    write_log(file, 60, max_bytes=4096)
    files = chain_files(file)
    for path in (files[0], files[-1]):
        line = path.read_bytes().splitlines(keepends=True)[1]
        found = locate(files, json.loads(line)["hash"])
        assert found is not None
        inode, offset = found
        assert inode == os.stat(path).st_ino
        assert path.read_bytes()[:offset].endswith(line)
    assert locate(files, "0" * 64) is None


def test_the_chain_id_and_the_keys_of_its_pieces(tmp_path: Path) -> None:
    line = b'{"time":"2026-12-06T19:22:37.004Z","prev":"' + b"0" * 64 + b'","hash":"1a2b3c4d5e6f7a8b' + \
        b"9" * 48 + b'"}\n'
    assert chain_id(line) == "20261206T192237Z-1a2b3c4d5e6f7a8b"
    key = piece_key("eu/", chain_id(line), 7)
    assert key == "eu/20261206T192237Z-1a2b3c4d5e6f7a8b/0000000007.jsonl"
    assert piece_seq(key, "eu/20261206T192237Z-1a2b3c4d5e6f7a8b/") == 7
    assert piece_seq("eu/other/0000000007.jsonl", "eu/20261206T192237Z-1a2b3c4d5e6f7a8b/") is None
    file = tmp_path / "audit.jsonl"
    assert first_line(chain_files(file)) is None
    write_log(file, 2)
    assert first_line(chain_files(file)) == file.read_bytes().splitlines(keepends=True)[0]


def test_a_partial_line_a_crash_left_in_a_rotated_file_is_not_shipped(tmp_path: Path) -> None:
    file = tmp_path / "audit.jsonl"
    write_log(file, 4)
    complete = file.read_bytes()
    with file.open("ab") as fh:
        fh.write(b'{"decision_id":"cut by a cra')   # the writer died mid-line
    write_log(file, 3)   # a restart rotates that file away and goes on from its last complete line
    files = chain_files(file)
    assert len(files) == 2
    pieces = all_pieces(file, 1 << 20)
    assert b"".join(pieces) == complete + files[1].read_bytes()
    cursor = start_cursor(files)
    first = next_piece(files, cursor, None, cap=len(complete))
    assert first is not None
    assert first.data == complete
    moved = past_torn_end(files, first.end)
    assert (moved.inode, moved.offset, moved.seq) == (os.stat(files[1]).st_ino, 0, first.end.seq)
    assert past_torn_end(files, cursor) == cursor


def test_a_rotation_between_listing_and_reading_never_skips_a_file(tmp_path: Path) -> None:
    # The files are listed, then the current one is rotated before it is read: its name now opens the new,
    # empty current file. Read on from there, the rotated file's lines would never be shipped.
    file = tmp_path / "audit.jsonl"
    write_log(file, 40, max_bytes=4096)
    listed = chain_files(file)
    upto = json.loads(listed[-2].read_bytes().splitlines()[-1])["hash"]   # the last line of the rotated files
    shipped = next_piece(listed, start_cursor(listed), upto, cap=1 << 20)
    assert shipped is not None
    assert shipped.reached
    current = file.read_bytes()
    file.rename(rotated_name(file, 4102444800000))                 # as the writer rotates it (in 2100)
    write_log(file, 3)                                             # the new current file goes on
    with pytest.raises(Discontinuity):
        next_piece(listed, shipped.end, None, cap=1 << 20)       # the stale listing: refused, not skipped
    fresh = chain_files(file)
    rest = next_piece(fresh, shipped.end, None, cap=1 << 20)
    assert rest is not None
    assert rest.data == current + file.read_bytes()
