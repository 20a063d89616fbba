"""The `bailiwick` command: serve, policy check/test, explain, demo, audit verify.

Every flag has help text that shows its default. Errors an operator can fix
are printed as one plain line each (policy errors as ``file:line: path:
message``) with exit status 1; usage errors exit 2, as argparse does.

Each command imports what only it uses when it runs (the demo's moto and
boto3, the policy test runner, the explain formatter, the audit verifier), so
that ``bailiwick serve``, a long-lived process, holds none of them in memory.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from proxy import __version__
from proxy.config import OVERRIDABLE, load_config
from proxy.domain import Access, AccessRequest, Action
from proxy.errors import BadRequest, ConfigError, PolicyLoadError
from proxy.policy.loader import load_policy

DEFAULT_POLICIES = "policies"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bailiwick",
        description="Data residency enforcement proxy: storage data is reachable only from where it lives.",
    )
    parser.add_argument("--version", action="version", version=f"bailiwick {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser(
        "serve", help="run the proxy",
        description="Run the proxy. Flags override environment variables, which override the configuration "
        "file. Settings read from the environment as BAILIWICK_<NAME>: "
        + ", ".join(f"BAILIWICK_{name.upper()}" for name in OVERRIDABLE)
        + ", and BAILIWICK_CONFIG for the file. Lists (identity issuers, networks, S3 endpoints) are set in the file.",
    )
    serve.add_argument("--config", type=Path, metavar="FILE",
                       help="YAML configuration file (default: $BAILIWICK_CONFIG, else none: built-in defaults)")
    serve.add_argument("--listen", metavar="H:P", help="data listener address (default: 0.0.0.0:8080)")
    serve.add_argument("--admin-listen", metavar="H:P",
                       help="admin listener for /healthz and /readyz (default: 127.0.0.1:9090)")
    serve.add_argument("--upstream", metavar="URL", help="storage server URL (default: http://127.0.0.1:9000)")
    serve.add_argument("--policies", metavar="DIR", help=f"policy folder (default: {DEFAULT_POLICIES})")
    serve.add_argument("--region", metavar="REGION",
                       help="region this proxy runs in; data of other regions is refused (default: none)")
    serve.add_argument("--dry-run", action="store_true",
                       help="forward requests the policy would refuse and record them as dry_run_deny; requests "
                       "without a verified identity or that cannot be read unambiguously are still refused "
                       "(default: off)")
    serve.add_argument("--workers", metavar="N",
                       help="processes serving the same ports with SO_REUSEPORT; each writes its own audit "
                       "chain (default: 1)")
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                       help="log level (default: INFO)")

    policy = commands.add_parser("policy", help="check or test a policy folder")
    policy_commands = policy.add_subparsers(dest="policy_command", metavar="SUBCOMMAND", required=True)
    check = policy_commands.add_parser(
        "check", help="load the policy and print every error as file:line: path: message",
    )
    check.add_argument("directory", nargs="?", default=DEFAULT_POLICIES, type=Path,
                       help=f"policy folder (default: {DEFAULT_POLICIES})")
    test = policy_commands.add_parser("test", help="run DIR/tests/*_test.yaml against the policy")
    test.add_argument("directory", nargs="?", default=DEFAULT_POLICIES, type=Path,
                      help=f"policy folder (default: {DEFAULT_POLICIES})")

    explain = commands.add_parser("explain", help="show how the policy decides one request, with its whole trace")
    explain.add_argument("resource", help="the resource, e.g. s3://bucket/key or azure://account/container/blob")
    explain.add_argument("--jurisdiction", required=True, metavar="CODE",
                         help="the caller's jurisdiction, an ISO 3166-1 alpha-2 code (required)")
    explain.add_argument("--action", required=True, choices=[a.value for a in Action],
                         help="the action on the resource (required)")
    explain.add_argument("--copy-from", metavar="RESOURCE",
                         help="the source of a server-side copy into RESOURCE (default: none)")
    explain.add_argument("--listing", action="store_true",
                         help="RESOURCE's key is a listing prefix: nested datasets are checked too (default: off)")
    explain.add_argument("--policies", type=Path, default=Path(DEFAULT_POLICIES), metavar="DIR",
                         help=f"policy folder (default: {DEFAULT_POLICIES})")
    explain.add_argument("--region", metavar="REGION", help="the proxy's own region (default: none)")
    explain.add_argument("--unmatched", choices=["deny", "allow"], default="deny",
                         help="what to do with resources in no dataset (default: deny)")

    demo = commands.add_parser(
        "demo", help="run the Dublin/US story against a local S3 store and print what each caller got",
    )
    demo.add_argument("--policies", type=Path, metavar="DIR",
                      help="policy folder (default: the example policies shipped with bailiwick)")

    audit = commands.add_parser("audit", help="work with the audit log")
    audit_commands = audit.add_subparsers(dest="audit_command", metavar="SUBCOMMAND", required=True)
    verify = audit_commands.add_parser("verify", help="check the audit log's hash chain; say where it breaks")
    verify.add_argument("file", type=Path, help="audit log file (JSON lines)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "policy":
            return _policy_check(args.directory) if args.policy_command == "check" else _policy_test(args.directory)
        if args.command == "explain":
            return _explain(args)
        if args.command == "demo":
            from proxy.demo import run_demo

            return run_demo(args.policies)
        if args.command == "audit":
            return _audit_verify(args.file)
    except PolicyLoadError as err:
        for issue in err.issues:
            print(issue, file=sys.stderr)
        return 1
    except ConfigError as err:
        print(f"bailiwick: {err}", file=sys.stderr)
        return 1
    return 2  # pragma: no cover - argparse requires a command


def _serve(args: argparse.Namespace) -> int:
    import os

    from proxy.server import check_http_parser, run

    check_http_parser()  # before anything else: refuse to start on a parser nobody chose
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config_path = args.config or (Path(os.environ["BAILIWICK_CONFIG"]) if os.environ.get("BAILIWICK_CONFIG") else None)
    config = load_config(config_path, overrides={
        "listen": args.listen, "admin_listen": args.admin_listen, "upstream": args.upstream,
        "policies": args.policies, "region": args.region, "workers": args.workers,
    })
    if args.dry_run:
        from dataclasses import replace

        config = replace(config, dry_run=True)
    run(config)
    return 0


def _policy_check(directory: Path) -> int:
    policy = load_policy(directory)
    print(f"{directory}: OK, {len(policy.datasets)} datasets, {len(policy.regions)} regions, "
          f"version {policy.version}")
    return 0


def _policy_test(directory: Path) -> int:
    from proxy.policy.testing import format_report, run_policy_tests

    policy = load_policy(directory)
    report = run_policy_tests(policy, directory)
    print(format_report(report))
    return 0 if report.failed == 0 and report.passed > 0 else 1


def _explain(args: argparse.Namespace) -> int:
    from proxy.policy.engine import decide
    from proxy.policy.explain import format_explain
    from proxy.policy.testing import parse_resource

    policy = load_policy(args.policies)
    try:
        resource = parse_resource(args.resource)
        copy_from = parse_resource(args.copy_from) if args.copy_from else None
    except BadRequest as err:
        print(f"bailiwick: {err.message}", file=sys.stderr)
        return 2
    request = AccessRequest(
        accesses=(Access(Action(args.action), resource, listing=args.listing),), copy_from=copy_from,
    )
    decision = decide(policy, args.jurisdiction, request, proxy_region=args.region,
                      unmatched_allow=args.unmatched == "allow")
    print(format_explain(decision, args.jurisdiction, request))
    return 0


def _audit_verify(file: Path) -> int:
    from proxy.audit import verify

    try:
        result = verify(file)
    except OSError as err:
        print(f"bailiwick: {file}: {err.strerror}", file=sys.stderr)
        return 1
    if result.ok:
        print(f"{file}: OK, {result.lines} lines, chain intact")
        return 0
    print(f"{file}:{result.broken_at}: chain broken: {result.problem}")
    return 1
