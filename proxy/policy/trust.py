"""Whether a policy folder can be trusted: only its owner (the proxy's user or root) can change it.

The policy decides where data may go, so whoever can write a policy file, or
drop a new one into the folder, decides it too. Like sshd's ``StrictModes``,
the proxy refuses to load a policy that someone else could have changed:

- every file it reads (the folder's ``*.yaml``/``*.yml`` and
  ``tests/*_test.yaml``) and every folder from the file up to the policy folder
  must be owned by the proxy's user or root, and writable by nobody but that
  owner (no group or other write bit: ``chmod go-w``);
- a symbolic link in the folder must lead to a file inside the folder (as the
  Kubernetes volume layout does: ``file -> ..data/file``, ``..data ->
  ..2026_01_01_00_00_00.1``); one that leads out of it is refused;
- each folder above the policy folder, up to ``/``, must be owned by the
  proxy's user or root and not writable by group or others, unless its sticky
  bit is set (``/tmp``): there, others cannot rename or replace entries they do
  not own, so the path to the policy folder stays the owner's.

A path on a read-only mount is exempt from the owner and mode rules: nobody can
change it through that mount. This is how Kubernetes ConfigMap, Secret and
projected volumes arrive: their root folder is mode 0777 (with an ``fsGroup``,
also group-owned and setgid), but always mounted read-only, and so is
``docker run -v DIR:/etc/bailiwick/policies:ro``, whose files belong to the
host's user. A symbolic link leaving the folder is refused even there.

Every problem is a `PolicyIssue` naming the path and what is wrong with it;
the loader refuses the whole policy when there is one, at start, on reload
and in ``bailiwick policy check``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from proxy.errors import PolicyIssue

# Write permission for the group or for others.
_SHARED_WRITE = stat.S_IWGRP | stat.S_IWOTH


def trusted_owners() -> frozenset[int]:
    """The owners a policy path may have: root and the user the proxy runs as."""
    return frozenset({0, os.geteuid()})


def read_only(path: Path) -> bool:
    """Whether `path` is on a file system mounted read-only (nobody can write through it)."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def folder_issues(directory: Path) -> list[PolicyIssue]:
    """Problems with the policy folder itself and every folder above it."""
    try:
        real = directory.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        return [PolicyIssue(str(directory), 0, "", f"cannot be resolved: {exc}")]
    issues = _path_issues(real, str(directory), is_dir=True, sticky_ok=False)
    for parent in real.parents:
        issues += _path_issues(parent, str(parent), is_dir=True, sticky_ok=True)
    if directory.is_symlink():
        # The link itself lives in a folder that must be as safe as the policy folder's own parents.
        link_home = Path(os.path.abspath(directory)).parent
        for parent in (link_home.resolve(), *link_home.resolve().parents):
            issues += _path_issues(parent, str(parent), is_dir=True, sticky_ok=True)
    return _unique(issues)


def file_issues(directory: Path, path: Path) -> list[PolicyIssue]:
    """Problems with one file the policy is read from (and the folders between it and `directory`)."""
    shown = str(path)
    try:
        root = directory.resolve(strict=True)
        real = path.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        return [PolicyIssue(shown, 0, "", f"cannot be resolved: {exc}")]
    if real == root or root not in real.parents:
        return [PolicyIssue(shown, 0, "", f"is a symbolic link to {real}, outside the policy folder {root}")]
    issues = _path_issues(real, shown if real == path.absolute() else f"{shown} (-> {real})",
                          is_dir=False, sticky_ok=False)
    for parent in real.parents:
        if parent == root:
            break
        issues += _path_issues(parent, str(parent), is_dir=True, sticky_ok=False)
    return issues


def _path_issues(path: Path, shown: str, *, is_dir: bool, sticky_ok: bool) -> list[PolicyIssue]:
    try:
        info = os.stat(path)
    except OSError as exc:
        return [PolicyIssue(shown, 0, "", f"cannot be examined: {exc.strerror}")]
    if is_dir and not stat.S_ISDIR(info.st_mode):
        return [PolicyIssue(shown, 0, "", "is not a directory")]
    if not is_dir and not stat.S_ISREG(info.st_mode):
        return [PolicyIssue(shown, 0, "", "is not a regular file")]
    if read_only(path):
        return []
    issues: list[PolicyIssue] = []
    owners = trusted_owners()
    if info.st_uid not in owners:
        users = " or ".join(f"uid {uid}" for uid in sorted(owners))
        issues.append(PolicyIssue(
            shown, 0, "",
            f"is owned by uid {info.st_uid}, not by the proxy's user or root ({users}): "
            "its owner could change the policy",
        ))
    shared = info.st_mode & _SHARED_WRITE
    if shared and not (sticky_ok and info.st_mode & stat.S_ISVTX):
        who = {stat.S_IWGRP: "its group", stat.S_IWOTH: "others"}.get(shared, "its group and others")
        what = "files can be added to it" if is_dir else "it can be changed"
        issues.append(PolicyIssue(
            shown, 0, "",
            f"is writable by {who} (mode {stat.S_IMODE(info.st_mode):04o}), so {what} by someone "
            "other than its owner; make it writable by its owner only (chmod go-w)",
        ))
    return issues


def _unique(issues: list[PolicyIssue]) -> list[PolicyIssue]:
    seen: set[PolicyIssue] = set()
    out: list[PolicyIssue] = []
    for issue in issues:
        if issue not in seen:
            seen.add(issue)
            out.append(issue)
    return out
