"""`bailiwick audit verify s3://BUCKET/PREFIX` against moto's server, with an Object Lock bucket.

The pieces are cut, as the shipper cuts them (docs/operations.md, "Shipping
the audit log"), from what a real `AuditLog` wrote, and uploaded here with a
retention period; then they are damaged as a killed pod or an attacker
would, and the command must tell which it was.
"""

from __future__ import annotations

import datetime
import itertools
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from proxy.audit import AuditLog, UtcClock
from proxy.cli import main
from proxy.localstore import MotoServer, free_port

from .logs import KEY

BUCKET = "bailiwick-audit-shipped"
_prefixes = itertools.count()


@pytest.fixture(scope="module")
def store(moto: MotoServer, direct: Any) -> Any:
    direct.create_bucket(Bucket=BUCKET, ObjectLockEnabledForBucket=True)
    return direct


@pytest.fixture
def prefix() -> str:
    return f"proxy-{next(_prefixes)}/"


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the standard credentials chain finds (moto accepts any)."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AUDIT_KEY": KEY.decode()}.items():
        monkeypatch.setenv(name, value)


def written(tmp: Path, records: int, *, worker: int | None = None, close: bool = True) -> list[bytes]:
    """The lines a real writer wrote: `records` decisions, a checkpoint every 3, closed or (killed) not."""
    log = AuditLog(str(tmp / "audit.jsonl"), worker, checkpoint_key=KEY, checkpoint_every=3)
    path = Path(str(log.path))
    clock = UtcClock()
    for n in range(records):
        log.write({"decision_id": f"d{n}", "decision": "allow", "time": clock.now()})
    if close:
        log.close()
    else:
        assert log.wait_written(5)
    lines = path.read_bytes().splitlines(keepends=True)
    if not close:
        log.close()   # its closing checkpoint never ships: the pod was killed
    return lines


def pieces(lines: list[bytes]) -> list[bytes]:
    """Cut where the shipper cuts: after each checkpoint line (the rest, if any, is the last piece)."""
    cut: list[bytes] = []
    current = b""
    for line in lines:
        current += line
        if b'"checkpoint"' in line:
            cut.append(current)
            current = b""
    return cut + ([current] if current else [])


def chain_id(lines: list[bytes]) -> str:
    first = json.loads(lines[0])
    return re.sub(r"[-:]", "", str(first["time"]))[:15] + "Z-" + str(first["hash"])[:16]


def ship(store: Any, prefix: str, lines: list[bytes], parts: list[bytes] | None = None, name: str = "") -> str:
    """Upload the pieces under PREFIX<chain-id>/ with a retention; the chain's folder."""
    folder = f"{prefix}{name or chain_id(lines)}/"
    until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
    for seq, body in enumerate(parts if parts is not None else pieces(lines), start=1):
        store.put_object(Bucket=BUCKET, Key=f"{folder}{seq:010d}.jsonl", Body=body, ObjectLockMode="GOVERNANCE",
                         ObjectLockRetainUntilDate=until, ContentType="application/x-ndjson")
    return folder


def run(moto: MotoServer, prefix: str, capsys: pytest.CaptureFixture[str], *options: str) -> tuple[int, str]:
    status = main(["audit", "verify", f"s3://{BUCKET}/{prefix}", "--endpoint-url", moto.url,
                   "--region", "us-east-1", *options])
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def edit_first_line(body: bytes) -> bytes:
    first, rest = body.split(b"\n", 1)
    return first.replace(b'"allow"', b'"deny"') + b"\n" + rest


# Each case: how the chain's pieces get to the store (a damage to them), the exit status, what the output says.
Damage = Callable[[Any, str, list[bytes]], None]


def sealed(store: Any, prefix: str, lines: list[bytes]) -> None:
    ship(store, prefix, lines)


def last_piece_lost(store: Any, prefix: str, lines: list[bytes]) -> None:
    ship(store, prefix, lines, pieces(lines)[:-1])


def edited(store: Any, prefix: str, lines: list[bytes]) -> None:
    parts = pieces(lines)
    ship(store, prefix, lines, [parts[0], edit_first_line(parts[1]), *parts[2:]])


def gap(store: Any, prefix: str, lines: list[bytes]) -> None:
    folder = ship(store, prefix, lines)
    store.delete_objects(Bucket=BUCKET, Delete={"Objects": [
        {"Key": f"{folder}0000000002.jsonl", "VersionId": version["VersionId"]}
        for version in store.list_object_versions(Bucket=BUCKET, Prefix=f"{folder}0000000002")["Versions"]
    ]}, BypassGovernanceRetention=True)   # gone for good (GOVERNANCE lets a privileged caller do it)


def overwritten(store: Any, prefix: str, lines: list[bytes]) -> None:
    folder = ship(store, prefix, lines)
    store.put_object(Bucket=BUCKET, Key=f"{folder}0000000002.jsonl", Body=edit_first_line(pieces(lines)[1]))


def retried(store: Any, prefix: str, lines: list[bytes]) -> None:
    folder = ship(store, prefix, lines)
    store.put_object(Bucket=BUCKET, Key=f"{folder}0000000002.jsonl", Body=pieces(lines)[1])   # the same bytes


def deleted(store: Any, prefix: str, lines: list[bytes]) -> None:
    folder = ship(store, prefix, lines)
    store.delete_object(Bucket=BUCKET, Key=f"{folder}0000000002.jsonl")   # a delete marker over it


def last_piece_deleted(store: Any, prefix: str, lines: list[bytes]) -> None:
    """The last piece deleted for good but for its delete marker: not a kill, though the chain ends sooner."""
    folder = ship(store, prefix, lines)
    key = f"{folder}0000000003.jsonl"
    versions = store.list_object_versions(Bucket=BUCKET, Prefix=key)["Versions"]
    store.delete_object(Bucket=BUCKET, Key=key)
    store.delete_objects(Bucket=BUCKET, Delete={"Objects": [
        {"Key": key, "VersionId": version["VersionId"]} for version in versions]}, BypassGovernanceRetention=True)


def endless_line(store: Any, prefix: str, lines: list[bytes]) -> None:
    parts = pieces(lines)
    ship(store, prefix, lines, [parts[0], parts[1] + b"x" * (2 << 20), *parts[2:]])


def partial(store: Any, prefix: str, lines: list[bytes]) -> None:
    parts = pieces(lines)
    ship(store, prefix, lines, [parts[0], parts[1][:-1], *parts[2:]])


def renamed(store: Any, prefix: str, lines: list[bytes]) -> None:
    ship(store, prefix, lines, name="20200101T000000Z-" + json.loads(lines[0])["hash"][:16])


@pytest.mark.parametrize(("damage", "status", "expected"), [
    (sealed, 0, r"OK, 11 lines in 3 pieces, chain intact, 3 checkpoint MACs verified, sealed by its closing "
                r"checkpoint of .*; ends at s3://\S+/0000000003\.jsonl line 3"),
    (last_piece_lost, 3, r"warning: the chain ends at a periodic checkpoint \(piece 0000000002, line 4\), not a "
                         r"closing one: the proxy was killed or is still running; lines after it were not shipped "
                         r"\(last piece s3://\S+/0000000002\.jsonl\)"),
    (edited, 1, r"/0000000002\.jsonl:1: chain broken: hash does not match the line's content"),
    (gap, 1, r"/0000000002\.jsonl: chain broken: the piece is missing"),
    (overwritten, 1, r"/0000000002\.jsonl: tampered: the piece was overwritten: version \S+ holds other bytes"),
    (retried, 0, r"sealed by its closing checkpoint"),
    (deleted, 1, r"/0000000002\.jsonl: tampered: the piece was deleted \(a delete marker hides it\)"),
    (last_piece_deleted, 1, r"/0000000003\.jsonl: tampered: the piece was deleted: only a delete marker is left"),
    (endless_line, 1, r"/0000000002\.jsonl:5: chain broken: a line longer than 1048576 bytes"),
    (partial, 1, r"/0000000002\.jsonl:4: chain broken: the last line has no newline"),
    (renamed, 1, r"tampered: the chain's name does not match its first line"),
])
def test_a_shipped_chain_is_verified_from_the_store(
    tmp_path: Path, moto: MotoServer, store: Any, prefix: str, capsys: pytest.CaptureFixture[str],
    damage: Damage, status: int, expected: str,
) -> None:
    damage(store, prefix, written(tmp_path, 8))
    code, out = run(moto, prefix, capsys, "--checkpoint-key-env", "AUDIT_KEY")
    assert re.search(expected, out), out
    assert code == status, out


def test_a_killed_pod_is_told_from_tampering_by_the_lines_after_its_last_checkpoint(
    tmp_path: Path, moto: MotoServer, store: Any, prefix: str, capsys: pytest.CaptureFixture[str],
) -> None:
    lines = written(tmp_path, 8, close=False)   # 8 decisions, checkpoints after 3 and 6: 2 lines after the last
    folder = ship(store, prefix, lines)
    code, out = run(moto, prefix, capsys, "--checkpoint-key-env", "AUDIT_KEY")
    assert code == 3, out
    assert (f"warning: the chain ends 2 lines after its last checkpoint (piece 0000000002, line 4): the proxy was "
            f"killed or is still running; lines after it were not shipped (last piece s3://{BUCKET}/{folder}"
            "0000000003.jsonl)") in out
    assert "note: pieces after it deleted for good would look the same" in out   # what cannot be told apart


def test_each_worker_chain_is_verified(
    tmp_path: Path, moto: MotoServer, store: Any, prefix: str, capsys: pytest.CaptureFixture[str],
) -> None:
    folders = [ship(store, prefix, written(tmp_path, 4 + worker, worker=worker)) for worker in (0, 1)]
    code, out = run(moto, prefix, capsys, "--checkpoint-key-env", "AUDIT_KEY")
    assert code == 0, out
    for folder, count in zip(folders, (6, 7), strict=True):
        assert f"s3://{BUCKET}/{folder}: OK, {count} lines in" in out


def test_without_the_key_the_chain_is_checked_not_its_end(
    tmp_path: Path, moto: MotoServer, store: Any, prefix: str, capsys: pytest.CaptureFixture[str],
) -> None:
    ship(store, prefix, written(tmp_path, 8, close=False))
    code, out = run(moto, prefix, capsys)
    assert code == 0, out
    assert "chain intact; ends at" in out
    assert "without the checkpoint key its end is not checked" in out


def test_a_bucket_without_versions_is_named_as_unable_to_show_an_overwrite(
    tmp_path: Path, moto: MotoServer, direct: Any, prefix: str, capsys: pytest.CaptureFixture[str],
) -> None:
    bucket = "bailiwick-audit-unversioned"
    direct.create_bucket(Bucket=bucket)
    lines = written(tmp_path, 8)
    for seq, body in enumerate(pieces(lines), start=1):
        direct.put_object(Bucket=bucket, Key=f"{prefix}{chain_id(lines)}/{seq:010d}.jsonl", Body=body)
    status = main(["audit", "verify", f"s3://{bucket}/{prefix}", "--endpoint-url", moto.url, "--region",
                   "us-east-1", "--checkpoint-key-env", "AUDIT_KEY"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert f"warning: s3://{bucket}: the bucket is not versioned (so it has no Object Lock)" in out


@pytest.mark.parametrize(("where", "expected"), [
    ("empty", "no shipped audit chain there"),
    ("unreachable", "cannot read the store"),
    ("no-bucket", "the store refused: NoSuchBucket"),
])
def test_a_store_with_nothing_to_verify_is_an_error_in_plain_words(
    moto: MotoServer, store: Any, prefix: str, capsys: pytest.CaptureFixture[str], where: str, expected: str,
) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}" if where == "unreachable" else moto.url
    bucket = "no-such-bucket-here" if where == "no-bucket" else BUCKET
    status = main(["audit", "verify", f"s3://{bucket}/{prefix}", "--endpoint-url", endpoint, "--region",
                   "us-east-1"])
    captured = capsys.readouterr()
    assert status == 1
    assert expected in captured.err
    assert "Traceback" not in captured.err + captured.out
