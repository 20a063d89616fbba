"""YAML files read as trees that remember where every value was written.

Policy errors must name the file, the line and the key path, so a policy file
is not loaded with ``yaml.safe_load`` (which forgets positions): the events of
PyYAML's parser (libyaml's, when PyYAML has it) are built straight into
`Scalar`, `Seq` and `Map` values that keep their 1-based line, with the tags
the SafeLoader's composer would give them. No tree of YAML nodes is made on
the way (for 100,000 datasets it took a gigabyte), and a caller can take the
items of a large top-level list as each is read (`parse`'s `take`).

Most policy files are read without PyYAML at all: `proxy.policy.blockyaml`
reads the plain block style they are written in to the same values, about
twice as fast, and gives up on any file it is not sure of, which is then read
here.

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
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from sys import intern
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.nodes import ScalarNode

from proxy.errors import PolicyIssue

_STR = "tag:yaml.org,2002:str"
_NULL = "tag:yaml.org,2002:null"
_MERGE = "tag:yaml.org,2002:merge"


@dataclass(frozen=True, slots=True, init=False)
class Scalar:
    """A scalar as written: its raw text, the tag YAML resolved, its line."""

    text: str
    tag: str
    line: int

    def __init__(self, text: str, tag: str, line: int) -> None:
        # A large policy makes millions: its slots are set directly, not through the frozen
        # class's `object.__setattr__` (which looks each name up on the type first).
        _SET_TEXT(self, text)
        _SET_TAG(self, tag)
        _SET_LINE(self, line)

    @property
    def is_null(self) -> bool:
        return self.tag == _NULL


_SET_TEXT: Callable[[Scalar, str], None] = Scalar.__dict__["text"].__set__
_SET_TAG: Callable[[Scalar, str], None] = Scalar.__dict__["tag"].__set__
_SET_LINE: Callable[[Scalar, int], None] = Scalar.__dict__["line"].__set__


@dataclass(frozen=True, slots=True, init=False)
class Seq:
    items: tuple[Value, ...]
    line: int

    def __init__(self, items: tuple[Value, ...], line: int) -> None:
        _SET_ITEMS(self, items)   # as in `Scalar`
        _SET_SEQ_LINE(self, line)


@dataclass(frozen=True, slots=True, init=False)
class Map:
    """A mapping with string keys; `fields` maps each key to (key scalar, value)."""

    fields: Mapping[str, tuple[Scalar, Value]]
    line: int

    def __init__(self, fields: Mapping[str, tuple[Scalar, Value]], line: int) -> None:
        _SET_FIELDS(self, fields)   # as in `Scalar`
        _SET_MAP_LINE(self, line)

    def get(self, key: str) -> Value | None:
        entry = self.fields.get(key)
        return entry[1] if entry is not None else None


Value = Scalar | Seq | Map

_SET_ITEMS: Callable[[Seq, tuple[Value, ...]], None] = Seq.__dict__["items"].__set__
_SET_SEQ_LINE: Callable[[Seq, int], None] = Seq.__dict__["line"].__set__
_SET_FIELDS: Callable[[Map, Mapping[str, tuple[Scalar, Value]]], None] = Map.__dict__["fields"].__set__
_SET_MAP_LINE: Callable[[Map, int], None] = Map.__dict__["line"].__set__


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
# pure Python takes minutes, in C seconds. Both give events with line numbers.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# What the loader's resolver would say without being asked: a plain scalar whose first character
# starts none of its implicit patterns ("read", "s3://b", "HOME") and every quoted scalar are
# strings. Only true of a resolver with no path resolvers and no catch-all pattern (SafeLoader's).
_RESOLVER_STARTS: frozenset[str] | None = (
    frozenset(k for k in _LOADER.yaml_implicit_resolvers if k)
    if not _LOADER.yaml_path_resolvers and None not in _LOADER.yaml_implicit_resolvers else None
)


def _python_parser_error(text: str) -> yaml.MarkedYAMLError | None:
    """The pure-Python parser's account of a syntax error: it names what it found, libyaml does not."""
    try:
        yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        return exc
    except yaml.YAMLError:
        return None
    return None


# Offered each item of a list that is the value of a top-level key, as (key, index, item) once the item
# is read whole; True: taken, and left out of the tree (its list keeps its line, not the item).
Take = Callable[[str, int, "Value"], bool]


def parse(
    text: str, file: str, issues: list[PolicyIssue], take: Take | None = None, void: Callable[[], None] | None = None,
) -> Value | None:
    """Parse one YAML document; None for an empty file or on a syntax error (then reported).

    An alias, anchor or custom tag anywhere in the file, or a syntax error, is
    the only issue reported for the file; otherwise the issues of the tree
    (keys YAML would drop) are. `take` lets a caller use the items of a large
    top-level list as they are read, rather than hold the whole tree: if
    the file then turns out to be refused (None), what it took is void.

    The plain block style policies are written in is read by `proxy.policy.blockyaml`,
    about twice as fast as through PyYAML's events, to the same tree and issues;
    a file it does not read whole (or that it fails on in any way) is read here. When a caller takes items, it says with
    `void` how to forget what it took (the file is then read again); without `void`,
    the faster reader is not used for it.
    """
    if take is None or void is not None:
        # Imported here: it builds this module's values.
        from proxy.policy import blockyaml

        noted: list[PolicyIssue] = []
        try:
            root = blockyaml.scan(text, file, noted, take)
        except Exception:   # GiveUp, or a fault of the reader's own: PyYAML, the reference, reads the file
            if take is not None and void is not None:
                void()
        else:
            issues.extend(noted)
            return root
    loader = _LOADER(text)
    found: list[PolicyIssue] = []
    try:
        root = _Builder(file, found, loader, take).document()
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
    issues.extend(found)
    return root


class _Frame:
    """A sequence or mapping being built: its items or fields so far, its line and key path."""

    __slots__ = ("count", "fields", "items", "key", "line", "path", "taker")

    def __init__(self, line: int, path: str, mapping: bool) -> None:
        self.items: list[Value] = []
        self.count = 0   # items read, taken ones included
        self.taker: str | None = None   # the top-level key whose items are offered to `take`
        self.fields: dict[str, tuple[Scalar, Value]] | None = {} if mapping else None
        self.line = line
        self.path = path
        # In a mapping: the key whose value comes next; None while a key is awaited.
        self.key: Scalar | None = None


class _Builder:
    """Builds `Value`s straight from the parser's events, in one pass over the file.

    No tree of YAML nodes is made on the way: a 100,000-dataset file as nodes
    takes a gigabyte, as values a fraction of it. Every event is checked for
    what the format refuses (alias, anchor, tag) before it is used, so that one
    anywhere in the file, even in a second document, is the file's only issue.
    A key YAML would silently drop (a non-scalar or null key, a merge key, a
    duplicate) is reported and its value skipped, issues inside it included.
    """

    def __init__(self, file: str, issues: list[PolicyIssue], loader: yaml.SafeLoader, take: Take | None) -> None:
        self.file = file
        self.issues = issues
        self.loader = loader
        self.take = take
        self.tags: dict[tuple[str, tuple[bool, bool]], str] = {}

    def document(self) -> Value | None:
        get_event: Callable[[], Any] = self.loader.get_event   # events differ in their fields
        scalar_event = yaml.ScalarEvent
        starts = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
        ends = (yaml.SequenceEndEvent, yaml.MappingEndEvent)
        stack: list[_Frame] = []
        root: Value | None = None
        documents = 0
        first: yaml.Mark | None = None
        another: yaml.Mark | None = None
        starts_resolved = _RESOLVER_STARTS
        take = self.take
        skipping = 0   # whole nodes still to skip (a dropped key's value, or the key too)
        depth = 0      # how deep inside a skipped sequence or mapping the events are
        alias_event = yaml.AliasEvent
        while True:
            event = get_event()
            cls = type(event)
            if cls is scalar_event or cls in starts:
                if event.anchor is not None or event.tag not in _ALLOWED_TAGS:
                    _refuse(event)
            elif cls is alias_event:
                _refuse(event)
            elif cls is yaml.StreamEndEvent:
                break
            if cls is yaml.DocumentStartEvent:
                documents += 1
                if documents == 1:
                    first = event.start_mark
                elif another is None:
                    another = event.start_mark
                continue
            if documents != 1 or cls is yaml.DocumentEndEvent or cls is yaml.StreamStartEvent:
                continue   # a second document is only looked through for what is refused
            if skipping:
                if cls in starts:
                    depth += 1
                elif cls in ends:
                    depth -= 1
                if depth == 0:
                    skipping -= 1
                continue
            line = event.start_mark.line + 1
            top = stack[-1] if stack else None
            if top is not None and top.fields is not None and top.key is None and cls in starts:
                # A sequence or mapping as a key is never a plain name: it and its value are skipped.
                self.issues.append(PolicyIssue(self.file, line, top.path, "a key must be a plain name"))
                skipping, depth = 2, 1
                continue
            if cls is scalar_event:
                text, tag = event.value, event.tag
                if tag is None or tag == "!":
                    implicit = event.implicit
                    if starts_resolved is not None and (not implicit[0] or (text and text[0] not in starts_resolved)):
                        tag = _STR
                    else:
                        tag = self._resolve(text, implicit)
                value: Value = Scalar(intern(text), tag, line)
            elif cls in starts:
                path = "" if top is None else (
                    f"{top.path}[{top.count}]" if top.fields is None
                    else join(top.path, top.key.text) if top.key is not None else top.path
                )
                frame = _Frame(line, path, cls is yaml.MappingStartEvent)
                if self.take is not None and len(stack) == 1 and top is not None and top.key is not None \
                        and frame.fields is None:
                    frame.taker = top.key.text
                stack.append(frame)
                continue
            elif cls in ends:
                frame = stack.pop()
                value = Seq(tuple(frame.items), frame.line) if frame.fields is None else Map(frame.fields, frame.line)
                top = stack[-1] if stack else None
            else:
                continue
            if top is None:
                root = value
            elif top.fields is None:
                if top.taker is None or take is None or not take(top.taker, top.count, value):
                    top.items.append(value)
                top.count += 1
            elif top.key is None:
                if not self._key(top, value):
                    skipping, depth = 1, 0   # the value of a dropped key
            else:
                top.fields[top.key.text] = (top.key, value)
                top.key = None
        if another is not None:
            raise ComposerError("expected a single document in the stream", first,
                                "but found another document", another)
        return root

    def _key(self, top: _Frame, key: Value) -> bool:
        """Take `key` as the next key of `top`; False (reported) when its value is to be skipped."""
        assert isinstance(key, Scalar)   # a sequence or mapping as a key is turned away before
        assert top.fields is not None
        if key.tag == _NULL:
            self.issues.append(PolicyIssue(self.file, key.line, top.path, "a key must be a plain name"))
            return False
        if key.tag == _MERGE:
            self.issues.append(PolicyIssue(
                self.file, key.line, top.path, "YAML merge keys (<<) are not supported; write the keys out"
            ))
            return False
        known = top.fields.get(key.text)
        if known is not None:
            self.issues.append(PolicyIssue(
                self.file, key.line, join(top.path, key.text), f"duplicate key (first written at line {known[0].line})"
            ))
            return False
        top.key = key
        return True

    def _resolve(self, text: str, implicit: tuple[bool, bool]) -> str:
        """The tag the loader's resolver gives a scalar written without one (remembered: "NO", "yes" recur)."""
        known = self.tags.get((text, implicit))
        if known is None:
            resolve: Callable[[type, str, tuple[bool, bool]], str] = self.loader.resolve
            known = self.tags[(text, implicit)] = resolve(ScalarNode, text, implicit)
        return known


# Tags a policy may write: none, the non-specific "!", and !!str (a string written as one).
_ALLOWED_TAGS = frozenset({None, "!", _STR})


def _refuse(event: yaml.Event) -> None:
    """Raise `_Refused` for an alias, an anchor or a custom tag."""
    if type(event) is yaml.AliasEvent:
        raise _Refused(
            _line(event),
            "YAML aliases (*name) are not supported; write the value out"
            ' (a bare * starts an alias: write "*" in quotes)',
        )
    anchor = getattr(event, "anchor", None)
    if anchor is not None:
        raise _Refused(_line(event), f"YAML anchors (&{anchor}) are not supported; write the value out")
    tag = getattr(event, "tag", None)
    if tag not in (None, "!", _STR):
        raise _Refused(_line(event), f"YAML tags ({tag}) are not supported; remove the tag")


def _line(event: yaml.Event) -> int:
    return event.start_mark.line + 1 if event.start_mark is not None else 0


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
