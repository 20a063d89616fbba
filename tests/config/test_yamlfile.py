"""The configuration file's reader gives the values ``yaml.safe_load`` gives, and the line of each setting.

`proxy.config.yamlfile` composes the file itself to keep the lines; what a
setting means must not change for it: YAML 1.1's booleans (``NO``, ``on``),
octal and sexagesimal numbers, anchors, aliases and merge keys, duplicate keys,
tags. A file whose aliases nest (a "billion laughs") or refer to themselves
is read as quickly as ``safe_load`` reads it, never walked alias by alias.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.config.yamlfile import read_yaml
from tests.test_operations_doc import reference_block

TRICKY = [
    "a: yes\nb: NO\nc: on\nd: Off\ne: true\nf: ~\ng: y\nh: n\n",
    "a: 0755\nb: 0o755\nc: 0x1F\nd: 1_000\ne: 1e3\nf: .inf\ng: 010\nh: 1:30\ni: -.NaN\nj: 08\n",
    "base: &b {x: 1, y: [1, 2]}\nother: *b\n",
    "base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n",
    "a: &a {x: 1}\nb: &b {y: 2}\nc:\n  <<: [*a, *b]\n  z: 3\n",
    "a: 1\na: 2\nb: {c: 1, c: 2}\n",
    "a: !!str 123\nb: !!binary aGVsbG8=\nc: !!set {x, y}\nd: 2001-12-14\ne: !!float 1\nf: !!int '7'\n",
    "1: a\n2.5: b\n~: c\ntrue: d\n",
    "a: 2001-12-14t21:59:43.10-05:00\nb: '0755'\nc: \"yes\"\n",
    "a: |\n  two\n  lines\nb: >-\n  folded\n  text\n",
    "%YAML 1.1\n---\na: 1\n...\n",
    "",
    "# only a comment\n",
    "---\n",
]


def _both(tmp_path: Path, text: str) -> tuple[Any, dict[str, int]]:
    path = tmp_path / "bailiwick.yaml"
    path.write_text(text, encoding="utf-8")
    loaded, lines = read_yaml(path)
    assert loaded == (yaml.safe_load(text) or {})
    return loaded, lines


@pytest.mark.parametrize("text", [reference_block(), *TRICKY])
def test_values_are_exactly_safe_loads(tmp_path: Path, text: str) -> None:
    _both(tmp_path, text)


_SCALARS = st.one_of(
    st.sampled_from(["yes", "NO", "on", "off", "~", "null", "0755", "0o17", "0x1f", "1_000", "1:30", ".inf",
                     "2001-12-14", "'quoted'", "\"dq\"", "1e3", "+12", "-0", "=", "<<"]),
    st.from_regex(r"[A-Za-z0-9_.+-]{1,8}", fullmatch=True),
)


@st.composite
def _documents(draw: st.DrawFn) -> str:
    """Block mappings of scalars, flow lists and nested mappings, some of their values anchored and aliased."""
    lines: list[str] = []
    anchors: list[str] = []
    for i in range(draw(st.integers(1, 6))):
        key = draw(st.sampled_from(["a", "b", "c", "yes", "1", "x"]))
        kinds = ["scalar", "list", "map", "alias", "merge"] if anchors else ["scalar", "list", "map"]
        kind = draw(st.sampled_from(kinds))
        if kind == "scalar":
            lines.append(f"{key}: {draw(_SCALARS)}")
        elif kind == "list":
            lines.append(f"{key}: [{', '.join(draw(st.lists(_SCALARS, max_size=3)))}]")
        elif kind == "map":
            anchor = f"n{i}"
            anchors.append(anchor)
            lines.append(f"{key}: &{anchor}")
            lines.extend(f"  k{j}: {draw(_SCALARS)}" for j in range(draw(st.integers(1, 3))))
        elif kind == "alias":
            lines.append(f"{key}: *{draw(st.sampled_from(anchors))}")
        else:
            lines.append(f"{key}:\n  <<: *{draw(st.sampled_from(anchors))}\n  k0: {draw(_SCALARS)}")
    return "\n".join(lines) + "\n"


@settings(max_examples=150, deadline=None)
@given(_documents())
def test_generated_files_read_as_safe_load_reads_them(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    try:
        expected = yaml.safe_load(text)
    except yaml.YAMLError:
        return   # not YAML: tests/test_config.py checks how such a file's error is given
    path = tmp_path_factory.mktemp("generated") / "bailiwick.yaml"
    path.write_text(text, encoding="utf-8")
    assert read_yaml(path)[0] == (expected or {})


def test_lines_under_an_alias_and_a_merge_key(tmp_path: Path) -> None:
    _, lines = _both(tmp_path, "base: &b\n  x: 1\n  y: 2\nother:\n  <<: *b\n  y: 3\nthird: *b\n")
    assert (lines["base.x"], lines["other.y"], lines["third"]) == (2, 6, 7)
    assert lines["other.x"] == 2   # a merged setting is named where it is written
    assert "third.x" not in lines   # under an alias: errors name the alias's line (`Origins.where`)


def test_nested_aliases_are_not_walked_one_by_one(tmp_path: Path) -> None:
    text = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 8))
    started = time.monotonic()
    _, lines = _both(tmp_path, text)
    assert time.monotonic() - started < 5
    assert len(lines) < 200


def test_an_alias_of_itself_reads_as_safe_load_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "bailiwick.yaml"
    path.write_text("a: &a [1, *a]\n", encoding="utf-8")
    loaded, lines = read_yaml(path)
    assert loaded["a"][0] == 1
    assert loaded["a"][1] is loaded["a"]
    assert lines == {"a": 1, "a[0]": 1, "a[1]": 1}
