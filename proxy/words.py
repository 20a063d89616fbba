"""Counts in words, for what the command line prints: "1 dataset", "2 datasets".

One helper, so that every count the `bailiwick` command prints agrees in number
with its noun ("1 lines" reads as a slip, and an operator stops trusting the
rest of the line).
"""

from __future__ import annotations


def counted(count: int, singular: str, plural: str | None = None) -> str:
    """`count` and its noun: `singular` for exactly one, else `plural` (default: `singular` + "s")."""
    return f"{count} {singular if count == 1 else plural or singular + 's'}"
