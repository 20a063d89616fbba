"""Checking an audit log: walk its chain (and, with the key, its checkpoints) and name the first bad line.

`verify` is what ``bailiwick audit verify`` runs on files (docs/operations.md,
"Audit log"); `walk` is the chain walk itself, over any named streams of
lines, so that the same rules check local files and the pieces of a chain
shipped to object storage (`proxy.audit.remote`). It recomputes each line's
hash (`proxy.audit.chain`), follows ``prev`` from line to line and from stream
to stream (in the order given: for files, the order `proxy.audit.files`
gives), keeps one chain per worker, and with a checkpoint key checks every
checkpoint's MAC and tells whether the log ends sealed.

Why a partial last line is not tampering: the writer appends whole lines,
so a file whose last line has no newline was cut short while being written
(a disk that filled up, a crash). Every complete line before it still
verifies, and the chain goes on from the last of them when the proxy starts
again (in a new file: `proxy.audit.writer`). So a partial line is accepted
at the end of a file, and reported (a warning: exit 3, like a chain that is
not sealed), but only when it can be the beginning of the line the chain
expects next: printable ASCII from ``{"``, whose ``prev``, if it got that
far, is the hash of the line before it (and, if it is whole but for its
newline, whose hash holds); zeros after it are what some filesystems leave
after a crash. Anything else there (a last line edited and stripped of its
newline, bytes appended) is a broken chain. What no check can tell is a
file truncated on purpose from one cut by a crash, just as a file cut at a
line's end looks like a writer that stopped there: the warning says so.
A line that is not JSON anywhere else, or one that has its newline, stays a
broken chain. Shipped pieces hold only complete lines, so there
(``partial_tails=False``) a missing newline is a broken chain too.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from proxy.audit.chain import CHECKPOINT_CLOSE, CHECKPOINT_INTERVAL, GENESIS, chain_hash, checkpoint_mac
from proxy.words import counted


@dataclass(frozen=True, slots=True)
class Stream:
    """A named run of lines: a log file, or a shipped piece. `lines()` yields each line with its newline
    (a partial last line without); it is called once, when the walk reaches the stream."""

    name: str
    lines: Callable[[], Iterator[bytes]]
    path: Path | None = None


@dataclass(frozen=True, slots=True)
class ChainEnd:
    """Where one worker's chain ends, as the walk found it."""

    worker: int | None
    lines: int
    first_hash: str             # the first line's (what a shipped chain is named by)
    first_time: str
    last_stream: str            # the name of the stream of its last line, and that line's number in it
    last_line: int
    last_time: str              # the time of its last line that has one
    since_checkpoint: int       # lines after its last checkpoint
    checkpoint_at: tuple[str, int] | None   # with a key: the stream and line of its last checkpoint
    checkpoint_kind: str
    checkpoint_time: str


@dataclass(frozen=True, slots=True)
class VerifyResult:
    lines: int                  # complete lines read (a partial line at a file's end is not one)
    broken_at: int | None   # 1-based line number (in `file`) of the first bad line
    problem: str = ""
    file: Path | None = None    # the file of `broken_at` (the last file read when the chain holds)
    files: int = 1
    checkpoints: int = 0        # checkpoint lines whose MAC was checked (only with a key)
    # Why the log may not be whole: with a key, a chain that ends short of its closing checkpoint; a partial
    # line at the end of a file (cut short by a full disk or a crash).
    warnings: tuple[str, ...] = ()
    sealed_at: str = ""         # with a key: time of the closing checkpoint the log ends with
    where: str = ""             # the name of the stream of `broken_at` (the last one read when the chain holds)
    ends: tuple[ChainEnd, ...] = ()   # when the chain holds: where each worker's chain ends
    partial_end: bool = False   # the last stream ends in a partial line

    @property
    def ok(self) -> bool:
        return self.broken_at is None

    @property
    def sealed(self) -> bool:
        return self.ok and not self.warnings


@dataclass(slots=True)
class _Chain:
    """Where one worker's chain stands while `walk` reads."""

    prev: str
    stream: str
    line: int
    first_hash: str
    first_time: str
    lines: int = 0
    last_time: str = ""
    since_checkpoint: int = 0
    checkpoint_at: tuple[str, int] | None = None
    checkpoint_kind: str = ""
    checkpoint_time: str = ""

    def end(self, worker: int | None) -> ChainEnd:
        return ChainEnd(worker, self.lines, self.first_hash, self.first_time, self.stream, self.line, self.last_time,
                        self.since_checkpoint, self.checkpoint_at, self.checkpoint_kind, self.checkpoint_time)


# No line the proxy writes comes near this (`proxy.audit.bound.LINE_BOUND`; before it, a request's limits
# kept lines under 64 KiB): a longer one is not read into memory whole, it breaks the chain.
MAX_LINE = 1 << 20
_CHUNK = 65536


class LineTooLong(ValueError):
    """A stream holds a line longer than `MAX_LINE` (raised by `split_lines`, reported by `walk`)."""


def split_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The lines of a stream of bytes, each with its newline (a last one without), in memory one at a time."""
    rest = b""
    for chunk in chunks:
        rest += chunk
        start = 0
        while (end := rest.find(b"\n", start)) >= 0:
            yield rest[start:end + 1]
            start = end + 1
        rest = rest[start:]
        if len(rest) > MAX_LINE:
            raise LineTooLong(f"a line longer than {MAX_LINE} bytes, which the proxy never writes")
    if rest:
        yield rest


def file_stream(file: Path) -> Stream:
    def lines() -> Iterator[bytes]:
        with file.open("rb") as fh:
            yield from split_lines(iter(lambda: fh.read(_CHUNK), b""))
    return Stream(str(file), lines, file)


def verify(files: Path | Sequence[Path], *, checkpoint_key: bytes | None = None,
           starts_mid_chain: bool = False) -> VerifyResult:
    """Walk the chain through `files` in order; report the first line that is not what it expects.

    The first line of each file must continue the last complete line of the
    one before. Lines marked with a ``worker`` (several processes writing one
    stream) form one chain per worker. The first line must start the chain
    (``prev`` all zeros) unless `starts_mid_chain` (older files were archived
    away). With `checkpoint_key`, every checkpoint's MAC is checked too, and a
    chain that does not end with its closing checkpoint is reported in
    `warnings`, as is a file that ends in a partial line.
    """
    ordered = [files] if isinstance(files, Path) else list(files)
    result = walk([file_stream(file) for file in ordered], checkpoint_key=checkpoint_key,
                  starts_mid_chain=starts_mid_chain)
    result = replace(result, files=len(ordered))
    if checkpoint_key is None or not result.ok:
        return result
    warnings: list[str] = []
    sealed_at = ""
    for end in result.ends:
        who = f"worker {end.worker}: " if end.worker is not None else ""
        if end.checkpoint_at is None:
            warnings.append(f"{who}the log has no checkpoint: none of its {counted(end.since_checkpoint, 'line')} is "
                            "sealed, lines may have been cut off (or the proxy writes no checkpoints)")
            continue
        at = f"{end.checkpoint_at[0]}:{end.checkpoint_at[1]}"
        if end.since_checkpoint:
            warnings.append(f"{who}the log ends {counted(end.since_checkpoint, 'line')} after its last checkpoint "
                            f"({at}): lines may have been cut off (or the proxy is still running, or was killed)")
        elif end.checkpoint_kind != CHECKPOINT_CLOSE:
            warnings.append(f"{who}the log ends at a periodic checkpoint ({at}), not a closing one: lines "
                            "after it may have been cut off (or the proxy was killed right after it)")
        else:
            sealed_at = max(sealed_at, end.checkpoint_time)
    return replace(result, warnings=result.warnings + tuple(warnings), sealed_at=sealed_at)


def walk(streams: Iterable[Stream], *, checkpoint_key: bytes | None = None, starts_mid_chain: bool = False,
         partial_tails: bool = True) -> VerifyResult:
    """The chain walk through `streams` in order (see `verify`); `warnings` name only partial lines.

    `partial_tails`: a stream may end in a partial line (local files); else that breaks the chain.
    """
    chains: dict[int | None, _Chain] = {}
    total = 0
    checked = 0
    count = 0
    stream = Stream("", lambda: iter(()))
    partial: tuple[Stream, int] | None = None   # the stream that ended in a partial line, and its line number
    warnings: list[str] = []

    def broken(number: int, problem: str) -> VerifyResult:
        return VerifyResult(total, number, problem, stream.path, count, checked, where=stream.name)

    for stream in streams:
        count += 1
        if partial is not None:
            warnings.append(f"{partial[0].name} ends in a partial line (line {partial[1]}, cut short by a full disk "
                            f"or a crash, or truncated: verify cannot tell which); the next file goes on from its last "
                            "complete line")
            partial = None
        worker: tuple[int | None] | None = None   # the worker of the stream's last complete line, once it has one
        number = 0
        lines = stream.lines()
        while True:
            try:
                raw = next(lines)
            except StopIteration:
                break
            except LineTooLong as err:
                return broken(number + 1, str(err))
            number += 1
            if not raw.endswith(b"\n"):
                if not partial_tails:
                    return broken(number, "the last line has no newline: a partial line, which is never shipped")
                if not _could_be_torn(raw, chains, worker, stream.name, starts_mid_chain):
                    return broken(number, _NOT_TORN)
                partial = (stream, number)
                break
            total += 1
            try:
                record = json.loads(raw)
            except ValueError:
                return broken(number, "not valid JSON")
            problem = _line_problem(record, chains, stream.name, starts_mid_chain)
            if problem:
                return broken(number, problem)
            worker = (record.get("worker"),)
            chain = chains.get(worker[0])
            time = record.get("time")
            if chain is None:
                chain = chains[worker[0]] = _Chain(record["hash"], stream.name, number, record["hash"], str(time or ""))
            checkpoint = record.get("checkpoint")
            if checkpoint is not None and checkpoint_key is not None:
                problem = _checkpoint_problem(checkpoint_key, record)
                if problem:
                    return broken(number, problem)
                checked += 1
                chain.since_checkpoint = 0
                chain.checkpoint_at = (stream.name, number)
                chain.checkpoint_kind = checkpoint["kind"]
                chain.checkpoint_time = str(time or "")
            else:
                chain.since_checkpoint += 1
            chain.prev, chain.stream, chain.line = record["hash"], stream.name, number
            chain.lines += 1
            if isinstance(time, str):
                chain.last_time = time
    if partial is not None:
        warnings.append(f"the log ends in a partial line ({partial[0].name}:{partial[1]}, cut short by a full disk "
                        "or a crash, or truncated: verify cannot tell which): "
                        f"{counted(total, 'complete line')} verify")
    ends = tuple(chain.end(worker) for worker, chain in sorted(chains.items(), key=lambda item: str(item[0])))
    return VerifyResult(total, None, "", stream.path, count, checked, tuple(warnings), "", stream.name, ends,
                        partial is not None)


def _line_problem(record: Any, chains: dict[int | None, _Chain], stream: str, starts_mid_chain: bool) -> str:
    """What is wrong with a parsed line as the next line of its worker's chain ("" when nothing)."""
    if (not isinstance(record, dict) or not isinstance(record.get("hash"), str)
            or not isinstance(record.get("prev"), str)):
        return "no prev/hash fields"
    worker = record.get("worker")
    if not isinstance(worker, int | None):
        return "the worker field is not a number"
    problem = _prev_problem(record["prev"], chains.get(worker), stream, starts_mid_chain)
    if problem:
        return problem
    if chain_hash(record) != record["hash"]:
        return "hash does not match the line's content (the line was edited)"
    return ""


_NOT_TORN = ("the last line has no newline and is not the beginning of the line the chain expects next (a write "
             "cut short leaves the beginning of a line the proxy wrote): it was edited or added")
# What the writer writes: canonical JSON in ASCII, so printable characters only (json escapes the rest).
_PRINTABLE = re.compile(rb"[\x20-\x7e]*")
_PREV = re.compile(rb'"prev":"([0-9a-f]{64})"')
_WORKER = re.compile(rb'"worker":(\d+)[,}]')


def _could_be_torn(raw: bytes, chains: dict[int | None, _Chain], worker: tuple[int | None] | None, stream: str,
                   starts_mid_chain: bool) -> bool:
    """Whether `raw`, a last line without its newline, can be the beginning of the line the chain expects.

    `worker`: that of the line before it in its file (each worker writes a file of its own), None when
    it is the file's first line.
    """
    body = raw.rstrip(b"\0")   # zeros: blocks a crash left allocated but unwritten
    if not body:
        return True
    if not b'{"'.startswith(body[:2]) or not _PRINTABLE.fullmatch(body):
        return False
    try:
        record = json.loads(body)
    except ValueError:   # the beginning of a line: check what of it can be checked
        prev = _PREV.search(body)
        if prev is None:
            return True
        named = _WORKER.search(body)
        if named is not None:
            worker = (int(named[1]),)
        expected = prev[1].decode()
        if worker is None:   # the file's first line, cut before its worker: it goes on from some chain
            if chains:
                return expected in {chain.prev for chain in chains.values()}
            return not _prev_problem(expected, None, stream, starts_mid_chain)
        return not _prev_problem(expected, chains.get(worker[0]), stream, starts_mid_chain)
    return not _line_problem(record, chains, stream, starts_mid_chain)   # whole but for its newline


def _prev_problem(prev: str, chain: _Chain | None, stream: str, starts_mid_chain: bool) -> str:
    if chain is None:
        if prev == GENESIS or starts_mid_chain:
            return ""
        return ("prev is not the start of a chain (all zeros): earlier lines or files are missing "
                "(--starts-mid-chain accepts a log whose older files were archived away)")
    if prev == chain.prev:
        return ""
    if prev == GENESIS:
        return ("a new chain starts here (prev is all zeros): the lines before it were not found when the "
                "proxy started, or lines were inserted")
    if chain.stream != stream:
        return (f"prev is not the hash of the last line of {chain.stream} (line {chain.line}): a file, or lines "
                "at the end of that file, are missing or removed, or the files are out of order")
    return "prev does not match the previous line's hash (a line was removed, inserted or reordered before it)"


def _checkpoint_problem(key: bytes, record: dict[str, Any]) -> str:
    checkpoint = record["checkpoint"]
    if (not isinstance(checkpoint, dict) or checkpoint.get("kind") not in (CHECKPOINT_INTERVAL, CHECKPOINT_CLOSE)
            or not isinstance(checkpoint.get("lines"), int) or not isinstance(checkpoint.get("mac"), str)):
        return "malformed checkpoint (kind, lines and mac expected)"
    # As bytes: the mac read from the file may be any text, and compare_digest takes only ASCII str.
    given = checkpoint["mac"].encode("utf-8", "surrogatepass")
    if not hmac.compare_digest(given, checkpoint_mac(key, record).encode()):
        return "the checkpoint's MAC does not match: it was forged or edited, or made with another key"
    return ""
