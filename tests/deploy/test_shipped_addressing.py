"""Every shipped configuration, run against moto: the storage server acts on the bucket the proxy judged.

The configurations a reader copies (deploy/: compose, the Kubernetes base,
overlays and separate-proxy variant, the Helm chart's values; the examples in
README.md and docs/) each say which Host names reach the proxy and how the
storage server reads them. Here each one's S3 settings, exactly as shipped,
run the real proxy in front of moto with its signature checks on, and every
Host form the proxy could accept is sent: each endpoint itself (path-style,
the path naming the bucket) and ``BUCKET.<endpoint>`` (virtual-hosted, the
path *also* naming another bucket). Each request is either refused before a
byte reaches moto, or lands in exactly the bucket and key its audit line
names, and nowhere else.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.config import S3Settings, load_config
from tests.conftest import DUBLIN, ROOT, US
from tests.support.addressing import Store, judged, proxy_for, recorder_fixture, send, store_fixture, unique
from tests.support.recorder import Recorder

REFUSED = {400, 403}


def _yaml_blocks(path: Path) -> list[dict[str, Any]]:
    """The bailiwick configurations among a Markdown file's YAML blocks (those with an s3 section)."""
    found = []
    for block in re.findall(r"```ya?ml\n(.*?)```", path.read_text(), re.S):
        try:
            loaded = yaml.safe_load(block)
        except yaml.YAMLError:
            continue
        if isinstance(loaded, dict) and isinstance(loaded.get("s3"), dict):
            found.append(loaded)
    return found


def shipped() -> list[tuple[str, dict[str, Any]]]:
    configs: list[tuple[str, dict[str, Any]]] = []
    files = [ROOT / "deploy/compose/bailiwick.yaml", *sorted((ROOT / "deploy/kubernetes").rglob("bailiwick.yaml"))]
    for path in files:
        configs.append((str(path.relative_to(ROOT)), yaml.safe_load(path.read_text())))
    for path in sorted((ROOT / "deploy/helm").rglob("values.yaml")):
        values = yaml.safe_load(path.read_text()) or {}
        for config in (values.get("config"), (values.get("bailiwick") or {}).get("config")):
            if isinstance(config, dict):
                configs.append((str(path.relative_to(ROOT)), config))
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for i, config in enumerate(_yaml_blocks(path)):
            configs.append((f"{path.relative_to(ROOT)}#{i}", config))
    return configs


SHIPPED = shipped()


def test_every_shipped_configuration_is_found() -> None:
    names = {name.split("#")[0] for name, _ in SHIPPED}
    assert {"deploy/compose/bailiwick.yaml", "deploy/kubernetes/base/bailiwick.yaml",
            "deploy/kubernetes/overlays/eu-west-1/bailiwick.yaml",
            "deploy/kubernetes/variants/separate-proxy/bailiwick.yaml",
            "deploy/helm/bailiwick/values.yaml", "README.md", "docs/operations.md"} <= names


def settings_of(raw: dict[str, Any], tmp_path: Path) -> S3Settings:
    """The S3 settings as the proxy validates them (with the shipped upstream section, if any)."""
    file = tmp_path / "bailiwick.yaml"
    file.write_text(yaml.safe_dump({key: raw[key] for key in ("s3", "upstream") if key in raw}))
    return load_config(file, environ={}).s3


def hosts(settings: S3Settings, port: int) -> Iterator[tuple[str, bool]]:
    """(Host, virtual-hosted?) for every form the proxy could accept under these settings."""
    for endpoint in settings.endpoints:
        try:
            address = ipaddress.ip_address(endpoint)
        except ValueError:
            address = None
        name = f"[{endpoint}]" if address is not None and address.version == 6 else endpoint
        yield name, False
        yield f"{name}:{port}", False
        if address is None:
            yield f"{DUBLIN}.{endpoint}", True
            yield f"{DUBLIN}.{endpoint}:{port}", True


# moto checking every signature, and the relay in front of it: one of each per module.
store, recorder = store_fixture, recorder_fixture


@pytest.mark.parametrize(("name", "raw"), SHIPPED, ids=[name for name, _ in SHIPPED])
def test_the_storage_server_acts_on_the_bucket_the_proxy_judged(
    name: str, raw: dict[str, Any], store: Store, recorder: Recorder, tmp_path: Path,
) -> None:
    settings = settings_of(raw, tmp_path)
    with proxy_for(settings, store, recorder, tmp_path) as proxy:
        port = int(proxy.url.rsplit(":", 1)[1])
        for host, virtual in hosts(settings, port):
            marker = unique()
            # Virtual-hosted, the path names another bucket too (a server reading the path would use it).
            target = f"/{US}/{marker}" if virtual else f"/{DUBLIN}/{marker}"
            before = store.everything()
            sent = send(proxy, recorder, store, method="PUT", host=host, target=target, body=b"probe")
            after = store.everything()
            if sent.status in REFUSED:
                assert sent.reached_upstream == b"", (name, host, sent)
                assert after == before, (name, host)
                continue
            assert sent.status == 200, (name, host, sent)
            line = judged(tmp_path / "audit.jsonl", marker)
            assert line["caller"]["jurisdiction"] == "IE"
            expected = f"{US}/{marker}" if virtual else marker
            assert line["request"]["resource"] == f"s3://{DUBLIN}/{expected}", (name, host)
            landed = {bucket: keys - before[bucket] for bucket, keys in after.items() if keys != before[bucket]}
            assert landed == {DUBLIN: {expected}}, (name, host, landed)
