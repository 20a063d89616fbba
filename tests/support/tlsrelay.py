"""A TLS terminator in front of a plain-HTTP server (moto), for tests of ``https://`` upstreams.

It accepts TLS on 127.0.0.1 with the certificate it is given, and pipes the
decrypted bytes to the plain port and back, on an asyncio loop of its own
thread. It records what a test asserts on: the SNI each handshake named
(`server_names`) and every byte that arrived decrypted (`received`), so that a
refused handshake can be shown to have carried nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from types import TracebackType

from tests.support.upstream_certs import ServerFiles

RECORD_BYTES = 1 << 20   # what `received` keeps at most: request heads, not whole bodies


class TlsRelay:
    """Use as a context manager; `url` is the ``https://`` URL of its listener."""

    def __init__(self, target_port: int, files: ServerFiles, host: str = "127.0.0.1") -> None:
        self._target = target_port
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(files.cert, files.key)
        self._context.sni_callback = self._sni
        self.server_names: list[str | None] = []
        self._received = bytearray()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()   # both sides of every open connection
        self.port = 0
        self.host = host

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def received(self) -> bytes:
        with self._lock:
            return bytes(self._received)

    def __enter__(self) -> TlsRelay:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _sni(self, _socket: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
        with self._lock:
            self.server_names.append(name)

    async def _start(self) -> asyncio.Server:
        return await asyncio.start_server(self._accepted, "127.0.0.1", 0, ssl=self._context,
                                          ssl_handshake_timeout=10)

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await asyncio.sleep(0)   # the aborted transports' connection_lost runs
        # Handshakes and pipes still under way end here, not as tasks destroyed with the loop.
        pending = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self._server.wait_closed()

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            target_reader, target_writer = await asyncio.open_connection("127.0.0.1", self._target)
        except OSError:
            writer.close()
            self._writers.discard(writer)
            return
        self._writers.add(target_writer)
        try:
            await asyncio.gather(self._pipe(reader, target_writer, record=True),
                                 self._pipe(target_reader, writer, record=False))
        finally:
            self._writers.difference_update((writer, target_writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, record: bool) -> None:
        try:
            while data := await reader.read(65536):
                if record:
                    with self._lock:
                        self._received += data[:max(0, RECORD_BYTES - len(self._received))]
                writer.write(data)
                await writer.drain()
        except (OSError, ssl.SSLError):
            pass
        finally:
            with contextlib.suppress(OSError, ssl.SSLError, RuntimeError):
                writer.close()
