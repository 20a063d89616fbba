"""YAML files read as trees that remember where every value was written.

Policy errors must name the file, the line and the key path, so a policy file
is not loaded with ``yaml.safe_load`` (which forgets positions) but composed
into YAML nodes with PyYAML's SafeLoader and walked into `Scalar`, `Seq` and
`Map` values that keep their 1-based line.

Scalars keep their raw text as well as the tag the YAML 1.1 resolver gave
them: under YAML 1.1 a plain ``NO`` (Norway) resolves to ``false``, so fields
that expect a string take the text as written and never the resolved value.

What the policy format does not need is refused rather than interpreted:
anchors, aliases and merge keys (``&a``, ``*a``, ``<<``), custom tags,
several documents in one file, non-scalar mapping keys and duplicate keys.
`Reader` collects every problem as a `PolicyIssue` instead of stopping at the
first, so an operator sees all of them at once.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from proxy.errors import PolicyIssue

_STR = "tag:yaml.org,2002:str"
_NULL = "tag:yaml.org,2002:null"
_MERGE = "tag:yaml.org,2002:merge"


@dataclass(frozen=True, slots=True)
class Scalar:
    """A scalar as written: its raw text, the tag YAML resolved, its line."""

    text: str
    tag: str
    line: int

    @property
    def is_null(self) -> bool:
        return self.tag == _NULL


@dataclass(frozen=True, slots=True)
class Seq:
    items: tuple[Value, ...]
    line: int


@dataclass(frozen=True, slots=True)
class Map:
    """A mapping with string keys; `fields` maps each key to (key scalar, value)."""

    fields: Mapping[str, tuple[Scalar, Value]]
    line: int

    def get(self, key: str) -> Value | None:
        entry = self.fields.get(key)
        return entry[1] if entry is not None else None


Value = Scalar | Seq | Map


def kind(value: Value) -> str:
    """What an operator would call the value, for "expected X, found Y" messages."""
    if isinstance(value, Map):
        return "a mapping"
    if isinstance(value, Seq):
        return "a list"
    return "nothing" if value.is_null else f'"{value.text}"'


class _Refused(Exception):
    """A YAML feature the policy format does not accept, found at `line` (1-based)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


# libyaml (C) when PyYAML was built with it: composing a 100,000-dataset policy in
# pure Python takes minutes, in C seconds. Both give nodes with line numbers.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _refuse_anchors_aliases_and_tags(text: str) -> None:
    """Raise `_Refused` at the first alias, anchor or custom tag (one pass over the events)."""
    for event in yaml.parse(text, Loader=_LOADER):
        line = event.start_mark.line + 1 if event.start_mark is not None else 0
        if isinstance(event, yaml.AliasEvent):
            raise _Refused(
                line,
                "YAML aliases (*name) are not supported; write the value out"
                ' (a bare * starts an alias: write "*" in quotes)',
            )
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            raise _Refused(line, f"YAML anchors (&{anchor}) are not supported; write the value out")
        tag = getattr(event, "tag", None)
        if tag not in (None, "!", _STR):
            raise _Refused(line, f"YAML tags ({tag}) are not supported; remove the tag")


def _python_parser_error(text: str) -> yaml.MarkedYAMLError | None:
    """The pure-Python parser's account of a syntax error: it names what it found, libyaml does not."""
    try:
        yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        return exc
    except yaml.YAMLError:
        return None
    return None


def parse(text: str, file: str, issues: list[PolicyIssue]) -> Value | None:
    """Parse one YAML document; None for an empty file or on a syntax error (then reported)."""
    loader = _LOADER(text)
    try:
        _refuse_anchors_aliases_and_tags(text)
        node = loader.get_single_node()
    except _Refused as exc:
        issues.append(PolicyIssue(file, exc.line, "", exc.message))
        return None
    except yaml.MarkedYAMLError as fast_exc:
        error = _python_parser_error(text) or fast_exc
        mark = error.problem_mark or error.context_mark
        problem = ", ".join(p for p in (error.context, error.problem) if p) or "cannot be read"
        hint = ""
        if "expected alphabetic or numeric character" in problem:
            hint = ' (a bare * starts a YAML alias: write "*" in quotes)'
        line = mark.line + 1 if mark is not None else 0
        issues.append(PolicyIssue(file, line, "", f"not valid YAML: {problem}{hint}"))
        return None
    except yaml.YAMLError as exc:
        issues.append(PolicyIssue(file, 0, "", f"not valid YAML: {exc}"))
        return None
    finally:
        loader.dispose()
    if node is None:
        return None
    return _Walker(file, issues).value(node, "")


class _Walker:
    """Turns composed nodes into `Value`s, reporting keys YAML would silently drop."""

    def __init__(self, file: str, issues: list[PolicyIssue]) -> None:
        self.file = file
        self.issues = issues

    def value(self, node: Node, path: str) -> Value:
        line = node.start_mark.line + 1
        if isinstance(node, ScalarNode):
            return Scalar(str(node.value), node.tag, line)
        if isinstance(node, SequenceNode):
            return Seq(tuple(self.value(item, f"{path}[{i}]") for i, item in enumerate(node.value)), line)
        assert isinstance(node, MappingNode)  # the composer makes no other node kind
        fields: dict[str, tuple[Scalar, Value]] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if not isinstance(key_node, ScalarNode) or key_node.tag == _NULL:
                self.issues.append(PolicyIssue(self.file, key_line, path, "a key must be a plain name"))
                continue
            if key_node.tag == _MERGE:
                self.issues.append(PolicyIssue(
                    self.file, key_line, path, "YAML merge keys (<<) are not supported; write the keys out"
                ))
                continue
            key = Scalar(str(key_node.value), key_node.tag, key_line)
            child = join(path, key.text)
            if key.text in fields:
                first = fields[key.text][0].line
                self.issues.append(PolicyIssue(
                    self.file, key_line, child, f"duplicate key (first written at line {first})"
                ))
                continue
            fields[key.text] = (key, self.value(value_node, child))
        return Map(fields, line)


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


class Reader:
    """Reads expected shapes out of a `Value` tree, reporting every mismatch.

    Each method returns None when the value does not have the expected shape,
    after recording a `PolicyIssue` for it; callers skip what they cannot use
    and carry on, so that one load reports every problem.
    """

    def __init__(self, file: str, issues: list[PolicyIssue]) -> None:
        self.file = file
        self.issues = issues

    def error(self, line: int, path: str, message: str) -> None:
        self.issues.append(PolicyIssue(self.file, line, path, message))

    def mapping(
        self,
        value: Value,
        path: str,
        *,
        allowed: Collection[str] | None,
        required: Collection[str] = (),
        what: str = "a mapping",
    ) -> Map | None:
        """`value` as a mapping; `allowed` None accepts any key (names chosen by the operator)."""
        if not isinstance(value, Map):
            self.error(value.line, path, f"expected {what}, found {kind(value)}")
            return None
        for name, (key, _) in value.fields.items():
            if allowed is not None and name not in allowed:
                close = difflib.get_close_matches(name, sorted(allowed), n=1)
                hint = f"did you mean {close[0]}? " if close else ""
                self.error(
                    key.line, join(path, name),
                    f"unknown key ({hint}expected one of: {', '.join(sorted(allowed))})",
                )
        for name in required:
            if name not in value.fields:
                self.error(value.line, path, f'missing required key "{name}"')
        return value

    def sequence(self, value: Value, path: str, *, what: str, non_empty: bool = True) -> Seq | None:
        if not isinstance(value, Seq):
            self.error(value.line, path, f"expected {what}, found {kind(value)}")
            return None
        if non_empty and not value.items:
            self.error(value.line, path, f"expected {what}, found an empty list")
            return None
        return value

    def string(self, value: Value, path: str, *, what: str = "a string") -> str | None:
        """The text as written; a plain ``NO`` stays "NO" and does not become false."""
        if not isinstance(value, Scalar) or value.is_null or not value.text:
            self.error(value.line, path, f"expected {what}, found {kind(value)}")
            return None
        return value.text

    def choice(self, value: Value, path: str, choices: Collection[str], *, suggest: bool = False) -> str | None:
        """One of `choices`, as written; with `suggest`, an error names the closest one ("did you mean")."""
        quoted = [f'"{c}"' for c in choices]
        expected = " or ".join(quoted) if len(quoted) <= 2 else "one of " + ", ".join(quoted)
        text = self.string(value, path, what=expected)
        if text is None:
            return None
        if text not in choices:
            close = difflib.get_close_matches(text.lower(), list(choices), n=1) if suggest else []
            hint = f" (did you mean {close[0]}?)" if close else ""
            self.error(value.line, path, f'expected {expected}, found "{text}"{hint}')
            return None
        return text

    def boolean(self, value: Value, path: str) -> bool | None:
        text = self.string(value, path, what="true or false")
        if text is None:
            return None
        if text not in ("true", "false"):
            self.error(value.line, path, f'expected true or false, found "{text}"')
            return None
        return text == "true"
