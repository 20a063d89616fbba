"""What makes audit lines a chain: their canonical encoding, their hash, the checkpoints' MAC.

Each line carries ``prev`` (the previous line's hash) and ``hash`` (SHA-256
over the line's canonical JSON without ``hash``). Editing, removing or
reordering a line breaks the chain at that point, which `proxy.audit.verify`
reports. The writer (`proxy.audit.writer`) and the verifier compute the same
values here, so what one writes the other accepts.

Why keyed checkpoints: anyone can recompute SHA-256, so a chain alone cannot
show that lines were cut off its end, or that it was rewritten from some
point on. With a ``checkpoint_key``, every ``checkpoint_every`` lines and at
close the log gets a chained checkpoint line whose MAC (HMAC-SHA256 with
the key) covers the line, hence the hash of the line before it, hence
everything before. Someone holding the key can then tell a log that ends
with its closing checkpoint from one whose tail was cut off (or whose
writer was killed: SIGKILL leaves no closing checkpoint).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

GENESIS = "0" * 64

CHECKPOINT_INTERVAL = "interval"   # every `checkpoint_every` lines
CHECKPOINT_CLOSE = "close"         # the last line a clean shutdown writes


def _canonical_encoder() -> Callable[[dict[str, Any]], str]:
    """Sorted keys, no spaces, ASCII only.

    ASCII because any text (even a lone surrogate) then encodes, so a caller can
    never make a line unwritable, which would stop the proxy (it refuses
    everything without its log). json's C encoder is made once here:
    ``JSONEncoder.encode`` makes a new one for every call, which costs more
    than encoding the line.
    """
    encoder = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:   # Python without json's C accelerator
        return encoder.encode
    # markers=None: no circularity check (records are trees); key order sorted; allow_nan as json.
    once = make(None, encoder.default, json.encoder.encode_basestring_ascii, None, ":", ",", True, False, True)
    return lambda record: "".join(once(record, 0))


# The canonical JSON text of a record (sorted keys, no spaces, ASCII).
encode = _canonical_encoder()


def canonical(record: dict[str, Any]) -> bytes:
    return encode(record).encode()


def chain_hash(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonical(body)).hexdigest()


def checkpoint_mac(key: bytes, record: dict[str, Any]) -> str:
    """HMAC-SHA256 over the checkpoint line's canonical JSON without ``hash`` and without ``checkpoint.mac``.

    The line holds ``prev``, so the MAC vouches for the whole chain before it.
    """
    body = {k: v for k, v in record.items() if k != "hash"}
    body["checkpoint"] = {k: v for k, v in body["checkpoint"].items() if k != "mac"}
    return hmac.new(key, canonical(body), hashlib.sha256).hexdigest()
