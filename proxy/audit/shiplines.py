"""The local side of shipping: the lines of one audit log not yet shipped, read back from its files.

Why from disk and not from the writer: what is on disk survives the store being down for
hours and a restart of the process, and the shipper never holds the proxy's memory or its
event loop. A `Cursor` says where the shipped part of the chain ends: after a line of a
file, named by its inode (rotation renames the current file, the inode stays). `next_piece`
reads the complete lines after it, across rotated files into the current one, up to a line
chosen by its hash (the writer's checkpoint), at most about `cap` bytes; a line still being
written (no newline yet) is never taken.

Why a file read from its start must continue the chain (`Discontinuity` otherwise): the files
are listed, then opened by name, and a rotation in between turns the name of the current file
into a new, empty one; read on from there, the lines of the file just rotated would never be
shipped, and the next piece would not continue the last (tampering, to a verifier). A file's
first line names the line before it (`prev`), so the check needs no listing to be right.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path

from proxy.audit.chain import GENESIS
from proxy.audit.files import chain_key

# The writer ends every line with its hash: ...,"hash":"<64 hex>"}\n (proxy.audit.writer).
_TAIL = re.compile(rb'"hash":"([0-9a-f]{64})"\}$')
_TIME = re.compile(rb'"time":"([^"]{19,40})"')
_PREV = re.compile(rb'"prev":"([0-9a-f]{64})"')
_SCAN = 1 << 20


@dataclass(frozen=True, slots=True)
class Cursor:
    """The end of the shipped part: `offset` bytes into the file with inode `inode`; its last line's hash
    (`GENESIS` before the first piece) and the last piece's seq (0 before the first)."""

    inode: int
    offset: int
    last_hash: str = GENESIS
    seq: int = 0


@dataclass(frozen=True, slots=True)
class Piece:
    """The next piece: its bytes (whole lines), how many lines, the last line's hash, where it ends."""

    data: bytes
    lines: int
    last_hash: str
    end: Cursor
    reached: bool   # it ends with the line that was asked for


class Discontinuity(ValueError):
    """The next file read does not continue the chain where the shipped part ends (see the module's docstring)."""


def chain_files(file: Path) -> list[Path]:
    """The files of the log whose current file is `file`: rotated ones in order, then `file` if it exists."""
    pattern = f"{glob.escape(file.stem)}.*{glob.escape(file.suffix)}"
    rotated = sorted((p for p in file.parent.glob(pattern) if p != file and chain_key(p) == (file.parent, file.name)),
                     key=lambda p: p.name)
    return rotated + ([file] if file.exists() else [])


def first_line(files: list[Path]) -> bytes | None:
    """The chain's first complete line (None while there is none)."""
    for path in files:
        with path.open("rb") as fh:
            line = fh.readline()
        if line.endswith(b"\n"):
            return line
        if line:
            return None
    return None


def line_hash(line: bytes) -> str | None:
    match = _TAIL.search(line.rstrip(b"\n"))
    return match[1].decode() if match else None


def line_time(line: bytes) -> str | None:
    match = _TIME.search(line)
    return match[1].decode() if match else None


def start_cursor(files: list[Path]) -> Cursor:
    return Cursor(os.stat(files[0]).st_ino, 0)


def locate(files: list[Path], digest: str) -> tuple[int, int] | None:
    """(inode, offset just after it) of the line whose hash is `digest`, searched from the newest file back."""
    needle = b'"hash":"' + digest.encode() + b'"}\n'
    for path in reversed(files):
        with path.open("rb") as fh:
            end = fh.seek(0, os.SEEK_END)
            tail = b""
            while end > 0:
                start = max(0, end - _SCAN)
                fh.seek(start)
                block = fh.read(end - start) + tail
                found = block.rfind(needle)
                if found >= 0:
                    return os.fstat(fh.fileno()).st_ino, start + found + len(needle)
                tail = block[:len(needle)]
                end = start
    return None


def unshipped(files: list[Path], cursor: Cursor) -> int:
    """Bytes on disk after the cursor (complete lines or not); -1 when the cursor's file is gone."""
    index = _index(files, cursor)
    if index is None:
        return -1
    sizes = [p.stat().st_size for p in files[index:]]
    return sizes[0] - cursor.offset + sum(sizes[1:])


def in_closed_file(files: list[Path], cursor: Cursor) -> bool:
    """Whether the cursor is in a rotated (closed) file: its lines are then shipped at once."""
    index = _index(files, cursor)
    return index is not None and index < len(files) - 1


def oldest_time(files: list[Path], cursor: Cursor) -> str | None:
    """The time of the first complete line after the cursor (None: there is none; "": it has no time)."""
    piece = next_piece(files, cursor, None, cap=1)
    return None if piece is None else line_time(piece.data) or ""


def next_piece(files: list[Path], cursor: Cursor, target: str | None, *, cap: int) -> Piece | None:
    """The complete lines after `cursor`, up to the line whose hash is `target` (or the end of what is on
    disk), about `cap` bytes at most (but at least one line); None when there is no complete line.

    Raises FileNotFoundError when the cursor's file is gone.
    """
    index = _index(files, cursor)
    if index is None:
        raise FileNotFoundError(f"the audit file the shipper was reading (inode {cursor.inode}) is gone")
    needle = None if target is None else b'"hash":"' + target.encode() + b'"}\n'
    data = bytearray()
    inode, offset = cursor.inode, cursor.offset
    last_hash = cursor.last_hash
    reached = False
    for position, path in enumerate(files[index:], start=index):
        closed = position < len(files) - 1   # a rotated file: nothing more is written to it
        with path.open("rb") as fh:
            here = os.fstat(fh.fileno()).st_ino
            start = offset if here == inode else 0
            fh.seek(start)
            block = fh.read(max(cap - len(data), 0))
            if block and not data and b"\n" not in block:   # one line longer than the cap: taken whole, alone
                while more := fh.read(_SCAN):
                    block += more
                    if b"\n" in more:
                        break
                whole = block[:block.find(b"\n") + 1]
            else:
                whole = block[:block.rfind(b"\n") + 1]
            if start == 0 and whole and _prev(whole) != last_hash:
                raise Discontinuity(f"{path} does not continue the chain where its shipped part ends (line "
                                    f"{last_hash[:16]}…): a file was rotated while it was read, or removed")
            if needle is not None:
                found = whole.find(needle)
                if found >= 0:
                    whole, reached = whole[:found + len(needle)], True
            if whole:   # the cursor moves into a file only with a line of it, checked above
                data += whole
                inode, offset = here, start + len(whole)
                last_hash = line_hash(whole[whole.rfind(b"\n", 0, len(whole) - 1) + 1:]) or ""
            if reached or len(data) >= cap:
                break
            at_end = not fh.read(1)
            if at_end and (len(whole) == len(block) or (closed and b"\n" not in block[len(whole):])):
                continue   # on to the next file; a rotated file's partial last line (a crash cut it) is no line
            break   # this file has more: a line still being written, or lines past the cap
    if not data:
        return None
    return Piece(bytes(data), data.count(b"\n"), last_hash, Cursor(inode, offset, last_hash, cursor.seq + 1), reached)


def past_torn_end(files: list[Path], cursor: Cursor) -> Cursor:
    """The cursor moved to the next file's start when all that is left of its rotated file is a partial
    line (a writer that crashed mid-line; the restarted one rotated the file away and went on). Whether that
    file continues the chain is checked when its first line is read (`Discontinuity`)."""
    index = _index(files, cursor)
    if index is None or index >= len(files) - 1:
        return cursor
    with files[index].open("rb") as fh:
        fh.seek(cursor.offset)
        if b"\n" in fh.read():
            return cursor
    return Cursor(os.stat(files[index + 1]).st_ino, 0, cursor.last_hash, cursor.seq)


def _prev(lines: bytes) -> str | None:
    """The `prev` of the first line of `lines`."""
    match = _PREV.search(lines, 0, lines.find(b"\n") + 1)
    return match[1].decode() if match else None


def _index(files: list[Path], cursor: Cursor) -> int | None:
    for index, path in enumerate(files):
        try:
            if path.stat().st_ino == cursor.inode:
                return index
        except FileNotFoundError:
            continue
    return None
