#!/usr/bin/env python3
"""Render deploy/kubernetes (kustomize) and deploy/helm (Helm) without the kustomize or helm binaries.

Two small substitutes, each for the subset of its tool that the files in deploy/ use, and
each refusing (exit 1, naming the file and what it does not understand) anything outside
that subset rather than emitting something else:

  kustomize DIR    a kustomization: `resources` (files, and folders holding a kustomization),
                   `namespace`, `labels` (pairs, includeTemplates; not includeSelectors),
                   `configMapGenerator` (files, behavior create/replace/merge,
                   options.disableNameSuffixHash; the name hash and the references to it as
                   kustomize 5 computes them), `generatorOptions.disableNameSuffixHash`,
                   `patches` (strategic merge, by path or inline, aimed by the patch's own
                   kind and name; `$patch: delete`).
  helm CHART       a chart and the subcharts in its charts/ folder: Go templates with
                   {{ }} / {{- -}}, comments, `if`/`else if`/`else`, `range` (lists and maps,
                   with `$k, $v :=`), `define`, fields of `.`, `$` and variables, parentheses,
                   pipelines, and the functions `include`, `toYaml`, `nindent`, `indent`,
                   `quote`, `default`, `required`, `fail`, `dict`, `printf` (%s of strings), `eq`,
                   `ne`, `not`, `and`, `or`; `.Values` (coalesced as Helm does), `.Release`,
                   `.Chart`. Printing a missing value is an error here (Helm prints nothing).

  mount FILE       what a container of the rendered workloads sees at a path (a ConfigMap or
                   projected volume), written as the kubelet lays it out (..data symlink):
                   deploy/kubernetes/check runs `bailiwick policy check` and `policy test` on it.

  compare A B      the objects of two multi-document YAML files, as sets (kind, namespace,
                   name): exit 1 and the differences if they differ. deploy/kubernetes/check
                   uses it to hold these substitutes to the real tools where those exist.

Output: multi-document YAML on standard output (or -o FILE).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class RenderError(Exception):
    """Something outside the supported subset, or a broken input: the render stops."""


# ---- YAML -----------------------------------------------------------------------------------

class _Yaml12Loader(yaml.SafeLoader):
    """Booleans as YAML 1.2 reads them (true/false only), as kustomize's YAML library does."""


_Yaml12Loader.yaml_implicit_resolvers = {
    key: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"),
)


def load_documents(text: str, source: str, *, yaml12: bool = True) -> list[Any]:
    try:
        docs = list(yaml.load_all(text, Loader=_Yaml12Loader if yaml12 else yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise RenderError(f"{source}: not valid YAML: {exc}") from exc
    return [d for d in docs if d is not None]


def dump_documents(docs: list[Any]) -> str:
    return "".join("---\n" + yaml.safe_dump(d, sort_keys=True, default_flow_style=False, width=1 << 20)
                   for d in docs)


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RenderError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _only(value: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise RenderError(f"{where}: {unknown[0]!r} is not supported by this kustomize substitute "
                          f"(supported: {', '.join(sorted(allowed))})")


# ---- kustomize --------------------------------------------------------------------------------

KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "namespace", "labels", "configMapGenerator",
                      "generatorOptions", "patches"}
NAMESPACED = {"ConfigMap", "Secret", "Service", "ServiceAccount", "Deployment", "StatefulSet", "DaemonSet",
              "Job", "CronJob", "NetworkPolicy", "PodDisruptionBudget", "HorizontalPodAutoscaler"}
CLUSTER_SCOPED = {"Namespace"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}
# kustomize's "legacy" output order (the default of kustomize 5 and kubectl kustomize).
KIND_ORDER = ["Namespace", "ResourceQuota", "StorageClass", "CustomResourceDefinition", "ServiceAccount",
              "PodSecurityPolicy", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding", "ConfigMap",
              "Secret", "Endpoints", "Service", "LimitRange", "PriorityClass", "PersistentVolume",
              "PersistentVolumeClaim", "Deployment", "StatefulSet", "CronJob", "PodDisruptionBudget"]


@dataclass
class Resource:
    obj: dict[str, Any]
    source: str
    hashed: bool = False        # a generated ConfigMap whose name gets kustomize's content hash


def _ident(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(obj.get("kind")), str(meta.get("name"))


def _group(api_version: Any) -> str:
    text = str(api_version or "")
    return text.split("/")[0] if "/" in text else ""


def build_kustomization(directory: Path, *, top: bool = True) -> list[Resource]:
    directory = directory.resolve()
    files = [directory / n for n in ("kustomization.yaml", "kustomization.yml", "Kustomization")
             if (directory / n).is_file()]
    if len(files) != 1:
        raise RenderError(f"{directory}: expected exactly one kustomization file, found {len(files)}")
    source = str(files[0])
    docs = load_documents(files[0].read_text(encoding="utf-8"), source)
    if len(docs) != 1:
        raise RenderError(f"{source}: expected one document")
    k = _mapping(docs[0], source)
    _only(k, KUSTOMIZATION_KEYS, source)
    if k.get("apiVersion", "kustomize.config.k8s.io/v1beta1") != "kustomize.config.k8s.io/v1beta1" or \
            k.get("kind", "Kustomization") != "Kustomization":
        raise RenderError(f"{source}: expected apiVersion kustomize.config.k8s.io/v1beta1, kind Kustomization")

    resources: list[Resource] = []
    for entry in k.get("resources") or []:
        if not isinstance(entry, str) or "://" in entry:
            raise RenderError(f"{source}: resources: {entry!r}: only local files and folders are supported")
        path = (directory / entry).resolve()
        if path.is_dir():
            resources.extend(build_kustomization(path, top=False))
        elif path.is_file():
            _inside(path, directory, source)
            for doc in load_documents(path.read_text(encoding="utf-8"), str(path)):
                resources.append(Resource(_mapping(doc, str(path)), str(path)))
        else:
            raise RenderError(f"{source}: resources: {entry!r} does not exist")

    options = _mapping(k.get("generatorOptions") or {}, f"{source}: generatorOptions")
    _only(options, {"disableNameSuffixHash"}, f"{source}: generatorOptions")
    for i, gen in enumerate(k.get("configMapGenerator") or []):
        _generate(directory, source, f"configMapGenerator[{i}]", _mapping(gen, source), options, resources)

    for i, entry in enumerate(k.get("patches") or []):
        where = f"{source}: patches[{i}]"
        entry = _mapping(entry, where)
        _only(entry, {"path", "patch"}, where)
        if ("path" in entry) == ("patch" in entry):
            raise RenderError(f"{where}: give exactly one of path or patch")
        if "path" in entry:
            path = (directory / str(entry["path"])).resolve()
            _inside(path, directory, where)
            patch_docs = load_documents(path.read_text(encoding="utf-8"), str(path))
        else:
            patch_docs = load_documents(str(entry["patch"]), where)
        for patch in patch_docs:
            if not isinstance(patch, dict):
                raise RenderError(f"{where}: only strategic merge patches (a mapping) are supported")
            resources = _apply_patch(resources, patch, where)

    namespace = k.get("namespace")
    if namespace is not None:
        for res in resources:
            kind = res.obj.get("kind")
            if kind in CLUSTER_SCOPED:
                if kind == "Namespace":       # as kustomize does: the Namespace object takes the name
                    res.obj["metadata"]["name"] = namespace
            elif kind in NAMESPACED:
                res.obj.setdefault("metadata", {})["namespace"] = namespace
            else:
                raise RenderError(f"{res.source}: kind {kind!r}: this substitute does not know whether it is "
                                  "namespaced")

    for i, entry in enumerate(k.get("labels") or []):
        where = f"{source}: labels[{i}]"
        entry = _mapping(entry, where)
        _only(entry, {"pairs", "includeTemplates", "includeSelectors"}, where)
        if entry.get("includeSelectors"):
            raise RenderError(f"{where}: includeSelectors is not supported (selectors are written out)")
        pairs = {str(a): str(b) for a, b in _mapping(entry.get("pairs") or {}, where).items()}
        for res in resources:
            res.obj.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
            if entry.get("includeTemplates"):
                kind = res.obj.get("kind")
                if kind in WORKLOADS:
                    template = res.obj.setdefault("spec", {}).setdefault("template", {})
                    template.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
                elif kind == "CronJob":
                    raise RenderError(f"{where}: includeTemplates on a CronJob is not supported")

    if top:
        _hash_names(resources)
        order = {kind: i for i, kind in enumerate(KIND_ORDER)}
        resources.sort(key=lambda r: (order.get(str(r.obj.get("kind")), len(order)), str(r.obj.get("kind")),
                                      str((r.obj.get("metadata") or {}).get("namespace", "")),
                                      str((r.obj.get("metadata") or {}).get("name"))))
    return resources


def _inside(path: Path, root: Path, where: str) -> None:
    if not path.is_relative_to(root):
        raise RenderError(f"{where}: {path} is outside {root} (kustomize's default load restrictions)")
    if not path.is_file():
        raise RenderError(f"{where}: {path} does not exist")


def _generate(directory: Path, source: str, key: str, gen: dict[str, Any], options: dict[str, Any],
              resources: list[Resource]) -> None:
    where = f"{source}: {key}"
    _only(gen, {"name", "files", "behavior", "options"}, where)
    own = _mapping(gen.get("options") or {}, f"{where}.options")
    _only(own, {"disableNameSuffixHash"}, f"{where}.options")
    name = gen.get("name")
    if not isinstance(name, str) or not name:
        raise RenderError(f"{where}: name is required")
    data: dict[str, str] = {}
    for entry in gen.get("files") or []:
        text = str(entry)
        data_key, sep, rel = text.partition("=")
        if not sep:
            data_key, rel = Path(text).name, text
        path = (directory / rel).resolve()
        _inside(path, directory, where)
        if data_key in data:
            raise RenderError(f"{where}: key {data_key!r} given twice")
        data[data_key] = path.read_text(encoding="utf-8")
    behavior = gen.get("behavior", "create")
    hashed = not own.get("disableNameSuffixHash", options.get("disableNameSuffixHash", False))
    existing = [r for r in resources if _ident(r.obj) == ("ConfigMap", name)]
    if behavior == "create":
        if existing:
            raise RenderError(f"{where}: ConfigMap {name!r} exists already (use behavior: replace or merge)")
        resources.append(Resource({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                                   "data": data}, where, hashed=hashed))
    elif behavior in ("replace", "merge"):
        if len(existing) != 1:
            raise RenderError(f"{where}: behavior {behavior}: no ConfigMap {name!r} to {behavior}")
        target = existing[0]
        target.obj["data"] = data if behavior == "replace" else {**(target.obj.get("data") or {}), **data}
        if "options" in gen or options:
            target.hashed = hashed
    else:
        raise RenderError(f"{where}: behavior {behavior!r} is not supported")


def _hash_names(resources: list[Resource]) -> None:
    renamed: dict[tuple[str, str], str] = {}
    for res in resources:
        if not res.hashed:
            continue
        meta = res.obj["metadata"]
        # kustomize 5 hashes {"data", "kind", "name"} as Go's json.Marshal writes it, with the
        # name looked up under the path "metadata/name", which finds nothing: the name is "".
        encoded = json.dumps({"data": res.obj.get("data") or {}, "kind": "ConfigMap", "name": ""},
                             sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        encoded = encoded.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        encoded = encoded.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
        digest = hashlib.sha256(encoded.encode("utf-8")).hexdigest()[:10]
        suffix = digest.translate(str.maketrans("013ae", "ghkmt"))
        renamed[(str(meta.get("namespace", "")), meta["name"])] = f"{meta['name']}-{suffix}"
        meta["name"] = f"{meta['name']}-{suffix}"
    if not renamed:
        return
    for res in resources:
        if res.obj.get("kind") not in WORKLOADS:
            continue
        namespace = str((res.obj.get("metadata") or {}).get("namespace", ""))
        for ref in _configmap_refs(res.obj["spec"]["template"]["spec"]):
            new = renamed.get((namespace, ref["name"]))
            if new:
                ref["name"] = new


def _configmap_refs(pod: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for volume in pod.get("volumes") or []:
        if "configMap" in volume:
            yield volume["configMap"]
        for src in (volume.get("projected") or {}).get("sources") or []:
            if "configMap" in src:
                yield src["configMap"]
    for group in ("initContainers", "containers"):
        for container in pod.get(group) or []:
            for env in container.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("configMapKeyRef")
                if ref:
                    yield ref
            for env_from in container.get("envFrom") or []:
                if "configMapRef" in env_from:
                    yield env_from["configMapRef"]


def _apply_patch(resources: list[Resource], patch: dict[str, Any], where: str) -> list[Resource]:
    kind, name = _ident(patch)
    matches = [r for r in resources
               if _ident(r.obj) == (kind, name) and _group(r.obj.get("apiVersion")) == _group(patch.get("apiVersion"))]
    if len(matches) != 1:
        raise RenderError(f"{where}: the patch for {kind} {name!r} matches {len(matches)} resources, not one")
    target = matches[0]
    if patch.get("$patch") == "delete":
        return [r for r in resources if r is not target]
    body = {k: v for k, v in patch.items() if k not in ("apiVersion", "kind")}
    target.obj = _merge(target.obj, body, (kind,), where)
    return resources


# Strategic merge: the lists this substitute merges, by the field that identifies an item
# (the patchMergeKey of the Kubernetes API), and the lists it replaces whole, as the API does.
_MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
               "volumeMounts": "mountPath", "imagePullSecrets": "name"}
_ATOMIC_LISTS = {"args", "command", "egress", "ingress", "policyTypes", "sources", "items", "drop", "add",
                 "from", "to", "envFrom"}


def _merge(original: Any, patch: Any, path: tuple[str, ...], where: str) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(original, dict):
        original = {}
    directive = patch.get("$patch")
    if directive is not None:
        raise RenderError(f"{where}: {'.'.join(path)}: $patch: {directive} is not supported here")
    for key in patch:
        if key.startswith("$"):
            raise RenderError(f"{where}: {'.'.join(path)}: the directive {key} is not supported")
    result = dict(original)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _merge_list(original.get(key), value, (*path, key), where)
        else:
            result[key] = _merge(original.get(key), value, (*path, key), where)
    return result


def _merge_list(original: Any, patch: list[Any], path: tuple[str, ...], where: str) -> list[Any]:
    name = path[-1]
    # ports: a container's are keyed by containerPort, a Service's by port.
    service_ports = "port" if path[0] == "Service" else "containerPort"
    merge_key = service_ports if name == "ports" else _MERGE_KEYS.get(name, "")
    if not merge_key:
        if name in _ATOMIC_LISTS:
            return copy.deepcopy(patch)
        raise RenderError(f"{where}: {'.'.join(path)}: this substitute does not know how to merge this list")
    rest = list(original or [])
    merged: list[Any] = []
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            raise RenderError(f"{where}: {'.'.join(path)}: each item needs its {merge_key}")
        found = [o for o in rest if isinstance(o, dict) and o.get(merge_key) == item[merge_key]]
        for o in found:
            rest.remove(o)
        if item.get("$patch") == "delete":
            continue
        merged.append(_merge(found[0] if found else {}, item, path, where))
    # As kustomize writes it: the patch's items first, in its order, then the others.
    return merged + rest


# ---- Go templates (Helm) ----------------------------------------------------------------------

@dataclass
class _Text:
    text: str


@dataclass
class _Action:
    pipe: list[list[Any]]
    decl: list[str]
    where: str


@dataclass
class _Block:
    kind: str                      # if | range | define
    arg: _Action | None
    name: str = ""
    body: list[Any] = field(default_factory=list)
    orelse: list[Any] = field(default_factory=list)


_TOKEN = re.compile(r"""
    \s*(?:
      (?P<str>"(?:[^"\\]|\\.)*")
    | (?P<raw>`[^`]*`)
    | (?P<num>-?\d+(?:\.\d+)?)
    | (?P<decl>:=)
    | (?P<punct>[|(),=])
    | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)
    | (?P<field>(?:\.[A-Za-z0-9_]+)+|\.)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    )""", re.VERBOSE)


def _tokens(text: str, where: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise RenderError(f"{where}: cannot read {text[pos:]!r} in {{{{ {text} }}}}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def _parse_pipeline(tokens: list[tuple[str, str]], where: str) -> _Action:
    decl: list[str] = []
    if any(kind == "decl" for kind, _ in tokens):
        i = [kind for kind, _ in tokens].index("decl")
        names = [value for kind, value in tokens[:i] if kind == "var"]
        if len(names) not in (1, 2) or any(kind not in ("var", "punct") for kind, _ in tokens[:i]):
            raise RenderError(f"{where}: only `$v :=` or `$k, $v :=` declarations are supported")
        decl, tokens = names, tokens[i + 1:]
    pos = 0

    def operand() -> Any:
        nonlocal pos
        kind, value = tokens[pos]
        pos += 1
        if kind == "punct" and value == "(":
            inner = pipeline()
            if pos >= len(tokens) or tokens[pos] != ("punct", ")"):
                raise RenderError(f"{where}: unbalanced parenthesis")
            pos += 1
            return ("pipe", inner)
        if kind == "str":
            return ("lit", json.loads(value))
        if kind == "raw":
            return ("lit", value[1:-1])
        if kind == "num":
            return ("lit", float(value) if "." in value else int(value))
        if kind == "ident" and value in ("true", "false"):
            return ("lit", value == "true")
        if kind == "ident" and value == "nil":
            return ("lit", None)
        if kind in ("field", "var", "ident"):
            return (kind, value)
        raise RenderError(f"{where}: unexpected {value!r}")

    def command() -> list[Any]:
        nonlocal pos
        parts: list[Any] = []
        while pos < len(tokens) and tokens[pos] not in (("punct", "|"), ("punct", ")")):
            parts.append(operand())
        if not parts:
            raise RenderError(f"{where}: empty command")
        return parts

    def pipeline() -> list[list[Any]]:
        nonlocal pos
        cmds = [command()]
        while pos < len(tokens) and tokens[pos] == ("punct", "|"):
            pos += 1
            cmds.append(command())
        return cmds

    pipe = pipeline()
    if pos != len(tokens):
        raise RenderError(f"{where}: unexpected {tokens[pos][1]!r}")
    return _Action(pipe, decl, where)


def _actions(text: str, source: str) -> Iterator[tuple[str, str, str]]:
    """Text and actions as Go's lexer splits them: ("text", chunk, where) and ("action", body, where).

    Trim markers ("{{- " and " -}}") are applied here; a comment runs to its "*/", and a quoted
    string to its closing quote, whatever "}}" they hold.
    """
    pos = 0
    while True:
        start = text.find("{{", pos)
        if start < 0:
            yield "text", text[pos:], source
            return
        where = f"{source}:{text.count(chr(10), 0, start) + 1}"
        chunk = text[pos:start]
        i = start + 2
        if text.startswith("- ", i) or text.startswith("-\n", i) or text.startswith("-\t", i):
            chunk = chunk.rstrip(" \t\r\n")
            i += 1
        yield "text", chunk, where
        j = i
        while j < len(text) and text[j] in " \t\r\n":
            j += 1
        if text.startswith("/*", j):
            end = text.find("*/", j)
            if end < 0:
                raise RenderError(f"{where}: unclosed comment")
            k = end + 2
        else:
            k = i
            while k < len(text) and not text.startswith("}}", k) and not text.startswith(" -}}", k):
                if text[k] in "\"`":
                    quote = text[k]
                    k += 1
                    while k < len(text) and text[k] != quote:
                        k += 2 if text[k] == "\\" and quote == '"' else 1
                k += 1
        body = text[i:k]
        trim_after = False
        rest = text[k:]
        stripped = rest.lstrip(" \t\r\n")
        if stripped.startswith("-}}") and rest[:1] in (" ", "\t", "\r", "\n"):
            trim_after = True
            k += len(rest) - len(stripped) + 3
        elif rest.startswith("}}"):
            k += 2
        else:
            raise RenderError(f"{where}: unclosed action {{{{")
        yield "action", body.strip(), where
        pos = k
        if trim_after:
            while pos < len(text) and text[pos] in " \t\r\n":
                pos += 1


def parse_template(text: str, source: str) -> tuple[list[Any], dict[str, list[Any]]]:
    """The template's tree and the templates it defines."""
    items: list[Any] = []
    for kind, body, where in _actions(text, source):
        items.append(_Text(body) if kind == "text" else (body, where))
    defines: dict[str, list[Any]] = {}
    stack: list[_Block] = [_Block("root", None)]
    in_else: list[bool] = [False]
    for item in items:
        if isinstance(item, _Text):
            if item.text:
                (stack[-1].orelse if in_else[-1] else stack[-1].body).append(item)
            continue
        body, where = item
        if body.startswith("/*"):
            if not body.endswith("*/"):
                raise RenderError(f"{where}: a comment must fill its {{{{ }}}}")
            continue
        toks = _tokens(body, where)
        head = toks[0][1] if toks and toks[0][0] == "ident" else ""
        target = stack[-1].orelse if in_else[-1] else stack[-1].body
        if head in ("if", "range"):
            block = _Block(head, _parse_pipeline(toks[1:], where))
            target.append(block)
            stack.append(block)
            in_else.append(False)
        elif head == "define":
            if len(stack) != 1 or len(toks) != 2 or toks[1][0] != "str":
                raise RenderError(f"{where}: define takes one quoted name, at the top level")
            block = _Block("define", None, name=json.loads(toks[1][1]))
            stack.append(block)
            in_else.append(False)
        elif head == "else":
            if stack[-1].kind not in ("if", "range") or in_else[-1]:
                raise RenderError(f"{where}: else outside if/range")
            if len(toks) > 1:
                if toks[1] != ("ident", "if") or stack[-1].kind != "if":
                    raise RenderError(f"{where}: only `else if` is supported after else")
                inner = _Block("if", _parse_pipeline(toks[2:], where), name="elseif")
                stack[-1].orelse.append(inner)
                in_else[-1] = True
                stack.append(inner)
                in_else.append(False)
            else:
                in_else[-1] = True
        elif head == "end":
            if len(stack) == 1:
                raise RenderError(f"{where}: end without a block")
            while True:                      # an `else if` chain ends with its outer if
                block = stack.pop()
                in_else.pop()
                if block.name != "elseif":
                    break
            if block.kind == "define":
                defines[block.name] = block.body
        elif head in ("with", "template", "block", "break", "continue", "tpl"):
            raise RenderError(f"{where}: {head!r} is not supported by this template substitute")
        else:
            action = _parse_pipeline(toks, where)
            if action.decl:
                raise RenderError(f"{where}: variable declarations are only supported in range")
            target.append(action)
    if len(stack) != 1:
        raise RenderError(f"{source}: {stack[-1].kind} without end")
    return stack[0].body, defines


def _truth(value: Any) -> bool:
    return value not in (None, False, 0, "") and not (isinstance(value, dict | list) and not value)


def _text(value: Any, where: str) -> str:
    if value is None:
        raise RenderError(f"{where}: the value printed is missing (Helm would print nothing)")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    raise RenderError(f"{where}: cannot print a {type(value).__name__}; use toYaml")


def _go_quote(value: str, where: str) -> str:
    if any(not ch.isprintable() and ch not in "\n\t\r" for ch in value):
        raise RenderError(f"{where}: quote of a string with control characters is not supported")
    return json.dumps(value, ensure_ascii=False)


def _to_yaml(value: Any) -> str:
    if value is None:
        return "null"
    return str(yaml.safe_dump(value, sort_keys=True, default_flow_style=False, width=1 << 20)).removesuffix("\n")


def _indent(width: Any, text: Any, where: str) -> str:
    if not isinstance(width, int) or not isinstance(text, str):
        raise RenderError(f"{where}: indent/nindent take a number and a string")
    pad = " " * width
    return pad + text.replace("\n", "\n" + pad)


def _printf(where: str, fmt: Any, *args: Any) -> str:
    # %s only, of strings: Helm's numbers are float64, which %d prints as "%!d(float64=…)".
    if not isinstance(fmt, str) or re.search(r"%[^s]", fmt) or fmt.count("%s") != len(args):
        raise RenderError(f"{where}: printf supports %s only, one argument each")
    if not all(isinstance(a, str) for a in args):
        raise RenderError(f"{where}: printf %s of a value that is not a string")
    return fmt % args


class Engine:
    """Executes parsed templates over Helm's top-level object."""

    def __init__(self, defines: dict[str, list[Any]]) -> None:
        self.defines = defines
        self.depth = 0

    def functions(self, where: str) -> dict[str, Callable[..., Any]]:
        def default(fallback: Any, value: Any = None) -> Any:
            return value if _truth(value) else fallback

        def required(message: Any, value: Any = None) -> Any:
            if value is None or value == "":
                raise RenderError(f"{where}: required: {message}")
            return value

        def fail(message: Any) -> Any:
            raise RenderError(f"{where}: fail: {message}")

        def dict_(*pairs: Any) -> dict[str, Any]:
            if len(pairs) % 2:
                raise RenderError(f"{where}: dict takes key/value pairs")
            return {str(pairs[i]): pairs[i + 1] for i in range(0, len(pairs), 2)}

        def and_(*args: Any) -> Any:
            for a in args:
                if not _truth(a):
                    return a
            return args[-1]

        def or_(*args: Any) -> Any:
            for a in args:
                if _truth(a):
                    return a
            return args[-1]

        return {
            "include": lambda name, data: self.include(name, data, where),
            "toYaml": _to_yaml,
            "nindent": lambda w, t: "\n" + _indent(w, t, where),
            "indent": lambda w, t: _indent(w, t, where),
            "quote": lambda *a: " ".join(_go_quote(_text(x, where), where) for x in a if x is not None),
            "default": default,
            "required": required,
            "dict": dict_,
            "printf": lambda fmt, *a: _printf(where, fmt, *a),
            "fail": fail,
            "eq": lambda a, b: a == b,
            "ne": lambda a, b: a != b,
            "not": lambda a: not _truth(a),
            "and": and_,
            "or": or_,
        }

    def include(self, name: Any, data: Any, where: str) -> str:
        if name not in self.defines:
            raise RenderError(f"{where}: include: no template named {name!r}")
        self.depth += 1
        if self.depth > 50:
            raise RenderError(f"{where}: include nested too deeply")
        try:
            return self.run(self.defines[name], data, {"$": data})
        finally:
            self.depth -= 1

    def run(self, nodes: list[Any], dot: Any, scope: dict[str, Any]) -> str:
        out: list[str] = []
        for node in nodes:
            if isinstance(node, _Text):
                out.append(node.text)
            elif isinstance(node, _Action):
                out.append(_text(self.pipeline(node, dot, scope), node.where))
            elif node.kind == "if":
                assert node.arg is not None
                chosen = node.body if _truth(self.pipeline(node.arg, dot, scope)) else node.orelse
                out.append(self.run(chosen, dot, dict(scope)))
            else:
                assert node.arg is not None
                out.append(self.range(node, dot, scope))
        return "".join(out)

    def range(self, node: _Block, dot: Any, scope: dict[str, Any]) -> str:
        assert node.arg is not None
        value = self.pipeline(node.arg, dot, scope)
        if value is None:
            pairs: list[tuple[Any, Any]] = []
        elif isinstance(value, dict):
            pairs = [(k, value[k]) for k in sorted(value)]
        elif isinstance(value, list):
            pairs = list(enumerate(value))
        else:
            raise RenderError(f"{node.arg.where}: range over a {type(value).__name__}")
        if not pairs:
            return self.run(node.orelse, dot, dict(scope))
        out = []
        for key, item in pairs:
            inner = dict(scope)
            if len(node.arg.decl) == 2:
                inner[node.arg.decl[0]], inner[node.arg.decl[1]] = key, item
            elif node.arg.decl:
                inner[node.arg.decl[0]] = item
            out.append(self.run(node.body, item, inner))
        return "".join(out)

    def pipeline(self, action: _Action, dot: Any, scope: dict[str, Any]) -> Any:
        result: Any = None
        for i, cmd in enumerate(action.pipe):
            extra = [result] if i else []
            result = self.command(cmd, extra, dot, scope, action.where)
        return result

    def command(self, cmd: list[Any], extra: list[Any], dot: Any, scope: dict[str, Any], where: str) -> Any:
        head = cmd[0]
        if head[0] == "ident":
            funcs = self.functions(where)
            if head[1] not in funcs:
                raise RenderError(f"{where}: the function {head[1]!r} is not supported by this template substitute")
            args = [self.operand(op, dot, scope, where) for op in cmd[1:]] + extra
            try:
                return funcs[head[1]](*args)
            except TypeError as exc:
                raise RenderError(f"{where}: {head[1]}: wrong arguments ({exc})") from exc
        if len(cmd) > 1 or extra:
            raise RenderError(f"{where}: only a function can take arguments")
        return self.operand(head, dot, scope, where)

    def operand(self, op: Any, dot: Any, scope: dict[str, Any], where: str) -> Any:
        kind, value = op
        if kind == "lit":
            return value
        if kind == "pipe":
            return self.pipeline(_Action(value, [], where), dot, scope)
        if kind == "field":
            return dot if value == "." else self.fields(dot, value[1:].split("."), where)
        if kind == "var":
            name, *rest = value.split(".")
            if name not in scope:
                raise RenderError(f"{where}: undefined variable {name}")
            return self.fields(scope[name], rest, where)
        raise RenderError(f"{where}: the function {value!r} needs to be first in its command")

    @staticmethod
    def fields(value: Any, names: list[str], where: str) -> Any:
        for name in names:
            if not isinstance(value, dict):
                raise RenderError(
                    f"{where}: cannot read .{name} of a {type(value).__name__} (Go: nil pointer, or no such field)")
            value = value.get(name)
        return value


def coalesce(defaults: Any, overrides: Any) -> Any:
    """Values as Helm merges them: maps deeply, anything else replaced, null deletes a key."""
    if not isinstance(defaults, dict) or not isinstance(overrides, dict):
        return copy.deepcopy(overrides)
    result = copy.deepcopy(defaults)
    for key, value in overrides.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = coalesce(result.get(key), value)
    return result


_CHART_KEYS = {"apiVersion", "name", "version", "appVersion", "description", "type", "kubeVersion", "keywords",
               "home", "sources", "maintainers", "icon", "annotations", "dependencies"}


def _chart_meta(chart: Path) -> dict[str, Any]:
    source = str(chart / "Chart.yaml")
    meta = _mapping(load_documents((chart / "Chart.yaml").read_text(encoding="utf-8"), source, yaml12=False)[0],
                    source)
    _only(meta, _CHART_KEYS, source)
    if meta.get("apiVersion") != "v2":
        raise RenderError(f"{source}: apiVersion v2 charts only")
    for dep in meta.get("dependencies") or []:
        _only(_mapping(dep, source), {"name", "version", "repository"}, f"{source}: dependencies")
        if not (chart / "charts" / str(dep["name"])).is_dir():
            raise RenderError(f"{source}: the dependency {dep['name']!r} is not unpacked in charts/")
    return meta


def render_chart(chart: Path, values: dict[str, Any], release: str, namespace: str) -> list[dict[str, Any]]:
    """Objects the chart renders (as `helm template`), with its subcharts in charts/."""
    defines: dict[str, list[Any]] = {}
    jobs: list[tuple[str, list[Any], dict[str, Any]]] = []

    def load(path: Path, user: dict[str, Any]) -> None:
        meta = _chart_meta(path)
        defaults = load_documents((path / "values.yaml").read_text(encoding="utf-8"), str(path / "values.yaml"),
                                  yaml12=False) if (path / "values.yaml").is_file() else []
        merged = coalesce(defaults[0] if defaults else {}, user)
        subcharts = sorted(p for p in (path / "charts").iterdir() if p.is_dir()) if (path / "charts").is_dir() else []
        for sub in subcharts:
            merged[sub.name] = coalesce(
                coalesce(load_documents((sub / "values.yaml").read_text(encoding="utf-8"), str(sub / "values.yaml"),
                                        yaml12=False)[0] if (sub / "values.yaml").is_file() else {}, {}),
                merged.get(sub.name) or {},
            )
        top = {
            "Values": merged,
            "Release": {"Name": release, "Namespace": namespace, "Service": "Helm", "IsInstall": True,
                        "IsUpgrade": False, "Revision": 1},
            "Chart": {k[:1].upper() + k[1:]: v for k, v in meta.items()},
        }
        templates = path / "templates"
        for file in sorted(templates.rglob("*")) if templates.is_dir() else []:
            if not file.is_file():
                continue
            if file.suffix not in (".yaml", ".yml", ".tpl", ".txt"):
                raise RenderError(f"{file}: not a template this substitute reads")
            tree, defs = parse_template(file.read_text(encoding="utf-8"), str(file))
            for name in defs:
                if name in defines:
                    raise RenderError(f"{file}: the template {name!r} is defined twice")
            defines.update(defs)
            if not file.name.startswith("_") and file.name != "NOTES.txt":
                jobs.append((str(file), tree, top))
        for sub in subcharts:
            load(sub, merged[sub.name])

    load(chart, values)
    engine = Engine(defines)
    objects: list[dict[str, Any]] = []
    for source, tree, top in jobs:
        text = engine.run(tree, top, {"$": top})
        for doc in load_documents(text, f"{source} (rendered)", yaml12=False):
            objects.append(_mapping(doc, f"{source} (rendered)"))
    return objects


# ---- compare ------------------------------------------------------------------------------------

def _key(obj: dict[str, Any]) -> tuple[str, str, str]:
    meta = obj.get("metadata") or {}
    return str(obj.get("kind")), str(meta.get("namespace", "")), str(meta.get("name"))


def compare(left: list[Any], right: list[Any]) -> list[str]:
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


# ---- mount ---------------------------------------------------------------------------------------

def mount(objects: list[Any], container: str, mount_path: str, destination: Path, *,
          required: bool = True) -> list[Path]:
    """Write what `container` sees at `mount_path`, in each workload that has it, as the kubelet does.

    The files of a ConfigMap (or projected) volume go into a timestamped folder, "..data"
    points at it, and each top-level entry is a symlink through "..data": an update swaps
    "..data" in one rename. A key a volume names but its ConfigMap lacks, a missing ConfigMap,
    a subPath mount, and a key of a ConfigMap mapped with items that the items leave out
    are errors. Returns one folder per workload: DESTINATION/NAMESPACE.NAME (or NAME).
    """
    maps = {(str((o.get("metadata") or {}).get("namespace", "")), str(o["metadata"]["name"])): o.get("data") or {}
            for o in objects if o.get("kind") == "ConfigMap"}
    written: list[Path] = []
    for obj in objects:
        if obj.get("kind") not in WORKLOADS:
            continue
        meta = obj["metadata"]
        namespace = str(meta.get("namespace", ""))
        pod = obj["spec"]["template"]["spec"]
        where = f"{obj['kind']} {namespace}/{meta['name']}"
        containers = [c for g in ("initContainers", "containers") for c in pod.get(g) or [] if c["name"] == container]
        if not containers:
            continue
        mounts = [m for m in containers[0].get("volumeMounts") or [] if m["mountPath"] == mount_path]
        if len(mounts) != 1:
            raise RenderError(f"{where}: container {container} has {len(mounts)} mounts at {mount_path}")
        if "subPath" in mounts[0] or "subPathExpr" in mounts[0]:
            raise RenderError(f"{where}: {mount_path} is mounted by subPath: ConfigMap updates never reach it")
        volumes = [v for v in pod.get("volumes") or [] if v["name"] == mounts[0]["name"]]
        if len(volumes) != 1:
            raise RenderError(f"{where}: no volume {mounts[0]['name']}")
        volume = volumes[0]
        if "configMap" in volume:
            sources = [volume]
        elif "projected" in volume:
            sources = volume["projected"]["sources"]
        else:
            raise RenderError(f"{where}: volume {volume['name']} is neither a configMap nor a projected volume")
        files: dict[str, str] = {}
        for source in sources:
            if "configMap" not in source:
                raise RenderError(f"{where}: volume {volume['name']}: only configMap sources are supported")
            ref = source["configMap"]
            data = maps.get((namespace, ref["name"]))
            if data is None:
                raise RenderError(f"{where}: volume {volume['name']}: ConfigMap {ref['name']} is not rendered")
            items = ref.get("items")
            if items is None:
                chosen = {key: key for key in data}
            else:
                chosen = {item["key"]: item["path"] for item in items}
                missing = sorted(set(chosen) - set(data))
                left_out = sorted(set(data) - set(chosen))
                if missing:
                    raise RenderError(f"{where}: ConfigMap {ref['name']} has no key {missing[0]!r}")
                if left_out:
                    raise RenderError(f"{where}: the key {left_out[0]!r} of ConfigMap {ref['name']} is not mapped "
                                      f"by the volume's items, so the proxy would not see it")
            for key, rel in chosen.items():
                if rel in files:
                    raise RenderError(f"{where}: two sources write {rel}")
                files[rel] = data[key]
        root = destination / (f"{namespace}.{meta['name']}" if namespace else str(meta["name"]))
        stamp = root / "..2026_01_01_00_00_00.000000001"
        for rel, content in files.items():
            (stamp / rel).parent.mkdir(parents=True, exist_ok=True)
            (stamp / rel).write_text(content, encoding="utf-8")
        (root / "..data").symlink_to(stamp.name)
        for top in sorted({rel.split("/")[0] for rel in files}):
            (root / top).symlink_to(f"..data/{top}")
        written.append(root)
    if not written and required:
        raise RenderError(f"no workload has a container {container!r}")
    return written


# ---- command line -------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    kus = sub.add_parser("kustomize", help="render a kustomization folder")
    kus.add_argument("directory", type=Path)
    kus.add_argument("-o", "--output", type=Path)
    helm = sub.add_parser("helm", help="render a chart folder (helm template)")
    helm.add_argument("chart", type=Path)
    helm.add_argument("-f", "--values", type=Path, action="append", default=[])
    helm.add_argument("--release", default="release")
    helm.add_argument("--namespace", default="default")
    helm.add_argument("-o", "--output", type=Path)
    mnt = sub.add_parser("mount", help="write the files a container sees at a path, as the kubelet lays them out")
    mnt.add_argument("rendered", type=Path)
    mnt.add_argument("--container", required=True)
    mnt.add_argument("--path", required=True)
    mnt.add_argument("--to", type=Path, required=True)
    mnt.add_argument("--if-any", action="store_true", help="no such workload is not an error")
    cmp = sub.add_parser("compare", help="compare the objects of two rendered files")
    cmp.add_argument("first", type=Path)
    cmp.add_argument("second", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "compare":
            problems = compare(load_documents(args.first.read_text(encoding="utf-8"), str(args.first)),
                               load_documents(args.second.read_text(encoding="utf-8"), str(args.second)))
            for problem in problems:
                print(problem, file=sys.stderr)
            return 1 if problems else 0
        if args.command == "mount":
            objects = load_documents(args.rendered.read_text(encoding="utf-8"), str(args.rendered))
            for folder in mount(objects, args.container, args.path, args.to, required=not args.if_any):
                print(folder)
            return 0
        if args.command == "kustomize":
            docs: list[Any] = [r.obj for r in build_kustomization(args.directory)]
        else:
            values: dict[str, Any] = {}
            for path in args.values:
                loaded = load_documents(path.read_text(encoding="utf-8"), str(path), yaml12=False)
                values = coalesce(values, _mapping(loaded[0] if loaded else {}, str(path)))
            docs = list(render_chart(args.chart.resolve(), values, args.release, args.namespace))
    except (RenderError, OSError) as exc:
        print(f"render.py: {exc}", file=sys.stderr)
        return 1
    text = dump_documents(docs)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
