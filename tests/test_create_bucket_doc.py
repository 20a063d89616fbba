"""docs/policies.md, "Creating a dataset's bucket": its worked example, run as written against the proxy and moto.

The section's policy file is added to the shipped policy folder, and its AWS
CLI and boto3 commands are run through the real proxy in front of moto: with
the dataset's region they create the bucket, in that region; with another
region, none or a word that is not a region, they are refused as the section
says and nothing reaches the storage server.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from proxy.config import AccessKeyRule
from proxy.harness import ProxyThread
from tests.conftest import EXAMPLE_POLICIES, make_token, proxy_config, s3_client
from tests.support.recorder import Recorder

DOC = Path(__file__).resolve().parent.parent / "docs" / "policies.md"
IE_KEY, IE_SECRET = "AKIAIEBUCKETCREATOR", "ie-bucket-creator-secret-0123456789abcdef"


def _section() -> str:
    text = DOC.read_text()
    start = text.index("\n## Creating a dataset's bucket\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", _section(), flags=re.DOTALL)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped policies with the section's policy file added under the name its first line gives."""
    target = tmp_path_factory.mktemp("bootstrap") / "policies"
    shutil.copytree(EXAMPLE_POLICIES, target, ignore=shutil.ignore_patterns("tests"))
    (policy,) = _blocks("yaml")
    name = re.match(r"# (\S+\.yaml), a new file in the policy folder\n", policy)
    assert name is not None
    (target / name[1]).write_text(policy)
    return target


@pytest.fixture(scope="module")
def bootstrap_proxy(recorder: Recorder, folder: Path, tmp_path_factory: pytest.TempPathFactory,
                    ) -> Iterator[ProxyThread]:
    config = proxy_config(recorder.url, tmp_path_factory.mktemp("bootstrap-audit") / "audit.jsonl")
    keys = (AccessKeyRule(IE_KEY, "IE", "bucket-creator", secret_access_key=IE_SECRET),)
    identity = replace(config.identity, access_keys=keys, access_key_region="eu-west-1")
    running = ProxyThread(replace(config, identity=identity, policies=folder, region="eu-west-1")).start()
    yield running
    running.stop()


def _aws(proxy: ProxyThread, tmp: Path, region: str | None) -> subprocess.CompletedProcess[str]:
    """The section's AWS CLI command with the proxy's endpoint, and `region` in place of its own (None: none)."""
    (command,) = _blocks("sh")
    args = shlex.split(command.replace("\\\n", " "))
    args[args.index("--endpoint-url") + 1] = proxy.url
    if region is None:
        at = args.index("--create-bucket-configuration")
        del args[at:at + 2]
    elif region != "eu-west-1":
        args = [a.replace("LocationConstraint=eu-west-1", f"LocationConstraint={region}") for a in args]
    aws = shutil.which(args[0])
    assert aws is not None, "the AWS CLI is installed with the test extras (awscli)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    # No region of the CLI's own: the command as written says which region it signs for.
    env.update(AWS_ACCESS_KEY_ID=IE_KEY, AWS_SECRET_ACCESS_KEY=IE_SECRET, AWS_EC2_METADATA_DISABLED="true",
               HOME=str(tmp))
    return subprocess.run([aws, *args[1:]], capture_output=True, text=True, env=env, timeout=120, check=False)


def _bucket() -> str:
    (command,) = _blocks("sh")
    args = shlex.split(command.replace("\\\n", " "))
    return args[args.index("--bucket") + 1]


def _boto3(proxy: ProxyThread, jurisdiction: str, region: str) -> None:
    """The section's boto3 line, run as written with `region` in place of its own."""
    (line,) = _blocks("python")
    code = line.replace('"LocationConstraint": "eu-west-1"', f'"LocationConstraint": "{region}"')
    exec(compile(code, str(DOC), "exec"), {"s3": s3_client(proxy.url, make_token(jurisdiction))})  # noqa: S102


def _absent(direct: Any, bucket: str) -> bool:
    return bucket not in {b["Name"] for b in direct.list_buckets()["Buckets"]}


@pytest.mark.parametrize(("region", "said"), [
    ("us-east-1", "An error occurred (AccessDenied) when calling the CreateBucket operation"),
    (None, "An error occurred (AccessDenied) when calling the CreateBucket operation"),
    ("Dublin", "An error occurred (InvalidLocationConstraint) when calling the CreateBucket operation"),
])
def test_the_aws_cli_command_in_another_region_is_refused(
    bootstrap_proxy: ProxyThread, direct: Any, tmp_path: Path, region: str | None, said: str,
) -> None:
    done = _aws(bootstrap_proxy, tmp_path, region)
    assert done.returncode != 0
    assert said in done.stderr
    if region is not None and region != "Dublin":
        assert f"s3://{_bucket()} would be created in {region}" in done.stderr
    assert _absent(direct, _bucket())


def test_the_aws_cli_command_creates_the_bucket_in_the_datasets_region(
    bootstrap_proxy: ProxyThread, direct: Any, tmp_path: Path,
) -> None:
    bucket = _bucket()
    try:
        done = _aws(bootstrap_proxy, tmp_path, "eu-west-1")
        assert done.returncode == 0, done.stderr
        assert direct.get_bucket_location(Bucket=bucket)["LocationConstraint"] == "eu-west-1"
    finally:
        if not _absent(direct, bucket):
            direct.delete_bucket(Bucket=bucket)


@pytest.mark.parametrize(("jurisdiction", "region", "code"), [
    ("IE", "us-east-1", "AccessDenied"),
    ("DE", "eu-west-1", "AccessDenied"),    # the rule allows admin to Ireland only
    ("IE", "Dublin", "InvalidLocationConstraint"),
])
def test_the_boto3_line_refused(
    bootstrap_proxy: ProxyThread, direct: Any, jurisdiction: str, region: str, code: str,
) -> None:
    with pytest.raises(ClientError) as refused:
        _boto3(bootstrap_proxy, jurisdiction, region)
    assert refused.value.response["Error"]["Code"] == code
    assert _absent(direct, _bucket())


def test_the_boto3_line_creates_the_bucket(bootstrap_proxy: ProxyThread, direct: Any) -> None:
    bucket = _bucket()
    try:
        _boto3(bootstrap_proxy, "IE", "eu-west-1")
        assert direct.get_bucket_location(Bucket=bucket)["LocationConstraint"] == "eu-west-1"
    finally:
        if not _absent(direct, bucket):
            direct.delete_bucket(Bucket=bucket)
