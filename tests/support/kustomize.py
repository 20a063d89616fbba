"""A kustomize substitute for the features deploy/kubernetes uses, for machines without kubectl.

`kubectl kustomize` renders the kustomizations where it is installed (deploy/kubernetes/check
then holds this substitute to it, object for object); it is not packaged in Debian or PyPI,
so the tests and CI need something that renders without it. This is the smallest such
thing: exactly what the files of deploy/kubernetes use, and an error naming the file for
anything else, never different output.

Supported: `resources` (files, and folders holding a kustomization), `namespace`,
`labels` (pairs, `includeTemplates`), `configMapGenerator` (files; `behavior: replace`;
`options.disableNameSuffixHash`; the name hash and the references to it as kustomize 5
computes them), `patches` (strategic merge, by path or inline, aimed by the patch's own
kind and name; `$patch: delete` of an object or of a list item).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]


class KustomizeError(Exception):
    """Something outside the supported subset, or a broken input: the render stops."""


class _Yaml12Loader(yaml.SafeLoader):
    """Booleans as YAML 1.2 reads them (true/false only), as kustomize's YAML library does."""


_Yaml12Loader.yaml_implicit_resolvers = {
    key: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"),
)


def load_documents(text: str, source: str) -> list[Any]:
    """The non-empty documents of a multi-document YAML text, read as YAML 1.2."""
    try:
        docs = list(yaml.load_all(text, Loader=_Yaml12Loader))
    except yaml.YAMLError as exc:
        raise KustomizeError(f"{source}: not valid YAML: {exc}") from exc
    return [d for d in docs if d is not None]


def _mapping(value: Any, where: str) -> Obj:
    if not isinstance(value, dict):
        raise KustomizeError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _only(value: Obj, allowed: set[str], where: str) -> None:
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise KustomizeError(f"{where}: {unknown[0]!r} is not supported by this kustomize substitute "
                             f"(supported: {', '.join(sorted(allowed))})")


KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "namespace", "labels", "configMapGenerator", "patches"}
NAMESPACED = {"ConfigMap", "Service", "Deployment", "NetworkPolicy", "PodDisruptionBudget", "ServiceAccount",
              "Certificate"}   # Certificate: cert-manager.io/v1, namespaced
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}
# kustomize's "legacy" output order (the default of kustomize 5 and kubectl kustomize).
KIND_ORDER = ["Namespace", "ResourceQuota", "StorageClass", "CustomResourceDefinition", "ServiceAccount",
              "PodSecurityPolicy", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding", "ConfigMap",
              "Secret", "Endpoints", "Service", "LimitRange", "PriorityClass", "PersistentVolume",
              "PersistentVolumeClaim", "Deployment", "StatefulSet", "CronJob", "PodDisruptionBudget"]


@dataclass
class _Resource:
    obj: Obj
    source: str
    hashed: bool = False        # a generated ConfigMap whose name gets kustomize's content hash


def _ident(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(obj.get("kind")), str(meta.get("name"))


def _group(api_version: Any) -> str:
    text = str(api_version or "")
    return text.split("/")[0] if "/" in text else ""


def build(directory: Path) -> list[Obj]:
    """The objects `kustomize build DIRECTORY` writes, in its order."""
    resources = _build(directory)
    _hash_names(resources)
    order = {kind: i for i, kind in enumerate(KIND_ORDER)}
    resources.sort(key=lambda r: (order.get(str(r.obj.get("kind")), len(order)), str(r.obj.get("kind")),
                                  str((r.obj.get("metadata") or {}).get("namespace", "")),
                                  str((r.obj.get("metadata") or {}).get("name"))))
    return [r.obj for r in resources]


def _build(directory: Path) -> list[_Resource]:
    directory = directory.resolve()
    file = directory / "kustomization.yaml"
    if not file.is_file():
        raise KustomizeError(f"{directory}: no kustomization.yaml")
    source = str(file)
    docs = load_documents(file.read_text(encoding="utf-8"), source)
    if len(docs) != 1:
        raise KustomizeError(f"{source}: expected one document")
    k = _mapping(docs[0], source)
    _only(k, KUSTOMIZATION_KEYS, source)
    if k.get("apiVersion", "kustomize.config.k8s.io/v1beta1") != "kustomize.config.k8s.io/v1beta1" or \
            k.get("kind", "Kustomization") != "Kustomization":
        raise KustomizeError(f"{source}: expected apiVersion kustomize.config.k8s.io/v1beta1, kind Kustomization")

    resources: list[_Resource] = []
    for entry in k.get("resources") or []:
        if not isinstance(entry, str) or "://" in entry:
            raise KustomizeError(f"{source}: resources: {entry!r}: only local files and folders are supported")
        path = (directory / entry).resolve()
        if path.is_dir():
            resources.extend(_build(path))
        else:
            _inside(path, directory, source)
            resources += [_Resource(_mapping(doc, str(path)), str(path))
                          for doc in load_documents(path.read_text(encoding="utf-8"), str(path))]

    for i, gen in enumerate(k.get("configMapGenerator") or []):
        _generate(directory, f"{source}: configMapGenerator[{i}]", _mapping(gen, source), resources)

    for i, entry in enumerate(k.get("patches") or []):
        where = f"{source}: patches[{i}]"
        entry = _mapping(entry, where)
        _only(entry, {"path", "patch"}, where)
        if ("path" in entry) == ("patch" in entry):
            raise KustomizeError(f"{where}: give exactly one of path or patch")
        if "path" in entry:
            path = (directory / str(entry["path"])).resolve()
            _inside(path, directory, where)
            patch_docs = load_documents(path.read_text(encoding="utf-8"), str(path))
        else:
            patch_docs = load_documents(str(entry["patch"]), where)
        for patch in patch_docs:
            resources = _apply_patch(resources, _mapping(patch, f"{where} (strategic merge patches only)"), where)

    namespace = k.get("namespace")
    if namespace is not None:
        for res in resources:
            kind = res.obj.get("kind")
            if kind == "Namespace":       # as kustomize does: the Namespace object takes the name
                res.obj["metadata"]["name"] = namespace
            elif kind in NAMESPACED:
                res.obj.setdefault("metadata", {})["namespace"] = namespace
            else:
                raise KustomizeError(f"{res.source}: kind {kind!r}: this substitute does not know whether it is "
                                     "namespaced")

    for i, entry in enumerate(k.get("labels") or []):
        where = f"{source}: labels[{i}]"
        entry = _mapping(entry, where)
        _only(entry, {"pairs", "includeTemplates", "includeSelectors"}, where)
        if entry.get("includeSelectors"):
            raise KustomizeError(f"{where}: includeSelectors is not supported (selectors are written out)")
        pairs = {str(a): str(b) for a, b in _mapping(entry.get("pairs") or {}, where).items()}
        for res in resources:
            res.obj.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
            if entry.get("includeTemplates") and res.obj.get("kind") in WORKLOADS:
                template = res.obj.setdefault("spec", {}).setdefault("template", {})
                template.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
    return resources


def _inside(path: Path, root: Path, where: str) -> None:
    if not path.is_relative_to(root):
        raise KustomizeError(f"{where}: {path} is outside {root} (kustomize's default load restrictions)")
    if not path.is_file():
        raise KustomizeError(f"{where}: {path} does not exist")


def _generate(directory: Path, where: str, gen: Obj, resources: list[_Resource]) -> None:
    _only(gen, {"name", "files", "behavior", "options"}, where)
    options = _mapping(gen.get("options") or {}, f"{where}.options")
    _only(options, {"disableNameSuffixHash"}, f"{where}.options")
    name = gen.get("name")
    if not isinstance(name, str) or not name:
        raise KustomizeError(f"{where}: name is required")
    data: dict[str, str] = {}
    for entry in gen.get("files") or []:
        path = (directory / str(entry)).resolve()
        _inside(path, directory, where)
        if path.name in data:
            raise KustomizeError(f"{where}: key {path.name!r} given twice")
        data[path.name] = path.read_text(encoding="utf-8")
    behavior = gen.get("behavior", "create")
    hashed = not options.get("disableNameSuffixHash", False)
    existing = [r for r in resources if _ident(r.obj) == ("ConfigMap", name)]
    if behavior == "create":
        if existing:
            raise KustomizeError(f"{where}: ConfigMap {name!r} exists already (use behavior: replace)")
        resources.append(_Resource({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                                    "data": data}, where, hashed=hashed))
    elif behavior == "replace":
        if len(existing) != 1:
            raise KustomizeError(f"{where}: behavior replace: no ConfigMap {name!r} to replace")
        existing[0].obj["data"] = data
        if "options" in gen:
            existing[0].hashed = hashed
    else:
        raise KustomizeError(f"{where}: behavior {behavior!r} is not supported")


def _hash_names(resources: list[_Resource]) -> None:
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
    for res in resources:
        if res.obj.get("kind") not in WORKLOADS:
            continue
        namespace = str((res.obj.get("metadata") or {}).get("namespace", ""))
        for ref in _configmap_refs(res.obj["spec"]["template"]["spec"]):
            ref["name"] = renamed.get((namespace, ref["name"]), ref["name"])


def _configmap_refs(pod: Obj) -> Iterator[Obj]:
    for volume in pod.get("volumes") or []:
        if "configMap" in volume:
            yield volume["configMap"]
        for src in (volume.get("projected") or {}).get("sources") or []:
            if "configMap" in src:
                yield src["configMap"]
    for group in ("initContainers", "containers"):
        for container in pod.get(group) or []:
            if any("configMapKeyRef" in (env.get("valueFrom") or {}) for env in container.get("env") or []) or \
                    any("configMapRef" in env_from for env_from in container.get("envFrom") or []):
                raise KustomizeError("a ConfigMap named in env or envFrom: its name hash is not supported")


def _apply_patch(resources: list[_Resource], patch: Obj, where: str) -> list[_Resource]:
    kind, name = _ident(patch)
    matches = [r for r in resources
               if _ident(r.obj) == (kind, name) and _group(r.obj.get("apiVersion")) == _group(patch.get("apiVersion"))]
    if len(matches) != 1:
        raise KustomizeError(f"{where}: the patch for {kind} {name!r} matches {len(matches)} resources, not one")
    target = matches[0]
    if patch.get("$patch") == "delete":
        return [r for r in resources if r is not target]
    body = {k: v for k, v in patch.items() if k not in ("apiVersion", "kind")}
    target.obj = _merge(target.obj, body, (kind,), where)
    return resources


# Strategic merge: the lists this substitute merges, by the field that identifies an item
# (the patchMergeKey of the Kubernetes API), and the lists it replaces whole, as the API does.
_MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
               "volumeMounts": "mountPath", "ports": "containerPort"}
_ATOMIC_LISTS = {"args", "command", "egress", "ingress", "policyTypes", "sources", "items", "drop", "add",
                 "from", "to", "envFrom"}


def _merge(original: Any, patch: Any, path: tuple[str, ...], where: str) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(original, dict):
        original = {}
    for key in patch:
        if key.startswith("$"):
            raise KustomizeError(f"{where}: {'.'.join(path)}: the directive {key} is not supported here")
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
    if path[0] == "Service" and name == "ports":
        raise KustomizeError(f"{where}: {'.'.join(path)}: a Service's ports are not merged by this substitute")
    merge_key = _MERGE_KEYS.get(name, "")
    if not merge_key:
        if name in _ATOMIC_LISTS:
            return copy.deepcopy(patch)
        raise KustomizeError(f"{where}: {'.'.join(path)}: this substitute does not know how to merge this list")
    rest = list(original or [])
    merged: list[Any] = []
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            raise KustomizeError(f"{where}: {'.'.join(path)}: each item needs its {merge_key}")
        found = [o for o in rest if isinstance(o, dict) and o.get(merge_key) == item[merge_key]]
        for o in found:
            rest.remove(o)
        if item.get("$patch") == "delete":
            continue
        merged.append(_merge(found[0] if found else {}, item, path, where))
    # As kustomize writes it: the patch's items first, in its order, then the others.
    return merged + rest
