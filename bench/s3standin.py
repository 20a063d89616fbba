"""A stand-in S3 server for the encryption benchmark: PUT and GET of objects with their metadata, fast.

Why not the other stand-ins: nginx (the streaming runs' stand-in) stores a
PUT's body but not its headers, so it cannot hand an encrypted object's
envelope (`x-amz-meta-bailiwick-encryption`) back on GET; moto keeps every
body in Python memory and is the slowest part of any 256 MiB run. This
server keeps objects as files (tmpfs in the harness), their `x-amz-meta-*`
and `Content-Type` in a JSON file beside each, answers GET and HEAD with
`sendfile` (ranges included, by aiohttp), and streams a PUT's body straight
to its file. It checks that requests were re-signed by the proxy (a SigV4
`Authorization` with the proxy's access key id; the signature itself is not
verified, which would cost a hash of every byte) and that a PUT's body has
its `Content-Length`. Nothing else of S3: no listings, no multipart.

Run: ``python3 bench/s3standin.py --port N --root DIR --access-key-id ID``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import uuid
from pathlib import Path

from aiohttp import web

_META = ".meta.json"
_ERROR = '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>'


def _error(status: int, code: str, message: str) -> web.Response:
    return web.Response(status=status, text=_ERROR.format(code=code, message=message), content_type="application/xml")


class Store:
    """Objects as files under `root` (``root/BUCKET/KEY``), metadata beside each."""

    def __init__(self, root: Path, access_key_id: str) -> None:
        self.root = root.resolve()
        self.credential = f"AWS4-HMAC-SHA256 Credential={access_key_id}/"

    def path(self, request: web.Request) -> Path | None:
        path = (self.root / request.path.lstrip("/")).resolve()
        if self.root not in path.parents or path.name.endswith(_META):
            return None
        return path

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if not request.headers.get("Authorization", "").startswith(self.credential):
            return _error(403, "AccessDenied", "not signed with the proxy's key")
        path = self.path(request)
        if path is None:
            return _error(400, "InvalidURI", "no such object name")
        if request.method == "PUT":
            return await self.put(request, path)
        if request.method in ("GET", "HEAD"):
            return self.get(path)
        return _error(501, "NotImplemented", f"{request.method} is not part of the stand-in")

    async def put(self, request: web.Request, path: Path) -> web.StreamResponse:
        declared = request.content_length
        if declared is None:
            return _error(411, "MissingContentLength", "a PUT needs its Content-Length")
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        received = 0
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            while chunk := await request.content.readany():
                received += len(chunk)
                os.write(fd, chunk)   # tmpfs: a memory copy, no wait worth a thread
        finally:
            os.close(fd)
        if received != declared:
            partial.unlink()
            return _error(400, "IncompleteBody", f"received {received} of {declared} bytes")
        meta = {name: value for name, value in request.headers.items()
                if name.lower().startswith("x-amz-meta-") or name.lower() == "content-type"}
        etag = f'"{uuid.uuid4().hex}"'
        path.with_name(path.name + _META).write_text(json.dumps({"headers": meta, "etag": etag}))
        partial.replace(path)
        return web.Response(status=200, headers={"ETag": etag})

    def get(self, path: Path) -> web.StreamResponse:
        if not path.is_file():
            return _error(404, "NoSuchKey", "The specified key does not exist.")
        meta_file = path.with_name(path.name + _META)
        stored: dict[str, str] = {"ETag": '"0"'}
        if meta_file.exists():
            meta = json.loads(meta_file.read_text())
            stored = {**meta["headers"], "ETag": meta["etag"]}
        return web.FileResponse(path, headers=stored)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--access-key-id", required=True, help="the key id the proxy signs with")
    args = parser.parse_args(argv)
    store = Store(args.root, args.access_key_id)
    app = web.Application(client_max_size=0)
    app.router.add_route("*", "/{tail:.*}", store.handle)
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # pragma: no cover - uvloop is a dependency of the proxy
        pass
    # 1 MiB reads: aiohttp's 64 KiB default makes a 256 MiB PUT about half as fast.
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None, read_bufsize=2**20)


if __name__ == "__main__":
    main()
