"""The tools' requests that must succeed: whole answers read for an error, uploads aborted on any failure."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

import pytest
from multidict import CIMultiDict

from proxy.crypto.tools.store import Storage, StoreError
from proxy.crypto.tools.uploading import asked, in_parts


class _Content:
    def __init__(self, pieces: Sequence[bytes]) -> None:
        self._pieces = list(pieces)

    async def read(self, size: int) -> bytes:
        await asyncio.sleep(0)
        if not self._pieces:
            return b""
        piece = self._pieces.pop(0)
        if len(piece) > size:
            self._pieces.insert(0, piece[size:])
            piece = piece[:size]
        return piece


class _Answer:
    def __init__(self, status: int, pieces: Sequence[bytes]) -> None:
        self.status, self.content, self.headers, self.method = status, _Content(pieces), CIMultiDict[str](), "POST"
        self.reason = "OK"

    async def __aenter__(self) -> _Answer:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    def release(self) -> None:
        return None


class _Storage:
    """Answers each request with the next of `answers`; records what was asked."""

    def __init__(self, *answers: _Answer | Exception) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[str, str]] = []

    async def request(self, method: str, target: str, headers: CIMultiDict[str] | None = None,
                      body: AsyncIterator[bytes] | None = None) -> _Answer:
        self.asked.append((method, target))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def _run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


@pytest.mark.parametrize("pieces", [
    [b"<?xml version='1.0'?>\n", b" " * 40, b"\n", b"<Error><Code>InternalError</Code></Error>"],   # kept open
    [b"<Error><Code>SlowDown</Code>", b"</Error>"],
])
def test_an_error_after_a_200_is_found_however_late_it_comes(pieces: list[bytes]) -> None:
    storage = _Storage(_Answer(200, pieces))
    with pytest.raises(StoreError, match="failed"):
        _run(asked(cast(Storage, storage), "POST", "/b/k?uploadId=u", CIMultiDict(), "s3://b/k"))


def test_an_answer_longer_than_a_document_is_refused() -> None:
    storage = _Storage(_Answer(200, [b" " * (64 * 1024 + 1)]))
    with pytest.raises(StoreError, match="longer than"):
        _run(asked(cast(Storage, storage), "POST", "/b/k", CIMultiDict(), "s3://b/k"))


def test_a_failed_upload_is_aborted_and_its_own_error_kept() -> None:
    created = _Answer(200, [b"<InitiateMultipartUploadResult xmlns='http://s3.amazonaws.com/doc/2006-03-01/'>"
                            b"<UploadId>up 1</UploadId></InitiateMultipartUploadResult>"])
    storage = _Storage(created, StoreError("the abort could not be sent"))

    async def send_parts(upload: str) -> list[str]:
        assert upload == "up 1"
        raise StoreError("part 2 broke off")

    with pytest.raises(StoreError, match="part 2 broke off"):
        _run(in_parts(cast(Storage, storage), "b", "k", CIMultiDict(), send_parts))
    assert storage.asked[-1] == ("DELETE", "/b/k?uploadId=up%201")
