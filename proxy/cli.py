"""The `bailiwick` command: serve, policy check/test/diff, explain, demo, audit verify, encrypt/decrypt/rewrap.

Every flag has help text that shows its default. Errors an operator can fix
are printed as one plain line each (policy errors as ``file:line: path:
message``) with exit status 1; usage errors exit 2, as argparse does.
Commands whose status answers a question say so in their help: `explain`
(0 forwarded, 1 refused, 2 trouble), `policy diff`, `audit verify`. A reader
that closes the output early (``| head``) ends any command quietly, with
status 141 as a shell reports a command stopped by SIGPIPE.

Each command imports what only it uses when it runs (the demo's moto and
boto3, the policy test runner, the explain formatter, the audit verifier), so
that ``bailiwick serve``, a long-lived process, holds none of them in memory.

Longer than the project's other modules, on purpose: every command's flags,
help and exit statuses are written here, in one place an operator's
reference (``--help``) is read from; what a command does is in its own module.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

from proxy import __version__
from proxy.config import OVERRIDABLE, Config, Unmatched, load_config
from proxy.domain import Access, AccessRequest, Action, Flow, Remote
from proxy.errors import BadRequest, ConfigError, PolicyLoadError
from proxy.policy.decision import Outcome
from proxy.policy.loader import changed_builtin_regions, load_policy, region_table
from proxy.policy.model import Policy
from proxy.words import counted

# The defaults the help names are the configuration's own (`proxy.config.model`), written once there.
_DEFAULT = Config()
DEFAULT_POLICIES = str(_DEFAULT.policies)


def _address(pair: tuple[str, int]) -> str:
    return f"{pair[0]}:{pair[1]}"


def _one_of(kind: type[StrEnum]) -> dict[str, Any]:
    """A flag's ``type`` and ``choices`` for the words of `kind`: its value is the member. A word that is not
    one is left as text for argparse to refuse as "invalid choice: 'x' (choose from 'a', 'b')"; an enum as
    the type would say "invalid Kind value: 'x'" and not list the words."""
    def word(text: str) -> StrEnum | str:
        try:
            return kind(text)
        except ValueError:
            return text
    return {"type": word, "choices": [str(member) for member in kind]}


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
    serve.add_argument("--listen", metavar="H:P", help=f"data listener address (default: {_address(_DEFAULT.listen)})")
    serve.add_argument("--admin-listen", metavar="H:P",
                       help="admin listener for /healthz, /readyz and /metrics "
                       f"(default: {_address(_DEFAULT.admin_listen)})")
    serve.add_argument("--upstream", metavar="URL", help=f"storage server URL (default: {_DEFAULT.upstream.url})")
    serve.add_argument("--policies", metavar="DIR", help=f"policy folder (default: {DEFAULT_POLICIES})")
    serve.add_argument("--region", metavar="REGION",
                       help="region this proxy runs in; data of other regions is refused; required with a key service "
                            "(encryption) (default: none)")
    serve.add_argument("--dry-run", action="store_true",
                       help="forward requests the policy would refuse and record them as dry_run_deny; requests "
                       "without a verified identity or that cannot be read unambiguously are still refused "
                       "(default: off)")
    serve.add_argument("--workers", metavar="N",
                       help="processes serving the same ports with SO_REUSEPORT; each writes its own audit "
                       f"chain (default: {_DEFAULT.workers})")
    serve.add_argument("--access-log", metavar="FILE",
                       help='JSON access log, one line per request, to FILE or "-" for standard error '
                       "(default: off; the audit log has every decision regardless)")
    serve.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                       help="log level (default: INFO)")

    policy = commands.add_parser("policy", help="check or test a policy folder, list its regions, or diff two")
    policy_commands = policy.add_subparsers(dest="policy_command", metavar="SUBCOMMAND", required=True)
    check = policy_commands.add_parser(
        "check", help="load the policy and print every error as file:line: path: message",
    )
    check.add_argument("directory", nargs="?", default=DEFAULT_POLICIES, type=Path,
                       help=f"policy folder (default: {DEFAULT_POLICIES})")
    test = policy_commands.add_parser("test", help="run DIR/tests/*_test.yaml against the policy")
    test.add_argument("directory", nargs="?", default=DEFAULT_POLICIES, type=Path,
                      help=f"policy folder (default: {DEFAULT_POLICIES})")
    regions = policy_commands.add_parser(
        "regions", help="list the regions a policy can name, each with its country and where that is said",
        description="List every region the policy folder can name: the built-in map of the public clouds "
        "(AWS, Azure, Google Cloud) and the folder's own regions: entries, which replace a built-in entry of "
        "the same name. Each line: region, ISO 3166-1 code, and where it is defined (\"built-in FILE:LINE\" or "
        "the folder's FILE:LINE, with the built-in code it replaces).",
    )
    regions.add_argument("directory", nargs="?", default=DEFAULT_POLICIES, type=Path,
                         help=f"policy folder (default: {DEFAULT_POLICIES})")
    regions.add_argument("--built-in", action="store_true", dest="built_in",
                         help="list only the built-in map, without reading a policy folder (default: off)")
    policy_diff = policy_commands.add_parser(
        "diff", help="show which decisions would change between two policy folders",
        description="Decide the requests of both folders' policy tests, and of any audit logs given, under OLD "
        "and under NEW, and print those whose outcome or deciding rule would change. Exit status: 0 nothing "
        "changes, 1 something changes, 2 trouble (a policy or test file does not load, an audit file cannot "
        "be read, a usage error, nothing to compare), as diff(1).",
    )
    policy_diff.add_argument("old", type=Path, metavar="OLD", help="the policy folder in force")
    policy_diff.add_argument("new", type=Path, metavar="NEW", help="the edited policy folder")
    policy_diff.add_argument("--audit", type=Path, action="append", default=[], metavar="FILE",
                             help="an audit log (JSON lines) whose requests to decide again; repeatable "
                             "(default: none, only the policy tests)")
    policy_diff.add_argument("--region", metavar="REGION",
                             help="the proxy's own region, for audit log requests (default: none)")
    policy_diff.add_argument("--unmatched", **_one_of(Unmatched), default=Unmatched.DENY,
                             help="what to do with resources in no dataset, for audit log requests (default: deny)")
    policy_diff.add_argument("--json", action="store_true",
                             help="print the changes as JSON instead of text (default: off)")

    explain = commands.add_parser(
        "explain", help="show how the policy decides one request, with its whole trace",
        description="Decide one request as the proxy would and print the decision with its whole trace. Exit "
        "status, as `opa eval --fail` gives one to scripts: 0 the proxy forwards the request (allow, or a "
        "dry-run deny, which is recorded and forwarded), 1 it refuses it (deny), 2 trouble (the policy does "
        "not load, a resource, jurisdiction or --region that is not one, a usage error).",
    )
    explain.add_argument("resource", help="the resource, e.g. s3://bucket/key or azure://account/container/blob")
    explain.add_argument("--jurisdiction", required=True, metavar="CODE",
                         help="the caller's jurisdiction, an ISO 3166-1 alpha-2 code (required)")
    explain.add_argument("--location", metavar="CODE",
                         help="where GeoIP sees the caller from: an ISO 3166-1 alpha-2 code or \"unknown\" "
                              "(default: not known, as without identity.geoip); rules with a location check it")
    explain.add_argument("--action", required=True, **_one_of(Action),
                         help="the action on the resource (required)")
    explain.add_argument("--copy-from", metavar="RESOURCE",
                         help="the source of a server-side copy into RESOURCE (default: none)")
    explain.add_argument("--sends-to", metavar="RESOURCE",
                         help="a second place the request sends RESOURCE's data to (a restore's output bucket, a "
                              "replication, inventory or log destination): judged like a copy of RESOURCE's data, "
                              "or of its key names with --action list (inventory, logging and analytics: add "
                              "--listing and give the bucket, as the proxy judges them) (default: none)")
    explain.add_argument("--key-region", metavar="REGION",
                         help="the region of an SSE-KMS key, notification target or table bucket ARN the request "
                              "names (default: none)")
    explain.add_argument("--listing", action="store_true",
                         help="RESOURCE's key is a listing prefix: nested datasets are checked too (default: off)")
    explain.add_argument("--policies", type=Path, default=Path(DEFAULT_POLICIES), metavar="DIR",
                         help=f"policy folder (default: {DEFAULT_POLICIES})")
    explain.add_argument("--region", metavar="REGION", help="the proxy's own region (default: none)")
    explain.add_argument("--unmatched", **_one_of(Unmatched), default=Unmatched.DENY,
                         help="what to do with resources in no dataset (default: deny)")

    demo = commands.add_parser(
        "demo", help="run the Dublin/US story against a local S3 store and print what each caller got",
    )
    demo.add_argument("--policies", type=Path, metavar="DIR",
                      help="policy folder (default: the example policies shipped with bailiwick)")

    audit = commands.add_parser("audit", help="work with the audit log")
    audit_commands = audit.add_subparsers(dest="audit_command", metavar="SUBCOMMAND", required=True)
    verify = audit_commands.add_parser(
        "verify", help="check the audit log's hash chain; say where it breaks",
        description="Check the hash chain of audit logs and say where it breaks. The files of one log (the "
        "current file and its rotated files, which differ only by the rotation time in their names) are "
        "checked as one chain: rotated files in name order, then the current file; the first line of each "
        "must continue the last line of the one before. Files of other names (audit.worker1.jsonl) are "
        "other chains. A chain shipped to object storage is verified straight from the store: give its "
        "s3://BUCKET/PREFIX (every chain under it, piece by piece). Exit status: 0 intact (and, with a key, "
        "ending with its closing checkpoint), 1 broken, tampered or unreadable, 3 intact but, with a key, not "
        "ending with a closing checkpoint (lines may have been cut off, or the proxy is running or was killed), "
        "or ending in a partial line (cut short by a full disk or a crash, or truncated).",
    )
    verify.add_argument("paths", nargs="+", metavar="PATH",
                        help="an audit log file, a directory (its *.jsonl files), a quoted glob such as "
                        "'logs/audit*.jsonl', or s3://BUCKET/PREFIX where the proxy ships its chains "
                        "(audit.ship) (required; several may be given)")
    verify.add_argument("--endpoint-url", metavar="URL",
                        help="for s3:// paths: the S3 endpoint to read from (default: AWS's, for the region)")
    verify.add_argument("--region", metavar="REGION",
                        help="for s3:// paths: the bucket's region (default: from the AWS configuration, "
                        "AWS_REGION or the profile's, else us-east-1)")
    verify.add_argument("--checkpoint-key-env", metavar="NAME",
                        help="environment variable holding the checkpoint key (audit.checkpoint_key_env): also "
                        "check every checkpoint's MAC and that each chain ends with its closing checkpoint "
                        "(default: none; checkpoints are then checked as ordinary lines)")
    verify.add_argument("--starts-mid-chain", action="store_true",
                        help="accept logs whose first line continues earlier lines that are not given (older "
                        "rotated files archived away) (default: off; the first line must start the chain)")
    _tool_commands(commands)
    return parser


_CONFIG_HELP = ("the proxy's YAML configuration file, for its storage server, credentials (s3.sign), region, policy "
                "and key service (default: $BAILIWICK_CONFIG, else none: built-in defaults)")
_JURISDICTION_HELP = ("the jurisdiction each key release is justified with, recorded by the key service's audit "
                      "(default: operator)")


def _tool_commands(commands: Any) -> None:
    """encrypt, decrypt and rewrap: the recovery tools of encrypted datasets (`proxy.crypto.tools`)."""
    decrypt = commands.add_parser(
        "decrypt", help="recover one encrypted object to a file or standard output, past any proxy",
        description="Read an encrypted object straight from the storage server, have the region's key service "
        "release its data key, and write the verified plaintext. Exit status: 0 written, 1 not written (not "
        "encrypted, tampered, truncated, another region's key, refused; a file is then not left behind), "
        "2 a usage error.",
    )
    decrypt.add_argument("location", metavar="s3://BUCKET/KEY", help="the object (required)")
    decrypt.add_argument("-o", "--output", default="-", metavar="FILE",
                         help='where the plaintext goes: a file (written whole or not at all) or "-" for standard '
                         "output (default: -)")
    decrypt.add_argument("--config", type=Path, metavar="FILE", help=_CONFIG_HELP)
    decrypt.add_argument("--jurisdiction", default="operator", metavar="CODE", help=_JURISDICTION_HELP)
    batches = {
        "encrypt": ("encrypt the plaintext objects of encrypted datasets in place (resumable, idempotent)",
                    "Encrypt in place every plaintext object under s3://BUCKET[/PREFIX] that is in a dataset of this "
                    "proxy's region with encryption: required or migrating, as the proxy would have stored it. "
                    "Objects already encrypted are left, so a second run does nothing and an interrupted run "
                    "continues where it stopped.", "encrypted"),
        "rewrap": ("wrap encrypted objects' data keys under the key's latest version (bodies untouched)",
                   "After the region's key-encryption key is rotated, wrap the data key of every encrypted object "
                   "under s3://BUCKET[/PREFIX] again under its latest version, by a copy of each object onto itself "
                   "with its new envelope: bodies are not rewritten. Objects already wrapped under the latest "
                   "version are left.", "rewrapped"),
    }
    for name, (summary, description, done) in batches.items():
        batch = commands.add_parser(
            name, help=summary,
            description=description + " Progress goes to standard error. Exit status: 0 every object done or "
            "skipped, 1 some not done (run it again), 2 a usage error.",
        )
        batch.add_argument("location", metavar="s3://BUCKET[/PREFIX]", help="the objects (required)")
        batch.add_argument("--dry-run", action="store_true",
                           help=f"only say which objects would be {done}; change nothing (default: off)")
        batch.add_argument("--config", type=Path, metavar="FILE", help=_CONFIG_HELP)
        # A rewrap carries no justification (`KeyService.rewrap`): no data key leaves the process for a reader
        # (Transit rewraps without handing it out; PKCS#11 and the key file unwrap it only to wrap it again).
        if name == "encrypt":
            batch.add_argument("--jurisdiction", default="operator", metavar="CODE", help=_JURISDICTION_HELP)


# What a command whose output was closed early (`bailiwick explain … | head -1`) exits with: the status a shell
# reports for a command stopped by SIGPIPE (128 + 13), not 1, which `explain` and `policy diff` give a meaning.
CLOSED_OUTPUT = 141


def main(argv: Sequence[str] | None = None) -> int:
    """The `bailiwick` command; a reader that closed the output early ends it quietly (no traceback).

    As the Python documentation's note on SIGPIPE advises: Python ignores SIGPIPE (and must, or `serve` would
    die with a caller's closed socket), so a closed standard output raises BrokenPipeError on a write or at the
    final flush; standard output is then pointed at /dev/null so that the interpreter's own flush at exit
    fails no more.
    """
    try:
        status = _command(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return CLOSED_OUTPUT
    return status


def _command(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "policy":
            if args.policy_command == "diff":
                return _policy_diff(args)
            if args.policy_command == "regions":
                return _policy_regions(None if args.built_in else args.directory)
            return _policy_check(args.directory) if args.policy_command == "check" else _policy_test(args.directory)
        if args.command == "explain":
            return _explain(args)
        if args.command == "demo":
            from proxy.demo import run_demo

            return run_demo(args.policies)
        if args.command == "audit":
            return _audit_verify(args)
        if args.command in ("encrypt", "decrypt", "rewrap"):
            return _tool(args)
    except PolicyLoadError as err:
        for issue in err.issues:
            print(issue, file=sys.stderr)
        return 1
    except ConfigError as err:
        print(f"bailiwick: {err}", file=sys.stderr)
        return 1
    return 2  # pragma: no cover - argparse requires a command


def _config_file(args: argparse.Namespace) -> Path | None:
    """--config, else $BAILIWICK_CONFIG, else None (built-in defaults)."""
    import os

    return args.config or (Path(os.environ["BAILIWICK_CONFIG"]) if os.environ.get("BAILIWICK_CONFIG") else None)


def _tool(args: argparse.Namespace) -> int:
    from proxy.crypto import tools

    config = load_config(_config_file(args))
    if args.command == "decrypt":
        return tools.run_decrypt(config, args.location, args.output, jurisdiction=args.jurisdiction)
    if args.command == "encrypt":
        return tools.run_encrypt(config, args.location, dry_run=args.dry_run, jurisdiction=args.jurisdiction)
    return tools.run_rewrap(config, args.location, dry_run=args.dry_run)


def _serve(args: argparse.Namespace) -> int:
    from proxy.config.region import UnknownRegion
    from proxy.lifecycle import check_http_parser
    from proxy.workers import run

    check_http_parser()  # before anything else: refuse to start on a parser nobody chose
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_config(_config_file(args), overrides={
        "listen": args.listen, "admin_listen": args.admin_listen, "upstream": args.upstream,
        "policies": args.policies, "region": args.region, "workers": args.workers,
        "access_log": args.access_log,
    })
    if args.dry_run:
        from dataclasses import replace

        config = replace(config, dry_run=True)
    try:
        run(config)
    except UnknownRegion as err:
        print(f"bailiwick: {err}", file=sys.stderr)
        return 2
    return 0


def _policy_check(directory: Path) -> int:
    from proxy.policy.encryption import encryption_summary

    policy = load_policy(directory)
    changed = "; ".join(f"{name} {country}, not the built-in {builtin}"
                        for name, builtin, country in changed_builtin_regions(policy))
    print(f"{directory}: OK, {counted(len(policy.datasets), 'dataset')}{encryption_summary(policy)}, "
          f"{counted(len(policy.regions), 'region')}{f' ({changed})' if changed else ''}, version {policy.version}")
    return 0


def _policy_regions(directory: Path | None) -> int:
    entries = region_table(directory)
    width = max(len(e.name) for e in entries)
    lines = (
        f"{e.name:<{width}}  {e.jurisdiction}  {e.source}"
        + (f" (replaces the built-in {e.replaces})" if e.replaces is not None else "")
        for e in entries
    )
    # A reader that stops early (`… | head`) is `main`'s to handle, as for every command.
    sys.stdout.write("".join(line + "\n" for line in lines))
    return 0


def _policy_test(directory: Path) -> int:
    from proxy.policy.testing import format_report, run_policy_tests

    policy = load_policy(directory)
    report = run_policy_tests(policy, directory)
    print(format_report(report))
    return 0 if report.failed == 0 and report.passed > 0 else 1


def _policy_diff(args: argparse.Namespace) -> int:
    """`policy diff`: 0 nothing changes, 1 something changes, 2 trouble, as diff(1) does."""
    import json

    from proxy.errors import PolicyIssue
    from proxy.policy.diff import compare
    from proxy.policy.diffreport import as_json, format_text
    from proxy.policy.replay import AuditReader
    from proxy.policy.samples import Settings, samples_from_tests
    from proxy.policy.testing import TEST_FILE_GLOB, TESTS_FOLDER, PolicyTestCase, load_policy_tests

    policies: list[Policy] = []
    cases: list[PolicyTestCase] = []
    issues: list[PolicyIssue] = []
    for directory in (args.old, args.new):
        try:
            policy = load_policy(directory)
            policies.append(policy)
            # A folder without policy tests gives no requests; `policy test` is the command that requires them.
            if any(p.is_file() for p in (directory / TESTS_FOLDER).glob(TEST_FILE_GLOB)):
                cases.extend(load_policy_tests(policy, directory))
        except PolicyLoadError as err:
            issues.extend(err.issues)
    if issues:
        for issue in issues:
            print(issue, file=sys.stderr)
        return 2
    settings = Settings(args.region, args.unmatched is Unmatched.ALLOW)
    audit = AuditReader(settings)
    for file in args.audit:
        try:
            with file.open("rb") as lines:
                audit.read(str(file), lines)
        except OSError as err:
            print(f"bailiwick: {file}: {err.strerror}", file=sys.stderr)
            return 2
    old, new = policies
    report = compare(old, new, samples_from_tests(cases), audit,
                     old_name=str(args.old), new_name=str(args.new), settings=settings)
    print(json.dumps(as_json(report), indent=2) if args.json else format_text(report))
    if report.decisions == 0:
        print("bailiwick: nothing to compare: no policy tests in OLD/tests or NEW/tests, and no audit decisions",
              file=sys.stderr)
        return 2
    return 1 if report.changes else 0


# `explain`'s exit status says what the proxy does with the request: forwards it (a dry-run deny is forwarded,
# and recorded) or refuses it; 2 is trouble, as argparse's usage errors.
EXPLAIN_STATUS = {Outcome.ALLOW: 0, Outcome.DRY_RUN_DENY: 0, Outcome.DENY: 1}
EXPLAIN_TROUBLE = 2


def _explain_argument_problem(args: argparse.Namespace, policy: Policy) -> str | None:
    """Why `explain`'s jurisdiction or --region cannot be what a proxy decides with, or None.

    A token's jurisdiction must be an ISO 3166-1 code (`proxy.identity.claims`) and the proxy's region one
    of the policy's, so anything else would explain a request the proxy can never see.
    """
    from proxy.jurisdictions import describe_invalid, is_country_code
    from proxy.policy.regions import unknown_region_hint

    if not is_country_code(args.jurisdiction):
        return f"--jurisdiction: {describe_invalid(args.jurisdiction)}"
    if args.location not in (None, "unknown") and not is_country_code(args.location):
        return f"--location: {describe_invalid(args.location)} (or \"unknown\")"
    if args.region is not None and args.region not in policy.regions:
        hint = unknown_region_hint(args.region, policy.regions)
        return f'--region: "{args.region}" is not a region of the policy in {args.policies}{hint}'
    return None


def _explain(args: argparse.Namespace) -> int:
    from proxy.policy.engine import decide
    from proxy.policy.explain import format_explain
    from proxy.policy.testing import parse_resource

    try:
        policy = load_policy(args.policies)
    except PolicyLoadError as err:
        for issue in err.issues:
            print(issue, file=sys.stderr)
        return EXPLAIN_TROUBLE
    try:
        resource = parse_resource(args.resource)
        copy_from = parse_resource(args.copy_from) if args.copy_from else None
        sends_to = parse_resource(args.sends_to) if args.sends_to else None
    except BadRequest as err:
        print(f"bailiwick: {err.message}", file=sys.stderr)
        return EXPLAIN_TROUBLE
    wrong = _explain_argument_problem(args, policy)
    if wrong is not None:
        print(f"bailiwick: {wrong}", file=sys.stderr)
        return EXPLAIN_TROUBLE
    # What leaves is data (read), or key names and metadata (list: inventory, logging, analytics), as the proxy judges.
    sent = Action.LIST if args.action is Action.LIST else Action.READ
    flows = (Flow(Access(sent, resource, listing=args.listing), Access(Action.WRITE, sends_to, listing=True)),
             ) if sends_to is not None else ()
    remotes = (Remote(f"a key or target in {args.key_region}", args.key_region),) if args.key_region else ()
    request = AccessRequest(
        accesses=(Access(args.action, resource, listing=args.listing),), copy_from=copy_from,
        flows=flows, remotes=remotes,
    )
    decision = decide(policy, args.jurisdiction, request, proxy_region=args.region,
                      unmatched_allow=args.unmatched is Unmatched.ALLOW, location=args.location)
    print(format_explain(decision, args.jurisdiction, request, location=args.location))
    return EXPLAIN_STATUS[decision.outcome]


def _audit_verify(args: argparse.Namespace) -> int:
    """0 intact, 1 broken or unreadable, 3 intact but not sealed by a closing checkpoint (with a key) or cut short."""
    import os

    from proxy.audit import log_files, verify

    key: bytes | None = None
    if args.checkpoint_key_env:
        value = os.environ.get(args.checkpoint_key_env)
        if not value:
            print(f"bailiwick: the environment variable {args.checkpoint_key_env} is not set or empty",
                  file=sys.stderr)
            return 1
        key = value.encode()
    shipped = [path for path in args.paths if path.startswith("s3://")]
    local = [path for path in args.paths if not path.startswith("s3://")]
    status = max((_verify_shipped(url, key, args) for url in shipped), default=0, key=_severity)
    if not local:
        return status
    try:
        logs = log_files(local)
    except OSError as err:
        print(f"bailiwick: {err}", file=sys.stderr)
        return 1
    for name, files in logs.items():
        try:
            result = verify(files, checkpoint_key=key, starts_mid_chain=args.starts_mid_chain)
        except OSError as err:
            print(f"bailiwick: {err.filename}: {err.strerror}", file=sys.stderr)
            status = 1
            continue
        if not result.ok:
            print(f"{result.file}:{result.broken_at}: chain broken: {result.problem}")
            status = 1
            continue
        label = str(files[0]) if len(files) == 1 else f"{name} ({len(files)} files)"
        summary = f"{label}: OK, {counted(result.lines, 'line')}, chain intact"
        if key is not None:
            summary += f", {counted(result.checkpoints, 'checkpoint MAC')} verified"
            if result.sealed:
                summary += f", sealed by its closing checkpoint of {result.sealed_at}" if result.sealed_at else ""
        print(summary)
        for warning in result.warnings:
            print(f"{label}: warning: {warning}")
        if result.warnings and status == 0:
            status = 3
    return status


def _severity(status: int) -> int:
    """Exit statuses by how bad: 1 (broken) over 3 (not sealed) over 0."""
    return {0: 0, 3: 1, 1: 2}.get(status, 2)


def _verify_shipped(address: str, key: bytes | None, args: argparse.Namespace) -> int:
    """`audit verify s3://BUCKET/PREFIX`: every chain shipped there (`proxy.audit.remote`)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from proxy.audit.remote import ShippedUrl, make_client, verify_shipped

    try:
        url = ShippedUrl.parse(address)
    except ValueError as err:
        print(f"bailiwick: {err}", file=sys.stderr)
        return 1
    status = 0
    try:
        client = make_client(args.endpoint_url, args.region)
        for report in verify_shipped(client, url, checkpoint_key=key):
            if isinstance(report, str):
                print(f"warning: {report}")
                continue
            for message in report.messages:
                print(message)
            status = max(status, int(report.verdict), key=_severity)
    except FileNotFoundError as err:
        print(f"bailiwick: {err}", file=sys.stderr)
        return 1
    except ClientError as err:
        error = err.response.get("Error", {})
        print(f"bailiwick: {url}: the store refused: {error.get('Code', '?')}: {error.get('Message', '')}",
              file=sys.stderr)
        return 1
    except (BotoCoreError, OSError) as err:
        print(f"bailiwick: {url}: cannot read the store: {err}", file=sys.stderr)
        return 1
    return status
