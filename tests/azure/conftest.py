"""Fixtures of the Azure integration tests: Microsoft's Azurite emulator, a recording relay, the real proxy.

Azurite (npm package ``azurite``) is used from ``PATH`` (``azurite-blob``, as
``scripts/test`` installs it) or installed once with npm into a cache folder
(``$BAILIWICK_AZURITE_PREFIX``, default ``~/.cache/bailiwick/azurite``). When
neither node nor npm is there the integration tests are skipped, unless
``BAILIWICK_REQUIRE_CLIENTS=1`` makes that a failure.

The proxy runs with ``upstream.api: azure`` in front of the relay, with a
policy folder written here: two containers of Azurite's well-known account,
``ie-mail`` held in Dublin (Ireland full access, US denied) and ``us-mail``
held in us-east-1 (US full access, Ireland read and list).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from proxy.config import UpstreamApi
from proxy.harness import ProxyThread
from proxy.localstore import free_port
from tests.conftest import proxy_config
from tests.support.processes import stop
from tests.support.recorder import Recorder

ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
IE, US, NOWHERE = "ie-mail", "us-mail", "no-dataset"

POLICY = f"""
regions:
  eu-west-1: IE
  us-east-1: US
datasets:
  - name: dublin-mail
    region: eu-west-1
    resources: [azure://{ACCOUNT}/{IE}]
    rules:
      - id: local-full-access
        allow: [read, list, write, delete]
        from: [HOME]
      - id: no-us-access
        deny: ["*"]
        from: [US]
  - name: us-mail
    region: us-east-1
    resources: [azure://{ACCOUNT}/{US}]
    rules:
      - id: us-full-access
        allow: [read, list, write, delete]
        from: [HOME]
      - id: ireland-reads
        allow: [read, list]
        from: [IE]
"""


def _require(message: str) -> None:
    if os.environ.get("BAILIWICK_REQUIRE_CLIENTS") == "1":
        pytest.fail(message)
    pytest.skip(message)


def azurite_command() -> str | None:
    """The azurite-blob executable: on PATH, in the cache folder, or installed there now (None: no npm)."""
    found = shutil.which("azurite-blob")
    if found is not None:
        return found
    prefix = Path(os.environ.get("BAILIWICK_AZURITE_PREFIX", Path.home() / ".cache" / "bailiwick" / "azurite"))
    installed = prefix / "node_modules" / ".bin" / "azurite-blob"
    if installed.exists():
        return str(installed)
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        return None
    prefix.mkdir(parents=True, exist_ok=True)
    subprocess.run([npm, "install", "--prefix", str(prefix), "--no-fund", "--no-audit", "--silent", "azurite"],
                   check=True, timeout=900, stdout=subprocess.DEVNULL)
    return str(installed) if installed.exists() else None


@dataclass(frozen=True)
class Azurite:
    port: int

    @property
    def url(self) -> str:
        """The account URL, path-style: what clients of the emulator use."""
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    command = azurite_command()
    if command is None:
        _require("Azurite is not installed and node/npm are missing to install it (scripts/test installs it)")
        raise AssertionError("unreachable")   # pragma: no cover - _require always raises
    port = free_port()
    location = tmp_path_factory.mktemp("azurite")
    log = (location / "azurite.log").open("wb")
    process = subprocess.Popen(
        [command, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(location),
         "--skipApiVersionCheck", "--loose", "--silent"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not _answers(port):
            assert process.poll() is None, (location / "azurite.log").read_text()
            assert time.monotonic() < deadline, "Azurite did not start in 60 s"
            time.sleep(0.1)
        yield Azurite(port)
    finally:
        stop(process)
        log.close()


@pytest.fixture(scope="session")
def azure_recorder(azurite: Azurite) -> Iterator[Recorder]:
    relay = Recorder(azurite.port)
    yield relay
    relay.close()


@pytest.fixture(scope="session")
def azure_policies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("azure-policies")
    (folder / "mail.yaml").write_text(POLICY)
    return folder


@pytest.fixture(scope="session")
def azure_audit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("azure-audit") / "audit.jsonl"


@pytest.fixture(scope="session")
def azure_proxy(azure_recorder: Recorder, azure_policies: Path, azure_audit: Path) -> Iterator[ProxyThread]:
    config = proxy_config(azure_recorder.url, azure_audit)
    config = replace(config, policies=azure_policies, upstream=replace(config.upstream, api=UpstreamApi.AZURE))
    running = ProxyThread(config).start()
    yield running
    running.stop()
