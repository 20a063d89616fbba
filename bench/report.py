"""The report: the results of a run (bench/measure.py) as markdown, with ratios and the targets.

A report is an artifact of its run (report.md beside report.json in the run's
--output folder). bench/README.md shows one report someone chose to commit;
`replace_readme_report` puts a report there, only when asked (`--update-readme`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.bed import LOAD_CPU, PROXY_CPU
from bench.measure import capacity

# The targets the report holds the figures to.
TARGET_RPS_ONE_PROCESS = 10000.0   # small GETs a second, one process, JWT + policy + audit
TARGET_W2_OVER_NGINX = 0.50
TARGET_ADDED_P50_MS = 0.3
TARGET_ADDED_P99_MS = 1.0
TARGET_GET_OVER_NGINX = 0.90
TARGET_PUT_OVER_DIRECT = 0.95
TARGET_RSS_MIB = 64.0
TARGET_POLICY_P99_US = 10.0
TARGET_ENCRYPTED_OVER_PLAIN = 0.70
TARGET_RSS_GROWTH_MIB = 8.0   # "flat in object size": peak RSS at the largest object over the smallest
TARGET_POLICY_LOAD_S = 5.0         # 100,000 datasets loaded
TARGET_POLICY_LOAD_RSS_MIB = 300.0  # ... within this much memory (the process's peak)
TARGET_RELOAD_DELAY_MS = 50.0      # the longest a reload of any size holds up the serving loop


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b and a == a and b == b else "n/a"


def num(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}" if value == value else "n/a"


def target_row(name: str, value: float, target: float, unit: str, higher_is_better: bool,
               digits: int = 2) -> list[str]:
    if value != value:
        return [name, "n/a", f"{'≥' if higher_is_better else '≤'} {target:g} {unit}", "not measured", ""]
    met = value >= target if higher_is_better else value <= target
    diff = value - target
    # A target that is itself a percentage misses by percentage points; others also by a relative amount.
    amount = f"{abs(diff):,.{digits}f} {'points' if unit == '%' else unit}"
    relative = f" ({diff / target:+.0%} of the goal)" if target and unit != "%" else ""
    how = (f"{'above by' if diff >= 0 else 'short by'} {amount}{relative}" if higher_is_better
           else f"{'under by' if diff <= 0 else 'over by'} {amount}{relative}")
    sign = "≥" if higher_is_better else ("<" if name.startswith(("peak", "policy")) else "≤")
    return [name, f"{value:,.{digits}f} {unit}", f"{sign} {target:,g} {unit}", "met" if met else "**not met**", how]


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def targets(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    small = results["small_get"]
    rows.append(target_row("small GETs, one process (best of c=10/64/256)", capacity(results, "bailiwick"),
                           TARGET_RPS_ONE_PROCESS, "req/s", True, 0))
    if "bailiwick_w2" in small:
        w2 = capacity(results, "bailiwick_w2") / capacity(results, "nginx")
        rows.append(target_row("small GETs, --workers 2 / nginx (best of each)", w2 * 100,
                               TARGET_W2_OVER_NGINX * 100, "%", True, 0))
    else:
        rows.append(["small GETs, --workers 2 / nginx", "n/a", "≥ 50 %", "not measured",
                     "`bailiwick serve` has no --workers flag yet"])
    at25 = results["latency"]["rates"]["25%"]
    rows.append(target_row("added latency p50 at 25% load (bailiwick - direct)",
                           at25["bailiwick"]["p50_ms"] - at25["direct"]["p50_ms"], TARGET_ADDED_P50_MS, "ms", False, 3))
    rows.append(target_row("added latency p99 at 25% load (bailiwick - direct)",
                           at25["bailiwick"]["p99_ms"] - at25["direct"]["p99_ms"], TARGET_ADDED_P99_MS, "ms", False, 3))
    stream = results["streaming"]
    for streams in (1, 4):
        get = stream[f"GET x{streams}"]
        rows.append(target_row(f"GET streaming, {streams} stream(s), bailiwick / nginx",
                               get["bailiwick"]["mb_s"] / get["nginx"]["mb_s"] * 100,
                               TARGET_GET_OVER_NGINX * 100, "%", True, 0))
    for streams in (1, 4):
        put = stream[f"PUT x{streams}"]
        rows.append(target_row(f"PUT streaming, {streams} stream(s), bailiwick / direct",
                               put["bailiwick"]["mb_s"] / put["direct"]["mb_s"] * 100,
                               TARGET_PUT_OVER_DIRECT * 100, "%", True, 0))
    peak = max(stream["GET x4"]["bailiwick"]["peak_rss_process_mib"],
               stream["PUT x4"]["bailiwick"]["peak_rss_process_mib"])
    rows.append(target_row("peak RSS per process, 4 concurrent 256 MiB streams", peak, TARGET_RSS_MIB, "MiB", False, 1))
    policy = results["policy"]
    if "100000" in policy:
        rows.append(target_row("policy p99 at 100,000 datasets", policy["100000"]["p99_us"],
                               TARGET_POLICY_P99_US, "µs", False, 2))
    else:
        largest = max(policy, key=int)
        rows.append(["policy p99 at 100,000 datasets", f"{policy[largest]['p99_us']:.2f} µs at {int(largest):,}",
                     "< 10 µs", "not measured", "smoke runs stop at "
                     f"{int(largest):,} datasets (loading 100,000 takes minutes); run without --smoke"])
    return rows


def render(results: dict[str, Any]) -> str:
    """The report of a run: every part it measured (a run with `--only` has one), then the targets."""
    m = results["machine"]
    lines = [
        "# bailiwick benchmark report",
        "",
        f"- date: {results['date']} ({'smoke' if results['smoke'] else 'full'} run"
        f"{', part ' + results['only'] + ' only' if results.get('only') else ''}, "
        f"{results['runs']} run(s) per measurement, medians; took {results['elapsed_seconds']:.0f} s)",
        f"- machine: {m['nproc']} CPUs, {m['cpu_model']}, kernel {m['kernel']}; "
        f"load average before / after: {results['loadavg_before']} / {results['loadavg_after']}",
        f"- versions: Python {m['python']}, aiohttp {m['aiohttp']}, nginx {m['nginx']}, {m['wrk']}, {m['curl']}",
    ]
    rows: list[list[str]] = []
    if "small_get" in results:
        lines += _streaming_parts(results)
        rows += targets(results)
    if "encryption" in results:
        lines += [""] if lines[-1] else []
        lines += render_encryption(results["encryption"])
        rows += encryption_targets(results["encryption"])
    if "tls" in results:
        lines += [""] if lines[-1] else []
        lines += render_tls(results["tls"])
    if "policy_load" in results:
        lines += [""] if lines[-1] else []
        lines += render_policy_load(results["policy_load"])
        rows += policy_load_targets(results["policy_load"])
    if "cpu" in results:
        lines += [""] if lines[-1] else []
        lines += render_cpu(results["cpu"])
        rows += cpu_targets(results["cpu"])
    if "workers" in results:
        lines += [""] if lines[-1] else []
        lines += render_workers(results["workers"])
    lines += ["## Targets", "", *table(["target", "measured", "goal", "status", "margin"], rows)]
    lines += ["Numbers from a machine shared with other work are provisional; compare ratios within one report "
              "rather than absolutes across reports.", ""]
    return "\n".join(lines)


def _streaming_parts(results: dict[str, Any]) -> list[str]:
    """(a) to (d): bailiwick beside the storage server direct and nginx."""
    lines = [
        f"- bailiwick: `python3 -m proxy serve`, RS256 JWT per request (X-Bailiwick-Token), policies/, "
        f"audit log to a file; --workers flag: {'yes' if results['bailiwick_workers_flag'] else 'no'}",
        "- nginx reverse proxy: proxy_pass with `keepalive 256` upstream connections, `proxy_http_version 1.1`, "
        "`proxy_buffering off`, `proxy_request_buffering off`, `proxy_buffer_size 64k`, "
        "`client_body_buffer_size 64k`; stand-in: nginx, sendfile, files on tmpfs, WebDAV PUT",
        "- every request (all targets) carries the same token and a fake SigV4 `Authorization` header",
        "",
        "Pinning (taskset):",
        "",
        *table(["process", "CPUs"], [[k, v] for k, v in results["pinning"].items()]),
    ]
    # (a)
    small = results["small_get"]
    names = [n for n in ("direct", "nginx", "bailiwick", "bailiwick_w2") if n in small]
    header = ["connections", *[f"{n} req/s (errors)" for n in names], "bailiwick / nginx", "bailiwick / direct"]
    if "bailiwick_w2" in small:
        header += ["workers 2 / nginx"]
    rows = []
    for c in small["direct"]:
        row = [c, *[f"{num(small[n][c]['rps'])} ({num(small[n][c]['errors'])})" for n in names],
               ratio(small["bailiwick"][c]["rps"], small["nginx"][c]["rps"]),
               ratio(small["bailiwick"][c]["rps"], small["direct"][c]["rps"])]
        if "bailiwick_w2" in small:
            row.append(ratio(small["bailiwick_w2"][c]["rps"], small["nginx"][c]["rps"]))
        rows.append(row)
    lines += ["## (a) Small-object capacity: 1 KiB GET, wrk -t1, "
              f"{results['profile']['wrk_seconds']} s per point", "",
              "errors = non-2xx responses + socket errors.", "", *table(header, rows)]
    # (b)
    lat = results["latency"]
    lines += [f"## (b) Added latency, open loop ({results['profile']['openloop_seconds']:g} s per rate, "
              "64 connections)", "",
              f"Rates are 25 % and 50 % of bailiwick's measured capacity ({num(lat['capacity_rps'])} req/s, the best "
              "of (a)). Latency is measured from each request's scheduled send time (bench/openloop.py), so "
              "queueing shows.", ""]
    rows = []
    for label, entry in lat["rates"].items():
        for pct, key in (("p50", "p50_ms"), ("p99", "p99_ms"), ("p99.9", "p999_ms")):
            d, n, b = entry["direct"][key], entry["nginx"][key], entry["bailiwick"][key]
            rows.append([f"{label} ({num(entry['rate_rps'])} req/s)", pct, f"{d:.3f}", f"{n:.3f}", f"{b:.3f}",
                         f"{b - d:+.3f}", f"{n - d:+.3f}", ratio(b, n), ratio(b, d)])
    lines += table(["load", "percentile", "direct ms", "nginx ms", "bailiwick ms", "bailiwick - direct ms",
                    "nginx - direct ms", "bailiwick / nginx", "bailiwick / direct"], rows)
    errors = {f"{label} {name}": entry[name]["errors"] + entry[name]["non2xx"]
              for label, entry in lat["rates"].items() for name in ("direct", "nginx", "bailiwick")}
    lines += [f"Errors (median per run): {', '.join(f'{k}: {v:g}' for k, v in errors.items())}.", ""]
    # (c)
    stream = results["streaming"]
    rows = []
    for key, entry in stream.items():
        if not isinstance(entry, dict):
            continue
        d, n, b = entry["direct"]["mb_s"], entry["nginx"]["mb_s"], entry["bailiwick"]["mb_s"]
        rows.append([key, num(d), num(n), num(b), ratio(b, n), ratio(b, d),
                     f"{entry['bailiwick']['peak_rss_process_mib']:.1f}",
                     f"{entry['bailiwick']['peak_rss_total_mib']:.1f}"])
    lines += ["## (c) Streaming 256 MiB objects (curl, client side, MB = 10^6 bytes)", "",
              "Throughput = all bytes of all concurrent streams / wall time. RSS: VmRSS of a fresh bailiwick "
              "process, sampled every 50 ms during the transfers (max over runs); "
              f"idle before the transfers: {stream['idle_rss_process_mib']:.1f} MiB. "
              + (f"The process that took the capacity and latency runs (up to 256 connections at once) was at "
                 f"{stream['rss_after_load_mib']:.1f} MiB afterwards." if "rss_after_load_mib" in stream else ""),
              "",
              *table(["transfer", "direct MB/s", "nginx MB/s", "bailiwick MB/s", "bailiwick / nginx",
                      "bailiwick / direct", "bailiwick peak RSS / process MiB", "bailiwick peak RSS total MiB"], rows)]
    slower = [key for key, entry in stream.items()
              if isinstance(entry, dict) and entry["direct"]["mb_s"] < entry["bailiwick"]["mb_s"]]
    if slower:
        lines += [f"Note: direct was slower than through bailiwick for {', '.join(slower)}. Direct, the curls and "
                  f"the stand-in share CPU {LOAD_CPU}; through a proxy part of the work moves to CPU {PROXY_CPU}. "
                  "Ratios over direct above 1 there say more about the test bed than about the proxy.", ""]
    # (d)
    rows = [[f"{int(k):,}", num(v["decisions_per_second"]), f"{v['p50_us']:.2f}", f"{v['p99_us']:.2f}",
             f"{v['load_seconds']:.1f}"] for k, v in results["policy"].items()]
    lines += ["## (d) Policy engine alone (`decide`, reads of random buckets, pinned to CPU 0)", "",
              f"{results['profile']['policy_calls']:,} calls per round, median of {results['runs']} round(s); "
              "time per call with perf_counter_ns.", "",
              *table(["datasets", "decisions/s", "p50 µs", "p99 µs", "policy load s"], rows)]
    return lines


def render_encryption(enc: dict[str, Any]) -> list[str]:
    """(e): throughput and memory unencrypted beside encrypted, then the key service's calls and latency."""
    prof = enc["profile"]
    size = f"{prof['stream_bytes'] // 2**20} MiB"
    rows = []
    for key, entry in enc["throughput"].items():
        plain, sealed = entry["unencrypted"], entry["encrypted"]
        rows.append([key, num(entry["direct"]["mb_s"]), num(plain["mb_s"]), num(sealed["mb_s"]),
                     f"{sealed['mb_s'] / plain['mb_s']:.0%}", f"{plain['cpu_ms_per_mib']:.2f}",
                     f"{sealed['cpu_ms_per_mib']:.2f}", _share(plain["cpu_ms_per_mib"], sealed["cpu_ms_per_mib"]),
                     f"{plain['peak_rss_mib']:.1f}", f"{sealed['peak_rss_mib']:.1f}"])
    lines = [f"## (e) Encryption at rest: {size} objects, the same proxy unencrypted and encrypted", "",
             "Two bailiwick processes with one configuration (re-sign mode, `s3.sign`; `encryption:` with the "
             "key file service, no key cache); in one the objects' dataset is plain, in the other it has "
             "`encryption: required`. Same source files, same stand-in S3 server (bench/s3standin.py: files on "
             "tmpfs, metadata beside them, GET by sendfile; re-signed requests checked, signatures not "
             f"verified). Pinning: the proxies on CPU {PROXY_CPU}; the stand-in, OpenBao and the curls on CPU "
             f"{LOAD_CPU}. \"stand-in direct\" is curl straight to it: the ceiling. Throughput = all bytes of all "
             "concurrent streams / wall time, client side (MB = 10^6 bytes), median of "
             f"{prof['runs']} run(s), the targets interleaved in each run. Proxy CPU: user + system time of the "
             "proxy process per MiB moved (/proc/PID/stat, median), steadier than MB/s when other work shares "
             "the machine; unencrypted / encrypted CPU is the ratio a CPU-bound proxy would reach. Peak RSS: the "
             "larger of the proxy process's high-water mark (VmHWM, reset before each transfer) and its VmRSS "
             "sampled every 50 ms, max over runs; idle: "
             f"{enc['idle_rss_mib']['unencrypted']:.1f} MiB unencrypted, {enc['idle_rss_mib']['encrypted']:.1f} "
             "MiB encrypted.", "",
             *table(["transfer", "stand-in direct MB/s", "unencrypted MB/s", "encrypted MB/s",
                     "encrypted / unencrypted", "proxy CPU ms/MiB unencrypted", "proxy CPU ms/MiB encrypted",
                     "CPU unencrypted / encrypted", "peak RSS unencrypted MiB", "peak RSS encrypted MiB"], rows)]
    sizes = list(enc["memory"])
    rows = [[f"{int(s) / 2**20:g} MiB", *(f"{enc['memory'][s][k]:.1f}" for k in
                                         ("PUT unencrypted", "PUT encrypted", "GET unencrypted", "GET encrypted"))]
            for s in sizes]
    lines += ["Peak RSS (MiB) while the proxy moves one object, by size (one stream):", "",
              *table(["object", "PUT unencrypted", "PUT encrypted", "GET unencrypted", "GET encrypted"], rows)]
    rows = []
    for name, entry in enc["key_service"].items():
        per = entry["per_object"]
        lat = entry["latency"]
        rows.append([name.replace(", cache", ""), "on" if "cache" in name else "off",
                     f"{per['write']:g}", f"{per['read']:g}", f"{per['read again']:g}",
                     _latency_cell(lat["generate"]), _latency_cell(lat["unwrap"])])
    count = next(iter(enc["key_service"].values()))["objects"] if enc["key_service"] else 0
    lines += [f"Key-service round trips per object ({count} objects of {prof['key_object_bytes'] // 1024} KiB "
              "written, then each read twice), from the proxy's `bailiwick_key_releases_total` (less the hits "
              "of `bailiwick_key_cache_lookups_total` where a cached release is counted as released), and the "
              "latency of a call from `bailiwick_key_release_duration_seconds` (mean; p50 and p99 as the "
              "histogram bucket that holds them; unwrap over the first reads only, which the cache never "
              "answers). Cache on: `encryption.key_cache.max_keys: 64`."
              + ("" if enc["transit"] else " OpenBao (`bao`) is not installed: Transit not measured."), "",
              *table(["key service", "cache", "per object written", "per object read", "per object read again",
                      "generate ms: mean (p50 / p99 ≤)", "unwrap ms: mean (p50 / p99 ≤)"], rows)]
    return lines


def _share(a: float, b: float) -> str:
    """a / b as a percentage; n/a when b is nothing (a transfer shorter than the CPU clock's tick)."""
    return f"{a / b:.0%}" if a and b else "n/a"


def _latency_cell(lat: dict[str, float]) -> str:
    return f"{lat['mean_ms']:.2f} ({lat['p50_le_ms']:g} / {lat['p99_le_ms']:g})" if lat["calls"] else "n/a"


def encryption_targets(enc: dict[str, Any]) -> list[list[str]]:
    rows = []
    for key, entry in enc["throughput"].items():
        rows.append(target_row(f"encrypted / unencrypted, {key}", entry["encrypted"]["mb_s"]
                               / entry["unencrypted"]["mb_s"] * 100, TARGET_ENCRYPTED_OVER_PLAIN * 100, "%", True, 0))
    sizes = sorted(enc["memory"], key=int)
    small, large = enc["memory"][sizes[0]], enc["memory"][sizes[-1]]
    growth = max(large[k] - small[k] for k in large)
    rows.append(target_row(f"peak RSS growth {int(sizes[0]) / 2**20:g} → {int(sizes[-1]) / 2**20:g} MiB object "
                           "(worst of PUT/GET, encrypted or not)", growth, TARGET_RSS_GROWTH_MIB, "MiB", False, 1))
    for name, entry in enc["key_service"].items():
        per = entry["per_object"]
        rows.append(target_row(f"{name}: key-service calls per object written", per["write"], 1, "calls", False, 2))
        read = per["read again"] if "cache" in name else per["read"]
        goal = 0 if "cache" in name else 1
        what = "read again (cache on)" if "cache" in name else "read"
        rows.append(target_row(f"{name}: key-service calls per object {what}", read, goal, "calls", False, 2))
    return rows


README_HEADING = "## Committed report"


def replace_readme_report(readme: Path, report: str) -> None:
    """Put `report` in the README's committed-report section (its headings one level down), replacing the last."""
    text = readme.read_text() if readme.exists() else "# Benchmarks\n\nRun `python3 bench/run.py`.\n"
    before = text.split(README_HEADING, 1)[0].rstrip() + "\n\n"
    demoted = "\n".join("##" + line if line.startswith("#") else line for line in report.splitlines())
    readme.write_text(before + README_HEADING + "\n\n" + demoted.strip() + "\n")


def render_tls(tls: dict[str, Any]) -> list[str]:
    """(f): the same proxy over plain HTTP and over TLS: the handshake's cost, then the per-request cost."""
    plain, secure = tls["plain"], tls["tls"]
    prof = tls["profile"]

    def row(what: str, key: str, unit: str, digits: int = 0) -> list[str]:
        a, b = plain[key], secure[key]
        return [what, f"{num(a, digits)} {unit}", f"{num(b, digits)} {unit}", f"{b / a:.0%}" if a else "-"]

    lat_plain, lat_tls = plain["latency"], secure["latency"]
    rows = [
        row(f"new connections/s, one 1 KiB GET each ({prof['new_connections']} clients, `Connection: close`)",
            "new_rps", "/s"),
        row("connection set-up alone, p50 (connect; + handshake, certificate verified)", "setup_p50_ms", "ms", 2),
        row("connection set-up alone, p99", "setup_p99_ms", "ms", 2),
        row(f"1 KiB GETs on {prof['connections']} keep-alive connections", "keepalive_rps", "req/s"),
        [f"latency at {num(tls['latency_rate'])} req/s (open loop), p50",
         f"{lat_plain['p50_ms']:.2f} ms", f"{lat_tls['p50_ms']:.2f} ms",
         f"{lat_tls['p50_ms'] / lat_plain['p50_ms']:.0%}" if lat_plain["p50_ms"] else "-"],
        [f"latency at {num(tls['latency_rate'])} req/s (open loop), p99",
         f"{lat_plain['p99_ms']:.2f} ms", f"{lat_tls['p99_ms']:.2f} ms",
         f"{lat_tls['p99_ms'] / lat_plain['p99_ms']:.0%}" if lat_plain["p99_ms"] else "-"],
    ]
    errors = sum(int(side[key]) for side in (plain, secure) for key in ("new_errors", "keepalive_errors"))
    errors += sum(int(side["errors"]) + int(side["non2xx"]) for side in (lat_plain, lat_tls))
    return [
        "## (f) TLS on the data port: the same proxy over plain HTTP and over TLS",
        "",
        "Two bailiwick processes with one configuration, one with `listen_tls` (a P-256 certificate made at bench "
        "time, TLS 1.3, no session resumption) and one without; the same 1 KiB object. The handshake's cost is "
        "the new-connection rows (every request on a new connection); the per-request cost on a kept-alive "
        "connection is the keep-alive and latency rows (the latency at half the plain proxy's capacity, "
        f"measured from the scheduled send time). Errors in this part: {errors}.",
        "",
        *table(["", "plain HTTP", "TLS", "TLS / plain"], rows),
    ]


def render_policy_load(part: dict[str, Any]) -> list[str]:
    """(g): load cost per dataset by policy size, and how long a live reload held up the serving loop."""
    rows = []
    for size, entry in sorted(part["load"].items(), key=lambda item: int(item[0])):
        rows.append([
            f"{int(size):,}", f"{entry['yaml_bytes'] / 2**20:.1f}", f"{entry['seconds']:.2f}",
            f"{entry['peak_kib'] / 1024:.0f} ({entry['process_peak_kib'] / 1024:.0f})",
            f"{entry['held_kib'] / 1024:.0f}", f"{entry['us_per_dataset']:.0f}",
            f"{entry['peak_kib_per_dataset']:.2f} / {entry['held_kib_per_dataset']:.2f}",
        ])
    reloads = []
    for size, ways in sorted(part["reload"].items(), key=lambda item: int(item[0])):
        for way, entry in ways.items():
            if not isinstance(entry, dict) or "skipped" in entry:
                continue
            reloads.append([
                f"{int(size):,}", ("child process" if way == "child" else "worker thread")
                + (" (the proxy's way)" if ways["proxy_way"] == way else ""),
                f"{entry['reload_seconds']:.2f}", f"{entry['max_delay_ms']:.1f}", f"{entry['p99_delay_ms']:.1f}",
                f"{entry['idle_max_delay_ms']:.1f}",
            ])
    return [
        "## (g) Policies that grow: load and live reload by number of datasets",
        "",
        "`bench/policy_load.py`: generated policies of one dataset per bucket (block-style YAML, three rules each, "
        "the repository's groups and two of the folder's own), each figure from a fresh process. Load: "
        f"`load_policy` of the folder, median of {part['runs']} run(s); peak and held RSS less the process's "
        "RSS before the load (the process's whole peak in brackets).",
        "",
        *table(["datasets", "YAML MiB", "load s", "peak RSS MiB", "held RSS MiB", "µs / dataset",
                "KiB / dataset (peak / held)"], rows),
        "Reload: a process serving the policy reloads it (`PolicyReloader.reload`, no policy tests) while a task "
        "on its uvloop event loop wakes every 1 ms and makes a little garbage; how late it woke is how long a "
        "request would have waited. Measured during the reload and for 0.5 s after it; idle: the 0.2 s before.",
        "",
        *table(["datasets", "loaded on", "reload s", "max delay ms", "p99 delay ms", "idle max ms"], reloads),
    ]


def policy_load_targets(part: dict[str, Any]) -> list[list[str]]:
    largest = max(part["load"], key=int)
    entry = part["load"][largest]
    note = "" if int(largest) >= 100_000 else f" (smoke: {int(largest):,} datasets)"
    rows = [
        target_row(f"policy load, 100,000 datasets{note}", entry["seconds"], TARGET_POLICY_LOAD_S, "s", False, 2),
        target_row(f"policy load peak RSS, 100,000 datasets{note}", entry["process_peak_kib"] / 1024,
                   TARGET_POLICY_LOAD_RSS_MIB, "MiB", False, 0),
    ]
    # The way the proxy itself reloads a policy of that size (`proxy.reload.ISOLATE_BYTES`).
    delays = [ways[ways["proxy_way"]]["max_delay_ms"] for ways in part["reload"].values()
              if "max_delay_ms" in ways[ways["proxy_way"]]]
    if delays:
        rows.append(target_row("reload: longest hold-up of the serving loop (the proxy's way, any size)",
                               max(delays), TARGET_RELOAD_DELAY_MS, "ms", False, 1))
    return rows


# Part (h)'s targets: one process, JWT + policy + audit on every request, at 1,000 req/s.
TARGET_VCPU_PER_1000 = 0.20
TARGET_FIXED_ADDED_P50_MS = 0.15
TARGET_FIXED_ADDED_P99_MS = 0.5
FIXED_RATE = "1000"


def render_cpu(cpu: dict[str, Any]) -> list[str]:
    """(h): per kind of request and rate, the CPU each proxy took per 1,000 req/s and the latency it added."""
    prof, istio = cpu["profile"], cpu["istio"]
    proxies = [t for t in cpu["targets"] if t != "direct"]
    header = ["request", "rate req/s", *[f"{p} vCPU per 1k req/s (µs/req)" for p in proxies],
              *[f"{p} added p50 / p90 / p99 ms" for p in proxies], "achieved req/s (errors)"]
    rows = []
    for kind, by_rate in cpu["kinds"].items():
        for rate, entry in by_rate.items():
            direct = entry["direct"]
            vcpu = [f"{entry[p]['vcpu_per_1000']:.3f} ({entry[p]['cpu_us_per_request']:.0f})" for p in proxies]
            added = [" / ".join(f"{entry[p][k] - direct[k]:+.3f}" for k in ("p50_ms", "p90_ms", "p99_ms"))
                     for p in proxies]
            achieved = ", ".join(f"{t} {num(entry[t]['achieved_rate'])} ({entry[t]['errors'] + entry[t]['non2xx']:g})"
                                 for t in cpu["targets"])
            rows.append([kind, f"{int(rate):,}", *vcpu, *added, achieved])
    return [
        "## (h) CPU at fixed rates: vCPU per 1,000 requests/s, and the latency added",
        "",
        f"Open loop (bench/openloop.py, 64 keep-alive connections), {prof['seconds']:g} s per sample after "
        f"{prof['warmup']:g} s of warmup, median of {prof['runs']} run(s), every target and kind interleaved. "
        "vCPU per 1,000 req/s = CPU time (user + system, all threads, from /proc/PID/stat; nginx: master and "
        "worker) over the measured window x 1,000 / requests in it: 1.0 is one core for 1,000 req/s; in "
        "brackets the same as µs of CPU per request. Added latency: the target's percentile minus the stand-in's "
        "(direct) at the same rate and method, measured from each request's scheduled send time. One bailiwick "
        "process (one worker) pinned to one CPU, like nginx's one worker; a rate past what one core carries "
        "shows as an achieved rate below the target and a large added latency. JWT GETs carry a token "
        "and a fake SigV4 header (not read when a token is there); access-key GETs are signed with botocore "
        "for their exact Host and path (UNSIGNED-PAYLOAD) and verified by the proxy. PUTs send 1 KiB bodies "
        "to the stand-in's WebDAV PUT.",
        "",
        f"For comparison, {istio['version']} publishes for its Envoy sidecar "
        f"{istio['vcpu_per_1000']:g} vCPU per 1,000 requests/s going through the proxy and "
        f"{istio['added_p90_ms']:g} ms added to the 90th percentile latency ({istio['url']}; a 1,000-service "
        "mesh at 70,000 requests/s with mutual TLS and telemetry, client and server sidecars). Not the same "
        "test bed: a figure to place ours beside, not a race on one machine.",
        "",
        *table(header, rows),
    ]


def cpu_targets(cpu: dict[str, Any]) -> list[list[str]]:
    rows = []
    proxy = next((t for t in cpu["targets"] if t not in ("direct", "nginx")), None)
    for kind, by_rate in cpu["kinds"].items():
        entry = by_rate.get(FIXED_RATE)
        if proxy is None or entry is None or "JWT" not in kind or not kind.startswith("GET"):
            continue
        b, d = entry[proxy], entry["direct"]
        rows.append(target_row(f"{kind}: vCPU per 1,000 req/s at 1,000 req/s", b["vcpu_per_1000"],
                               TARGET_VCPU_PER_1000, "vCPU", False, 3))
        rows.append(target_row(f"{kind}: added p50 at 1,000 req/s", b["p50_ms"] - d["p50_ms"],
                               TARGET_FIXED_ADDED_P50_MS, "ms", False, 3))
        rows.append(target_row(f"{kind}: added p99 at 1,000 req/s", b["p99_ms"] - d["p99_ms"],
                               TARGET_FIXED_ADDED_P99_MS, "ms", False, 3))
    return rows


def render_workers(part: dict[str, Any]) -> list[str]:
    """(i): capacity with 1, 2 and 4 workers, and where the machine's CPU went in each."""
    prof = part["profile"]
    by = part["by_workers"]
    one = by.get("1")
    header = ["workers", "req/s (errors)", "vs 1 worker", "proxy vCPU used", "per worker: busiest / idlest vCPU",
              "proxy µs CPU / request",
              "wrk vCPU", "stand-in vCPU", "machine idle", "proxy context switches / request"]
    rows = []
    for n, e in by.items():
        rows.append([n, f"{num(e['rps'])} ({e['errors']:g})", ratio(e["rps"], one["rps"]) if one else "",
                     f"{e['proxy_vcpu']:.2f}", f"{e['busiest_worker_vcpu']:.2f} / {e['idlest_worker_vcpu']:.2f}",
                     f"{e['proxy_cpu_us_per_request']:.0f}", f"{e['wrk_vcpu']:.2f}",
                     f"{e['upstream_vcpu']:.2f}", f"{e['idle_share']:.0%}", f"{e['context_switches_per_request']:.2f}"])
    return [
        f"## (i) Workers: 1 KiB GET capacity with {', '.join(by)} worker processes",
        "",
        f"wrk -t1 -c{part['connections']}, {prof['seconds']} s per sample, median of {prof['runs']} run(s), worker "
        f"counts interleaved. The machine has {part['cpus']} CPUs; bailiwick may use CPUs {part['proxy_cpus']} "
        "whatever its worker count, wrk and the stand-in upstream (nginx, 1 worker) stay pinned to the load CPU. "
        "CPU from /proc over each sample (user + system, every process and thread of the party): vCPU used = "
        "CPU seconds / wall seconds; machine idle = the share of all CPUs' time left idle.",
        "",
        *table(header, rows),
    ]
