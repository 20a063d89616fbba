"""Live policy reload: a new policy is loaded, checked and tested, then swapped in whole.

Why polling a content fingerprint: Kubernetes updates a ConfigMap volume by
swapping a symlink (``..data``), which inotify-style watchers of the files
miss and modification times do not always show; hashing what the files
contain sees every change however it was made. SIGHUP reloads at once.

A reload never makes things worse: the new policy must load without a single
issue, fit this proxy (its region must be one of the policy's, an encrypted
dataset of its region needs a key service: the `fits` check) and, when the
folder has policy tests (``tests/*_test.yaml``), pass all of them; otherwise
the policy in force stays, the problems are logged with file and line, and
``bailiwick_policy_reloads_total{result="failure"}`` counts it. The swap is
one assignment (`Gateway.policy`): a request reads the policy once when it
starts, so requests in flight finish under the policy they started with, and
each decision records the version it was made under.
Loading runs on a worker thread so that the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from proxy.errors import PolicyLoadError
from proxy.policy.loader import POLICY_SUFFIXES, load_policy
from proxy.policy.model import Policy
from proxy.poller import Poller

log = logging.getLogger("bailiwick.reload")

TESTS_FOLDER = "tests"
TEST_SUFFIX = "_test.yaml"
# A policy file is a few KiB; the fingerprint reads no file larger than this (see `_contents`).
MAX_READ_BYTES = 4 * 1024 * 1024


def fingerprint(directory: Path) -> str:
    """SHA-256 over the names, contents, owners and modes of the policy files and their tests.

    Unreadable files count as what they are (a marker), so a file that
    disappears or becomes unreadable is a change too; the load then says why.
    The owner and mode of each file and of the folders count too: a policy
    made writable by others (`proxy.policy.trust`) is a change, and its reload
    is refused and counted as a failure even if no byte of it changed yet.
    """
    digest = hashlib.sha256()
    digest.update(_ownership(directory) + _ownership(directory / TESTS_FOLDER))
    for path in _watched(directory):
        digest.update(str(path.relative_to(directory)).encode("utf-8", "surrogateescape") + b"\0")
        digest.update(_ownership(path))
        try:
            digest.update(_contents(path))
        except OSError as exc:
            digest.update(f"\0unreadable: {exc.strerror}".encode())
        digest.update(b"\0")
    return digest.hexdigest()


def _contents(path: Path) -> bytes:
    """What the fingerprint takes of a watched file: its bytes, or a marker for one it must not read.

    The fingerprint is taken before the load checks who may write the folder
    (`proxy.policy.trust`), so the folder may be an attacker's: a file swapped
    for a FIFO after it was listed is opened without waiting for a writer and
    not read, and a file over `MAX_READ_BYTES` (a sparse file of any size costs
    nothing to make) counts by its size, time and inode, not read whole into memory.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return f"\0not a regular file: {stat.S_IFMT(info.st_mode):o}".encode()
        if info.st_size > MAX_READ_BYTES:
            return f"\0too large: {info.st_size}:{info.st_mtime_ns}:{info.st_ino}".encode()
        with os.fdopen(os.dup(fd), "rb") as file:
            return file.read(MAX_READ_BYTES + 1)
    finally:
        os.close(fd)


def _ownership(path: Path) -> bytes:
    """Owner, group and mode of `path` (followed through links), or a marker when it cannot be read."""
    try:
        info = os.stat(path)
    except OSError:
        return b"-\0"
    return f"{info.st_uid}:{info.st_gid}:{info.st_mode:o}".encode() + b"\0"


def _watched(directory: Path) -> list[Path]:
    try:
        files = [p for p in directory.iterdir() if p.suffix in POLICY_SUFFIXES and p.is_file()]
        tests = directory / TESTS_FOLDER
        if tests.is_dir():
            files += [p for p in tests.iterdir() if p.name.endswith(TEST_SUFFIX) and p.is_file()]
    except OSError:
        return []
    return sorted(files)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one reload attempt came to."""

    policy: Policy | None        # the new policy, when it may be swapped in
    problems: tuple[str, ...]    # why not, one line each (file:line: ... for load issues)


def load_checked(directory: Path, run_tests: bool, fits: Callable[[Policy], str | None] | None = None) -> Outcome:
    """Load the policy in `directory` and run its tests if it has any (blocking: run it off the loop).

    `fits`: why this proxy cannot serve the policy that loaded (None: it can), e.g. an encrypted dataset
    of its region with no key service configured; such a policy is rejected like one that did not load.
    """
    try:
        policy = load_policy(directory)
    except PolicyLoadError as err:
        return Outcome(None, tuple(str(issue) for issue in err.issues))
    problem = fits(policy) if fits is not None else None
    if problem is not None:
        return Outcome(None, (problem,))
    if run_tests and any(p.name.endswith(TEST_SUFFIX) for p in _watched(directory)):
        from proxy.policy.testing import run_policy_tests

        try:
            report = run_policy_tests(policy, directory)
        except PolicyLoadError as err:
            return Outcome(None, tuple(str(issue) for issue in err.issues))
        failed = [result for result in report.results if not result.passed]
        if failed:
            return Outcome(None, tuple(
                f"{result.case.location}: policy test {result.case.name!r} failed: {'; '.join(result.problems)}"
                for result in failed
            ))
    return Outcome(policy, ())


class PolicyReloader:
    """Polls the policy folder and reloads on change or on request (SIGHUP)."""

    def __init__(
        self,
        directory: Path,
        *,
        interval: float,
        run_tests: bool,
        install: Callable[[Policy], None],
        failed: Callable[[], None],
        fits: Callable[[Policy], str | None] | None = None,
    ) -> None:
        self.directory = directory
        self.interval = interval
        self.run_tests = run_tests
        self.fits = fits
        self._install = install
        self._failed = failed
        self._seen: str | None = None
        self._lock = asyncio.Lock()
        self._poller = Poller(interval, lambda: self.reload(force=False), log, "policy reload check failed")

    async def start(self, current: Policy | None, seen: str | None = None) -> None:
        """Remember what is in force now, and start polling (unless the interval is 0).

        `seen`: the fingerprint taken just before `current` was loaded, so that an
        edit made while it loaded is seen as a change; without it, taken now.
        """
        if seen is None:
            seen = await asyncio.get_running_loop().run_in_executor(None, fingerprint, self.directory)
        self._seen = seen
        if current is None:
            # Nothing loaded at start: the next poll must try again even if nothing changed.
            self._seen = None
        if self.interval > 0:
            self._poller.start()

    async def stop(self) -> None:
        await self._poller.stop()

    async def reload(self, *, force: bool) -> bool | None:
        """Reload if the files changed (or always, when `force`).

        Returns True when a new policy was swapped in, False when one was
        rejected, None when nothing had changed.
        """
        async with self._lock:
            loop = asyncio.get_running_loop()
            seen = await loop.run_in_executor(None, fingerprint, self.directory)
            if seen == self._seen and not force:
                return None
            self._seen = seen
            try:
                outcome = await loop.run_in_executor(None, load_checked, self.directory, self.run_tests,
                                                     self.fits)
            except Exception as exc:
                # Not a policy problem the loader knows how to report (a bug, a broken file system):
                # still a rejected reload, counted as one, and the policy in force stays.
                log.exception("policy reload failed")
                outcome = Outcome(None, (f"the policy could not be loaded: {exc!r}",))
            if outcome.policy is None:
                for problem in outcome.problems:
                    log.error("policy reload rejected: %s", problem)
                log.error("the policy in force stays; fix the files and they are read again on the next change")
                self._failed()
                return False
            self._install(outcome.policy)
            log.info("policy %s loaded from %s (%d datasets)", outcome.policy.version, self.directory,
                     len(outcome.policy.datasets))
            return True
