"""The storage API seam: what the gateway asks an API object instead of asking which API it serves."""

from __future__ import annotations

from dataclasses import replace

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.api import make_api
from proxy.config import AccessKeyRule, Config, SigningConfig, load_config
from proxy.errors import ConfigError
from proxy.s3.resign import RequestSigner
from tests.conftest import DUBLIN

_DEFAULTS = load_config(None, environ={})
S3 = replace(_DEFAULTS, s3=replace(_DEFAULTS.s3, virtual_hosts=("localhost",)))
AZURE = load_config(None, environ={"BAILIWICK_UPSTREAM_API": "azure"})
KEYED = replace(S3.identity, access_keys=(AccessKeyRule("AKIAEXAMPLE", "IE", "access-key:AKIAEXAMPLE", "secret"),))
PROXY_KEYS = {"AWS_ACCESS_KEY_ID": "AKIAPROXY", "AWS_SECRET_ACCESS_KEY": "proxy-secret"}


def resigning(config: Config) -> Config:
    return replace(config, region="eu-west-1", s3=replace(config.s3, sign=SigningConfig()))


@pytest.mark.parametrize(("config", "name", "bearer"), [(S3, "s3", False), (AZURE, "azure", True)])
def test_the_configuration_picks_the_api_and_its_tokens(config: Config, name: str, bearer: bool) -> None:
    api = make_api(config)
    assert api.name == name
    assert api.storage_bearer is bearer


@pytest.mark.parametrize("config", [S3, AZURE])
def test_without_re_sign_mode_no_api_signs(config: Config) -> None:
    assert make_api(config).upstream_signer(config) is None


def test_re_sign_mode_is_s3s(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in PROXY_KEYS.items():
        monkeypatch.setenv(name, value)
    config = resigning(S3)
    assert isinstance(make_api(config).upstream_signer(config), RequestSigner)
    azure = resigning(AZURE)
    with pytest.raises(ConfigError, match=r"re-sign mode signs S3 requests; upstream\.api is 'azure'"):
        make_api(azure).upstream_signer(azure)


@pytest.mark.parametrize(("config", "keyed", "host", "bucket"), [
    (S3, True, f"{DUBLIN}.localhost", DUBLIN),     # SigV2 signs the bucket a virtual-hosted request names
    (S3, True, "localhost", None),
    (S3, False, f"{DUBLIN}.localhost", "no reader"),   # only access-key callers sign
    (AZURE, True, "devstoreaccount1.blob.core.windows.net", "no reader"),
])
def test_the_signed_bucket_is_read_only_for_access_key_callers_of_s3(
    config: Config, keyed: bool, host: str, bucket: str | None,
) -> None:
    read = make_api(config).signed_bucket(KEYED if keyed else config.identity)
    if bucket == "no reader":
        assert read is None
        return
    assert read is not None
    assert read(CIMultiDictProxy(CIMultiDict({"Host": host}))) == bucket
