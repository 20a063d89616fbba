"""What a container of rendered workloads sees at a path, laid out as the kubelet lays out a ConfigMap volume.

bailiwick reads its policy folder and configuration from ConfigMap volumes, and the kubelet
does not write those as plain files: the files go into a timestamped folder, "..data"
points at it, and each top-level entry is a symlink through "..data", so an update swaps
"..data" in one rename. deploy/kubernetes/check and tests/deploy run `bailiwick policy check`
and the configuration loader on exactly that layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.kustomize import WORKLOADS

Obj = dict[str, Any]


class MountError(Exception):
    """The volume cannot be laid out as the kubelet would, or would hide a file from the proxy."""


def mount(objects: list[Any], container: str, mount_path: str, destination: Path, *,
          required: bool = True) -> list[Path]:
    """Write what `container` sees at `mount_path`, in each workload that has it, as the kubelet does.

    A key a volume names but its ConfigMap lacks, a missing ConfigMap, a subPath mount, and a
    key of a ConfigMap mapped with items that the items leave out are errors. Returns one
    folder per workload: DESTINATION/NAMESPACE.NAME (or NAME).
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
        files = _volume_files(pod, containers[0], mount_path, maps, namespace, where)
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
        raise MountError(f"no workload has a container {container!r}")
    return written


def _volume_files(pod: Obj, container: Obj, mount_path: str, maps: dict[tuple[str, str], dict[str, str]],
                  namespace: str, where: str) -> dict[str, str]:
    """The files of the volume mounted at `mount_path`: relative path -> content."""
    mounts = [m for m in container.get("volumeMounts") or [] if m["mountPath"] == mount_path]
    if len(mounts) != 1:
        raise MountError(f"{where}: container {container['name']} has {len(mounts)} mounts at {mount_path}")
    if "subPath" in mounts[0] or "subPathExpr" in mounts[0]:
        raise MountError(f"{where}: {mount_path} is mounted by subPath: ConfigMap updates never reach it")
    volumes = [v for v in pod.get("volumes") or [] if v["name"] == mounts[0]["name"]]
    if len(volumes) != 1:
        raise MountError(f"{where}: no volume {mounts[0]['name']}")
    volume = volumes[0]
    if "configMap" in volume:
        sources = [volume]
    elif "projected" in volume:
        sources = volume["projected"]["sources"]
    else:
        raise MountError(f"{where}: volume {volume['name']} is neither a configMap nor a projected volume")
    files: dict[str, str] = {}
    for source in sources:
        if "configMap" not in source:
            raise MountError(f"{where}: volume {volume['name']}: only configMap sources are supported")
        ref = source["configMap"]
        data = maps.get((namespace, ref["name"]))
        if data is None:
            raise MountError(f"{where}: volume {volume['name']}: ConfigMap {ref['name']} is not rendered")
        items = ref.get("items")
        if items is None:
            chosen = {key: key for key in data}
        else:
            chosen = {item["key"]: item["path"] for item in items}
            missing = sorted(set(chosen) - set(data))
            left_out = sorted(set(data) - set(chosen))
            if missing:
                raise MountError(f"{where}: ConfigMap {ref['name']} has no key {missing[0]!r}")
            if left_out:
                raise MountError(f"{where}: the key {left_out[0]!r} of ConfigMap {ref['name']} is not mapped "
                                 f"by the volume's items, so the proxy would not see it")
        for key, rel in chosen.items():
            if rel in files:
                raise MountError(f"{where}: two sources write {rel}")
            files[rel] = data[key]
    return files
