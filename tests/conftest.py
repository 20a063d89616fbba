"""Shared fixtures: a real moto S3 server, a recording relay, the real proxy, boto3 clients."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import jwt
import pytest
from botocore.config import Config as BotoConfig
from hypothesis import HealthCheck, settings

from proxy.config import Config, IdentityConfig, JwtIssuer, NetworkRule, load_config
from proxy.harness import ProxyThread
from proxy.localstore import MotoServer
from tests.support.recorder import Recorder

# Hypothesis profiles: "fast" in CI, "deep" for long fuzzing runs (HYPOTHESIS_PROFILE=deep).
settings.register_profile("fast", max_examples=300, deadline=None)
settings.register_profile("deep", max_examples=50_000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_POLICIES = ROOT / "policies"
ISSUER = "https://idp.test.bailiwick.invalid"
AUDIENCE = "bailiwick"
SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"
DUBLIN = "mail-eu-dublin"
US = "mail-us-east"
ARCHIVE = "archive"  # keys under ie/ are the dry-run dataset irish-archive; the rest is in no dataset

TokenFactory = Callable[..., str]


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture(scope="session")
def recorder(moto: MotoServer) -> Iterator[Recorder]:
    relay = Recorder(moto.port)
    yield relay
    relay.close()


def s3_client(endpoint: str, token: str | None = None, *, addressing: str = "path",
              header: str = "X-Bailiwick-Token") -> Any:
    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
        config=BotoConfig(s3={"addressing_style": addressing}, retries={"max_attempts": 1},
                          connect_timeout=5, read_timeout=30),
    )
    if token is not None:
        def add_token(request: Any, **_: Any) -> None:
            request.headers[header] = token

        client.meta.events.register("before-send.s3", add_token)
    return client


@pytest.fixture(scope="session")
def direct(moto: MotoServer) -> Any:
    """A client straight to the storage server, bypassing the proxy (for setup and checks)."""
    return s3_client(moto.url)


@pytest.fixture(scope="session")
def seeded(direct: Any) -> None:
    direct.create_bucket(Bucket=DUBLIN, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    direct.create_bucket(Bucket=US)
    direct.put_object(Bucket=DUBLIN, Key="alice/inbox/1.eml", Body=b"Dublin mail")
    direct.put_object(Bucket=US, Key="bob/inbox/1.eml", Body=b"US mail")
    direct.create_bucket(Bucket=ARCHIVE, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})


def make_token(jurisdiction: str = "IE", *, sub: str = "client-1", exp_in: int = 300,
               secret: str = SECRET, **extra: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now,
                              "exp": now + exp_in, "jurisdiction": jurisdiction}
    claims.update(extra)
    return jwt.encode(claims, secret, algorithm="HS256")


def proxy_config(upstream: str, audit: Path, **changes: Any) -> Config:
    base = load_config(None, environ={}, overrides={
        "listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0",
        "upstream": upstream, "policies": str(EXAMPLE_POLICIES),
    })
    identity = IdentityConfig(
        jwt=(JwtIssuer(issuer=ISSUER, audience=AUDIENCE, algorithms=("HS256",), hs256_secret=SECRET.encode()),),
        networks=(NetworkRule(cidr=__import__("ipaddress").ip_network("127.0.0.2/32"), jurisdiction="IE"),),
    )
    # moto serves virtual-hosted requests under localhost (BUCKET.localhost), as the proxy is told here.
    base = replace(base, s3=replace(base.s3, virtual_hosts=("localhost",)))
    return replace(base, identity=identity, audit=replace(base.audit, path=str(audit)), **changes)


@pytest.fixture(scope="session")
def audit_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audit") / "audit.jsonl"


@pytest.fixture(scope="session")
def proxy(recorder: Recorder, seeded: None, audit_path: Path) -> Iterator[ProxyThread]:
    running = ProxyThread(proxy_config(recorder.url, audit_path)).start()
    yield running
    running.stop()


@pytest.fixture
def client_for(proxy: ProxyThread) -> Callable[..., Any]:
    def make(jurisdiction: str = "IE", **kwargs: Any) -> Any:
        return s3_client(proxy.url, make_token(jurisdiction), **kwargs)

    return make
