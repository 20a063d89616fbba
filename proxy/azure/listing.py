"""List Containers answers, rewritten to name only the containers the caller may list.

An account holds containers of every dataset; listing them all would tell a
caller the names (and metadata) of data it may not reach. The proxy forwards
List Containers and removes every ``<Container>`` element the policy would
not let the caller list (asked about ``azure://ACCOUNT/CONTAINER/``), keeping
the storage server's own bytes otherwise (`proxy.storage.listing`, which both
APIs share; a metadata item called ``Container`` or ``Name`` is never
mistaken for one). A page's ``NextMarker`` names the next container, which
may be one the caller must not see: an unpaged answer with a ``NextMarker``
(an account of more than 5,000 containers) is a 502, and a request for pages
(``maxresults``, ``marker``) is paged by the proxy itself (`PAGING`,
`proxy.storage.accountpages`), with markers of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from xml.sax.saxutils import escape, quoteattr

from proxy.azure.names import LISTED_CONTAINER
from proxy.domain import Resource
from proxy.storage.accountpages import PageRequest, Paging
from proxy.storage.listing import ListingPage, ListingShape, filter_listing

_UNREADABLE = "the storage server's container listing could not be read unambiguously, so it was not passed on"
CONTAINERS = ListingShape(
    path=("EnumerationResults", "Containers", "Container"),
    name=LISTED_CONTAINER,
    paging="NextMarker",
    namespaced=False,
    unreadable=_UNREADABLE,
    markup=_UNREADABLE,
    paged=("the account has more containers than one answer holds; a paged container listing "
           "is not passed on, as its page marker names a container"),
)


def filter_list_containers(body: bytes, account: str, visible: Callable[[Resource], bool]) -> bytes:
    """`body` without the ``<Container>`` elements `visible` refuses. Raises `UpstreamFailure`."""
    return filter_listing(body, CONTAINERS, lambda name: Resource("azure", account, f"{name}/"), visible)


def _render(first: ListingPage, entries: Sequence[bytes], token: str | None, request: PageRequest) -> bytes:
    """A List Containers page of the proxy's: the storage server's container entries, the proxy's marker."""
    endpoint = first.root.get("ServiceEndpoint")
    head = '<?xml version="1.0" encoding="utf-8"?><EnumerationResults'
    head += f" ServiceEndpoint={quoteattr(endpoint)}>" if endpoint is not None else ">"
    if "prefix" in request.params:
        head += f"<Prefix>{escape(request.params['prefix'])}</Prefix>"
    if request.token is not None:
        head += f"<Marker>{escape(request.token)}</Marker>"
    head += f"<MaxResults>{request.limit}</MaxResults><Containers>"
    tail = f"</Containers><NextMarker>{escape(token or '')}</NextMarker></EnumerationResults>"
    return head.encode() + b"".join(entries) + tail.encode()


OUT_OF_RANGE_CODE = "OutOfRangeQueryParameterValue"
BAD_VALUE_CODE = "InvalidQueryParameterValue"
# List Containers with maxresults / marker: paged by the proxy (`proxy.storage.accountpages`).
PAGING = Paging(
    api="azure", shape=CONTAINERS, limit_param="maxresults", resume_param="marker",
    max_limit=5_000, clamp_limit=True, upstream_page=5_000, bound_params=("prefix", "include"),
    bad_limit_code=OUT_OF_RANGE_CODE,
    bad_resume="The value for one of the query parameters specified in the request URI is invalid: marker",
    bad_resume_code=BAD_VALUE_CODE, signed_query_code=BAD_VALUE_CODE,
    query_safe_schemes=frozenset({"bearer"}), signing_params=frozenset(),
    resource=lambda account, name: Resource("azure", account, f"{name}/"), render=_render,
)
