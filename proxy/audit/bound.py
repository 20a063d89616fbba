"""How long an audit line can be: `LINE_BOUND` bytes, long text fields cut with a marker to stay under it.

Why a bound: the proxy reserves disk space for a request's audit line
before it forwards the request (`proxy.audit.reserve`), so it must know how
much a line can take. Most fields are short and fixed (times, ids, status,
decision); the long ones come from the request (the resource, the copy
source, the token's subject) or from the policy (reason, dataset, rule), and
the request limits alone bound them only loosely (a key of 8 KiB of
non-ASCII characters takes 48 KiB in an ASCII line). So a record whose
canonical text would pass `RECORD_BOUND` has its longest strings cut, each
ending with `CUT_MARKER` and the number of characters cut: a normal line
(a few hundred bytes; an S3 key is at most 1 KiB) is never touched, and an
absurd one is still recorded, findable and chained.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from proxy.audit.chain import encode

# A whole line: the record, its chain fields (prev, hash, worker) and its newline.
LINE_BOUND = 4096
# A checkpoint line (kind, count, MAC, prev, hash, time, worker: about 300 bytes).
CHECKPOINT_BOUND = 512
# What the writer adds: ,"prev":"<64>" ,"hash":"<64>" ,"worker":N and the newline, with room to spare.
RECORD_BOUND = LINE_BOUND - 256
CUT_MARKER = "[bailiwick: cut, {} more characters]"
_KEEP_AT_LEAST = 64   # bytes a cut string keeps at least, so that it stays recognisable
_MARKER_ROOM = len(CUT_MARKER) + 20   # the marker with its count

_quoted = json.encoder.encode_basestring_ascii


def bounded(record: dict[str, Any]) -> dict[str, Any]:
    """`record`, or a copy whose longest strings are cut so that its canonical text fits `RECORD_BOUND`.

    Every string longer than a common length is cut to it (the longest such length that fits), so
    that two long fields share the room rather than one losing all of it.
    """
    size = len(encode(record))
    if size <= RECORD_BOUND:
        return record
    record = copy.deepcopy(record)
    leaves = [(container, key, len(_quoted(container[key]))) for container, key in _strings(record)]
    room = RECORD_BOUND - (size - sum(length for _, _, length in leaves))   # what the strings may take

    def total(cap: int) -> int:
        return sum(length if length <= cap else cap + _MARKER_ROOM for _, _, length in leaves)

    low, high = _KEEP_AT_LEAST, max(length for _, _, length in leaves)
    while low < high:   # the longest cap that fits
        middle = (low + high + 1) // 2
        if total(middle) <= room:
            low = middle
        else:
            high = middle - 1
    for container, key, length in leaves:
        if length > low:
            value = container[key]
            kept = _prefix_within(value, low - 2)   # the quotes are counted in `length`
            container[key] = kept + CUT_MARKER.format(len(value) - len(kept))
    return record


def _strings(tree: Any) -> list[tuple[Any, Any]]:
    """(container, key) of every string value in a tree of dicts and lists."""
    found: list[tuple[Any, Any]] = []
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in items:
        if isinstance(value, str):
            found.append((tree, key))
        else:
            found.extend(_strings(value))
    return found


def _prefix_within(text: str, room: int) -> str:
    """The longest prefix of `text` whose ASCII form (without quotes) takes at most `room` bytes."""
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if len(_quoted(text[:middle])) - 2 <= room:
            low = middle
        else:
            high = middle - 1
    return text[:low]
