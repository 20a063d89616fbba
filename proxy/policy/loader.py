"""Reads a policy folder into a `Policy`, or reports every problem in it.

The folder's top-level ``*.yaml``/``*.yml`` files (not its ``tests/``
subfolder, not dot files) are read in sorted order and merged
(docs/policies.md). Loading never stops at the first problem: every problem is
collected as a `PolicyIssue` naming the file, line and key path, and all are
raised together in one `PolicyLoadError`. A policy is either wholly valid or
not loaded at all, so a bad edit can never replace a policy that is running.
In a list of names (``from``, ``allow``/``deny``, a group) the path names the
list and the message quotes the name, as docs/policies.md shows::

    policies/mail.yaml:14: datasets[0].rules[1].from: "UK" is not an ISO 3166-1 code (did you mean GB?)

Sections may refer to each other across files, so all files are read first
and the sections are then checked in the order their references run:
jurisdiction groups (which may nest), regions, datasets. Everything a
decision needs is expanded here (see `proxy.policy.model`). The files after
the last one that could define a group or a region have their datasets
checked as they are parsed, one at a time, with the same outcome: a policy of
100,000 datasets is never held whole as a tree of values. Rules that write
the same ``from`` share one expansion of it, and the loader runs with the
cyclic garbage collector paused (it makes millions of objects, none garbage).

Before the folder, the public clouds' region map that ships with the package
(`proxy.policy.regions`) is read, once a process, with the same checks: every
policy can name those regions, and the folder's own ``regions:`` entry for a
name replaces the built-in one without a word (defining a name twice is an
error only within the folder).

A folder or file that anyone but its owner (the proxy's user or root) could
change, or a symbolic link leading out of the folder, is refused before any
file is read (`proxy.policy.trust`); that covers the policy tests too.

The version is the first 12 hex digits of a SHA-256 over the files in name
order, each contributing its file name, a NUL, its length in decimal, a NUL
and its bytes, so that two different folders never hash the same input. The
built-in region files count as files named ``built-in/<name>`` (a name no file
in a folder can have), so a release that changes the map changes the version.

Why one module of this length: it is one idea, turning a folder's YAML into a
`Policy` with every problem reported. Its parts are already elsewhere (YAML with
line numbers in `proxy.policy.yamlsource`, patterns in `proxy.policy.patterns`,
file trust in `proxy.policy.trust`, the compiled form in `proxy.policy.model`);
what remains are the section readers, which share the issue list and the
cross-file name tables (groups, regions, the owner of each pattern) and check
references in one order. Split by section, they would pass that state around
instead of reading as one pass.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import gc
import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar

from proxy.domain import ALL_ACTIONS, Action
from proxy.errors import PolicyIssue, PolicyLoadError
from proxy.jurisdictions import describe_invalid, is_country_code, suggest
from proxy.policy.cors import read_cors
from proxy.policy.model import (
    ANY,
    BUILTIN_JURISDICTIONS,
    HOME,
    RESERVED_RULE_IDS,
    SAME_LOCATION,
    Dataset,
    Effect,
    Encryption,
    Mode,
    Policy,
    Rule,
)
from proxy.policy.patterns import PatternError, ResourcePattern, parse_pattern
from proxy.policy.regions import region_files, unknown_region_hint
from proxy.policy.trust import file_issues, folder_issues
from proxy.policy.yamlsource import Map, Reader, Scalar, Seq, Take, Value, join, parse

K = TypeVar("K")
V = TypeVar("V")

POLICY_SUFFIXES = (".yaml", ".yml")
SECTIONS = ("jurisdictions", "regions", "datasets")

_GROUP_NAME = re.compile(r"[A-Z][A-Z0-9_-]*")
_REGION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_RULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:#-]*")

_NAME_CHARS = 'letters, digits, ".", "_" and "-", starting with a letter or digit'
_ACTION_WORDS: dict[str, frozenset[Action]] = {a.value: frozenset({a}) for a in Action} | {ANY: ALL_ACTIONS}
# Words operators bring from the storage APIs, and the action that covers them.
_ACTION_HINTS = {
    "get": "read", "head": "read", "select": "read", "put": "write", "post": "write",
    "copy": "write", "upload": "write", "remove": "delete", "all": '"*"',
}


def load_policy(directory: Path) -> Policy:
    """Load and check the policy in `directory`. Raises `PolicyLoadError` listing every issue."""
    with collector_paused():
        return _Loader(directory, _builtin_regions()).load()


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a policy loads.

    A load makes millions of objects that all live on, and none of them garbage: each of the
    collector's passes over them finds nothing, and in a large policy the passes took half of
    the load's time. Whatever a load leaves for the collector is collected once it is back on.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass(frozen=True, slots=True)
class RegionEntry:
    """One region a policy can name: its country, where that is said, and the built-in country it replaces."""

    name: str
    jurisdiction: str
    source: str                 # "built-in aws.yaml:15", or the folder's FILE:LINE
    replaces: str | None = None  # the built-in map's country, when the folder's entry replaces it


def region_table(directory: Path | None) -> tuple[RegionEntry, ...]:
    """Every region the policy in `directory` can name, by name; only the built-in ones without a folder.

    The folder is loaded with every check, so this raises `PolicyLoadError` as `load_policy` does.
    """
    builtin = _builtin_regions()
    if builtin.issues:
        raise PolicyLoadError(list(builtin.issues))
    own: dict[str, _Region] = {}
    if directory is not None:
        loader = _Loader(directory, builtin)
        loader.load()
        own = loader.regions
    entries = {
        name: RegionEntry(name, r.jurisdiction, f"built-in {Path(r.place.file).name}:{r.place.line}")
        for name, r in builtin.regions.items()
    }
    for name, r in own.items():
        replaced = builtin.regions.get(name)
        entries[name] = RegionEntry(
            name, r.jurisdiction, str(r.place), replaced.jurisdiction if replaced is not None else None
        )
    return tuple(entries[name] for name in sorted(entries))


def changed_builtin_regions(policy: Policy) -> tuple[tuple[str, str, str], ...]:
    """(region, built-in country, the policy's country) for each built-in region the folder gives another country.

    Such an entry is allowed (it corrects the map), but it moves every dataset of that region to another
    jurisdiction, so `policy check` names it rather than letting it pass unseen.
    """
    builtin = _builtin_regions().regions
    return tuple(
        (name, builtin[name].jurisdiction, country)
        for name, country in policy.regions.items()
        if name in builtin and builtin[name].jurisdiction != country
    )


def _test_files(directory: Path) -> list[Path]:
    """The policy tests (``tests/*_test.yaml``) the proxy reads before it swaps a policy in."""
    # Spelled out rather than imported from proxy.policy.testing, which serving does not load.
    folder = directory / "tests"
    try:
        return sorted(p for p in folder.glob("*_test.yaml") if p.is_file()) if folder.is_dir() else []
    except OSError:
        return []


def _forget_since(table: dict[K, V], size: int) -> None:
    """Remove the entries added to `table` since it had `size` (dicts keep their order of insertion)."""
    for key in list(table)[size:]:
        del table[key]


def _may_define_names(data: bytes) -> bool:
    """Whether a file could define jurisdiction groups or regions (False only when it certainly does not).

    A top-level key is written out, so without the word it is not there; a backslash could spell
    it in a double-quoted key ("\\x72egions"), so a file with one is read as if it did.
    """
    return b"jurisdictions" in data or b"regions" in data or b"\\" in data


def policy_version(contents: Iterable[tuple[str, bytes]]) -> str:
    """First 12 hex digits of SHA-256 over (name, NUL, length, NUL, bytes) of each file, by name."""
    digest = hashlib.sha256()
    for name, data in sorted(contents):
        digest.update(name.encode("utf-8") + b"\0" + str(len(data)).encode("ascii") + b"\0")
        digest.update(data)
    return digest.hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class _Place:
    """Where something was defined, for "already defined at FILE:LINE" messages."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True, slots=True)
class _Group:
    name: str
    members: tuple[tuple[Scalar, str], ...]   # (member as written, the list's key path)
    reader: Reader
    place: _Place


@dataclass(frozen=True, slots=True)
class _Region:
    jurisdiction: str
    place: _Place


@dataclass(frozen=True, slots=True)
class _Owner:
    """The dataset a resource pattern was first given to."""

    dataset: str
    text: str
    place: _Place


@dataclass(frozen=True, slots=True)
class _Builtin:
    """The built-in region map, read once a process: the folder's regions are added to it."""

    regions: Mapping[str, _Region]
    contents: tuple[tuple[str, bytes], ...]   # for the version, as ("built-in/<name>", bytes)
    issues: tuple[PolicyIssue, ...]           # none unless the installed package was damaged


_NO_BUILTIN = _Builtin(MappingProxyType({}), (), ())

# A rule's `from` as written, each code it brings in with the name that did, and the codes (`Rule`).
_Sources = tuple[tuple[str, ...], Mapping[str, str], frozenset[str]]
# One empty set for every rule without a location: each `frozenset()` is an object of its own.
_NO_CODES: frozenset[str] = frozenset()
_NO_SOURCES: _Sources = ((), MappingProxyType({}), _NO_CODES)
_NO_ACTIONS: frozenset[Action] = frozenset()
_NULL_TAG = "tag:yaml.org,2002:null"
# Looked up once: reading an enum member's value costs more than the look-up it is used for.
_EFFECT_WORDS = tuple((effect.value, effect) for effect in Effect)


class _Loader:
    def __init__(self, directory: Path, builtin: _Builtin) -> None:
        self.directory = directory
        self.issues: list[PolicyIssue] = []
        self.sections: dict[str, list[tuple[Reader, Value]]] = {name: [] for name in SECTIONS}
        self.groups: dict[str, _Group] = {}
        self.expanded: dict[str, frozenset[str]] = {}
        self.regions: dict[str, _Region] = {}   # the folder's own
        self.builtin = builtin
        self.dataset_names: dict[str, _Place] = {}
        self.rule_ids: dict[str, _Place] = {}
        self.patterns: dict[ResourcePattern, _Owner] = {}
        # Values many datasets have in common, kept once: `from` expansions by (names, home), action sets.
        self.expansions: dict[tuple[tuple[str, ...], str | None], _Sources] = {}
        self.shared: dict[frozenset[Action], frozenset[Action]] = {}
        # What rules written alike have in common, for rules read without a problem (`_rule_shape`).
        self.rule_shapes: dict[tuple[object, ...], _RuleParts] = {}
        # Lists of action words already read without a problem, by their words.
        self.action_lists: dict[tuple[str | None, ...], frozenset[Action]] = {}

    def load(self) -> Policy:
        files = self._files()
        self.issues.extend(self.builtin.issues)
        contents = list(self.builtin.contents)
        read: list[tuple[str, bytes]] = []
        for path in files:
            try:
                data = path.read_bytes()
            except OSError as exc:
                self.issues.append(PolicyIssue(str(path), 0, "", f"cannot be read: {exc.strerror}"))
                continue
            contents.append((path.name, data))
            read.append((str(path), data))
        version = policy_version(contents)
        del contents   # each file's bytes are let go once it is parsed
        # The files after the last one that may define groups or regions are read last, their datasets
        # checked one by one as the file is parsed (`_read_streamed`): the groups and regions they name
        # are all known by then, and a file of 100,000 datasets is never held whole as a tree.
        last = max((i for i, (_, data) in enumerate(read) if _may_define_names(data)), default=-1)
        for i in range(last + 1):
            shown, data = read[i]
            read[i] = (shown, b"")
            self._read_file(shown, data)
        for reader, section in self.sections["jurisdictions"]:
            self._read_groups(reader, section)
        self._expand_groups()
        for reader, section in self.sections["regions"]:
            self._read_regions(reader, section)
        datasets: list[Dataset] = []
        for reader, section in self.sections["datasets"]:
            listed = reader.sequence(section, "datasets", what="a list of datasets", non_empty=False)
            for i, item in enumerate(listed.items if listed is not None else ()):
                dataset = self._dataset(reader, item, f"datasets[{i}]")
                if dataset is not None:
                    datasets.append(dataset)
        for i in range(last + 1, len(read)):
            shown, data = read[i]
            read[i] = (shown, b"")
            datasets.extend(self._read_streamed(shown, data))
            del data
        if self.issues:
            order = {str(p): i for i, p in enumerate(files)}
            raise PolicyLoadError(sorted(self.issues, key=lambda i: (order.get(i.file, -1), i.line)))
        return Policy(
            version=version,
            datasets=tuple(datasets),
            regions=MappingProxyType(
                {name: r.jurisdiction for name, r in sorted({**self.builtin.regions, **self.regions}.items())}
            ),
            files=tuple(str(p) for p in files),
            groups=MappingProxyType(dict(sorted(self.expanded.items()))),
        )

    # Files

    def _files(self) -> list[Path]:
        shown = str(self.directory)
        if not self.directory.exists():
            raise PolicyLoadError([PolicyIssue(shown, 0, "", "the policy directory does not exist")])
        if not self.directory.is_dir():
            raise PolicyLoadError([PolicyIssue(shown, 0, "", "is not a directory")])
        try:
            files = sorted(
                p for p in self.directory.iterdir()
                # Dot files are editors' and tools' leftovers, never policy.
                if p.suffix in POLICY_SUFFIXES and not p.name.startswith(".") and p.is_file()
            )
        except OSError as exc:
            raise PolicyLoadError([PolicyIssue(shown, 0, "", f"cannot be read: {exc.strerror}")]) from exc
        if not files:
            raise PolicyLoadError([PolicyIssue(shown, 0, "", "holds no policy files (*.yaml, *.yml)")])
        # Whoever can change the folder or a file in it decides where data may go: refuse the whole
        # policy when anyone but its owner (the proxy's user or root) could have (`proxy.policy.trust`).
        untrusted = folder_issues(self.directory)
        for path in [*files, *_test_files(self.directory)]:
            untrusted += file_issues(self.directory, path)
        if untrusted:
            raise PolicyLoadError(untrusted)
        return files

    def _read_file(
        self, shown: str, data: bytes, take: Take | None = None, void: Callable[[], None] | None = None,
    ) -> Value | None:
        """Parse one file and note its sections; its tree (None: empty, or refused and reported)."""
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            self.issues.append(PolicyIssue(shown, line, "", "is not UTF-8 text"))
            return None
        root = parse(text, shown, self.issues, take, void)
        if root is None:
            return None
        reader = Reader(shown, self.issues)
        top = reader.mapping(root, "", allowed=SECTIONS, what="a mapping with any of: " + ", ".join(SECTIONS))
        if top is None:
            return root
        for name in SECTIONS:
            section = top.get(name)
            # An empty section ("datasets:" with nothing under it) is no content, not an error.
            if section is not None and not (isinstance(section, Scalar) and section.is_null):
                self.sections[name].append((reader, section))
        return root

    def _read_streamed(self, shown: str, data: bytes) -> list[Dataset]:
        """A file that defines no groups or regions, its datasets checked as each is parsed.

        The outcome is that of `_read_file`, then `_dataset` for each item of its ``datasets``:
        the datasets' issues are added after the file's own (its YAML's and its top-level keys'),
        and when the file turns out to be refused whole (a syntax error, an alias), the datasets
        read before are void: their issues are dropped, and what they claimed (names, rule ids,
        resource patterns) is given up again.
        """
        issues = self.issues
        found: list[PolicyIssue] = []
        reader = Reader(shown, found)
        compiled: list[Dataset] = []
        taken = 0
        claimed = len(self.dataset_names), len(self.rule_ids), len(self.patterns)

        def take(key: str, index: int, item: Value) -> bool:
            nonlocal taken
            if key != "datasets":
                return False
            taken += 1
            self.issues = found   # what `_dataset` counts its own issues in
            try:
                dataset = self._dataset(reader, item, f"datasets[{index}]")
            finally:
                self.issues = issues
            if dataset is not None:
                compiled.append(dataset)
            return True

        def void() -> None:
            nonlocal taken
            if taken:
                _forget_since(self.dataset_names, claimed[0])
                _forget_since(self.rule_ids, claimed[1])
                _forget_since(self.patterns, claimed[2])
            taken = 0
            found.clear()
            compiled.clear()

        sections = len(self.sections["datasets"])
        if self._read_file(shown, data, take, void) is None:
            void()
            return []
        if len(self.sections["datasets"]) > sections:
            # What is left of the section: an empty list (its items were taken), or something else.
            section_reader, section = self.sections["datasets"].pop()
            section_reader.sequence(section, "datasets", what="a list of datasets", non_empty=False)
        issues.extend(found)
        return compiled

    # Jurisdiction groups

    def _read_groups(self, reader: Reader, section: Value) -> None:
        groups = reader.mapping(section, "jurisdictions", allowed=None, what="a mapping of group names")
        if groups is None:
            return
        for name, (key, value) in groups.fields.items():
            path = join("jurisdictions", name)
            if name in BUILTIN_JURISDICTIONS:
                reader.error(key.line, path, f'"{name}" is built in and cannot be redefined')
                continue
            if is_country_code(name):
                reader.error(key.line, path, f'"{name}" is an ISO 3166-1 country code and cannot name a group')
                continue
            if not _GROUP_NAME.fullmatch(name):
                reader.error(
                    key.line, path,
                    f'"{name}" is not a valid group name (upper-case letters, digits, "_" and "-", '
                    "starting with a letter)",
                )
                continue
            if name in self.groups:
                reader.error(key.line, path, f'group "{name}" is already defined at {self.groups[name].place}')
                continue
            listed = reader.sequence(value, path, what="a list of country codes and groups", non_empty=False)
            members: list[tuple[Scalar, str]] = []
            for item in listed.items if listed is not None else ():
                if reader.string(item, path, what="a country code or group name") is not None:
                    assert isinstance(item, Scalar)  # string() accepted it, so it is a scalar
                    members.append((item, path))
            self.groups[name] = _Group(name, tuple(members), reader, _Place(reader.file, key.line))

    def _expand_groups(self) -> None:
        """Expand every group to its country codes, reporting unknown names and cycles."""
        reported: set[frozenset[str]] = set()
        stack: list[str] = []

        def expand(group: _Group) -> frozenset[str]:
            done = self.expanded.get(group.name)
            if done is not None:
                return done
            stack.append(group.name)
            codes: set[str] = set()
            for member, path in group.members:
                name = member.text
                if name in stack:
                    cycle = [*stack[stack.index(name):], name]
                    if frozenset(cycle) not in reported:
                        reported.add(frozenset(cycle))
                        group.reader.error(member.line, path, "groups form a cycle: " + " -> ".join(cycle))
                elif name in BUILTIN_JURISDICTIONS:
                    group.reader.error(
                        member.line, path, f'"{name}" can be used only in a rule\'s "from" list, not in a group'
                    )
                elif is_country_code(name):
                    codes.add(name)
                elif name in self.groups:
                    codes |= expand(self.groups[name])
                else:
                    group.reader.error(member.line, path, self._unknown_jurisdiction(name))
            stack.pop()
            self.expanded[group.name] = frozenset(codes)
            return self.expanded[group.name]

        for group in self.groups.values():
            expand(group)

    def _unknown_jurisdiction(self, name: str) -> str:
        """Why `name` is neither a code nor a group, with the likeliest intended name."""
        hint = suggest(name)
        if hint is not None and hint != name:
            return describe_invalid(name)
        close = [g for g in self.groups if g == name.upper()] or difflib.get_close_matches(
            name, list(self.groups), n=1
        )
        base = f'"{name}" is neither an ISO 3166-1 code nor a defined group'
        return f"{base} (did you mean {close[0]}?)" if close else base

    # Regions

    def _read_regions(self, reader: Reader, section: Value) -> None:
        regions = reader.mapping(section, "regions", allowed=None, what="a mapping of region names")
        if regions is None:
            return
        for name, (key, value) in regions.fields.items():
            path = join("regions", name)
            if not _REGION_NAME.fullmatch(name):
                reader.error(key.line, path, f'"{name}" is not a valid region name ({_NAME_CHARS})')
                continue
            code = reader.string(value, path, what="an ISO 3166-1 country code")
            if code is None:
                continue
            if not is_country_code(code):
                if code in self.groups or code in BUILTIN_JURISDICTIONS:
                    reader.error(
                        value.line, path,
                        f'"{code}" is not a country code; a region is governed by the law of one '
                        "country: give its ISO 3166-1 code",
                    )
                else:
                    reader.error(value.line, path, describe_invalid(code))
                continue
            known = self.regions.get(name)
            if known is None:
                self.regions[name] = _Region(code, _Place(reader.file, key.line))
            elif known.jurisdiction != code:
                reader.error(
                    value.line, path, f'region "{name}" is already mapped to {known.jurisdiction} at {known.place}'
                )

    # Datasets

    def _dataset(self, reader: Reader, node: Value, path: str) -> Dataset | None:
        before = len(self.issues)
        entry = reader.mapping(
            node, path,
            allowed=("name", "description", "region", "resources", "mode", "encryption", "rules", "cors"),
            required=("name", "region", "resources"),
            what="a dataset (a mapping with name, region, resources and rules)",
        )
        if entry is None:
            return None
        name = self._dataset_name(reader, entry, path)
        description = ""
        if (value := entry.get("description")) is not None:
            description = reader.string(value, join(path, "description")) or ""
        region, home = self._dataset_region(reader, entry, path)
        mode = Mode.ENFORCE
        if (value := entry.get("mode")) is not None:
            chosen = reader.choice(value, join(path, "mode"), [m.value for m in Mode])
            mode = Mode(chosen) if chosen is not None else mode
        encryption = Encryption.NONE
        if (value := entry.get("encryption")) is not None:
            # Leaving the key out is how a dataset says it is not encrypted; "none" is not written.
            words = [e.value for e in Encryption if e.encrypts]
            chosen = reader.choice(value, join(path, "encryption"), words, suggest=True)
            encryption = Encryption(chosen) if chosen is not None else encryption
        resources = self._resources(reader, entry, path, name or "")
        rules = self._rules(reader, entry, path, name or "", home)
        cors = read_cors(reader, value, join(path, "cors")) if (value := entry.get("cors")) is not None else ()
        if len(self.issues) > before or name is None or region is None or home is None:
            return None
        return Dataset(
            name=name, region=region, jurisdiction=home, resources=resources, rules=rules,
            mode=mode, description=description, file=reader.file, line=entry.line, encryption=encryption,
            cors=cors,
        )

    def _dataset_name(self, reader: Reader, entry: Map, path: str) -> str | None:
        value = entry.get("name")
        if value is None:
            return None
        name = reader.string(value, join(path, "name"), what="a dataset name")
        if name is None:
            return None
        if not _DATASET_NAME.fullmatch(name):
            reader.error(value.line, join(path, "name"), f'"{name}" is not a valid dataset name ({_NAME_CHARS})')
            return None
        known = self.dataset_names.get(name)
        if known is not None:
            reader.error(value.line, join(path, "name"), f'dataset "{name}" is already defined at {known}')
            return None
        self.dataset_names[name] = _Place(reader.file, value.line)
        return name

    def _dataset_region(self, reader: Reader, entry: Map, path: str) -> tuple[str | None, str | None]:
        value = entry.get("region")
        if value is None:
            return None, None
        region = reader.string(value, join(path, "region"), what="a region name")
        if region is None:
            return None, None
        known = self.regions.get(region) or self.builtin.regions.get(region)
        if known is None:
            message = f'"{region}" is not a defined region' + unknown_region_hint(
                region, [*self.regions, *self.builtin.regions])
            reader.error(value.line, join(path, "region"), message)
            return None, None
        return region, known.jurisdiction

    def _resources(self, reader: Reader, entry: Map, path: str, dataset: str) -> tuple[ResourcePattern, ...]:
        value = entry.get("resources")
        path = join(path, "resources")
        listed = reader.sequence(value, path, what="a list of resource patterns") if value is not None else None
        patterns: list[ResourcePattern] = []
        for i, item in enumerate(listed.items if listed is not None else ()):
            item_path = f"{path}[{i}]"
            text = reader.string(item, item_path, what="a resource pattern")
            if text is None:
                continue
            try:
                pattern = parse_pattern(text)
            except PatternError as exc:
                reader.error(item.line, item_path, str(exc))
                continue
            owner = self.patterns.get(pattern)
            if owner is not None:
                reader.error(item.line, item_path, _duplicate_pattern(text, owner, dataset))
                continue
            self.patterns[pattern] = _Owner(dataset, text, _Place(reader.file, item.line))
            patterns.append(pattern)
        return tuple(patterns)

    def _rules(self, reader: Reader, entry: Map, path: str, dataset: str, home: str | None) -> tuple[Rule, ...]:
        value = entry.get("rules")
        if value is None:
            return ()
        path = join(path, "rules")
        listed = reader.sequence(value, path, what="a list of rules", non_empty=False)
        rules: list[Rule] = []
        for i, item in enumerate(listed.items if listed is not None else ()):
            rule = self._rule(reader, item, f"{path}[{i}]", f"{dataset}#{i}", home)
            if rule is not None:
                rules.append(rule)
        return tuple(rules)

    def _rule(self, reader: Reader, node: Value, path: str, default_id: str, home: str | None) -> Rule | None:
        shape = _rule_shape(node, home)
        if shape is not None and (known := self.rule_shapes.get(shape)) is not None:
            assert isinstance(node, Map)
            return self._rule_like(reader, node, path, default_id, known)
        before = len(self.issues)
        entry = reader.mapping(
            node, path, allowed=("id", "allow", "deny", "from", "location"), required=("from",),
            what="a rule (a mapping with allow or deny, and from)",
        )
        if entry is None:
            return None
        rule_id, id_line, id_path = self._rule_id_at(reader, entry, path, default_id)
        fields = entry.fields
        effects = [e for word, e in _EFFECT_WORDS if word in fields]
        if len(effects) > 1:
            reader.error(entry.line, path, 'a rule has either "allow" or "deny", not both')
        elif not effects:
            reader.error(entry.line, path, 'missing "allow" or "deny" (the actions the rule allows or denies)')
        actions: frozenset[Action] = _NO_ACTIONS
        for effect in effects:
            word = effect.value
            actions |= self._actions(reader, fields[word][1], join(path, word))
        actions = self.shared.setdefault(actions, actions)
        sources, via, jurisdictions = _NO_SOURCES
        if (value := entry.get("from")) is not None:
            sources, via, jurisdictions = self._sources(reader, value, join(path, "from"), home)
        location: str | None = None
        location_codes: frozenset[str] = _NO_CODES
        if (value := entry.get("location")) is not None:
            location, location_codes = self._location(reader, value, join(path, "location"), home)
            if effects and effects[0] is not Effect.ALLOW:
                reader.error(value.line, join(path, "location"), "location is checked on allow rules only "
                             "(a deny rule denies wherever the caller is)")
        self._claim_rule_id(reader, rule_id, id_line, id_path)
        if len(self.issues) > before:
            return None
        parts = (effects[0], actions, sources, via, jurisdictions, location, location_codes)
        if shape is not None and len(self.rule_shapes) < 4096:
            self.rule_shapes[shape] = parts
        return _make_rule(rule_id, parts, reader.file, entry.line)

    def _rule_like(self, reader: Reader, entry: Map, path: str, default_id: str, known: _RuleParts) -> Rule | None:
        """A rule written as one read before without a problem (`_rule_shape`): only its id is its own."""
        before = len(self.issues)
        rule_id, id_line, id_path = self._rule_id_at(reader, entry, path, default_id)
        self._claim_rule_id(reader, rule_id, id_line, id_path)
        if len(self.issues) > before:
            return None
        return _make_rule(rule_id, known, reader.file, entry.line)

    def _rule_id_at(self, reader: Reader, entry: Map, path: str, default_id: str) -> tuple[str, int, str]:
        """A rule's id ("" when it is not valid, then reported), and the line and key path it is reported at."""
        if (value := entry.get("id")) is None:
            return default_id, entry.line, path
        id_path = join(path, "id")
        return self._rule_id(reader, value, id_path) or "", value.line, id_path

    def _claim_rule_id(self, reader: Reader, rule_id: str, line: int, path: str) -> None:
        """Note `rule_id` as used here, or report that it is used already."""
        if rule_id and rule_id in self.rule_ids:
            reader.error(line, path, f'rule id "{rule_id}" is already used at {self.rule_ids[rule_id]}')
        elif rule_id:
            self.rule_ids[rule_id] = _Place(reader.file, line)

    def _location(self, reader: Reader, value: Value, path: str, home: str | None) -> tuple[str | None, frozenset[str]]:
        """A rule's ``location``: ``same``, or a code, group or HOME and the codes it expands to."""
        name = reader.string(value, path, what='"same", a country code, a group or HOME')
        if name is None:
            return None, frozenset()
        if name == SAME_LOCATION:
            return name, frozenset()
        if name == HOME:
            return name, frozenset((home,) if home is not None else ())
        if is_country_code(name):
            return name, frozenset((name,))
        if name in self.expanded:
            return name, self.expanded[name]
        if difflib.get_close_matches(name.lower(), [SAME_LOCATION], n=1, cutoff=0.7):
            reader.error(value.line, path, f'"{name}" is not a location (did you mean {SAME_LOCATION}?)')
            return None, frozenset()
        unknown = self._unknown_jurisdiction(name) if name != ANY else '"*" would check nothing'
        reader.error(value.line, path, f'{unknown} (location expects "same", a country code, a group or HOME)')
        return None, frozenset()

    def _rule_id(self, reader: Reader, value: Value, path: str) -> str | None:
        rule_id = reader.string(value, path, what="a rule id")
        if rule_id is None:
            return None
        if rule_id in RESERVED_RULE_IDS:
            reader.error(value.line, path, f'"{rule_id}" is reserved for the proxy\'s own checks; choose another id')
            return None
        if not _RULE_ID.fullmatch(rule_id):
            reader.error(
                value.line, path,
                f'"{rule_id}" is not a valid rule id (letters, digits, ".", "_", ":", "#" and "-", '
                "starting with a letter or digit)",
            )
            return None
        return rule_id

    def _actions(self, reader: Reader, value: Value, path: str) -> frozenset[Action]:
        if type(value) is Seq and value.items:
            # Most lists of actions are a few words written the same way many times: known whole.
            key = tuple([item.text if type(item) is Scalar and item.tag != _NULL_TAG else None
                         for item in value.items])
            known = self.action_lists.get(key)
            if known is not None:
                return known
            found = self._read_actions(reader, value, path)
            if None not in key and all(text in _ACTION_WORDS for text in key):
                self.action_lists[key] = found
            return found
        return self._read_actions(reader, value, path)

    def _read_actions(self, reader: Reader, value: Value, path: str) -> frozenset[Action]:
        listed = reader.sequence(value, path, what='a list of actions, e.g. [read, list] or ["*"]')
        actions: set[Action] = set()
        for item in listed.items if listed is not None else ():
            text = reader.string(item, path, what="an action")
            if text is None:
                continue
            known = _ACTION_WORDS.get(text)
            if known is None:
                hint = _ACTION_HINTS.get(text.lower()) or (text.lower() if text.lower() in _ACTION_WORDS else None)
                more = f"; did you mean {hint}?" if hint else ""
                reader.error(
                    item.line, path,
                    f'"{text}" is not an action (expected read, list, write, delete, admin or "*"{more})',
                )
                continue
            actions |= known
        return frozenset(actions)

    def _sources(self, reader: Reader, value: Value, path: str, home: str | None) -> _Sources:
        """The names as written, each code they expand to with the name that brought it in, and those codes.

        Rules that write the same names for the same home share one expansion: a policy of many datasets
        written from a few templates keeps a few of them, not one per rule.
        """
        listed = reader.sequence(value, path, what="a list of jurisdictions, e.g. [HOME] or [EEA]")
        names: list[str] = []
        for item in listed.items if listed is not None else ():
            name = reader.string(item, path, what='a country code, a group, HOME or "*"')
            if name is None:
                continue
            names.append(name)
            if name != HOME and name != ANY and name not in self.expanded and not is_country_code(name):
                reader.error(item.line, path, self._unknown_jurisdiction(name))
        key = (tuple(names), home if HOME in names else None)   # HOME is the only name home changes
        known = self.expansions.get(key)
        if known is not None:
            return known
        via: dict[str, str] = {}
        for name in names:
            if name == HOME:
                # Without a valid region the dataset is already reported; HOME stays empty.
                codes: frozenset[str] = frozenset((home,) if home is not None else ())
            elif is_country_code(name):
                codes = frozenset((name,))
            elif name in self.expanded:
                codes = self.expanded[name]
            else:
                continue   # "*", or a name reported above
            for code in sorted(codes):
                via.setdefault(code, name)
        found = self.expansions[key] = (key[0], MappingProxyType(via), frozenset(via))
        return found


# A rule less its id, file and line: effect, actions, sources, via, jurisdictions, location and its codes.
_RuleParts = tuple[Effect, frozenset[Action], tuple[str, ...], Mapping[str, str], frozenset[str], str | None,
                   frozenset[str]]


def _make_rule(rule_id: str, parts: _RuleParts, file: str, line: int) -> Rule:
    effect, actions, sources, via, jurisdictions, location, location_codes = parts
    return Rule(
        id=rule_id, effect=effect, actions=actions, sources=sources, jurisdictions=jurisdictions,
        any_jurisdiction=ANY in sources, file=file, line=line, via=via, location=location,
        location_codes=location_codes,
    )


def _rule_shape(node: Value, home: str | None) -> tuple[object, ...] | None:
    """What a rule's outcome depends on, but for its id: its keys and the text and tag of each scalar, and home.

    Rules of a large policy are written from a few templates: one read without a problem gives
    every rule written the same way the same effect, actions and sources (groups are all known
    before the first dataset is read). None: the rule is read in full (a value that is neither
    a scalar nor a list of scalars, or not a mapping at all).
    """
    if type(node) is not Map:
        return None
    shape: list[object] = [home]
    for name, (_, value) in node.fields.items():
        if name == "id":
            continue
        if type(value) is Seq:
            items: list[object] = [name]
            for item in value.items:
                if type(item) is not Scalar:
                    return None
                items.append(item.text)
                items.append(item.tag)
            shape.append(tuple(items))
        elif type(value) is Scalar:
            shape.append((name, value.text, value.tag, None))
        else:
            return None
    return tuple(shape)


@functools.cache
def _builtin_regions() -> _Builtin:
    """The built-in region files (`proxy.policy.regions`), read and checked as a folder's would be."""
    reader = _Loader(Path(), _NO_BUILTIN)
    contents: list[tuple[str, bytes]] = []
    for name, shown, data in region_files():
        contents.append((f"built-in/{name}", data))
        reader._read_file(shown, data)
    for source, section in reader.sections["regions"]:
        reader._read_regions(source, section)
    return _Builtin(MappingProxyType(reader.regions), tuple(contents), tuple(reader.issues))


def _duplicate_pattern(text: str, owner: _Owner, dataset: str) -> str:
    same = "" if owner.text == text else f' (the same as "{owner.text}")'
    if owner.dataset == dataset:
        return f'"{text}"{same} is already listed in this dataset at {owner.place}'
    return (
        f'"{text}"{same} is already a resource of dataset "{owner.dataset}" at {owner.place}; '
        "a resource pattern belongs to one dataset"
    )
