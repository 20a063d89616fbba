"""`bailiwick policy diff --audit` on the audit lines the proxy writes for Azure requests, made against Azurite.

A container listing (List Blobs) and container configuration (Set Container
ACL) reach every blob of the container, so a dataset added inside it changes
their decisions; the diff must find that in the recorded lines, as it does
for S3's listings.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import ContainerClient

from proxy.cli import main
from proxy.harness import ProxyThread
from tests.policy.test_diff import AZURE_OLD, AZURE_SECRETS
from tests.support.records import wait_for_record, written_records

from .conftest import ACCOUNT, IE
from .test_azurite import direct, proxied  # noqa: F401  (direct: the fixture that makes the containers)


def list_blobs(container: ContainerClient) -> None:
    list(container.list_blobs())


def set_acl(container: ContainerClient) -> None:
    # Refused by the proxy's own policy (Ireland has no admin there): recorded all the same.
    with pytest.raises(HttpResponseError):
        container.set_container_access_policy(signed_identifiers={})


@pytest.mark.usefixtures("direct")
@pytest.mark.parametrize(("call", "operation", "action"), [
    pytest.param(list_blobs, "ListBlobs", "list", id="a container listing"),
    pytest.param(set_acl, "SetContainerACL", "admin", id="container configuration"),
])
def test_policy_diff_reports_a_dataset_added_inside_a_container(
    azure_proxy: ProxyThread, azure_audit: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], call: Callable[[ContainerClient], None], operation: str, action: str,
) -> None:
    subject = f"diff-{uuid.uuid4().hex}"
    call(proxied(azure_proxy, "IE", sub=subject).get_container_client(IE))
    wait_for_record(azure_audit, lambda r: r["caller"]["subject"] == subject)
    recorded = [r for r in written_records(azure_audit) if r["caller"]["subject"] == subject]
    assert [r["request"]["operation"] for r in recorded] == [operation]
    audit = tmp_path / "audit.jsonl"
    audit.write_text("".join(json.dumps(r) + "\n" for r in recorded))
    old, new = tmp_path / "old", tmp_path / "new"
    for folder, text in ((old, AZURE_OLD), (new, AZURE_OLD + AZURE_SECRETS)):
        folder.mkdir()
        (folder / "mail.yaml").write_text(text)

    status = main(["policy", "diff", str(old), str(new), "--audit", str(audit)])

    out = capsys.readouterr().out
    assert status == 1, out
    assert out.splitlines()[0] == (
        f"allow -> deny  IE {action} azure://{ACCOUNT}/{IE}/ (listing)  "
        f"(rule local-full-access -> default deny in dublin-secrets)  at {audit}:1"
    )
    assert out.splitlines()[-1] == "1 of 1 decision would change: 1 newly refused, 0 newly allowed, 0 rule changes"
