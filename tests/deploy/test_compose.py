"""deploy/compose: the one-host set-up (bailiwick, an S3 store, Prometheus), checked without a container engine.

No compose binary runs here, so the file is checked the way compose itself would
read it, and its parts are run as they are:

* compose.yaml against the Compose Specification's JSON schema (the copy that
  check-jsonschema ships, ``--builtin-schema vendor.compose-spec``), then the
  wiring between the services: every file and folder it mounts exists, the
  bailiwick service builds from the repository's Dockerfile, ports and service
  names agree with bailiwick.yaml and with the Prometheus scrape job;
* bailiwick.yaml loads with ``load_config`` in the environment the container
  gets (the image's ``ENV``, ``environment:`` and ``env_file:``), and the
  policies it mounts pass ``bailiwick policy check`` and ``policy test``;
* Prometheus is started with deploy/monitoring/prometheus/prometheus.yml, the
  file deploy/monitoring/check validates (promtool checks it here too);
* the steps of compose.yaml's header (create buckets, get tokens, an allowed
  write and read, a refused read) run with bash and curl against a local moto
  server and the proxy started with bailiwick.yaml.

A missing check-jsonschema, curl or promtool skips its test, unless
``BAILIWICK_REQUIRE_CLIENTS=1`` (as ``scripts/test`` sets), which fails it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from proxy.config import Config, load_config
from proxy.harness import ProxyThread
from proxy.localstore import MotoServer
from proxy.s3.resign import CredentialSource

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
MONITORING_CONFIG = ROOT / "deploy" / "monitoring" / "prometheus" / "prometheus.yml"


def require(tool: str, available: bool) -> None:
    """Skip without the tool, or fail when every client is required."""
    if available:
        return
    if os.environ.get("BAILIWICK_REQUIRE_CLIENTS") == "1":
        pytest.fail(f"{tool} is required (BAILIWICK_REQUIRE_CLIENTS=1) but missing")
    pytest.skip(f"{tool} is not installed")


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def service(name: str) -> dict[str, Any]:
    services = compose()["services"]
    assert name in services, f"compose.yaml has no service {name!r}"
    found = services[name]
    assert isinstance(found, dict)
    return found


def mounts(name: str) -> list[tuple[Path, PurePosixPath, bool]]:
    """The bind mounts of a service: (host path, container path, read-only)."""
    found = []
    for volume in service(name).get("volumes", []):
        source, target, *mode = volume.split(":")
        if not source.startswith((".", "/")):
            continue   # a named volume
        found.append(((COMPOSE_DIR / source).resolve(), PurePosixPath(target), "ro" in mode))
    return found


def host_path(name: str, inside: str) -> Path:
    """Where a path inside a service's container comes from on the host, through its bind mounts."""
    path = PurePosixPath(inside)
    for source, target, _ in mounts(name):
        if path == target or target in path.parents:
            return source / path.relative_to(target)
    raise AssertionError(f"{inside} is not mounted into {name}")


def image_env() -> dict[str, str]:
    """The ENV of the Dockerfile's final stage, as the image sets it."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    instructions = re.sub(r"\\\n", " ", text).splitlines()
    stages = [i for i, line in enumerate(instructions) if re.match(r"\s*FROM\s", line, re.I)]
    env: dict[str, str] = {}
    for line in instructions[stages[-1]:]:
        if re.match(r"\s*ENV\s", line, re.I):
            for word in shlex.split(line.strip()[3:], comments=True):
                key, _, value = word.partition("=")
                env[key] = value
    return env


def env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value
    return env


def container_env() -> dict[str, str]:
    """The bailiwick container's environment: image ENV, then env_file, then environment (compose's order)."""
    bailiwick = service("bailiwick")
    env = image_env()
    for name in bailiwick.get("env_file", []):
        env.update(env_file(COMPOSE_DIR / name))
    env.update({key: str(value) for key, value in bailiwick.get("environment", {}).items()})
    return env


def compose_config() -> tuple[Config, Path]:
    env = container_env()
    path = host_path("bailiwick", env["BAILIWICK_CONFIG"])
    return load_config(path, environ=env), path


def test_compose_file_follows_the_compose_specification(tmp_path: Path) -> None:
    require("check-jsonschema (pip)", importlib.util.find_spec("check_jsonschema") is not None)
    validate = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec"]
    checked = subprocess.run([*validate, str(COMPOSE_FILE)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The schema is strict: a misspelt key of a service is refused.
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE_FILE.read_text(encoding="utf-8").replace("    read_only: true", "    readonly: true"),
                      encoding="utf-8")
    refused = subprocess.run([*validate, str(broken)], capture_output=True, text=True, check=False)
    assert refused.returncode != 0
    assert "readonly" in refused.stdout + refused.stderr


def test_every_file_it_refers_to_exists() -> None:
    bailiwick = service("bailiwick")
    context = (COMPOSE_DIR / bailiwick["build"]["context"]).resolve()
    assert context == ROOT
    assert (context / bailiwick["build"].get("dockerfile", "Dockerfile")).is_file()
    for name in bailiwick.get("env_file", []):
        assert (COMPOSE_DIR / name).is_file(), name
    for name in compose()["services"]:
        for source, target, _ in mounts(name):
            assert source.exists(), f"{name}: {source} (mounted at {target}) does not exist"


def test_services_are_wired_together() -> None:
    services = compose()["services"]
    assert set(services) >= {"bailiwick", "s3", "prometheus"}
    for name, spec in services.items():
        if "image" in spec and "build" not in spec:
            repository, _, tag = spec["image"].rpartition(":")
            assert repository, f"{name}: pin the image's version ({spec['image']})"
            assert tag not in ("", "latest"), f"{name}: pin the image's version ({spec['image']})"
    bailiwick = services["bailiwick"]
    # Run as in production: read-only root, no privileges, only /tmp writable.
    assert bailiwick["read_only"] is True
    assert "/tmp" in bailiwick["tmpfs"]   # noqa: S108 - the container's own /tmp
    assert bailiwick["cap_drop"] == ["ALL"]
    assert all(read_only for _, _, read_only in mounts("bailiwick")), "bailiwick's mounts must be read-only"
    published = {port.rsplit(":", 2)[-1]: port for port in bailiwick["ports"]}
    config, _ = compose_config()
    for port in (config.listen[1], config.admin_listen[1]):
        assert published[str(port)].startswith("127.0.0.1:"), f"port {port} is published beyond this host"
    assert "s3" in bailiwick["depends_on"]


def test_the_proxy_configuration_loads_in_the_containers_environment() -> None:
    config, path = compose_config()
    assert path == COMPOSE_DIR / "bailiwick.yaml"
    # What the proxy listens on and talks to, with the image's BAILIWICK_* variables applied.
    assert config.listen == ("0.0.0.0", 8080)   # noqa: S104 - a container's port
    assert config.admin_listen == ("0.0.0.0", 9090)   # noqa: S104
    assert config.upstream.api == "s3"
    store = re.fullmatch(r"http://([\w-]+):(\d+)", config.upstream.url)
    assert store is not None, config.upstream.url
    assert store.group(1) in compose()["services"], "the upstream must be the store's service name"
    s3 = service("s3")
    assert store.group(2) == str(s3.get("environment", {}).get("MOTO_PORT", "5000"))
    assert "bailiwick" in config.s3.endpoints     # from other containers
    assert "localhost" in config.s3.endpoints     # from the host
    # The policies: the repository's folder, mounted read-only where the configuration says.
    assert host_path("bailiwick", str(config.policies)) == ROOT / "policies"
    # The demo issuer's secret and the store's credentials (re-sign mode) come from demo.env, and
    # every one of them says it is a public demo value.
    demo = env_file(COMPOSE_DIR / "demo.env")
    assert demo
    assert all("NOT-A-SECRET" in value for value in demo.values())
    (issuer,) = config.identity.jwt
    assert issuer.hs256_secret == demo["BAILIWICK_DEMO_HS256_SECRET"].encode()
    assert config.s3.sign is not None
    assert {config.s3.sign.access_key_id_env, config.s3.sign.secret_access_key_env} <= demo.keys()
    CredentialSource(config.s3.sign, environ=container_env())   # raises without them
    assert config.audit.path == "-"


def test_the_mounted_policies_pass_policy_check_and_policy_test() -> None:
    config, _ = compose_config()
    policies = host_path("bailiwick", str(config.policies))
    for command in ("check", "test"):
        ran = subprocess.run([sys.executable, "-m", "proxy", "policy", command, str(policies)],
                             capture_output=True, text=True, check=False)
        assert ran.returncode == 0, f"bailiwick policy {command}:\n{ran.stdout}{ran.stderr}"


def test_prometheus_runs_the_configuration_that_deploy_monitoring_checks() -> None:
    prometheus = service("prometheus")
    flags = dict(arg.split("=", 1) for arg in prometheus["command"] if "=" in arg)
    assert host_path("prometheus", flags["--config.file"]) == MONITORING_CONFIG
    # Its rule files resolve inside the container too: the mount carries the whole folder.
    config = yaml.safe_load(MONITORING_CONFIG.read_text(encoding="utf-8"))
    inside = PurePosixPath(flags["--config.file"]).parent
    for rule_file in config["rule_files"]:
        assert host_path("prometheus", os.path.normpath(inside / rule_file)).is_file(), rule_file
    # It scrapes the bailiwick service on the admin port bailiwick.yaml gives.
    proxy_config, _ = compose_config()
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "bailiwick"]
    targets = [target for group in job["static_configs"] for target in group["targets"]]
    assert targets == [f"bailiwick:{proxy_config.admin_listen[1]}"]
    require("promtool", shutil.which("promtool") is not None)
    checked = subprocess.run(["promtool", "check", "config", str(MONITORING_CONFIG)],
                             capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def header_commands() -> list[str]:
    """The shell commands of compose.yaml's header comment, without the `docker compose` ones."""
    commands = []
    for line in COMPOSE_FILE.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        if line.startswith("#   ") and not line.startswith("#    ") and not line[4:].startswith("docker compose"):
            commands.append(line[4:])
    return commands


@pytest.fixture
def store() -> Iterator[MotoServer]:
    with MotoServer() as server:   # a store of its own: the steps create buckets
        yield server


def test_the_header_steps_work_against_the_same_configuration(
    store: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    require("curl", shutil.which("curl") is not None)
    config, _ = compose_config()
    # Re-sign mode reads the store's credentials from the process environment, as in the container.
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    for key, value in env_file(COMPOSE_DIR / "demo.env").items():
        monkeypatch.setenv(key, value)
    policies = host_path("bailiwick", str(config.policies))
    # The same configuration, on loopback ports, the local store in place of the s3 service, the
    # audit log in a file instead of standard output.
    local = replace(config, listen=("127.0.0.1", 0), admin_listen=("127.0.0.1", 0), policies=policies,
                    upstream=replace(config.upstream, url=store.url),
                    audit=replace(config.audit, path=str(tmp_path / "audit.jsonl")))
    running = ProxyThread(local).start()
    try:
        script = "\n".join(header_commands())
        assert "token()" in script
        assert "curl" in script
        script = (script.replace("docker compose exec -T bailiwick python3", '"$PYTHON"')
                  .replace("http://127.0.0.1:9000", store.url)
                  .replace("http://localhost:8080", running.url))
        script += '\nprintf "\\nIE token: %s\\n" "$IE"\n'
        secrets = {key: value for key, value in container_env().items() if key.startswith("BAILIWICK_")}
        env = {**os.environ, **secrets, "PYTHON": sys.executable}
        ran = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True,
                             env=env, timeout=60, check=False)
    finally:
        running.stop()
    audit = (tmp_path / "audit.jsonl").read_text(encoding="utf-8")
    assert ran.returncode == 0, f"{script}\n{ran.stdout}\n{ran.stderr}\n{audit}"
    assert "Dublin mail" in ran.stdout                      # the Irish caller's read
    assert "<Code>AccessDenied</Code>" in ran.stdout         # the US caller's, refused
    assert audit.count('"decision":"allow"') == 2
    assert audit.count('"decision":"deny"') == 1
