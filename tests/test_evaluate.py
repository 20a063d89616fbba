"""The request path's ordering rules, as the outcome of `proxy.evaluate` states them: no socket, no storage server.

100 Continue only once the request may go on; a request refused whatever
its body says refused before a byte of it is read; Host and target
rewritten (re-sign mode) before the signed tag binds them; the tags set
before the proxy signs.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import jwt
import pytest
from multidict import CIMultiDict, CIMultiDictProxy, MultiMapping

from proxy.api import UpstreamSigner, make_api
from proxy.config import Config, S3Settings, SigningConfig, load_config
from proxy.domain import Caller
from proxy.errors import AccessDenied, BadRequest, InternalError
from proxy.evaluate import Evaluator, Forward, ReadBody, Refuse, RequestHead, check_version, expects_continue
from proxy.identity.resolver import Identified
from proxy.policy.loader import load_policy
from proxy.s3.host import HostReader
from proxy.s3.resign import CredentialSource, RequestSigner
from proxy.tags import TagSigner
from tests.conftest import ARCHIVE, DUBLIN, EXAMPLE_POLICIES, US
from tests.s3.test_resign import ENV, PROXY_SECRET, TAG_KEY, verify

CONFIG = load_config(None, environ={})
POLICY = load_policy(EXAMPLE_POLICIES)
DECISION_ID = "d" * 32
DELETE_BODY = b"<Delete><Object><Key>alice/1.eml</Key></Object></Delete>"


def head(method: str, target: str, *, host: str = "localhost", body: bool = False, expect: bool = False,
         version: tuple[int, int] = (1, 1), **headers: str) -> RequestHead:
    fields = CIMultiDict({"Host": host, **headers})
    if expect:
        fields["Expect"] = "100-continue"
    proxied = CIMultiDictProxy(fields)
    return RequestHead(method, target, version, proxied, "127.0.0.1", body, expects_continue(version, proxied))


def caller(jurisdiction: str) -> Identified:
    return Identified(Caller("client-1", jurisdiction, "127.0.0.1", "jwt"), frozenset())


def evaluator(config: Config = CONFIG, resigner: UpstreamSigner | None = None,
              signer: TagSigner | None = None) -> Evaluator:
    return Evaluator(config, make_api(config), signer, resigner)


def s3_resigner() -> RequestSigner:
    """Re-sign mode's signer with the proxy's keys from a stand-in environment, virtual hosts under localhost."""
    settings = S3Settings(virtual_hosts=("localhost",), sign=SigningConfig())
    return RequestSigner(SigningConfig(), "eu-west-1", CredentialSource(SigningConfig(), environ=ENV),
                         hosts=HostReader(settings))


@pytest.mark.parametrize(("request_head", "jurisdiction", "kind", "send_continue"), [
    # An upload: 100 Continue comes with the decision to forward, never with a refusal.
    (head("PUT", f"/{DUBLIN}/k", body=True, expect=True), "IE", Forward, True),
    (head("PUT", f"/{DUBLIN}/k", body=True, expect=True), "US", Refuse, None),
    (head("PUT", f"/{DUBLIN}/k", body=True), "IE", Forward, False),
    # HTTP/1.0 has no 100 Continue, whatever it sends.
    (head("PUT", f"/{DUBLIN}/k", body=True, expect=True, version=(1, 0)), "IE", Forward, False),
    (head("GET", f"/{DUBLIN}/k", expect=True), "IE", Forward, False),
    # A body the decision depends on: 100 Continue before it is read, so that the caller sends it.
    (head("POST", f"/{DUBLIN}?delete", body=True, expect=True), "IE", ReadBody, True),
    (head("POST", f"/{DUBLIN}?delete", body=True), "IE", ReadBody, False),
    # ... unless every key it could name is refused: refused unread, no 100 Continue.
    (head("POST", f"/{DUBLIN}?delete", body=True, expect=True), "US", Refuse, None),
    # CreateBucket's body only adds a check: refused without it, refused with any body.
    (head("PUT", f"/{DUBLIN}", body=True, expect=True), "US", Refuse, None),
    (head("PUT", f"/{US}/k", body=True, expect=True), "US", Forward, True),
])
def test_what_happens_before_the_body(request_head: RequestHead, jurisdiction: str, kind: type,
                                      send_continue: bool | None) -> None:
    outcome = evaluator().evaluate(request_head, caller(jurisdiction), POLICY, DECISION_ID)
    assert type(outcome) is kind
    if isinstance(outcome, Refuse):
        assert isinstance(outcome.error, AccessDenied)
        assert outcome.decision is not None
        assert not outcome.decision.forwarded
    else:
        assert outcome.send_continue is send_continue


def test_a_body_read_for_the_decision_is_forwarded_as_read_without_another_continue() -> None:
    ev = evaluator()
    request_head = head("POST", f"/{DUBLIN}?delete", body=True, expect=True)
    pending = ev.evaluate(request_head, caller("IE"), POLICY, DECISION_ID)
    assert isinstance(pending, ReadBody)
    assert pending.limit == CONFIG.s3.max_delete_body_bytes
    body = bytearray(DELETE_BODY)
    outcome = ev.evaluate_body(request_head, caller("IE"), POLICY, DECISION_ID, pending, body)
    assert isinstance(outcome, Forward)
    assert outcome.body is body
    assert not outcome.stream_body
    assert not outcome.send_continue
    assert [str(a.resource) for a in outcome.parsed.request.accesses] == [f"s3://{DUBLIN}/alice/1.eml"]


@pytest.mark.parametrize(("body", "error", "decided"), [
    # Keys under ie/ may be deleted from Ireland, the rest of the bucket is in no dataset.
    (b"<Delete><Object><Key>ie/1</Key></Object><Object><Key>us/1</Key></Object></Delete>", AccessDenied, True),
    (b"<Delete><Object>", BadRequest, False),      # unreadable: refused before the policy is asked
])
def test_a_body_read_for_the_decision_can_still_refuse(body: bytes, error: type, decided: bool) -> None:
    ev = evaluator()
    request_head = head("POST", f"/{ARCHIVE}?delete", body=True)
    pending = ev.evaluate(request_head, caller("IE"), POLICY, DECISION_ID)
    assert isinstance(pending, ReadBody)
    outcome = ev.evaluate_body(request_head, caller("IE"), POLICY, DECISION_ID, pending, bytearray(body))
    assert isinstance(outcome, Refuse)
    assert isinstance(outcome.error, error)
    assert outcome.parsed is not None
    assert (outcome.decision is not None) is decided
    assert (outcome.decided_in is not None) is decided


@pytest.mark.parametrize(("request_head", "parsed"), [
    (head("GET", f"/{DUBLIN}/k", Connection="Host"), False),                 # before the request is read
    (head("GET", f"/{DUBLIN}/k", Upgrade="websocket"), False),
    (head("GET", "/k", host=f"{DUBLIN}.localhost"), False),                  # virtual-hosted, not configured
])
def test_unreadable_requests_are_refused_before_the_policy(request_head: RequestHead, parsed: bool) -> None:
    outcome = evaluator().evaluate(request_head, caller("IE"), POLICY, DECISION_ID)
    assert isinstance(outcome, Refuse)
    assert isinstance(outcome.error, BadRequest)
    assert (outcome.parsed is not None) is parsed
    assert outcome.decision is None


@pytest.mark.parametrize(("version", "accepted"), [((1, 0), True), ((1, 1), True), ((0, 9), False), ((2, 0), False)])
def test_only_http_1_is_accepted(version: tuple[int, int], accepted: bool) -> None:
    if accepted:
        check_version(head("GET", "/", version=version))
    else:
        with pytest.raises(BadRequest):
            check_version(head("GET", "/", version=version))


@pytest.mark.parametrize(("target", "filtered"), [("/", True), (f"/{DUBLIN}", False), (f"/{DUBLIN}/k", False)])
def test_only_an_account_listing_is_answered_through_the_filter(target: str, filtered: bool) -> None:
    outcome = evaluator().evaluate(head("GET", target), caller("IE"), POLICY, DECISION_ID)
    assert isinstance(outcome, Forward)
    assert (outcome.rewrite is not None) is filtered


@dataclass
class ScriptedSigner:
    """An upstream signer that notes what it saw of the headers at each call."""

    calls: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def check(self, target: str, headers: MultiMapping[str]) -> None:
        self.calls.append(("check", dict(headers)))

    def rewrite(self, headers: CIMultiDict[str], target: str) -> str:
        self.calls.append(("rewrite", dict(headers)))
        headers["Host"] = "storage.test"
        return "/bucket" + target

    def sign(self, method: str, target: str, headers: CIMultiDict[str]) -> None:
        self.calls.append(("sign", dict(headers)))
        headers["Authorization"] = "proxy"


@pytest.mark.parametrize("jurisdiction", ["IE", "US"])
def test_the_upstream_signer_rewrites_before_the_tags_and_signs_after_them(jurisdiction: str) -> None:
    scripted = ScriptedSigner()
    ev = evaluator(resigner=scripted, signer=TagSigner(TAG_KEY, 60))
    outcome = ev.evaluate(head("PUT", f"/{DUBLIN}/k", body=True), caller(jurisdiction), POLICY, DECISION_ID)
    steps = [name for name, _ in scripted.calls]
    if jurisdiction == "US":   # refused: checked, never rewritten nor signed
        assert isinstance(outcome, Refuse)
        assert steps == ["check"]
        return
    assert isinstance(outcome, Forward)
    assert steps == ["check", "rewrite", "sign"]
    at_rewrite, at_sign = scripted.calls[1][1], scripted.calls[2][1]
    assert "X-Bailiwick-Tag" not in at_rewrite
    assert at_rewrite["Host"] == "localhost"
    assert at_sign["X-Bailiwick-Decision"] == DECISION_ID
    assert "X-Bailiwick-Tag" in at_sign
    claims = jwt.decode(outcome.headers["X-Bailiwick-Tag"], TAG_KEY, algorithms=["HS256"])
    assert (claims["host"], claims["path"]) == ("storage.test", f"/bucket/{DUBLIN}/k") == (
        outcome.headers["Host"], outcome.target)
    assert outcome.headers["Authorization"] == "proxy"


@dataclass
class FailingSigner(ScriptedSigner):
    """A scripted upstream signer whose step `fails` raises what no rule expects (a bug, not a refusal)."""

    fails: str = ""

    def check(self, target: str, headers: MultiMapping[str]) -> None:
        self._fail("check")

    def rewrite(self, headers: CIMultiDict[str], target: str) -> str:
        self._fail("rewrite")
        return target

    def sign(self, method: str, target: str, headers: CIMultiDict[str]) -> None:
        self._fail("sign")

    def _fail(self, step: str) -> None:
        if step == self.fails:
            raise RuntimeError(f"{step} broke")


@pytest.mark.parametrize(("fails", "decided"), [("check", False), ("rewrite", True), ("sign", True)])
def test_an_unexpected_exception_refuses_and_keeps_what_the_audit_line_needs(
        fails: str, decided: bool, caplog: pytest.LogCaptureFixture) -> None:
    ev = evaluator(resigner=FailingSigner(fails=fails))
    outcome = ev.evaluate(head("PUT", f"/{DUBLIN}/k", body=True), caller("IE"), POLICY, DECISION_ID)
    assert isinstance(outcome, Refuse)
    assert isinstance(outcome.error, InternalError)
    assert outcome.parsed is not None
    assert (outcome.decision is not None) is decided
    assert (outcome.decided_in is not None) is decided
    assert f"{fails} broke" in caplog.text
    assert DECISION_ID in caplog.text


def test_an_unexpected_exception_in_a_body_evaluation_refuses_and_keeps_the_parsed_request(
        monkeypatch: pytest.MonkeyPatch) -> None:
    ev = evaluator()
    request_head = head("POST", f"/{ARCHIVE}?delete", body=True)
    pending = ev.evaluate(request_head, caller("IE"), POLICY, DECISION_ID)
    assert isinstance(pending, ReadBody)

    def broken(*_: object) -> None:
        raise RuntimeError("expand broke")

    monkeypatch.setattr(ev.api, "expand", broken)
    outcome = ev.evaluate_body(request_head, caller("IE"), POLICY, DECISION_ID, pending, bytearray(DELETE_BODY))
    assert isinstance(outcome, Refuse)
    assert isinstance(outcome.error, InternalError)
    assert outcome.parsed is pending.parsed


RESIGNING = replace(CONFIG, s3=replace(CONFIG.s3, virtual_hosts=("localhost",)))


@pytest.mark.parametrize(("host", "target", "forwarded_host", "forwarded"), [
    (f"{DUBLIN}.localhost", "/alice/1.eml?x-id=GetObject", "localhost", f"/{DUBLIN}/alice/1.eml?x-id=GetObject"),
    (f"{DUBLIN}.localhost:9000", "/", "localhost:9000", f"/{DUBLIN}"),
    ("localhost", f"/{DUBLIN}/alice/1.eml", "localhost", f"/{DUBLIN}/alice/1.eml"),
])
def test_in_re_sign_mode_the_tag_and_the_signature_bind_what_is_forwarded(
    host: str, target: str, forwarded_host: str, forwarded: str,
) -> None:
    ev = evaluator(RESIGNING, resigner=s3_resigner(), signer=TagSigner(TAG_KEY, 60))
    outcome = ev.evaluate(head("GET", target, host=host, Authorization="Bearer t"), caller("IE"), POLICY,
                          DECISION_ID)
    assert isinstance(outcome, Forward)
    assert (outcome.headers["Host"], outcome.target) == (forwarded_host, forwarded)
    claims = jwt.decode(outcome.headers["X-Bailiwick-Tag"], TAG_KEY, algorithms=["HS256"])
    assert (claims["host"], claims["path"]) == (outcome.headers["Host"], outcome.target)
    assert verify("GET", outcome.target, outcome.headers, PROXY_SECRET)


def test_in_re_sign_mode_a_presigned_url_is_refused_before_the_decision() -> None:
    outcome = evaluator(RESIGNING, resigner=s3_resigner()).evaluate(
        head("GET", f"/{DUBLIN}/k?X-Amz-Signature=abc"), caller("IE"), POLICY, DECISION_ID)
    assert isinstance(outcome, Refuse)
    assert isinstance(outcome.error, BadRequest)
    assert outcome.parsed is not None
    assert outcome.decision is None
