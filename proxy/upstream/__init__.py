"""A lean pooled HTTP/1.1 client for the one storage server behind the proxy.

Why not aiohttp's client: on this hop the proxy needs none of what makes a
general client (cookies, redirects, proxies, DNS caching, tracing, URL
handling), and its per-request objects cost more CPU than every check the
proxy makes. This package keeps only the exchange itself, shaped like httpcore:

* `connection`: one connection, an asyncio protocol with llhttp parsing the
  answers; its life (`ConnectionState`) apart from each exchange's state;
* `pool`: the kept-alive connections, bounded in all and per caller;
* `request`: the request head serialised exactly as decided, the body framed;
* `body`: the caller's body as it streams in (`BodyStream`), cut off if it stalls;
* `relay`: the answer handed back to the caller, and what moved (`Transfer`);
* `client`: `Upstream`, which the gateway calls: one exchange, from pool to relay.

Errors raised here are the proxy's own (`UpstreamFailure`, `UpstreamTimeout`);
turning them into responses is `proxy.gateway`'s job.
"""

from __future__ import annotations

from proxy.upstream.body import BodyStream
from proxy.upstream.client import Upstream
from proxy.upstream.relay import Answered, Transfer

__all__ = ["Answered", "BodyStream", "Transfer", "Upstream"]
