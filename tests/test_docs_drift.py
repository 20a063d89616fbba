"""The pages say what the code does, where that can be checked mechanically.

* every ``bailiwick ...`` command the pages show (in code blocks and code
  spans) is a command of the real parser (`proxy.cli`), with options it has,
  and every option and ``BAILIWICK_*`` setting the proxy has is named on a page;
  every command has a row in the README's table of commands;
* every metric name the pages write is one the proxy exports
  (`proxy.metrics.Metrics`, with the suffixes Prometheus adds), and every
  metric it exports has a row in docs/operations.md's metric table, with its
  type and label names;
* the error codes: the table in docs/operations.md ("Error codes") holds
  exactly the codes the proxy writes (read from its source), and every code a
  page names as a refusal (``403 `AccessDenied```, ``error code `SlowDown```)
  is one of them or Azure's name for one (`proxy.azure.errors.CODES`);
* every configuration example (a YAML block of a page whose keys are
  configuration sections) loads with the real loader, as the reference block
  does (tests/test_operations_doc.py);
* every ``X-Bailiwick-*`` header a page names is one the proxy reads or
  writes, and every one it reads or writes is named by a page;
* the alert table is the alerts deploy/monitoring ships; docs/security.md's
  table of limits gives the configuration's defaults; the dataset examples
  load and the policy test example passes; the access log's example line has
  the fields, in order, that the proxy writes.

Start-up behaviour is prose; the statement the pages once got wrong (that
`serve` refuses to start on a policy that does not load) is looked for in
every page, and what happens instead (it starts, is not ready, refuses with
503) is checked on a real `bailiwick serve`.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import shlex
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from proxy.accesslog import AccessEntry, AccessLog
from proxy.azure.errors import CODES as AZURE_CODES
from proxy.cli import _parser
from proxy.config import SETTINGS, Config, load_config
from proxy.config.sources import OVERRIDABLE
from proxy.errors import ConfigError, PolicyLoadError
from proxy.metrics import Metrics
from proxy.policy.loader import load_policy
from proxy.policy.testing import run_policy_tests
from tests.support.processes import stop
from tests.support.serve import serve
from tests.test_docs_links import repository_texts

ROOT = Path(__file__).resolve().parent.parent
OPERATIONS = ROOT / "docs" / "operations.md"
# A run's report (bench/README.md) names its columns bailiwick_w2 and the like: not metrics.
NOT_PAGES = frozenset({ROOT / "bench" / "README.md"})


@dataclass(frozen=True, slots=True)
class Mention:
    """Something a page names: where, and what."""

    page: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: {self.text}"


def pages() -> dict[Path, str]:
    """The repository's Markdown pages with their text (README.md, docs/, deploy/ and the rest)."""
    return {path: text for path, text in repository_texts().items()
            if path.suffix == ".md" and path not in NOT_PAGES}


def code_texts(text: str) -> Iterator[tuple[int, str]]:
    """Each line of a fenced block and each code span of a page, with its line number."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            fenced = not fenced
        elif fenced:
            yield number, line
        else:
            for span in re.findall(r"`([^`\n]+)`", line):
                yield number, span


def lines_of(text: str) -> Iterator[tuple[int, str]]:
    yield from enumerate(text.splitlines(), 1)


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


# --- commands and options -------------------------------------------------------------------------

COMMAND = re.compile(r"(?<![\w/.:-])bailiwick\s+([a-z].*)")
PLACEHOLDER = re.compile(r"[A-Z]+|…|\.\.\.")


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser] | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return None


def command_problems(command: str, parser: argparse.ArgumentParser) -> list[str]:
    """What is wrong with a shown command line (the words after ``bailiwick``): an unknown command or option."""
    words = command.split("#", 1)[0]
    words = re.split(r"\s(?:\||;|&&|\))", f" {words}")[0]
    try:
        tokens = shlex.split(words)
    except ValueError:
        tokens = words.split()
    problems: list[str] = []
    path = ["bailiwick"]
    while tokens and (choices := subcommands(parser)) is not None:
        word = tokens[0]
        if word.startswith("-") or PLACEHOLDER.fullmatch(word):
            break
        if word not in choices:
            problems.append(f"{' '.join(path)} has no command {word!r}")
            return problems
        parser = choices[word]
        path.append(word)
        tokens = tokens[1:]
    options = {option for action in parser._actions for option in action.option_strings}
    for token in tokens:
        flag = token.strip("[]").rstrip("…").split("=", 1)[0]
        if re.fullmatch(r"--?[a-zA-Z][\w-]*", flag) and flag not in options:
            problems.append(f"{' '.join(path)} has no option {flag}")
    return problems


def command_mentions(texts: dict[Path, str]) -> list[Mention]:
    return [Mention(relative(path), number, match.group(1))
            for path, text in texts.items() for number, code in code_texts(text)
            for match in COMMAND.finditer(code)]


def test_every_command_and_option_shown_exists() -> None:
    parser = _parser()
    mentions = command_mentions(pages())
    assert len(mentions) > 50
    wrong = [f"{mention}: {problem}" for mention in mentions for problem in command_problems(mention.text, parser)]
    assert wrong == []


def every_option(parser: argparse.ArgumentParser, path: str = "bailiwick") -> Iterator[tuple[str, str]]:
    """(command, option) for every long option of every command, ``--help`` aside."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, command in action.choices.items():
                yield from every_option(command, f"{path} {name}")
        for option in action.option_strings:
            if option.startswith("--") and option != "--help":
                yield path, option


def test_every_option_and_variable_is_named_on_a_page() -> None:
    text = "\n".join(pages().values())
    options = list(every_option(_parser()))
    assert len(options) > 30
    assert [f"{command} {option}" for command, option in options
            if not re.search(rf"(?<![\w-]){re.escape(option)}\b", text)] == []
    assert [name for name in OVERRIDABLE if f"BAILIWICK_{name.upper()}" not in text] == []


@pytest.mark.parametrize(("command", "problems"), [
    ("serve --config bailiwick.yaml --workers 2", []),
    ("audit verify PATH… [--checkpoint-key-env NAME]", []),
    ("policy diff OLD NEW [--audit FILE]…   # which decisions change", []),
    ("explain --jurisdiction IE --action read s3://b/k | head", []),
    ("policy lint DIR", ["bailiwick policy has no command 'lint'"]),
    ("serve --listen-port 8080", ["bailiwick serve has no option --listen-port"]),
    ("audit verify --key-env K FILE", ["bailiwick audit verify has no option --key-env"]),
])
def test_a_command_or_option_that_does_not_exist_is_noticed(command: str, problems: list[str]) -> None:
    assert command_problems(command, _parser()) == problems



def leaf_commands(parser: argparse.ArgumentParser, path: str = "bailiwick") -> Iterator[str]:
    """Every command that runs something (``bailiwick policy check``, not ``bailiwick policy``)."""
    choices = subcommands(parser)
    if choices is None:
        yield path
        return
    for name, command in choices.items():
        yield from leaf_commands(command, f"{path} {name}")


def readme_command_rows(text: str) -> list[str]:
    """The command column of the README's table of commands."""
    section = text.split("## Commands", 1)[1].split("\n## ", 1)[0]
    return [match.group(1) for match in re.finditer(r"^\| `([^`]+)` \|", section, re.MULTILINE)]


def commands_without_row(rows: list[str], commands: Iterator[str]) -> list[str]:
    return [command for command in commands
            if not any(row == command or row.startswith(command + " ") for row in rows)]


def test_every_command_has_a_row_in_the_readmes_table() -> None:
    rows = readme_command_rows((ROOT / "README.md").read_text())
    assert len(rows) > 5
    assert commands_without_row(rows, leaf_commands(_parser())) == []


def test_a_command_without_a_row_is_noticed() -> None:
    rows = ["bailiwick policy check [DIR]", "bailiwick serve [--config FILE]"]
    assert commands_without_row(rows, iter(["bailiwick policy check", "bailiwick policy regions",
                                            "bailiwick serve"])) == ["bailiwick policy regions"]

# --- metrics --------------------------------------------------------------------------------------

METRIC = re.compile(r"\bbailiwick_[a-z0-9_]*[a-z0-9]")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ()}


def exported() -> dict[str, str]:
    """The metric families the proxy exports, by name, with their type."""
    return {family.name: family.type for family in Metrics("s3").registry.collect()}


def metric_names(families: dict[str, str]) -> set[str]:
    """Every name a sample of `families` can have, and the families' own names (as queries write them)."""
    return {f"{name}{suffix}" for name, kind in families.items() for suffix in ("", *SUFFIXES[kind])}


def unknown_metrics(texts: dict[Path, str], families: dict[str, str]) -> list[Mention]:
    known = metric_names(families)
    return [Mention(relative(path), number, name)
            for path, text in texts.items() for number, line in lines_of(text)
            for name in METRIC.findall(line) if name not in known]


def metric_table(text: str) -> str:
    return text.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]


def undocumented_metrics(text: str, families: dict[str, str]) -> list[str]:
    table = metric_table(text)
    return sorted(name for name in families if not re.search(rf"^\| `{name}(_total)?` \|", table, re.M))


def test_every_metric_a_page_names_is_exported() -> None:
    assert [str(mention) for mention in unknown_metrics(pages(), exported())] == []


def test_every_exported_metric_has_a_row() -> None:
    families = exported()
    assert len(families) > 15
    assert undocumented_metrics(OPERATIONS.read_text(), families) == []


def labels_of(metrics: Metrics) -> dict[str, tuple[str, ...]]:
    """Each metric family's label names, as the proxy declares them."""
    return {metric._name: tuple(metric._labelnames)
            for metric in vars(metrics).values() if isinstance(metric, MetricWrapperBase)}


def row_problems(text: str, families: dict[str, str], labels: dict[str, tuple[str, ...]]) -> list[str]:
    """Rows of the metric table whose type or label names are not the metric's."""
    problems: list[str] = []
    for row in re.finditer(r"^\| `(bailiwick_\w+)` \| ([^|]+) \| ([^|]*) \|", metric_table(text), re.M):
        name = re.sub(r"_total$", "", row.group(1))
        kind = row.group(2).split()[0]
        named = sorted(re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", row.group(3))))   # values in (...)
        if kind != families.get(name):
            problems.append(f"{name}: documented as a {kind}, is a {families.get(name)}")
        if named != sorted(labels.get(name, ())):
            problems.append(f"{name}: documented labels {named}, has {sorted(labels.get(name, ()))}")
    return problems


def test_every_row_has_the_metrics_type_and_labels() -> None:
    metrics = Metrics("s3")
    labels = labels_of(metrics)
    assert len(labels) == len(exported())
    assert row_problems(OPERATIONS.read_text(), exported(), labels) == []


def test_a_wrong_label_is_noticed() -> None:
    text = OPERATIONS.read_text().replace("| `bailiwick_refusals_total` | counter | `api`, `code` |",
                                          "| `bailiwick_refusals_total` | counter | `api`, `error_code` |")
    assert row_problems(text, exported(), labels_of(Metrics("s3"))) == [
        "bailiwick_refusals: documented labels ['api', 'error_code'], has ['api', 'code']"]


def alert_rules() -> dict[str, str]:
    """The alerts deploy/monitoring ships: name -> severity."""
    rules = yaml.safe_load((ROOT / "deploy" / "monitoring" / "rules" / "bailiwick.rules.yml").read_text())
    return {rule["alert"]: rule["labels"]["severity"] for group in rules["groups"] for rule in group["rules"]
            if "alert" in rule}


def alert_table(text: str) -> dict[str, str]:
    """docs/operations.md's alert table: name -> severity (a row may name two, ``A` / `B``)."""
    rows: dict[str, str] = {}
    for row in re.finditer(r"^\| (`Bailiwick[^|]*) \| ([^|]+) \|", text, re.M):
        names = re.findall(r"`(\w+)`", row.group(1))
        severities = [s.strip() for s in row.group(2).split("/")]
        for name, severity in zip(names, severities * len(names) if len(severities) == 1 else severities,
                                  strict=True):
            rows[name] = severity
    return rows


def test_the_alert_table_is_the_alerts_shipped() -> None:
    shipped = alert_rules()
    assert len(shipped) > 10
    assert alert_table(OPERATIONS.read_text()) == shipped


def test_a_renamed_metric_is_noticed() -> None:
    text = OPERATIONS.read_text().replace("`bailiwick_audit_failed`", "`bailiwick_audit_failing`")
    assert undocumented_metrics(text, exported()) == ["bailiwick_audit_failed"]
    assert {m.text for m in unknown_metrics({OPERATIONS: text}, exported())} == {"bailiwick_audit_failing"}


# --- error codes ----------------------------------------------------------------------------------


def proxy_error_codes() -> set[str]:
    """Every error code the proxy's source writes: the refusals' default codes, ``code=`` arguments and
    ``*_CODE`` constants."""
    codes: set[str] = set()
    for source in (ROOT / "proxy").rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            value: ast.expr | None = None
            if isinstance(node, ast.keyword) and node.arg == "code":
                value = node.value
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = {str(getattr(target, "id", "") or getattr(target, "attr", "")) for target in targets}
                if any(name == "default_code" or name.endswith("_CODE") for name in names):
                    value = node.value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                codes.add(value.value)
    return codes


def code_table(text: str) -> dict[str, str]:
    """The rows of docs/operations.md's "Error codes" table: code -> status cell."""
    part = text.split("\n#### Error codes\n", 1)
    assert len(part) == 2, "the table of error codes is missing"
    body = re.split(r"\n#{2,4} ", part[1], maxsplit=1)[0]
    return {match.group(1): match.group(2) for match in re.finditer(r"^\| `(\w+)` \| ([^|]+) \|", body, re.M)}


# A code named as a refusal: after its status (`403 `AccessDenied``), or as the code something gets.
NAMED_CODE = re.compile(
    r"(?:\b[1-5]\d\d:? |(?:error code|code|audited|refused with|answered|told|gets?) )`([A-Z][A-Za-z0-9]+)`"
)


def codes_named(texts: dict[Path, str]) -> list[Mention]:
    return [Mention(relative(path), number, match.group(1))
            for path, text in texts.items() for number, line in lines_of(text)
            for match in NAMED_CODE.finditer(line)]


def test_the_table_of_error_codes_is_every_code_the_proxy_writes() -> None:
    table = code_table(OPERATIONS.read_text())
    written = proxy_error_codes()
    assert len(written) > 30
    assert sorted(written - table.keys()) == []     # written, not documented
    assert sorted(table.keys() - written) == []     # documented, never written


def test_every_code_a_page_names_is_one_the_proxy_writes() -> None:
    known = proxy_error_codes() | set(AZURE_CODES.values())
    mentions = codes_named(pages())
    assert len(mentions) > 40
    assert [str(mention) for mention in mentions if mention.text not in known] == []


def test_every_status_in_the_table_is_a_status() -> None:
    table = code_table(OPERATIONS.read_text())
    assert [code for code, status in table.items() if not re.fullmatch(r"\d{1,3}(, \d{3})*", status.strip())] == []


def test_a_wrong_code_is_noticed() -> None:
    text = "Refused with 403 `AccessDeniedd` and audited `SendTimeout`."
    assert [m.text for m in codes_named({OPERATIONS: text})] == ["AccessDeniedd", "SendTimeout"]
    assert "AccessDeniedd" not in proxy_error_codes()


# --- configuration examples -----------------------------------------------------------------------

TOP_KEYS: frozenset[str] = frozenset(SETTINGS[""])


def config_examples(texts: dict[Path, str]) -> list[tuple[Mention, str]]:
    """The YAML blocks of the pages whose top-level keys are all configuration keys: (where, the block)."""
    found: list[tuple[Mention, str]] = []
    for path, text in texts.items():
        for match in re.finditer(r"^```ya?ml\n(.*?)^```", text, re.S | re.M):
            block = match.group(1)
            try:
                data = yaml.safe_load(block)
            except yaml.YAMLError:
                continue   # a template (a Helm include), not a configuration
            if isinstance(data, dict) and data and set(data) <= TOP_KEYS:
                found.append((Mention(relative(path), text[:match.start()].count("\n") + 2, "yaml"), block))
    return found


def example_environment(block: str) -> dict[str, str]:
    """A value for every environment variable the example names (secrets are read at load)."""
    names = re.findall(r"_env:\s*([A-Z][A-Z0-9_]*)", block)
    return {name: "x" * 48 for name in names}


def example_problem(block: str, tmp_path: Path) -> str:
    """Why the example does not load ("" if it does). A secret or key file the example names on the
    reader's machine is not looked for; every other problem counts."""
    file = tmp_path / "bailiwick.yaml"
    file.write_text(block)
    try:
        load_config(file, environ=example_environment(block))
    except ConfigError as err:
        message = str(err)
        return "" if re.search(r": cannot read /|: no such file|: not a file", message, re.I) else message
    return ""


def test_every_configuration_example_loads(tmp_path: Path) -> None:
    examples = config_examples(pages())
    assert len(examples) >= 5
    assert [f"{mention}: {problem}" for mention, block in examples
            if (problem := example_problem(block, tmp_path))] == []


@pytest.mark.parametrize(("block", "loads"), [
    ("audit:\n  max_bytes: 104857600\n", True),
    ("tag:\n  signing_key_env: BAILIWICK_TAG_KEY\n", True),
    ("audit:\n  max_byte: 104857600\n", False),
    ("limits:\n  max_connections: many\n", False),
])
def test_an_example_that_does_not_load_is_noticed(tmp_path: Path, block: str, loads: bool) -> None:
    assert (example_problem(block, tmp_path) == "") is loads


# --- headers --------------------------------------------------------------------------------------

HEADER = re.compile(r"\bX-Bailiwick-[A-Za-z0-9-]*[A-Za-z0-9]", re.I)


def header_names(texts: dict[Path, str]) -> dict[str, Mention]:
    """Every X-Bailiwick-* name in `texts` (lower case), with its first mention."""
    found: dict[str, Mention] = {}
    for path, text in texts.items():
        for number, line in lines_of(text):
            for name in HEADER.findall(line):
                found.setdefault(name.lower(), Mention(relative(path), number, name))
    return found


def test_every_header_a_page_names_is_the_proxys_and_back() -> None:
    in_code = header_names({path: text for path, text in repository_texts().items()
                            if path.suffix == ".py" and path.is_relative_to(ROOT / "proxy")})
    in_pages = header_names(pages())
    assert len(in_code) >= 5
    assert [str(in_pages[name]) for name in sorted(in_pages.keys() - in_code.keys())] == []
    assert [str(in_code[name]) for name in sorted(in_code.keys() - in_pages.keys())] == []


# --- a policy that does not load at start -------------------------------------------------------

REFUSES_TO_START = re.compile(r"refuses? to start|(?:does not|doesn't|won't|fails? to|never) start\b|stops the start|"
                              r"\bexits?\b", re.I)
POLICY_NOT_LOADED = re.compile(r"polic\w*[^.]*(?:does not|doesn't|fails? to|did not|not) load", re.I)


def sentences(text: str) -> Iterator[tuple[int, str]]:
    """The clauses of a page's prose (outside code blocks): its sentences, list items and the parts of
    a sentence between semicolons, each with the line it starts on."""
    prose = re.sub(r"^```.*?^```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S | re.M)
    start = 0
    for match in re.finditer(r"(?<=[.!?])\s+(?=[A-Z`*\[(])|\n\n|;\s|\n\s*(?:[-*]|\d+\.)\s", prose):
        yield prose[:start].count("\n") + 1, " ".join(prose[start:match.start()].split())
        start = match.end()
    yield prose[:start].count("\n") + 1, " ".join(prose[start:].split())


def start_claims(texts: dict[Path, str]) -> list[Mention]:
    """Sentences that say the proxy does not start (or exits) because its policy does not load."""
    return [Mention(relative(path), number, sentence)
            for path, text in texts.items() for number, sentence in sentences(text)
            if POLICY_NOT_LOADED.search(sentence) and REFUSES_TO_START.search(sentence)]


def test_no_page_says_a_policy_that_does_not_load_stops_the_start() -> None:
    assert [str(claim) for claim in start_claims(pages())] == []


@pytest.mark.parametrize(("text", "claims"), [
    ("A policy that fails to load is never used: `bailiwick serve` refuses to start\nand says why.", 1),
    ("If the policy does not load at start, the proxy still starts but refuses\nevery request with 503.", 0),
    ("`bailiwick serve` refuses to start on a configuration error (exit 1).", 0),
])
def test_a_page_saying_otherwise_is_noticed(text: str, claims: int) -> None:
    assert len(start_claims({OPERATIONS: text})) == claims


def test_a_policy_that_does_not_load_leaves_the_proxy_running_and_refusing(tmp_path: Path) -> None:
    # What the pages say instead (README, docs/policies.md, docs/operations.md): it starts, /readyz
    # answers 503, and every request is refused with 503.
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "broken.yaml").write_text("datasets: [ {name: x\n")
    process, port, admin = serve(tmp_path, "http://127.0.0.1:9", policies)
    try:
        with pytest.raises(urllib.error.HTTPError) as ready:
            urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=5)
        assert ready.value.code == 503
        assert b"no valid policy is loaded" in ready.value.read()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/bucket/key", timeout=5)
        assert refused.value.code == 503
        assert b"<Code>ServiceUnavailable</Code>" in refused.value.read()
        assert process.poll() is None
    finally:
        stop(process)


# --- policy examples ------------------------------------------------------------------------------

POLICIES_DOC = ROOT / "docs" / "policies.md"
SHIPPED_POLICIES = ROOT / "policies"
POLICY_SECTIONS = frozenset({"jurisdictions", "regions", "datasets"})


def yaml_blocks(text: str) -> list[tuple[int, dict[str, object], str]]:
    """The YAML blocks of a page that are mappings: (line, content, the block as written)."""
    found: list[tuple[int, dict[str, object], str]] = []
    for match in re.finditer(r"^```ya?ml\n(.*?)^```", text, re.S | re.M):
        try:
            data = yaml.safe_load(match.group(1))
        except yaml.YAMLError:
            continue
        if isinstance(data, dict) and data:
            found.append((text[:match.start()].count("\n") + 2, data, match.group(1)))
    return found


def policy_example_problems(text: str, tmp_path: Path) -> list[str]:
    """Each ``datasets`` example of the page, loaded by the real loader with the page's own
    ``jurisdictions`` and ``regions`` examples, and the shipped files for the sections the page does not
    give (and the shipped region map): the problems found."""
    blocks = [block for block in yaml_blocks(text) if set(block[1]) <= POLICY_SECTIONS]
    context = [raw for _, data, raw in blocks if "datasets" not in data]
    given = {section for _, data, _ in blocks if "datasets" not in data for section in data}
    shipped = [path for path in sorted(SHIPPED_POLICIES.glob("*.yaml"))
               if (sections := set(yaml.safe_load(path.read_text()))) == {"regions"}
               or ("datasets" not in sections and sections.isdisjoint(given))]
    problems: list[str] = []
    for line, _, raw in (block for block in blocks if "datasets" in block[1]):
        folder = tmp_path / f"example-{line}"
        folder.mkdir()
        for number, part in enumerate([*context, raw]):   # as written: NO stays Norway
            (folder / f"example{number}.yaml").write_text(part)
        for path in shipped:
            shutil.copy(path, folder / f"shipped-{path.name}")
        try:
            load_policy(folder)
        except PolicyLoadError as err:
            problems.extend(f"the example at line {line}: {issue}" for issue in err.issues)
    return problems


@pytest.mark.parametrize("page", [POLICIES_DOC, ROOT / "README.md"], ids=relative)
def test_every_dataset_example_loads(tmp_path: Path, page: Path) -> None:
    text = page.read_text()
    assert any("datasets" in data for _, data, _ in yaml_blocks(text))
    assert policy_example_problems(text, tmp_path) == []


def test_a_dataset_example_that_does_not_load_is_noticed(tmp_path: Path) -> None:
    text = POLICIES_DOC.read_text().replace("allow: [read, list, write, delete]", "allow: [read, lists]", 1)
    assert [problem for problem in policy_example_problems(text, tmp_path) if "lists" in problem]


def test_the_policy_test_example_passes_against_the_shipped_policies(tmp_path: Path) -> None:
    [test] = [raw for _, data, raw in yaml_blocks(POLICIES_DOC.read_text()) if set(data) == {"tests"}]
    folder = tmp_path / "policies"
    shutil.copytree(SHIPPED_POLICIES, folder, ignore=shutil.ignore_patterns("tests"))
    (folder / "tests").mkdir()
    (folder / "tests" / "doc_test.yaml").write_text(test)
    report = run_policy_tests(load_policy(folder), folder)
    assert report.results
    assert [result.problems for result in report.results if not result.passed] == []


# --- defaults written in docs/security.md's table of limits ----------------------------------------

SECURITY_DOC = ROOT / "docs" / "security.md"
UNITS = {"": 1, "s": 1, "min": 60, "bytes": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}


def default_of(key: str) -> object:
    """The default of a configuration key (``limits.max_headers``), from the configuration's dataclasses."""
    value: object = Config()
    for part in key.split("."):
        value = getattr(value, part)
    return value


def limit_problems(text: str) -> list[str]:
    """Rows of the limits table (a default, then one setting) whose default is not the configuration's."""
    problems: list[str] = []
    for row in re.finditer(r"^\|[^\n]*\| ([^|\n]+) \| `([a-z_]+\.[a-z_]+)` \|$", text, re.M):
        written, key = row.group(1), row.group(2)
        number = re.match(r"([\d,]+(?:\.\d+)?)\s*(s|min|bytes|KiB|MiB|GiB)?\b", written)
        assert number is not None, f"{key}: no default in {written!r}"
        documented = float(number.group(1).replace(",", "")) * UNITS[number.group(2) or ""]
        if documented != default_of(key):
            problems.append(f"{key}: documented {written.strip()!r}, default {default_of(key)!r}")
    return problems


def test_the_limits_table_gives_the_configurations_defaults() -> None:
    text = SECURITY_DOC.read_text()
    assert len(re.findall(r"\| `limits\.\w+` \|$", text, re.M)) >= 8
    assert limit_problems(text) == []


def test_a_wrong_default_is_noticed() -> None:
    text = SECURITY_DOC.read_text().replace("| 128 | `limits.max_headers` |", "| 100 | `limits.max_headers` |")
    assert limit_problems(text) == ["limits.max_headers: documented '100', default 128"]


# --- the access log's example line ----------------------------------------------------------------


def documented_access_line(text: str) -> dict[str, object]:
    section = text.split("\n## Access log\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```json\n(.*?)\n```", section, re.S)
    assert match is not None, "the access log section has no example line"
    line = json.loads(match.group(1))
    assert isinstance(line, dict)
    return line


def test_the_access_log_example_has_the_fields_the_proxy_writes(tmp_path: Path) -> None:
    path = tmp_path / "access.jsonl"
    log = AccessLog(str(path))
    log.write(AccessEntry(
        time="2026-11-23T19:02:11.412Z", request_id="5f0c", source="10.1.2.3", method="GET", path="/b/k?x=1",
        status=200, decision="allow", error_code=None, caller_jurisdiction="IE", bytes_in=0, bytes_out=11,
        duration_ms=1.2844, upstream_ms=None, user_agent="Boto3/1.35",
    ))
    log.close()
    written = json.loads(path.read_text())
    documented = documented_access_line(OPERATIONS.read_text())
    assert list(documented) == list(written)
    assert [name for name, value in written.items()
            if value is not None and documented[name] is not None and type(value) is not type(documented[name])] == []
