"""ListBuckets answers, rewritten to name only the buckets the caller may list.

An account holds buckets of every region; listing them all would tell a
caller the names (and, in newer answers, the regions) of data it may not
reach. The proxy forwards ListBuckets and removes every ``<Bucket>`` element
the policy would not let the caller list, keeping the storage server's own
bytes otherwise (`proxy.storage.listing`, which both APIs share). An
unpaged answer that still ends in a continuation token is a 502. A request
for pages (``max-buckets``, ``continuation-token``) is paged by the proxy
itself (`PAGING`, `proxy.storage.accountpages`), with tokens of its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from xml.sax.saxutils import escape, quoteattr

from proxy.domain import Resource
from proxy.storage.accountpages import PageRequest, Paging
from proxy.storage.listing import ListingPage, ListingShape, filter_listing

_UNREADABLE = "the storage server's bucket listing could not be read unambiguously, so it was not passed on"
BUCKETS = ListingShape(
    path=("ListAllMyBucketsResult", "Buckets", "Bucket"),
    name=re.compile(r"[a-z0-9.\-]{1,255}"),
    paging="ContinuationToken",
    namespaced=True,
    unreadable=_UNREADABLE,
    markup=("the storage server's bucket listing holds comments, CDATA, a DTD or processing "
            "instructions, so it was not passed on"),
    paged=("the account has more buckets than one answer holds; a paged bucket listing "
           "is not passed on, as its continuation token may stand for a hidden bucket"),
)


def filter_list_buckets(body: bytes, visible: Callable[[Resource], bool]) -> bytes:
    """`body` without the ``<Bucket>`` elements of buckets `visible` refuses. Raises `UpstreamFailure`."""
    return filter_listing(body, BUCKETS, _bucket, visible)


def _bucket(name: str) -> Resource:
    return Resource("s3", name, "")


def _render(first: ListingPage, entries: Sequence[bytes], token: str | None, request: PageRequest) -> bytes:
    """A ListBuckets page of the proxy's: the storage server's owner and bucket entries, the proxy's token."""
    namespace = first.namespace[1:-1]
    owner = first.root.find(f"{first.namespace}Owner")
    parts = ['<?xml version="1.0" encoding="UTF-8"?>\n<ListAllMyBucketsResult',
             f' xmlns={quoteattr(namespace)}>' if namespace else ">"]
    if owner is not None:
        parts.append("<Owner>" + "".join(f"<{_local(c.tag)}>{escape(c.text or '')}</{_local(c.tag)}>"
                                           for c in owner if len(c) == 0) + "</Owner>")
    out = "".join(parts).encode() + b"<Buckets>" + b"".join(entries) + b"</Buckets>"
    tail = ""
    if token is not None:
        tail += f"<ContinuationToken>{escape(token)}</ContinuationToken>"
    if "prefix" in request.params:
        tail += f"<Prefix>{escape(request.params['prefix'])}</Prefix>"
    return out + (tail + "</ListAllMyBucketsResult>").encode()


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


BAD_ARGUMENT_CODE = "InvalidArgument"
SIGNED_QUERY_CODE = "InvalidRequest"
# ListBuckets with max-buckets / continuation-token: paged by the proxy (`proxy.storage.accountpages`).
PAGING = Paging(
    api="s3", shape=BUCKETS, limit_param="max-buckets", resume_param="continuation-token",
    max_limit=10_000, clamp_limit=False, upstream_page=10_000, bound_params=("prefix", "bucket-region"),
    bad_limit_code=BAD_ARGUMENT_CODE, bad_resume="The continuation token provided is incorrect",
    bad_resume_code=BAD_ARGUMENT_CODE, signed_query_code=SIGNED_QUERY_CODE,
    query_safe_schemes=frozenset(), signing_params=frozenset({"x-amz-signature", "signature"}),
    resource=lambda _account, name: _bucket(name), render=_render,
)
