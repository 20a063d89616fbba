"""Recovery and migration tools for encrypted datasets: no data is held hostage by the proxy.

Three commands, each run beside a proxy of the region with that proxy's own
configuration file (its storage server, credentials, policy and key service):

- `decrypt` (`proxy.crypto.tools.decrypt`): one encrypted object recovered
  to a file or standard output, verified segment by segment;
- `encrypt` (`proxy.crypto.tools.encrypt`): the plaintext objects of this
  region's encrypted (or migrating) datasets encrypted in place;
- `rewrap` (`proxy.crypto.tools.rewrap`): data keys wrapped again under the
  key-encryption key's latest version, bodies untouched.

`proxy.cli` parses the flags and calls `run_decrypt`, `run_encrypt` or
`run_rewrap`, which return the exit status: 0 done, 1 something failed (said
in one plain line on standard error; a batch can be run again to continue).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TextIO

from proxy.config import Config
from proxy.crypto.tools.store import Storage, StoreError
from proxy.crypto.tools.toolbox import OPERATOR, Toolbox, ToolError, parse_location
from proxy.errors import RequestRefused

__all__ = ["OPERATOR", "run_decrypt", "run_encrypt", "run_rewrap"]


def run_decrypt(config: Config, location: str, output: str, *, jurisdiction: str = OPERATOR,
                err: TextIO | None = None) -> int:
    from proxy.crypto.tools.decrypt import decrypt_object

    async def work(box: Toolbox, storage: Storage, bucket: str, key: str) -> int:
        await decrypt_object(box, storage, bucket, key, output)
        return 0

    return _run(config, location, True, jurisdiction, err, work, output)


def run_encrypt(config: Config, location: str, *, dry_run: bool = False, jurisdiction: str = OPERATOR,
                err: TextIO | None = None) -> int:
    from proxy.crypto.tools.encrypt import encrypt_objects

    return _run(config, location, False, jurisdiction, err,
                lambda box, storage, bucket, prefix: encrypt_objects(box, storage, bucket, prefix, dry_run=dry_run))


def run_rewrap(config: Config, location: str, *, dry_run: bool = False, err: TextIO | None = None) -> int:
    from proxy.crypto.tools.rewrap import rewrap_objects

    return _run(config, location, False, OPERATOR, err,
                lambda box, storage, bucket, prefix: rewrap_objects(box, storage, bucket, prefix, dry_run=dry_run))


def _run(config: Config, location: str, whole_key: bool, jurisdiction: str, err: TextIO | None,
         work: Callable[[Toolbox, Storage, str, str], Awaitable[int]], output: str | None = None) -> int:
    """Run `work` on the location with the configuration's toolbox and storage: 0 done, 1 failed (one plain
    line on `err`), 2 a location that is not one. `ConfigError` and `PolicyLoadError` are left to the caller
    (`proxy.cli` prints them)."""
    stream = err or sys.stderr
    try:
        bucket, key = parse_location(location, whole_key=whole_key)
    except ToolError as exc:
        print(f"bailiwick: {exc.message}", file=stream)
        return 2
    box = Toolbox.open(config, jurisdiction, stream)

    async def main() -> int:
        async with Storage(config) as storage:
            return await work(box, storage, bucket, key)

    try:
        return asyncio.run(main())
    except (ToolError, StoreError, RequestRefused) as exc:
        print(f"bailiwick: {exc.message}", file=stream)
    except OSError as exc:   # the output: a folder that is not there, a full disk, a closed pipe
        target = exc.filename or output or "the output"
        print(f"bailiwick: cannot write {target}: {exc.strerror or exc}", file=stream)
    finally:
        box.close()
    return 1
