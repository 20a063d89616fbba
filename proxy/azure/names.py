"""The rules a storage account, a container and a blob name must meet before the policy sees them.

Policies name Azure data as ``azure://ACCOUNT/CONTAINER[/BLOB-PREFIX]``, so a
name that Azure could resolve to something other than its literal text would
let a request reach data the policy never judged. Account and container names
have strict character sets (Azure's own rules), so a valid one reads one way
only. Blob names may hold almost anything; they are held to the S3 key rules
(`proxy.storage.keys.check_key`: no control characters, backslashes, dot or
empty segments, double encoding) and, because Azure advises against and may
trim them, to no segment that ends in ``.`` and no trailing ``/``.

One set of rules serves the path, the Host, the copy source and the listing
filter alike.
"""

from __future__ import annotations

import re

from proxy.errors import BadRequest
from proxy.storage.keys import check_key
from proxy.storage.uri import INVALID_URI

# 3 to 24 lower-case letters and digits (the same rule as proxy.policy.patterns).
ACCOUNT = re.compile(r"[a-z0-9]{3,24}")
# 3 to 63 lower-case letters, digits and single hyphens between them.
_CONTAINER = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")
# Containers Azure creates itself; `$root` also holds blobs addressed without a container.
SPECIAL_CONTAINERS = frozenset({"$root", "$logs", "$web", "$blobchangefeed"})
# A container name as it may appear in a List Containers answer (system containers included).
LISTED_CONTAINER = re.compile(r"\$?[a-z0-9](?:[a-z0-9-]{0,62})")


# Escapes of "/", ".", "\\" and NUL in a raw path: no Azure client sends them (the SDKs leave "/" and
# "." as they are), and a server or intermediary that decodes them before splitting the path would
# see other segments, or other names, than the proxy judged.
_AMBIGUOUS_ESCAPE = re.compile(r"%(?:2f|2e|5c|00)", re.IGNORECASE)


def check_raw_path(raw: str, where: str = "the path", *, code: str = INVALID_URI) -> None:
    """Refuse a raw (still encoded) path with an escaped "/", ".", backslash or NUL."""
    if "%" in raw:
        found = _AMBIGUOUS_ESCAPE.search(raw)
        if found is not None:
            raise BadRequest(f"{where} contains {found.group()!r}: an encoded '/', '.', '\\' or NUL is ambiguous",
                             code=code)


def account_problem(name: str) -> str | None:
    """Why `name` is not a storage account name, or None."""
    if ACCOUNT.fullmatch(name):
        return None
    return "storage account names are 3 to 24 lower-case letters and digits"


def check_account(name: str, where: str = "the path", *, code: str = INVALID_URI) -> None:
    """Refuse (`BadRequest`) a storage account name that is not valid."""
    reason = account_problem(name)
    if reason:
        raise BadRequest(f"{reason}: {name!r} (from {where})", code=code, resource=name)


def check_container(name: str, where: str = "the path", *, code: str = INVALID_URI) -> None:
    """Refuse (`BadRequest`) a container name that is not valid."""
    if name in SPECIAL_CONTAINERS or _CONTAINER.fullmatch(name):
        return
    raise BadRequest(
        "container names are 3 to 63 lower-case letters, digits and single hyphens, starting and ending "
        f"with a letter or digit: {name!r} (from {where})",
        code=code, resource=name,
    )


def check_blob(name: str, what: str = "the blob name", *, code: str = INVALID_URI) -> None:
    """Refuse a decoded blob name that Azure could read as another name (see the module docstring)."""
    if not name:
        raise BadRequest(f"{what} is empty", code=code)
    check_key(name, what, code=code)
    if name.endswith("/"):
        raise BadRequest(f"{what} ends in '/', which Azure may drop", code=code)
    if name.endswith(".") or "./" in name:
        raise BadRequest(f"{what} has a segment that ends in '.', which Azure may drop", code=code)


def check_prefix(prefix: str, what: str = "the prefix query parameter") -> None:
    """Refuse a listing prefix a server could read as another one (the rules of a key; "" is fine)."""
    if prefix:
        check_key(prefix, what)
