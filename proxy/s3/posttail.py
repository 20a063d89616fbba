"""The rest of a POST Object body after the file's first byte: passed through, but only as one file and the end.

S3 ignores fields after the file; other storage servers read them (moto takes
a ``key`` from anywhere in the form), so a part after the file could name what
the proxy never judged. `FileTail` sees the file's bytes go by, unchanged, and
holds back only what could be the start of the closing boundary, so the
storage server never receives a whole body the proxy would refuse: when the
file's boundary is followed by anything but the form's end (``--``, then at
most a CRLF), or when the boundary appears in the file after a bare LF or
CR (a delimiter to werkzeug, which moto runs, and to others), it raises
`FormRefused` before those bytes are released, and the caller cuts the
upstream request short (an incomplete body stores nothing). A file that
begins with the boundary is empty: the blank line's CRLF is its delimiter's.
"""

from __future__ import annotations

from proxy.s3.postform import INVALID_ARGUMENT_CODE, NOT_READ_CODE, FormRefused

_END = b"--\r\n"   # what may follow the last boundary: "--" and, as browsers write it, a CRLF


class FileTail:
    """Watches the body from the file's first byte; `feed` gives back what may be forwarded now."""

    def __init__(self, boundary: bytes) -> None:
        self._delimiter = b"\r\n--" + boundary
        self._dash = self._delimiter[2:]
        # Bytes not yet released: a possible start of the delimiter, or it and what follows it. It begins with the
        # CRLF that ended the file part's blank line, already forwarded with the fields: for an empty file it is
        # the delimiter's own (a file "beginning" with the boundary is no file, and parts after it).
        self._held = b"\r\n"
        self._sent = 2          # how many bytes at the start of `_held` were already forwarded
        self._closing = False   # the delimiter has been seen; `_held` is it and what followed

    def feed(self, data: bytes) -> bytes:
        """The bytes of `data` (and of earlier calls) that may be forwarded; raises `FormRefused`."""
        held = self._held + data
        if not self._closing:
            at = held.find(self._dash)
            if at < 0:
                # Keep what could be the delimiter's beginning, cut by the chunk's end.
                return self._release(held, max(len(held) - (len(self._delimiter) - 1), 0))
            if at < 2 or held[at - 2:at] != b"\r\n":
                # After a bare LF or CR it is a delimiter to werkzeug (moto), Go and others: parts after the file.
                raise FormRefused("the form's boundary inside the file, or after a line end other than CRLF, which"
                                  " servers read differently", code=NOT_READ_CODE)
            self._closing = True
            out = self._release(held, at - 2)
            held = self._held
        else:
            out = b""
        after = held[len(self._delimiter):]
        if not _END.startswith(after[: len(_END)]) or len(after) > len(_END):
            raise FormRefused("the file must be the form's last part, and its only file", code=INVALID_ARGUMENT_CODE)
        self._held = held
        return out

    def _release(self, held: bytes, upto: int) -> bytes:
        """`held` up to `upto`, less what was already forwarded; the rest is held."""
        out = held[self._sent:upto]
        self._held, self._sent = held[upto:], max(self._sent - upto, 0)
        return out

    def finish(self) -> bytes:
        """The held bytes, once the body has ended; raises `FormRefused` unless the form ended as it must."""
        after = self._held[len(self._delimiter):] if self._closing else None
        if after not in (b"--", _END):
            raise FormRefused("the form ended without its closing boundary after the file")
        held, self._held = self._held[self._sent:], b""
        return held
