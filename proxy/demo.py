"""`bailiwick demo`: the Dublin/US story, end to end, on this machine.

It starts moto's S3 server as the storage (buckets in eu-west-1 and
us-east-1, seeded with mail), the proxy in front of it with the example
policies, and three callers with tokens: an Irish mail client, a German one,
and a US prosecutor's terminal. Each reads, lists, writes and copies through
the proxy with boto3. The table shows what each got.

A second act encrypts: two datasets that require encryption, one in each
region, are served by a proxy of each region in re-sign mode, each with its
own region's key (a local key file here). The Irish caller writes and reads
mail in plaintext through the eu-west-1 proxy, while the storage server's own
copy is ciphertext; a copy placed on US storage past the proxies stays
unreadable, because only eu-west-1's key opens it and the us-east-1 proxy
does not hold that key (`proxy.demo_encryption`).

The exit status is 0 only if every outcome is what it should be, and every
refused write left the storage untouched.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from proxy.audit import verify
from proxy.config import load_config
from proxy.demo_encryption import encryption_act
from proxy.demo_tools import AUDIENCE, ISSUER, SECRET_ENV, Row, client, exists, print_table, token
from proxy.domain import Access, AccessRequest, Action, Resource
from proxy.harness import ProxyThread
from proxy.localstore import MotoServer
from proxy.policy.decision import Outcome
from proxy.policy.engine import decide
from proxy.policy.loader import load_policy
from proxy.policy.model import Policy
from proxy.words import counted

DUBLIN = "mail-eu-dublin"
US = "mail-us-east"


def example_policies() -> Path:
    """The example policies: packaged with the wheel, or the checkout's policies/ folder."""
    packaged = Path(str(resources.files("proxy"))) / "example_policies"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "policies"


@dataclass(frozen=True)
class Step:
    caller: str
    description: str
    action: Action
    resource: Resource
    copy_from: Resource | None
    run: Callable[[Any], object]
    # For writes: the key that must exist afterwards exactly when the step was allowed.
    writes: tuple[str, str] | None = None


def _steps(caller: str) -> list[Step]:
    tag = caller.lower()
    dublin_mail = Resource("s3", DUBLIN, "alice/inbox/1.eml")
    us_mail = Resource("s3", US, "bob/inbox/1.eml")
    new_dublin = f"{tag}/sent/note.eml"
    copy_out = f"copied-from-dublin/{tag}.eml"
    copy_in = f"copied-from-us/{tag}.eml"
    return [
        Step(caller, "read Dublin mail", Action.READ, dublin_mail, None,
             lambda s3: s3.get_object(Bucket=DUBLIN, Key="alice/inbox/1.eml")["Body"].read()),
        Step(caller, "list Dublin mailboxes", Action.LIST, Resource("s3", DUBLIN, ""), None,
             lambda s3: s3.list_objects_v2(Bucket=DUBLIN)),
        Step(caller, "write to Dublin", Action.WRITE, Resource("s3", DUBLIN, new_dublin), None,
             lambda s3: s3.put_object(Bucket=DUBLIN, Key=new_dublin, Body=b"hello from " + tag.encode()),
             writes=(DUBLIN, new_dublin)),
        Step(caller, "copy Dublin mail to us-east-1", Action.WRITE, Resource("s3", US, copy_out), dublin_mail,
             lambda s3: s3.copy_object(Bucket=US, Key=copy_out,
                                       CopySource={"Bucket": DUBLIN, "Key": "alice/inbox/1.eml"}),
             writes=(US, copy_out)),
        Step(caller, "read US mail", Action.READ, us_mail, None,
             lambda s3: s3.get_object(Bucket=US, Key="bob/inbox/1.eml")["Body"].read()),
        Step(caller, "copy US mail to Dublin", Action.WRITE, Resource("s3", DUBLIN, copy_in), us_mail,
             lambda s3: s3.copy_object(Bucket=DUBLIN, Key=copy_in,
                                       CopySource={"Bucket": US, "Key": "bob/inbox/1.eml"}),
             writes=(DUBLIN, copy_in)),
    ]


CALLERS = {
    "Irish mail client": ("IE", "irish-mail-client"),
    "German mail client": ("DE", "german-mail-client"),
    "US prosecutor's terminal": ("US", "us-prosecutor-terminal"),
}

# The story's claims, checked on top of the policy: US never reaches Dublin mail, and
# nothing is copied out of Dublin, whoever asks.
def _story_requires_deny(step: Step, jurisdiction: str) -> bool:
    out_of_dublin = step.copy_from is not None and step.copy_from.bucket == DUBLIN
    us_on_dublin = jurisdiction == "US" and step.resource.bucket == DUBLIN
    return out_of_dublin or us_on_dublin


def _seed(store_url: str) -> None:
    s3 = client(store_url, None)
    s3.create_bucket(Bucket=DUBLIN, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    s3.create_bucket(Bucket=US)
    s3.put_object(Bucket=DUBLIN, Key="alice/inbox/1.eml", Body=b"From: bank@example.ie\n\nDublin mail\n")
    s3.put_object(Bucket=US, Key="bob/inbox/1.eml", Body=b"From: bank@example.com\n\nUS mail\n")


HEADER: Row = ("caller", "request", "policy says", "proxy did", "storage", "check", "what the caller was told")


def _expected(policy: Policy, jurisdiction: str, step: Step) -> str:
    request = AccessRequest((Access(step.action, step.resource, listing=step.action is Action.LIST),),
                            copy_from=step.copy_from)
    outcome = decide(policy, jurisdiction, request).outcome
    return "deny" if outcome is Outcome.DENY else "allow"


def run_demo(policies: Path | None = None) -> int:
    from botocore.exceptions import ClientError

    folder = policies or example_policies()
    policy = load_policy(folder)
    secret = secrets.token_urlsafe(48)
    env = {**os.environ, SECRET_ENV: secret}
    print(f"bailiwick demo: policy {folder} (version {policy.version})")
    with MotoServer() as store, tempfile.TemporaryDirectory(prefix="bailiwick-demo-") as scratch:
        audit_file = Path(scratch) / "audit.jsonl"
        _seed(store.url)
        print(f"  storage: moto S3 server at {store.url}, buckets {DUBLIN} (eu-west-1) and {US} (us-east-1)")
        config = load_config(None, environ=env, overrides={
            "listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0",
            "upstream": store.url, "policies": str(folder), "audit_path": str(audit_file),
        })
        from dataclasses import replace

        from proxy.config import IdentityConfig, JwtIssuer

        config = replace(config, identity=IdentityConfig(jwt=(JwtIssuer(
            issuer=ISSUER, audience=AUDIENCE, algorithms=("HS256",), hs256_secret=secret.encode(),
        ),)))
        proxy = ProxyThread(config, policy).start()
        print(f"  proxy:   bailiwick at {proxy.url}, callers identified by HS256 tokens from {ISSUER}\n")
        direct = client(store.url, None)
        rows: list[Row] = []
        failures = 0
        try:
            for name, (jurisdiction, subject) in CALLERS.items():
                s3 = client(proxy.url, token(secret, jurisdiction, subject))
                for step in _steps(name):
                    expected = _expected(policy, jurisdiction, step)
                    if _story_requires_deny(step, jurisdiction) and expected != "deny":
                        expected += " (story says deny!)"
                    why = ""
                    try:
                        step.run(s3)
                        got = "allow"
                    except ClientError as err:
                        code = err.response.get("Error", {}).get("Code", "?")
                        got = "deny" if code == "AccessDenied" else f"error {code}"
                        why = err.response.get("Error", {}).get("Message", "")
                    storage = ""
                    if step.writes is not None:
                        present = exists(direct, *step.writes)
                        storage = "written" if present else "untouched"
                        if present != (got == "allow"):
                            got += " (storage disagrees!)"
                    ok = got == expected
                    failures += not ok
                    rows.append((f"{name} ({jurisdiction})", step.description, expected, got, storage,
                                 "ok" if ok else "MISMATCH", why))
        finally:
            proxy.stop()
        audit = verify(audit_file)
        print_table(HEADER, rows)
        print(f"\naudit log: {counted(audit.lines, 'decision')} recorded, hash chain "
              + ("intact" if audit.ok else f"BROKEN at line {audit.broken_at}: {audit.problem}"))
        if not audit.ok or audit.lines < len(rows):
            failures += 1
        encrypted_rows, encrypted_failures = encryption_act(store.url, Path(scratch), folder, secret)
    failures += encrypted_failures
    if failures:
        print(f"\n{counted(failures, 'problem')}: the demo did not come out as the policy says.")
        return 1
    print(f"\nAll {len(rows) + len(encrypted_rows)} outcomes came out as they should: US access to Dublin mail and "
          "every copy out of Dublin were refused before reaching the storage, and what the storage server holds "
          "of encrypted mail is ciphertext that only its own region's key opens.")
    return 0
