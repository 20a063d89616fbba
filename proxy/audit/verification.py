"""Checking an audit log: walk its chain (and, with the key, its checkpoints) and name the first bad line.

`verify` is what ``bailiwick audit verify`` runs (docs/operations.md, "Audit
log"). It recomputes each line's hash (`proxy.audit.chain`), follows ``prev``
from line to line and from file to file (in the order `proxy.audit.files`
gives), keeps one chain per worker, and with a checkpoint key checks every
checkpoint's MAC and tells whether the log ends sealed.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy.audit.chain import CHECKPOINT_CLOSE, CHECKPOINT_INTERVAL, GENESIS, chain_hash, checkpoint_mac
from proxy.words import counted


@dataclass(frozen=True, slots=True)
class VerifyResult:
    lines: int
    broken_at: int | None   # 1-based line number (in `file`) of the first bad line
    problem: str = ""
    file: Path | None = None    # the file of `broken_at` (the last file read when the chain holds)
    files: int = 1
    checkpoints: int = 0        # checkpoint lines whose MAC was checked (only with a key)
    # With a key: how a chain ends short of its closing checkpoint (lines may have been cut off).
    warnings: tuple[str, ...] = ()
    sealed_at: str = ""         # with a key: time of the closing checkpoint the log ends with

    @property
    def ok(self) -> bool:
        return self.broken_at is None

    @property
    def sealed(self) -> bool:
        return self.ok and not self.warnings


@dataclass(slots=True)
class _Chain:
    """Where one worker's chain stands while `verify` reads."""

    prev: str
    file: Path
    line: int
    since_checkpoint: int = 0
    checkpoint_at: tuple[Path, int] | None = None
    checkpoint_kind: str = ""
    checkpoint_time: str = ""


def verify(files: Path | Sequence[Path], *, checkpoint_key: bytes | None = None,
           starts_mid_chain: bool = False) -> VerifyResult:
    """Walk the chain through `files` in order; report the first line that is not what it expects.

    The first line of each file must continue the last line of the one before.
    Lines marked with a ``worker`` (several processes writing one stream) form one
    chain per worker. The first line must start the chain (``prev`` all zeros)
    unless `starts_mid_chain` (older files were archived away). With
    `checkpoint_key`, every checkpoint's MAC is checked too, and a chain that
    does not end with its closing checkpoint is reported in `warnings`.
    """
    ordered = [files] if isinstance(files, Path) else list(files)
    chains: dict[object, _Chain] = {}
    total = 0
    checked = 0
    file = ordered[0] if ordered else Path()

    def broken(number: int, problem: str) -> VerifyResult:
        return VerifyResult(total, number, problem, file, len(ordered), checked)

    for file in ordered:
        with file.open("rb") as fh:
            for number, raw in enumerate(fh, start=1):
                total += 1
                try:
                    record = json.loads(raw)
                except ValueError:
                    return broken(number, "not valid JSON")
                if (not isinstance(record, dict) or not isinstance(record.get("hash"), str)
                        or not isinstance(record.get("prev"), str)):
                    return broken(number, "no prev/hash fields")
                worker = record.get("worker")
                if not isinstance(worker, int | None):
                    return broken(number, "the worker field is not a number")
                chain = chains.get(worker)
                problem = _prev_problem(record["prev"], chain, file, starts_mid_chain)
                if problem:
                    return broken(number, problem)
                if chain_hash(record) != record["hash"]:
                    return broken(number, "hash does not match the line's content (the line was edited)")
                if chain is None:
                    chain = chains[worker] = _Chain(prev=record["hash"], file=file, line=number)
                checkpoint = record.get("checkpoint")
                if checkpoint is not None and checkpoint_key is not None:
                    problem = _checkpoint_problem(checkpoint_key, record)
                    if problem:
                        return broken(number, problem)
                    checked += 1
                    chain.since_checkpoint = 0
                    chain.checkpoint_at = (file, number)
                    chain.checkpoint_kind = checkpoint["kind"]
                    chain.checkpoint_time = str(record.get("time", ""))
                else:
                    chain.since_checkpoint += 1
                chain.prev, chain.file, chain.line = record["hash"], file, number
    warnings: list[str] = []
    sealed_at = ""
    if checkpoint_key is not None:
        for worker, chain in sorted(chains.items(), key=lambda item: str(item[0])):
            who = f"worker {worker}: " if worker is not None else ""
            if chain.checkpoint_at is None:
                lines = counted(chain.since_checkpoint, "line")
                warnings.append(f"{who}the log has no checkpoint: none of its {lines} is "
                                "sealed, lines may have been cut off (or the proxy writes no checkpoints)")
                continue
            at = f"{chain.checkpoint_at[0]}:{chain.checkpoint_at[1]}"
            if chain.since_checkpoint:
                lines = counted(chain.since_checkpoint, "line")
                warnings.append(f"{who}the log ends {lines} after its last checkpoint "
                                f"({at}): lines may have been cut off (or the proxy is still running, or was killed)")
            elif chain.checkpoint_kind != CHECKPOINT_CLOSE:
                warnings.append(f"{who}the log ends at a periodic checkpoint ({at}), not a closing one: lines "
                                "after it may have been cut off (or the proxy was killed right after it)")
            else:
                sealed_at = max(sealed_at, chain.checkpoint_time)
    return VerifyResult(total, None, "", file, len(ordered), checked, tuple(warnings), sealed_at)


def _prev_problem(prev: str, chain: _Chain | None, file: Path, starts_mid_chain: bool) -> str:
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
    if chain.file != file:
        return (f"prev is not the hash of the last line of {chain.file} (line {chain.line}): a file, or lines "
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
