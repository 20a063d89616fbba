"""A batch over the objects under a prefix (`bailiwick encrypt`, `bailiwick rewrap`), and what it says as it goes.

A batch first counts what it will walk (one listing pass, so memory stays
flat in the number of objects), then does each object in key order and says,
on standard error, one line per object: what it did, with the running count
and bytes of the total; it ends with a summary by outcome. An object that
fails is reported and the batch goes on; a key service that cannot serve at
all (unreachable, or its key disabled) or a listing that fails stops it. A
batch is resumable because it is idempotent: objects already done are found
done again (from their metadata alone) and left as they are.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import TextIO

from proxy.crypto.tools.store import Storage, StoreError
from proxy.crypto.tools.toolbox import Toolbox, size
from proxy.errors import EncryptedObjectInvalid, KeyReleaseRefused
from proxy.words import counted

# One object of a batch: (what was done, why) for s3://bucket/key.
Step = Callable[[str, str], Awaitable[tuple["Outcome", str]]]


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
        return f"{counted(self.seen, 'object')}, {size(self.bytes)}: {done or 'nothing to do'}"


async def run_batch(box: Toolbox, storage: Storage, bucket: str, prefix: str, command: str, dry_run: bool,
                    step: Step) -> int:
    """`step` on every object under the prefix; 0 when none failed, else 1 (said, with how to continue)."""
    objects = total = 0
    async for listed in storage.listing(bucket, prefix):
        objects += 1
        total += listed.size
    progress = Progress(box.err, objects, total)
    label = f"{command} (dry run: nothing changes)" if dry_run else command
    progress.say(f"{label} s3://{bucket}/{prefix}: {counted(objects, 'object')} listed, {size(total)}")
    async for listed in storage.listing(bucket, prefix):
        try:
            outcome, why = await step(bucket, listed.key)
        except (StoreError, EncryptedObjectInvalid) as exc:
            changed = isinstance(exc, StoreError) and exc.status == 412
            outcome, why = (Outcome.CHANGED if changed else Outcome.FAILED), exc.message
        except KeyReleaseRefused as exc:
            await _stop_unless_the_object_alone(box, exc)
            outcome, why = Outcome.FAILED, exc.message
        progress.step(f"s3://{bucket}/{listed.key}", listed.size, outcome, why)
    progress.say(progress.summary())
    if progress.failures:
        progress.say(f"{counted(progress.failures, 'object')} not done: run the same command again to continue")
        return 1
    return 0


async def _stop_unless_the_object_alone(box: Toolbox, refused: KeyReleaseRefused) -> None:
    """A refusal of one object's key (its envelope altered or moved: the context does not match) fails that
    object; a refusal of every key (the region's key disabled, deleted, or the token revoked: the key service's
    probe says so) stops the batch, which could only fail every object after it."""
    problem = await asyncio.to_thread(box.service.probe)
    if problem is not None:
        raise KeyReleaseRefused(f"{refused.message}; stopped, since the key service cannot serve: {problem}")
