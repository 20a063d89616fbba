"""List Containers answers, rewritten to name only the containers the caller may list.

An account holds containers of every dataset; listing them all would tell a
caller the names (and metadata) of data it may not reach. The proxy forwards
List Containers and removes every ``<Container>`` element the policy would
not let the caller list (asked about ``azure://ACCOUNT/CONTAINER/``), keeping
the storage server's own bytes otherwise (`proxy.storage.listing`, which both
APIs share; a metadata item called ``Container`` or ``Name`` is never
mistaken for one). Paged listings are not passed on: a page's
``NextMarker`` names the next container, which may be one the caller must not
see, so a request for pages (``maxresults``, ``marker``) is refused and an
answer with a ``NextMarker`` (an account of more than 5,000 containers) is a
502.
"""

from __future__ import annotations

from collections.abc import Callable

from proxy.azure.names import LISTED_CONTAINER
from proxy.domain import Resource
from proxy.storage.listing import ListingShape, filter_listing

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
