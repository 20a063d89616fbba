"""One access key's secret, as the storage server has it: fixed, or a mounted file that may rotate.

A secret from the environment is fixed for the process's life. One mounted as
a file (a Kubernetes Secret) is looked at again at most once a second and read
again when the file changed (`proxy.watchedfile`), so a rotated secret is used
within a second; a file that cannot be read, or no longer holds a secret,
keeps the last good one. A secret is never logged, not even in a ``repr``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from proxy.config import AccessKeyRule, access_key_secret_problem, read_secret_file
from proxy.errors import ConfigError
from proxy.watchedfile import WatchedFile


class SecretSource:
    """One access key's secret: fixed (from the environment) or a file read again when it changes."""

    def __init__(self, rule: AccessKeyRule, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._path = path = rule.secret_access_key_file
        self._file: WatchedFile[str] | None = None
        if path is None:
            if rule.secret_access_key is None:
                raise ConfigError(f"identity.access_keys: {rule.access_key_id} has no secret: set "
                                  "secret_access_key_env or secret_access_key_file")
            self._secret = rule.secret_access_key
            return

        def read(file: Path) -> str:
            try:
                secret = read_secret_file(file)
            except UnicodeDecodeError:
                secret = ""   # not text: no secret either
            if access_key_secret_problem(secret):
                raise ConfigError(f"identity.access_keys: {rule.access_key_id}: the secret file {file} "
                                  "does not hold a secret access key")
            return secret

        try:
            self._file = WatchedFile(path, read, clock=clock)
        except OSError as exc:
            raise ConfigError(f"identity.access_keys: {rule.access_key_id}: cannot read the secret file "
                              f"{path}: {exc.strerror}") from exc

    def __repr__(self) -> str:
        return f"SecretSource(file={self._path})"   # never the secret

    def current(self) -> str:
        return self._secret if self._file is None else self._file.current()
