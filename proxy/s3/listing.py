"""ListBuckets answers, rewritten to name only the buckets the caller may list.

An account holds buckets of every region; listing them all would tell a
caller the names (and, in newer answers, the regions) of data it may not
reach. The proxy forwards ListBuckets and removes every ``<Bucket>`` element
the policy would not let the caller list, keeping the storage server's own
bytes otherwise (`proxy.storage.listing`, which both APIs share). Paged
listings are not passed on: a request for pages (``max-buckets``,
``continuation-token``) is refused, and an answer that still ends in a
continuation token is a 502.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from proxy.domain import Resource
from proxy.storage.listing import ListingShape, filter_listing

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
