"""The source of a server-side copy: the ``x-ms-copy-source`` header, a URL.

Copy Blob, Copy Blob From URL, Put Blob From URL, Put Block From URL, Put
Page From URL, Append Block From URL and Incremental Copy Blob move data
without it passing through the caller, so their source is a resource the
policy must judge as a read (docs/policies.md, "How a request is decided", step 2).

Azure takes any URL there, including other services and other clouds. The
proxy accepts only a source it can name: an ``http(s)`` URL whose host is
``ACCOUNT.<configured suffix>`` (the container first in the path) or a
configured endpoint (the account first in the path), read by the same rules
as the request's own Host (`proxy.azure.host`). The path is decoded exactly
once and checked like a request path; the query (a SAS, ``snapshot``,
``versionid``) does not change which blob is read, so it is ignored for the
resource. Anything else is refused (`BadRequest`), never guessed.
"""

from __future__ import annotations

import re

from proxy.azure.host import AccountReader
from proxy.azure.names import check_account, check_blob, check_container, check_raw_path
from proxy.domain import Resource
from proxy.errors import BadRequest
from proxy.storage.uri import PATH_CHARS, describe, first_outside, percent_decode

HEADER = "x-ms-copy-source"
_CODE = "InvalidHeaderValue"
# scheme://authority/path?query, with neither "#" nor a space (checked first) anywhere.
_URL = re.compile(r"(?i:(https?))://([^/?#]*)([^?#]*)(?:\?([^#]*))?")
_WHERE = "the copy source"


def parse_copy_source(value: str, hosts: AccountReader) -> Resource:
    """The blob an ``x-ms-copy-source`` URL names. Raises `BadRequest`."""
    for char in value:
        if not 0x21 <= ord(char) <= 0x7E:
            raise _refused(f"contains a space, control or non-ASCII character ({describe(char)})")
    if "#" in value:
        raise _refused("must not contain a fragment ('#')")
    match = _URL.fullmatch(value)
    if match is None:
        raise _refused("must be an http:// or https:// URL of a blob")
    authority, raw_path = match.group(2), match.group(3)
    if "@" in authority:
        raise _refused("must not carry user information ('@')")
    account = hosts.read(authority, _WHERE, code=_CODE)
    bad = first_outside(raw_path, PATH_CHARS)
    if bad is not None:
        raise _refused(f"must not contain {describe(bad)} unencoded in its path")
    check_raw_path(raw_path, f"the path of {_WHERE}", code=_CODE)
    segments = raw_path.removeprefix("/")
    if account is None:
        account, slash, segments = segments.partition("/")
        if not slash or "%" in account:
            raise _refused("must name ACCOUNT/CONTAINER/BLOB in its path (a path-style endpoint)")
        check_account(account, _WHERE, code=_CODE)
    raw_container, slash, raw_blob = segments.partition("/")
    if not raw_path.startswith("/") or not slash or not raw_container or not raw_blob:
        raise _refused("must name a blob in a container (CONTAINER/BLOB)")
    container = percent_decode(raw_container, f"the container in {_WHERE}", code=_CODE)
    check_container(container, _WHERE, code=_CODE)
    blob = percent_decode(raw_blob, f"the blob name in {_WHERE}", code=_CODE)
    check_blob(blob, f"the blob name in {_WHERE}", code=_CODE)
    return Resource("azure", account, f"{container}/{blob}")


def _refused(what: str) -> BadRequest:
    return BadRequest(f"the {HEADER} header {what}", code=_CODE)
