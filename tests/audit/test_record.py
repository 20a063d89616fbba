"""`proxy.audit.record`: the audit line as a value, exactly the line the proxy writes, and back."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.api import ParsedRequest
from proxy.audit import (
    AuditLog,
    AuditOutcome,
    AuditRecord,
    RecordedCaller,
    RecordedRequest,
    canonical,
    chain_hash,
    deciding_access,
    outcome_of,
    verify,
)
from proxy.audit.chain import encode
from proxy.audit.record import CHAIN_FIELDS
from proxy.azure.api import AzureApi
from proxy.config import S3Settings
from proxy.domain import Action, Caller
from proxy.errors import AccessDenied, InternalError, RequestRefused, Unauthenticated, UpstreamTimeout
from proxy.policy.decision import Decision, Outcome
from proxy.policy.engine import decide
from proxy.policy.loader import load_policy
from proxy.policy.model import Policy
from proxy.s3.api import S3Api
from tests.azure.helpers import SETTINGS as AZURE_SETTINGS

SHIPPED_POLICIES = Path(__file__).resolve().parents[2] / "policies"

# Lines as the proxy wrote them before the audit line was a typed record (the dict literal of the gateway),
# chain and all: reading them must give back the same bytes, hence the same hashes.
GOLDEN = [
    '{"caller":{"jurisdiction":"IE","source":"10.20.0.7","subject":"alice"},"dataset":"dublin-mail",'
    '"decision":"allow","decision_id":"4f1c2a9e0b7d4e3f","error_code":null,"policy_version":"c4422a0006f3",'
    '"prev":"0000000000000000000000000000000000000000000000000000000000000000",'
    '"reason":"read access to data held in IE (Z\\u00fcrich office) is allowed for callers in IE",'
    '"request":{"action":"read","api":"s3","copy_from":null,"method":"GET","operation":"GetObject",'
    '"resource":"s3://mail-eu-dublin/alice/inbox/1.eml","resources":1},"rule":"local-full-access","status":200,'
    '"time":"2026-11-23T18:00:00.123Z","hash":"485556465042ce0d7fd5f7139c41342743ec910d33c46ffb9b238eb0b5f4f117"}',
    '{"caller":{"jurisdiction":null,"source":"[::1]:50412","subject":null},"dataset":null,"decision":"deny",'
    '"decision_id":"77aa","error_code":"InvalidToken","policy_version":"c4422a0006f3",'
    '"prev":"485556465042ce0d7fd5f7139c41342743ec910d33c46ffb9b238eb0b5f4f117","reason":"no token",'
    '"request":{"action":null,"api":"azure","copy_from":null,"method":"PUT","operation":null,"resource":null,'
    '"resources":0},"rule":null,"status":403,"time":"2026-11-23T18:00:01.000Z",'
    '"hash":"e400c03561cb72eb1cbb60c39caa9e20927029883a3ba88a40ab80b3cbde8e17"}',
    '{"caller":{"jurisdiction":"US","source":"10.0.0.9","subject":"bob"},"dataset":"dublin-mail",'
    '"decision":"error","decision_id":"9","error_code":"UpstreamTimeout","policy_version":null,'
    '"prev":"0000000000000000000000000000000000000000000000000000000000000000",'
    '"reason":"the storage server did not answer","request":{"action":"write","api":"s3",'
    '"copy_from":"s3://mail-eu-dublin/a","method":"PUT","operation":"CopyObject","resource":"s3://mail-us-east/b",'
    '"resources":2},"rule":"r","status":504,"time":"2026-11-23T18:00:02.000Z","worker":2,'
    '"hash":"d403fcfff193509c89ca0d35884743ac1f314ca2edef0ca92ba7ba210a7cceaa"}',
]


def chained(record: AuditRecord, line: dict[str, Any]) -> str:
    """`record`'s line with the chain fields of `line`, as the writer puts them together."""
    body = {**record.to_dict(), **{k: line[k] for k in CHAIN_FIELDS - {"hash"} if k in line}}
    text = encode(body)
    return f'{text[:-1]},"hash":"{chain_hash(body)}"}}'


@pytest.mark.parametrize("text", GOLDEN)
def test_a_line_written_before_reads_back_to_the_same_bytes(text: str) -> None:
    line = json.loads(text)
    record = AuditRecord.from_json(text)
    assert record.request.listing is None      # not recorded then
    assert record.to_dict() == {k: v for k, v in line.items() if k not in CHAIN_FIELDS}
    assert chained(record, line) == text


S3 = S3Api(S3Settings())
AZURE = AzureApi(AZURE_SETTINGS)


def parse(api: S3Api | AzureApi, method: str, target: str, **headers: str) -> ParsedRequest:
    host = "127.0.0.1:10000" if api is AZURE else "127.0.0.1:9000"
    return api.parse(method, target, CIMultiDictProxy(CIMultiDict({"Host": host, **headers})))


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(SHIPPED_POLICIES)


IRISH = Caller("alice", "IE", "10.20.0.7", "jwt")
AMERICAN = Caller("bob", "US", "10.20.0.8", "jwt")

@dataclass(frozen=True)
class Case:
    """A request's end: who asked, what (None: refused before it was read), whether the policy decided it."""

    caller: Caller | None
    method: str
    parsed: ParsedRequest | None
    decided: bool
    refusal: RequestRefused | None
    status: int
    expected: dict[str, Any]   # fields of the line


CASES = {
    "an allowed read": Case(
        IRISH, "GET", parse(S3, "GET", "/mail-eu-dublin/alice/inbox/1.eml"), True, None, 200,
        {"decision": "allow", "dataset": "dublin-mail", "rule": "local-full-access", "error_code": None,
         "request": {"action": "read", "api": "s3", "copy_from": None, "method": "GET", "operation": "GetObject",
                     "resource": "s3://mail-eu-dublin/alice/inbox/1.eml", "resources": 1, "listing": False}},
    ),
    "an S3 listing": Case(
        IRISH, "GET", parse(S3, "GET", "/mail-eu-dublin?list-type=2&prefix=alice/"), True, None, 200,
        {"decision": "allow", "request": {"action": "list", "api": "s3", "copy_from": None, "method": "GET",
                                          "operation": "ListObjectsV2", "resource": "s3://mail-eu-dublin/alice/",
                                          "resources": 1, "listing": True}},
    ),
    "an Azure listing": Case(
        IRISH, "GET", parse(AZURE, "GET", "/devstoreaccount1/ie-mail?restype=container&comp=list"), True, None, 200,
        {"request": {"action": "list", "api": "azure", "copy_from": None, "method": "GET", "operation": "ListBlobs",
                     "resource": "azure://devstoreaccount1/ie-mail/", "resources": 1, "listing": True}},
    ),
    "Azure container configuration": Case(
        IRISH, "PUT", parse(AZURE, "PUT", "/devstoreaccount1/ie-mail?restype=container&comp=acl"), True,
        AccessDenied("no"), 403,
        {"decision": "deny", "error_code": "AccessDenied",
         "request": {"action": "admin", "api": "azure", "copy_from": None, "method": "PUT",
                     "operation": "SetContainerACL", "resource": "azure://devstoreaccount1/ie-mail/", "resources": 1,
                     "listing": True}},
    ),
    "a copy refused at its source": Case(
        AMERICAN, "PUT", parse(S3, "PUT", "/mail-us-east/x", **{"x-amz-copy-source": "/mail-eu-dublin/a"}), True,
        AccessDenied("no"), 403,
        {"decision": "deny", "request": {"action": "read", "api": "s3", "copy_from": "s3://mail-eu-dublin/a",
                                         "method": "PUT", "operation": "CopyObject",
                                         "resource": "s3://mail-eu-dublin/a", "resources": 1, "listing": False}},
    ),
    "allowed, then the storage server failed": Case(
        IRISH, "GET", parse(S3, "GET", "/mail-eu-dublin/k"), True, UpstreamTimeout("the storage server did not answer"),
        504, {"decision": "error", "reason": "the storage server did not answer", "dataset": "dublin-mail",
              "error_code": "GatewayTimeout"},
    ),
    "refused before the caller was identified": Case(
        None, "GET", None, False, Unauthenticated("no token"), 403,
        {"decision": "deny", "reason": "no token", "dataset": None, "rule": None, "policy_version": "in-force",
         "caller": {"jurisdiction": None, "source": "[::1]:50412", "subject": None},
         "request": {"action": None, "api": "s3", "copy_from": None, "method": "GET", "operation": None,
                     "resource": None, "resources": 0, "listing": False}},
    ),
    "a server error before the policy": Case(
        IRISH, "GET", parse(S3, "GET", "/mail-eu-dublin/k"), False, InternalError("broken"), 500,
        {"decision": "error", "reason": "broken", "dataset": None, "rule": None,
         "request": {"action": "read", "api": "s3", "copy_from": None, "method": "GET", "operation": "GetObject",
                     "resource": "s3://mail-eu-dublin/k", "resources": 1, "listing": False}},
    ),
}


def make(policy: Policy, name: str) -> tuple[AuditRecord, dict[str, Any], Decision | None]:
    case = CASES[name]
    caller, parsed = case.caller, case.parsed
    decision = decide(policy, caller.jurisdiction, parsed.request) if case.decided and caller and parsed else None
    record = AuditRecord.of(
        time="2026-11-23T18:00:00.000Z", decision_id="d-1", api=parsed.api if parsed else "s3", method=case.method,
        source=caller.source if caller else "[::1]:50412", caller=caller, decision=decision, parsed=parsed,
        refusal=case.refusal, status=case.status, policy_in_force="in-force",
    )
    return record, case.expected, decision


@pytest.mark.parametrize("name", list(CASES))
def test_the_line_of_a_request(policy: Policy, name: str) -> None:
    record, expected, decision = make(policy, name)
    line = record.to_dict()
    for field, value in expected.items():
        assert line[field] == value, field
    if decision is not None:
        assert line["policy_version"] == policy.version
        assert line["caller"]["jurisdiction"] == CASES[name].caller.jurisdiction  # type: ignore[union-attr]


@pytest.mark.parametrize("name", list(CASES))
def test_what_the_writer_writes_reads_back_exactly(policy: Policy, tmp_path: Path, name: str) -> None:
    record, _, _ = make(policy, name)
    path = tmp_path / "audit.jsonl"
    log = AuditLog(str(path), worker=1)
    log.write(record)
    log.write(record.to_dict())   # the same line, given as a plain object
    log.close()
    [file] = tmp_path.glob("*.jsonl")
    texts = file.read_text().splitlines()
    assert verify(file).ok
    for text in texts:
        line = json.loads(text)
        assert AuditRecord.from_json(text) == record
        assert chained(record, line) == text
    assert [json.loads(t)["request"] for t in texts] == [record.to_dict()["request"]] * 2


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


TEXT = st.text(max_size=20)   # any text, lone surrogates too: the canonical encoding is ASCII with escapes
RECORDS = st.builds(
    AuditRecord,
    time=TEXT, decision_id=TEXT, decision=st.sampled_from(AuditOutcome), reason=TEXT, dataset=optional(TEXT),
    rule=optional(TEXT), policy_version=optional(TEXT),
    caller=st.builds(RecordedCaller, jurisdiction=optional(TEXT), source=TEXT, subject=optional(TEXT)),
    request=st.builds(
        RecordedRequest, action=optional(st.sampled_from(Action)), api=TEXT, copy_from=optional(TEXT),
        method=TEXT, operation=optional(TEXT), resource=optional(TEXT), resources=st.integers(0, 10_000),
        listing=optional(st.booleans()),
    ),
    error_code=optional(TEXT), status=st.integers(0, 599),
)


@given(RECORDS)
def test_every_record_reads_back_from_its_line(record: AuditRecord) -> None:
    assert AuditRecord.from_dict(record.to_dict()) == record
    assert AuditRecord.from_json(record.to_json()) == record
    assert record.to_json().encode() == canonical(record.to_dict())


def golden() -> dict[str, Any]:
    line: dict[str, Any] = json.loads(GOLDEN[0])
    return line


def without(path: str) -> dict[str, Any]:
    line = golden()
    *parents, name = path.split(".")
    target = line
    for parent in parents:
        target = target[parent]
    del target[name]
    return line


def changed(path: str, value: object) -> dict[str, Any]:
    line = golden()
    *parents, name = path.split(".")
    target = line
    for parent in parents:
        target = target[parent]
    target[name] = value
    return line


@pytest.mark.parametrize(("line", "problem"), [
    pytest.param(without("decision_id"), "lacks ['decision_id']", id="a missing field"),
    pytest.param(without("request.resources"), "request lacks ['resources']", id="a missing request field"),
    pytest.param(changed("status", "200"), "status is not of type int", id="a status that is text"),
    pytest.param(changed("status", True), "status is not of type int", id="a status that is true"),
    pytest.param(changed("decision", "maybe"), "'maybe' is not a valid AuditOutcome", id="an unknown decision"),
    pytest.param(changed("request.action", "erase"), "'erase' is not a valid Action", id="an unknown action"),
    pytest.param(changed("request.listing", None), "request.listing is not of type bool", id="a null listing"),
    pytest.param(changed("request.listing", 1), "request.listing is not of type bool", id="a listing that is 1"),
    pytest.param(changed("caller", None), "caller is not an object", id="no caller object"),
    pytest.param({"checkpoint": {}, "prev": "0" * 64, "hash": "1" * 64}, "the line lacks ['caller', ",
                 id="a checkpoint line"),
])
def test_a_line_that_is_not_a_record_is_refused(line: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match="not an audit record") as excinfo:
        AuditRecord.from_dict(line)
    assert problem in str(excinfo.value)


@pytest.mark.parametrize("path", ["extra", "caller.name", "request.target"])
def test_a_field_a_newer_proxy_writes_is_ignored(path: str) -> None:
    """Forward compatibility: an older reader reads a newer log's lines, as it reads them without the field."""
    line = changed(path, {"new": True})
    assert AuditRecord.from_dict(line) == AuditRecord.from_dict(golden())


def test_a_line_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(ValueError, match="not a JSON object"):
        AuditRecord.from_json("[1, 2]")


def test_every_engine_outcome_is_a_recorded_outcome() -> None:
    assert {AuditOutcome.of(o).value for o in Outcome} == {o.value for o in Outcome}
    assert {o.value for o in AuditOutcome} == {o.value for o in Outcome} | {"error"}


@pytest.mark.parametrize(("outcome", "refusal", "expected"), [
    pytest.param(None, None, AuditOutcome.DENY, id="no decision, no refusal"),
    pytest.param(None, Unauthenticated("no token"), AuditOutcome.DENY, id="refused before the policy"),
    pytest.param(None, InternalError("broken"), AuditOutcome.ERROR, id="a server error before the policy"),
    pytest.param(Outcome.ALLOW, None, AuditOutcome.ALLOW, id="allowed and answered"),
    pytest.param(Outcome.ALLOW, UpstreamTimeout("slow"), AuditOutcome.ERROR, id="allowed, then failed"),
    pytest.param(Outcome.DRY_RUN_DENY, None, AuditOutcome.DRY_RUN_DENY, id="a dry-run refusal"),
    pytest.param(Outcome.DRY_RUN_DENY, UpstreamTimeout("slow"), AuditOutcome.ERROR, id="dry-run, then failed"),
    pytest.param(Outcome.DENY, AccessDenied("no"), AuditOutcome.DENY, id="denied"),
])
def test_outcome_of(
    policy: Policy, outcome: Outcome | None, refusal: RequestRefused | None, expected: AuditOutcome,
) -> None:
    decision = None
    if outcome is not None:
        request = parse(S3, "GET", "/mail-eu-dublin/k").request
        decided = decide(policy, "IE", request)
        decision = Decision(outcome, decided.deciding, decided.checks, decided.policy_version)
    assert outcome_of(decision, refusal) is expected


def test_the_deciding_access_is_the_one_the_decision_names(policy: Policy) -> None:
    # An American copying out of Dublin: refused at the source, which the line names.
    parsed = parse(S3, "PUT", "/mail-us-east/x", **{"x-amz-copy-source": "/mail-eu-dublin/a"})
    decision = decide(policy, "US", parsed.request)
    assert str(deciding_access(decision, parsed).resource) == "s3://mail-eu-dublin/a"  # type: ignore[union-attr]
    assert deciding_access(None, parsed) == parsed.request.accesses[0]
    assert deciding_access(None, None) is None
