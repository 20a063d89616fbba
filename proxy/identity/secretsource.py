"""One access key's secret, as the storage server has it: fixed, or a mounted file that may rotate.

A secret from the environment is fixed for the process's life. One mounted as
a file (a Kubernetes Secret) is looked at again at most once a second and read
again when the file changed, so a rotated secret is used within a second; a
file that cannot be read, or no longer holds a secret, keeps the last good
one, since a Secret being swapped is briefly neither. A secret is never
logged, not even in a ``repr``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from proxy.config import AccessKeyRule, access_key_secret_problem, read_secret_file
from proxy.errors import ConfigError

# A mounted secret file is looked at again at most this often.
_FILE_CHECK_SECONDS = 1.0


class SecretSource:
    """One access key's secret: fixed (from the environment) or a file read again when it changes."""

    def __init__(self, rule: AccessKeyRule, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._path = rule.secret_access_key_file
        self._clock = clock
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._checked = 0.0
        if self._path is None:
            if rule.secret_access_key is None:
                raise ConfigError(f"identity.access_keys: {rule.access_key_id} has no secret: set "
                                  "secret_access_key_env or secret_access_key_file")
            self._secret = rule.secret_access_key
        else:
            try:
                self._secret, self._stamp = self._read(self._path)
            except OSError as exc:
                raise ConfigError(f"identity.access_keys: {rule.access_key_id}: cannot read the secret file "
                                  f"{self._path}: {exc.strerror}") from exc
            if access_key_secret_problem(self._secret):
                raise ConfigError(f"identity.access_keys: {rule.access_key_id}: the secret file {self._path} "
                                  "does not hold a secret access key")
            self._checked = clock()

    def __repr__(self) -> str:
        return f"SecretSource(file={self._path})"   # never the secret

    @staticmethod
    def _read(path: Path) -> tuple[str, tuple[int, int, int]]:
        info = path.stat()   # follows the ..data symlink Kubernetes swaps on rotation
        return read_secret_file(path), (info.st_ino, info.st_mtime_ns, info.st_size)

    def current(self) -> str:
        path = self._path
        if path is None:
            return self._secret
        now = self._clock()
        if now - self._checked < _FILE_CHECK_SECONDS:
            return self._secret
        with self._lock:
            self._checked = now
            try:
                info = path.stat()
                if (info.st_ino, info.st_mtime_ns, info.st_size) != self._stamp:
                    secret, stamp = self._read(path)
                    if access_key_secret_problem(secret) is None:
                        self._secret, self._stamp = secret, stamp
            except OSError:
                pass   # a Secret being swapped: keep the last good one
        return self._secret
