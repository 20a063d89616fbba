"""Requests that name a second place: each operation and body -> the flows and remotes judged, or a refusal."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.api import ParsedRequest
from proxy.domain import Access, Action, Flow, Remote, Resource
from proxy.errors import BadRequest
from proxy.s3.api import S3Api
from proxy.s3.destinations import BODY_RULES, LARGE_BODY, MAX_TAGS, SMALL_BODY, kms_key_region
from proxy.s3.names import bucket_name_problem

from .helpers import PATH_HOST, SETTINGS, parse

R, L, W, A = Action.READ, Action.LIST, Action.WRITE, Action.ADMIN
API = S3Api(SETTINGS)
NS = ' xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'
KEY_ARN_US = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
KEY_ARN_IE = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def parsed(method: str, target: str, *pairs: tuple[str, str]) -> ParsedRequest:
    headers: CIMultiDict[str] = CIMultiDict([("Host", PATH_HOST), *pairs])
    return API.parse(method, target, CIMultiDictProxy(headers))


def expand(method: str, target: str, body: str) -> ParsedRequest:
    request = parsed(method, target)
    assert request.body_limit is not None
    return API.expand(request, body.encode())


def whole(bucket: str, action: Action = W) -> Access:
    return Access(action, Resource("s3", bucket, ""), listing=True)


SRC_OBJECT = Access(R, Resource("s3", "src", "k"))

RESTORE_SELECT = """<RestoreRequest""" + NS + """><Type>SELECT</Type><Tier>Standard</Tier>
<SelectParameters><InputSerialization><CSV/></InputSerialization><ExpressionType>SQL</ExpressionType>
<Expression>{query}</Expression><OutputSerialization><CSV/></OutputSerialization></SelectParameters>
<OutputLocation><S3><BucketName>dest</BucketName><Prefix>out/</Prefix>{extra}</S3></OutputLocation>
</RestoreRequest>"""


def restore(extra: str = "") -> str:
    """A SELECT restore whose output goes to the bucket "dest", with `extra` inside <S3>."""
    return RESTORE_SELECT.format(extra=extra, query="select s._1 from S3Object s")


RESTORE = restore()


@pytest.mark.parametrize(("method", "target", "body", "flows", "remotes"), [
    # RestoreObject: a plain restore names nothing; SELECT output goes to a bucket, judged as a flow
    ("POST", "/src/k?restore", "<RestoreRequest><Days>1</Days></RestoreRequest>", (), ()),
    ("POST", "/src/k?restore", "", (), ()),
    ("POST", "/src/k?restore&versionId=v", RESTORE, (Flow(SRC_OBJECT, whole("dest")),), ()),
    ("POST", "/src/k?restore", restore(
        f"<Encryption><EncryptionType>aws:kms</EncryptionType><KMSKeyId>{KEY_ARN_US}</KMSKeyId></Encryption>"),
     (Flow(SRC_OBJECT, whole("dest")),), (Remote(f"the SSE-KMS key {KEY_ARN_US}", "us-east-1"),)),
    ("POST", "/src/k?restore", restore("<CannedACL>private</CannedACL>"),
     (Flow(SRC_OBJECT, whole("dest")),), ()),
    # grants on the output are admin on the destination, as x-amz-acl is on a write
    ("POST", "/src/k?restore", restore("<CannedACL>public-read</CannedACL>"),
     (Flow(SRC_OBJECT, whole("dest")), Flow(SRC_OBJECT, whole("dest", A))), ()),
    ("POST", "/src/k?restore", restore(
        "<AccessControlList><Grant><Grantee><URI>http://acs.amazonaws.com/groups/global/AllUsers</URI>"
              "</Grantee><Permission>READ</Permission></Grant></AccessControlList>"),
     (Flow(SRC_OBJECT, whole("dest")), Flow(SRC_OBJECT, whole("dest", A))), ()),
    # replication: the whole bucket's data into every destination named
    ("PUT", "/src?replication", f"""<ReplicationConfiguration{NS}>
      <Role>arn:aws:iam::123456789012:role/replication</Role>
      <Rule><ID>a</ID><Status>Enabled</Status><Priority>1</Priority><Filter><Prefix>x/</Prefix></Filter>
        <Destination><Bucket>arn:aws:s3:::dest</Bucket>
          <EncryptionConfiguration><ReplicaKmsKeyID>{KEY_ARN_IE}</ReplicaKmsKeyID></EncryptionConfiguration>
        </Destination></Rule>
      <Rule><ID>b</ID><Status>Enabled</Status><Destination><Bucket>arn:aws:s3:::other</Bucket></Destination></Rule>
     </ReplicationConfiguration>""",
     (Flow(whole("src", R), whole("dest")), Flow(whole("src", R), whole("other"))),
     (Remote(f"the SSE-KMS key {KEY_ARN_IE}", "eu-west-1"),)),
    # inventory, analytics, logging: key names and metadata of the whole bucket
    ("PUT", "/src?inventory&id=i", """<InventoryConfiguration><Id>i</Id><IsEnabled>true</IsEnabled>
      <Destination><S3BucketDestination><AccountId>123456789012</AccountId><Bucket>arn:aws:s3:::dest</Bucket>
      <Format>CSV</Format><Encryption><SSE-KMS><KeyId>alias/inventory</KeyId></SSE-KMS></Encryption>
      </S3BucketDestination></Destination><IncludedObjectVersions>All</IncludedObjectVersions>
      <Schedule><Frequency>Daily</Frequency></Schedule></InventoryConfiguration>""",
     (Flow(whole("src", L), whole("dest")),), ()),
    ("PUT", "/src?analytics&id=i", """<AnalyticsConfiguration><Id>i</Id><StorageClassAnalysis><DataExport>
      <OutputSchemaVersion>V_1</OutputSchemaVersion><Destination><S3BucketDestination><Format>CSV</Format>
      <Bucket>arn:aws-cn:s3:::dest</Bucket></S3BucketDestination></Destination></DataExport>
      </StorageClassAnalysis></AnalyticsConfiguration>""",
     (Flow(whole("src", L), whole("dest")),), ()),
    ("PUT", "/src?logging", f"<BucketLoggingStatus{NS}><LoggingEnabled><TargetBucket>logs</TargetBucket>"
     "<TargetPrefix>src/</TargetPrefix></LoggingEnabled></BucketLoggingStatus>",
     (Flow(whole("src", L), whole("logs")),), ()),
    ("PUT", "/src?logging", "<BucketLoggingStatus><LoggingEnabled><TargetBucket>logs</TargetBucket>"
     "<TargetGrants><Grant><Grantee><ID>x</ID></Grantee><Permission>READ</Permission></Grant></TargetGrants>"
     "</LoggingEnabled></BucketLoggingStatus>",
     (Flow(whole("src", L), whole("logs")), Flow(whole("src", L), whole("logs", A))), ()),
    ("PUT", "/src?logging", f"<BucketLoggingStatus{NS}/>", (), ()),   # logging off
    # keys, notification targets and table buckets: their region is judged
    ("PUT", "/src?encryption", f"""<ServerSideEncryptionConfiguration><Rule><ApplyServerSideEncryptionByDefault>
      <SSEAlgorithm>aws:kms</SSEAlgorithm><KMSMasterKeyID>{KEY_ARN_US}</KMSMasterKeyID>
      </ApplyServerSideEncryptionByDefault><BucketKeyEnabled>true</BucketKeyEnabled></Rule>
      </ServerSideEncryptionConfiguration>""", (), (Remote(f"the SSE-KMS key {KEY_ARN_US}", "us-east-1"),)),
    ("PUT", "/src?encryption", """<ServerSideEncryptionConfiguration><Rule><ApplyServerSideEncryptionByDefault>
      <SSEAlgorithm>aws:kms:dsse</SSEAlgorithm><KMSMasterKeyID>1234abcd-12ab-34cd-56ef-1234567890ab</KMSMasterKeyID>
      </ApplyServerSideEncryptionByDefault></Rule></ServerSideEncryptionConfiguration>""", (), ()),
    ("PUT", "/src/k?encryption", f"<ObjectEncryption><SSE-KMS><KMSKeyArn>{KEY_ARN_US}</KMSKeyArn></SSE-KMS>"
     "</ObjectEncryption>", (), (Remote(f"the SSE-KMS key {KEY_ARN_US}", "us-east-1"),)),
    ("PUT", "/src?notification", """<NotificationConfiguration>
      <TopicConfiguration><Id>t</Id><Topic>arn:aws:sns:us-east-1:123456789012:t</Topic>
        <Event>s3:ObjectCreated:*</Event></TopicConfiguration>
      <QueueConfiguration><Queue>arn:aws:sqs:eu-west-1:123456789012:q</Queue><Event>s3:*</Event></QueueConfiguration>
      <CloudFunctionConfiguration><CloudFunction>arn:aws:lambda:eu-west-1:123456789012:function:f:1</CloudFunction>
        <Event>s3:*</Event></CloudFunctionConfiguration>
      <EventBridgeConfiguration/></NotificationConfiguration>""", (),
     (Remote("the notification target arn:aws:sns:us-east-1:123456789012:t", "us-east-1"),
      Remote("the notification target arn:aws:sqs:eu-west-1:123456789012:q", "eu-west-1"),
      Remote("the notification target arn:aws:lambda:eu-west-1:123456789012:function:f:1", "eu-west-1"))),
    ("POST", "/src?metadataTable", """<MetadataTableConfiguration><S3TablesDestination>
      <TableBucketArn>arn:aws:s3tables:us-east-1:123456789012:bucket/meta</TableBucketArn>
      <TableName>t</TableName></S3TablesDestination></MetadataTableConfiguration>""", (),
     (Remote("the table bucket arn:aws:s3tables:us-east-1:123456789012:bucket/meta", "us-east-1"),)),
    ("PUT", "/src?metadataInventoryTable", f"""<InventoryTableConfiguration><ConfigurationState>ENABLED
      </ConfigurationState><EncryptionConfiguration><SseAlgorithm>aws:kms</SseAlgorithm>
      <KmsKeyArn>{KEY_ARN_US}</KmsKeyArn></EncryptionConfiguration></InventoryTableConfiguration>""", (),
     (Remote(f"the SSE-KMS key {KEY_ARN_US}", "us-east-1"),)),
    # a website's routing rules on the same host name nothing
    ("PUT", "/src?website", """<WebsiteConfiguration><IndexDocument><Suffix>index.html</Suffix></IndexDocument>
      <RoutingRules><RoutingRule><Condition><KeyPrefixEquals>a/</KeyPrefixEquals></Condition>
      <Redirect><ReplaceKeyPrefixWith>b/</ReplaceKeyPrefixWith></Redirect></RoutingRule></RoutingRules>
      </WebsiteConfiguration>""", (), ()),
])
def test_what_a_body_names_is_judged(
    method: str, target: str, body: str, flows: tuple[Flow, ...], remotes: tuple[Remote, ...],
) -> None:
    request = expand(method, target, body)
    assert request.body_limit is None
    assert request.request.flows == flows
    assert request.request.remotes == remotes
    assert request.request.accesses == parsed(method, target).request.accesses   # the targets are kept


@pytest.mark.parametrize(("method", "target", "body", "reason"), [
    ("POST", "/src/k?restore", RESTORE.replace("dest", "arn:aws:s3:eu-west-1:123456789012:accesspoint/d"),
     "must name a bucket as arn:aws:s3:::BUCKET"),
    ("POST", "/src/k?restore", RESTORE.replace("dest", "Dest"), "does not name a valid bucket"),
    ("POST", "/src/k?restore", RESTORE.replace("dest", ""), "does not name a valid bucket"),
    ("POST", "/src/k?restore", RESTORE.replace("dest", "my-ap-abcdefghij-s3alias"),
     "does not name a valid bucket"),
    ("POST", "/src/k?restore", RESTORE.replace("<S3>", "<S3><!---->"),
     "comments or processing instructions"),
    ("POST", "/src/k?restore", RESTORE.replace("<BucketName>dest", "<BucketName><x/>dest"),
     "must hold only text"),
    ("POST", "/src/k?restore", RESTORE.replace("<BucketName>", '<BucketName xmlns="urn:x">'),
     "unexpected XML namespace"),
    ("POST", "/src/k?restore", RESTORE.replace("<S3>", "<S3>dest"), "text outside the elements"),
    ("POST", "/src/k?restore", '<!DOCTYPE r [<!ENTITY b "dest">]><RestoreRequest/>', "DTD"),
    ("POST", "/src/k?restore", "<RestoreRequest><Days>1</Days>", "not well-formed"),
    ("POST", "/src/k?restore", "<Restore><Days>1</Days></Restore>", "must be a <RestoreRequest> element"),
    ("POST", "/src/k?restore", '<?xml version="1.0" encoding="UTF-16"?>' + RESTORE,
     "must declare UTF-8"),
    ("PUT", "/src?replication", "<ReplicationConfiguration><Role>arn:aws:iam::123456789012:role/r</Role><Rule>"
     "<Destination><Bucket>arn:aws:s3express:eu-west-1:123456789012:bucket/d--euw1-az1--x-s3</Bucket>"
     "</Destination></Rule></ReplicationConfiguration>", "must name a bucket as arn:aws:s3:::BUCKET"),
    ("PUT", "/src?replication", "<ReplicationConfiguration><Role>arn:aws:sts::123456789012:x</Role>"
     "</ReplicationConfiguration>", "must be an IAM role ARN"),
    ("PUT", "/src?replication", "<ReplicationConfiguration><Rule><Destination><Bucket>arn:aws:s3:::a:b</Bucket>"
     "</Destination></Rule></ReplicationConfiguration>", "must name a bucket"),
    ("PUT", "/src?notification", "<NotificationConfiguration><TopicConfiguration>"
     "<Topic>arn:aws:sqs:us-east-1:123456789012:t</Topic></TopicConfiguration></NotificationConfiguration>",
     "must be an ARN of sns"),
    ("PUT", "/src?notification", "<NotificationConfiguration><QueueConfiguration>"
     "<Queue>arn:aws:sqs::123456789012:q</Queue></QueueConfiguration></NotificationConfiguration>",
     "must be an ARN of sqs"),
    ("PUT", "/src?notification", "<NotificationConfiguration><QueueConfiguration>"
     "<Queue>https://sqs.us-east-1.amazonaws.com/123456789012/q</Queue></QueueConfiguration>"
     "</NotificationConfiguration>", "must be an ARN of sqs"),
    # an ARN in an element the proxy does not know is not passed on unjudged
    ("PUT", "/src?notification", "<NotificationConfiguration><FutureConfiguration>"
     "<Target>arn:aws:events:us-east-1:123456789012:bus/b</Target></FutureConfiguration>"
     "</NotificationConfiguration>", "names an ARN"),
    ("PUT", "/src?inventory&id=i", "<InventoryConfiguration><Filter><AccessPointArn>"
     "arn:aws:s3:us-east-1:123456789012:accesspoint/a</AccessPointArn></Filter></InventoryConfiguration>",
     "names an ARN"),
    # a bucket where none is expected, keys that cannot be read
    ("PUT", "/src?encryption", "<ServerSideEncryptionConfiguration><Bucket>dest</Bucket>"
     "</ServerSideEncryptionConfiguration>", "names a bucket"),
    ("PUT", "/src?encryption", "<ServerSideEncryptionConfiguration><Rule><ApplyServerSideEncryptionByDefault>"
     "<KMSMasterKeyID>arn:aws:kms:us-east-1:123456789012:key/a b</KMSMasterKeyID>"
     "</ApplyServerSideEncryptionByDefault></Rule></ServerSideEncryptionConfiguration>", "KMS key"),
    # a redirect to another host
    ("PUT", "/src?website", "<WebsiteConfiguration><RedirectAllRequestsTo><HostName>example.com</HostName>"
     "</RedirectAllRequestsTo></WebsiteConfiguration>", "another host"),
    ("PUT", "/src?website", "<WebsiteConfiguration><RoutingRules><RoutingRule><Redirect>"
     "<HostName>example.com</HostName></Redirect></RoutingRule></RoutingRules></WebsiteConfiguration>",
     "another host"),
])
def test_a_body_that_cannot_be_judged_is_refused(method: str, target: str, body: str, reason: str) -> None:
    with pytest.raises(BadRequest) as refused:
        expand(method, target, body)
    assert reason in refused.value.message


def test_a_body_of_many_tiny_elements_is_refused_before_it_is_parsed() -> None:
    body = "<NotificationConfiguration>" + "<a/>" * MAX_TAGS + "</NotificationConfiguration>"
    assert len(body) < LARGE_BODY
    with pytest.raises(BadRequest, match="tags"):
        expand("PUT", "/src?notification", body)
    rules = "".join(f"<Rule><ID>{n}</ID><Status>Enabled</Status><Priority>{n}</Priority><Filter><And><Prefix>p/"
                    f"</Prefix><Tag><Key>k</Key><Value>v</Value></Tag></And></Filter><Destination><Bucket>"
                    f"arn:aws:s3:::dest</Bucket></Destination><DeleteMarkerReplication><Status>Disabled</Status>"
                    f"</DeleteMarkerReplication></Rule>" for n in range(1000))
    body = f"<ReplicationConfiguration><Role>arn:aws:iam::{'1' * 12}:role/r</Role>{rules}</ReplicationConfiguration>"
    assert len(body) < LARGE_BODY   # S3's largest replication configuration fits
    assert expand("PUT", "/src?replication", body).request.flows == (Flow(whole("src", R), whole("dest")),)


def test_every_occurrence_is_judged_wherever_it_sits() -> None:
    # S3 might read either of two buckets, or one put somewhere unexpected: all are judged.
    body = ("<BucketLoggingStatus><LoggingEnabled><TargetBucket>a-logs</TargetBucket>"
            "<TargetBucket>b-logs</TargetBucket></LoggingEnabled><Extra><TargetBucket>c-logs</TargetBucket></Extra>"
            "</BucketLoggingStatus>")
    flows = expand("PUT", "/src?logging", body).request.flows
    assert [flow.destination.resource.bucket for flow in flows] == ["a-logs", "b-logs", "c-logs"]


@pytest.mark.parametrize(("operation", "target", "limit"), [
    ("RestoreObject", "/src/k?restore", SMALL_BODY),
    ("PutBucketReplication", "/src?replication", LARGE_BODY),
    ("PutBucketNotificationConfiguration", "/src?notification", LARGE_BODY),
    ("PutBucketLogging", "/src?logging", SMALL_BODY),
    ("PutBucketEncryption", "/src?encryption", SMALL_BODY),
])
def test_the_body_is_read_bounded_before_the_decision(operation: str, target: str, limit: int) -> None:
    method = "POST" if "restore" in target else "PUT"
    request = parsed(method, target)
    assert (request.operation, request.body_limit) == (operation, limit)
    assert operation in BODY_RULES


@pytest.mark.parametrize("target", ["/src?metrics&id=m", "/src?intelligent-tiering&id=i", "/src?lifecycle",
                                    "/src?cors", "/src?policy", "/src/k", "/src/k?select&select-type=2"])
def test_operations_that_name_no_destination_do_not_read_the_body(target: str) -> None:
    method = "POST" if "select" in target else "PUT"
    assert parsed(method, target).body_limit is None


# ---- headers -------------------------------------------------------------------

KMS = "x-amz-server-side-encryption-aws-kms-key-id"


@pytest.mark.parametrize(("method", "target", "pairs", "remotes"), [
    ("PUT", "/bkt/k", [(KMS, KEY_ARN_US)], (Remote(f"the SSE-KMS key {KEY_ARN_US}", "us-east-1"),)),
    ("PUT", "/bkt/k", [("X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id", KEY_ARN_IE)],
     (Remote(f"the SSE-KMS key {KEY_ARN_IE}", "eu-west-1"),)),
    ("POST", "/bkt/k?uploads", [(KMS, "arn:aws:kms:us-east-1:123456789012:alias/mine")],
     (Remote("the SSE-KMS key arn:aws:kms:us-east-1:123456789012:alias/mine", "us-east-1"),)),
    ("PUT", "/bkt/k", [("x-amz-copy-source", "/src/k"), (KMS, KEY_ARN_US)],
     (Remote(f"the SSE-KMS key {KEY_ARN_US}", "us-east-1"),)),
    ("PUT", "/bkt/k?x-amz-server-side-encryption-aws-kms-key-id=arn%3Aaws%3Akms%3Aus-east-1%3A123456789012%3Akey%2Fk",
     [], (Remote("the SSE-KMS key arn:aws:kms:us-east-1:123456789012:key/k", "us-east-1"),)),
    # a bare key id or alias resolves in the bucket's own region
    ("PUT", "/bkt/k", [(KMS, "1234abcd-12ab-34cd-56ef-1234567890ab")], ()),
    ("PUT", "/bkt/k", [(KMS, "mrk-1234abcd12ab34cd56ef1234567890ab")], ()),
    ("PUT", "/bkt/k", [(KMS, "alias/aws/s3")], ()),
    ("PUT", "/bkt/k", [("x-amz-website-redirect-location", "/bkt/other.html")], ()),
    ("PUT", "/bkt/k", [], ()),
])
def test_headers_that_name_a_key(
    method: str, target: str, pairs: list[tuple[str, str]], remotes: tuple[Remote, ...],
) -> None:
    assert parse(method, target, PATH_HOST, *pairs).remotes == remotes
    assert parsed(method, target, *pairs).request.remotes == remotes


@pytest.mark.parametrize(("target", "pairs", "reason"), [
    ("/bkt/k", [(KMS, KEY_ARN_US), (KMS, KEY_ARN_IE)], "more than once"),
    ("/bkt/k?x-amz-server-side-encryption-aws-kms-key-id=k", [(KMS, KEY_ARN_IE)], "more than once"),
    ("/bkt/k", [(KMS, "arn:aws:kms::123456789012:key/k")], "KMS key"),
    ("/bkt/k", [(KMS, "ARN:aws:kms:us-east-1:123456789012:key/k")], "KMS key"),
    ("/bkt/k", [(KMS, "arn:aws:kms:us-east-1:123456789012:key/k:extra")], "KMS key"),
    ("/bkt/k", [(KMS, "arn:aws:kms:us-east-1:12345:key/k")], "KMS key"),
    ("/bkt/k", [(KMS, "arn:aws:sqs:us-east-1:123456789012:key/k")], "KMS key"),
    ("/bkt/k", [(KMS, "k, arn:aws:kms:us-east-1:123456789012:key/k")], "KMS key"),
    ("/bkt/k", [("x-amz-website-redirect-location", "https://example.com/")], "another host"),
    ("/bkt/k", [("x-amz-website-redirect-location", "//example.com/x")], "another host"),
    ("/bkt/k", [("x-amz-website-redirect-location", "/\\example.com")], "another host"),
    ("/bkt/k", [("x-amz-website-redirect-location", "/a"), ("x-amz-website-redirect-location", "/b")],
     "more than once"),
    ("/bkt/k?x-amz-website-redirect-location=http%3A%2F%2Fexample.com", [], "another host"),
])
def test_headers_that_cannot_be_judged_are_refused(target: str, pairs: list[tuple[str, str]], reason: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse("PUT", target, PATH_HOST, *pairs)
    assert reason in refused.value.message


@given(st.text(max_size=80))
def test_a_key_region_is_only_ever_read_from_an_exact_arn(value: str) -> None:
    try:
        region = kms_key_region(value, "the key")
    except BadRequest:
        return
    if region is None:
        assert ":" not in value
    else:
        assert value.startswith("arn:aws")
        assert value.split(":")[2:4] == ["kms", region]


_BUCKETS = st.from_regex(r"[a-z0-9][a-z0-9-]{2,20}[a-z0-9]", fullmatch=True).filter(
    lambda name: bucket_name_problem(name) is None)
_WRAPPERS = st.lists(st.sampled_from(["S3", "Destination", "LoggingEnabled", "Rule", "X"]), max_size=3)


@given(st.lists(st.tuples(st.sampled_from(["Bucket", "BucketName", "TargetBucket"]), st.booleans(), _BUCKETS,
                          _WRAPPERS), min_size=1, max_size=6))
def test_every_bucket_named_anywhere_is_a_destination(named: list[tuple[str, bool, str, list[str]]]) -> None:
    parts = []
    for element, as_arn, bucket, wrappers in named:
        value = f"arn:aws:s3:::{bucket}" if as_arn else bucket
        inner = f"<{element}> {value}\n</{element}>"
        for wrapper in wrappers:
            inner = f"<{wrapper}>{inner}</{wrapper}>"
        parts.append(inner)
    body = f"<ReplicationConfiguration>{''.join(parts)}</ReplicationConfiguration>"
    flows = expand("PUT", "/src?replication", body).request.flows
    assert {flow.destination.resource.bucket for flow in flows} == {bucket for _, _, bucket, _ in named}
    assert all(flow.source == whole("src", R) and flow.destination.action is W for flow in flows)
