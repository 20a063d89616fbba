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

Loading must not hold up the requests being served meanwhile. A small policy
loads on a worker thread in milliseconds. A large one (`ISOLATE_BYTES` of
policy files and more: a multi-tenant service's 100,000 datasets are tens of
megabytes) is read, checked and tested in a child process, which hands the
loaded policy back pickled: parsing it on a thread of the serving process
would hold the interpreter's lock the serving loop needs, for seconds, and the
process's peak memory would be the parse's, not the policy's. The parent only
unpickles it (on a worker thread, the lock passed back and forth) and checks
that it `fits`. The child runs at a lower priority (`CHILD_NICENESS`): on busy
CPUs the serving process is scheduled first. While a reload works in this
process, the interpreter hands its lock over every millisecond rather than
every five (`lock_handed_often`), so the loop waits less for it each time.
Either way the new policy is moved out of the cyclic garbage collector's
sight, as the one loaded at start is (`gc.freeze`): a collection walking a
large policy's millions of objects stops the loop for as long. (What else is
alive at that moment is frozen with it: a reload is rare, and what it pins is
the garbage of one moment.) The policy replaced is freed a few datasets at a
time on a worker thread once no request uses it (`let_go`): freed at once, its
objects' deallocation would hold the lock as long.
"""

from __future__ import annotations

import asyncio
import contextlib
import copyreg
import gc
import hashlib
import io
import logging
import os
import pickle
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any

from proxy.errors import PolicyLoadError
from proxy.policy.loader import POLICY_SUFFIXES, collector_paused, load_policy
from proxy.policy.model import Dataset, Policy
from proxy.poller import Poller

log = logging.getLogger("bailiwick.reload")

TESTS_FOLDER = "tests"
TEST_SUFFIX = "_test.yaml"
# A policy file is a few KiB; the fingerprint reads no file larger than this (see `_contents`).
MAX_READ_BYTES = 4 * 1024 * 1024
# Policy files of this many bytes and more (about 1,000 datasets) are reloaded in a child process,
# which runs this much nicer than the proxy.
ISOLATE_BYTES = 256 * 1024
CHILD_NICENESS = 10


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
    failed = _test_problems(policy, directory) if run_tests else ()
    return Outcome(None, failed) if failed else Outcome(policy, ())


def _test_problems(policy: Policy, directory: Path) -> tuple[str, ...]:
    """Why `policy` fails the folder's policy tests, one line each; () when it passes them or has none."""
    if not any(p.name.endswith(TEST_SUFFIX) for p in _watched(directory)):
        return ()
    from proxy.policy.testing import run_policy_tests

    try:
        report = run_policy_tests(policy, directory)
    except PolicyLoadError as err:
        return tuple(str(issue) for issue in err.issues)
    return tuple(
        f"{result.case.location}: policy test {result.case.name!r} failed: {'; '.join(result.problems)}"
        for result in report.results if not result.passed
    )


# What the child process hands back: the policy (None: it did not load), why it did not load, and why
# it fails the folder's tests. `fits` is the parent's to check (it needs the proxy's configuration),
# and it is checked before the tests' outcome is looked at, as `load_checked` does.
_Loaded = tuple[Policy | None, tuple[str, ...], tuple[str, ...]]


def load_isolated(directory: Path, run_tests: bool, fits: Callable[[Policy], str | None] | None = None) -> Outcome:
    """`load_checked`, with the load and the tests run in a child process (blocking: run it off the loop).

    Raises `RuntimeError` when the child does not hand a result back (it died, or could not start).
    """
    root = Path(__file__).resolve().parent.parent   # the proxy package this process runs, for the child
    command = [sys.executable, "-c", _CHILD, str(root), str(directory), "1" if run_tests else "0"]
    # This interpreter running this package's own code: no input from anyone but the folder's path.
    with tempfile.TemporaryFile() as errors, subprocess.Popen(  # noqa: S603
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors,
    ) as child:
        assert isinstance(child.stdout, io.BufferedReader)
        loaded: _Loaded | None = None
        try:
            # Read as the child writes it: the pipe's reads release the lock, and the unpickling's
            # Python steps let the serving loop have it between them. Its objects, made with the
            # collector paused, are out of its sight before it runs again (see the module docstring;
            # a policy rejected after this is freed all the same: it holds no reference cycles).
            if child.stdout.peek(1):   # waits for the child to load, with the collector running
                with collector_paused(), lock_handed_often():
                    loaded = _receive(child.stdout)
                    gc.freeze()
        except (EOFError, pickle.UnpicklingError):
            loaded = None
        code = child.wait()
        if loaded is None or code != 0:
            errors.seek(0)
            said = errors.read().decode("utf-8", "replace").strip().splitlines()
            raise RuntimeError(f"the policy loader process exited with {code}" + (f": {said[-1]}" if said else ""))
    policy, load_problems, test_problems = loaded
    del loaded
    if policy is None:
        return Outcome(None, load_problems)
    problem = fits(policy) if fits is not None else None
    if problem is None and not test_problems:
        return Outcome(policy, ())
    rejected = [policy]
    del policy
    let_go(rejected)
    return Outcome(None, (problem,) if problem is not None else test_problems)


# How long a thread holds the interpreter's lock while another waits for it, during a reload's work in
# this process (Python's default is 5 ms): the serving loop waits for it once per wake-up.
RELOAD_SWITCH_SECONDS = 0.001


@contextlib.contextmanager
def lock_handed_often() -> Iterator[None]:
    """The interpreter's switch interval at most `RELOAD_SWITCH_SECONDS` meanwhile (it is process-wide)."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, RELOAD_SWITCH_SECONDS))
    try:
        yield
    finally:
        sys.setswitchinterval(before)


# A policy let go of is freed this many datasets at a time, the interpreter's lock released between;
# requests still deciding under it are waited for this long at most (then the last of them frees it).
RELEASE_DATASETS = 500
RELEASE_WAIT_SECONDS = 60.0


def let_go(held: list[Policy]) -> None:
    """Free the one policy in `held` a few datasets at a time, once nothing else uses it (blocking).

    Freeing a policy is one cascade of deallocations in C that holds the
    interpreter's lock throughout: for 100,000 datasets, long enough to hold up
    every request. Taken apart here on a worker thread, it is many short ones.
    """
    policy = held.pop()
    deadline = time.monotonic() + RELEASE_WAIT_SECONDS
    # Two references: `policy` and getrefcount's own argument. More: a request still deciding under it.
    while sys.getrefcount(policy) > 2:
        if time.monotonic() > deadline:
            return
        time.sleep(0.1)
    datasets = list(policy.datasets)
    del policy   # its tables go (quickly: their entries' datasets are still held here)
    while datasets:
        del datasets[-RELEASE_DATASETS:]
        time.sleep(0)   # the lock to whoever waits for it


# The child's program: the package root first on its path (the proxy may run from a checkout).
_CHILD = "import sys; sys.path.insert(0, sys.argv[1]); from proxy.reload import child_main; child_main(sys.argv[2:])"


def child_main(argv: Sequence[str]) -> None:
    """The child process of `load_isolated`: load DIRECTORY, run its tests if RUN_TESTS is 1, pickle to stdout."""
    directory, run_tests = Path(argv[0]), argv[1] == "1"
    # Background work: when the CPUs are busy, the serving process comes first.
    os.nice(CHILD_NICENESS)
    with os.fdopen(sys.stdout.fileno(), "wb", closefd=False) as out:
        try:
            policy = load_policy(directory)
        except PolicyLoadError as err:
            _pickler(out).dump((None, tuple(str(issue) for issue in err.issues)))
            return
        _send(out, policy, _test_problems(policy, directory) if run_tests else ())


# Datasets per pickle the child writes. One pickle of a whole large policy would be unpickled, at its end,
# by long runs of C that never let the serving loop have the interpreter's lock: building the tables of
# 100,000 entries, then dropping the unpickler's memory of a million objects. In pieces, each run is
# short, and the tables are built again by the parent's `Policy`, in Python.
SEND_DATASETS = 1000


def _send(out: IO[bytes], policy: Policy, test_problems: tuple[str, ...]) -> None:
    datasets = policy.datasets
    head = (policy.version, dict(policy.regions), policy.files, dict(policy.groups), len(datasets))
    _pickler(out).dump((head, ()))
    for start in range(0, len(datasets), SEND_DATASETS):
        _pickler(out).dump(datasets[start:start + SEND_DATASETS])
    _pickler(out).dump(test_problems)


def _receive(stream: IO[bytes]) -> _Loaded:
    """What `_send` (or a load that failed) wrote, as (policy, load problems, test problems)."""
    # A pipe to our own child, which pickled what it loaded: nothing else writes it.
    head, load_problems = pickle.load(stream)  # noqa: S301
    if head is None:
        return None, load_problems, ()
    version, regions, files, groups, count = head
    datasets: list[Dataset] = []
    while len(datasets) < count:
        datasets.extend(pickle.load(stream))  # noqa: S301
    test_problems = pickle.load(stream)  # noqa: S301
    policy = Policy(version=version, datasets=tuple(datasets), regions=MappingProxyType(regions), files=files,
                    groups=MappingProxyType(groups))
    return policy, (), test_problems


def _pickler(out: IO[bytes]) -> pickle.Pickler:
    """A pickler that also takes the read-only mappings a policy is made of (as plain dicts wrapped again)."""
    pickler = pickle.Pickler(out, protocol=pickle.HIGHEST_PROTOCOL)
    table: dict[type, Callable[[Any], Any]] = dict(copyreg.dispatch_table)
    table[MappingProxyType] = _reduce_proxy
    pickler.dispatch_table = table
    return pickler


def _reduce_proxy(proxy: MappingProxyType[Any, Any]) -> tuple[Callable[..., Any], tuple[dict[Any, Any]]]:
    # The same proxy met twice is pickled once (the pickler remembers objects), so shared stays shared.
    return read_only, (dict(proxy),)


def read_only(mapping: dict[Any, Any]) -> MappingProxyType[Any, Any]:
    """A read-only view of `mapping` (what an unpickled policy's mappings are made again with)."""
    return MappingProxyType(mapping)


def policy_bytes(directory: Path) -> int:
    """How many bytes of policy files (and their tests) `directory` holds, to choose how to reload it."""
    total = 0
    for path in _watched(directory):
        try:
            total += path.stat().st_size
        except OSError:
            continue
    return total


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
        isolate: bool | None = None,
    ) -> None:
        """`isolate`: load in a child process (True), on a worker thread (False), or by size (None)."""
        self.directory = directory
        self.isolate = isolate
        self.interval = interval
        self.run_tests = run_tests
        self.fits = fits
        self._install = install
        self._failed = failed
        self._seen: str | None = None
        self._current: Policy | None = None   # the policy in force, let go of gradually when replaced
        self._retiring: set[asyncio.Future[None]] = set()
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
        self._current = current
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
                outcome = await loop.run_in_executor(None, self._load)
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
            retired, self._current = [self._current] if self._current is not None else [], outcome.policy
            self._install(outcome.policy)
            log.info("policy %s loaded from %s (%d datasets)", outcome.policy.version, self.directory,
                     len(outcome.policy.datasets))
            if retired:
                retiring = loop.run_in_executor(None, let_go, retired)
                self._retiring.add(retiring)
                retiring.add_done_callback(self._retiring.discard)
            return True

    def _load(self) -> Outcome:
        """Load and check the folder (blocking: on a worker thread), in a child process when it is large."""
        isolate = self.isolate
        if isolate is None:
            isolate = policy_bytes(self.directory) >= ISOLATE_BYTES
        if isolate:
            return load_isolated(self.directory, self.run_tests, self.fits)
        # The load's objects are made with the collector paused and frozen before it runs again: the first
        # collection after the pause would otherwise walk all of them at once, on whichever thread.
        with collector_paused(), lock_handed_often():
            outcome = load_checked(self.directory, self.run_tests, self.fits)
            if outcome.policy is not None:
                gc.freeze()
        return outcome
