"""The proxy's `region` must be a region of the policy: `bailiwick serve` refuses to start otherwise (exit 2).

Real `bailiwick serve` processes: the message is the one line an operator
sees, naming where the region was set and the region likeliest meant. A
policy that does not load still does not stop the start (503 until one
loads): the region is checked against a policy that loaded.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.config import Config
from proxy.config.region import region_problem
from proxy.localstore import free_port
from tests.conftest import EXAMPLE_POLICIES
from tests.support.processes import stop
from tests.support.serve import answers, wait_until

POLICY = f"the policy in {EXAMPLE_POLICIES}"


def start(tmp_path: Path, written: str, args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Path]:
    config = tmp_path / "bailiwick.yaml"
    config.write_text(f"listen: 127.0.0.1:{free_port()}\nadmin_listen: 127.0.0.1:{free_port()}\n"
                      f"policies: {EXAMPLE_POLICIES}\n" + written + "upstream: {url: 'http://127.0.0.1:9'}\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve", "--config", str(config), *args],
        env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    return process, config


@pytest.mark.parametrize(("written", "args", "env", "where", "said"), [
    ("region: eu-wset-1\n", [], {}, "{config}:4",
     f'"eu-wset-1" is not a region of {POLICY} (did you mean eu-west-1?)'),
    ("region: eu-west-1\n", ["--region", "eu-wset-1"], {}, "--region",
     f'"eu-wset-1" is not a region of {POLICY} (did you mean eu-west-1?)'),
    ("", ["--workers", "2"], {"BAILIWICK_REGION": "IE"}, "BAILIWICK_REGION",
     f'"IE" is not a region of {POLICY} (a region is a name defined under regions:, such as eu-west-1, not a '
     "country code)"),
    ("region: zz-nowhere-7\n", [], {}, "{config}:4", f'"zz-nowhere-7" is not a region of {POLICY}'),
])
def test_serve_refuses_a_region_the_policy_does_not_know(
    tmp_path: Path, written: str, args: list[str], env: dict[str, str], where: str, said: str,
) -> None:
    process, config = start(tmp_path, written, args, env)
    try:
        _, error = process.communicate(timeout=60)
    finally:
        stop(process)
    assert process.returncode == 2, error.decode()
    assert error.decode() == f"bailiwick: {where.format(config=config)}: region: {said}\n"


def test_serve_still_starts_on_a_policy_that_does_not_load(tmp_path: Path) -> None:
    """The region cannot be checked without a policy: the proxy serves 503 until one loads, as before."""
    broken = tmp_path / "policies"
    broken.mkdir()
    (broken / "mail.yaml").write_text("datasets: [\n")
    config = tmp_path / "bailiwick.yaml"
    admin = free_port()
    config.write_text(f"listen: 127.0.0.1:{free_port()}\nadmin_listen: 127.0.0.1:{admin}\npolicies: policies\n"
                      "region: eu-wset-1\n")
    process = subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--config", str(config)],
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{admin}/healthz") or process.poll() is not None, timeout=30)
        assert process.poll() is None
    finally:
        stop(process)


@pytest.mark.parametrize(("region", "regions", "said"), [
    (None, {"eu-west-1"}, None),                 # a proxy of no region serves any policy
    ("eu-west-1", {"eu-west-1", "us-east-1"}, None),
    ("eu-north-1", {"eu-west-1", "eu-north-1"}, None),   # a region of the map, with no dataset yet
    ("eu-west-1", set(), '"eu-west-1" is not a region of the policy in policies (it defines no regions)'),
    ("mars-1", {"eu-west-1", "us-east-1"},
     '"mars-1" is not a region of the policy in policies (its regions: eu-west-1, us-east-1)'),
])
def test_a_region_of_the_policy_is_one_its_region_map_names(
    region: str | None, regions: set[str], said: str | None,
) -> None:
    problem = region_problem(regions, Config(region=region))
    assert problem == (None if said is None else f"configuration: region: {said}")
