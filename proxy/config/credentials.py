"""What a secret must look like, and reading one that is mounted as a file.

Used when the configuration is read and again whenever a mounted secret
changes (`proxy.identity.accesskeys`), so both accept exactly the same secrets.
"""

from __future__ import annotations

import re
from pathlib import Path

# HMAC keys from the environment (token secrets, the tag key, the audit checkpoint key).
MIN_HMAC_SECRET_BYTES = 32
# S3 secret access keys: AWS's are 40 characters, MinIO's at least 8.
MIN_ACCESS_KEY_SECRET_CHARS = 8

# An access key id as the proxy accepts it in a signature: no separator of the SigV4 and SigV2 syntaxes.
ACCESS_KEY_ID = re.compile(r"[!-+\--.0-9<>-~]{1,128}")


def read_secret_file(path: Path) -> str:
    """A secret mounted as a file (a Kubernetes Secret key): its text, without the final line break."""
    return path.read_text(encoding="utf-8").removesuffix("\n").removesuffix("\r")


def access_key_secret_problem(secret: str) -> str | None:
    """What is wrong with a secret access key, worded to follow its source's name; None if usable."""
    if not secret:
        return "is not set or empty"
    if len(secret) < MIN_ACCESS_KEY_SECRET_CHARS or not secret.isascii() or not secret.isprintable() \
            or secret != secret.strip():
        return (f"does not hold a secret access key (at least {MIN_ACCESS_KEY_SECRET_CHARS} visible ASCII "
                "characters, nothing else)")
    return None
