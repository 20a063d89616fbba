"""A re-signing proxy for encrypted datasets, against moto checking signatures, with any key service.

`encrypting_proxy_config` is the example policies with the mail datasets
encrypted (`encrypted_policies`), the proxy's own credentials for the storage
server, and the `encryption` section given: the key service of the proxy's
`region` (`key_file_encryption` for a dev key file). `key_release_line` finds the
audit line of one request and `transit_requests` what OpenBao's audit device
recorded, so that tests can tie the two together by the decision id.

A test module that imports `relay_fixture` gets, as ``relay``, a recording
relay in front of its own module-scoped ``store`` (a `signed_store`).
"""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from proxy.config import Config, TagConfig
from proxy.config.model import EncryptionConfig, KeyFileSettings, KeyServiceKind, SigningConfig
from tests.conftest import EXAMPLE_POLICIES, proxy_config
from tests.s3.test_resign import write_credentials
from tests.support.iam import SignedStore
from tests.support.keyservices import Bao
from tests.support.recorder import Recorder
from tests.support.records import wait_for_record

MIGRATING_DATASET = """
  - name: dublin-migrating
    description: Mail being moved to encryption.
    region: eu-west-1
    encryption: migrating
    resources:
      - s3://mail-eu-migrating
    rules:
      - id: migrating-local
        allow: [read, list, write, delete, admin]
        from: [HOME]
"""


def encrypted_policies(folder: Path) -> Path:
    """The example policies with both mail datasets encrypted, and one migrating dataset (s3://mail-eu-migrating)."""
    shutil.copytree(EXAMPLE_POLICIES, folder, dirs_exist_ok=True)
    shutil.rmtree(folder / "tests")
    mail = (folder / "mail.yaml").read_text()
    mail = mail.replace("    region: eu-west-1\n    resources:\n      - s3://mail-eu-dublin",
                        "    region: eu-west-1\n    encryption: required\n    resources:\n      - s3://mail-eu-dublin")
    mail = mail.replace("    region: us-east-1\n    resources:\n      - s3://mail-us-east",
                        "    region: us-east-1\n    encryption: required\n    resources:\n      - s3://mail-us-east")
    assert mail.count("encryption: required") == 2
    (folder / "mail.yaml").write_text(mail.replace("datasets:\n", "datasets:\n" + MIGRATING_DATASET, 1))
    return folder


def local_dataset(name: str, resource: str, description: str, rule: str, *, encryption: str | None = None,
                  mode: str | None = None) -> str:
    """One `datasets:` entry of eu-west-1 that its HOME callers (the Irish) may use in full, as policy YAML."""
    said = "".join(f"    {field}: {value}\n" for field, value in (("encryption", encryption), ("mode", mode)) if value)
    return (f"  - name: {name}\n    description: {description}\n    region: eu-west-1\n{said}"
            f"    resources:\n      - {resource}\n    rules:\n      - id: {rule}\n"
            "        allow: [read, list, write, delete]\n        from: [HOME]\n")


def add_datasets(folder: Path, *entries: str) -> None:
    """Put `entries` (`local_dataset`) first in the policy folder's mail.yaml."""
    mail = folder / "mail.yaml"
    mail.write_text(mail.read_text().replace("datasets:\n", "datasets:\n" + "".join(entries), 1))


def key_file_encryption(key: Path) -> EncryptionConfig:
    """The `encryption` section of a proxy whose region's key is the dev key file `key`."""
    return EncryptionConfig(key_service=KeyServiceKind.FILE, key_file=KeyFileSettings(path=key, allow_insecure=True))


@pytest.fixture(scope="module", name="relay")
def relay_fixture(store: SignedStore) -> Iterator[Recorder]:
    """A relay recording every byte the module's proxies send to its `store`."""
    recorder = Recorder(store.server.port)
    yield recorder
    recorder.close()


def encrypting_proxy_config(folder: Path, store: SignedStore, upstream: str, region: str,
                            encryption: EncryptionConfig, **changes: Any) -> Config:
    """A proxy of `region` re-signing for `store` through `upstream`, its audit log in `folder`."""
    write_credentials(folder / "credentials", store.key, store.secret)
    config = proxy_config(upstream, folder / "audit.jsonl", region=region,
                          policies=encrypted_policies(folder / "policies"))
    signing = SigningConfig(region="us-east-1", credentials_file=folder / "credentials")
    return replace(config, s3=replace(config.s3, sign=signing), encryption=encryption,
                   tag=TagConfig(signing_key=None), **changes)


def _names(resource: str, operation: str, record: dict[str, Any]) -> bool:
    request = record["request"]
    return bool(request["resource"] == resource and request["operation"] == operation)


def audit_line(folder: Path, bucket: str, key: str, operation: str) -> dict[str, Any]:
    """The first audit line (in `folder`'s log) of `operation` on s3://`bucket`/`key`."""
    return wait_for_record(folder / "audit.jsonl", functools.partial(_names, f"s3://{bucket}/{key}", operation))


def audit_lines(folder: Path, bucket: str, key: str, operation: str) -> list[dict[str, Any]]:
    """Every audit line written so far of `operation` on s3://`bucket`/`key`."""
    path = folder / "audit.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return [r for r in records if _names(f"s3://{bucket}/{key}", operation, r)]


def transit_requests(server: Bao, path: str) -> list[dict[str, Any]]:
    """The requests on `path` (e.g. ``transit/decrypt/KEY``) OpenBao's audit device has recorded so far."""
    if not server.audit_log.exists():
        return []
    found = []
    for line in server.audit_log.read_text().splitlines():
        entry = json.loads(line)
        if entry.get("type") == "request" and entry.get("request", {}).get("path") == path:
            found.append(entry["request"])
    return found


def decision_of(request: dict[str, Any]) -> str | None:
    """The ``X-Bailiwick-Decision-Id`` OpenBao recorded for one audited request."""
    values = request.get("headers", {}).get("x-bailiwick-decision-id")
    return str(values[0]) if values else None
