"""Class 3: requests that send data to a second place, named in a header or the body.

An Irish caller may write and administer Dublin mail. With that right alone it
must not get the data somewhere else: a restore whose SELECT output goes to a
US bucket; replication, inventory, access logs or an analytics export into a
US bucket; an SSE-KMS key or a notification target in us-east-1; a redirect
of readers to another host. Each is refused by the proxy, nothing reaches the
storage server, and the audit line names the caller's real jurisdiction and
the destination. The same request within Dublin is forwarded and accepted by
a storage server that checks every signature (moto with IAM authentication):
the body read before the decision is forwarded byte for byte.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from proxy.harness import ProxyThread
from proxy.localstore import MotoServer
from tests.attacks.conftest import Target, assert_refused
from tests.conftest import DUBLIN, EXAMPLE_POLICIES, US, make_token, proxy_config
from tests.support.iam import signed_store
from tests.support.recorder import Recorder
from tests.support.records import wait_for_record

LOGS = "mail-eu-dublin-logs"   # a second bucket of the Dublin dataset
FILE = "alice/inbox/1.eml"
ACCOUNT = "123456789012"
KEY_US = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
KEY_IE = f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
# Dublin's home may do anything to Dublin mail, administration included; no one else may.
POLICY = f"""\
datasets:
  - name: dublin-mail
    region: eu-west-1
    resources: [s3://{DUBLIN}, s3://{LOGS}]
    rules:
      - id: home-admin
        allow: ["*"]
        from: [HOME]
      - id: eea-read
        allow: [read, list]
        from: [EEA]
      - id: no-us-access
        deny: ["*"]
        from: [US]
  - name: us-mail
    region: us-east-1
    resources: [s3://{US}]
    rules:
      - id: us-home
        allow: ["*"]
        from: [HOME]
      - id: adequate-read
        allow: [read, list]
        from: [ADEQUATE]
"""


@pytest.fixture(scope="module")
def store() -> Iterator[tuple[MotoServer, str, str]]:
    """moto with signature checks on after the set-up that makes the caller's keys and the buckets."""
    with signed_store("dublin-admin", {DUBLIN: "eu-west-1", LOGS: "eu-west-1", US: None}) as signed:
        signed.client().put_object(Bucket=DUBLIN, Key=FILE, Body=b"Dublin mail", StorageClass="GLACIER")
        yield signed.server, signed.key, signed.secret


@pytest.fixture(scope="module")
def relay(store: tuple[MotoServer, str, str]) -> Iterator[Recorder]:
    recorder = Recorder(store[0].port)
    yield recorder
    recorder.close()


@pytest.fixture(scope="module")
def audit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("destinations-audit") / "audit.jsonl"


@pytest.fixture(scope="module")
def admin_proxy(relay: Recorder, audit: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyThread]:
    folder = tmp_path_factory.mktemp("destinations") / "policies"
    folder.mkdir()
    shutil.copy(EXAMPLE_POLICIES / "jurisdictions.yaml", folder / "jurisdictions.yaml")
    (folder / "mail.yaml").write_text(POLICY)
    running = ProxyThread(replace(proxy_config(relay.url, audit), policies=folder)).start()
    yield running
    running.stop()


Client = Callable[[str], Any]


@pytest.fixture(scope="module")
def caller(admin_proxy: ProxyThread, store: tuple[MotoServer, str, str]) -> Client:
    """A boto3 client through the proxy, signing with keys the storage server knows, with a token of `code`."""
    _, key, secret = store

    def make(code: str) -> Any:
        client = boto3.client(
            "s3", endpoint_url=admin_proxy.url, region_name="us-east-1",
            aws_access_key_id=key, aws_secret_access_key=secret,
            config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )
        token = make_token(code, sub=f"attacker-{code}")

        def add_token(request: Any, **_: Any) -> None:
            request.headers["X-Bailiwick-Token"] = token

        client.meta.events.register("before-send.s3", add_token)
        return client

    return make


SELECT = {
    "Expression": "select s._1 from S3Object s", "ExpressionType": "SQL",
    "InputSerialization": {"CSV": {}}, "OutputSerialization": {"CSV": {}},
}


def restore_into(bucket: str) -> dict[str, Any]:
    return {"Bucket": DUBLIN, "Key": FILE, "RestoreRequest": {
        "Type": "SELECT", "Tier": "Standard", "SelectParameters": SELECT,
        "OutputLocation": {"S3": {"BucketName": bucket, "Prefix": "stolen/"}}}}


def destination(arn: str) -> dict[str, Any]:
    return {"Bucket": arn, "Format": "CSV"}


# Each sends Dublin data (or its key names) to the US, or ties it to a US key or target.
ATTACKS: dict[str, tuple[str, dict[str, Any], str]] = {
    "restore-output": ("restore_object", restore_into(US), f"s3://{US}"),
    "replication": ("put_bucket_replication", {"Bucket": DUBLIN, "ReplicationConfiguration": {
        "Role": f"arn:aws:iam::{ACCOUNT}:role/replication",
        "Rules": [{"ID": "all", "Status": "Enabled", "Priority": 1, "Filter": {"Prefix": ""},
                   "DeleteMarkerReplication": {"Status": "Disabled"},
                   "Destination": {"Bucket": f"arn:aws:s3:::{US}"}}]}}, f"s3://{US}"),
    "inventory": ("put_bucket_inventory_configuration", {
        "Bucket": DUBLIN, "Id": "inv", "InventoryConfiguration": {
            "Id": "inv", "IsEnabled": True, "IncludedObjectVersions": "All", "Schedule": {"Frequency": "Daily"},
            "Destination": {"S3BucketDestination": destination(f"arn:aws:s3:::{US}")}}}, f"s3://{US}"),
    "logging": ("put_bucket_logging", {"Bucket": DUBLIN, "BucketLoggingStatus": {
        "LoggingEnabled": {"TargetBucket": US, "TargetPrefix": "dublin/"}}}, f"s3://{US}"),
    "analytics-export": ("put_bucket_analytics_configuration", {
        "Bucket": DUBLIN, "Id": "a", "AnalyticsConfiguration": {"Id": "a", "StorageClassAnalysis": {"DataExport": {
            "OutputSchemaVersion": "V_1",
            "Destination": {"S3BucketDestination": destination(f"arn:aws:s3:::{US}")}}}}}, f"s3://{US}"),
    "notification": ("put_bucket_notification_configuration", {
        "Bucket": DUBLIN, "NotificationConfiguration": {"QueueConfigurations": [
            {"QueueArn": f"arn:aws:sqs:us-east-1:{ACCOUNT}:dublin-events", "Events": ["s3:ObjectCreated:*"]}]}},
        "arn:aws:sqs:us-east-1"),
    "bucket-encryption": ("put_bucket_encryption", {
        "Bucket": DUBLIN, "ServerSideEncryptionConfiguration": {"Rules": [
            {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": KEY_US}}]}}, KEY_US),
    "put-object-key": ("put_object", {"Bucket": DUBLIN, "Key": "alice/new.eml", "Body": b"x",
                                      "ServerSideEncryption": "aws:kms", "SSEKMSKeyId": KEY_US}, KEY_US),
    "put-object-dsse-key": ("put_object", {"Bucket": DUBLIN, "Key": "alice/new.eml", "Body": b"x",
                                           "ServerSideEncryption": "aws:kms:dsse", "SSEKMSKeyId": KEY_US}, KEY_US),
    "multipart-key": ("create_multipart_upload", {"Bucket": DUBLIN, "Key": "alice/big.eml",
                                                  "ServerSideEncryption": "aws:kms", "SSEKMSKeyId": KEY_US}, KEY_US),
    "copy-key": ("copy_object", {"Bucket": DUBLIN, "Key": "alice/copy.eml", "CopySource": f"{DUBLIN}/{FILE}",
                                 "ServerSideEncryption": "aws:kms", "SSEKMSKeyId": KEY_US}, KEY_US),
    "website-redirect": ("put_object", {"Bucket": DUBLIN, "Key": "alice/page.html", "Body": b"x",
                                        "WebsiteRedirectLocation": "https://example.com/"}, "another host"),
    "website-host": ("put_bucket_website", {"Bucket": DUBLIN, "WebsiteConfiguration": {
        "RedirectAllRequestsTo": {"HostName": "example.com"}}}, "another host"),
}


@pytest.mark.parametrize(("method", "arguments", "named"), ATTACKS.values(), ids=ATTACKS.keys())
def test_an_irish_admin_cannot_send_dublin_data_elsewhere(
    caller: Client, relay: Recorder, audit: Path, method: str, arguments: dict[str, Any], named: str,
) -> None:
    mark = relay.mark()
    with pytest.raises(ClientError) as refused:
        getattr(caller("IE"), method)(**arguments)
    error = refused.value.response
    assert error["Error"]["Code"] in ("AccessDenied", "InvalidArgument"), error
    assert relay.since(mark) == b"", relay.since(mark)[:300]   # not one byte reached the storage server
    request_id = error["ResponseMetadata"]["RequestId"]
    line = wait_for_record(audit, lambda record: record["decision_id"] == request_id)
    assert line["caller"]["jurisdiction"] == "IE"
    assert line["decision"] == "deny"
    assert named in line["reason"], line["reason"]


def test_the_restore_output_never_reaches_the_us_bucket(
    caller: Client, store: tuple[MotoServer, str, str], relay: Recorder, audit: Path,
) -> None:
    mark = relay.mark()
    with pytest.raises(ClientError) as refused:
        caller("IE").restore_object(**restore_into(US))
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert relay.since(mark) == b""
    line = wait_for_record(audit, lambda r: r["decision_id"] == refused.value.response["ResponseMetadata"]["RequestId"])
    assert (line["request"]["operation"], line["rule"]) == ("RestoreObject", "no-us-access")
    assert line["reason"] == (f"sending data held in eu-west-1 (IE) to s3://{US}, held in us-east-1 (US), "
                              "requires that US may read it, and the policy does not allow that")
    server, key, secret = store
    direct = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1", aws_access_key_id=key,
                          aws_secret_access_key=secret)
    assert direct.list_objects_v2(Bucket=US)["KeyCount"] == 0


# The same requests within Dublin: forwarded byte for byte and accepted by the signature-checking store.
ALLOWED: dict[str, tuple[str, dict[str, Any]]] = {
    "put-object-dublin-key": ("put_object", {"Bucket": DUBLIN, "Key": "alice/kms.eml", "Body": b"Dublin kms",
                                             "ServerSideEncryption": "aws:kms", "SSEKMSKeyId": KEY_IE}),
    "put-object-bare-key-id": ("put_object", {"Bucket": DUBLIN, "Key": "alice/kms2.eml", "Body": b"x",
                                              "ServerSideEncryption": "aws:kms",
                                              "SSEKMSKeyId": "1234abcd-12ab-34cd-56ef-1234567890ab"}),
    "bucket-encryption-dublin-key": ("put_bucket_encryption", {
        "Bucket": DUBLIN, "ServerSideEncryptionConfiguration": {"Rules": [
            {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": KEY_IE}}]}}),
    "inventory-into-dublin": ("put_bucket_inventory_configuration", {
        "Bucket": DUBLIN, "Id": "inv", "InventoryConfiguration": {
            "Id": "inv", "IsEnabled": True, "IncludedObjectVersions": "All", "Schedule": {"Frequency": "Daily"},
            "Destination": {"S3BucketDestination": destination(f"arn:aws:s3:::{LOGS}")}}}),
    "website-same-bucket-redirect": ("put_object", {"Bucket": DUBLIN, "Key": "alice/old.html", "Body": b"x",
                                                    "WebsiteRedirectLocation": "/alice/new.html"}),
}


@pytest.mark.parametrize(("method", "arguments"), ALLOWED.values(), ids=ALLOWED.keys())
def test_within_dublin_the_same_requests_are_forwarded_and_verified(
    caller: Client, relay: Recorder, audit: Path, method: str, arguments: dict[str, Any],
) -> None:
    mark = relay.mark()
    answer = getattr(caller("IE"), method)(**arguments)
    assert answer["ResponseMetadata"]["HTTPStatusCode"] in (200, 204)
    assert relay.since(mark) != b""   # forwarded, and the store verified the signature over the body read
    resource = f"s3://{arguments['Bucket']}" + (f"/{arguments['Key']}" if "Key" in arguments else "")
    line = wait_for_record(audit, lambda r: r["request"]["resource"] == resource and r["decision"] == "allow"
                           and r["status"] == answer["ResponseMetadata"]["HTTPStatusCode"])
    assert line["caller"]["jurisdiction"] == "IE"


def test_a_restore_without_an_output_location_is_forwarded_and_verified(caller: Client, relay: Recorder) -> None:
    mark = relay.mark()
    answer = caller("IE").restore_object(Bucket=DUBLIN, Key=FILE, RestoreRequest={"Days": 1})
    assert answer["ResponseMetadata"]["HTTPStatusCode"] in (200, 202)
    assert b"POST /" + DUBLIN.encode() + b"/alice/inbox/1.eml?restore" in relay.since(mark)


def test_the_dublin_key_object_reads_back(caller: Client) -> None:
    caller("IE").put_object(Bucket=DUBLIN, Key="alice/kms3.eml", Body=b"Dublin kms",
                            ServerSideEncryption="aws:kms", SSEKMSKeyId=KEY_IE)
    body = caller("IE").get_object(Bucket=DUBLIN, Key="alice/kms3.eml")["Body"].read()
    assert body == b"Dublin kms"


# ---- raw requests, under both of aiohttp's parsers (shipped policies, session proxy) ----------------------

RESTORE_BODY = (
    "<RestoreRequest><Type>SELECT</Type><Tier>Standard</Tier><SelectParameters><InputSerialization><CSV/>"
    "</InputSerialization><ExpressionType>SQL</ExpressionType><Expression>select s._1 from S3Object s</Expression>"
    "<OutputSerialization><CSV/></OutputSerialization></SelectParameters><OutputLocation><S3>"
    "<BucketName>{bucket}</BucketName><Prefix>stolen/</Prefix></S3></OutputLocation></RestoreRequest>"
)


def raw(method: str, target: str, headers: str = "", body: str = "") -> bytes:
    return (f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bailiwick-Token: {{IE}}\r\n{{SIGV4}}{headers}"
            f"Content-Length: {len(body.encode())}\r\nConnection: close\r\n\r\n{body}").encode()


RAW = {
    "restore-into-us": raw("POST", f"/{DUBLIN}/{FILE}?restore", body=RESTORE_BODY.format(bucket=US)),
    "restore-into-us-arn": raw("POST", f"/{DUBLIN}/{FILE}?restore",
                               body=RESTORE_BODY.format(bucket=f"arn:aws:s3:::{US}")),
    "restore-into-us-twice": raw("POST", f"/{DUBLIN}/{FILE}?restore", body=RESTORE_BODY.format(
        bucket=DUBLIN).replace("</BucketName>", f"</BucketName><BucketName>{US}</BucketName>")),
    "restore-into-us-namespaced": raw("POST", f"/{DUBLIN}/{FILE}?restore", body=RESTORE_BODY.format(
        bucket=US).replace("<RestoreRequest>", '<RestoreRequest xmlns="http://s3.amazonaws.com/doc/2006-03-01/">')),
    "restore-into-access-point": raw("POST", f"/{DUBLIN}/{FILE}?restore", body=RESTORE_BODY.format(
        bucket=f"arn:aws:s3:us-east-1:{ACCOUNT}:accesspoint/ap")),
    "restore-into-us-utf16": raw("POST", f"/{DUBLIN}/{FILE}?restore",
                                 body='<?xml version="1.0" encoding="UTF-16"?>' + RESTORE_BODY.format(bucket=US)),
    "put-object-us-key": raw("PUT", f"/{DUBLIN}/alice/k.eml", "x-amz-server-side-encryption: aws:kms\r\n"
                             f"x-amz-server-side-encryption-aws-kms-key-id: {KEY_US}\r\n", "x"),
    "put-object-us-alias": raw("PUT", f"/{DUBLIN}/alice/k.eml",
                               f"x-amz-server-side-encryption-aws-kms-key-id: arn:aws:kms:us-east-1:{ACCOUNT}:alias/a"
                               "\r\n", "x"),
    "put-object-key-in-query": raw("PUT", f"/{DUBLIN}/alice/k.eml?x-amz-server-side-encryption-aws-kms-key-id="
                                   + KEY_US.replace(":", "%3A").replace("/", "%2F"), body="x"),
    "put-object-two-keys": raw("PUT", f"/{DUBLIN}/alice/k.eml",
                               f"x-amz-server-side-encryption-aws-kms-key-id: {KEY_IE}\r\n"
                               f"X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id: {KEY_US}\r\n", "x"),
    "put-object-malformed-key-arn": raw("PUT", f"/{DUBLIN}/alice/k.eml",
                                        f"x-amz-server-side-encryption-aws-kms-key-id: arn:aws:kms:us-east-1:{ACCOUNT}"
                                        ":key/k:x\r\n", "x"),
    "multipart-us-key": raw("POST", f"/{DUBLIN}/alice/big.eml?uploads",
                            f"x-amz-server-side-encryption-aws-kms-key-id: {KEY_US}\r\n"),
    "copy-us-key": raw("PUT", f"/{DUBLIN}/alice/copy.eml", f"x-amz-copy-source: /{DUBLIN}/{FILE}\r\n"
                       f"x-amz-server-side-encryption-aws-kms-key-id: {KEY_US}\r\n"),
    "redirect-to-host": raw("PUT", f"/{DUBLIN}/alice/page.html",
                            "x-amz-website-redirect-location: http://example.com/\r\n", "x"),
    "redirect-protocol-relative": raw("PUT", f"/{DUBLIN}/alice/page.html",
                                      "x-amz-website-redirect-location: //example.com/\r\n", "x"),
}


@pytest.mark.parametrize("request_bytes", RAW.values(), ids=RAW.keys())
def test_raw_requests_naming_a_second_place_are_refused(any_parser: Target, request_bytes: bytes) -> None:
    answer = assert_refused(any_parser, request_bytes, by="proxy")
    assert answer.request_id is not None
    line = wait_for_record(any_parser.audit, lambda r: r["decision_id"] == answer.request_id)
    assert line["caller"]["jurisdiction"] == "IE"
    assert line["decision"] == "deny"
