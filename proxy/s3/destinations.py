"""Where an S3 request sends data besides its own target: other buckets, keys and notification targets.

Some requests name a second place in a header or in their body: a restore
whose ``SELECT`` output goes to ``OutputLocation`` in another bucket; a
bucket's replication, inventory, access logs and analytics export, each
written into a destination bucket; an SSE-KMS key held in some region; the
SNS topic, SQS queue or Lambda function a bucket's notifications go to; the
S3 table bucket its metadata tables are kept in. Each
one is either judged or refused here, never passed on unread:

- a destination bucket becomes a `Flow` (the source's data, or its key names
  and metadata, into the whole destination bucket, a ``write``) that the
  policy engine judges like a copy;
- a key, notification target or table bucket named by an ARN becomes a `Remote` with the
  ARN's region, which the engine refuses unless it is the data's region
  (rule ``remote region``). A bare key id or alias resolves in the bucket's
  own region and is accepted;
- grants on what is written at a destination (a restore's ``CannedACL`` other
  than an owner-only one, ``AccessControlList``, logging's ``TargetGrants``)
  are judged as ``admin`` on the destination too;
- a redirect to another host (``x-amz-website-redirect-location`` that is not
  a path of the same bucket, a website configuration's ``HostName``) is
  refused.

A destination is judged as its whole bucket, whatever prefix the body names:
how S3 joins the prefix to the keys it writes is not for the proxy to guess.
A body is read strictly, as multi-object delete bodies are
(`proxy.s3.delete.parse_xml_body`): no DTD, entities, comments, processing
instructions, other namespaces, text outside leaf elements, or an encoding
other than UTF-8. Every occurrence of a destination-bearing element is
judged, wherever it sits in the document, so S3 cannot read one the proxy
did not; an ARN in any other element is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from proxy.domain import Access, Action, Flow, Remote, Resource
from proxy.errors import BadRequest
from proxy.s3.delete import local_name, parse_xml_body
from proxy.s3.names import bucket_name_problem
from proxy.s3.placement import REGION_NAME

if TYPE_CHECKING:

    from proxy.storage.target import QueryParam

KMS_KEY_HEADER = "x-amz-server-side-encryption-aws-kms-key-id"
REDIRECT_HEADER = "x-amz-website-redirect-location"
SMALL_BODY = 64 * 1024
LARGE_BODY = 512 * 1024  # replication and notification configurations hold many rules (1000 at most)
# The parse costs about as much per element as per byte: a body of nothing but tiny elements is
# refused before it is parsed. Each element costs at least one "<"; 1000 replication rules with
# filters take about 30,000.
MAX_TAGS = 40_000
_CODE = "MalformedXML"
_ARGUMENT = "InvalidArgument"
_PARTITION = re.compile(r"aws(?:-[a-z]+)*")
_ACCOUNT = re.compile(r"\d{12}")
_KEY_ID = re.compile(r"[A-Za-z0-9-]{1,128}")
_ALIAS = re.compile(r"alias/[A-Za-z0-9/_-]{1,250}")
_ARN_RESOURCE = re.compile(r"[\x21-\x7e]{1,1024}")
_BUCKET_ELEMENTS = frozenset({"Bucket", "BucketName", "TargetBucket"})
_KEY_ELEMENTS = frozenset({"KMSMasterKeyID", "ReplicaKmsKeyID", "KeyId", "KMSKeyId", "KMSKeyArn", "KmsKeyArn"})
# Places outside the storage named by ARN: the element, and the service its ARN must name.
_NOTIFY_ELEMENTS = {"Topic": "sns", "Queue": "sqs", "CloudFunction": "lambda", "TableBucketArn": "s3tables"}
# IAM roles S3 assumes: global, not a place data goes to.
_ROLE_ELEMENTS = frozenset({"Role", "InvocationRole"})
_REDIRECT_MAX = 2048  # S3's own limit on the header
# Grants on what the storage server writes at a destination (a restore's output, access logs):
# judged as admin on the destination, as x-amz-acl and x-amz-grant-* are on a write.
_GRANT_ELEMENTS = frozenset({"Grant", "Grantee"})
_OWNER_ONLY_ACLS = frozenset({"private", "bucket-owner-read", "bucket-owner-full-control"})
# Every element naming a place that `body_destinations` judges (or refuses) in a body of `BODY_RULES`:
# tests walk botocore's S3 model against it, so a member S3 adds is reviewed before it is passed on.
JUDGED_ELEMENTS = (_BUCKET_ELEMENTS | _KEY_ELEMENTS | frozenset(_NOTIFY_ELEMENTS) | _ROLE_ELEMENTS | _GRANT_ELEMENTS
                   | frozenset({"HostName", "CannedACL"}))
# The headers naming a place that are judged here (the copy source is judged in `proxy.s3.copysource`).
JUDGED_HEADERS = frozenset({KMS_KEY_HEADER, REDIRECT_HEADER})


@dataclass(frozen=True, slots=True)
class BodyRule:
    """How one operation's body is read: its root element, size cap, and what its destinations receive.

    `sends` is the action the destination learns of the source: ``read``
    (the data), ``list`` (key names and metadata), or None when the body
    names no destination bucket (a bucket named in it is then refused).
    """

    root: str
    limit: int
    sends: Action | None


BODY_RULES: dict[str, BodyRule] = {
    "RestoreObject": BodyRule("RestoreRequest", SMALL_BODY, Action.READ),
    "PutBucketReplication": BodyRule("ReplicationConfiguration", LARGE_BODY, Action.READ),
    "PutBucketInventoryConfiguration": BodyRule("InventoryConfiguration", SMALL_BODY, Action.LIST),
    "PutBucketLogging": BodyRule("BucketLoggingStatus", SMALL_BODY, Action.LIST),
    "PutBucketAnalyticsConfiguration": BodyRule("AnalyticsConfiguration", SMALL_BODY, Action.LIST),
    "PutBucketNotificationConfiguration": BodyRule("NotificationConfiguration", LARGE_BODY, None),
    "PutBucketEncryption": BodyRule("ServerSideEncryptionConfiguration", SMALL_BODY, None),
    "PutBucketWebsite": BodyRule("WebsiteConfiguration", SMALL_BODY, None),
    "UpdateObjectEncryption": BodyRule("ObjectEncryption", SMALL_BODY, None),
    # S3 Metadata: object metadata written to tables in an S3 table bucket named by ARN.
    "CreateBucketMetadataConfiguration": BodyRule("MetadataConfiguration", SMALL_BODY, None),
    "CreateBucketMetadataTableConfiguration": BodyRule("MetadataTableConfiguration", SMALL_BODY, None),
    "UpdateBucketMetadataInventoryTableConfiguration": BodyRule("InventoryTableConfiguration", SMALL_BODY, None),
    "UpdateBucketMetadataJournalTableConfiguration": BodyRule("JournalTableConfiguration", SMALL_BODY, None),
}


def kms_key_region(value: str, where: str) -> str | None:
    """The region of an SSE-KMS key id, key ARN, alias or alias ARN; None for an id or alias (the bucket's own).

    Raises `BadRequest` for anything else, an ARN above all that is not exactly
    ``arn:PARTITION:kms:REGION:ACCOUNT:key/ID`` or ``…:alias/NAME``.
    """
    if not value or _KEY_ID.fullmatch(value) or _ALIAS.fullmatch(value):
        return None
    parts = value.split(":")
    if (len(parts) == 6 and parts[0] == "arn" and _PARTITION.fullmatch(parts[1]) and parts[2] == "kms"
            and REGION_NAME.fullmatch(parts[3]) and _ACCOUNT.fullmatch(parts[4])
            and ((parts[5].startswith("key/") and _KEY_ID.fullmatch(parts[5][4:])) or _ALIAS.fullmatch(parts[5]))):
        return parts[3]
    raise BadRequest(
        f"{where} is not a KMS key id, alias, key ARN or alias ARN the proxy can read: {_shown(value)}",
        code=_ARGUMENT,
    )


def header_remotes(headers_values: list[str], params: tuple[QueryParam, ...]) -> tuple[Remote, ...]:
    """The SSE-KMS key a request names in its header or, in a presigned URL, its query; once at most."""
    values = list(headers_values)
    values += [p.value or "" for p in params if p.name.lower() == KMS_KEY_HEADER]
    if len(values) > 1:
        raise BadRequest(f"{KMS_KEY_HEADER} is given more than once", code=_ARGUMENT)
    if not values:
        return ()
    value = values[0].strip()
    region = kms_key_region(value, f"the {KMS_KEY_HEADER} header")
    return () if region is None else (Remote(f"the SSE-KMS key {value}", region),)


def check_redirect(headers_values: list[str], params: tuple[QueryParam, ...]) -> None:
    """Refuse a website redirect that is not a path in the same bucket (``/KEY``)."""
    values = list(headers_values)
    values += [p.value or "" for p in params if p.name.lower() == REDIRECT_HEADER]
    if len(values) > 1:
        raise BadRequest(f"{REDIRECT_HEADER} is given more than once", code=_ARGUMENT)
    for value in values:
        if (not value.startswith("/") or value.startswith("//") or "\\" in value or len(value) > _REDIRECT_MAX
                or any(not 0x21 <= ord(char) <= 0x7E for char in value)):
            raise BadRequest(
                f"{REDIRECT_HEADER} must be a path in the same bucket (\"/KEY\"): a redirect to another host "
                "or a URL sends readers where the policy cannot judge", code=_ARGUMENT,
            )


def body_destinations(
    operation: str, bucket: str, key: str | None, body: bytes | bytearray,
) -> tuple[tuple[Flow, ...], tuple[Remote, ...]]:
    """The flows and remotes the body of `operation` (a `BODY_RULES` key) names. Raises `BadRequest`."""
    rule = BODY_RULES[operation]
    what = f"the {operation} body"
    if not body.strip():
        return (), ()   # S3 refuses a missing body itself; nothing is named
    if body.count(b"<") > MAX_TAGS:
        raise BadRequest(f"{what} has more than {MAX_TAGS} tags", code=_CODE)
    root = parse_xml_body(body, what)
    if local_name(root, what) != rule.root:
        raise BadRequest(f"{what} must be a <{rule.root}> element", code=_CODE)
    if key is not None:
        source = Access(rule.sends or Action.READ, Resource("s3", bucket, key))
    else:
        source = Access(rule.sends or Action.READ, Resource("s3", bucket, ""), listing=True)
    flows: list[Flow] = []
    remotes: list[Remote] = []
    destinations: list[str] = []
    grants = False
    for element in root.iter():
        name = local_name(element, what)
        leaf = len(element) == 0
        if not leaf and element.text and element.text.strip():
            raise BadRequest(f"{what} has text outside the elements that hold it (in <{name}>)", code=_CODE)
        if element is not root and element.tail and element.tail.strip():
            raise BadRequest(f"{what} has text outside the elements that hold it (after <{name}>)", code=_CODE)
        if not leaf:
            if name in _BUCKET_ELEMENTS or name in _KEY_ELEMENTS or name in _NOTIFY_ELEMENTS or name == "HostName":
                raise BadRequest(f"<{name}> in {what} must hold only text", code=_CODE)
            grants = grants or name in _GRANT_ELEMENTS
            continue
        value = (element.text or "").strip(" \t\r\n")
        if name in _BUCKET_ELEMENTS:
            if rule.sends is None:
                raise BadRequest(f"{what} names a bucket in <{name}>, which the proxy does not judge", code=_CODE)
            destination = _bucket(value, f"<{name}> in {what}")
            if destination not in destinations:
                destinations.append(destination)
        elif name in _KEY_ELEMENTS:
            region = kms_key_region(value, f"<{name}> in {what}")
            if region is not None:
                remotes.append(Remote(f"the SSE-KMS key {value}", region))
        elif name in _NOTIFY_ELEMENTS:
            remotes.append(Remote(f"the {'table bucket' if name == 'TableBucketArn' else 'notification target'} "
                                  f"{value}",
                                  _service_arn_region(value, _NOTIFY_ELEMENTS[name], f"<{name}> in {what}")))
        elif name in _GRANT_ELEMENTS or (name == "CannedACL" and value not in _OWNER_ONLY_ACLS):
            grants = True
        elif name in _ROLE_ELEMENTS:
            _role(value, f"<{name}> in {what}")
        elif name == "HostName":
            raise BadRequest(
                f"<HostName> in {what} redirects readers to another host, which the policy cannot judge",
                code=_ARGUMENT,
            )
        elif value[:4].lower() == "arn:":
            raise BadRequest(
                f"<{name}> in {what} names an ARN ({_shown(value)}), which the proxy does not judge",
                code=_ARGUMENT,
            )
    for destination in destinations:
        flows.append(Flow(source, Access(Action.WRITE, Resource("s3", destination, ""), listing=True)))
        if grants:
            flows.append(Flow(source, Access(Action.ADMIN, Resource("s3", destination, ""), listing=True)))
    return tuple(flows), tuple(remotes)


def _bucket(value: str, where: str) -> str:
    """The bucket a destination names, as a name or as ``arn:PARTITION:s3:::BUCKET``."""
    name = value
    if value[:4].lower() == "arn:":
        parts = value.split(":")
        if not (len(parts) == 6 and parts[0] == "arn" and _PARTITION.fullmatch(parts[1]) and parts[2] == "s3"
                and not parts[3] and not parts[4]):
            raise BadRequest(
                f"{where} must name a bucket as arn:aws:s3:::BUCKET; {_shown(value)} is not one "
                "(access points, directory buckets and other ARNs stand for a bucket the proxy cannot see)",
                code=_ARGUMENT,
            )
        name = parts[5]
    problem = bucket_name_problem(name)
    if problem is not None:
        raise BadRequest(f"{where} does not name a valid bucket: {problem}", code=_ARGUMENT)
    return name


def _service_arn_region(value: str, service: str, where: str) -> str:
    """The region of ``arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE``; anything else is refused."""
    parts = value.split(":", 5)
    if (len(parts) == 6 and parts[0] == "arn" and _PARTITION.fullmatch(parts[1]) and parts[2] == service
            and REGION_NAME.fullmatch(parts[3]) and _ACCOUNT.fullmatch(parts[4]) and _ARN_RESOURCE.fullmatch(parts[5])):
        return parts[3]
    raise BadRequest(f"{where} must be an ARN of {service} with a region and account; {_shown(value)} is not",
                     code=_ARGUMENT)


def _role(value: str, where: str) -> None:
    parts = value.split(":", 5)
    if not (len(parts) == 6 and parts[0] == "arn" and _PARTITION.fullmatch(parts[1]) and parts[2] == "iam"
            and not parts[3] and _ACCOUNT.fullmatch(parts[4]) and parts[5].startswith("role/")
            and _ARN_RESOURCE.fullmatch(parts[5])):
        raise BadRequest(f"{where} must be an IAM role ARN; {_shown(value)} is not", code=_ARGUMENT)


def _shown(value: str) -> str:
    """A caller's value in an error message: quoted, cut short, never raw control characters."""
    return ascii(value[:200])
