"""Where CreateBucket puts a bucket: the region named in its body.

A bucket's data lives in the region it is created in, for good. A caller
allowed to administer a dataset could otherwise create one of its buckets
(``s3://mail-eu-*``) in another region than the dataset's, and the data
written to it would live outside the law the policy names. So CreateBucket's
body is read (``<CreateBucketConfiguration><LocationConstraint>``) and the
region it names becomes the request's placement, which the policy engine
checks against the dataset (`proxy.policy.engine`, rule ``placement``).

As S3 reads it: no body, or no ``LocationConstraint``, is ``us-east-1``; the
legacy ``EU`` is ``eu-west-1``. Anything else in the body that S3 and this
parser might read differently is refused, as for multi-object deletes.
"""

from __future__ import annotations

import re

from proxy.errors import BadRequest
from proxy.s3.delete import local_name, parse_xml_body

MAX_CREATE_BUCKET_BODY = 64 * 1024
DEFAULT_REGION = "us-east-1"
_LEGACY = {"EU": "eu-west-1"}
_WHAT = "the CreateBucket body"
# The configuration S3 accepts at creation of a general purpose bucket; only LocationConstraint decides
# where the data lives.
_KNOWN = frozenset({"LocationConstraint", "Tags"})
# A directory bucket (<Bucket><Type>Directory) or a Local Zone bucket is placed by the zone its
# <Location> names, which no LocationConstraint need agree with and the policy does not judge.
_ZONAL = frozenset({"Location", "Bucket"})
# <CreateBucketConfiguration><Tags><Tag><Key> is the deepest S3 accepts, and at most 50 tags.
_DEPTH = 5
_ELEMENTS = 1024
# An AWS region name (eu-west-1, us-gov-west-1); also checked in the ARNs of request bodies.
REGION_NAME = re.compile(r"[a-z]{2}(?:-[a-z0-9]+)+-\d{1,2}")


def placement_of(body: bytes | bytearray) -> str:
    """The region a CreateBucket request with this body creates its bucket in. Raises `BadRequest`."""
    if not body.strip():
        return DEFAULT_REGION
    root = parse_xml_body(body, _WHAT, max_depth=_DEPTH, max_elements=_ELEMENTS)
    if local_name(root, _WHAT) != "CreateBucketConfiguration":
        raise BadRequest(f"{_WHAT} must be a <CreateBucketConfiguration> element", code="MalformedXML")
    constraints: list[str] = []
    for child in root:
        name = local_name(child, _WHAT)
        if name in _ZONAL:
            raise BadRequest(
                f"<{name}> in {_WHAT} creates a directory or Local Zone bucket, placed by the zone it names "
                "rather than by <LocationConstraint>: such buckets are not supported", code="InvalidArgument",
            )
        if name not in _KNOWN:
            raise BadRequest(f"unexpected element <{name}> in {_WHAT}", code="MalformedXML")
        if name == "LocationConstraint":
            if len(child):
                raise BadRequest("<LocationConstraint> must hold only text", code="MalformedXML")
            constraints.append((child.text or "").strip())
    if len(constraints) > 1:
        raise BadRequest("<LocationConstraint> appears more than once", code="MalformedXML")
    region = constraints[0] if constraints else ""
    if not region:
        return DEFAULT_REGION
    region = _LEGACY.get(region, region)
    if not REGION_NAME.fullmatch(region):
        raise BadRequest(f"{region!r} is not a region name", code="InvalidLocationConstraint")
    return region
