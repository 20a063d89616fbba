"""Host -> storage account: path-style endpoints, ACCOUNT.<suffix>, and nothing else."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.azure.host import AccountReader
from proxy.azure.names import ACCOUNT
from proxy.config import AzureSettings
from proxy.errors import BadRequest

from .helpers import SETTINGS, headers

READER = AccountReader(SETTINGS)
ACCOUNTS = st.from_regex(r"[a-z0-9]{3,24}", fullmatch=True)
SUFFIXES = st.sampled_from(SETTINGS.account_host_suffixes)
PORTS = st.one_of(st.just(""), st.integers(min_value=0, max_value=65535).map(lambda port: f":{port}"))


@pytest.mark.parametrize(("host", "account"), [
    ("127.0.0.1", None),
    ("127.0.0.1:10000", None),
    ("localhost:8080", None),
    ("LOCALHOST", None),
    ("[::1]:10000", None),
    ("[0:0:0:0:0:0:0:1]", None),
    ("emulator.example.test", None),
    ("devstoreaccount1.blob.core.windows.net", "devstoreaccount1"),
    ("devstoreaccount1.blob.core.windows.net:443", "devstoreaccount1"),
    ("DevStoreAccount1.BLOB.core.windows.net", "devstoreaccount1"),
    ("abc.blob.example.test", "abc"),
])
def test_accepted_hosts(host: str, account: str | None) -> None:
    assert READER.account(headers(host)) == account


@pytest.mark.parametrize(("host", "fragment"), [
    ("evil.example", "does not know"),
    ("blob.core.windows.net", "does not know"),
    ("x.y.blob.core.windows.net", "does not know"),
    ("acct.blob.core.windows.net.evil.example", "does not know"),
    ("acct.file.core.windows.net", "does not know"),
    ("acct.dfs.core.windows.net", "does not know"),
    ("acct-secondary.blob.core.windows.net", "storage account names"),
    ("ab.blob.core.windows.net", "storage account names"),
    ("a" * 25 + ".blob.core.windows.net", "storage account names"),
    ("acct.emulator.example.test", "does not know"),   # endpoints are path-style only
    ("10.0.0.1", "does not know"),
    ("127.0.0.2", "does not know"),
    ("[::2]", "does not know"),
    ("127.0.0.1.blob.core.windows.net", "does not know"),
    ("acct.blob.core.windows.net.", "not name a valid host"),
    ("acct..blob.core.windows.net", "not name a valid host"),
    ("127.1", "not name a valid host"),
    ("acct.blob.core.windows.net:99999", "invalid port"),
    ("acct.blob.core.windows.net:", "not name a valid host"),
    ("user@acct.blob.core.windows.net", "not name a valid host"),
    ("acct.blob.core.windows.net/x", "not name a valid host"),
    ("äcct.blob.core.windows.net", "not name a valid host"),
    ("acct.blob.core.windows.net\udcff", "not name a valid host"),
    ("", "not name a valid host"),
    ("::1", "not name a valid host"),
    ("[::1%eth0]", "not name a valid host"),
])
def test_refused_hosts(host: str, fragment: str) -> None:
    with pytest.raises(BadRequest) as refused:
        READER.account(headers(host))
    assert fragment in refused.value.message
    assert refused.value.status == 400


@given(ACCOUNTS, SUFFIXES, PORTS)
def test_any_account_under_a_suffix_is_read_back(account: str, suffix: str, port: str) -> None:
    assert READER.account(headers(f"{account}.{suffix}{port}")) == account
    assert READER.read(f"{account.upper()}.{suffix.upper()}{port}", "the host") == account


HOSTS = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"[a-zA-Z0-9._\[\]:@-]{1,40}", fullmatch=True),
    st.builds(lambda label, suffix, port: f"{label}.{suffix}{port}",
              st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC0123456789.-_", max_size=26), SUFFIXES, PORTS),
    st.builds(lambda name, port: f"{name}{port}",
              st.sampled_from(["localhost", "127.0.0.1", "[::1]", "[0::1]", "127.000.0.1", "[::ffff:127.0.0.1]"]),
              PORTS),
)


def _is_endpoint(host: str) -> bool:
    lowered = host.lower()
    if lowered.startswith("["):
        return ipaddress.IPv6Address(lowered[1:lowered.index("]")]) == ipaddress.IPv6Address("::1")
    return lowered.split(":")[0] in {"localhost", "127.0.0.1", "emulator.example.test"}


@given(HOSTS)
def test_any_host_is_an_account_an_endpoint_or_refused(host: str) -> None:
    """Whatever the Host, the answer is a valid account under a suffix, a configured endpoint, or a 400."""
    try:
        account = READER.read(host, "the Host header")
    except BadRequest as refused:
        status = refused.status
    else:
        status = 200
    assert status in (200, 400)
    if status == 400:
        return
    if account is None:
        assert _is_endpoint(host)
    else:
        assert ACCOUNT.fullmatch(account)
        assert any(host.lower().split(":")[0] == f"{account}.{suffix}" for suffix in SETTINGS.account_host_suffixes)


@given(st.from_regex(r"[a-z0-9.-]{1,30}", fullmatch=True), SUFFIXES)
def test_a_dotted_or_invalid_label_never_names_an_account(label: str, suffix: str) -> None:
    host = f"{label}.{suffix}"
    try:
        account = READER.read(host, "the Host header")
    except BadRequest:
        return
    assert account == label
    assert "." not in label
    assert "-" not in label
    assert 3 <= len(label) <= 24


def test_accepted_values_are_remembered_within_bounds() -> None:
    reader = AccountReader(AzureSettings(), cache_size=2)
    for account in ("aaa", "bbb", "ccc"):
        assert reader.account(headers(f"{account}.blob.core.windows.net")) == account
    assert len(reader._accepted.remembered) == 2
    with pytest.raises(BadRequest):
        reader.account(headers("evil.example"))
    assert "evil.example" not in reader._accepted.remembered


@pytest.mark.parametrize(("extra", "reason"), [
    (("Host", "aaa.blob.core.windows.net"), "repeated"),
    (("X-Forwarded-Host", "bbb.blob.core.windows.net"), "X-Forwarded-Host"),
    (("X-Original-Host", "bbb.blob.core.windows.net"), "X-Original-Host"),
])
def test_a_remembered_host_is_still_refused_beside_competing_headers(extra: tuple[str, str], reason: str) -> None:
    reader = AccountReader(AzureSettings())
    assert reader.account(headers("aaa.blob.core.windows.net")) == "aaa"
    with pytest.raises(BadRequest, match=reason):
        reader.account(headers("aaa.blob.core.windows.net", extra))


def test_a_copy_source_host_is_read_in_its_own_words_though_the_host_was_remembered() -> None:
    reader = AccountReader(AzureSettings())
    with pytest.raises(BadRequest) as refused:
        reader.account(headers("evil.example"))
    assert refused.value.message.startswith("the Host header")
    assert refused.value.code == "InvalidURI"
    assert reader.account(headers("aaa.blob.core.windows.net")) == "aaa"
    assert reader.read("aaa.blob.core.windows.net", "the copy source", code="CannotVerifyCopySource") == "aaa"
    with pytest.raises(BadRequest) as refused:
        reader.read("evil.example", "the copy source", code="CannotVerifyCopySource")
    assert refused.value.message.startswith("the copy source")
    assert refused.value.code == "CannotVerifyCopySource"
