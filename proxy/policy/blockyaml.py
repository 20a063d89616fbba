"""A fast reader for the plain block-style YAML that policies are written in, or a refusal to read it.

Reading a policy of 100,000 datasets through PyYAML's events takes several
seconds before a single value is built: libyaml is fast, but every event
crosses into Python as an object of its own. Policies are written in a small
part of YAML (block mappings and sequences, one scalar or one flow list of
scalars a line), and in that part a line says what it is by itself. This
module reads that part a line at a time with compiled regular expressions,
remembers what each distinct line said (most lines of a large policy recur:
``from: [HOME]``), and builds the same `Scalar`/`Seq`/`Map` tree that
`proxy.policy.yamlsource` builds from the events: same text, same YAML 1.1
tag, same lines, same key order, the same issues for keys YAML would drop.

It reads only what it is sure of. Anything else anywhere in the file (a tab,
a carriage return, a document marker, an anchor, alias or tag, a block or
multi-line scalar, a flow mapping, a flow list over several lines, an escape
in double quotes, a ``?`` key, indentation that is not a plain nesting, blocks
nested over a hundred deep, text after a value) makes `scan` give up on the whole file, and the caller reads
it with PyYAML, which stays the reference and the author of every message
about YAML syntax. Giving up is never wrong; reading a file differently from
PyYAML would be, and tests/policy/test_blockyaml.py compares the two on
generated documents.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from sys import intern
from typing import Final

from proxy.errors import PolicyIssue
from proxy.policy.yamlsource import _LOADER, _MERGE, _NULL, _STR, Map, Scalar, Seq, Take, Value, join


class GiveUp(Exception):
    """The file is not in the part of YAML this module reads: PyYAML must read it."""


# Characters YAML allows in a file, less the ones this module does not read: tabs, carriage
# returns, NEL, the Unicode line separators (YAML 1.1 line breaks), the byte order mark, and
# characters beyond the Basic Multilingual Plane (rare; libyaml is left to judge them).
_UNREAD: Final = re.compile("[^\n\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd]")
# Document markers and directives start at the beginning of a line.
_MARKER: Final = re.compile(r"^(?:---|\.\.\.|%)", re.MULTILINE)

_BLANK: Final = re.compile(r" *(?:#.*)?")
_ENTRY: Final = re.compile(r"-(?: +|$)")
_SPACES: Final = re.compile(r" *")
# The end of a line after a value: nothing, or a comment after at least one space.
_END: Final = re.compile(r"(?: +(?:#.*)?)?")
# A plain scalar in block context: its first character starts no other token ("-" only before a
# character that is not a space); it ends at ": ", at a ":" that ends the line, at " #" or at the end.
_PLAIN: Final = re.compile(r"(?:[^-?:,\[\]{}#&*!|>'\"%@` ]|-(?=[^ ]))(?:[^ :]|:(?=[^ ])| +(?=[^ #]))*")
_SINGLE: Final = re.compile(r"'((?:[^']|'')*)'")
_DOUBLE: Final = re.compile(r'"([^"\\]*)"')
# A plain scalar in a flow list: words of characters that mean nothing in a flow, one space apart.
_FLOW_PLAIN: Final = re.compile(r"[^-?:,\[\]{}#&*!|>'\"%@`\s][^\s,\[\]{}#:]*(?: [^\s,\[\]{}#:]+)*")
_FLOW_NEXT: Final = re.compile(r" *([,\]]) *")

# libyaml refuses a simple key longer than this.
_KEY_LIMIT: Final = 1000
# Policies nest a few blocks deep; deeper files are PyYAML's (a key path is made recursively).
_DEPTH_LIMIT: Final = 100

_IMPLICIT: Final = {
    first: tuple((tag, regexp) for tag, regexp in resolvers)
    for first, resolvers in _LOADER.yaml_implicit_resolvers.items()
}
# This module resolves tags as SafeLoader's resolver does without path resolvers or a catch-all.
_RESOLVES_AS_SAFE: Final = not _LOADER.yaml_path_resolvers and None not in _IMPLICIT

_resolved: dict[str, str] = {}


def _plain_tag(text: str) -> str:
    """The tag YAML 1.1 gives a plain scalar (``NO`` is a bool, ``~`` a null), as `Resolver.resolve` does."""
    known = _resolved.get(text)
    if known is None:
        known = _STR
        for tag, regexp in _IMPLICIT.get(text[:1], ()):
            if regexp.match(text):
                known = tag
                break
        if len(_resolved) < 10_000:
            _resolved[text] = known
    return known


# One line, read: the column of its first token, the columns of its "- " entries, its key
# (text, tag, column), its scalar value (text, tag) and its flow list value (items as (text, tag)).
Scalarish = tuple[str, str]
Line = tuple[int, tuple[int, ...], tuple[str, str, int] | None, Scalarish | None, tuple[Scalarish, ...] | None]


# The commonest lines of a large policy, read by one expression: "key: word", "- word", "key:" and
# "- key: word", where a word is a plain scalar of characters that mean nothing in YAML (and a ":"
# only inside a word: "s3://b"). Any other line is read by `_read_line` piece by piece.
_SIMPLE: Final = re.compile(
    r"( *)(- +)?(?:([A-Za-z0-9_][A-Za-z0-9_.-]*):(?: +([A-Za-z0-9_/][A-Za-z0-9_./*-]*(?::[A-Za-z0-9_./*-]+)*))?"
    r"|([A-Za-z0-9_/][A-Za-z0-9_./*-]*(?::[A-Za-z0-9_./*-]+)*))"
)


def _read_line(raw: str) -> Line | None:
    """What one line says; None for a blank or comment line. Raises `GiveUp`."""
    simple = _SIMPLE.fullmatch(raw)
    if simple is not None and len(raw) <= _KEY_LIMIT:
        indent, entry, name, value, alone = simple.groups()
        col = len(indent)
        listed = (col,) if entry else ()
        if name is None:
            text = intern(alone)
            return col, listed, None, (text, _plain_tag(text)), None
        name = intern(name)
        named = (name, _plain_tag(name), col + len(entry) if entry else col)
        if value is None:
            return col, listed, named, None, None
        text = intern(value)
        return col, listed, named, (text, _plain_tag(text)), None
    if _BLANK.fullmatch(raw):
        return None
    pos = len(raw) - len(raw.lstrip(" "))
    col = pos
    size = len(raw)
    entries: list[int] = []
    while (m := _ENTRY.match(raw, pos)) is not None:
        entries.append(pos)
        pos = m.end()
        if pos == size:
            return col, tuple(entries), None, None, None
        if raw[pos] == "#":   # "- # comment": the entry's value is on the lines below
            return col, tuple(entries), None, None, None
    key: tuple[str, str, int] | None = None
    start = pos
    text, tag, pos, flow = _node(raw, pos)
    if flow is None and pos < size and raw[pos] == ":" and (pos + 1 == size or raw[pos + 1] == " "):
        if pos - start > _KEY_LIMIT:   # libyaml counts from the key's first character to its ":"
            raise GiveUp
        key = (text, tag, start)
        pos = _SPACES.match(raw, pos + 1).end()  # type: ignore[union-attr]   # " *" always matches
        if pos == size:
            return col, tuple(entries), key, None, None
        if raw[pos] == "#":   # "key: # comment" (the ": " put a space before it)
            return col, tuple(entries), key, None, None
        text, tag, pos, flow = _node(raw, pos)
        if flow is None and pos < size and raw[pos] == ":":
            raise GiveUp   # "a: b: c"
    end = _END.match(raw, pos)
    if end is None or end.end() != size:
        raise GiveUp
    if flow is not None:
        return col, tuple(entries), key, None, flow
    return col, tuple(entries), key, (text, tag), None


def _node(raw: str, pos: int) -> tuple[str, str, int, tuple[Scalarish, ...] | None]:
    """The scalar or flow list at `pos`: (text, tag, end, None) or ("", "", end, items).

    After a scalar, the end is where a ":" follows it (then it is a key) or where it ends.
    """
    first = raw[pos] if pos < len(raw) else ""
    if first == "'":
        m = _SINGLE.match(raw, pos)
        if m is None:
            raise GiveUp
        return intern(m.group(1).replace("''", "'")), _STR, _after(raw, m.end()), None
    if first == '"':
        m = _DOUBLE.match(raw, pos)
        if m is None:
            raise GiveUp
        return intern(m.group(1)), _STR, _after(raw, m.end()), None
    if first == "[":
        end, items = _flow(raw, pos)
        return "", "", end, items
    m = _PLAIN.match(raw, pos)
    if m is None:
        raise GiveUp
    text = m.group().rstrip(" ")
    return intern(text), _plain_tag(text), _after(raw, pos + len(text)), None


def _after(raw: str, pos: int) -> int:
    """`pos`, or where a ":" follows it after spaces."""
    spaces = _SPACES.match(raw, pos).end()  # type: ignore[union-attr]
    return spaces if spaces < len(raw) and raw[spaces] == ":" else pos


def _flow(raw: str, pos: int) -> tuple[int, tuple[Scalarish, ...]]:
    """A flow list of scalars written on one line: its end and its items."""
    pos = _SPACES.match(raw, pos + 1).end()  # type: ignore[union-attr]
    items: list[Scalarish] = []
    if raw.startswith("]", pos):
        return pos + 1, ()
    while True:
        first = raw[pos] if pos < len(raw) else ""
        if first == "'":
            m = _SINGLE.match(raw, pos)
            if m is None:
                raise GiveUp
            items.append((intern(m.group(1).replace("''", "'")), _STR))
        elif first == '"':
            m = _DOUBLE.match(raw, pos)
            if m is None:
                raise GiveUp
            items.append((intern(m.group(1)), _STR))
        else:
            m = _FLOW_PLAIN.match(raw, pos)
            if m is None:
                raise GiveUp
            text = m.group()
            items.append((intern(text), _plain_tag(text)))
        after = _FLOW_NEXT.match(raw, m.end())
        if after is None:
            raise GiveUp
        if after.group(1) == "]":
            return after.start(1) + 1, tuple(items)
        pos = after.end()
        if pos >= len(raw) or raw[pos] == "]":
            raise GiveUp   # "[a, ]": YAML allows it; left to PyYAML


class _Block:
    """A block mapping or sequence being read: its column, its line, what it holds so far."""

    __slots__ = ("at", "count", "drop", "fields", "indent", "items", "key", "line", "parent", "pending", "quiet",
                 "taker")

    def __init__(self, indent: int, line: int, mapping: bool, parent: _Block | None, at: str | int) -> None:
        self.indent = indent
        self.line = line
        self.fields: dict[str, tuple[Scalar, Value]] | None = {} if mapping else None
        self.items: list[Value] = []
        self.key: Scalar | None = None   # in a mapping: the key whose value is awaited
        self.drop = False                # ... and that key is dropped (its value is read, then let go)
        self.pending = 0                 # in a sequence: the line of an entry whose value is awaited
        self.count = 0
        self.parent = parent
        self.at = at                     # the key or index this block is the value of, for key paths
        self.taker: str | None = None
        # Inside the value of a dropped key: nothing in it is reported (PyYAML's path skips it).
        self.quiet: bool = parent is not None and (parent.quiet or parent.drop)

    def path(self) -> str:
        if self.parent is None:
            return ""
        base = self.parent.path()
        return f"{base}[{self.at}]" if isinstance(self.at, int) else join(base, self.at)


def _lines(text: str, chunk: int = 1 << 20) -> Iterator[str]:
    """`text.split("\\n")`, a part at a time: a large file's lines are never all held at once."""
    start = 0
    while True:
        end = text.find("\n", start + chunk)
        if end < 0:
            yield from text[start:].split("\n")
            return
        yield from text[start:end].split("\n")
        start = end + 1


def scan(text: str, file: str, issues: list[PolicyIssue], take: Take | None = None) -> Value | None:
    """The file's tree, as `proxy.policy.yamlsource.parse` would build it. Raises `GiveUp`.

    `take` is offered the items of each list that is the value of a top-level key, as in
    `parse`; if `scan` then gives up, what it took is void (the caller says so to its taker).
    """
    if not _RESOLVES_AS_SAFE or _UNREAD.search(text) or _MARKER.search(text):
        raise GiveUp
    cache: dict[str, Line | None] = {}
    stack: list[_Block] = []
    root: Value | None = None
    done = False   # the root is a scalar, read: nothing may follow
    finishing = False
    null = _NULL
    merge = _MERGE

    def attach(block: _Block, value: Value) -> None:
        if block.fields is not None:
            key = block.key
            assert key is not None
            if not block.drop:
                block.fields[key.text] = (key, value)
            block.key = None
            block.drop = False
        else:
            if block.taker is None or take is None or not take(block.taker, block.count, value):
                block.items.append(value)
            block.count += 1
            block.pending = 0

    def close() -> None:
        nonlocal root
        block = stack.pop()
        if block.fields is not None:
            if block.key is not None:
                attach(block, Scalar("", null, block.key.line))
            value: Value = Map(block.fields, block.line)
        else:
            if block.pending:
                attach(block, Scalar("", null, block.pending))
            value = Seq(tuple(block.items), block.line)
        if stack:
            attach(stack[-1], value)
        elif not finishing:
            raise GiveUp   # something follows the document's root, at a lesser indentation
        else:
            root = value

    def add_key(block: _Block, key: Scalar) -> None:
        """`key` as `block`'s next key, or dropped and reported as PyYAML's path does."""
        fields = block.fields
        assert fields is not None
        block.key = key
        reason = ""
        where: str | None = None   # the key a duplicate is reported at ("" is a key too)
        if key.tag == null:
            reason = "a key must be a plain name"
        elif key.tag == _MERGE:
            reason = "YAML merge keys (<<) are not supported; write the keys out"
        elif (known := fields.get(key.text)) is not None:
            reason = f"duplicate key (first written at line {known[0].line})"
            where = key.text
        if reason:
            block.drop = True
            if not block.quiet:
                path = block.path()
                issues.append(PolicyIssue(file, key.line, path if where is None else join(path, where), reason))

    def open_block(indent: int, line: int, mapping: bool) -> _Block:
        if len(stack) >= _DEPTH_LIMIT:
            raise GiveUp
        parent = stack[-1] if stack else None
        if parent is None:
            at: str | int = ""
        elif parent.fields is not None:
            assert parent.key is not None
            at = parent.key.text
        else:
            at = parent.count
        block = _Block(indent, line, mapping, parent, at)
        if not mapping and parent is not None and parent.parent is None and parent.fields is not None \
                and not parent.drop:
            block.taker = at   # type: ignore[assignment]   # a key's text
        stack.append(block)
        return block

    for number, raw in enumerate(_lines(text), 1):
        read = cache.get(raw, False)
        if read is False:
            read = _read_line(raw)
            if len(cache) >= 4096:
                # Mostly lines seen once (names); the lines that recur are back after a few datasets.
                cache.clear()
            cache[raw] = read
        if read is None:
            continue
        col, entries, key, scalar, flow = read   # type: ignore[misc]
        if done:
            raise GiveUp
        # Whatever the line holds starts at `col`: the blocks written deeper than it end here.
        while stack and stack[-1].indent > col:
            close()
        if key is not None and not entries and stack:
            # The commonest line by far: the next key of the open mapping, maybe with its scalar.
            current = stack[-1]
            fields = current.fields
            if current.indent == col and fields is not None and current.key is None and key[1] != null \
                    and key[1] != merge and key[0] not in fields and (flow is None or current.parent is not None):
                name = Scalar(key[0], key[1], number)
                if scalar is not None:
                    fields[key[0]] = (name, Scalar(scalar[0], scalar[1], number))
                elif flow is not None:
                    fields[key[0]] = (name, Seq(tuple([Scalar(t, g, number) for t, g in flow]), number))
                else:
                    current.key = name
                continue
        first = True
        for entry in entries:
            if first:
                first = False
                top = stack[-1] if stack else None
                if top is not None:
                    if top.fields is not None:
                        if top.key is None:
                            raise GiveUp
                    elif top.indent == col:
                        if top.pending:
                            attach(top, Scalar("", null, top.pending))
                        top.pending = number
                        continue
                    elif not top.pending:
                        raise GiveUp
            open_block(entry, number, False).pending = number
        if key is not None:
            key_text, key_tag, key_col = key
            name = Scalar(key_text, key_tag, number)
            if first:
                first = False
                top = stack[-1] if stack else None
                if top is not None and top.fields is None and top.indent == key_col \
                        and top.parent is not None and top.parent.fields is not None \
                        and top.parent.indent == key_col:
                    close()   # the end of a list written at its key's column
                    top = stack[-1]
                if top is None:
                    add_key(open_block(key_col, number, True), name)
                elif top.fields is not None and top.indent == key_col:
                    if top.key is not None:
                        attach(top, Scalar("", null, top.key.line))
                    add_key(top, name)
                elif key_col > top.indent and (top.key is not None if top.fields is not None else top.pending):
                    add_key(open_block(key_col, number, True), name)
                else:
                    raise GiveUp
            else:
                add_key(open_block(key_col, number, True), name)
        if scalar is None and flow is None:
            continue
        if first:
            top = stack[-1] if stack else None
            if top is None:
                root, done = (Scalar(scalar[0], scalar[1], number) if scalar is not None else
                              Seq(tuple([Scalar(t, g, number) for t, g in flow]), number)), True  # type: ignore[union-attr]
                continue
            if col <= top.indent or not (top.key is not None if top.fields is not None else top.pending):
                raise GiveUp
        top = stack[-1]
        if scalar is not None:
            node: Value = Scalar(scalar[0], scalar[1], number)
        else:
            items = [Scalar(t, g, number) for t, g in flow]  # type: ignore[union-attr]
            if take is not None and top.parent is None and top.key is not None and not top.drop:
                # A flow list as a top-level key's value: its items are offered as a block list's are.
                named = top.key.text
                items = [item for i, item in enumerate(items) if not take(named, i, item)]
            node = Seq(tuple(items), number)
        attach(top, node)
    finishing = True
    while stack:
        close()
    return root
