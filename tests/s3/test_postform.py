"""The POST Object form reader: forms as real clients encode them, each refusal, and any cut of the body.

Good forms are built by the clients' own encoders (urllib3's, requests', and
the shape a browser's FormData gives boto3's `generate_presigned_post`
fields); each is read whole and cut into 1-byte pieces, and the forwarded
bytes must be the body, unchanged.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import boto3
import pytest
import requests
import urllib3
from botocore.config import Config
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from proxy.s3.postform import MAX_FORM_BYTES, FormReader, FormRefused, PostForm, form_boundary
from proxy.s3.posttail import FileTail

CHROME = "----WebKitFormBoundaryx7Kq2ZtR9aPbLm3W"
CD = "--B\r\nContent-Disposition: form-data"
MALFORMED = "MalformedPOSTRequest"
TOO_LARGE = "MaxPostPreDataLengthExceeded"


def read(content_type: str, pieces: Iterable[bytes]) -> tuple[PostForm, bytes]:
    """The form, and every byte the proxy would forward, reading `pieces` as they arrive."""
    boundary = form_boundary(content_type)
    reader = FormReader(boundary)
    chunks = iter(pieces)
    form = None
    for chunk in chunks:
        form = reader.feed(chunk)
        if form is not None:
            break
    if form is None:
        reader.end()
        raise AssertionError("unreachable: end() raises")
    tail = FileTail(boundary)
    out = [form.head, tail.feed(form.rest)]
    out.extend(tail.feed(chunk) for chunk in chunks)
    out.append(tail.finish())
    return form, b"".join(out)


def whole_and_bytewise(content_type: str, body: bytes) -> PostForm:
    form, forwarded = read(content_type, [body])
    assert forwarded == body
    split, forwarded = read(content_type, [body[i:i + 1] for i in range(len(body))])
    assert forwarded == body
    assert same(split) == same(form)
    return form


def same(form: PostForm) -> PostForm:
    """The form without `rest`, which is whatever the last piece held past the file's start."""
    return replace(form, rest=b"")


def browser(fields: Sequence[tuple[str, str]], filename: str, data: bytes, ctype: str = "image/png") -> bytes:
    """A form as Chrome's FormData writes it: names and file names quoted, a quote as %22, CRLF throughout."""
    lines = []
    for name, value in fields:
        lines.append(f'--{CHROME}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    lines.append(
        f'--{CHROME}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        f"Content-Type: {ctype}\r\n\r\n".encode()
    )
    return b"".join(lines) + data + f"\r\n--{CHROME}--\r\n".encode()


def presigned_fields(key: str) -> list[tuple[str, str]]:
    client = boto3.client(
        "s3", region_name="eu-west-1", aws_access_key_id="AKIAEXAMPLE", aws_secret_access_key="secret",
        config=Config(signature_version="s3v4"),
    )
    post = client.generate_presigned_post("photos", key, Fields={"acl": "private"}, Conditions=[{"acl": "private"}])
    return list(post["fields"].items())


def test_boto3_presigned_post_from_a_browser() -> None:
    fields = presigned_fields("uploads/${filename}")
    form = whole_and_bytewise(f"multipart/form-data; boundary={CHROME}", browser(fields, "cat.png", b"\x89PNG" * 50))
    assert form.key == "uploads/cat.png"
    assert form.fields["key"] == "uploads/${filename}"
    assert form.fields["x-amz-algorithm"] == "AWS4-HMAC-SHA256"
    assert form.fields["x-amz-credential"].startswith("AKIAEXAMPLE/")
    assert {"policy", "x-amz-signature", "x-amz-date", "acl"} <= set(form.fields)
    assert form.names == tuple(name for name, _ in fields)
    assert (form.filename, form.content_type) == ("cat.png", "image/png")


def test_urllib3_encoder() -> None:
    body, ctype = urllib3.encode_multipart_formdata(
        [
            ("key", "a/${filename}"),
            ("x-amz-meta-note", "héllo\r\nworld"),
            ("file", ("report 1.pdf", b"%PDF", "application/pdf")),
        ]
    )
    form = whole_and_bytewise(ctype, body)
    assert form.key == "a/report 1.pdf"
    assert form.fields["x-amz-meta-note"] == "héllo\r\nworld"
    assert form.content_type == "application/pdf"


@pytest.mark.parametrize("files", [
    {"file": ("f.txt", b"data\r\n--not-the-boundary")},
    [("file", ("f.txt", b""))],
])
def test_requests_encoder(files: Any) -> None:
    fields = {"KEY": "k", "Acl": "private"}
    prepared = requests.Request("POST", "http://proxy/photos", data=fields, files=files).prepare()
    assert isinstance(prepared.body, bytes)
    form = whole_and_bytewise(str(prepared.headers["Content-Type"]), prepared.body)
    assert form.key == "k"
    assert form.fields == {"key": "k", "acl": "private"}
    assert form.names == ("KEY", "Acl")


def test_every_part_as_a_file_as_s3_tests_send_it() -> None:
    # Ceph's s3-tests post `files=` only, so every field carries a filename; S3 reads them as fields.
    files = [("kEy", "foo.txt"), ("pOLICy", "x"), ("file", "bar")]
    prepared = requests.Request("POST", "http://p/b", files=files).prepare()
    assert isinstance(prepared.body, bytes)
    form = whole_and_bytewise(str(prepared.headers["Content-Type"]), prepared.body)
    assert form.key == "foo.txt"
    assert form.fields["policy"] == "x"
    assert form.filename == "file"


@pytest.mark.parametrize(("key", "filename", "stored"), [
    ("${filename}", "foo.txt", "foo.txt"),
    ("u/${filename}/${filename}", "a.txt", "u/a.txt/a.txt"),
    ("u/${filename}", "dir/sub/a.txt", "u/a.txt"),           # only the text after the last slash
    ("u/${filename}", "", "u/"),                              # a browser's empty file input
    ("u/${filenames}", "a.txt", "u/${filenames}"),
    ("$foo.txt", "a", "$foo.txt"),
])
def test_filename_in_the_key(key: str, filename: str, stored: str) -> None:
    body = browser([("key", key)], filename, b"x")
    assert whole_and_bytewise(f"multipart/form-data; boundary={CHROME}", body).key == stored


def test_a_file_part_without_filename() -> None:
    body = (part("key", "k") + f'{CD}; name="file"\r\n\r\nx\r\n--B--').encode()
    form = whole_and_bytewise("multipart/form-data; boundary=B", body)
    assert (form.filename, form.content_type, form.key) == (None, None, "k")


@pytest.mark.parametrize(("content_type", "boundary"), [
    ("multipart/form-data; boundary=abc", b"abc"),
    ('Multipart/Form-Data ; BOUNDARY="a b:c?d"', b"a b:c?d"),
    (f"multipart/form-data;boundary={'x' * 70}", b"x" * 70),
    ("multipart/form-data; charset=utf-8; boundary=q", b"q"),
])
def test_boundaries(content_type: str, boundary: bytes) -> None:
    assert form_boundary(content_type) == boundary


@pytest.mark.parametrize(("content_type", "code"), [
    ("application/x-www-form-urlencoded", "RequestIsNotMultiPartContent"),
    ("multipart/mixed; boundary=a", "RequestIsNotMultiPartContent"),
    ("", "RequestIsNotMultiPartContent"),
    ("multipart/form-data", MALFORMED),
    ("multipart/form-data; boundary=a; boundary=b", MALFORMED),
    ("multipart/form-data; boundary=a; BOUNDARY=a", MALFORMED),
    (f"multipart/form-data; boundary={'x' * 71}", MALFORMED),
    ('multipart/form-data; boundary=""', MALFORMED),
    ('multipart/form-data; boundary="ends in space "', MALFORMED),
    ('multipart/form-data; boundary="a\\"b"', "InvalidRequest"),
    ('multipart/form-data; boundary="a;b"', MALFORMED),
    ("multipart/form-data; boundary*=utf-8''a", MALFORMED),
    ("multipart/form-data; boundary=a; boundary*1=b", MALFORMED),   # werkzeug's boundary: ab
    ("multipart/form-data; boundary=a;", MALFORMED),
    ("multipart/form-data; boundary", MALFORMED),
])
def test_refused_content_types(content_type: str, code: str) -> None:
    with pytest.raises(FormRefused) as err:
        form_boundary(content_type)
    assert err.value.code == code
    assert err.value.status == 400




def part(name: str, value: str, extra: str = "") -> str:
    return f'{CD}; name="{name}"{extra}\r\n\r\n{value}\r\n'


FILE = CD + '; name="file"; filename="f.txt"\r\n\r\nDATA\r\n--B--\r\n'
KEY = part("key", "k")

REFUSED = [
    ("a second key", KEY + part("key", "other") + FILE, "InvalidArgument"),
    ("a second key in another case", KEY + part("Key", "other") + FILE, "InvalidArgument"),
    ("a repeated field", KEY + part("x-amz-meta-a", "1") + part("X-Amz-Meta-A", "2") + FILE, "InvalidArgument"),
    ("no key", part("acl", "private") + FILE, "InvalidArgument"),
    ("a key after the file", FILE.replace("--B--", "--B") + part("key", "k") + "--B--\r\n", "InvalidArgument"),
    ("no file", KEY + "--B--\r\n", "InvalidArgument"),
    ("a part without a name", KEY + CD + '\r\n\r\nv\r\n' + FILE, MALFORMED),
    ("an empty name", KEY + part("", "v") + FILE, MALFORMED),
    ("a name that is not a token", KEY + part("a b", "v") + FILE, MALFORMED),
    ("a name with a backslash", KEY + part("a\\b", "v") + FILE, "InvalidRequest"),
    ("a name with %22", KEY + part("x-amz-meta-a%22", "v") + FILE, "InvalidRequest"),   # werkzeug: x-amz-meta-a"
    ("an unquoted name", KEY + CD + '; name=acl\r\n\r\nv\r\n' + FILE, None),
    ("a part without headers", KEY + "--B\r\n\r\nv\r\n" + FILE, MALFORMED),
    ("a first part without headers", "--B\r\n\r\nv\r\n" + KEY + FILE, MALFORMED),
    ("a control character in a header", KEY + part("a", "v", "\x00") + FILE, MALFORMED),
    ("no Content-Disposition", KEY + "--B\r\nContent-Type: text/plain\r\n\r\nv\r\n" + FILE, MALFORMED),
    ("not form-data", KEY + '--B\r\nContent-Disposition: attachment; name="a"\r\n\r\nv\r\n' + FILE, MALFORMED),
    ("two Content-Dispositions", KEY + CD + '; name="a"\r\n'
     'Content-Disposition: form-data; name="b"\r\n\r\nv\r\n' + FILE, MALFORMED),
    ("a filename* form", KEY + FILE.replace('filename="f.txt"', "filename*=utf-8''f.txt"), MALFORMED),
    ("a name* form", KEY + part("a", "v", "; name*=utf-8''b") + FILE, MALFORMED),
    ("two names", KEY + part("a", "v", '; name="b"') + FILE, MALFORMED),
    ("another parameter", KEY + part("a", "v", '; size="3"') + FILE, MALFORMED),
    ("header folding", KEY + CD + ';\r\n name="a"\r\n\r\nv\r\n' + FILE, MALFORMED),
    ("bare LF in headers", KEY + '--B\nContent-Disposition: form-data; name="a"\r\n\r\nv\r\n' + FILE, MALFORMED),
    ("bare LF ends", KEY + CD + '; name="a"\nContent-Type: text/plain\r\n\r\nv\r\n' + FILE,
     MALFORMED),
    ("bare CR", KEY + CD + '; name="a"\rX: y\r\n\r\nv\r\n' + FILE, MALFORMED),
    ("Content-Transfer-Encoding", KEY + part("a", "djE=", "\r\nContent-Transfer-Encoding: base64") + FILE,
     "InvalidRequest"),
    ("another part header", KEY + part("a", "v", "\r\nContent-Length: 1") + FILE, "InvalidRequest"),
    ("a header line without a colon", KEY + part("a", "v", "\r\nnonsense") + FILE, MALFORMED),
    ("a field in another charset", KEY + part("a", "v", "\r\nContent-Type: text/plain; charset=latin1") + FILE,
     "InvalidRequest"),
    ("a value not UTF-8", CD + "; name=\"key\"\r\n\r\n\udcff\r\n" + FILE,
     MALFORMED),
    ("a preamble", "hello\r\n" + KEY + FILE, "InvalidRequest"),
    ("a leading CRLF", "\r\n" + KEY + FILE, "InvalidRequest"),
    ("transport padding", KEY.replace("--B\r\n", "--B \r\n") + FILE, "InvalidRequest"),
    ("padding after a field", KEY + part("acl", "v").replace("--B\r\n", "--B\t\r\n") + FILE, "InvalidRequest"),
    ("${filename} in another field", KEY + part("x-amz-meta-name", "${filename}") + FILE, "InvalidRequest"),
    ("${filename} without a filename", part("key", "u/${filename}") + FILE.replace('; filename="f.txt"', ""),
     "InvalidRequest"),
    ("${filename} with a backslash", part("key", "u/${filename}") + FILE.replace("f.txt", "C:\\x\\f.txt"),
     "InvalidRequest"),
    ("a backslash in a filename", KEY + FILE.replace("f.txt", "C:\\x\\f.txt"), "InvalidRequest"),
    ("${filename} with a %", part("key", "u/${filename}") + FILE.replace("f.txt", "a%22b.txt"), "InvalidRequest"),
    ("a control character in a filename", KEY + FILE.replace("f.txt", "f\x01.txt"), MALFORMED),
    # werkzeug (moto's parser) ends a part at the boundary after a bare LF or CR, and reads an empty value when
    # the boundary follows the blank line at once: parts the proxy would have read as the value.
    ("the boundary after a bare LF in a value", part("x-ignore-a", "v\n" + part("key", "evil")) + KEY + FILE,
     "InvalidRequest"),
    ("the boundary after a bare CR in a value", part("x-ignore-a", "v\r" + part("key", "evil")) + KEY + FILE,
     "InvalidRequest"),
    ("the boundary inside a value", KEY + part("x-ignore-a", "v--B") + FILE, "InvalidRequest"),
    ("a value that begins with the boundary", part("x-ignore-a", part("key", "evil")[:-2]) + KEY + FILE,
     "InvalidArgument"),
    ("a file that begins with the boundary", KEY + FILE.replace("DATA", part("acl", "public-read")[:-2]),
     "InvalidArgument"),
    ("the boundary after a bare LF in the file", KEY + FILE.replace("DATA", "DATA\n" + part("acl", "public-read")),
     "InvalidRequest"),
    ("the boundary inside the file", KEY + FILE.replace("DATA", "DA--BTA"), "InvalidRequest"),
    ("a us-ascii field that is not ASCII", part("key", "é", "\r\nContent-Type: text/plain; charset=us-ascii") + FILE,
     "InvalidRequest"),
    ("an RFC 2231 charset", KEY + part("a", "v", "\r\nContent-Type: text/plain; charset*0=iso-8859-1") + FILE,
     MALFORMED),
    ("a second file", KEY + FILE.replace("--B--", "--B") + FILE, "InvalidArgument"),
    ("an epilogue", KEY + FILE + "epilogue", "InvalidArgument"),
    ("no closing boundary", KEY + FILE.replace("\r\n--B--\r\n", ""), MALFORMED),
    ("a body that ends in the fields", KEY + CD + '; name="a"\r\n\r\nv', MALFORMED),
    ("an empty body", "", MALFORMED),
    ("too much before the file", KEY + part("x-ignore-pad", "p" * MAX_FORM_BYTES) + FILE, TOO_LARGE),
    ("too many fields", KEY + "".join(part(f"x-amz-meta-{i}", "") for i in range(200)) + FILE,
     TOO_LARGE),
]


@pytest.mark.parametrize(("body", "code"), [(body, code) for _, body, code in REFUSED],
                         ids=[what for what, _, _ in REFUSED])
def test_refused_forms(body: str, code: str | None) -> None:
    raw = body.encode("utf-8", "surrogateescape")
    if code is None:   # an unquoted token is read alike by every server: not refused
        assert whole_and_bytewise("multipart/form-data; boundary=B", raw).fields["acl"] == "v"
        return
    codes = set()
    for pieces in ([raw], [raw[i:i + 1] for i in range(len(raw))]):
        with pytest.raises(FormRefused) as err:
            read("multipart/form-data; boundary=B", pieces)
        codes.add(err.value.code)
    assert codes == {code}


def test_the_bound_counts_everything_before_the_file() -> None:
    head = KEY + CD + '; name="file"\r\n\r\n'
    pad = MAX_FORM_BYTES - len(head) - len(part("x-ignore-p", ""))
    exact = (KEY + part("x-ignore-p", "p" * pad) + FILE).encode()
    exact = exact.replace(b'; filename="f.txt"', b"")
    assert whole_and_bytewise("multipart/form-data; boundary=B", exact).file_offset == MAX_FORM_BYTES
    over = exact.replace(b"pp", b"ppp", 1)
    with pytest.raises(FormRefused) as err:
        read("multipart/form-data; boundary=B", [over])
    assert err.value.code == "MaxPostPreDataLengthExceeded"


def test_a_refused_tail_is_never_released_whole() -> None:
    # What `feed` gave back before the refusal lacks the part after the file: the upstream body is cut short.
    body = (KEY + FILE.replace("--B--", "--B") + part("key", "evil") + "--B--\r\n").encode()
    form = FormReader(b"B").feed(body)
    assert form is not None
    tail = FileTail(b"B")
    with pytest.raises(FormRefused):
        tail.feed(form.rest)
    released = bytearray(form.head)
    tail = FileTail(b"B")
    refused = False
    for i in range(len(form.rest)):
        try:
            released += tail.feed(form.rest[i:i + 1])
        except FormRefused:
            refused = True
            break
    assert refused
    assert b"evil" not in released
    assert not released.endswith(b"--B--\r\n")


VALID = st.builds(
    lambda fields, name, data, boundary: (boundary, urllib3.encode_multipart_formdata(
        [("key", "k/${filename}"), *fields, ("file", (name, data, "application/octet-stream"))], boundary=boundary
    )[0]),
    st.dictionaries(st.from_regex(r"x-amz-meta-[a-z0-9]{1,12}", fullmatch=True), st.text(max_size=40), max_size=5)
    .map(lambda d: list(d.items())),
    st.from_regex(r"[A-Za-z0-9 ._-]{1,20}", fullmatch=True),
    st.binary(max_size=300),
    st.from_regex(r"[A-Za-z0-9'()+_,.:=?-]{1,70}", fullmatch=True),
)


@settings(max_examples=150, deadline=None)
@given(VALID, st.lists(st.integers(min_value=0, max_value=2000), max_size=8))
def test_any_cut_of_a_valid_form_reads_alike(form: tuple[str, bytes], cuts: list[int]) -> None:
    boundary, body = form
    dash = b"--" + boundary.encode()
    assume(body.count(dash) == body.count(dash + b"\r\nContent-Disposition: form-data; ") + 1)   # not in the data
    edges = sorted({0, len(body), *(c % (len(body) + 1) for c in cuts)})
    pieces = [body[a:b] for a, b in itertools.pairwise(edges)]
    ctype = f'multipart/form-data; boundary="{boundary}"'
    whole, forwarded = read(ctype, [body])
    split, forwarded_split = read(ctype, pieces)
    assert same(whole) == same(split)
    assert forwarded == forwarded_split == body


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(min_value=0, max_value=400), max_size=6))
def test_random_bodies_only_ever_refuse(noise: bytes, cuts: list[int]) -> None:
    for body in (noise, KEY.encode() + noise, (KEY + FILE).encode()[: len(noise)] + noise):
        edges = sorted({0, len(body), *(c % (len(body) + 1) for c in cuts)})
        outcomes: list[PostForm | str] = []
        for pieces in ([body], [body[a:b] for a, b in itertools.pairwise(edges)]):
            try:
                outcomes.append(same(read("multipart/form-data; boundary=B", pieces)[0]))
            except FormRefused as err:
                outcomes.append(err.code)
        assert outcomes[0] == outcomes[1]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=400), st.binary(max_size=3)), min_size=1, max_size=4),
       st.integers(min_value=1, max_value=7))
def test_mutated_forms_read_alike_in_any_pieces(edits: list[tuple[int, bytes]], size: int) -> None:
    # A valid form with a few bytes replaced or inserted: deeper states than random noise reaches.
    body = bytearray((KEY + part("x-amz-meta-a", "v") + FILE).encode())
    for at, data in edits:
        at %= len(body) + 1
        body[at:at + len(data) // 2] = data
    raw = bytes(body)
    outcomes: list[PostForm | str] = []
    for pieces in ([raw], [raw[i:i + size] for i in range(0, len(raw), size)]):
        try:
            form, forwarded = read("multipart/form-data; boundary=B", pieces)
            assert forwarded == raw
            outcomes.append(same(form))
        except FormRefused as err:
            outcomes.append(err.code)
    assert outcomes[0] == outcomes[1]


def werkzeug_reading(raw: bytes) -> tuple[dict[str, str], bytes] | None:
    """What moto's server (werkzeug's form parser) reads in a form with boundary B: every part before the file by
    name (a part with a filename is one of its files), and the file's bytes; None when werkzeug refuses it."""
    from werkzeug.formparser import MultiPartParser

    try:
        fields, files = MultiPartParser().parse(io.BytesIO(raw), b"B", len(raw))
    except ValueError:
        return None
    parts: dict[str, str | bytes] = dict(fields.items(multi=True))
    for name, stored in files.items(multi=True):
        with stored.stream:
            parts[name] = stored.stream.read()
    file = parts.pop("file", None)
    if file is None:
        return None
    return ({name: value if isinstance(value, str) else value.decode("utf-8", "replace")
             for name, value in parts.items()},
            file.encode() if isinstance(file, str) else file)


# Fragments whose insertion makes the forms where multipart parsers part ways: line ends, boundaries, headers.
FRAGMENTS = [b"\r\n", b"\n", b"\r", b"--B", b"--", b"\r\n--B\r\n", b"\n--B\n", b"\r\n\r\n", b"\n\n", b" ", b'"',
             b'Content-Disposition: form-data; name="key"\r\n\r\n', b'; filename="x"', b"; name=acl", b"--B--",
             b"\r\nContent-Type: text/plain; charset*0=iso-8859-1", b"\r\nContent-Type: text/plain; charset=us-ascii",
             b"%22", b"\xc3\xa9", b"\t"]


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=400), st.sampled_from(FRAGMENTS)), min_size=1,
                max_size=4))
def test_a_form_the_proxy_reads_werkzeug_reads_alike(edits: list[tuple[int, bytes]]) -> None:
    # moto's server reads forms with werkzeug: whatever the proxy forwards, werkzeug must read the same fields and
    # the same file (or refuse it), else the storage server acts on what the proxy never judged.
    body = bytearray((KEY + part("x-amz-meta-a", "v") + FILE).encode())
    for at, data in edits:
        body[at % (len(body) + 1):at % (len(body) + 1)] = data
    raw = bytes(body)
    try:
        form, _ = read("multipart/form-data; boundary=B", [raw])
    except FormRefused:
        return
    theirs = werkzeug_reading(raw)
    if theirs is None:
        return
    fields, file = theirs
    ours = {name: form.fields[name.lower()] for name in form.names}
    assert (fields, file) == (ours, raw[form.file_offset:raw.rindex(b"\r\n--B--")])
