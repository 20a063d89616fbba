"""Render the Kubernetes files of deploy/ with the real engines, and compare renders.

Used by tests/deploy and, as a command line, by deploy/kubernetes/check:

  kustomize DIR     kubectl kustomize where kubectl is installed, else the substitute of
                    tests/support/kustomize.py (`--substitute`: always the substitute).
  helm CHART        Helm's own engine (the helm-python-sdk package, no helm binary): the chart
                    and the subcharts in its charts/ folder with the -f values merged as helm
                    merges them; `--lint`: `helm lint --strict` must pass first.
  mount FILE        what a container of the rendered workloads sees at a path, written as the
                    kubelet lays out a ConfigMap volume (tests/support/kubelet.py).
  compare A B       the objects of two multi-document YAML files, as sets (kind, namespace,
                    name): exit 1 and the differences if they differ.

Output: multi-document YAML on standard output (or -o FILE); errors on standard error, exit 1.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.support import kustomize as substitute
from tests.support.kubelet import MountError, mount
from tests.support.kustomize import KustomizeError, load_documents

Obj = dict[str, Any]


class HelmFailed(Exception):
    """Helm's engine refused the chart (a template's `required` or `fail`, a lint error, a broken chart)."""


def dump_documents(docs: list[Any]) -> str:
    return "".join("---\n" + yaml.safe_dump(d, sort_keys=True, default_flow_style=False, width=1 << 20)
                   for d in docs)


# ---- kustomize ----------------------------------------------------------------------------------

@functools.cache
def kubectl_version() -> str | None:
    """The kustomize version inside the installed kubectl, or None without a working kubectl."""
    if shutil.which("kubectl") is None:
        return None
    done = subprocess.run(["kubectl", "version", "--client"], capture_output=True, text=True, check=False,
                          timeout=60)
    if done.returncode != 0:
        return None
    for line in done.stdout.splitlines():
        if line.startswith("Kustomize Version:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def kustomize(directory: Path, *, use_substitute: bool = False) -> list[Obj]:
    """The objects of a kustomization: kubectl kustomize where present, else the substitute."""
    if use_substitute or kubectl_version() is None:
        return substitute.build(directory)
    done = subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True, text=True, check=False,
                          timeout=120)
    if done.returncode != 0:
        raise KustomizeError(f"kubectl kustomize {directory}: {done.stderr.strip()}")
    return [d for d in yaml.safe_load_all(done.stdout) if d]


# ---- Helm ---------------------------------------------------------------------------------------

def merge_values(base: Any, override: Any) -> Any:
    """-f files as helm merges them: maps deeply, later files win."""
    if not (isinstance(base, dict) and isinstance(override, dict)):
        return override
    return {**base, **{k: merge_values(base.get(k), v) for k, v in override.items()}}


def helm_template(chart: Path, values: Obj, *, release: str = "release", namespace: str = "default",
                  lint: bool = False) -> list[Obj]:
    """The objects `helm template` writes for the chart (NOTES.txt left out)."""
    import helm_python as helm  # the test extra's Helm engine; imported here so kustomize works without it

    try:
        if lint:
            report = helm.lint(str(chart), values, strict=True)
            bad = report["errors"] + [m for m in report["messages"] if m["severity"] >= 2]
            if bad:
                raise HelmFailed(f"helm lint --strict: {bad}")
        manifests = helm.Config().render(helm.Chart.load(str(chart)), values, name=release, namespace=namespace)
    except helm.HelmError as exc:
        raise HelmFailed(str(exc)) from exc
    return [d for key in sorted(manifests) if not key.endswith("NOTES.txt")
            for d in yaml.safe_load_all(manifests[key]) if d]


def helm_version() -> str | None:
    """The version of Helm's engine (helm-python-sdk), or None when it is not installed."""
    try:
        import helm_python as helm
    except ImportError:
        return None
    return str(helm.helm_sdk_version())


# ---- compare ------------------------------------------------------------------------------------

def _key(obj: Obj) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    return str(obj.get("kind")), str(meta.get("namespace", "")), str(meta.get("name"))


def compare(left: list[Any], right: list[Any]) -> list[str]:
    """The differences between two renders, object by object; empty when they hold the same objects."""
    a = {_key(o): o for o in left}
    b = {_key(o): o for o in right}
    problems = [f"only in the first: {k}" for k in sorted(set(a) - set(b))]
    problems += [f"only in the second: {k}" for k in sorted(set(b) - set(a))]
    for k in sorted(set(a) & set(b)):
        if a[k] != b[k]:
            problems.append(f"{k} differs:\n" + "\n".join(_diff(a[k], b[k], "")))
    if len(a) != len(left) or len(b) != len(right):
        problems.append("an object is given twice")
    return problems


def _diff(x: Any, y: Any, path: str) -> Iterator[str]:
    if isinstance(x, dict) and isinstance(y, dict):
        for key in sorted(set(x) | set(y), key=str):
            yield from _diff(x.get(key, "<absent>"), y.get(key, "<absent>"), f"{path}.{key}")
    elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
        for i, (p, q) in enumerate(zip(x, y, strict=True)):
            yield from _diff(p, q, f"{path}[{i}]")
    elif x != y:
        yield f"  {path}: {x!r} != {y!r}"


# ---- command line -------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m tests.support.manifests", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    kus = sub.add_parser("kustomize", help="render a kustomization folder")
    kus.add_argument("directory", type=Path)
    kus.add_argument("--substitute", action="store_true", help="the substitute even where kubectl is installed")
    kus.add_argument("-o", "--output", type=Path)
    chart = sub.add_parser("helm", help="render a chart folder with Helm's engine (helm template)")
    chart.add_argument("chart", type=Path)
    chart.add_argument("-f", "--values", type=Path, action="append", default=[])
    chart.add_argument("--release", default="release")
    chart.add_argument("--namespace", default="default")
    chart.add_argument("--lint", action="store_true", help="helm lint --strict must pass first")
    chart.add_argument("-o", "--output", type=Path)
    mnt = sub.add_parser("mount", help="write the files a container sees at a path, as the kubelet lays them out")
    mnt.add_argument("rendered", type=Path)
    mnt.add_argument("--container", required=True)
    mnt.add_argument("--path", required=True)
    mnt.add_argument("--to", type=Path, required=True)
    mnt.add_argument("--if-any", action="store_true", help="no such workload is not an error")
    cmp = sub.add_parser("compare", help="compare the objects of two rendered files")
    cmp.add_argument("first", type=Path)
    cmp.add_argument("second", type=Path)
    return parser


def _read(path: Path) -> list[Any]:
    return load_documents(path.read_text(encoding="utf-8"), str(path))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "compare":
            problems = compare(_read(args.first), _read(args.second))
            for problem in problems:
                print(problem, file=sys.stderr)
            return 1 if problems else 0
        if args.command == "mount":
            for folder in mount(_read(args.rendered), args.container, args.path, args.to, required=not args.if_any):
                print(folder)
            return 0
        if args.command == "kustomize":
            docs = kustomize(args.directory, use_substitute=args.substitute)
        else:
            values: Obj = {}
            for path in args.values:
                values = merge_values(values, yaml.safe_load(path.read_text(encoding="utf-8")) or {})
            docs = helm_template(args.chart.resolve(), values, release=args.release, namespace=args.namespace,
                                 lint=args.lint)
    except (KustomizeError, MountError, HelmFailed, OSError) as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return 1
    text = dump_documents(docs)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
