"""`bailiwick decrypt`: one encrypted object recovered to a file or standard output, past any proxy.

    GET (storage server) -> envelope -> data key (the region's key service) -> verified plaintext -> output

A multipart upload's object (format 2) is read the same way, its layout
learnt from part 1's header (its first bytes) and its stored length.

Only plaintext of segments that authenticated is written. A file is written
under a temporary name beside it (mode 0600) and renamed into place once the
whole object has been verified, so a failure leaves no file and an existing
one untouched; to standard output, verified segments are written as they
come, and a failure ends the command with a non-zero status.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import BinaryIO

from proxy.crypto.bindings import bind, bind_parted, of_this_key, segments_of, stored_as_said
from proxy.crypto.envelope import METADATA_HEADER, Envelope, PartedEnvelope, parse_any
from proxy.crypto.parted import part_ciphers
from proxy.crypto.parts import HEADER_SIZE, PartedOpener, layout, read_part_header
from proxy.crypto.reading import SegmentOpener
from proxy.crypto.segments import Opener, SegmentCipher, segment_count
from proxy.crypto.tools.store import Storage, failure, object_target, streamed
from proxy.crypto.tools.toolbox import Toolbox, ToolError

STDOUT = "-"


async def decrypt_object(box: Toolbox, storage: Storage, bucket: str, key: str, output: str) -> int:
    """Write the plaintext of s3://`bucket`/`key` to `output` (a path, or "-"); returns the plaintext length."""
    if output == STDOUT:
        out = sys.stdout.buffer
        written = await _decrypt(box, storage, bucket, key, out)
        out.flush()
        return written
    handle, partial = _partial(output)
    try:
        with os.fdopen(handle, "wb") as file:
            written = await _decrypt(box, storage, bucket, key, file)
        os.replace(partial, output)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise
    return written


def _partial(output: str) -> tuple[int, str]:
    """A new file beside `output` (mode 0600) to write into, renamed onto it once complete."""
    path = Path(output)
    if path.is_dir():
        raise ToolError(f"cannot write {output}: it is a folder (name the file to write)")
    try:
        return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    except OSError as exc:
        raise ToolError(f"cannot write {output}: {exc.strerror or exc}") from None


async def _decrypt(box: Toolbox, storage: Storage, bucket: str, key: str, out: BinaryIO) -> int:
    where = f"s3://{bucket}/{key}"
    answer = await storage.request("GET", object_target(bucket, key))
    async with answer:
        if answer.status != 200:
            raise await failure(answer, where)
        value = answer.headers.get(METADATA_HEADER)
        if value is None:
            raise ToolError(f"{where} is not encrypted (it has no {METADATA_HEADER} metadata): read it as it is")
        envelope = parse_any(value)
        of_this_key(box.service, envelope, where)
        if isinstance(envelope, Envelope):
            stored_as_said(answer.content_length, envelope, f"{where} stored")
        located = box.locate(bucket, key)
        if located.obj is None:
            raise ToolError(f"{where} is in no dataset of the policy ({box.config.policies}), so the dataset and "
                            "region its key is bound to are not known")
        obj = located.obj
        why = box.justification("decrypt", obj)
        pieces = streamed(answer, where)
        opener: SegmentOpener
        if isinstance(envelope, PartedEnvelope):
            # A multipart upload's object: part 1's header first, which with the stored length gives the layout.
            held = b""
            while len(held) < HEADER_SIZE and (chunk := await anext(pieces, b"")):
                held += chunk
            first = read_part_header(held[:HEADER_SIZE], 1)
            shape = layout(first, answer.content_length if answer.content_length is not None else -1)
            context = bind_parted(envelope, obj)
            upload_key = await box.call(lambda: box.service.unwrap(envelope.wrapped, context, why))
            opener = PartedOpener(shape, shape.whole(), first, part_ciphers(upload_key, envelope, obj))
            written = _write(out, opener.feed_segments(held[HEADER_SIZE:]))
        else:
            context = bind(envelope, obj)
            data_key = await box.call(lambda: box.service.unwrap(envelope.wrapped, context, why))
            opener = Opener(SegmentCipher(data_key, envelope.salt, envelope.nonce_prefix,
                                          segments_of(envelope, obj)), segment_count(envelope.plaintext_length))
            written = 0
        async for chunk in pieces:
            written += _write(out, opener.feed_segments(chunk))
        return written + _write(out, [opener.finish()])


def _write(out: BinaryIO, plain: list[bytes]) -> int:
    out.writelines(plain)
    return sum(map(len, plain))
