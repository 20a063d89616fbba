"""The block-style line reader: whenever it reads a file, the same tree and issues as PyYAML's events."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.errors import PolicyIssue
from proxy.policy import blockyaml
from proxy.policy.yamlsource import Map, Scalar, Seq, Value, parse

STR = "tag:yaml.org,2002:str"
NULL = "tag:yaml.org,2002:null"


def by_events(text: str, take: bool = False) -> tuple[Value | None, list[str], list[tuple[str, int, Value]]]:
    """PyYAML's reading: a taker without `void` keeps `parse` off the line reader."""
    issues: list[PolicyIssue] = []
    taken: list[tuple[str, int, Value]] = []

    def taker(key: str, index: int, item: Value) -> bool:
        if take and index % 2 == 0:
            taken.append((key, index, item))
            return True
        return False

    return parse(text, "f.yaml", issues, taker), [str(i) for i in issues], taken


def by_lines(text: str, take: bool = False) -> tuple[Value | None, list[str], list[tuple[str, int, Value]]] | None:
    """The line reader's reading; None when it gives up."""
    issues: list[PolicyIssue] = []
    taken: list[tuple[str, int, Value]] = []

    def taker(key: str, index: int, item: Value) -> bool:
        if index % 2 == 0:
            taken.append((key, index, item))
            return True
        return False

    try:
        root = blockyaml.scan(text, "f.yaml", issues, taker if take else None)
    except blockyaml.GiveUp:
        return None
    return root, [str(i) for i in issues], taken


def same(text: str) -> bool:
    """Whether the line reader read `text` (then it must agree with PyYAML, taking items or not)."""
    lines = by_lines(text)
    if lines is None:
        return False
    assert lines == by_events(text), text
    assert by_lines(text, take=True) == by_events(text, take=True), text
    return True


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("# a comment\n\n   \n", id="comments only"),
        pytest.param("datasets:\n  - name: a\n    region: eu-west-1\n    resources:\n      - s3://a\n"
                     "    rules:\n      - allow: [read, list]\n        from: [HOME]\n      - deny: [\"*\"]\n"
                     "        from: ['US']\n", id="a policy"),
        pytest.param("a:\nb: ~\nc: null\nd: NO\ne: 'NO'\nf: \"yes\"\ng: 0o7\nh: 1e3\ni: 0x1F\nj: 2001-12-14\n",
                     id="YAML 1.1 tags"),
        pytest.param("k:\n- a\n-\n- - b\n  - c\nj: 1\n", id="a list at its key's column"),
        pytest.param("- a: 1\n  b:\n  - x\n  c: 2\n- -\n- 'it''s'\n", id="lists of mappings"),
        pytest.param("a: b #c\nd: e#f\ng: 'h' # i\nj: [k, 'l', \"m\"]   # n\no: []\np: [ q r , s ]\n",
                     id="comments after values"),
        pytest.param("a b: c\n'd e': f\n\"g\": h\n-x: -1\nu:v: w\n", id="keys"),
        pytest.param("a: 1\nb:\n  c: 1\n  c: 2\na: 3\n~: 4\n<<: 5\nx:\n  y: 1\n", id="dropped keys"),
        pytest.param("a: 1\na:\n  b: 1\n  b: 2\n  c: [1]\n", id="a dropped key's value is not reported"),
        pytest.param("a:\n  '': 1\n  \"\": 2\n", id="an empty key written twice"),
        pytest.param("datasets:\n  - a\n  - b\n  - c\ndatasets:\n  - d\nother:\n  - e\n", id="taken items"),
        pytest.param("  a: 1\n  b:\n     - 2\n", id="indented root"),
        pytest.param("a: x y  z   \nb:    \n", id="spaces"),
        pytest.param("just text\n", id="scalar root"),
    ],
)
def test_reads_what_pyyaml_reads(text: str) -> None:
    assert same(text)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("a:\tb\n", id="tab"),
        pytest.param("a: b\r\n", id="carriage return"),
        pytest.param("---\na: 1\n", id="document start"),
        pytest.param("a: 1\n...\n", id="document end"),
        pytest.param("%YAML 1.1\n---\na: 1\n", id="directive"),
        pytest.param("a: &x 1\nb: *x\n", id="anchor and alias"),
        pytest.param("a: !!str 1\n", id="tag"),
        pytest.param("a: |\n  text\n", id="literal scalar"),
        pytest.param("a: >\n  text\n", id="folded scalar"),
        pytest.param("a: one\n  two\n", id="multi-line plain scalar"),
        pytest.param("a: 'one\n  two'\n", id="multi-line quoted scalar"),
        pytest.param('a: "\\x41"\n', id="escape"),
        pytest.param("a: {b: 1}\n", id="flow mapping"),
        pytest.param("a: [b,\n  c]\n", id="flow list over lines"),
        pytest.param("a: [b, [c]]\n", id="nested flow list"),
        pytest.param("a: [b, ]\n", id="trailing comma"),
        pytest.param("? a\n: 1\n", id="explicit key"),
        pytest.param("a: b: c\n", id="mapping in a value"),
        pytest.param("a: 'b' c\n", id="text after a quoted scalar"),
        pytest.param("a: [b] c\n", id="text after a flow list"),
        pytest.param("a:\n  b: 1\n c: 2\n", id="odd indentation"),
        pytest.param("a: 1\n  b: 2\n", id="deeper after a value"),
        pytest.param("- a\n  - b\n", id="deeper after an item"),
        pytest.param("a: - b\n", id="entry in a value"),
        pytest.param("a\nb\n", id="after the root scalar"),
        pytest.param("  a: 1\nb: 2\n", id="after the root"),
        pytest.param("a: \ufeffb\n", id="byte order mark"),
        pytest.param("a: b\u2028c\n", id="line separator"),
        pytest.param("a: `b`\n", id="reserved indicator"),
        pytest.param("a" * 1001 + ": b\n", id="key too long"),
        pytest.param("a" + " " * 1000 + ": b\n", id="key too far from its colon"),
    ],
)
def test_gives_up(text: str) -> None:
    assert by_lines(text) is None


def test_values_and_lines() -> None:
    lines = by_lines("a:\n  - x\n  -\nb: [NO, 'c']\n")
    assert lines is not None
    root = lines[0]
    assert isinstance(root, Map)
    assert root.line == 1
    a = root.get("a")
    assert a == Seq((Scalar("x", STR, 2), Scalar("", NULL, 3)), 2)
    assert root.get("b") == Seq((Scalar("NO", "tag:yaml.org,2002:bool", 4), Scalar("c", STR, 4)), 4)


def test_parse_reads_again_when_the_line_reader_gives_up_after_taking() -> None:
    """Items taken before the reader gave up are void: `void` is called, then PyYAML offers them again."""
    text = "datasets:\n  - a\n  - b\nlast: |\n  block\n"
    offered: list[str] = []
    voided: list[int] = []

    def take(key: str, index: int, item: Value) -> bool:
        assert isinstance(item, Scalar)
        offered.append(item.text)
        return True

    issues: list[PolicyIssue] = []
    root = parse(text, "f.yaml", issues, take, lambda: voided.append(len(offered)))
    assert voided == [2]
    assert offered == ["a", "b", "a", "b"]
    assert isinstance(root, Map)
    assert issues == []


def test_gives_up_on_deep_nesting() -> None:
    """Blocks nested past Python's recursion limit: the key path of a dropped key is PyYAML's to report."""
    text = "- " * 1200 + "a: 1\n" + "  " * 1200 + "a: 2\n"
    assert by_lines(text) is None
    issues: list[PolicyIssue] = []
    parse(text, "f.yaml", issues)
    assert [i.line for i in issues] == [2]
    assert issues[0].message.startswith("duplicate key")


# Policy-like documents, written in many of the ways YAML allows, with scalars YAML reads in surprising ways.
NASTY = ["NO", "yes", "Off", "~", "null", "Null", "", "0o7", "007", "1e3", "1_000", "0x1F", ".5", "-1", "+1",
         ":", "a:b", "a: b", "#", "a #b", "a#b", "'", "''", '"', "- -", "-", "- a", "[a]", "{a}", "a, b", "*",
         "&a", "!a", "<<", "=", "2001-12-14", "s3://bucket/*", "HOME", "EU", "read", "a  b", " a", "a ", "?", "?a",
         "%", "@a", "`", "Zürich", "a]", "a[", "x,y", "|", ">", "1:2", "tenant-000001",
         "on", "y", "NULL", ".inf", "-.Inf", ".NaN", "0b101", "190:20:30", "2001-12-14 21:59:43", "--", "-x",
         "a\u00a0", "\u00a0", "\u200b", "x\uff1ay", "\u3000", "a::b", "::", "a{b}", "a ?", "a -", "a :b",
         "'''", "it's", "a\\b", "0x_1", "1.", ".", "...", "---", "True", "nO"]
WORDS = st.sampled_from(NASTY) | st.text(alphabet="aN0-: #'\"[],~.", max_size=6)


@st.composite
def scalars(draw: st.DrawFn, flow: bool = False) -> str:
    text = draw(WORDS)
    style = draw(st.sampled_from(["plain", "plain", "single", "double"]))
    if style == "single":
        return "'" + text.replace("'", "''") + "'"
    if style == "double":
        return '"' + text + '"'
    return text


@st.composite
def flows(draw: st.DrawFn) -> str:
    items = draw(st.lists(scalars(flow=True), max_size=4))
    spaced = draw(st.booleans())
    sep = " , " if spaced else ", "
    return ("[ " if spaced else "[") + sep.join(items) + (" ]" if spaced else "]")


def trailer(draw: st.DrawFn) -> str:
    return draw(st.sampled_from(["", "", "", "  ", " # note", "#x", " #", "   # a: b"]))


@st.composite
def documents(draw: st.DrawFn) -> str:
    """A document as lines, built from a random tree with random indentation and styles."""
    lines: list[str] = []
    step = draw(st.sampled_from([2, 2, 4, 1, 3]))

    def node(indent: int, depth: int, after: str) -> None:
        """Write a value: `after` is the text before it on its line ("key:" or "- "), `indent` its block's column."""
        kind = draw(st.sampled_from(["scalar", "flow", "map", "seq", "empty"] if depth < 4 else ["scalar", "flow"]))
        if kind == "scalar":
            lines.append(after + " " + draw(scalars()) + trailer(draw))
        elif kind == "flow":
            lines.append(after + " " + draw(flows()) + trailer(draw))
        elif kind == "empty":
            lines.append(after + trailer(draw))
        elif kind == "map":
            inline = after.endswith("-") and draw(st.booleans())
            keys = draw(st.lists(WORDS | st.sampled_from(["name", "rules", "from", "allow"]), min_size=1, max_size=4))
            for i, key in enumerate(keys):
                written = draw(st.sampled_from([key, key, f"'{key}'"]))
                if i == 0 and inline:
                    col = len(after) + 1
                    head = after + " " + written + ":"
                else:
                    if i == 0:
                        lines.append(after + trailer(draw))
                    col = indent + step
                    head = " " * col + written + ":"
                node(col, depth + 1, head)
        else:
            inline = after.endswith("-") and draw(st.booleans())
            indentless = after.endswith(":") and draw(st.booleans())
            count = draw(st.integers(min_value=1, max_value=3))
            for i in range(count):
                if i == 0 and inline:
                    col = len(after) + 1
                    head = after + " -"
                else:
                    if i == 0:
                        lines.append(after + trailer(draw))
                    col = indent if indentless else indent + step
                    head = " " * col + "-"
                node(col, depth + 1, head)
        if draw(st.integers(0, 9)) == 0:
            lines.append(draw(st.sampled_from(["", "   ", "# c", "  # c", " " * indent + "x"])))

    for key in draw(st.lists(st.sampled_from(["datasets", "jurisdictions", "regions", "a", "datasets"]),
                             min_size=1, max_size=3)):
        node(0, 0, key + ":")
    return "\n".join(line.lstrip() if not line.strip() else line for line in lines) + draw(
        st.sampled_from(["\n", "", "\n\n"]))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
def test_agrees_with_pyyaml_on_generated_policies(text: str) -> None:
    same(text)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="ab: -#'\"[],~\n", max_size=40))
def test_agrees_with_pyyaml_on_any_text(text: str) -> None:
    same(text)


# Near misses: generated documents with a few characters inserted, deleted or replaced.
EDITS = ["- ", "-", ":", ": ", " ", "  ", "#", " #", "'", '"', "[", "]", ",", "{", "}", "?", "&", "*", "!", "|",
         ">", "%", "@", "`", "~", "\u00a0", "\n", "\n  ", "\n- ", "a", "NO", "<<"]


@st.composite
def near_misses(draw: st.DrawFn) -> str:
    text = draw(documents())
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        at = draw(st.integers(min_value=0, max_value=len(text)))
        cut = draw(st.integers(min_value=0, max_value=1))
        text = text[:at] + draw(st.sampled_from(EDITS) | st.just("")) + text[at + cut:]
    return text


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(near_misses())
def test_agrees_with_pyyaml_on_near_misses(text: str) -> None:
    same(text)


@pytest.mark.parametrize("fault", [RecursionError, IndexError, ValueError])
def test_a_fault_of_the_line_reader_hands_the_file_to_pyyaml(monkeypatch: pytest.MonkeyPatch,
                                                            fault: type[Exception]) -> None:
    """Not only `GiveUp`: whatever the reader raises, the file is read as PyYAML reads it, taken items voided."""
    text = "datasets:\n  - a\n  - b\nother: 1\n"
    expected: list[PolicyIssue] = []
    reference = parse(text, "f.yaml", expected)

    def failing(text: str, file: str, issues: list[PolicyIssue], take: object) -> Value | None:
        raise fault("a fault of the reader's own")

    monkeypatch.setattr(blockyaml, "scan", failing)
    issues: list[PolicyIssue] = []
    voided: list[bool] = []
    assert parse(text, "f.yaml", issues) == reference
    assert issues == expected == []
    kept: list[str] = []

    def take(key: str, index: int, item: Value) -> bool:
        kept.append(key)
        return True

    root = parse(text, "f.yaml", issues, take, lambda: voided.append(True))
    assert voided == [True]
    assert kept == ["datasets", "datasets"]   # each item offered once, by PyYAML
    assert isinstance(root, Map)
    assert root.get("other") == Scalar("1", "tag:yaml.org,2002:int", 4)
