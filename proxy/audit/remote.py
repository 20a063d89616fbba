"""Verifying the audit chains shipped to object storage: ``bailiwick audit verify s3://BUCKET/PREFIX``.

What is in the bucket is docs/operations.md, "Shipping the audit log": under
the prefix, one folder per chain (``<chain-id>/``, named by the UTC time and
the hash of the chain's first line), holding the chain's *pieces*
``<seq>.jsonl`` (seq from 0000000001, no gap), each the exact bytes of
consecutive complete lines. This module lists them, reads each piece as it
walks (one piece at a time, streamed: a chain is never held in memory), and
hands the pieces to the same chain walk as local files
(`proxy.audit.verification.walk`), then checks what only the store can
show: a piece missing from the sequence, a piece written twice with other
bytes (with versioning, as under Object Lock, the OLDEST version of each
piece is verified and any other version with different bytes is reported),
a piece hidden by a delete marker, a chain whose name is not its first line.

Why the store's metadata is never trusted: whoever could rewrite a piece
could rewrite its metadata too; only the bytes and the chain's hashes (and,
with the key, its MACs) are evidence.

Reading uses botocore (the standard AWS credentials chain, as the AWS CLI):
``s3:ListBucket``, ``s3:ListBucketVersions``, ``s3:GetBucketVersioning``,
``s3:GetObject`` and ``s3:GetObjectVersion`` on the bucket.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from proxy.audit.chain import CHECKPOINT_CLOSE
from proxy.audit.verification import Stream, VerifyResult, split_lines, walk
from proxy.words import counted

_PIECE = re.compile(r"^(?P<chain>\d{8}T\d{6}Z-[0-9a-f]{16})/(?P<seq>\d{10})\.jsonl$")
_CHUNK = 65536


class Verdict(IntEnum):
    """A chain's verdict, as the exit status `audit verify` gives it (the worst of all chains wins)."""

    SEALED = 0      # intact and ending with its closing checkpoint (or intact, without a key to tell)
    TAMPERED = 1    # broken, or something in the store that the shipper never does
    CUT = 3         # intact, but ending without its closing checkpoint (a killed pod, or one still running)


@dataclass(frozen=True, slots=True)
class ShippedUrl:
    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> ShippedUrl:
        """`s3://BUCKET/PREFIX` (PREFIX empty, or ending with /, as `audit.ship.prefix` is)."""
        if not url.startswith("s3://"):
            raise ValueError(f"{url}: not an s3:// address")
        bucket, _, prefix = url[len("s3://"):].partition("/")
        if not bucket:
            raise ValueError(f"{url}: no bucket named (s3://BUCKET/PREFIX)")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        return cls(bucket, prefix)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


@dataclass(slots=True)
class Piece:
    seq: int
    key: str
    versions: list[str | None] = field(default_factory=list)   # version ids, newest first (None: unversioned)
    deleted: bool = False      # the newest version is a delete marker


@dataclass(frozen=True, slots=True)
class ChainReport:
    """What `audit verify` says about one shipped chain."""

    name: str                  # s3://BUCKET/PREFIX<chain-id>/
    verdict: Verdict
    result: VerifyResult | None   # the walk's (None: the chain was not walked)
    messages: tuple[str, ...]  # what to print, in order (the first says how the chain stands)


def make_client(endpoint_url: str | None, region: str | None) -> Any:
    """An S3 client with the standard credentials chain (environment, profile, web identity, instance role)."""
    import botocore.session
    from botocore.config import Config

    session = botocore.session.get_session()
    config = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=10, read_timeout=60,
                    s3={"addressing_style": "path"} if endpoint_url else None)
    return session.create_client("s3", endpoint_url=endpoint_url, region_name=region, config=config)


def verify_shipped(client: Any, url: ShippedUrl, *, checkpoint_key: bytes | None) -> Iterator[ChainReport | str]:
    """Each chain under `url`, in order (chain ids sort by start time), as a report; a str for a stray object.

    Raises FileNotFoundError when there is no piece at all, and botocore's errors when the store cannot be read.
    """
    chains, strays, versioned = _list(client, url)
    if not versioned:
        yield (f"s3://{url.bucket}: the bucket is not versioned (so it has no Object Lock): a piece overwritten "
               "with a chain of its own, or the last pieces deleted, cannot be told from what was shipped")
    for key in strays:
        yield f"s3://{url.bucket}/{key}: not a piece of a shipped chain (ignored)"
    if not chains:
        raise FileNotFoundError(f"{url}: no shipped audit chain there")
    for chain_id, pieces in sorted(chains.items()):
        yield _verify_chain(client, url, chain_id, sorted(pieces, key=lambda piece: piece.seq), checkpoint_key)


def _list(client: Any, url: ShippedUrl) -> tuple[dict[str, list[Piece]], list[str], bool]:
    """The pieces under `url`, by chain id, with their versions; the keys there that are no piece; whether the
    bucket keeps versions."""
    versioned = client.get_bucket_versioning(Bucket=url.bucket).get("Status") in ("Enabled", "Suspended")
    pieces: dict[str, Piece] = {}
    strays: list[str] = []

    def piece_of(key: str) -> Piece | None:
        piece = pieces.get(key)
        if piece is None:
            match = _PIECE.match(key[len(url.prefix):])
            if match is None:
                if key not in strays:
                    strays.append(key)
                return None
            piece = pieces[key] = Piece(int(match["seq"]), key)
        return piece

    if versioned:
        for page in client.get_paginator("list_object_versions").paginate(Bucket=url.bucket, Prefix=url.prefix):
            for version in page.get("Versions", []):
                piece = piece_of(version["Key"])
                if piece is not None:
                    piece.versions.append(version["VersionId"])
            for marker in page.get("DeleteMarkers", []):
                piece = piece_of(marker["Key"])
                if piece is not None and marker.get("IsLatest"):
                    piece.deleted = True
    else:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=url.bucket, Prefix=url.prefix):
            for item in page.get("Contents", []):
                piece = piece_of(item["Key"])
                if piece is not None:
                    piece.versions.append(None)
    chains: dict[str, list[Piece]] = {}
    for key, piece in pieces.items():   # a key with only delete markers too: a piece the shipper wrote, gone
        chains.setdefault(key[len(url.prefix):].split("/", 1)[0], []).append(piece)
    return chains, strays, versioned


def _verify_chain(client: Any, url: ShippedUrl, chain_id: str, pieces: list[Piece],
                  checkpoint_key: bytes | None) -> ChainReport:
    name = f"{url}{chain_id}/"

    def tampered(*messages: str, result: VerifyResult | None = None) -> ChainReport:
        return ChainReport(name, Verdict.TAMPERED, result, messages)

    expected = 1
    for piece in pieces:
        if piece.seq != expected:
            return tampered(f"{name}{expected:010d}.jsonl: chain broken: the piece is missing (the pieces of a "
                            f"chain are numbered from 0000000001 without a gap; the next one found is {piece.key})")
        if not piece.versions:   # the last pieces too: without this, a chain cut on purpose would pass for a kill
            return tampered(f"s3://{url.bucket}/{piece.key}: tampered: the piece was deleted: only a delete "
                            "marker is left of it")
        expected += 1
    streams = [Stream(f"s3://{url.bucket}/{piece.key}", _reader(client, url.bucket, piece.key, piece.versions[-1]))
               for piece in pieces]
    result = walk(streams, checkpoint_key=checkpoint_key, partial_tails=False)
    if not result.ok:
        return tampered(f"{result.where}:{result.broken_at}: chain broken: {result.problem}", result=result)
    problems = _store_problems(client, url, pieces)
    if len(result.ends) != 1:
        problems.append(f"{name}: chain broken: its pieces hold {len(result.ends)} chains, a shipped chain is one")
    else:
        problems += _name_problems(name, chain_id, result)
    if problems:
        return tampered(*problems, result=result)
    return _ending(name, pieces, result, checkpoint_key is not None)


def _chunks(client: Any, bucket: str, key: str, version: str | None) -> Iterator[bytes]:
    """The bytes of one version of a piece, as they arrive."""
    extra = {"VersionId": version} if version is not None else {}
    body = client.get_object(Bucket=bucket, Key=key, **extra)["Body"]
    try:
        yield from body.iter_chunks(_CHUNK)
    finally:
        body.close()


def _reader(client: Any, bucket: str, key: str, version: str | None) -> Any:
    def lines() -> Iterator[bytes]:
        return split_lines(_chunks(client, bucket, key, version))
    return lines


def _digest(client: Any, bucket: str, key: str, version: str | None) -> str:
    digest = hashlib.sha256()
    for chunk in _chunks(client, bucket, key, version):
        digest.update(chunk)
    return digest.hexdigest()


def _store_problems(client: Any, url: ShippedUrl, pieces: list[Piece]) -> list[str]:
    """Overwritten pieces (a later version with other bytes) and pieces hidden by a delete marker."""
    problems: list[str] = []
    for piece in pieces:
        where = f"s3://{url.bucket}/{piece.key}"
        if piece.deleted:
            problems.append(f"{where}: tampered: the piece was deleted (a delete marker hides it); its first "
                            "version was verified")
        if len(piece.versions) > 1:
            first = _digest(client, url.bucket, piece.key, piece.versions[-1])
            for version in reversed(piece.versions[:-1]):
                if _digest(client, url.bucket, piece.key, version) != first:
                    problems.append(f"{where}: tampered: the piece was overwritten: version {version} holds other "
                                    f"bytes than its first version {piece.versions[-1]} (the one verified)")
    return problems


def _name_problems(name: str, chain_id: str, result: VerifyResult) -> list[str]:
    """A chain is named by its first line's time and hash: a chain moved or renamed does not match."""
    (end,) = result.ends
    stamp, _, digest = chain_id.partition("-")
    # A first line without a time (never the proxy's) can only be checked by its hash.
    if digest != end.first_hash[:16] or (end.first_time and stamp != re.sub(r"[-:]", "", end.first_time)[:15] + "Z"):
        return [f"{name}: tampered: the chain's name does not match its first line (time {end.first_time}, hash "
                f"{end.first_hash[:16]}…): pieces were moved or renamed"]
    return []


def _ending(name: str, pieces: list[Piece], result: VerifyResult, keyed: bool) -> ChainReport:
    (end,) = result.ends
    summary = f"{name}: OK, {counted(result.lines, 'line')} in {counted(len(pieces), 'piece')}, chain intact"
    where = f"ends at {end.last_stream} line {end.last_line}, its last line of {end.last_time or 'no time'}"
    if not keyed:
        return ChainReport(name, Verdict.SEALED, result, (
            f"{summary}; {where} (without the checkpoint key its end is not checked)",))
    summary += f", {counted(result.checkpoints, 'checkpoint MAC')} verified"
    if end.checkpoint_at is not None and not end.since_checkpoint and end.checkpoint_kind == CHECKPOINT_CLOSE:
        return ChainReport(name, Verdict.SEALED, result, (
            f"{summary}, sealed by its closing checkpoint of {end.checkpoint_time}; {where}",))
    if end.checkpoint_at is None:
        why = f"the chain has no checkpoint: none of its {counted(end.since_checkpoint, 'line')} is sealed"
    else:
        piece, line = end.checkpoint_at
        at = f"(piece {piece.rsplit('/', 1)[-1].removesuffix('.jsonl')}, line {line})"
        why = (f"the chain ends {counted(end.since_checkpoint, 'line')} after its last checkpoint {at}"
               if end.since_checkpoint
               else f"the chain ends at a periodic checkpoint {at}, not a closing one")
    return ChainReport(name, Verdict.CUT, result, (
        f"{summary}; {where}",
        f"{name}: warning: {why}: the proxy was killed or is still running; lines after it were not shipped "
        f"(last piece {end.last_stream})",
        f"{name}: note: pieces after it deleted for good would look the same (what Object Lock in COMPLIANCE "
        "mode forbids until their retention ends): compare the time of its last line with when the proxy "
        "stopped"))
