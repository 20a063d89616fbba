"""Policies that grow: what loading a policy costs per dataset, and what a live reload costs the serving loop.

Generates a policy folder as a multi-tenant service has one: the repository's
jurisdiction groups and two of its own (one nesting the other), and N
datasets, each on its own bucket (``tenant-000001``…), spread over five
regions, each with three rules written out in block style the way operators
write them (an allow for HOME with an id, an allow for a group, a deny for
US). Every figure is taken in a fresh process, so that nothing loaded before
counts:

- load: `proxy.policy.loader.load_policy` of the folder: seconds, the
  process's peak RSS (``VmHWM``) and what it holds after the load
  (``VmRSS``), each less the same process's RSS before the load, per dataset;
- reload: a process serving the same policy (loaded as at start, then
  ``gc.freeze()`` as `bailiwick serve` does) reloads it with
  `proxy.reload.PolicyReloader` while a task on its event loop (uvloop, as
  the proxy's) wakes every millisecond and makes a little garbage, as
  requests do; how late the task woke is how long a request would have
  waited. Taken on a worker thread and in a child process (`isolate`), and
  for 0.5 s after the reload so that a garbage collection it causes, and
  freeing the policy it replaced, count.

Run: ``python3 bench/policy_load.py --datasets 1000 10000 100000 --reload 10000 100000``;
prints one JSON object. ``--code DIR`` measures another checkout's proxy package
with the same generator and harness (a before/after comparison).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REGIONS = ("eu-west-1", "eu-central-1", "us-east-1", "ap-northeast-1", "eu-north-1")
GROUPS = "jurisdictions:\n  NORDICS: [DK, FI, IS, NO, SE]\n  PARTNERS: [NORDICS, GB, CH]\n"
TICK = 0.001            # how often the serving loop's task wakes during a reload
SETTLE = 0.5            # how long it goes on after the reload, for a collection the reload causes


def write_policy(directory: Path, datasets: int) -> int:
    """The generated policy folder; returns the bytes of YAML written."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    shutil.copy(ROOT / "policies" / "jurisdictions.yaml", directory / "jurisdictions.yaml")
    (directory / "groups.yaml").write_text(GROUPS, encoding="utf-8")
    parts = ["datasets:\n"]
    for i in range(1, datasets + 1):
        parts.append(
            f"  - name: tenant-{i:06d}\n"
            f"    region: {REGIONS[i % len(REGIONS)]}\n"
            f"    resources:\n"
            f"      - s3://tenant-{i:06d}\n"
            f"    rules:\n"
            f"      - id: t{i:06d}-home\n"
            f"        allow: [read, list, write, delete]\n"
            f"        from: [HOME]\n"
            f"      - allow: [read, list]\n"
            f"        from: [{'EEA' if i % 2 else 'PARTNERS'}]\n"
            f"      - deny: [\"*\"]\n"
            f"        from: [US]\n"
        )
    (directory / "tenants.yaml").write_text("".join(parts), encoding="utf-8")
    for path in directory.iterdir():
        path.chmod(0o644)   # the loader refuses files others could change
    return sum(path.stat().st_size for path in directory.iterdir())


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _child_load(directory: Path) -> dict[str, Any]:
    """In a fresh process: load the folder once."""
    from proxy.policy.loader import load_policy

    load_policy(Path(ROOT / "policies"))   # imports and the built-in regions, which every process has
    gc.collect()
    before = _status_kib("VmRSS")
    started, cpu = time.perf_counter(), time.process_time()
    policy = load_policy(directory)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    # The CPU time too: on a shared machine the wall time counts the other processes' turns.
    return {"seconds": seconds, "cpu_seconds": cpu, "datasets": len(policy.datasets), "rss_before_kib": before,
            "rss_after_kib": _status_kib("VmRSS"), "peak_kib": _status_kib("VmHWM")}


def _child_reload(directory: Path, isolate: bool) -> dict[str, Any]:
    """In a fresh process: serve the folder's policy, reload it, and see how late the loop's task woke."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency of the proxy
        pass
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return asyncio.run(_reload(directory, isolate))


async def _reload(directory: Path, isolate: bool) -> dict[str, Any]:
    import inspect

    from proxy.reload import PolicyReloader, load_checked

    options: dict[str, Any] = {}
    if "isolate" in inspect.signature(PolicyReloader).parameters:
        options["isolate"] = isolate
    elif isolate:
        return {"skipped": "this proxy has no child-process reload"}
    # As `bailiwick serve` has it: one reference to the policy in force (the gateway's), replaced on install,
    # and the reloader told about it at start; then `gc.freeze()` once started.
    serving: list[Any] = [load_checked(directory, False).policy]
    assert serving[0] is not None
    installed: list[str] = []

    def install(policy: Any) -> None:
        serving[0] = policy
        installed.append(policy.version)

    reloader = PolicyReloader(directory, interval=0, run_tests=False, install=install, failed=lambda: None,
                              **options)
    await reloader.start(serving[0], "-")
    gc.freeze()
    lateness: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        garbage: list[Any] = []
        clock = time.perf_counter   # the loop's own clock may count whole milliseconds (libuv's does)
        while True:
            asked = clock()
            await asyncio.sleep(TICK)
            lateness.append(clock() - asked - TICK)
            cycle: dict[str, Any] = {"n": len(lateness)}
            cycle["self"] = cycle   # what requests leave behind for the collector
            garbage = [cycle, [str(i) for i in range(20)]]
            if done.is_set():
                return
            del garbage

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.2)
    idle = list(lateness)
    lateness.clear()
    started = time.perf_counter()
    result = await reloader.reload(force=True)
    seconds = time.perf_counter() - started
    await asyncio.sleep(SETTLE)   # the policy replaced is let go of meanwhile
    done.set()
    await task
    return {
        "isolate": isolate, "result": result, "installed": len(installed), "reload_seconds": seconds,
        "ticks": len(lateness), "max_delay_ms": max(lateness) * 1e3,
        "p99_delay_ms": sorted(lateness)[int(len(lateness) * 0.99)] * 1e3,
        "idle_max_delay_ms": max(idle) * 1e3 if idle else float("nan"),
        "rss_after_kib": _status_kib("VmRSS"), "peak_kib": _status_kib("VmHWM"),
    }


def _in_child(code: Path, *args: str) -> dict[str, Any]:
    """Run this file's child mode in a fresh interpreter with `code`'s proxy package first on its path."""
    done = subprocess.run(  # noqa: S603 - this interpreter and this file, with our own arguments
        [sys.executable, str(Path(__file__).resolve()), "--code", str(code), *args],
        capture_output=True, text=True, check=False, timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(f"policy_load child {args} failed: {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _isolate_bytes(code: Path) -> float:
    """From how many bytes of policy `code`'s proxy reloads in a child process (never: infinity)."""
    found = _in_child(code, "--child-isolate-bytes")
    return float(found["isolate_bytes"])


def measure(sizes: list[int], reload_sizes: list[int], runs: int, code: Path = ROOT) -> dict[str, Any]:
    """Load at each size (`runs` times, medians) and reload at each reload size, both ways (once each)."""
    results: dict[str, Any] = {"runs": runs, "load": {}, "reload": {}, "code": str(code)}
    with tempfile.TemporaryDirectory(prefix="bailiwick-policy-load-") as tmp:
        for size in sorted(set(sizes) | set(reload_sizes)):
            folder = Path(tmp) / str(size)
            written = write_policy(folder, size)
            if size in sizes:
                samples = [_in_child(code, "--child-load", str(folder)) for _ in range(runs)]
                seconds = statistics.median(s["seconds"] for s in samples)
                held = statistics.median((s["rss_after_kib"] - s["rss_before_kib"]) for s in samples)
                peak = statistics.median((s["peak_kib"] - s["rss_before_kib"]) for s in samples)
                results["load"][str(size)] = {
                    "yaml_bytes": written, "seconds": seconds, "seconds_all": [s["seconds"] for s in samples],
                    "cpu_seconds": statistics.median(s["cpu_seconds"] for s in samples),
                    "held_kib": held, "peak_kib": peak, "process_peak_kib": max(s["peak_kib"] for s in samples),
                    "us_per_dataset": seconds / size * 1e6, "held_kib_per_dataset": held / size,
                    "peak_kib_per_dataset": peak / size,
                }
            if size in reload_sizes:
                results["reload"][str(size)] = {
                    "thread": _in_child(code, "--child-reload", str(folder), "thread"),
                    "child": _in_child(code, "--child-reload", str(folder), "child"),
                    "proxy_way": "child" if written >= _isolate_bytes(code) else "thread",
                }
            shutil.rmtree(folder)
    return results


def policy_load_profile(smoke: bool, runs: int | None) -> dict[str, Any]:
    """The sizes a run measures: 1k, 10k and 100k datasets (smoke: 100 and 1k, a few seconds)."""
    if smoke:
        return {"sizes": [100, 1_000], "reload_sizes": [1_000], "runs": runs or 1}
    return {"sizes": [1_000, 10_000, 100_000], "reload_sizes": [10_000, 100_000], "runs": runs or 3}


def measure_policy_load(prof: dict[str, Any], results: dict[str, Any]) -> None:
    """Part (g) of bench/run.py: `measure` with the profile's sizes, into results["policy_load"]."""
    results["policy_load"] = {**measure(prof["sizes"], prof["reload_sizes"], prof["runs"]), "profile": prof}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", type=int, nargs="*", default=[1_000, 10_000, 100_000])
    parser.add_argument("--reload", type=int, nargs="*", default=[10_000, 100_000], metavar="DATASETS")
    parser.add_argument("--runs", type=int, default=3, help="loads per size (medians reported)")
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout whose proxy package is measured")
    parser.add_argument("--child-load", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-reload", nargs=2, metavar=("DIR", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--child-isolate-bytes", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_load is not None or args.child_reload is not None or args.child_isolate_bytes:
        sys.path.insert(0, str(args.code))
        if args.child_isolate_bytes:
            import proxy.reload

            print(json.dumps({"isolate_bytes": getattr(proxy.reload, "ISOLATE_BYTES", float("inf"))}))
        elif args.child_load is not None:
            print(json.dumps(_child_load(args.child_load)))
        else:
            print(json.dumps(_child_reload(Path(args.child_reload[0]), args.child_reload[1] == "child")))
        return 0
    print(json.dumps(measure(args.datasets, args.reload, args.runs, args.code)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
