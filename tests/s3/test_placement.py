"""CreateBucket's placement: the region read from its body, and the refusal of a bucket made in the wrong one.

Unit tests for the body reader, the engine's ``placement`` check on a
policy written for it, and the whole path through the real proxy to moto.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from hypothesis import given
from hypothesis import strategies as st

from proxy.domain import Access, AccessRequest, Action, Resource
from proxy.errors import BadRequest
from proxy.harness import ProxyThread
from proxy.policy.decision import Outcome
from proxy.policy.engine import decide
from proxy.policy.loader import load_policy
from proxy.policy.model import Policy
from proxy.s3.placement import placement_of
from tests.conftest import make_token, proxy_config, s3_client
from tests.support.recorder import Recorder

NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'


def body(inner: str, ns: str = NS) -> bytes:
    return f"<CreateBucketConfiguration {ns}>{inner}</CreateBucketConfiguration>".encode()


@pytest.mark.parametrize(("sent", "region"), [
    (b"", "us-east-1"),
    (b"  \n", "us-east-1"),
    (body(""), "us-east-1"),
    (body("<LocationConstraint></LocationConstraint>"), "us-east-1"),
    (body("<LocationConstraint>eu-west-1</LocationConstraint>"), "eu-west-1"),
    (body("<LocationConstraint> eu-central-1 </LocationConstraint>", ns=""), "eu-central-1"),
    (body("<LocationConstraint>EU</LocationConstraint>"), "eu-west-1"),
    (b'<?xml version="1.0" encoding="UTF-8"?>' + body("<LocationConstraint>ap-southeast-2</LocationConstraint>"),
     "ap-southeast-2"),
])
def test_the_region_is_read_as_s3_reads_it(sent: bytes, region: str) -> None:
    assert placement_of(sent) == region


@pytest.mark.parametrize(("sent", "problem"), [
    (body("<LocationConstraint>eu-west-1</LocationConstraint><LocationConstraint>us-east-1</LocationConstraint>"),
     "more than once"),
    (body("<Replication>us-east-1</Replication>"), "unexpected element"),
    # A directory bucket's or Local Zone bucket's zone places it, not LocationConstraint: not judged, refused.
    (body("<Location><Type>AvailabilityZone</Type><Name>use1-az4</Name></Location>"), "zone"),
    (body("<LocationConstraint>eu-west-1</LocationConstraint>"
          "<Location><Type>LocalZone</Type><Name>us-east-1-bos-1</Name></Location>"), "zone"),
    (body("<Bucket><Type>Directory</Type><DataRedundancy>SingleAvailabilityZone</DataRedundancy></Bucket>"),
     "zone"),
    (b"<Delete/>", "must be a <CreateBucketConfiguration>"),
    (body("<LocationConstraint>eu-<!-- -->west-1</LocationConstraint>"), "only text"),
    (body("<!-- --><LocationConstraint>eu-west-1</LocationConstraint>"), "comments"),
    (b'<!DOCTYPE x [<!ENTITY r "us-east-1">]>' + body("<LocationConstraint>&r;</LocationConstraint>"), "DTD"),
    (body("<LocationConstraint>Dublin</LocationConstraint>"), "not a region name"),
    (body("<LocationConstraint>eu-west-1"), "not well-formed"),
    (body("<LocationConstraint>eu-west-1</LocationConstraint>", ns='xmlns="urn:other"'), "namespace"),
])
def test_a_body_that_could_be_read_two_ways_is_refused(sent: bytes, problem: str) -> None:
    with pytest.raises(BadRequest, match=problem):
        placement_of(sent)


@given(st.binary(max_size=300))
def test_any_body_gives_a_region_or_a_refusal(sent: bytes) -> None:
    try:
        region = placement_of(sent)
    except BadRequest:
        return
    assert region == "us-east-1" or region.count("-") >= 2


POLICY = """\
regions:
  eu-west-1: IE
  us-east-1: US
datasets:
  - name: dublin-mail
    region: eu-west-1
    resources: [s3://mail-eu-*]
    rules:
      - id: irish-admins
        allow: ["*"]
        from: [IE]
  - name: dublin-archive
    region: eu-west-1
    mode: dry-run
    resources: [s3://archive-eu-*]
    rules:
      - allow: ["*"]
        from: [IE]
"""


@pytest.fixture(scope="module")
def policies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("placement") / "policies"
    folder.mkdir()
    (folder / "mail.yaml").write_text(textwrap.dedent(POLICY))
    return folder


def create(bucket: str, region: str | None) -> AccessRequest:
    return AccessRequest((Access(Action.ADMIN, Resource("s3", bucket, ""), listing=True),), placement=region)


@pytest.mark.parametrize(("bucket", "region", "proxy_region", "outcome"), [
    ("mail-eu-new", "eu-west-1", None, Outcome.ALLOW),
    ("mail-eu-new", "us-east-1", None, Outcome.DENY),
    ("mail-eu-new", "eu-west-1", "eu-west-1", Outcome.ALLOW),
    ("mail-eu-new", "eu-west-1", "us-east-1", Outcome.DENY),     # the region rule refuses it anyway
    ("archive-eu-new", "us-east-1", None, Outcome.DRY_RUN_DENY),  # a dry-run dataset records it
    ("mail-eu-new", None, None, Outcome.ALLOW),                   # no placement: nothing to check
])
def test_the_engine_refuses_a_bucket_made_outside_its_datasets_region(
    policies: Path, bucket: str, region: str | None, proxy_region: str | None, outcome: Outcome,
) -> None:
    policy: Policy = load_policy(policies)
    decision = decide(policy, "IE", create(bucket, region), proxy_region=proxy_region)
    assert decision.outcome is outcome
    if outcome is not Outcome.ALLOW and region != "eu-west-1":
        assert decision.rule == "placement"
        assert f"would be created in {region}" in decision.reason


def test_a_bucket_in_no_dataset_is_placed_only_in_the_proxys_region(policies: Path) -> None:
    policy = load_policy(policies)
    anywhere = decide(policy, "IE", create("scratch", "us-east-1"), unmatched_allow=True)
    assert anywhere.outcome is Outcome.ALLOW
    here = decide(policy, "IE", create("scratch", "us-east-1"), unmatched_allow=True, proxy_region="eu-west-1")
    assert (here.outcome, here.rule) == (Outcome.DENY, "placement")
    assert "this proxy runs in eu-west-1" in here.reason


@pytest.fixture(scope="module")
def admin_proxy(recorder: Recorder, policies: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyThread]:
    config = proxy_config(recorder.url, tmp_path_factory.mktemp("placement-audit") / "audit.jsonl")
    running = ProxyThread(replace(config, policies=policies)).start()
    yield running
    running.stop()


def test_create_bucket_through_the_proxy(admin_proxy: ProxyThread, recorder: Recorder, direct: Any) -> None:
    irish = s3_client(admin_proxy.url, make_token("IE"))
    mark = recorder.mark()
    with pytest.raises(ClientError) as refused:
        irish.create_bucket(Bucket="mail-eu-misplaced", CreateBucketConfiguration={"LocationConstraint": "us-east-2"})
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert "would be created in us-east-2" in refused.value.response["Error"]["Message"]
    assert recorder.since(mark) == b""
    with pytest.raises(ClientError):
        direct.head_bucket(Bucket="mail-eu-misplaced")
    # No body at all is us-east-1, as S3 reads it.
    with pytest.raises(ClientError) as refused:
        irish.create_bucket(Bucket="mail-eu-default")
    assert "would be created in us-east-1" in refused.value.response["Error"]["Message"]

    irish.create_bucket(Bucket="mail-eu-placed", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    assert direct.get_bucket_location(Bucket="mail-eu-placed")["LocationConstraint"] == "eu-west-1"
