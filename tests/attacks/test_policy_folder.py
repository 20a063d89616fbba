"""A policy folder someone else can write: the proxy refuses to load it, at start and on reload.

The attack: the policy folder (or a file in it) is writable by others, or a
file in it links out of it, or belongs to another user; someone rewrites the
policy so that a US caller may read Dublin mail, and the proxy reloads it
within seconds. Now the reload is refused: the last good policy keeps serving,
the US caller is still refused, nothing of Dublin reaches it, the failure is
counted in ``bailiwick_policy_reloads_total{result="failure"}`` and logged
with the path and the problem. Started on such a folder, the proxy serves no
policy at all (503 to everyone, not ready).
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from proxy.config import ReloadConfig
from proxy.harness import ProxyThread
from tests.attacks.conftest import SIGV4
from tests.conftest import DUBLIN, EXAMPLE_POLICIES, make_token, proxy_config
from tests.support.metrics import metric
from tests.support.recorder import Recorder
from tests.support.records import written_records
from tests.support.serve import wait_until

KEY = f"/{DUBLIN}/alice/inbox/1.eml"
NO_US = 'deny: ["*"]\n        from: [US]'
US_READS = "allow: [read, list]\n        from: [US]"
NOBODY = 65534


def good_folder(target: Path) -> Path:
    shutil.copytree(EXAMPLE_POLICIES, target, ignore=shutil.ignore_patterns("tests"))
    target.chmod(0o755)
    for path in target.iterdir():
        path.chmod(0o644)
    return target


def granting(folder: Path) -> str:
    text = (folder / "mail.yaml").read_text()
    assert NO_US in text
    return text.replace(NO_US, US_READS)


def rewrite(folder: Path, owner: int | None = None) -> None:
    """Replace mail.yaml whole with the granting text (as someone with write access to the folder would)."""
    staged = folder / ".mail.yaml.tmp"
    staged.write_text(granting(folder))
    staged.chmod(0o644)
    if owner is not None:
        os.chown(staged, owner, -1)
    os.replace(staged, folder / "mail.yaml")


def world_writable_file(folder: Path) -> Path:
    path = folder / "mail.yaml"
    path.chmod(0o666)
    path.write_text(granting(folder))   # written in place: the mode stays
    return path


def made_world_writable_only(folder: Path) -> Path:
    """Not changed yet, only opened to everyone: that alone is refused (and counted) at once."""
    path = folder / "mail.yaml"
    path.chmod(0o666)
    return path


def world_writable_folder(folder: Path) -> Path:
    folder.chmod(0o777)
    rewrite(folder, owner=NOBODY if os.geteuid() == 0 else None)
    return folder


def group_writable_folder(folder: Path) -> Path:
    folder.chmod(0o775)
    rewrite(folder)
    return folder


def link_out_of_the_folder(folder: Path) -> Path:
    outside = folder.parent / "dropped.yaml"
    outside.write_text(granting(folder))
    outside.chmod(0o644)
    link = folder / ".mail.yaml.link"
    link.symlink_to(outside)
    os.replace(link, folder / "mail.yaml")
    return folder / "mail.yaml"


def file_of_another_user(folder: Path) -> Path:
    rewrite(folder, owner=NOBODY)
    return folder / "mail.yaml"


Tamper = Callable[[Path], Path]
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
TAMPERING = [
    pytest.param(world_writable_file, "writable by its group and others", id="world-writable file"),
    pytest.param(made_world_writable_only, "writable by its group and others", id="made world-writable only"),
    pytest.param(world_writable_folder, "files can be added to it", id="world-writable folder"),
    pytest.param(group_writable_folder, "writable by its group", id="group-writable folder"),
    pytest.param(link_out_of_the_folder, "outside the policy folder", id="link out of the folder"),
    pytest.param(file_of_another_user, f"owned by uid {NOBODY}", id="file of another user", marks=as_root),
]


def us_reads_dublin(proxy: ProxyThread) -> tuple[int, str]:
    """A US caller's GET of Dublin mail: (status, decision id)."""
    request = urllib.request.Request(proxy.url + KEY, headers={
        "X-Bailiwick-Token": make_token("US", sub="attacker-US"),
        "Authorization": SIGV4.split(": ", 1)[1].strip(),
    })
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers.get("x-amz-request-id", "")
    except urllib.error.HTTPError as refused:
        with refused:
            return refused.code, refused.headers.get("x-amz-request-id", "")


FAILURES = 'bailiwick_policy_reloads_total{result="failure"}'


@pytest.fixture
def started(recorder: Recorder, seeded: None, tmp_path: Path) -> Iterator[Callable[[Path], ProxyThread]]:
    proxies: list[ProxyThread] = []

    def start(folder: Path) -> ProxyThread:
        config = proxy_config(recorder.url, tmp_path / "audit.jsonl", policies=folder,
                              reload=ReloadConfig(interval_seconds=0.1, run_tests=False))
        proxies.append(ProxyThread(config).start())
        return proxies[-1]

    yield start
    for proxy in proxies:
        proxy.stop()


def assert_us_refused(proxy: ProxyThread, recorder: Recorder, audit: Path, status: int) -> None:
    mark = recorder.mark()
    answer, decision_id = us_reads_dublin(proxy)
    assert answer == status
    assert recorder.since(mark) == b""
    assert decision_id
    wait_until(lambda: any(r["decision_id"] == decision_id for r in written_records(audit)))
    line = next(r for r in written_records(audit) if r["decision_id"] == decision_id)
    assert line["status"] == status
    if status == 403:   # judged: the audit names the caller's real jurisdiction (with no policy, nobody is judged)
        assert (line["caller"]["jurisdiction"], line["decision"]) == ("US", "deny")


@pytest.mark.parametrize(("tamper", "problem"), TAMPERING)
def test_a_tampered_policy_is_not_reloaded(
    started: Callable[[Path], ProxyThread], recorder: Recorder, tmp_path: Path,
    caplog: pytest.LogCaptureFixture, tamper: Tamper, problem: str,
) -> None:
    folder = good_folder(tmp_path / "etc" / "policies")
    proxy = started(folder)
    assert proxy.running is not None
    good = proxy.running.gateway.policy
    assert_us_refused(proxy, recorder, tmp_path / "audit.jsonl", 403)
    named = tamper(folder)
    wait_until(lambda: metric(proxy, FAILURES) >= 1)
    assert proxy.running.gateway.policy is good   # the last good policy keeps serving
    assert_us_refused(proxy, recorder, tmp_path / "audit.jsonl", 403)
    logged = [r.getMessage() for r in caplog.records if r.name == "bailiwick.reload"]
    assert any(problem in message and str(named) in message for message in logged), logged


@pytest.mark.parametrize(("tamper", "problem"), TAMPERING)
def test_a_tampered_policy_is_not_loaded_at_start(
    started: Callable[[Path], ProxyThread], recorder: Recorder, tmp_path: Path,
    caplog: pytest.LogCaptureFixture, tamper: Tamper, problem: str,
) -> None:
    folder = good_folder(tmp_path / "etc" / "policies")
    named = tamper(folder)
    proxy = started(folder)
    assert proxy.running is not None
    assert proxy.running.gateway.policy is None
    assert_us_refused(proxy, recorder, tmp_path / "audit.jsonl", 503)
    with pytest.raises(urllib.error.HTTPError) as not_ready:
        urllib.request.urlopen(proxy.admin_url + "/readyz", timeout=5)
    with not_ready.value:
        assert not_ready.value.code == 503
    assert metric(proxy, FAILURES) >= 1
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("bailiwick")]
    assert any(problem in message and str(named) in message for message in logged), logged
