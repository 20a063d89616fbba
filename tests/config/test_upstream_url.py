"""`upstream.url` names a server and nothing else: no credentials, path, query or fragment.

A user name or password in it would be logged and shown in errors with the URL
(and carried to the storage server): it is refused at load, from the file, the
environment or a flag alike, with a message naming the key and where it was
given, and never repeating the password.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config import Config, load_config
from proxy.errors import ConfigError

CREDENTIALS = "upstream.url: must not hold a user name or password (user:password@...)"
SERVER_ONLY = "upstream.url: must name a server only (no path, query or fragment)"
PASSWORD = "hunter2secret"


def load(tmp_path: Path, url: str, given: str) -> tuple[Config, str]:
    """`url` given in the file, by the environment or by the flag; also what an error must begin with."""
    path = tmp_path / "bailiwick.yaml"
    path.write_text(f"upstream: {{url: '{url}'}}\n" if given == "file" else "region: eu-west-1\n")
    environ = {"BAILIWICK_UPSTREAM": url} if given == "environment" else {}
    overrides = {"upstream": url} if given == "flag" else {}
    where = {"file": f"{path}:1", "environment": "BAILIWICK_UPSTREAM", "flag": "--upstream"}[given]
    return load_config(path, environ=environ, overrides=overrides), f"{where}: "


GIVEN = ["file", "environment", "flag"]


@pytest.mark.parametrize("given", GIVEN)
@pytest.mark.parametrize(("url", "message"), [
    (f"http://user:{PASSWORD}@s3.test:9000", CREDENTIALS),
    (f"https://AKIAIOSFODNN7EXAMPLE:{PASSWORD}@s3.eu-west-1.amazonaws.com", CREDENTIALS),
    (f"http://:{PASSWORD}@s3.test", CREDENTIALS),
    ("http://user@s3.test", CREDENTIALS),
    ("http://@s3.test", CREDENTIALS),
    (f"user:{PASSWORD}@s3.test:9000", CREDENTIALS),   # no scheme: still never shown back
    (f"ftp://user:{PASSWORD}@s3.test", CREDENTIALS),
    ("http://s3.test:9000?region=eu-west-1", SERVER_ONLY),
    ("http://s3.test:9000/?x", SERVER_ONLY),
    ("http://s3.test:9000?", SERVER_ONLY),
    ("http://s3.test:9000#top", SERVER_ONLY),
    ("http://s3.test:9000/#", SERVER_ONLY),
    ("http://s3.test:9000/bucket", SERVER_ONLY),
])
def test_a_url_that_names_more_than_a_server_is_refused(tmp_path: Path, url: str, message: str, given: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load(tmp_path, url, given)
    _, where = load(tmp_path, "http://s3.test", given)
    text = str(refused.value)
    assert text.startswith(where + message), text
    assert PASSWORD not in text
    if message == CREDENTIALS:
        assert "s3.sign" in text   # the way to give the storage server credentials


@pytest.mark.parametrize("given", GIVEN)
@pytest.mark.parametrize(("url", "kept"), [
    ("http://s3.test:9000", "http://s3.test:9000"),
    ("https://s3.test/", "https://s3.test"),
    ("http://[::1]:9000", "http://[::1]:9000"),
    ("http://127.0.0.1:9000/", "http://127.0.0.1:9000"),
])
def test_a_server_url_is_accepted(tmp_path: Path, url: str, kept: str, given: str) -> None:
    config, _ = load(tmp_path, url, given)
    assert config.upstream.url == kept
