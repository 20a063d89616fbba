"""The rules an object key (S3) or blob name (Azure) must meet before the policy sees it.

Policies name data by a key prefix, so a key that a storage server could
resolve to something other than its literal text (``..`` that a file-system
backed store normalises, a backslash that some servers read as "/", an escape
left over for a second decoding) would let a request reach data under a name
the policy never judged. Such keys are refused here, in one place, for the
path, the copy source, a listing's prefix and S3's multi-object delete body
alike; Azure adds its own rules for blob names on top (`proxy.azure.names`).

The check runs on every request: a few cheap tests first find the everyday
key that has nothing to refuse, and only otherwise are the rules applied one
by one (`key_rules`) to find the first one broken and say which.
"""

from __future__ import annotations

from proxy.errors import BadRequest
from proxy.storage.uri import CONTROL, DOUBLE_ENCODED, INVALID_URI, describe

MAX_KEY_BYTES = 1024
# S3's code for a key over MAX_KEY_BYTES, whatever `code` the caller gives for the other rules (a limit S3 itself
# enforces, so its own code; the Azure API says OutOfRangeInput, `proxy.azure.errors.CODES`).
KEY_TOO_LONG_CODE = "KeyTooLongError"
# A key this many characters long or shorter is at most MAX_KEY_BYTES in UTF-8 (4 bytes a character at most).
_SHORT_KEY_CHARS = MAX_KEY_BYTES // 4


def check_key(key: str, what: str = "the object key", *, code: str = INVALID_URI) -> None:
    """Refuse a decoded key (or listing prefix) that a server could resolve to another name.

    Refused: more than 1024 UTF-8 bytes (with `KEY_TOO_LONG_CODE`, S3's own;
    every other rule refuses with `code`), control characters, a backslash, a
    leftover escape of ".", "/" or "\\" (double encoding), "." or ".." as a
    segment, and empty segments ("//", a leading "/"). A trailing "/" is
    allowed: "folder/" keys and prefixes are everyday S3.
    """
    if (
        (len(key) <= _SHORT_KEY_CHARS or len(key.encode("utf-8", "surrogatepass")) <= MAX_KEY_BYTES)
        # Every character CONTROL matches is non-printable, so a printable key has none.
        and key.isprintable()
        and "\\" not in key
        and ("%" not in key or DOUBLE_ENCODED.search(key) is None)
        # A dot segment begins the key or follows a "/"; an empty segment that is not the
        # last one is a leading "/" or a "//". With none of those there is nothing to find.
        and not key.startswith(("/", "."))
        and "//" not in key
        and "/." not in key
    ):
        return
    key_rules(key, what, code=code)


def key_rules(key: str, what: str = "the object key", *, code: str = INVALID_URI) -> None:
    """The rule-by-rule reading behind `check_key`'s quick test: refuse with the first rule broken."""
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise BadRequest(f"{what} is longer than {MAX_KEY_BYTES} bytes", code=KEY_TOO_LONG_CODE)
    bad = CONTROL.search(key)
    if bad:
        raise BadRequest(f"{what} contains a control character ({describe(bad.group())})", code=code)
    if "\\" in key:
        raise BadRequest(f"{what} contains a backslash", code=code)
    if DOUBLE_ENCODED.search(key):
        raise BadRequest(f"{what} contains a double-encoded '.', '/' or '\\'", code=code)
    segments = key.split("/")
    last = len(segments) - 1
    for index, segment in enumerate(segments):
        if segment in (".", ".."):
            raise BadRequest(f"{what} contains a dot segment ({segment!r})", code=code)
        if not segment and index != last:
            raise BadRequest(f"{what} contains an empty segment", code=code)
