"""bench/where.py: each sampled stack goes to the phase of the request it was spent on."""

from __future__ import annotations

import pytest

from bench.where import phase, shares

LOOP = "_run_module_as_main (<frozen runpy>:198);run (asyncio/runners.py:190);Runner.run (asyncio/runners.py:118)"
HANDLER = f"{LOOP};RequestHandler._handle_request (aiohttp/web_protocol.py:577);Gateway.handle (proxy/gateway.py:316)"


@pytest.mark.parametrize(("stack", "expected"), [
    (f"{HANDLER};Upstream.forward (proxy/upstream/client.py:144);Connection.write (proxy/upstream/connection.py:335)",
     "upstream exchange"),
    # A library below the proxy's deepest frame is that frame's phase.
    (f"{HANDLER};Gateway._finish (proxy/gateway.py:436);Recorder.record (proxy/recording.py:117);"
     "Metrics.request (proxy/metrics.py:270);Histogram.observe (prometheus_client/metrics.py:681)",
     "audit line and metrics"),
    (f"{HANDLER};Evaluator.evaluate (proxy/evaluate.py:150);parse (proxy/s3/request.py:10);"
     "__init__ (<string>:6)", "S3 request parsing"),
    (f"{HANDLER};Evaluator.evaluate (proxy/evaluate.py:150);Policy.decide (proxy/policy/engine.py:80)",
     "policy decision"),
    (f"{HANDLER};Evaluator.evaluate (proxy/evaluate.py:150)", "evaluation, other"),
    (f"{HANDLER};Identify.caller (proxy/identity/jwt.py:50);decode (jwt/api_jwt.py:10)",
     "identity (token or signature check)"),
    # The handler calling a library itself: the library is named.
    (f"{HANDLER};StreamResponse.prepare (aiohttp/web_response.py:464)", "aiohttp: the answer's head and body"),
    (f"{HANDLER};_connection_named (proxy/tags.py:126)", "gateway and the proxy's other request handling"),
    (HANDLER, "gateway and the proxy's other request handling"),
    (f"{LOOP};RequestHandler.data_received (aiohttp/web_protocol.py:446)",
     "aiohttp: reading the request, and the answer after the handler"),
    ("Thread._bootstrap (threading.py:1002);AuditLog._run (proxy/audit/writer.py:403)", "audit writer thread"),
    (LOOP, "event loop and other"),
    # Frames of different moments (a stack read while it changed) start nowhere a stack starts.
    ("Upstream._exchange (proxy/upstream/client.py:188);Connection.write (proxy/upstream/connection.py:335)",
     "unreadable: a stack that changed while it was read"),
])
def test_a_stack_goes_to_its_phase(stack: str, expected: str) -> None:
    assert phase(stack.split(";")) == expected


def test_shares_add_the_counts_of_py_spys_raw_lines() -> None:
    raw = (f"{HANDLER};Policy.decide (proxy/policy/engine.py:80) 3\n"
           f"{HANDLER};Policy.decide (proxy/policy/engine.py:81) 2\n"
           f"{LOOP} 5\n"
           "not a sample line\n")
    assert shares(raw) == {"policy decision": 5, "event loop and other": 5}
