"""YAML read as a tree with lines: raw scalar text, duplicate keys, refused features, Reader shapes."""

from __future__ import annotations

import pytest

from proxy.errors import PolicyIssue
from proxy.policy.yamlsource import Map, Reader, Scalar, Seq, Value, parse

STR = "tag:yaml.org,2002:str"


def parsed(text: str) -> tuple[Value | None, list[str]]:
    issues: list[PolicyIssue] = []
    return parse(text, "f.yaml", issues), [str(i) for i in issues]


def test_values_keep_lines_and_raw_text() -> None:
    root, issues = parsed("codes: [EU, NO, yes, off, 1.0, ~]\nname:\n  'NO'\n")
    assert issues == []
    assert isinstance(root, Map)
    codes = root.get("codes")
    assert isinstance(codes, Seq)
    assert [(s.text, s.line) for s in codes.items if isinstance(s, Scalar)] == [
        ("EU", 1), ("NO", 1), ("yes", 1), ("off", 1), ("1.0", 1), ("~", 1),
    ]
    assert [s.is_null for s in codes.items if isinstance(s, Scalar)] == [False] * 5 + [True]
    name = root.get("name")
    assert isinstance(name, Scalar)
    assert (name.text, name.line) == ("NO", 3)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", None, id="empty"),
        pytest.param("# only a comment\n", None, id="comment"),
    ],
)
def test_empty_documents(text: str, expected: None) -> None:
    assert parsed(text) == (expected, [])


@pytest.mark.parametrize(
    ("text", "issues"),
    [
        pytest.param("a: 1\nb:\n  c: 1\n  c: 2\na: 3\n",
                     ["f.yaml:4: b.c: duplicate key (first written at line 3)",
                      "f.yaml:5: a: duplicate key (first written at line 1)"], id="duplicate keys"),
        pytest.param("? [a, b]\n: 1\n", ["f.yaml:1: a key must be a plain name"], id="complex key"),
        pytest.param("a: &x 1\n", ["f.yaml:1: YAML anchors (&x) are not supported; write the value out"],
                     id="anchor"),
        pytest.param("a: !!binary aGk=\n",
                     ["f.yaml:1: YAML tags (tag:yaml.org,2002:binary) are not supported; remove the tag"],
                     id="standard but unneeded tag"),
        pytest.param("a: b: c\n", ["f.yaml:1: not valid YAML: mapping values are not allowed here"],
                     id="syntax"),
    ],
)
def test_refused(text: str, issues: list[str]) -> None:
    assert parsed(text)[1] == issues


@pytest.mark.parametrize(
    ("text", "issues"),
    [
        # What a dropped key holds is skipped whole: a problem inside it is not reported as well.
        pytest.param("? {a: 1, a: 2}\n: {b: 1, b: 2}\nc: {d: 1, d: 2}\n",
                     ["f.yaml:1: a key must be a plain name",
                      "f.yaml:3: c.d: duplicate key (first written at line 3)"], id="complex key skipped whole"),
        pytest.param("a: 1\na: {b: 1, b: 2}\n", ["f.yaml:2: a: duplicate key (first written at line 1)"],
                     id="duplicate's value skipped"),
        pytest.param("x:\n  <<: {a: 1}\n  ~: [1]\n  y: [{z: 1, z: 2}]\n",
                     ["f.yaml:2: x: YAML merge keys (<<) are not supported; write the keys out",
                      "f.yaml:3: x: a key must be a plain name",
                      "f.yaml:4: x.y[0].z: duplicate key (first written at line 4)"], id="merge and null keys"),
        # One refused feature anywhere is the file's only issue, even after problems of the tree.
        pytest.param("a: 1\na: 2\nb: !foo 3\n", ["f.yaml:3: YAML tags (!foo) are not supported; remove the tag"],
                     id="tag after a duplicate"),
        pytest.param("a: 1\n---\nb: *x\n",
                     ["f.yaml:3: YAML aliases (*name) are not supported; write the value out"
                      ' (a bare * starts an alias: write "*" in quotes)'], id="alias in a second document"),
        pytest.param("a: 1\n---\nb: 2\n",
                     ["f.yaml:2: not valid YAML: expected a single document in the stream, "
                      "but found another document"], id="second document"),
        pytest.param("a: [b\n", ["f.yaml:2: not valid YAML: while parsing a flow sequence, expected ',' or ']', "
                                  "but got '<stream end>'"], id="unclosed flow sequence"),
    ],
)
def test_what_is_dropped_or_refused_is_reported_once(text: str, issues: list[str]) -> None:
    assert parsed(text)[1] == issues


def test_a_tree_is_read_whole_with_every_line() -> None:
    root, issues = parsed("top:\n  - name: a\n    list: [x, 'y']\n  -\n    - 1\n    - {k: v}\n  - ''\n")
    assert issues == []
    assert root == Map({"top": (Scalar("top", STR, 1), Seq((
        Map({"name": (Scalar("name", STR, 2), Scalar("a", STR, 2)),
             "list": (Scalar("list", STR, 3), Seq((Scalar("x", STR, 3), Scalar("y", STR, 3)), 3))}, 2),
        Seq((Scalar("1", "tag:yaml.org,2002:int", 5), Map({"k": (Scalar("k", STR, 6), Scalar("v", STR, 6))}, 6)), 5),
        Scalar("", STR, 7),
    ), 2))}, 1)


def test_explicit_str_tag_is_accepted() -> None:
    root, issues = parsed("a: !!str NO\n")
    assert issues == []
    assert isinstance(root, Map)
    assert root.get("a") == Scalar("NO", "tag:yaml.org,2002:str", 1)


@pytest.mark.parametrize(
    ("text", "method", "result", "issues"),
    [
        ("v: NO\n", "string", "NO", []),
        ("v:\n", "string", None, ["f.yaml:1: v: expected a string, found nothing"]),
        ("v: ''\n", "string", None, ['f.yaml:1: v: expected a string, found ""']),
        ("v: [a]\n", "string", None, ["f.yaml:1: v: expected a string, found a list"]),
        ("v: true\n", "boolean", True, []),
        ("v: yes\n", "boolean", None, ['f.yaml:1: v: expected true or false, found "yes"']),
        ("v: b\n", "choice", "b", []),
        ("v: d\n", "choice", None, ['f.yaml:1: v: expected one of "a", "b", "c", found "d"']),
    ],
)
def test_reader_scalars(text: str, method: str, result: object, issues: list[str]) -> None:
    root, _ = parsed(text)
    assert isinstance(root, Map)
    value = root.get("v")
    assert value is not None
    found: list[PolicyIssue] = []
    reader = Reader("f.yaml", found)
    if method == "choice":
        got: object = reader.choice(value, "v", ("a", "b", "c"))
    else:
        got = getattr(reader, method)(value, "v")
    assert got == result
    assert [str(i) for i in found] == issues


def test_reader_mapping_reports_unknown_and_missing_keys() -> None:
    root, _ = parsed("x:\n  a: 1\n  z: 2\n")
    assert isinstance(root, Map)
    value = root.get("x")
    assert value is not None
    found: list[PolicyIssue] = []
    result = Reader("f.yaml", found).mapping(value, "x", allowed=("a", "b"), required=("b",))
    assert result is value
    assert [str(i) for i in found] == [
        "f.yaml:3: x.z: unknown key (expected one of: a, b)",
        'f.yaml:2: x: missing required key "b"',
    ]


def test_reader_sequence() -> None:
    root, _ = parsed("e: []\nm: {a: 1}\n")
    assert isinstance(root, Map)
    empty, mapping = root.get("e"), root.get("m")
    assert empty is not None
    assert mapping is not None
    found: list[PolicyIssue] = []
    reader = Reader("f.yaml", found)
    assert reader.sequence(empty, "e", what="a list of things") is None
    assert reader.sequence(empty, "e", what="a list of things", non_empty=False) == empty
    assert reader.sequence(mapping, "m", what="a list of things") is None
    assert [str(i) for i in found] == [
        "f.yaml:1: e: expected a list of things, found an empty list",
        "f.yaml:2: m: expected a list of things, found a mapping",
    ]
