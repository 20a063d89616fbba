"""Reading whole Azure requests: accounts from Host or path, copies, and everything refused rather than guessed."""

from __future__ import annotations

import pytest

from proxy.domain import Resource
from proxy.errors import BadRequest, PayloadTooLarge

from .helpers import ACCOUNT, EMULATOR, READER, VIRTUAL, headers, parse

P = f"/{ACCOUNT}"
SOURCE = f"http://{EMULATOR}/{ACCOUNT}/ie-mail/alice/1.eml"


@pytest.mark.parametrize(("host", "target", "account", "key"), [
    (EMULATOR, f"{P}/ie-mail/a", ACCOUNT, "ie-mail/a"),
    ("localhost:10000", "/otheraccount/ie-mail/a", "otheraccount", "ie-mail/a"),
    ("[::1]:10000", f"{P}/ie-mail/a", ACCOUNT, "ie-mail/a"),
    (VIRTUAL, "/ie-mail/a", ACCOUNT, "ie-mail/a"),
    ("mailstoreie.blob.core.windows.net:443", "/ie-mail/a/b%20c/%C3%A9.txt", "mailstoreie", "ie-mail/a/b c/é.txt"),
    ("MailStoreIE.Blob.Core.Windows.Net", "/ie-mail/a", "mailstoreie", "ie-mail/a"),   # DNS folds case
    ("acct.blob.example.test", "/ie-mail/a", "acct", "ie-mail/a"),
    # The account named by the Host: a first segment like an account is a container.
    (VIRTUAL, f"{P}/a", ACCOUNT, f"{ACCOUNT}/a"),
])
def test_account_container_and_blob(host: str, target: str, account: str, key: str) -> None:
    request = parse("GET", target, host)
    assert request.access.resource == Resource("azure", account, key)


@pytest.mark.parametrize(("target", "fragment"), [
    (f"{P}/ie-mail/a%2Fb", "encoded '/'"),
    (f"{P}/ie-mail/a%2fb", "encoded '/'"),
    (f"{P}/ie-mail/%2E%2E/us-mail/x", "encoded '/'"),
    (f"{P}/ie-mail/a/%2e/b", "encoded '/'"),
    (f"{P}/ie-mail/a%5Cb", "encoded '/'"),
    (f"{P}/ie-mail/a%00b", "encoded '/'"),
    (f"{P}/ie-mail/../us-mail/x", "dot segment"),
    (f"{P}/ie-mail/a/./b", "dot segment"),
    (f"{P}/ie-mail/a//b", "empty segment"),
    (f"{P}/ie-mail/", "empty"),
    (f"{P}/ie-mail/a/", "ends in '/'"),
    (f"{P}/ie-mail/a.", "ends in '.'"),
    (f"{P}/ie-mail/a./b", "ends in '.'"),
    (f"{P}/ie-mail/a\\b", "backslash"),
    (f"{P}/ie-mail/a%5cb", "encoded"),
    (f"{P}/ie-mail/a%252e%252e", "double-encoded"),
    (f"{P}/ie-mail/a%01", "control character"),
    (f"{P}/ie-mail/a%ZZ", "invalid percent-escape"),
    (f"{P}/ie-mail/a%FF", "UTF-8"),
    (f"{P}/ie-mail/a b", "control or non-ASCII"),
    (f"{P}/ie-mail/a;b", '";"'),
    (f"{P}/ie-mail/a+b", '"+"'),
    (f"{P}/IE-mail/a", "container names"),
    (f"{P}/ie--mail/a", "container names"),
    (f"{P}/ie/a", "container names"),
    (f"{P}/$other/a", "container names"),
    (f"{P}//a", "empty container"),
    ("/Devstoreaccount1/ie-mail/a", "storage account names"),
    ("/dev%73toreaccount1/ie-mail/a", "percent-encoded"),
    ("//ie-mail/a", "start with the storage account"),
    (f"{P}/ie-mail/a?comp=tags&comp=list", "repeated"),
    (f"{P}/ie-mail/a?comp=tags&COMP=list", "repeated"),
    (f"{P}/ie-mail/a?prefix=a+b", "unencoded"),
    (f"{P}/ie-mail?restype=container&comp=list&prefix=..%2Fus-mail", "dot segment"),
    (f"{P}/ie-mail?restype=container&comp=list&prefix=a%5Cb", "backslash"),
    # Without restype Azure reads /NAME as the blob NAME of $root.
    (f"{P}/ie-mail", "restype"),
    (f"{P}/ie-mail?comp=list", "restype"),
    (f"{P}/ie-mail?Restype=container", "restype"),
    (f"{P}/ie-mail?restype=", "restype"),
    (f"{P}/ie-mail?restype=blob", "restype"),
])
def test_ambiguous_targets_are_refused(target: str, fragment: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse("GET", target)
    assert fragment in refused.value.message
    assert refused.value.status == 400


@pytest.mark.parametrize("target", [f"{P}/?comp=list&maxresults=2", f"{P}/?comp=list&marker=us-mail"])
def test_a_paged_container_listing_is_read_as_list_containers(target: str) -> None:
    # The proxy pages it itself (proxy.storage.accountpages): the marker is judged there, never forwarded.
    assert parse("GET", target).operation.name == "ListContainers"


def test_a_path_style_account_is_required_on_an_endpoint_and_absent_under_a_suffix() -> None:
    # On the emulator endpoint, "/ie-mail/a" reads ie-mail as the account: not a valid one.
    with pytest.raises(BadRequest, match="storage account names"):
        parse("GET", "/ie-mail/a")
    assert parse("GET", "/ie-mail?restype=container", VIRTUAL).access.resource == Resource("azure", ACCOUNT, "ie-mail/")


@pytest.mark.parametrize(("host", "pairs", "fragment"), [
    ("evil.example", (), "storage host this proxy does not know"),
    ("a.b.blob.core.windows.net", (), "storage host this proxy does not know"),
    ("blob.core.windows.net", (), "storage host this proxy does not know"),
    ("my_account.blob.core.windows.net", (), "storage account names"),
    ("ab.blob.core.windows.net", (), "storage account names"),
    ("10.0.0.1", (), "storage host this proxy does not know"),
    (EMULATOR, (("Host", EMULATOR),), "Host header is repeated"),
    (EMULATOR, (("X-Forwarded-Host", VIRTUAL),), "X-Forwarded-Host"),
    (EMULATOR, (("Forwarded", "host=x"),), "Forwarded"),
    (EMULATOR, (("X-HTTP-Method-Override", "DELETE"),), "X-HTTP-Method-Override"),
    (EMULATOR, (("Content-Length", "5"),), "must not have a body"),
    (EMULATOR, (("Transfer-Encoding", "chunked"),), "must not have a body"),
    (EMULATOR, (("x-ms-source-container-name", "us-mail"),), "Rename Container"),
    (EMULATOR, (("x-ms-rename-source", "/us-mail/x"),), "renames are not supported"),
    (EMULATOR, (("x-ms-previous-snapshot-url", "http://127.0.0.1/x/y/z"),), "x-ms-previous-snapshot-url"),
    (EMULATOR, (("x-ms-copy-source", SOURCE),), "accepted only on the operations that copy"),
    (EMULATOR, (("x-ms-deleted-container-name", "ie-mail"),), "x-ms-deleted-container-name"),
])
def test_refused_hosts_and_headers(host: str, pairs: tuple[tuple[str, str], ...], fragment: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse("GET", f"{P}/ie-mail/a" if host == EMULATOR else "/ie-mail/a", host, *pairs)
    assert fragment in refused.value.message


def test_no_host_is_refused() -> None:
    with pytest.raises(BadRequest, match="Host header is required"):
        READER.read("GET", f"{P}/ie-mail/a", headers(None))


@pytest.mark.parametrize(("method", "target", "extra", "operation"), [
    ("PUT", f"{P}/us-mail/copy", (), "CopyBlob"),
    ("PUT", f"{P}/us-mail/copy", (("x-ms-requires-sync", "true"),), "CopyBlobFromURL"),
    ("PUT", f"{P}/us-mail/copy", (("x-ms-blob-type", "BlockBlob"),), "PutBlobFromURL"),
    ("PUT", f"{P}/us-mail/copy?comp=block&blockid=QQ%3D%3D", (), "PutBlockFromURL"),
    ("PUT", f"{P}/us-mail/copy?comp=page", (), "PutPageFromURL"),
    ("PUT", f"{P}/us-mail/copy?comp=appendblock", (), "AppendBlockFromURL"),
    ("PUT", f"{P}/us-mail/copy?comp=incrementalcopy", (), "IncrementalCopyBlob"),
])
def test_copies_name_their_source(method: str, target: str, extra: tuple[tuple[str, str], ...],
                                  operation: str) -> None:
    request = parse(method, target, EMULATOR, ("x-ms-copy-source", SOURCE), *extra)
    assert request.operation.name == operation
    assert request.access.resource == Resource("azure", ACCOUNT, "us-mail/copy")
    assert request.access.action.value == "write"
    assert request.copy_from == Resource("azure", ACCOUNT, "ie-mail/alice/1.eml")


@pytest.mark.parametrize(("target", "extra", "fragment"), [
    (f"{P}/us-mail/x?comp=blocklist", (("x-ms-copy-source", SOURCE),), "accepted only on the operations that copy"),
    (f"{P}/us-mail/x?comp=tags", (("x-ms-copy-source", SOURCE),), "accepted only on the operations that copy"),
    (f"{P}/us-mail/x?foo=1", (("x-ms-copy-source", SOURCE),), "accepted only on the operations that copy"),
    (f"{P}/us-mail/x", (("x-ms-copy-source", SOURCE), ("x-ms-copy-source", SOURCE)), "repeated"),
    (f"{P}/us-mail/x", (("x-ms-copy-source", ""),), "empty"),
    (f"{P}/us-mail/x", (("x-ms-copy-source", "https://evil.example/a/b"),),
     "the copy source names a storage host this proxy does not know"),
    (f"{P}/us-mail/x?comp=incrementalcopy", (), "needs an x-ms-copy-source"),
    (f"{P}/us-mail?restype=container&comp=rename", (), "Rename Container is not supported"),
    (f"{P}/us-mail?restype=container&comp=batch", (), "blob batch requests are not supported"),
    (f"{P}/?comp=batch", (), "blob batch requests are not supported"),
    (f"{P}/us-mail?restype=container&comp=undelete", (("x-ms-deleted-container-name", "ie-mail"),),
     "restoring under another name is not supported"),
])
def test_refused_writes(target: str, extra: tuple[tuple[str, str], ...], fragment: str) -> None:
    method = "POST" if "batch" in target else "PUT"
    with pytest.raises(BadRequest) as refused:
        parse(method, target, EMULATOR, *extra)
    assert fragment in refused.value.message


def test_restore_container_of_the_same_name_is_admin_over_it() -> None:
    request = parse("PUT", f"{P}/ie-mail?restype=container&comp=undelete", EMULATOR,
                    ("x-ms-deleted-container-name", "ie-mail"), ("x-ms-deleted-container-version", "01D6"))
    assert request.operation.name == "RestoreContainer"
    assert (request.access.action.value, request.access.resource.key, request.access.listing) == ("admin", "ie-mail/",
                                                                                                     True)


@pytest.mark.parametrize("method", ["PATCH", "OPTIONS", "TRACE", "CONNECT", "get"])
def test_other_methods_are_refused(method: str) -> None:
    with pytest.raises(BadRequest, match="not supported"):
        parse(method, f"{P}/ie-mail/a")


def test_a_body_over_azures_largest_is_refused() -> None:
    with pytest.raises(PayloadTooLarge):
        parse("PUT", f"{P}/ie-mail/a", EMULATOR, ("Content-Length", str(5000 * 1024**2 + 1)))
    assert parse("PUT", f"{P}/ie-mail/a", EMULATOR, ("Content-Length", str(5000 * 1024**2))).operation.name == "PutBlob"


@pytest.mark.parametrize("codings", [
    ("gzip, chunked",), ("deflate, chunked",), ("identity, chunked",), ("chunked, chunked",), ("Chunked",),
    ("chunked;x=1",), ("gzip", "chunked"), ("chunked", "chunked"),
])
def test_transfer_codings_other_than_a_lone_chunked_are_refused(codings: tuple[str, ...]) -> None:
    pairs = tuple(("Transfer-Encoding", coding) for coding in codings)
    with pytest.raises(BadRequest, match="Transfer-Encoding: chunked"):
        parse("PUT", f"{P}/ie-mail/a", EMULATOR, ("x-ms-blob-type", "BlockBlob"), *pairs)
    parse("PUT", f"{P}/ie-mail/a", EMULATOR, ("x-ms-blob-type", "BlockBlob"), ("Transfer-Encoding", "chunked"))


@pytest.mark.parametrize("header", [
    "X-Original-Host", "X-Host", "X-Forwarded-Server", "X-Original-URL", "X-Rewrite-URL", "X-Original-URI",
    "X-Forwarded-URI", "X-Forwarded-Prefix", "x-original-url",
])
def test_headers_naming_another_host_or_url_are_refused(header: str) -> None:
    with pytest.raises(BadRequest, match=f"(?i)the {header} header is not accepted"):
        parse("GET", f"{P}/ie-mail/a", EMULATOR, (header, f"{VIRTUAL}"))
