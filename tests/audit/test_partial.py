"""A log cut short by a full disk or a crash (a partial last line) is not a tampered one.

`verify` accepts a partial line at the end of a file and says so (exit 3 on
the command line), while a line that is not JSON anywhere else, or that has
its newline, still breaks the chain. A writer restarted on a file that ends in
a partial line rotates it away and goes on from its last complete line, so
the log stays verifiable.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.audit import log_files, verify
from proxy.cli import main

from .logs import KEY, write_log
from .test_reference_doc import DOC, documented_messages


def cut(path: Path, keep: int = 30) -> None:
    """The last line's end never reached the disk: `keep` bytes of it did."""
    text = path.read_text()
    start = text.rstrip("\n").rfind("\n") + 1
    path.write_text(text[:start + keep])


NOT_TORN = ("the last line has no newline and is not the beginning of the line the chain expects next (a write "
            "cut short leaves the beginning of a line the proxy wrote): it was edited or added")


def first_line(text: str) -> str:
    return text[:text.index("\n")]


@pytest.mark.parametrize(("damage", "broken_at", "problem"), [
    (lambda text: text[:-30], None, ""),                       # a partial last line: cut short, not tampered
    (lambda text: text[:-1], None, ""),                        # only its newline missing: still partial
    (lambda text: text[:-30] + "\0" * 100, None, ""),          # and the zeros a crash may leave after it
    (lambda text: text + "\0" * 50, None, ""),                 # zeros alone
    (lambda text: text[:-30] + "\n", 3, "not valid JSON"),     # a last line with its newline that is not JSON
    (lambda text: text.replace("}\n", "}x\n", 1), 1, "not valid JSON"),   # not JSON before the end
    (lambda text: text + "garbage", 4, NOT_TORN),              # bytes appended: no line of the proxy's
    (lambda text: text + "x" * (2 << 20) + "\n", 4,            # not read into memory whole
     "a line longer than 1048576 bytes, which the proxy never writes"),
    # the last line edited, its newline stripped to pass for a line cut short: whole, and its hash fails
    (lambda text: text[:text.rindex('"allow"')] + '"deny"' + text[text.rindex('"allow"') + 7:-1], 3, NOT_TORN),
    # the beginning of another line (its prev is not the last line's hash)
    (lambda text: text + first_line(text)[:-30], 4, NOT_TORN),
])
def test_a_partial_last_line_is_reported_not_broken(
    tmp_path: Path, damage: object, broken_at: int | None, problem: str,
) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 3)
    assert callable(damage)
    path.write_text(damage(path.read_text()))
    result = verify(path)
    assert result.broken_at == broken_at, result.problem
    if broken_at is None:
        assert result.partial_end
        complete = len(path.read_text().splitlines()) - 1
        assert result.lines == complete
        assert result.warnings == (f"the log ends in a partial line ({path}:{complete + 1}, cut short by a full "
                                   f"disk or a crash, or truncated: verify cannot tell which): {complete} complete "
                                   "lines verify",)
    else:
        assert result.problem == problem


@pytest.mark.parametrize("worker", [None, 1])
def test_a_file_that_holds_only_a_partial_line_goes_on_from_the_file_before(tmp_path: Path,
                                                                           worker: int | None) -> None:
    """A restart rotated the log (max_bytes), then the first line of the new file was cut short."""
    path = tmp_path / "audit.jsonl"
    write_log(path, 6, worker=worker, max_bytes=400)
    (files,) = log_files([tmp_path]).values()
    files[-1].write_text(first_line(files[-1].read_text())[:-30])
    assert verify(files).partial_end
    files[-1].write_text(first_line(files[0].read_text())[:-30])   # the beginning of a line from elsewhere
    assert verify(files).problem == NOT_TORN


@pytest.mark.parametrize(("key", "expected"), [(None, 3), (KEY, 3)])
def test_the_command_line_exits_3_on_a_partial_last_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, key: bytes | None,
    expected: int,
) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 4, checkpoint_key=key, checkpoint_every=2)
    cut(path)
    options = []
    if key is not None:
        monkeypatch.setenv("AUDIT_KEY", key.decode())
        options = ["--checkpoint-key-env", "AUDIT_KEY"]
    assert main(["audit", "verify", str(path), *options]) == expected
    out = capsys.readouterr().out
    assert "the log ends in a partial line" in out
    assert "cut short by a full disk or a crash" in out
    assert "chain broken" not in out


@pytest.mark.parametrize("options", [{}, {"checkpoint_key": KEY, "checkpoint_every": 2}, {"max_bytes": 600}])
def test_a_restart_on_a_partial_line_rotates_it_away_and_goes_on(tmp_path: Path, options: dict[str, object]) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 3, **options)
    (before,) = log_files([tmp_path]).values()
    complete = sum(len(f.read_text().splitlines()) for f in before) - 1
    cut(path)
    write_log(path, 2, **options)
    (files,) = log_files([tmp_path]).values()
    torn = [f for f in files if not f.read_bytes().endswith(b"\n")]
    assert len(torn) == 1
    assert torn[0] != path
    key = options.get("checkpoint_key")
    result = verify(files, checkpoint_key=key if isinstance(key, bytes) else None)
    assert result.ok, result.problem
    assert not result.partial_end
    assert f"{torn[0]} ends in a partial line" in result.warnings[0]
    assert result.lines == complete + len(path.read_text().splitlines())
    if key is not None:
        assert result.warnings[1:] == ()   # otherwise sealed: the restart closed with its checkpoint


def test_a_file_after_a_partial_line_must_go_on_from_the_last_complete_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 3)
    cut(path)
    write_log(path, 2)
    (files,) = log_files([tmp_path]).values()
    lines = files[-1].read_text().splitlines()
    files[-1].write_text("\n".join(lines[1:]) + "\n")   # the line that went on from it removed
    result = verify(files)
    assert (result.file, result.broken_at) == (files[-1], 1)
    assert result.problem.startswith(f"prev is not the hash of the last line of {files[0]} (line 2)")


@pytest.mark.parametrize("where", ["last file", "rotated file"])
def test_the_partial_line_warnings_are_written_down(tmp_path: Path, where: str) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 3)
    cut(path)
    if where == "rotated file":
        write_log(path, 2)
    (files,) = log_files([tmp_path]).values()
    (warning,) = verify(files).warnings
    patterns = documented_messages(DOC.read_text())
    assert any(pattern.fullmatch(warning) for pattern in patterns), warning


def test_the_partial_line_problem_is_written_down() -> None:
    patterns = documented_messages(DOC.read_text())
    assert any(pattern.fullmatch(NOT_TORN) for pattern in patterns)
