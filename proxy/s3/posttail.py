"""The rest of a POST Object body after the file's first byte: passed through, but only as one file and the end.

S3 ignores fields after the file; other storage servers read them (moto takes
a ``key`` from anywhere in the form), so a part after the file could name what
the proxy never judged. `FileTail` sees the file's bytes go by, unchanged, and
holds back only what could be the start of the closing boundary, so the
storage server never receives a whole body the proxy would refuse: when the
file's boundary is followed by anything but the form's end (``--``, then at
most a CRLF), it raises `FormRefused` before those bytes are released, and the
caller cuts the upstream request short (an incomplete body stores nothing).
"""

from __future__ import annotations

from proxy.s3.postform import INVALID_ARGUMENT_CODE, FormRefused

_END = b"--\r\n"   # what may follow the last boundary: "--" and, as browsers write it, a CRLF


class FileTail:
    """Watches the body from the file's first byte; `feed` gives back what may be forwarded now."""

    def __init__(self, boundary: bytes) -> None:
        self._delimiter = b"\r\n--" + boundary
        self._held = b""        # bytes not yet released: a possible start of the delimiter, or what follows it
        self._closing = False   # the delimiter has been seen; `_held` is it and what followed

    def feed(self, data: bytes) -> bytes:
        """The bytes of `data` (and of earlier calls) that may be forwarded; raises `FormRefused`."""
        held = self._held + data
        if not self._closing:
            at = held.find(self._delimiter)
            if at < 0:
                # Keep what could be the delimiter's beginning, cut by the chunk's end.
                keep = len(self._delimiter) - 1
                self._held = held[-keep:] if len(held) > keep else held
                return held[: len(held) - len(self._held)]
            self._closing = True
            out, held = held[:at], held[at:]
        else:
            out = b""
        after = held[len(self._delimiter):]
        if not _END.startswith(after[: len(_END)]) or len(after) > len(_END):
            raise FormRefused("the file must be the form's last part, and its only file", code=INVALID_ARGUMENT_CODE)
        self._held = held
        return out

    def finish(self) -> bytes:
        """The held bytes, once the body has ended; raises `FormRefused` unless the form ended as it must."""
        after = self._held[len(self._delimiter):] if self._closing else None
        if after not in (b"--", _END):
            raise FormRefused("the form ended without its closing boundary after the file")
        held, self._held = self._held, b""
        return held
