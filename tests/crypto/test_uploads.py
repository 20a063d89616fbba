"""Upload tokens and the request-target's upload id (pure): what the caller holds, what the storage server sees."""

from __future__ import annotations

from urllib.parse import unquote

import pytest

from proxy.crypto.uploads import (
    PREFIX,
    UploadToken,
    decode_upload_id,
    part_number_of,
    token_of,
    upload_of,
    with_upload_id,
)
from proxy.errors import BadRequest, NoSuchUpload
from proxy.s3.resign import canonical_query

# Upload ids as storage servers make them: AWS's (dots, underscores, dashes), base64 ones, anything.
UPSTREAM_IDS = [
    "VXBsb2FkIElEIGZvciA2aWWpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA",
    "2~iCw_lDY8VoNMjIq4Fg.8n1YtYlqLuQc-tsvq0oD",
    "a+b/c=d",
    "space and %25 and é",
]
KEY = bytes(range(32))
SEAL = "A" * 22


@pytest.mark.parametrize("upstream_id", UPSTREAM_IDS)
def test_a_token_carries_the_id_and_the_wrapped_key(upstream_id: str) -> None:
    token = UploadToken.made(upstream_id, "file:v1:AbC-_=", KEY).encode()
    assert token.startswith(PREFIX)
    assert set(token) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
    found = decode_upload_id(token)
    assert found is not None
    assert (found.upstream_id, found.wrapped) == (upstream_id, "file:v1:AbC-_=")
    found.check_seal(KEY)


@pytest.mark.parametrize("forged", [
    UploadToken.made("another-id", "w", KEY)._replace(upstream_id="the-id"),   # its seal is another id's
    UploadToken.made("the-id", "w", bytes(32)),                               # sealed with another key
    UploadToken("the-id", "w", SEAL),
])
def test_a_token_is_sealed_for_its_id_by_its_key(forged: UploadToken) -> None:
    UploadToken.made("the-id", "w", KEY).check_seal(KEY)
    with pytest.raises(NoSuchUpload, match="seal"):
        forged.check_seal(KEY)


@pytest.mark.parametrize("value", [
    "raw-upload-id", "", PREFIX, PREFIX + "YQ", PREFIX + "YQ.", PREFIX + ".YQ", PREFIX + "YQ.YQ.YQ",
    PREFIX + f"YQ=.YQ.{SEAL}",      # padded
    PREFIX + f"YR.YQ.{SEAL}",       # not canonical base64url ("YR" decodes as "YQ" does)
    PREFIX + f"_w.YQ.{SEAL}",       # not UTF-8
    PREFIX + f"Y+Q.YQ.{SEAL}",      # not base64url
    PREFIX + "YQ.YQ",               # no seal
    PREFIX + f"YQ.YQ.{SEAL[:-1]}",  # a seal of another length
    PREFIX + f"YQ.YQ.{SEAL}.YQ",
])
def test_what_is_not_a_token_reads_as_none(value: str) -> None:
    assert decode_upload_id(value) is None


@pytest.mark.parametrize("upstream_id", UPSTREAM_IDS)
def test_the_id_in_the_target_is_exactly_what_is_signed(upstream_id: str) -> None:
    token = UploadToken(upstream_id, "w", SEAL).encode()
    target = with_upload_id(f"/bucket/key?partNumber=3&uploadId={token}&x-id=UploadPart", upstream_id)
    path, _, query = target.partition("?")
    assert path == "/bucket/key"
    first, sent, last = query.split("&")
    assert (first, last) == ("partNumber=3", "x-id=UploadPart")
    sent = sent.removeprefix("uploadId=")
    assert unquote(sent) == upstream_id
    # SigV4's canonical query of what is sent holds the id written exactly as it is sent.
    assert f"uploadId={sent}" in canonical_query(query).split("&")


@pytest.mark.parametrize(("value", "found"), [
    (UploadToken("up", "w", SEAL).encode(), UploadToken("up", "w", SEAL)),
    ("raw", None),
    (f"{PREFIX}x.y.z", None),
])
def test_the_upload_a_request_names(value: str, found: UploadToken | None) -> None:
    assert upload_of(f"/b/k?uploadId={value}") == found


def test_the_upload_id_is_the_parameter_of_exactly_that_name() -> None:
    # As S3 selects by names, not prefixes: another parameter that starts alike names nothing.
    token = UploadToken("up", "w", "A" * 22).encode()
    assert upload_of(f"/b/k?uploadIdx=raw&uploadId={token}&uploadId-marker=m") == UploadToken("up", "w", "A" * 22)
    assert with_upload_id(f"/b/k?uploadIdx=raw&uploadId={token}", "up") == "/b/k?uploadIdx=raw&uploadId=up"


@pytest.mark.parametrize("target", ["/b/k?uploadId=raw", "/b/k?uploadId=", "/b/k?partNumber=1",
                                    f"/b/k?uploadId={PREFIX}x.y.z"])
def test_only_a_token_names_an_upload_to_seal(target: str) -> None:
    with pytest.raises(NoSuchUpload) as refused:
        token_of(target)
    assert refused.value.status == 404


def test_a_repeated_upload_id_is_refused() -> None:
    token = UploadToken("up", "w", SEAL).encode()
    with pytest.raises(BadRequest):
        token_of(f"/b/k?uploadId={token}&uploadId=other")


@pytest.mark.parametrize(("query", "number"), [("partNumber=1", 1), ("partNumber=10000", 10000),
                                               ("partNumber=77&uploadId=x", 77)])
def test_part_numbers_s3_accepts(query: str, number: int) -> None:
    assert part_number_of(f"/b/k?{query}") == number


@pytest.mark.parametrize("query", ["partNumber=0", "partNumber=10001", "partNumber=01", "partNumber=-1",
                                   "partNumber=", "partNumber=1e3", "uploadId=x"])
def test_part_numbers_s3_refuses(query: str) -> None:
    with pytest.raises(BadRequest) as refused:
        part_number_of(f"/b/k?{query}")
    assert refused.value.code == "InvalidArgument"
