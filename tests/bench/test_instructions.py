"""bench/instructions.py: the totals it reads from callgrind's dumps."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.instructions import _total

HEADER = "# callgrind format\nversion: 1\ncreator: callgrind-3.19.0\npid: 42\ncmd: python3\npart: 1\n\nevents: Ir\n"


@pytest.mark.parametrize(("text", "expected"), [
    (HEADER + "\nfl=(1) x.c\nfn=(1) f\n3 10\n\nsummary: 176247663\n\n\ntotals: 176247663\n", 176_247_663),
    (HEADER + "\ntotals: 1881367\n", 1_881_367),
])
def test_the_total_of_a_dump_is_read(tmp_path: Path, text: str, expected: int) -> None:
    dump = tmp_path / "cg.42.1"
    dump.write_text(text)
    assert _total(dump) == expected


def test_a_dump_without_a_total_is_an_error(tmp_path: Path) -> None:
    dump = tmp_path / "cg.42.1"
    dump.write_text(HEADER)
    with pytest.raises(SystemExit, match="no total"):
        _total(dump)
