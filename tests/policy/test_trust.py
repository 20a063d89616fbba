"""A policy folder anyone but its owner could change is refused; Kubernetes volume layouts load.

Each case builds a folder from the example policies and changes one thing:
a mode, an owner (tests run as root in CI, so `os.chown` to nobody works;
elsewhere those cases are skipped), a symbolic link. `load_policy` is the one
entry point of the proxy's start, its reloads and ``bailiwick policy check``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from proxy.errors import PolicyLoadError
from proxy.policy import trust
from proxy.policy.loader import load_policy
from tests.conftest import EXAMPLE_POLICIES

NOBODY = 65534
FILES = ("jurisdictions.yaml", "mail.yaml")
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")


def policies(target: Path) -> Path:
    shutil.copytree(EXAMPLE_POLICIES, target)
    for path in (target, target / "tests"):
        path.chmod(0o755)
    for path in (*(target / name for name in FILES), target / "tests" / "mail_test.yaml"):
        path.chmod(0o644)
    return target


def configmap(mount: Path, *, file_mode: int = 0o644, group: int | None = None) -> Path:
    """The layout kubelet's atomic writer makes: real files in a timestamped folder, reached by links."""
    mount.mkdir()
    mount.chmod(0o755)
    stamp = mount / "..2026_12_06_08_00_00.123456789"
    policies(stamp)
    for path in (*(stamp / name for name in FILES), stamp / "tests" / "mail_test.yaml"):
        path.chmod(file_mode)
    if group is not None:   # fsGroup: group-owned, setgid folders, read bits added (never write, for a ConfigMap)
        for path in (mount, stamp, stamp / "tests", *(stamp / n for n in FILES), stamp / "tests" / "mail_test.yaml"):
            os.chown(path, -1, group)
            if path.is_dir():
                path.chmod(0o2755)
    (mount / "..data").symlink_to(stamp.name)
    for name in (*FILES, "tests"):
        (mount / name).symlink_to(Path("..data") / name)
    return mount


def refusal(folder: Path) -> str:
    with pytest.raises(PolicyLoadError) as refused:
        load_policy(folder)
    return str(refused.value)


Change = Callable[[Path], Path]   # alters a fresh policy folder; returns the path the refusal must name


def chmod(relative: str, mode: int) -> Change:
    def change(folder: Path) -> Path:
        (folder / relative).chmod(mode)
        return folder / relative
    return change


def chown(relative: str) -> Change:
    def change(folder: Path) -> Path:
        os.chown(folder / relative, NOBODY, -1)
        return folder / relative
    return change


def escape(relative: str) -> Change:
    def change(folder: Path) -> Path:
        outside = folder.parent / "outside"
        shutil.copytree(folder, outside)
        target = folder / relative
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()
        target.symlink_to(outside / relative)
        return target
    return change


def parent(mode: int, *, owner: int | None = None) -> Change:
    def change(folder: Path) -> Path:
        folder.parent.chmod(mode)
        if owner is not None:
            os.chown(folder.parent, owner, -1)
        return folder.parent
    return change


REFUSED: list[tuple[str, Change, str]] = [
    ("a world-writable policy file", chmod("mail.yaml", 0o666), "writable by its group and others (mode 0666)"),
    ("a policy file writable by others", chmod("mail.yaml", 0o646), "writable by others (mode 0646)"),
    ("a group-writable policy file", chmod("mail.yaml", 0o664), "writable by its group (mode 0664)"),
    ("a policy file writable by all", chmod("jurisdictions.yaml", 0o777), "writable by its group and others"),
    ("a world-writable folder", chmod(".", 0o777), "files can be added to it"),
    ("a world-writable sticky folder", chmod(".", 0o1777), "files can be added to it"),
    ("a group-writable folder", chmod(".", 0o775), "writable by its group (mode 0775)"),
    ("a group-writable tests folder", chmod("tests", 0o775), "writable by its group"),
    ("a world-writable policy test", chmod("tests/mail_test.yaml", 0o646), "writable by others"),
    ("a symlink to a file outside", escape("mail.yaml"), "outside the policy folder"),
    ("a tests symlink to a folder outside", escape("tests"), "outside the policy folder"),
    ("a world-writable parent without the sticky bit", parent(0o777), "files can be added to it"),
    ("a group-writable parent", parent(0o770), "writable by its group"),
]
REFUSED_AS_ROOT: list[tuple[str, Change, str]] = [
    ("a policy file owned by another user", chown("mail.yaml"), f"owned by uid {NOBODY}"),
    ("a policy test owned by another user", chown("tests/mail_test.yaml"), f"owned by uid {NOBODY}"),
    ("a folder owned by another user", chown("."), f"owned by uid {NOBODY}"),
    ("a parent owned by another user", parent(0o755, owner=NOBODY), f"owned by uid {NOBODY}"),
]


@pytest.mark.parametrize(
    ("change", "problem"),
    [pytest.param(c, p, id=name) for name, c, p in REFUSED]
    + [pytest.param(c, p, id=name, marks=as_root) for name, c, p in REFUSED_AS_ROOT],
)
def test_a_folder_someone_else_could_change_is_refused(tmp_path: Path, change: Change, problem: str) -> None:
    folder = policies(tmp_path / "home" / "policies")
    load_policy(folder)   # the control: the same folder loads before the change
    named = change(folder)
    message = refusal(folder)
    assert problem in message
    assert str(named).rstrip("/.") in message or str(named.resolve()) in message


@pytest.mark.parametrize("mode", [0o1777, 0o1775])
def test_a_sticky_parent_is_trusted_as_tmp_is(tmp_path: Path, mode: int) -> None:
    folder = policies(tmp_path / "shared" / "policies")
    folder.parent.chmod(mode)   # others may create entries beside it, never rename or replace it
    assert load_policy(folder).datasets


@pytest.mark.parametrize("file_mode", [0o644, 0o444, 0o440, 0o400])
def test_a_kubernetes_configmap_layout_loads(tmp_path: Path, file_mode: int) -> None:
    mount = configmap(tmp_path / "policies", file_mode=file_mode)
    policy = load_policy(mount)
    assert policy.version == load_policy(EXAMPLE_POLICIES).version
    assert policy.files == tuple(str(mount / name) for name in FILES)


@as_root
def test_a_kubernetes_configmap_layout_with_fs_group_loads(tmp_path: Path) -> None:
    assert load_policy(configmap(tmp_path / "policies", group=2000)).datasets


def test_a_world_writable_volume_root_is_trusted_only_when_mounted_read_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # kubelet makes a ConfigMap volume's root 0777 and always mounts it read-only.
    mount = configmap(tmp_path / "policies")
    mount.chmod(0o777)
    assert "files can be added to it" in refusal(mount)
    under_mount = str(mount)
    monkeypatch.setattr(trust, "read_only", lambda path: str(path).startswith(under_mount))
    assert load_policy(mount).datasets


def test_a_link_leaving_a_read_only_mount_is_still_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    mount = configmap(tmp_path / "policies")
    outside = policies(tmp_path / "elsewhere")
    (mount / "mail.yaml").unlink()
    (mount / "mail.yaml").symlink_to(outside / "mail.yaml")
    monkeypatch.setattr(trust, "read_only", lambda path: True)
    assert "outside the policy folder" in refusal(mount)


@contextlib.contextmanager
def read_only_bind(source: Path, target: Path) -> Iterator[None]:
    target.mkdir()
    try:
        subprocess.run(["mount", "--bind", "-o", "ro", str(source), str(target)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot make a read-only bind mount here: {exc}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(target)], check=True, capture_output=True)


@as_root
def test_a_real_read_only_mount_of_files_owned_by_anyone_loads(tmp_path: Path) -> None:
    # docker run -v "$PWD/policies:/etc/bailiwick/policies:ro": the files belong to the host's user.
    source = configmap(tmp_path / "source")
    source.chmod(0o777)
    for path in source.rglob("*"):
        os.chown(path, NOBODY, NOBODY, follow_symlinks=False)
    with read_only_bind(source, tmp_path / "mounted"):
        assert load_policy(tmp_path / "mounted").datasets
    assert "files can be added to it" in refusal(source)


def test_the_shipped_example_policies_are_trusted() -> None:
    assert load_policy(EXAMPLE_POLICIES).datasets
