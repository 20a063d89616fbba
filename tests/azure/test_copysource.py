"""x-ms-copy-source URLs -> the blob a copy reads; anything the proxy cannot name is refused."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.azure.copysource import parse_copy_source
from proxy.azure.host import AccountReader
from proxy.domain import Resource
from proxy.errors import BadRequest

from .helpers import ACCOUNT, SETTINGS

HOSTS = AccountReader(SETTINGS)


@pytest.mark.parametrize(("url", "account", "key"), [
    (f"http://127.0.0.1:10000/{ACCOUNT}/ie-mail/alice/1.eml", ACCOUNT, "ie-mail/alice/1.eml"),
    (f"http://localhost/{ACCOUNT}/ie-mail/a", ACCOUNT, "ie-mail/a"),
    (f"http://[::1]:10000/{ACCOUNT}/ie-mail/a", ACCOUNT, "ie-mail/a"),
    ("https://mailstoreie.blob.core.windows.net/ie-mail/a", "mailstoreie", "ie-mail/a"),
    ("HTTPS://MailStoreIE.blob.core.windows.net:443/ie-mail/a", "mailstoreie", "ie-mail/a"),
    # percent-decoded once
    ("https://acct.blob.core.windows.net/ie-mail/a%20b/%C3%A9%2B.txt", "acct", "ie-mail/a b/é+.txt"),
    ("https://acct.blob.core.windows.net/ie-mail/100%25", "acct", "ie-mail/100%"),
    ("https://acct.blob.core.windows.net/%24root/x", "acct", "$root/x"),
    # the query (SAS, snapshot, version) does not change which blob is read
    ("https://acct.blob.core.windows.net/ie-mail/a?snapshot=2024-01-01T00:00:00.0000000Z", "acct", "ie-mail/a"),
    ("https://acct.blob.core.windows.net/ie-mail/a?sv=2024-08-04&sr=b&sp=r&sig=x%2By%3D&versionid=v",
     "acct", "ie-mail/a"),
    ("https://acct.blob.core.windows.net/ie-mail/a?", "acct", "ie-mail/a"),
])
def test_sources(url: str, account: str, key: str) -> None:
    assert parse_copy_source(url, HOSTS) == Resource("azure", account, key)


@pytest.mark.parametrize(("url", "fragment"), [
    ("https://evil.example/ie-mail/a", "the copy source names a storage host this proxy does not know"),
    ("https://acct.file.core.windows.net/share/a", "the copy source names a storage host this proxy does not know"),
    ("https://bucket.s3.amazonaws.com/key", "the copy source names a storage host this proxy does not know"),
    ("http://10.0.0.1/devstoreaccount1/ie-mail/a", "the copy source names a storage host this proxy does not know"),
    ("ftp://acct.blob.core.windows.net/ie-mail/a", "http:// or https://"),
    ("/ie-mail/a", "http:// or https://"),
    ("ie-mail/a", "http:// or https://"),
    ("https://user:pw@acct.blob.core.windows.net/ie-mail/a", "user information"),
    ("https://acct.blob.core.windows.net/ie-mail/a#frag", "fragment"),
    ("https://acct.blob.core.windows.net/ie-mail/a b", "space"),
    ("https://acct.blob.core.windows.net/ie-mail/\u00e9", "non-ASCII"),
    ("https://acct.blob.core.windows.net/ie-mail", "CONTAINER/BLOB"),
    ("https://acct.blob.core.windows.net/ie-mail/", "CONTAINER/BLOB"),
    ("https://acct.blob.core.windows.net/", "CONTAINER/BLOB"),
    ("https://acct.blob.core.windows.net", "CONTAINER/BLOB"),
    ("https://acct.blob.core.windows.net/blob-in-root", "CONTAINER/BLOB"),
    ("https://acct.blob.core.windows.net/ie-mail/a%2Fb", "encoded"),
    ("https://acct.blob.core.windows.net/ie-mail/%2e%2e/x", "encoded"),
    ("https://acct.blob.core.windows.net/ie-mail/../us-mail/x", "dot segment"),
    ("https://acct.blob.core.windows.net/ie-mail/a/", "ends in '/'"),
    ("https://acct.blob.core.windows.net/ie-mail/a.", "ends in '.'"),
    ("https://acct.blob.core.windows.net/ie-mail/a\\b", '"\\"'),
    ("https://acct.blob.core.windows.net/ie-mail/a;b", '";"'),
    ("https://acct.blob.core.windows.net/ie-mail/a%252Fb", "double-encoded"),
    ("https://acct.blob.core.windows.net/ie-mail/a%FF", "UTF-8"),
    ("https://acct.blob.core.windows.net/IE-mail/a", "container names"),
    ("http://127.0.0.1:10000/ie-mail/a", "storage account names"),
    (f"http://127.0.0.1:10000/{ACCOUNT}", "ACCOUNT/CONTAINER/BLOB"),
    ("http://127.0.0.1:10000/dev%73toreaccount1/ie-mail/a", "ACCOUNT/CONTAINER/BLOB"),
])
def test_refused_sources(url: str, fragment: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_copy_source(url, HOSTS)
    assert fragment in refused.value.message
    assert refused.value.status == 400


BLOB_NAMES = st.lists(
    st.text(st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Zs")), min_size=1, max_size=12)
    .filter(lambda s: s not in (".", "..") and not s.endswith(".") and "/" not in s and "\\" not in s),
    min_size=1, max_size=4,
).map("/".join)


@given(BLOB_NAMES)
def test_a_name_the_sdk_quotes_is_read_back_exactly(name: str) -> None:
    """The SDK quotes blob names with safe="~/"; the proxy decodes once, to the very name (or refuses it)."""
    url = f"https://acct.blob.core.windows.net/ie-mail/{quote(name, safe='~/')}"
    try:
        resource: Resource | int = parse_copy_source(url, HOSTS)
    except BadRequest as refused:
        resource = refused.status
    assert resource in (400, Resource("azure", "acct", f"ie-mail/{name}"))
