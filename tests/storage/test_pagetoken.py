"""The proxy's sealed page tokens: they open only with the key and the binding they were sealed with."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.errors import ConfigError
from proxy.storage.pagetoken import PageTokens, Position, TokenRefused, page_tokens, read_key_file

KEY = bytes(range(32))
BINDING = ("s3", "", "IE", "prefix=", "bucket-region=")
POSITION = Position("upstream-marker/ä", "pie-0007")


def test_a_token_opens_with_its_key_and_binding() -> None:
    tokens = PageTokens(KEY)
    token = tokens.seal(POSITION, BINDING)
    assert tokens.open(token, BINDING) == POSITION
    assert PageTokens(KEY).open(token, BINDING) == POSITION   # the same key elsewhere (a replica, a worker)
    assert tokens.seal(POSITION, BINDING) != token   # a fresh nonce each time
    assert "pie-0007" not in token
    assert "upstream-marker" not in token


@pytest.mark.parametrize("marker", ["/acct/c", "/acct/" + "c" * 63, None])
def test_a_tokens_length_does_not_tell_the_markers(marker: str | None) -> None:
    # The marker's length is the length of the next name in the account, which may be one the caller cannot see.
    tokens = PageTokens(KEY)
    assert len(tokens.seal(Position(marker, "pie-0007"), BINDING)) == len(tokens.seal(POSITION, BINDING))


def _flip(token: str, at: int) -> str:
    return token[:at] + ("A" if token[at] != "A" else "B") + token[at + 1:]


@pytest.mark.parametrize("change", [
    pytest.param(lambda t: _flip(t, 10), id="altered nonce"),
    pytest.param(lambda t: _flip(t, len(t) // 2), id="altered body"),
    pytest.param(lambda t: _flip(t, len(t) - 2), id="altered tag"),
    pytest.param(lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"), id="altered last character"),
    pytest.param(lambda t: t + "=", id="padded"),
    pytest.param(lambda t: t[:-1], id="truncated"),
    pytest.param(lambda t: t[:20], id="cut short"),
    pytest.param(lambda t: t + "AAAA", id="lengthened"),
    pytest.param(lambda t: "bw2." + t[4:], id="another version"),
    pytest.param(lambda t: "bw1.", id="empty"),
    pytest.param(lambda t: "bw1.!!!!", id="not base64"),
    pytest.param(lambda t: "bw1." + "A" * 5000, id="too long"),
    pytest.param(lambda t: "pie-0008", id="a bucket name"),
])
def test_a_changed_token_is_refused(change: object) -> None:
    tokens = PageTokens(KEY)
    token = tokens.seal(POSITION, BINDING)
    with pytest.raises(TokenRefused):
        tokens.open(change(token), BINDING)   # type: ignore[operator]


@pytest.mark.parametrize("binding", [
    ("s3", "", "US", "prefix=", "bucket-region="),        # another jurisdiction
    ("s3", "", "IE", "prefix=pie-", "bucket-region="),    # another prefix
    ("azure", "", "IE", "prefix=", "bucket-region="),     # another API
    ("s3", "acct", "IE", "prefix=", "bucket-region="),    # another account
])
def test_a_token_is_bound_to_its_caller_and_listing(binding: tuple[str, ...]) -> None:
    tokens = PageTokens(KEY)
    with pytest.raises(TokenRefused):
        tokens.open(tokens.seal(POSITION, BINDING), binding)


def test_another_key_refuses_it() -> None:
    token = PageTokens(KEY).seal(POSITION, BINDING)
    with pytest.raises(TokenRefused):
        PageTokens(bytes(32)).open(token, BINDING)
    with pytest.raises(TokenRefused):
        page_tokens(None).open(token, BINDING)   # this start's own key


def test_this_starts_key_is_one() -> None:
    assert page_tokens(None) is page_tokens(None)


def test_a_key_file(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text(KEY.hex() + "\n")
    assert read_key_file(path) == KEY
    assert page_tokens(path).open(PageTokens(KEY).seal(POSITION, BINDING), BINDING) == POSITION


@pytest.mark.parametrize(("text", "message"), [
    ("ab" * 16, "32 bytes"),
    ("zz" * 32, "64 hex digits"),
    ("", "32 bytes"),
])
def test_a_bad_key_file_stops_the_start(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "key"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_key_file(path)
    with pytest.raises(ConfigError, match=message):
        page_tokens(path)


def test_a_missing_key_file_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not readable"):
        read_key_file(tmp_path / "absent")
