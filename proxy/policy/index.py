"""Which dataset a resource belongs to, found without scanning the datasets.

Every request asks this once per resource, so the answer must not slow down
as a policy grows. Patterns are kept in dictionaries: per scheme, exact
buckets and bucket-name prefixes, and under each bucket (or bucket prefix) a
dictionary of key prefixes. A lookup tries only the distinct lengths that
occur, longest first, so its cost depends on how many different prefix
lengths the policy uses, not on how many datasets it has.

The most specific pattern wins (docs/policies.md, "datasets"): an exact bucket beats
a bucket prefix, a longer bucket prefix beats a shorter one, then the longer
key prefix wins. Key prefixes match as plain string prefixes (S3 semantics):
``s3://archive/ie`` matches the key ``ie-x`` as well as ``ie/x``.

A listing reaches every key under its prefix, including keys that belong to
more specific datasets nested under it; `nested` finds those with a binary
search over the sorted key prefixes of each matching bucket entry.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from proxy.domain import Resource
from proxy.policy.patterns import ResourcePattern

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _KeyTable(Generic[T]):
    """The key prefixes under one bucket name (or bucket-name prefix)."""

    by_prefix: Mapping[str, tuple[T, ResourcePattern]]
    lengths: tuple[int, ...]      # distinct key-prefix lengths, longest first
    ordered: tuple[str, ...]      # key prefixes in sorted order, for `under`

    @classmethod
    def build(cls, entries: Mapping[str, tuple[T, ResourcePattern]]) -> _KeyTable[T]:
        return cls(
            by_prefix=dict(entries),
            lengths=tuple(sorted({len(k) for k in entries}, reverse=True)),
            ordered=tuple(sorted(entries)),
        )

    def find(self, key: str) -> tuple[T, ResourcePattern] | None:
        """The entry with the longest key prefix of `key`."""
        for length in self.lengths:
            if length <= len(key):
                hit = self.by_prefix.get(key[:length])
                if hit is not None:
                    return hit
        return None

    def under(self, prefix: str) -> Iterator[tuple[T, ResourcePattern]]:
        """Entries whose key prefix starts with `prefix` and is longer than it."""
        # Strings that start with `prefix` sort together, right from where `prefix` would go.
        for i in range(bisect_left(self.ordered, prefix), len(self.ordered)):
            key = self.ordered[i]
            if not key.startswith(prefix):
                break
            if len(key) > len(prefix):
                yield self.by_prefix[key]


@dataclass(frozen=True, slots=True)
class _SchemeTable(Generic[T]):
    exact: Mapping[str, _KeyTable[T]]
    prefixed: Mapping[str, _KeyTable[T]]
    prefix_lengths: tuple[int, ...]   # distinct bucket-prefix lengths, longest first
    # Exact buckets whose only pattern is the whole bucket: the entry every key of them belongs to
    # (they have no table in `exact`: no key of theirs is nested under another pattern of theirs).
    whole: Mapping[str, tuple[T, ResourcePattern]]

    @classmethod
    def build(
        cls,
        exact: Mapping[str, Mapping[str, tuple[T, ResourcePattern]]],
        prefixed: Mapping[str, Mapping[str, tuple[T, ResourcePattern]]],
    ) -> _SchemeTable[T]:
        # A whole bucket's entry is all there is to know about it (`whole`): no key table is made for it,
        # which in a policy of one dataset per bucket is every bucket.
        whole = {b: k[""] for b, k in exact.items() if len(k) == 1 and "" in k}
        return cls(
            exact={b: _KeyTable.build(k) for b, k in exact.items() if b not in whole},
            prefixed={b: _KeyTable.build(k) for b, k in prefixed.items()},
            prefix_lengths=tuple(sorted({len(b) for b in prefixed}, reverse=True)),
            whole=whole,
        )

    def tables(self, bucket: str) -> Iterator[_KeyTable[T]]:
        """The key tables that apply to `bucket`, most specific first."""
        exact = self.exact.get(bucket)
        if exact is not None:
            yield exact
        for length in self.prefix_lengths:
            if length <= len(bucket):
                table = self.prefixed.get(bucket[:length])
                if table is not None:
                    yield table


class ResourceIndex(Generic[T]):
    """Maps resources to the value (a dataset) of their most specific pattern.

    Built once from (pattern, value) pairs; a pattern may appear only once
    (the loader reports duplicates with their file and line before this).
    """

    __slots__ = ("_schemes", "_size")

    def __init__(self, entries: Iterable[tuple[ResourcePattern, T]]) -> None:
        grouped: dict[str, tuple[dict[str, dict[str, tuple[T, ResourcePattern]]], ...]] = {}
        size = 0
        for pattern, value in entries:
            exact, prefixed = grouped.setdefault(pattern.scheme, ({}, {}))
            buckets = prefixed if pattern.bucket_prefix else exact
            keys = buckets.setdefault(pattern.bucket, {})
            if pattern.key_prefix in keys:
                raise ValueError(f"{pattern} is in the index twice")
            keys[pattern.key_prefix] = (value, pattern)
            size += 1
        self._size = size
        self._schemes: dict[str, _SchemeTable[T]] = {
            scheme: _SchemeTable.build(exact, prefixed) for scheme, (exact, prefixed) in grouped.items()
        }

    def __len__(self) -> int:
        return self._size

    def lookup(self, resource: Resource) -> tuple[T, ResourcePattern] | None:
        """The value and pattern that `resource` belongs to, or None if no pattern matches."""
        scheme = self._schemes.get(resource.scheme)
        if scheme is None:
            return None
        bucket = resource.bucket
        whole = scheme.whole.get(bucket)
        if whole is not None:
            return whole
        for table in scheme.tables(bucket):
            hit = table.find(resource.key)
            if hit is not None:
                return hit
        return None

    def nested(self, resource: Resource) -> tuple[tuple[T, ResourcePattern], ...]:
        """Entries a listing of `resource.key` reaches besides the one `lookup` gives.

        These are patterns for the same bucket whose key prefix is longer than
        the listing prefix and starts with it, and that are not shadowed: a
        pattern counts only if the keys it names really belong to it, i.e. no
        more specific pattern (an exact bucket over a bucket prefix) already
        covers its whole key prefix.
        """
        scheme = self._schemes.get(resource.scheme)
        if scheme is None:
            return ()
        found: list[tuple[T, ResourcePattern]] = []
        for table in scheme.tables(resource.bucket):
            for value, pattern in table.under(resource.key):
                # Whatever beats the pattern at its own key prefix beats it at every key below it.
                owner = self.lookup(Resource(resource.scheme, resource.bucket, pattern.key_prefix))
                if owner is not None and owner[1] == pattern:
                    found.append((value, pattern))
        return tuple(found)
