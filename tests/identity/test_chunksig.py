"""The aws-chunked body verifier: AWS's worked examples, botocore's bodies, strict framing, any split.

The vectors come from AWS's "Signature Calculations for the Authorization Header: Transferring
Payload in Multiple Chunks (Chunked Upload)" and "Signature calculations for trailing headers"
pages: a 66560-byte object of 'a', sent in chunks of 64 KiB and 1 KiB, signed on 2013-05-24 with
the documentation's example key.
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import os
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum, Sha1Checksum, Sha256Checksum
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.errors import BadRequest, RequestRefused, Unauthenticated
from proxy.identity.chunksig import CONTENT_SHA256_MODES, ChunkMode, ChunkVerifier
from proxy.identity.sigv4hmac import chunk_signature, signing_key, trailer_signature

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
DATE = "20130524T000000Z"
SCOPE = "20130524/us-east-1/s3/aws4_request"
KEY = signing_key(SECRET, "20130524", "us-east-1")
DATA = b"a" * 66560
SIZES = (65536, 1024)

# STREAMING-AWS4-HMAC-SHA256-PAYLOAD: the seed signature and the three chunk signatures AWS publishes.
AWS_SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
AWS_CHUNKS = (
    "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
    "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
    "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
)
# STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER with x-amz-checksum-crc32c: the same object.
AWS_TRAILER_SEED = "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e"
AWS_TRAILER_CHUNKS = (
    "b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2",
    "1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7",
    "2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992",
)
AWS_CRC32C = "sOO8/Q=="
AWS_TRAILER_SIGNATURE = "d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435"


def aws_body() -> list[bytes]:
    """AWS's signed example, as the wire pieces the verifier releases one by one."""
    return [
        f"10000;chunk-signature={AWS_CHUNKS[0]}\r\n".encode() + DATA[:65536] + b"\r\n",
        f"400;chunk-signature={AWS_CHUNKS[1]}\r\n".encode() + DATA[65536:] + b"\r\n",
        f"0;chunk-signature={AWS_CHUNKS[2]}\r\n\r\n".encode(),
    ]


def aws_trailer_body() -> list[bytes]:
    return [
        f"10000;chunk-signature={AWS_TRAILER_CHUNKS[0]}\r\n".encode() + DATA[:65536] + b"\r\n",
        f"400;chunk-signature={AWS_TRAILER_CHUNKS[1]}\r\n".encode() + DATA[65536:] + b"\r\n",
        f"0;chunk-signature={AWS_TRAILER_CHUNKS[2]}\r\n".encode()
        + f"x-amz-checksum-crc32c:{AWS_CRC32C}\r\n".encode()
        + f"x-amz-trailer-signature:{AWS_TRAILER_SIGNATURE}\r\n\r\n".encode(),
    ]


def verifier(seed: str = AWS_SEED, *, decoded_length: int | None = len(DATA),
             mode: ChunkMode | str = ChunkMode.SIGNED, **options: object) -> ChunkVerifier:
    """A verifier for the tests' bodies, whose chunks are small: no minimum chunk size unless asked for."""
    options.setdefault("min_chunk_bytes", 1)
    return ChunkVerifier(KEY, DATE, SCOPE, seed, decoded_length=decoded_length, mode=mode, **options)  # type: ignore[arg-type]


def aws_verifier(seed: str = AWS_SEED, mode: ChunkMode = ChunkMode.SIGNED, trailer: str | None = None) -> ChunkVerifier:
    """A verifier with every default, as the proxy makes it."""
    return ChunkVerifier(KEY, DATE, SCOPE, seed, decoded_length=len(DATA), mode=mode, trailer=trailer)


def test_the_signing_key_and_seed_signature_are_botocores() -> None:
    """The caller's side of the example: botocore's own signer gives AWS's seed signature with this key."""
    request = AWSRequest(
        method="PUT", url="https://s3.amazonaws.com/examplebucket/chunkObject.txt",
        headers={
            "x-amz-date": DATE, "x-amz-storage-class": "REDUCED_REDUNDANCY",
            "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "Content-Encoding": "aws-chunked",
            "x-amz-decoded-content-length": "66560", "Content-Length": "66824",
        },
    )
    request.context["timestamp"] = DATE
    auth = S3SigV4Auth(Credentials("AKIAIOSFODNN7EXAMPLE", SECRET), "s3", "us-east-1")
    assert auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request) == AWS_SEED
    key = ("AWS4" + SECRET).encode()
    for part in ("20130524", "us-east-1", "s3", "aws4_request"):
        key = auth._sign(key, part)
    assert key == KEY
    assert CONTENT_SHA256_MODES["STREAMING-AWS4-HMAC-SHA256-PAYLOAD"] is ChunkMode.SIGNED


def test_aws_example_verifies_chunk_by_chunk() -> None:
    pieces = aws_body()
    assert len(b"".join(pieces)) == 66824   # the example's Content-Length
    check = aws_verifier()
    for piece in pieces:
        assert check.feed(piece) == piece   # each chunk released as soon as it has verified
    check.finish()
    assert check.complete
    assert check.decoded_bytes == len(DATA)


def test_aws_trailer_example_verifies() -> None:
    pieces = aws_trailer_body()
    assert len(b"".join(pieces)) == 66946
    check = aws_verifier(AWS_TRAILER_SEED, ChunkMode.SIGNED_TRAILER, "x-amz-checksum-crc32c")
    released = [check.feed(piece) for piece in pieces]
    check.finish()
    assert released == pieces


def test_aws_trailer_example_verifies_without_the_announced_name() -> None:
    check = aws_verifier(AWS_TRAILER_SEED, ChunkMode.SIGNED_TRAILER)
    assert check.feed(b"".join(aws_trailer_body())) == b"".join(aws_trailer_body())
    check.finish()


# --- an encoder of our own, written from AWS's description of the framing ---
# The signatures it writes are the module's `chunk_signature` and `trailer_signature`, which
# tests/identity/test_sigv4hmac.py holds to AWS's published values (an independent oracle); the
# checksums are botocore's, as a client computes them. What the tests below check is the
# verifier's reading of the framing, which the encoder writes on its own.

_BOTOCORE_CHECKSUMS: dict[str, type[Crc32Checksum | Sha1Checksum | Sha256Checksum]] = {
    "x-amz-checksum-crc32": Crc32Checksum,
    "x-amz-checksum-sha1": Sha1Checksum,
    "x-amz-checksum-sha256": Sha256Checksum,
}


def _checksum(name: str, data: bytes) -> str:
    """The trailer value a client sends; a zero CRC32C/CRC64NVME (not checked by the verifier)."""
    checksum_cls = _BOTOCORE_CHECKSUMS.get(name)
    if checksum_cls is None:
        return base64.b64encode(b"\x00" * (8 if name.endswith("crc64nvme") else 4)).decode()
    checksum = checksum_cls()
    checksum.update(data)
    return str(checksum.b64digest())


def encode(chunks: list[bytes], *, mode: ChunkMode = ChunkMode.SIGNED, seed: str = AWS_SEED,
           trailer: str | None = None, key: bytes = KEY, checksum: str | None = None) -> list[bytes]:
    """An aws-chunked body as its release units: one piece per data chunk, then the end (final chunk + trailer)."""
    pieces = []
    previous = seed
    for chunk in [*chunks, b""]:
        if mode is ChunkMode.UNSIGNED_TRAILER:
            line = f"{len(chunk):x}\r\n"
        else:
            previous = chunk_signature(key, DATE, SCOPE, previous, hashlib.sha256(chunk).hexdigest())
            line = f"{len(chunk):x};chunk-signature={previous}\r\n"
        pieces.append(line.encode() + chunk + (b"\r\n" if chunk else b""))
    end = pieces[-1]
    if mode is not ChunkMode.SIGNED:
        name = trailer or "x-amz-checksum-crc32"
        value = checksum if checksum is not None else _checksum(name, b"".join(chunks))
        end += f"{name}:{value}\r\n".encode()
        if mode is ChunkMode.SIGNED_TRAILER:
            signature = trailer_signature(key, DATE, SCOPE, previous, f"{name}:{value}\n".encode())
            end += f"x-amz-trailer-signature:{signature}\r\n".encode()
    pieces[-1] = end + b"\r\n"
    return pieces


def run(check: ChunkVerifier, wire: bytes, step: int | None = None) -> tuple[bytes, RequestRefused | None]:
    """Feeds `wire` (whole, or `step` bytes at a time) then finishes; returns what was released and the error."""
    released = bytearray()
    try:
        for start in range(0, len(wire), step or max(1, len(wire))):
            released += check.feed(wire[start:start + (step or len(wire))])
        check.finish()
    except RequestRefused as error:
        return bytes(released), error
    return bytes(released), None


def feed_pieces(check: ChunkVerifier, pieces: list[bytes]) -> tuple[list[bytes], RequestRefused | None]:
    """Feeds each piece in turn, then finishes; returns what each feed released and the error."""
    released: list[bytes] = []
    try:
        for piece in pieces:
            released.append(check.feed(piece))
        check.finish()
    except RequestRefused as error:
        return released, error
    return released, None


HELLO = [b"0123456789", b"abcdefghijklmnopqrstuvwxyz"]   # sizes a and 1a in hex
HELLO_LENGTH = 36


def test_our_encoder_reproduces_aws_examples() -> None:
    assert encode([DATA[:65536], DATA[65536:]]) == aws_body()
    assert encode([DATA[:65536], DATA[65536:]], mode=ChunkMode.SIGNED_TRAILER, seed=AWS_TRAILER_SEED,
                  trailer="x-amz-checksum-crc32c", checksum=AWS_CRC32C) == aws_trailer_body()


# --- malformed bodies: every one refused, with the right status and code, however it is fed ---

def _replace(old: bytes, new: bytes, count: int = 1) -> Callable[[bytes], bytes]:
    def edit(wire: bytes) -> bytes:
        assert old in wire, old
        return wire.replace(old, new, count)
    return edit


def _signature_of(index: int) -> bytes:
    return encode(HELLO)[index].split(b"=", 1)[1][:64]


@dataclass(frozen=True)
class Case:
    name: str
    edit: Callable[[bytes], bytes]
    code: str
    status: int = 400
    options: tuple[tuple[str, object], ...] = ()
    after_end: bool = False   # the body was whole before the bad bytes: released, but finish() never succeeds


INVALID, INCOMPLETE, MISMATCH = "InvalidRequest", "IncompleteBody", "SignatureDoesNotMatch"
SIGNED_CASES = [
    Case("upper-case hex size", _replace(b"1a;", b"1A;"), INVALID),
    Case("leading zero in size", _replace(b"a;chunk", b"0a;chunk"), INVALID),
    Case("0x prefix", _replace(b"a;chunk", b"0xa;chunk"), INVALID),
    Case("negative size", _replace(b"a;chunk", b"-a;chunk"), INVALID),
    Case("size over 8 hex digits", _replace(b"a;chunk", b"10000000a;chunk"), INVALID),
    Case("space before the extension", _replace(b"a;chunk", b"a ;chunk"), INVALID),
    Case("space after the semicolon", _replace(b"a;chunk", b"a; chunk"), INVALID),
    Case("space around =", _replace(b"a;chunk-signature=", b"a;chunk-signature = "), INVALID),
    Case("tab before CRLF", lambda w: w.replace(b"\r\n", b"\t\r\n", 1), INVALID),
    Case("LF without CR after size line", lambda w: w.replace(b"\r\n", b"\n", 1), INVALID),
    Case("CR without LF after size line", lambda w: w.replace(b"\r\n", b"\r", 1), INVALID),
    Case("LF without CR after data", _replace(b"789\r\n", b"789\n"), INVALID),
    Case("no CRLF after data", _replace(b"789\r\n", b"789"), INVALID),
    Case("missing chunk-signature", lambda w: w.replace(b";chunk-signature=" + _signature_of(0), b"", 1), INVALID),
    Case("repeated chunk-signature",
         lambda w: w.replace(b"=" + _signature_of(0), b"=" + _signature_of(0) + b";chunk-signature="
                             + _signature_of(0), 1), INVALID),
    Case("another extension after", lambda w: w.replace(_signature_of(0), _signature_of(0) + b";x=y", 1), INVALID),
    Case("another extension before", _replace(b"a;chunk", b"a;x=y;chunk"), INVALID),
    Case("quoted signature", lambda w: w.replace(_signature_of(0), b'"' + _signature_of(0) + b'"', 1), INVALID),
    Case("upper-case signature", lambda w: w.replace(_signature_of(0), _signature_of(0).upper(), 1), INVALID),
    Case("short signature", lambda w: w.replace(_signature_of(0), _signature_of(0)[:63], 1), INVALID),
    Case("extension name in capitals", _replace(b"a;chunk-signature", b"a;Chunk-Signature"), INVALID),
    Case("size smaller than data", _replace(b"1a;chunk", b"19;chunk"), INVALID),
    Case("size larger than data", _replace(b"1a;chunk", b"1b;chunk"), INVALID, options=(("decoded_length", None),)),
    Case("oversize chunk", lambda w: w, INVALID, options=(("max_chunk_bytes", 16),)),
    Case("data after the final chunk", lambda w: w + b"x", INVALID, after_end=True),
    Case("a chunk after the final chunk", lambda w: w + encode(HELLO)[0], INVALID, after_end=True),
    Case("trailer on a plain signed body", lambda w: w[:-2] + b"x-amz-checksum-crc32:AAAAAA==\r\n\r\n", INVALID),
    Case("no final chunk", lambda w: w[: -len(encode(HELLO)[-1])], INCOMPLETE),
    Case("final chunk without its CRLF", lambda w: w[:-2], INCOMPLETE),
    Case("cut inside data", lambda w: w[:30], INCOMPLETE),
    Case("empty body", lambda w: b"", INCOMPLETE),
    Case("more data than announced", lambda w: w, INCOMPLETE, options=(("decoded_length", HELLO_LENGTH - 1),)),
    Case("less data than announced", lambda w: w, INCOMPLETE, options=(("decoded_length", HELLO_LENGTH + 1),)),
    Case("a data byte changed", _replace(b"klm", b"kLm"), MISMATCH, 403),
    Case("signature of another chunk", lambda w: w.replace(_signature_of(0), _signature_of(1), 1), MISMATCH, 403),
    Case("chunks swapped", lambda w: b"".join([encode(HELLO)[1], encode(HELLO)[0], encode(HELLO)[2]]),
         MISMATCH, 403),
    Case("final chunk signature wrong", lambda w: w.replace(_signature_of(2), _signature_of(1), 1), MISMATCH, 403),
    Case("final chunk missing", lambda w: b"".join(encode(HELLO)[:2]) + encode([])[0], MISMATCH, 403),
    Case("signed with another key", lambda w: b"".join(encode(HELLO, key=b"k" * 32)), MISMATCH, 403),
    Case("chained from another seed", lambda w: b"".join(encode(HELLO, seed="0" * 64)), MISMATCH, 403),
]


@pytest.mark.parametrize("step", [None, 1, 7], ids=["whole", "bytewise", "by-7"])
@pytest.mark.parametrize("case", SIGNED_CASES, ids=lambda c: c.name)
def test_malformed_signed_bodies_are_refused(case: Case, step: int | None) -> None:
    options = dict(case.options)
    decoded_length = options.pop("decoded_length", HELLO_LENGTH)
    check = verifier(decoded_length=decoded_length, **options)  # type: ignore[arg-type]
    pieces = encode(HELLO)
    wire = case.edit(b"".join(pieces))
    released, error = run(check, wire, step)
    assert error is not None, "accepted"
    assert (error.status, error.code) == (case.status, case.code), error.message
    assert isinstance(error, Unauthenticated if case.status == 403 else BadRequest)
    # Whatever was released is whole chunks, unchanged, of the body as sent, and never the final one
    # unless the body was complete and verified before what follows it arrived.
    assert wire.startswith(released)
    assert released in (b"", pieces[0], pieces[0] + pieces[1], *([b"".join(pieces)] if case.after_end else []))
    # The verifier stays failed.
    with pytest.raises(RequestRefused):
        check.feed(b"")
    with pytest.raises(RequestRefused):
        check.finish()


def test_plain_messages() -> None:
    _, error = run(verifier(decoded_length=HELLO_LENGTH, max_chunk_bytes=16), b"".join(encode(HELLO)))
    assert error is not None
    assert "26 bytes" in error.message
    assert "16 bytes" in error.message
    _, error = run(verifier(decoded_length=HELLO_LENGTH), _replace(b"klm", b"kLm")(b"".join(encode(HELLO))))
    assert error is not None
    assert "signature" in error.message
    assert "10 data bytes" in error.message


# --- a changed byte anywhere: refused before the chunk that holds it is released ---

@pytest.mark.parametrize("chunk", [0, 1, 2])
@pytest.mark.parametrize("where", ["size line", "signature", "data", "CRLF"])
def test_tampered_chunk_is_never_released(chunk: int, where: str) -> None:
    pieces = aws_body()
    piece = bytearray(pieces[chunk])
    header = piece.index(b"\r\n")
    offset = {"size line": 0, "signature": header - 1, "data": header + 2 + 1000 if chunk < 2 else header + 1,
              "CRLF": len(piece) - 1}[where]
    piece[offset] ^= 0x01
    pieces[chunk] = bytes(piece)
    released, error = feed_pieces(aws_verifier(), pieces)
    assert error is not None
    assert error.status in (400, 403)
    assert released == aws_body()[:chunk]


def test_a_tampered_chunk_is_refused_before_its_last_byte_is_read_only_by_signature() -> None:
    """Up to the last byte of a chunk nothing of it is released; its bad signature is found on its CRLF."""
    wire = b"".join(aws_body())
    wire = wire[:100] + b"b" + wire[101:]
    check = verifier()
    assert check.feed(wire[:65626 - 1]) == b""   # all of the first chunk but its final LF
    with pytest.raises(Unauthenticated) as refused:
        check.feed(wire[65626 - 1:])
    assert refused.value.code == "SignatureDoesNotMatch"


# --- the trailer variants ---

CRC32 = "x-amz-checksum-crc32"
SIGNED_TRAILER, UNSIGNED_TRAILER = ChunkMode.SIGNED_TRAILER, ChunkMode.UNSIGNED_TRAILER


@pytest.mark.parametrize("mode", [SIGNED_TRAILER, UNSIGNED_TRAILER])
@pytest.mark.parametrize("name", ["x-amz-checksum-crc32", "x-amz-checksum-crc32c", "x-amz-checksum-crc64nvme",
                                  "x-amz-checksum-sha1", "x-amz-checksum-sha256"])
@pytest.mark.parametrize("announced", [True, False])
def test_trailer_bodies_verify(mode: ChunkMode, name: str, announced: bool) -> None:
    pieces = encode(HELLO, mode=mode, trailer=name)
    check = verifier(decoded_length=HELLO_LENGTH, mode=mode, trailer=name if announced else None)
    released, error = feed_pieces(check, pieces)
    assert error is None
    assert released == pieces


def _trailer_case(mode: ChunkMode, edit: Callable[[bytes], bytes], code: str, status: int = 400,
                  trailer: str | None = CRC32, checksum: str | None = None, announce: str | None = CRC32,
                  ) -> tuple[ChunkMode, Callable[[bytes], bytes], str, int, str | None, str | None, str | None]:
    return (mode, edit, code, status, trailer, checksum, announce)


def _drop_line(prefix: bytes) -> Callable[[bytes], bytes]:
    def edit(wire: bytes) -> bytes:
        start = wire.index(prefix)
        return wire[:start] + wire[wire.index(b"\r\n", start) + 2:]
    return edit


TRAILER_CASES = {
    "checksum value wrong (crc32)": _trailer_case(SIGNED_TRAILER, lambda w: w, "BadDigest", checksum="AAAAAA=="),
    "checksum value wrong, unsigned": _trailer_case(UNSIGNED_TRAILER, lambda w: w, "BadDigest", checksum="AAAAAA=="),
    "checksum wrong (sha256)": _trailer_case(
        UNSIGNED_TRAILER, lambda w: w, "BadDigest", trailer="x-amz-checksum-sha256",
        announce="x-amz-checksum-sha256", checksum=base64.b64encode(b"\0" * 32).decode()),
    "trailer other than announced": _trailer_case(SIGNED_TRAILER, lambda w: w, INVALID,
                                                  trailer="x-amz-checksum-sha256"),
    "not a checksum trailer": _trailer_case(UNSIGNED_TRAILER, _replace(b"x-amz-checksum-crc32:", b"x-amz-meta-a:"),
                                            INVALID, announce=None),
    "checksum not base64": _trailer_case(UNSIGNED_TRAILER, lambda w: w, INVALID, checksum="AAAAAA!="),
    "checksum of the wrong length": _trailer_case(UNSIGNED_TRAILER, lambda w: w, INVALID, checksum="AAAAAAAA"),
    "checksum in non-canonical base64": _trailer_case(UNSIGNED_TRAILER, lambda w: w, INVALID, checksum="AAAAAB=="),
    "space after the colon": _trailer_case(UNSIGNED_TRAILER, _replace(b"crc32:", b"crc32: "), INVALID),
    "upper-case trailer name": _trailer_case(UNSIGNED_TRAILER, _replace(b"x-amz-checksum-crc32:",
                                                                        b"X-Amz-Checksum-Crc32:"), INVALID),
    "trailer line with LF only": _trailer_case(UNSIGNED_TRAILER, lambda w: w[:-4] + b"\n\r\n", INVALID),
    "no empty line after the trailer": _trailer_case(UNSIGNED_TRAILER, lambda w: w[:-2], INCOMPLETE),
    "no trailer at all": _trailer_case(UNSIGNED_TRAILER, _drop_line(b"x-amz-checksum"), INVALID),
    "two checksum lines": _trailer_case(UNSIGNED_TRAILER, lambda w: w[:-2] + w[w.index(b"x-amz-checksum"):],
                                        INVALID),
    "trailer signature on an unsigned body": _trailer_case(
        UNSIGNED_TRAILER, lambda w: w[:-2] + b"x-amz-trailer-signature:" + b"0" * 64 + b"\r\n\r\n", INVALID),
    "chunk signature on an unsigned body": _trailer_case(
        UNSIGNED_TRAILER, _replace(b"a\r\n", b"a;chunk-signature=" + b"0" * 64 + b"\r\n"), INVALID),
    "unsigned chunk in a signed body": _trailer_case(
        SIGNED_TRAILER, lambda w: b"".join(encode(HELLO, mode=UNSIGNED_TRAILER)), INVALID),
    "trailer signature missing": _trailer_case(SIGNED_TRAILER, _drop_line(b"x-amz-trailer-signature"), INVALID),
    "trailer signature first": _trailer_case(
        SIGNED_TRAILER, lambda w: w.replace(b"x-amz-checksum", b"x-amz-trailer-signature:" + b"0" * 64
                                            + b"\r\nx-amz-checksum", 1), INVALID),
    "trailer signature upper-case": _trailer_case(
        SIGNED_TRAILER, lambda w: w[:w.index(b"signature:") + 10] + w[w.index(b"signature:") + 10:].upper(),
        INVALID),
    "trailer signature wrong": _trailer_case(
        SIGNED_TRAILER, lambda w: w[:w.index(b"signature:") + 10] + b"0" * 64 + b"\r\n\r\n", MISMATCH, 403),
    "trailer changed, checksum unchecked": _trailer_case(
        SIGNED_TRAILER, lambda w: _drop_line(b"x-amz-checksum")(w).replace(
            b"x-amz-trailer-signature", b"x-amz-checksum-crc32:AAAAAA==\r\nx-amz-trailer-signature"),
        MISMATCH, 403, announce=None),
    "data after the trailer": _trailer_case(SIGNED_TRAILER, lambda w: w + b"\r\n", INVALID),
    "trailer line too long": _trailer_case(
        UNSIGNED_TRAILER, lambda w: w[:-2] + b"x-amz-meta-" + b"a" * 200 + b":v\r\n\r\n", INVALID),
}


@pytest.mark.parametrize("step", [None, 1], ids=["whole", "bytewise"])
@pytest.mark.parametrize("name", list(TRAILER_CASES))
def test_malformed_trailers_are_refused(name: str, step: int | None) -> None:
    mode, edit, code, status, trailer, checksum, announce = TRAILER_CASES[name]
    pieces = encode(HELLO, mode=mode, trailer=trailer, checksum=checksum)
    wire = edit(b"".join(pieces))
    check = verifier(decoded_length=HELLO_LENGTH, mode=mode, trailer=announce)
    released, error = run(check, wire, step)
    assert error is not None, "accepted"
    assert (error.status, error.code) == (status, code), error.message
    # The final chunk and the trailer are released together, once verified: never here.
    assert released in (b"", pieces[0], pieces[0] + pieces[1], *([b"".join(pieces)] if name.startswith("data") else []))


def test_crc32c_and_crc64nvme_values_are_left_to_the_storage_server() -> None:
    """No CRC32C/CRC64NVME in the standard library: their form is checked, their value is not."""
    for name in ("x-amz-checksum-crc32c", "x-amz-checksum-crc64nvme"):
        pieces = encode(HELLO, mode=SIGNED_TRAILER, trailer=name)   # a zero checksum: wrong for this data
        released, error = feed_pieces(verifier(decoded_length=HELLO_LENGTH, mode=SIGNED_TRAILER, trailer=name),
                                      pieces)
        assert error is None
        assert released == pieces


# --- what botocore itself sends ---

@pytest.mark.parametrize(("checksum_cls", "name"), [
    (Crc32Checksum, "x-amz-checksum-crc32"), (Sha1Checksum, "x-amz-checksum-sha1"),
    (Sha256Checksum, "x-amz-checksum-sha256")])
@pytest.mark.parametrize("size", [0, 1, 999, 1000, 2500])
def test_botocores_aws_chunked_bodies_verify(checksum_cls: type, name: str, size: int) -> None:
    data = bytes(range(256)) * 10
    data = data[:size]
    wire = AwsChunkedWrapper(io.BytesIO(data), checksum_cls=checksum_cls, checksum_name=name, chunk_size=1000).read()
    released, error = run(verifier("", decoded_length=size, mode=UNSIGNED_TRAILER, trailer=name), wire, 333)
    assert error is None
    assert released == wire
    # The same body with a data byte changed: the checksum catches it before the end is released.
    if size:
        changed = wire.replace(data[:1], bytes([data[0] ^ 1]), 1) if size > 0 else wire
        released, error = run(verifier("", decoded_length=size, mode=UNSIGNED_TRAILER, trailer=name), changed)
        assert error is not None
        assert error.code == "BadDigest"


class _Sent(Exception):
    pass


def test_a_botocore_put_object_verifies() -> None:
    """A real client's request, caught as it is sent: its headers name the mode and the trailer."""
    import botocore.session
    from botocore.config import Config

    client = botocore.session.get_session().create_client(
        "s3", region_name="eu-west-1", endpoint_url="https://s3.example.test",
        aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret",
        config=Config(s3={"addressing_style": "path"}))
    sent: dict[str, object] = {}

    def capture(request: AWSRequest, **_: object) -> None:
        sent["headers"] = {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
        sent["body"] = request.body.read()
        raise _Sent

    client.meta.events.register("before-send.s3.PutObject", capture)
    data = b"residency " * 300_000   # 3 MB: more than one of botocore's 1 MiB chunks
    with pytest.raises(_Sent):
        client.put_object(Bucket="dublin", Key="k", Body=io.BytesIO(data), ChecksumAlgorithm="CRC32")
    headers = sent["headers"]
    assert isinstance(headers, dict)
    wire = sent["body"]
    assert isinstance(wire, bytes)
    mode = CONTENT_SHA256_MODES[headers["x-amz-content-sha256"]]
    assert mode is UNSIGNED_TRAILER
    check = verifier("", decoded_length=int(headers["x-amz-decoded-content-length"]), mode=mode,
                     trailer=headers["x-amz-trailer"])
    released, error = run(check, wire, 65536)
    assert error is None
    assert released == wire
    assert check.decoded_bytes == len(data)


# --- any split of the body gives the same verdict and the same bytes, released chunk by chunk ---

@st.composite
def bodies(draw: st.DrawFn) -> tuple[ChunkMode, list[bytes], list[bytes], list[int]]:
    mode = draw(st.sampled_from(list(ChunkMode)))
    chunks = draw(st.lists(st.binary(min_size=1, max_size=300), max_size=5))
    pieces = encode(chunks, mode=mode, trailer="x-amz-checksum-sha1")
    total = sum(map(len, pieces))
    cuts = sorted(set(draw(st.lists(st.integers(0, total), max_size=12))))
    return mode, chunks, pieces, cuts


def _split(wire: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *cuts, len(wire)]
    return [wire[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=300, deadline=None)
@given(bodies())
def test_any_split_releases_the_same_whole_chunks(body: tuple[ChunkMode, list[bytes], list[bytes], list[int]]) -> None:
    mode, chunks, pieces, cuts = body
    wire = b"".join(pieces)
    boundaries = {sum(map(len, pieces[:i])) for i in range(len(pieces) + 1)}
    check = verifier(decoded_length=sum(map(len, chunks)), mode=mode,
                     trailer=None if mode is ChunkMode.SIGNED else "x-amz-checksum-sha1")
    released = b""
    for part in _split(wire, cuts):
        released += check.feed(part)
        assert len(released) in boundaries   # only whole chunks, never part of one
    check.finish()
    assert released == wire


@settings(max_examples=300, deadline=None)
@given(bodies(), st.data())
def test_any_split_of_a_tampered_body_is_refused_before_the_tampered_chunk(
        body: tuple[ChunkMode, list[bytes], list[bytes], list[int]], data: st.DataObject) -> None:
    mode, chunks, pieces, cuts = body
    wire = bytearray(b"".join(pieces))
    where = data.draw(st.integers(0, len(wire) - 1))
    wire[where] ^= data.draw(st.integers(1, 255))
    # The chunk that holds the changed byte, and the release boundaries before it.
    ends = [sum(map(len, pieces[:i + 1])) for i in range(len(pieces))]
    tampered = next(i for i, end in enumerate(ends) if where < end)
    check = verifier(decoded_length=sum(map(len, chunks)), mode=mode,
                     trailer=None if mode is ChunkMode.SIGNED else "x-amz-checksum-sha1")
    released = b""
    try:
        for part in _split(bytes(wire), cuts):
            released += check.feed(part)
        check.finish()
    except RequestRefused:
        pass
    else:
        # Only an unsigned body's data can change unseen by a signature; then its checksum must catch it.
        pytest.fail(f"a changed byte at {where} was accepted ({mode})")
    if mode is ChunkMode.UNSIGNED_TRAILER:
        assert len(released) <= ends[-2] if len(ends) > 1 else released == b""   # never the end
    else:
        assert len(released) <= (ends[tampered - 1] if tampered else 0)
    assert bytes(wire).startswith(released)


# --- memory: at most one chunk held, never more than its bytes received ---

def test_an_oversize_chunk_is_refused_from_its_size_line() -> None:
    check = verifier(decoded_length=None, max_chunk_bytes=1024)
    with pytest.raises(BadRequest) as refused:
        check.feed(b"401;chunk-signature=" + b"0" * 64 + b"\r\n")   # no data sent: nothing buffered
    assert "1025 bytes" in refused.value.message
    check = verifier(decoded_length=None)
    with pytest.raises(BadRequest):
        check.feed(b"1000001;chunk-signature=")   # 16 MiB + 1 under the default cap, refused early
    assert verifier(decoded_length=None, max_chunk_bytes=1024).feed(b"400;chunk-signature=" + b"0" * 64) == b""


def test_a_size_line_that_never_ends_is_refused_at_its_bound() -> None:
    check = verifier(decoded_length=None)
    with pytest.raises(BadRequest):
        check.feed(b"a;chunk-signature=" + b"a" * 100)


def _traced_peak(make: Callable[[], Callable[[], None]], tries: int = 2) -> int:
    """The least peak of traced memory over `tries` runs of a fresh action from `make`, each in a forked child.

    tracemalloc counts every thread's allocations, and in a full run other tests leave
    threads behind (proxies, audit writers) that allocate now and then: a forked child has
    only the thread that forked it, so it shows the verifier's own peak. A verifier that
    holds too much does so every time.
    """
    peaks = []
    for _ in range(tries):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:   # the child: measure, report, and leave without running anything of pytest's
            try:
                os.close(read_end)
                action = make()
                tracemalloc.start()
                action()
                os.write(write_end, str(tracemalloc.get_traced_memory()[1]).encode())
            finally:
                os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as answer:
            reported = answer.read()
        os.waitpid(pid, 0)
        assert reported, "the measured action failed in the child (run it alone to see why)"
        peaks.append(int(reported))
    return min(peaks)


def test_memory_is_bounded_by_one_chunk_whatever_the_body_size() -> None:
    chunk = 1 << 20
    count = 24                       # a 24 MiB body of 1 MiB chunks, fed 64 KiB at a time
    block = bytes(range(256)) * (chunk // 256)
    seed = "1" * 64

    def body() -> Iterator[bytes]:
        previous = seed
        for data in [*([block] * count), b""]:
            previous = chunk_signature(KEY, DATE, SCOPE, previous, hashlib.sha256(data).hexdigest())
            wire = f"{len(data):x};chunk-signature={previous}\r\n".encode() + data + b"\r\n"
            for start in range(0, len(wire), 65536):
                yield wire[start:start + 65536]

    parts = list(body())           # made before tracing: only the verifier's own memory is measured

    def make() -> Callable[[], None]:
        check = verifier(seed, decoded_length=chunk * count)

        def verify() -> None:
            released = 0
            for part in parts:
                released += len(check.feed(part))
            check.finish()
            assert released == sum(map(len, parts))
        return verify

    peak = _traced_peak(make)
    assert peak < 3 * chunk, peak   # the held chunk and its copy on release; not the 24 MiB


def test_a_large_announced_chunk_holds_only_what_arrived() -> None:
    def make() -> Callable[[], None]:
        check = verifier(decoded_length=None)

        def feed() -> None:
            assert check.feed(b"1000000;chunk-signature=" + b"0" * 64 + b"\r\n") == b""
            for _ in range(10):
                assert check.feed(b"x" * 100) == b""
        return feed

    peak = _traced_peak(make)
    assert peak < 64 * 1024, peak   # a 16 MiB chunk announced, 1 KB sent: nothing like 16 MiB held


def test_bytewise_feeding_does_not_multiply_memory() -> None:
    pieces = encode([b"z" * 50_000])
    wire = pieces[0]
    def make() -> Callable[[], None]:
        check = verifier(decoded_length=50_000)

        def feed() -> None:
            for i in range(len(wire)):
                assert check.feed(wire[i:i + 1]) in (b"", wire)
        return feed

    peak = _traced_peak(make)
    assert peak < 3 * 50_000, peak


# --- the constructor's checks and the mode table ---

def test_modes_and_arguments() -> None:
    assert set(CONTENT_SHA256_MODES.values()) == set(ChunkMode)
    assert ChunkMode("unsigned-trailer") is UNSIGNED_TRAILER
    for bad in ({"seed_signature": "A" * 64}, {"seed_signature": "0" * 63}, {"decoded_length": -1},
                {"max_chunk_bytes": 0}, {"mode": "streaming"}, {"min_chunk_bytes": -1},
                {"max_chunk_bytes": 1024, "min_chunk_bytes": 1025}):
        arguments: dict[str, object] = {"seed_signature": AWS_SEED, "decoded_length": 1, **bad}
        seed = arguments.pop("seed_signature")
        with pytest.raises(ValueError):  # noqa: PT011 - a programming error in the caller, not a refusal
            ChunkVerifier(KEY, DATE, SCOPE, seed, **arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(("mode", "trailer"), [
    (ChunkMode.SIGNED, CRC32), (SIGNED_TRAILER, "x-amz-meta-a"), (UNSIGNED_TRAILER, "X-Amz-Checksum-Crc32"),
    (UNSIGNED_TRAILER, "x-amz-checksum-crc32,x-amz-checksum-sha1"), (UNSIGNED_TRAILER, "")])
def test_an_x_amz_trailer_the_verifier_cannot_hold_to_is_refused(mode: ChunkMode, trailer: str) -> None:
    with pytest.raises(ValueError, match="x-amz-trailer"):
        verifier(mode=mode, trailer=trailer)


@settings(max_examples=300, deadline=None)
@given(bodies(), st.data())
def test_no_insertion_or_deletion_is_accepted(body: tuple[ChunkMode, list[bytes], list[bytes], list[int]],
                                              data: st.DataObject) -> None:
    mode, chunks, pieces, _ = body
    wire = b"".join(pieces)
    where = data.draw(st.integers(0, len(wire)))
    if data.draw(st.booleans()) or where == len(wire):
        edited = wire[:where] + data.draw(st.binary(min_size=1, max_size=3)) + wire[where:]
    else:
        edited = wire[:where] + wire[where + data.draw(st.integers(1, 3)):]
    check = verifier(decoded_length=sum(map(len, chunks)), mode=mode,
                     trailer=None if mode is ChunkMode.SIGNED else "x-amz-checksum-sha1")
    released, error = run(check, edited, data.draw(st.sampled_from([None, 1, 5, 64])))
    assert error is not None, f"an edited body was accepted ({mode})"
    assert edited.startswith(released)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(list(ChunkMode)), st.binary(max_size=400), st.integers(1, 50))
def test_arbitrary_bytes_are_refused_never_crash(mode: ChunkMode, wire: bytes, step: int) -> None:
    released, error = run(verifier(decoded_length=None, mode=mode), wire, step)
    assert error is not None
    assert wire.startswith(released)


@pytest.mark.parametrize("mode", [ChunkMode.SIGNED, SIGNED_TRAILER])
def test_a_small_signed_chunk_before_the_last_is_refused_as_s3_does(mode: ChunkMode) -> None:
    small, big = b"s" * 8191, b"b" * 8192
    ok = encode([big, big, small], mode=mode)   # only the last may be small
    check = ChunkVerifier(KEY, DATE, SCOPE, AWS_SEED, decoded_length=len(big) * 2 + len(small), mode=mode)
    assert feed_pieces(check, ok) == (ok, None)
    bad = encode([big, small, big], mode=mode)
    check = ChunkVerifier(KEY, DATE, SCOPE, AWS_SEED, decoded_length=len(big) * 2 + len(small), mode=mode)
    released, error = feed_pieces(check, bad)
    assert error is not None
    assert (error.status, error.code) == (400, "InvalidChunkSizeError")
    assert "8191 bytes" in error.message
    assert released == bad[:2]   # refused at the size line of the chunk after the small one


def test_unsigned_chunks_have_no_minimum() -> None:
    pieces = encode([b"x" * 10, b"y" * 10], mode=UNSIGNED_TRAILER)
    check = ChunkVerifier(b"", "", "", "", decoded_length=20, mode=UNSIGNED_TRAILER)
    assert feed_pieces(check, pieces) == (pieces, None)
