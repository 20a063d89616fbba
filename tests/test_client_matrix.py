"""Real S3 clients through the proxy, identified by their access key (none of them sends a token).

For each client (boto3, the AWS CLI, rclone, s3cmd with SigV4 and SigV2, the
MinIO SDK): an Irish key puts, lists, gets (byte for byte) and deletes an
object in the Dublin bucket; a US key's read of the same bucket is refused and
the client itself reports access denied. The proxy holds both keys' secrets
and verifies every signature the clients make (SigV4 with their own
x-amz-content-sha256 choices, SigV2); a client with the right key id and a
wrong secret is refused. The bytes are checked on the storage server directly.

The command-line clients are installed by ``scripts/test`` (and CI); when one
is missing here the test is skipped, unless ``BAILIWICK_REQUIRE_CLIENTS=1``
makes it a failure, as in CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from proxy.config import AccessKeyRule
from proxy.harness import ProxyThread
from tests.conftest import DUBLIN, proxy_config
from tests.support.recorder import Recorder

IE_KEY, US_KEY = "AKIAIRELANDCLIENT", "AKIAUSACLIENT0000"
SECRETS = {IE_KEY: "irish-client-secret-0123456789abcdefghij", US_KEY: "us-client-secret-0123456789abcdefghijkl"}
PAYLOAD = bytes(range(256)) * 300 + b"\r\n\x00end"   # binary, 77 KB: more than one read anywhere


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} is not installed (scripts/test installs it)"
        if os.environ.get("BAILIWICK_REQUIRE_CLIENTS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def keyed_proxy(recorder: Recorder, seeded: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyThread]:
    config = proxy_config(recorder.url, tmp_path_factory.mktemp("matrix") / "audit.jsonl")
    keys = (AccessKeyRule(IE_KEY, "IE", "mail-client-ie", secret_access_key=SECRETS[IE_KEY]),
            AccessKeyRule(US_KEY, "US", "mail-client-us", secret_access_key=SECRETS[US_KEY]))
    identity = replace(config.identity, access_keys=keys, access_key_region="eu-west-1")
    # The shipped default: path-style only (no s3.virtual_hosts), which each client is configured for.
    running = ProxyThread(replace(config, identity=identity, s3=replace(config.s3, virtual_hosts=()))).start()
    yield running
    running.stop()


class Client:
    """One client's four operations and its refused read, through `endpoint` with `key`."""

    def __init__(self, endpoint: str, key: str, tmp: Path, secret: str | None = None) -> None:
        self.endpoint, self.key, self.tmp = endpoint, key, tmp
        self.secret = SECRETS[key] if secret is None else secret
        self.hostport = endpoint.removeprefix("http://")

    def put(self, bucket: str, key: str, data: bytes) -> None:
        raise NotImplementedError

    def get(self, bucket: str, key: str) -> bytes:
        raise NotImplementedError

    def list(self, bucket: str, prefix: str) -> list[str]:
        raise NotImplementedError

    def delete(self, bucket: str, key: str) -> None:
        raise NotImplementedError

    def denied(self, bucket: str, key: str) -> str:
        """Read a refused object; returns what the client said (its error)."""
        raise NotImplementedError

    def run(
        self, args: Sequence[str], *, env: dict[str, str] | None = None, ok: bool = True,
    ) -> subprocess.CompletedProcess[bytes]:
        done = subprocess.run(args, capture_output=True, env={**self.base_env(), **(env or {})}, timeout=60,
                              check=False)
        if ok and done.returncode != 0:
            raise AssertionError(f"{args[0]} failed ({done.returncode}): {done.stderr.decode(errors='replace')}")
        return done

    def base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_ACCESS_KEY_ID=self.key, AWS_SECRET_ACCESS_KEY=self.secret, AWS_DEFAULT_REGION="eu-west-1",
                   AWS_EC2_METADATA_DISABLED="true", HOME=str(self.tmp))
        return env


class Boto3(Client):
    def __init__(self, endpoint: str, key: str, tmp: Path, secret: str | None = None) -> None:
        super().__init__(endpoint, key, tmp, secret)
        self.s3 = boto3.client("s3", endpoint_url=endpoint, region_name="eu-west-1", aws_access_key_id=key,
                               aws_secret_access_key=self.secret,
                               config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))

    def put(self, bucket: str, key: str, data: bytes) -> None:
        self.s3.put_object(Bucket=bucket, Key=key, Body=data)

    def get(self, bucket: str, key: str) -> bytes:
        return bytes(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())

    def list(self, bucket: str, prefix: str) -> list[str]:
        return [o["Key"] for o in self.s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]

    def delete(self, bucket: str, key: str) -> None:
        self.s3.delete_object(Bucket=bucket, Key=key)

    def denied(self, bucket: str, key: str) -> str:
        with pytest.raises(ClientError) as refused:
            self.s3.get_object(Bucket=bucket, Key=key)
        return str(refused.value.response["Error"]["Code"])


class AwsCli(Client):
    def aws(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[bytes]:
        return self.run([need("aws"), "--endpoint-url", self.endpoint, *args], ok=ok)

    def put(self, bucket: str, key: str, data: bytes) -> None:
        source = self.tmp / "upload"
        source.write_bytes(data)
        self.aws("s3", "cp", str(source), f"s3://{bucket}/{key}")

    def get(self, bucket: str, key: str) -> bytes:
        target = self.tmp / "download"
        self.aws("s3api", "get-object", "--bucket", bucket, "--key", key, str(target))
        return target.read_bytes()

    def list(self, bucket: str, prefix: str) -> list[str]:
        out = self.aws("s3api", "list-objects-v2", "--bucket", bucket, "--prefix", prefix,
                       "--query", "Contents[].Key", "--output", "text").stdout.decode().split()
        return [k for k in out if k != "None"]

    def delete(self, bucket: str, key: str) -> None:
        self.aws("s3", "rm", f"s3://{bucket}/{key}")

    def denied(self, bucket: str, key: str) -> str:
        done = self.aws("s3api", "get-object", "--bucket", bucket, "--key", key, str(self.tmp / "no"), ok=False)
        assert done.returncode != 0
        return done.stderr.decode()


class Rclone(Client):
    def rclone(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[bytes]:
        env = {"RCLONE_CONFIG_BW_TYPE": "s3", "RCLONE_CONFIG_BW_PROVIDER": "Other",
               "RCLONE_CONFIG_BW_ACCESS_KEY_ID": self.key, "RCLONE_CONFIG_BW_SECRET_ACCESS_KEY": self.secret,
               "RCLONE_CONFIG_BW_ENDPOINT": self.endpoint, "RCLONE_CONFIG_BW_REGION": "eu-west-1",
               "RCLONE_CONFIG_BW_FORCE_PATH_STYLE": "true"}
        # --s3-no-check-bucket: the bucket exists; rclone would otherwise try to create it.
        return self.run([need("rclone"), "--config", "/dev/null", "--s3-no-check-bucket", "--retries", "1",
                         "--low-level-retries", "1", *args], env=env, ok=ok)

    def put(self, bucket: str, key: str, data: bytes) -> None:
        source = self.tmp / "upload"
        source.write_bytes(data)
        self.rclone("copyto", str(source), f"bw:{bucket}/{key}")

    def get(self, bucket: str, key: str) -> bytes:
        return self.rclone("cat", f"bw:{bucket}/{key}").stdout

    def list(self, bucket: str, prefix: str) -> list[str]:
        folder, _, _ = prefix.rpartition("/")
        names = self.rclone("lsf", "--files-only", f"bw:{bucket}/{folder}").stdout.decode().split()
        return [f"{folder}/{name}" if folder else name for name in names]

    def delete(self, bucket: str, key: str) -> None:
        self.rclone("deletefile", f"bw:{bucket}/{key}")

    def denied(self, bucket: str, key: str) -> str:
        done = self.rclone("cat", f"bw:{bucket}/{key}", ok=False)
        assert done.returncode != 0
        return done.stderr.decode()


class S3cmd(Client):
    signature_v2 = False

    def s3cmd(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[bytes]:
        config = self.tmp / "s3cfg"
        config.write_text(
            f"[default]\naccess_key = {self.key}\nsecret_key = {self.secret}\nhost_base = {self.hostport}\n"
            f"host_bucket = {self.hostport}\nuse_https = False\nbucket_location = eu-west-1\n"
            f"signature_v2 = {self.signature_v2}\n")
        return self.run([need("s3cmd"), "--config", str(config), *args], ok=ok)

    def put(self, bucket: str, key: str, data: bytes) -> None:
        source = self.tmp / "upload"
        source.write_bytes(data)
        self.s3cmd("put", str(source), f"s3://{bucket}/{key}")

    def get(self, bucket: str, key: str) -> bytes:
        target = self.tmp / "download"
        self.s3cmd("get", "--force", f"s3://{bucket}/{key}", str(target))
        return target.read_bytes()

    def list(self, bucket: str, prefix: str) -> list[str]:
        lines = self.s3cmd("ls", f"s3://{bucket}/{prefix}").stdout.decode().splitlines()
        return [line.split(f"s3://{bucket}/", 1)[1] for line in lines if f"s3://{bucket}/" in line
                and not line.rstrip().endswith("/")]

    def delete(self, bucket: str, key: str) -> None:
        self.s3cmd("del", f"s3://{bucket}/{key}")

    def denied(self, bucket: str, key: str) -> str:
        done = self.s3cmd("get", "--force", f"s3://{bucket}/{key}", str(self.tmp / "no"), ok=False)
        assert done.returncode != 0
        return done.stderr.decode() + done.stdout.decode()


class S3cmdV2(S3cmd):
    """s3cmd signing with SigV2 (``AWS KEY:SIGNATURE``, dated by x-amz-date)."""

    signature_v2 = True


class MinioSdk(Client):
    def __init__(self, endpoint: str, key: str, tmp: Path, secret: str | None = None) -> None:
        super().__init__(endpoint, key, tmp, secret)
        minio = pytest.importorskip("minio") if os.environ.get("BAILIWICK_REQUIRE_CLIENTS") != "1" \
            else __import__("minio")
        self.client: Any = minio.Minio(self.hostport, access_key=key, secret_key=self.secret, secure=False,
                                       region="eu-west-1")

    def put(self, bucket: str, key: str, data: bytes) -> None:
        import io

        self.client.put_object(bucket, key, io.BytesIO(data), len(data))

    def get(self, bucket: str, key: str) -> bytes:
        response = self.client.get_object(bucket, key)
        try:
            return bytes(response.read())
        finally:
            response.close()
            response.release_conn()

    def list(self, bucket: str, prefix: str) -> list[str]:
        return [o.object_name for o in self.client.list_objects(bucket, prefix=prefix, recursive=True)]

    def delete(self, bucket: str, key: str) -> None:
        self.client.remove_object(bucket, key)

    def denied(self, bucket: str, key: str) -> str:
        from minio.error import S3Error

        with pytest.raises(S3Error) as refused:
            self.get(bucket, key)
        return str(refused.value.code)


CLIENTS: dict[str, Callable[..., Client]] = {
    "boto3": Boto3, "awscli": AwsCli, "rclone": Rclone, "s3cmd": S3cmd, "s3cmd-v2": S3cmdV2, "minio": MinioSdk,
}


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])   # an address, and a name it could put a bucket under
@pytest.mark.parametrize("name", CLIENTS)
def test_round_trip_and_refusal(name: str, host: str, keyed_proxy: ProxyThread, direct: Any, tmp_path: Path,
                                recorder: Recorder) -> None:
    folder = f"matrix/{name}-{uuid.uuid4().hex[:8]}"
    key = f"{folder}/letter.bin"
    endpoint = keyed_proxy.url.replace("127.0.0.1", host)
    irish = CLIENTS[name](endpoint, IE_KEY, tmp_path)
    irish.put(DUBLIN, key, PAYLOAD)
    assert direct.get_object(Bucket=DUBLIN, Key=key)["Body"].read() == PAYLOAD   # stored byte for byte
    assert irish.list(DUBLIN, folder + "/") == [key]
    assert irish.get(DUBLIN, key) == PAYLOAD
    said = CLIENTS[name](endpoint, US_KEY, tmp_path).denied(DUBLIN, key)
    assert "AccessDenied" in said or "Access Denied" in said or "403" in said, said
    # The Irish key id with a secret that is not its own: the proxy's own check refuses it.
    mark = recorder.mark()
    said = CLIENTS[name](keyed_proxy.url, IE_KEY, tmp_path, "not-the-irish-secret-0123456789").denied(DUBLIN, key)
    assert "SignatureDoesNotMatch" in said or "signature" in said.lower() or "403" in said, said
    assert recorder.since(mark) == b""
    irish.delete(DUBLIN, key)
    with pytest.raises(ClientError):
        direct.head_object(Bucket=DUBLIN, Key=key)
