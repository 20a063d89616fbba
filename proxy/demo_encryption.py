"""The encryption act of `bailiwick demo`: what the storage server holds of an encrypted dataset, and who can open it.

Two datasets of the act's own, one per region, require encryption (written
beside the first act's policy in the demo's temporary folder: the first act's
proxy has no key service, so it must keep a policy without encrypted
datasets). A proxy of each region serves them in re-sign mode, each with its
own region's key: a local key file, which is for development and the demo
only; a deployment keeps each region's key in that region's OpenBao/Vault
Transit or HSM. The Irish caller writes mail and reads it back in plaintext
through the eu-west-1 proxy; the storage server's own copy, read past the
proxy, is ciphertext (a hex excerpt is shown, and the mail's text is nowhere
in it); and a copy of it placed on US storage past the proxies stays
unreadable, because the us-east-1 proxy does not hold eu-west-1's key.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from proxy.audit import verify
from proxy.config import Config, load_config
from proxy.crypto.envelope import METADATA_HEADER
from proxy.crypto.keyfile import write_key_file
from proxy.demo_tools import AUDIENCE, ISSUER, SECRET_ENV, Row, client, exists, print_table, token
from proxy.harness import ProxyThread
from proxy.policy.loader import load_policy

ENCRYPTED_DUBLIN = "mail-eu-dublin-encrypted"
ENCRYPTED_US = "mail-us-east-encrypted"
ENCRYPTED_DATASETS = f"""\
# Written by `bailiwick demo` beside the example policies: the encryption act's datasets.
datasets:
  - name: dublin-mail-encrypted
    description: The Irish customer's mailboxes, stored in Dublin encrypted with eu-west-1's key.
    region: eu-west-1
    encryption: required
    resources:
      - s3://{ENCRYPTED_DUBLIN}
    rules:
      - id: encrypted-local-full-access
        allow: [read, list, write, delete]
        from: [HOME]
      - id: encrypted-no-us-access
        deny: ["*"]
        from: [US]

  - name: us-mail-encrypted
    description: Mailboxes stored in us-east-1, encrypted with us-east-1's key.
    region: us-east-1
    encryption: required
    resources:
      - s3://{ENCRYPTED_US}
    rules:
      - id: encrypted-us-local-full-access
        allow: [read, list, write, delete]
        from: [HOME]
"""
MAIL_KEY = "alice/inbox/2.eml"
MAIL = b"From: bank@example.ie\n\nDublin mail, encrypted at rest\n"
COPY_KEY = "copied-from-dublin/alice-2.eml"
EXCERPT_BYTES = 24
ENCRYPTED_HEADER: Row = ("caller", "request", "should be", "got", "storage", "check", "why")
# What each proxy's audit log must show of its key service: (operation, result) in order. The us-east-1
# proxy asks its key service for nothing: the object names a key that is not its region's.
KEY_RELEASES: dict[str, list[tuple[str, str]]] = {
    "eu-west-1": [("generate", "released"), ("unwrap", "released")], "us-east-1": [],
}


def _encrypted_policies(folder: Path, into: Path) -> Path:
    """`folder`'s policy files (not its policy tests) and the act's encrypted datasets, in `into`."""
    into.mkdir(mode=0o700)
    for file in folder.iterdir():
        if file.suffix in (".yaml", ".yml") and not file.name.startswith(".") and file.is_file():
            shutil.copyfile(file, into / file.name)
    (into / "demo-encrypted-mail.yaml").write_text(ENCRYPTED_DATASETS)
    for file in into.iterdir():
        file.chmod(0o600)   # a policy others could change is not loaded (proxy.policy.trust), whatever the umask
    return into


def _regional_config(folder: Path, region: str, store_url: str, policies: Path, secret: str) -> Config:
    """A proxy of `region` as a deployment would write it: re-sign mode, and its own region's key service
    (a local key file here, made on the spot)."""
    folder.mkdir(mode=0o700)
    write_key_file(folder / f"{region}.key")
    # moto without IAM checks accepts any signature; a real store takes the proxy's own credentials.
    (folder / "credentials").write_text("[default]\naws_access_key_id = demo\naws_secret_access_key = demo-secret\n")
    (folder / "credentials").chmod(0o600)
    settings = {
        "region": region, "listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0",
        "upstream": {"url": store_url}, "policies": str(policies),
        "audit": {"path": str(folder / "audit.jsonl")},
        "s3": {"sign": {"credentials_file": str(folder / "credentials")}},
        "identity": {"jwt": [{"issuer": ISSUER, "audience": AUDIENCE, "algorithms": ["HS256"],
                              "hs256_secret_env": SECRET_ENV}]},
        "encryption": {"key_service": "file",
                       "key_file": {"path": str(folder / f"{region}.key"), "allow_insecure": True}},
    }
    path = folder / "bailiwick.yaml"
    path.write_text(yaml.safe_dump(settings, sort_keys=False))
    return load_config(path, environ={SECRET_ENV: secret})


def _refusal(err: Any) -> tuple[str, str]:
    """What a refused call got ("403 KeyReleaseRefused") and the message it was told."""
    error = err.response.get("Error", {})
    status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
    return f"{status} {error.get('Code', '?')}", error.get("Message", "")


def encryption_act(store_url: str, scratch: Path, folder: Path, secret: str) -> tuple[list[Row], int]:
    """Play the act on the storage server at `store_url` (temporary files in `scratch`, the first act's policy in
    `folder`): print its table, and return its rows and how many problems it found."""
    from botocore.exceptions import ClientError

    policies = _encrypted_policies(folder, scratch / "encrypted-policies")
    policy = load_policy(policies)
    direct = client(store_url, None)
    direct.create_bucket(Bucket=ENCRYPTED_DUBLIN, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    direct.create_bucket(Bucket=ENCRYPTED_US)
    print(f"\n\nEncryption at rest: policy {policies} (version {policy.version})")
    print("  policy:  the first act's, plus dublin-mail-encrypted (eu-west-1) and us-mail-encrypted (us-east-1), "
          "which require encryption")
    print(f"  storage: the same moto server, buckets {ENCRYPTED_DUBLIN} (eu-west-1) and {ENCRYPTED_US} (us-east-1)")
    rows: list[Row] = []
    audits: dict[str, Path] = {}
    with contextlib.ExitStack() as running:
        proxies: dict[str, ProxyThread] = {}
        for region in KEY_RELEASES:
            config = _regional_config(scratch / region, region, store_url, policies, secret)
            proxies[region] = ProxyThread(config, policy).start()
            running.callback(proxies[region].stop)
            audits[region] = Path(str(config.audit.path))
            print(f"  proxy:   bailiwick for {region} at {proxies[region].url}, re-sign mode, "
                  f"its own key file {region}.key")
        print("  keys:    a local key file per region is for development and this demo only; a real deployment "
              "keeps each\n           region's key in that region, in OpenBao/Vault Transit or an HSM, out of "
              "the other regions' reach\n")

        irish = client(proxies["eu-west-1"].url, token(secret, "IE", "irish-mail-client"))
        try:
            irish.put_object(Bucket=ENCRYPTED_DUBLIN, Key=MAIL_KEY, Body=MAIL)
            got, why = "allow", ""
        except ClientError as err:
            got, why = _refusal(err)
        stored = "written" if exists(direct, ENCRYPTED_DUBLIN, MAIL_KEY) else "untouched"
        rows.append(_checked("Irish mail client (IE)", "write mail to encrypted Dublin (eu-west-1 proxy)",
                             "allow", got, stored, why))

        try:
            body = irish.get_object(Bucket=ENCRYPTED_DUBLIN, Key=MAIL_KEY)["Body"].read()
            got, why = ("plaintext" if body == MAIL else "other bytes"), ""
        except ClientError as err:
            got, why = _refusal(err)
        rows.append(_checked("Irish mail client (IE)", "read it back (eu-west-1 proxy)", "plaintext", got, "", why))

        try:
            answer = direct.get_object(Bucket=ENCRYPTED_DUBLIN, Key=MAIL_KEY)
            held, metadata = answer["Body"].read(), answer["Metadata"]
            sealed = METADATA_HEADER.removeprefix("x-amz-meta-") in metadata and not _shows(held, MAIL)
            got = "ciphertext" if sealed else "PLAINTEXT"
            why = (f"its first {EXCERPT_BYTES} of {len(held)} bytes: {held[:EXCERPT_BYTES].hex()}; "
                   + ("none of the mail's text occurs in them" if sealed else "the mail's text is in them"))
        except ClientError as err:
            got, why = _refusal(err)
        rows.append(_checked("storage provider (past the proxy)", "read its own copy of that mail", "ciphertext",
                             got, "", why))

        try:
            direct.copy_object(Bucket=ENCRYPTED_US, Key=COPY_KEY,
                               CopySource={"Bucket": ENCRYPTED_DUBLIN, "Key": MAIL_KEY})
            got, why = "written", "no proxy sees a copy made on the storage server itself"
        except ClientError as err:
            got, why = _refusal(err)
        stored = "written" if exists(direct, ENCRYPTED_US, COPY_KEY) else "untouched"
        rows.append(_checked("storage provider (past the proxy)", f"copy it into {ENCRYPTED_US}", "written", got,
                             stored, why))

        us = client(proxies["us-east-1"].url, token(secret, "US", "us-prosecutor-terminal"))
        try:
            us.get_object(Bucket=ENCRYPTED_US, Key=COPY_KEY)["Body"].read()
            got, why = "allow", "the us-east-1 proxy opened mail encrypted with eu-west-1's key"
        except ClientError as err:
            got, why = _refusal(err)
            if got == "403 KeyReleaseRefused":
                why = ("the policy lets US callers read this bucket, but the mail's data key is locked with "
                       "eu-west-1's key, which the us-east-1 key service does not hold: no key, no plaintext")
        rows.append(_checked("US prosecutor's terminal (US)", "read that copy (us-east-1 proxy)",
                             "403 KeyReleaseRefused", got, "", why))

    print_table(ENCRYPTED_HEADER, rows)
    summary, problems = _key_releases(audits)
    print(f"\n{summary}")
    return rows, problems + sum(row[5] != "ok" for row in rows)


def _checked(caller: str, request: str, expected: str, got: str, storage: str, why: str) -> Row:
    """A row of the act; "ok" when it got what it should, and no write it made was left out of the storage."""
    ok = got == expected and storage != "untouched"
    return (caller, request, expected, got, storage, "ok" if ok else "MISMATCH", why)


def _shows(held: bytes, plaintext: bytes) -> bool:
    """Whether the stored bytes show the plaintext, whole or any of its lines."""
    return plaintext in held or any(line in held for line in plaintext.splitlines() if line)


def _key_releases(audits: dict[str, Path]) -> tuple[str, int]:
    """What each proxy's audit log says of its key service, and 1 if it is not what the act did (else 0)."""
    parts, problems, intact = [], 0, True
    for region, path in audits.items():
        audit = verify(path)
        intact = intact and audit.ok
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        releases = [(r["key_release"]["operation"], r["key_release"]["result"]) for r in lines if r.get("key_release")]
        problems += not audit.ok or releases != KEY_RELEASES[region]
        shown = ", ".join(f"{operation} {result}" for operation, result in releases)
        parts.append(f"the {region} proxy's {len(lines)} {'lines record' if len(lines) > 1 else 'line records'} "
                     + (f"key releases ({shown})" if shown else "no key release"))
    chains = "intact" if intact else "BROKEN"
    return f"audit logs: {'; '.join(parts)}; hash chains {chains}", min(problems, 1)
