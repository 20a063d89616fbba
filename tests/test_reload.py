"""Live policy reload: by polling a content fingerprint and on SIGHUP, never to a worse policy.

The proxy runs against moto (through the recording relay) with a copy of the
example policies in a temporary folder that the tests edit: an edit is served
after the next poll, a bad edit or one that fails the folder's policy tests
leaves the last good policy serving (and is counted), a Kubernetes-style
symlink swap is seen, and requests sent while the policy is swapped again and
again all get answers under one version or the other.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from proxy import lifecycle
from proxy import reload as reload_module
from proxy.config import ReloadConfig
from proxy.harness import ProxyThread
from proxy.policy.model import Policy
from proxy.reload import Outcome, PolicyReloader, fingerprint, load_checked, load_isolated
from tests.conftest import DUBLIN, EXAMPLE_POLICIES, make_token, proxy_config, s3_client
from tests.support.metrics import metric
from tests.support.recorder import Recorder
from tests.support.serve import serve, wait_until

KEY = "alice/inbox/1.eml"
US_DENY = 'deny: ["*"]\n        from: [US]'
US_AND_IE_DENY = 'deny: ["*"]\n        from: [US, IE]'


def copy_policies(target: Path, *, with_tests: bool) -> Path:
    shutil.copytree(EXAMPLE_POLICIES, target, ignore=None if with_tests else shutil.ignore_patterns("tests"))
    return target


def edit(folder: Path, old: str, new: str) -> None:
    """Replace the file whole (as editors and ConfigMap updates do), so no poll sees half an edit."""
    path = folder / "mail.yaml"
    text = path.read_text()
    assert old in text
    staged = path.with_name(".mail.yaml.tmp")
    staged.write_text(text.replace(old, new))
    os.replace(staged, path)


def ie_can_read(proxy: ProxyThread) -> bool:
    try:
        s3_client(proxy.url, make_token("IE")).get_object(Bucket=DUBLIN, Key=KEY)["Body"].read()
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "AccessDenied":
            raise
        return False
    return True


@pytest.fixture
def live(recorder: Recorder, seeded: None, tmp_path: Path) -> Iterator[tuple[ProxyThread, Path]]:
    folder = copy_policies(tmp_path / "policies", with_tests=True)
    config = proxy_config(recorder.url, tmp_path / "audit.jsonl", policies=folder,
                          reload=ReloadConfig(interval_seconds=0.1, run_tests=True))
    running = ProxyThread(config).start()
    yield running, folder
    running.stop()


def test_an_edit_is_served_after_the_next_poll(recorder: Recorder, seeded: None, tmp_path: Path) -> None:
    folder = copy_policies(tmp_path / "policies", with_tests=False)
    config = proxy_config(recorder.url, tmp_path / "audit.jsonl", policies=folder,
                          reload=ReloadConfig(interval_seconds=0.1, run_tests=True))
    proxy = ProxyThread(config).start()
    try:
        assert proxy.running is not None
        before = proxy.running.gateway.policy
        assert before is not None
        assert ie_can_read(proxy)
        edit(folder, US_DENY, US_AND_IE_DENY)
        wait_until(lambda: not ie_can_read(proxy))
        after = proxy.running.gateway.policy
        assert after is not None
        assert after.version != before.version
        assert metric(proxy, 'bailiwick_policy_reloads_total{result="success"}') == 2   # start + reload
        assert metric(proxy, f'bailiwick_policy_info{{datasets="3",version="{after.version}"}}') == 1
    finally:
        proxy.stop()


@pytest.mark.parametrize(("old", "new", "problem"), [
    ("rules:", "rules: [", "mail.yaml:"),                      # not YAML any more
    ("from: [HOME]", "from: [UK]", 'did you mean GB'),          # a code that is not a country
    (US_DENY, US_AND_IE_DENY, "policy test"),                  # loads, but fails the folder's tests
])
def test_a_rejected_edit_keeps_the_last_good_policy_serving(
    live: tuple[ProxyThread, Path], caplog: pytest.LogCaptureFixture, old: str, new: str, problem: str,
) -> None:
    proxy, folder = live
    assert proxy.running is not None
    good = proxy.running.gateway.policy
    edit(folder, old, new)
    wait_until(lambda: metric(proxy, 'bailiwick_policy_reloads_total{result="failure"}') >= 1)
    assert proxy.running.gateway.policy is good
    assert ie_can_read(proxy)
    with urllib.request.urlopen(proxy.admin_url + "/readyz", timeout=5) as response:
        assert response.status == 200
    assert any(problem in record.getMessage() for record in caplog.records if record.name == "bailiwick.reload")
    # Put right, it is read again: the next good edit is served.
    edit(folder, new, old)
    wait_until(lambda: metric(proxy, 'bailiwick_policy_reloads_total{result="success"}') >= 2)


def test_a_configmap_symlink_swap_changes_the_fingerprint(tmp_path: Path) -> None:
    # Kubernetes: files are links to ..data/, and ..data is a link swapped to a new directory beside it.
    mounted = tmp_path / "mount"
    mounted.mkdir()
    first = copy_policies(mounted / "..2026_11_23_a", with_tests=True)
    second = copy_policies(mounted / "..2026_11_23_b", with_tests=True)
    edit(second, US_DENY, US_AND_IE_DENY)
    (mounted / "..data").symlink_to(first.name)
    for name in ("mail.yaml", "jurisdictions.yaml", "tests"):
        (mounted / name).symlink_to(Path("..data") / name)
    before = fingerprint(mounted)
    swap = mounted / "..data_tmp"
    swap.symlink_to(second.name)
    os.replace(swap, mounted / "..data")
    assert fingerprint(mounted) != before
    assert load_checked(mounted, run_tests=False).policy is not None
    rejected = load_checked(mounted, run_tests=True)   # the new content fails its tests
    assert rejected.policy is None
    assert any("policy test" in problem for problem in rejected.problems)


def test_a_policy_failing_its_tests_at_start_is_not_served(
    recorder: Recorder, seeded: None, tmp_path: Path,
) -> None:
    folder = copy_policies(tmp_path / "policies", with_tests=True)
    edit(folder, US_DENY, US_AND_IE_DENY)   # loads, but its own tests say IE may read
    config = proxy_config(recorder.url, tmp_path / "audit.jsonl", policies=folder,
                          reload=ReloadConfig(interval_seconds=0, run_tests=True))
    proxy = ProxyThread(config).start()
    try:
        assert proxy.running is not None
        assert proxy.running.gateway.policy is None
        with pytest.raises(ClientError) as refused:
            ie_can_read(proxy)
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        with pytest.raises(urllib.error.HTTPError) as not_ready:
            urllib.request.urlopen(proxy.admin_url + "/readyz", timeout=5)
        assert not_ready.value.code == 503
        not_ready.value.close()
    finally:
        proxy.stop()


def test_an_edit_made_while_the_policy_loads_at_start_is_reloaded(
    recorder: Recorder, seeded: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = copy_policies(tmp_path / "policies", with_tests=False)

    def load_then_edit(directory: Path, run_tests: bool, fits: Callable[[Policy], str | None] | None) -> Outcome:
        outcome = load_checked(directory, run_tests, fits)
        edit(folder, US_DENY, US_AND_IE_DENY)   # lands after the files were read
        return outcome

    monkeypatch.setattr(lifecycle, "load_checked", load_then_edit)
    config = proxy_config(recorder.url, tmp_path / "audit.jsonl", policies=folder,
                          reload=ReloadConfig(interval_seconds=0.1, run_tests=True))
    proxy = ProxyThread(config).start()
    try:
        wait_until(lambda: not ie_can_read(proxy))
    finally:
        proxy.stop()


def test_reload_under_load_loses_no_request(live: tuple[ProxyThread, Path]) -> None:
    proxy, folder = live
    assert proxy.running is not None
    stop = threading.Event()
    results: list[int] = []
    failures: list[BaseException] = []

    def hammer() -> None:
        s3 = s3_client(proxy.url, make_token("IE"))
        while not stop.is_set():
            try:
                response = s3.get_object(Bucket=DUBLIN, Key=KEY)
                assert response["Body"].read() == b"Dublin mail"
                results.append(response["ResponseMetadata"]["HTTPStatusCode"])
            except BaseException as exc:   # every failure is a finding
                failures.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    versions = set()
    try:
        for n in range(8):   # both versions allow the read; they differ in a description
            edit(folder, "stored in Dublin.", f"stored in Dublin (edit {n}).") if n == 0 else \
                edit(folder, f"stored in Dublin (edit {n - 1}).", f"stored in Dublin (edit {n}).")
            wait_until(lambda: proxy.running is not None and proxy.running.gateway.policy is not None
                       and proxy.running.gateway.policy.version not in versions)
            versions.add(proxy.running.gateway.policy.version)   # type: ignore[union-attr]
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert failures == []
    assert len(results) > 50
    assert set(results) == {200}
    assert len(versions) == 8
    assert metric(proxy, 'bailiwick_policy_reloads_total{result="failure"}') == 0


@pytest.mark.usefixtures("seeded")
def test_sighup_reloads_at_once(tmp_path: Path, recorder: Recorder) -> None:
    folder = copy_policies(tmp_path / "policies", with_tests=False)
    process, port, _ = serve(tmp_path, recorder.url, folder, "reload: {interval_seconds: 0}\n")   # SIGHUP only
    try:
        s3 = s3_client(f"http://127.0.0.1:{port}", make_token("IE"))
        assert s3.get_object(Bucket=DUBLIN, Key=KEY)["Body"].read() == b"Dublin mail"
        edit(folder, US_DENY, US_AND_IE_DENY)
        time.sleep(0.3)
        assert s3.get_object(Bucket=DUBLIN, Key=KEY)["Body"].read() == b"Dublin mail"   # not polled
        process.send_signal(signal.SIGHUP)

        def refused() -> bool:
            try:
                s3.get_object(Bucket=DUBLIN, Key=KEY)
            except ClientError:
                return True
            return False

        wait_until(refused)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    assert "SIGHUP: reloading the policy" in (tmp_path / "serve.log").read_text()


def admin_metric(admin: int, line_start: str) -> float:
    """A sample of a `bailiwick serve` process's /metrics (0 if there is none yet)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(line_start):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_reload_that_drops_the_proxys_region_keeps_the_last_good_policy(
    tmp_path: Path, recorder: Recorder, seeded: None,
) -> None:
    # The built-in map always knows the public regions, so the proxy runs in a region of the folder's own.
    folder = copy_policies(tmp_path / "policies", with_tests=False)
    mail = folder / "mail.yaml"
    mail.write_text(mail.read_text().replace("eu-west-1", "dublin-dc1"))
    (folder / "regions-local.yaml").write_text("regions:\n  dublin-dc1: IE\n")
    process, port, admin = serve(tmp_path, recorder.url, folder, "region: dublin-dc1\nreload: {interval_seconds: 0}\n")
    failures = 'bailiwick_policy_reloads_total{result="failure"}'
    try:
        s3 = s3_client(f"http://127.0.0.1:{port}", make_token("IE"))
        assert s3.get_object(Bucket=DUBLIN, Key=KEY)["Body"].read() == b"Dublin mail"
        # A policy that loads, but where dublin-dc1 is now called dublin-dc9 (map and datasets alike).
        for name in ("mail.yaml", "regions-local.yaml"):
            path = folder / name
            path.write_text(path.read_text().replace("dublin-dc1", "dublin-dc9"))
        assert admin_metric(admin, failures) == 0
        process.send_signal(signal.SIGHUP)
        wait_until(lambda: admin_metric(admin, failures) == 1)
        assert s3.get_object(Bucket=DUBLIN, Key=KEY)["Body"].read() == b"Dublin mail"   # the last good policy
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=5) as response:
            assert response.status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    config = tmp_path / "bailiwick.yaml"
    line = config.read_text().splitlines().index("region: dublin-dc1") + 1
    log = (tmp_path / "serve.log").read_text()
    assert f'policy reload rejected: {config}:{line}: region: "dublin-dc1" is not a region of the policy in {folder}' \
        in log
    assert "the policy in force stays" in log


def test_a_huge_file_dropped_in_the_folder_is_not_read_into_memory(tmp_path: Path) -> None:
    # Someone who can write the folder (a folder the load refuses as untrusted) drops a sparse file
    # of hundreds of MiB: every poll fingerprints the folder before the load checks its trust.
    import tracemalloc

    folder = copy_policies(tmp_path / "policies", with_tests=False)
    huge = folder / "zz.yaml"
    with huge.open("wb") as out:
        out.truncate(512 * 1024 * 1024)
    tracemalloc.start()
    try:
        before = fingerprint(folder)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * 1024 * 1024, peak
    with huge.open("r+b") as out:
        out.truncate(513 * 1024 * 1024)
    assert fingerprint(folder) != before   # still a change


def test_a_file_that_became_a_fifo_does_not_block_the_fingerprint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A FIFO is not listed, but one swapped in after the listing (is_file said yes) was opened and read:
    # the read blocked for ever, and with it every later reload (they wait for the same lock).
    folder = copy_policies(tmp_path / "policies", with_tests=False)
    fifo = folder / "zz.yaml"
    os.mkfifo(fifo)
    monkeypatch.setattr(Path, "is_file", lambda self: True)
    done = threading.Event()

    def take() -> None:
        fingerprint(folder)
        done.set()

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    thread.join(timeout=3)
    blocked = thread.is_alive()
    if blocked:
        # Let the blocked reader go: a writer opens and closes the FIFO.
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(timeout=3)
    assert not blocked
    assert done.is_set()


# Edits the child process must refuse exactly as a load on a thread does: not YAML, a code that is not a
# country, a policy that loads but fails the folder's own tests.
REFUSED_EDITS = [
    pytest.param("rules:", "rules: [", "mail.yaml:", id="not YAML"),
    pytest.param("from: [HOME]", "from: [UK]", "did you mean GB", id="not a country"),
    pytest.param(US_DENY, US_AND_IE_DENY, "policy test", id="fails its tests"),
]


@pytest.mark.parametrize(("old", "new", "problem"), REFUSED_EDITS)
def test_a_child_process_refuses_a_policy_with_the_problems_a_thread_would_give(
    tmp_path: Path, old: str, new: str, problem: str,
) -> None:
    folder = copy_policies(tmp_path / "policies", with_tests=True)
    edit(folder, old, new)
    isolated = load_isolated(folder, run_tests=True)
    assert isolated.policy is None
    assert isolated.problems == load_checked(folder, run_tests=True).problems
    assert any(problem in line for line in isolated.problems)
    if problem != "policy test":
        assert all(line.startswith(f"{folder / 'mail.yaml'}:") for line in isolated.problems)


def test_a_child_process_hands_back_the_policy_a_thread_would_load(tmp_path: Path) -> None:
    from proxy.domain import Access, AccessRequest, Action, Resource
    from proxy.policy.engine import decide

    folder = copy_policies(tmp_path / "policies", with_tests=True)
    isolated, local = load_isolated(folder, run_tests=True).policy, load_checked(folder, run_tests=True).policy
    assert isolated is not None
    assert local is not None
    assert isolated == local
    assert (isolated.version, isolated.regions, isolated.groups) == (local.version, local.regions, local.groups)
    for jurisdiction in ("IE", "DE", "US", "JP"):
        for action in Action:
            request = AccessRequest((Access(action, Resource("s3", DUBLIN, KEY)),))
            assert decide(isolated, jurisdiction, request, trace=True) == \
                decide(local, jurisdiction, request, trace=True)
    # The shared parts stay shared: one expansion of "from: [US]" for the two datasets that write it.
    denies = [r for d in isolated.datasets for r in d.rules if r.sources == ("US",)]
    assert len(denies) == 2
    assert denies[0].via is denies[1].via


def test_a_policy_that_does_not_fit_this_proxy_is_refused_from_a_child_process_too(tmp_path: Path) -> None:
    folder = copy_policies(tmp_path / "policies", with_tests=True)
    edit(folder, US_DENY, US_AND_IE_DENY)   # fails its tests as well: not fitting is said first, as on a thread
    outcome = load_isolated(folder, run_tests=True, fits=lambda policy: f"{len(policy.datasets)} datasets")
    assert outcome == Outcome(None, ("3 datasets",))
    assert outcome == load_checked(folder, run_tests=True, fits=lambda policy: f"{len(policy.datasets)} datasets")


async def test_a_reload_in_a_child_process_swaps_good_edits_and_keeps_the_last_good_policy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    folder = copy_policies(tmp_path / "policies", with_tests=True)
    installed: list[Policy] = []
    failures: list[None] = []
    reloader = PolicyReloader(folder, interval=0, run_tests=True, install=installed.append,
                              failed=lambda: failures.append(None), isolate=True)
    assert await reloader.reload(force=True) is True
    edit(folder, "from: [HOME]", "from: [UK]")
    assert await reloader.reload(force=False) is False
    assert await reloader.reload(force=False) is None   # nothing changed since
    assert len(installed) == 1
    assert failures == [None]
    line = (folder / "mail.yaml").read_text().splitlines().index("        from: [UK]") + 1
    rejected = [r.getMessage() for r in caplog.records if r.getMessage().startswith("policy reload rejected")]
    assert rejected[0].startswith(f"policy reload rejected: {folder / 'mail.yaml'}:{line}: datasets[0].rules[0].from: ")


@pytest.mark.parametrize(("threshold", "isolate", "swapped"), [
    pytest.param(0, None, False, id="large: in the child, which dies"),
    pytest.param(10**9, None, True, id="small: on a thread"),
    pytest.param(10**9, True, False, id="asked for the child"),
])
async def test_a_child_process_that_dies_is_a_rejected_reload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    threshold: int, isolate: bool | None, swapped: bool,
) -> None:
    folder = copy_policies(tmp_path / "policies", with_tests=False)
    monkeypatch.setattr(reload_module, "ISOLATE_BYTES", threshold)
    monkeypatch.setattr(reload_module, "_CHILD", "import sys; sys.stderr.write('no memory left\\n'); sys.exit(3)")
    installed: list[Policy] = []
    failures: list[None] = []
    reloader = PolicyReloader(folder, interval=0, run_tests=False, install=installed.append,
                              failed=lambda: failures.append(None), isolate=isolate)
    assert await reloader.reload(force=True) is swapped
    assert (len(installed), len(failures)) == ((1, 0) if swapped else (0, 1))
    if not swapped:
        assert "the policy loader process exited with 3: no memory left" in caplog.text
