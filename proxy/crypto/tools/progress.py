"""What a batch tool (`bailiwick encrypt`, `bailiwick rewrap`) says as it goes: one line per object, on stderr.

A batch first counts what it will walk (one listing pass, so memory stays
flat in the number of objects), then says, object by object, what it did,
with the running count and bytes of the total; it ends with a summary by
outcome. A batch is resumable because it is idempotent: objects already done
are found done again (from their metadata alone) and left as they are.
"""

from __future__ import annotations

from collections import Counter
from enum import StrEnum
from typing import TextIO

from proxy.crypto.tools.toolbox import size


class Outcome(StrEnum):
    """What a batch did with one object."""

    ENCRYPTED = "encrypted"
    WOULD_ENCRYPT = "would encrypt"
    REWRAPPED = "rewrapped"
    WOULD_REWRAP = "would rewrap"
    DONE_BEFORE = "already done"            # encrypted already / wrapped under the key's latest version already
    SKIPPED = "skipped"                     # not the batch's to touch: another dataset, region, or plaintext
    CHANGED = "changed meanwhile"           # written by someone else during the batch: left; run again
    FAILED = "failed"

    @property
    def failed(self) -> bool:
        return self in (Outcome.CHANGED, Outcome.FAILED)


class Progress:
    """Counts and reports a batch over `objects` objects of `total` bytes (as listed)."""

    def __init__(self, err: TextIO, objects: int, total: int) -> None:
        self._err = err
        self.objects = objects
        self.total = total
        self.seen = 0
        self.bytes = 0
        self.outcomes: Counter[Outcome] = Counter()

    def say(self, line: str) -> None:
        print(line, file=self._err, flush=True)

    def step(self, location: str, stored: int, outcome: Outcome, why: str = "") -> None:
        self.seen += 1
        self.bytes += stored
        self.outcomes[outcome] += 1
        width = len(str(self.objects))
        self.say(f"[{self.seen:>{width}}/{self.objects}] {outcome}: {location} ({size(stored)})"
                 f"{f': {why}' if why else ''} [{size(self.bytes)} of {size(self.total)}]")

    @property
    def failures(self) -> int:
        return sum(count for outcome, count in self.outcomes.items() if outcome.failed)

    def summary(self) -> str:
        done = ", ".join(f"{count} {outcome}" for outcome, count in sorted(self.outcomes.items()) if count)
        return f"{self.seen} objects, {size(self.bytes)}: {done or 'nothing to do'}"
