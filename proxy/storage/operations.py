"""The table from (level, method, selectors) to an operation, as both storage APIs classify requests.

S3 and Azure Blob each pick the operation a request performs by its method,
by what its path names (S3: service, bucket, object; Azure: account,
container, blob) and by the query parameters that select one (S3's
sub-resources, Azure's ``restype`` and ``comp``). Each API writes its own
table of its own `Operation` values (`proxy.s3.operations`,
`proxy.azure.operations`) into an `OperationTable`, which refuses an entry
written twice: a typo in a table would otherwise silently shadow another
entry, and a request would be judged as the wrong operation.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

LevelT = TypeVar("LevelT")
OpT = TypeVar("OpT")


class OperationTable(Generic[LevelT, OpT]):
    """Operations by (level, method, selector tokens); each key written once."""

    def __init__(self) -> None:
        # (level, method, tokens) -> operation; a token is a selector's name, or "name=value".
        self.entries: dict[tuple[LevelT, str, frozenset[str]], OpT] = {}

    def add(self, level: LevelT, method: str, selectors: Iterable[str], op: OpT) -> None:
        """Write one entry. Raises `AssertionError` for a key already written."""
        key = (level, method, frozenset(selectors))
        if key in self.entries:  # a table typo would silently shadow an entry
            raise AssertionError(f"duplicate operation table entry: {key}")
        self.entries[key] = op

    def plain(self) -> dict[tuple[LevelT, str], OpT]:
        """The entries without selectors, by (level, method): the many requests without a query."""
        return {(level, method): op for (level, method, tokens), op in self.entries.items() if not tokens}
