"""A quick load check: 1 KiB GETs with wrk, straight to moto and through bailiwick.

Not the benchmark harness (that compares against nginx with pinned CPUs);
just where a fresh build starts. Run: `python bench/quick_load.py` (needs wrk).
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import boto3
import jwt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from proxy.localstore import MotoServer, free_port

ROOT = Path(__file__).resolve().parent.parent
SIGV4 = ("AWS4-HMAC-SHA256 Credential=bench/20260101/us-east-1/s3/aws4_request, "
         "SignedHeaders=host, Signature=00")


def wrk(url: str, headers: dict[str, str], connections: int, seconds: int) -> tuple[float, str]:
    args = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout  # noqa: S603
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rate, f"non-2xx {non2xx.group(1)}" if non2xx else "all 2xx"


def main() -> int:
    seconds = int(os.environ.get("SECONDS_PER_RUN", "10"))
    secret = secrets.token_urlsafe(48)
    with MotoServer() as store, tempfile.TemporaryDirectory() as tmp:
        s3 = boto3.client("s3", endpoint_url=store.url, region_name="us-east-1",
                          aws_access_key_id="bench", aws_secret_access_key="bench")  # noqa: S106
        s3.create_bucket(Bucket="mail-eu-dublin", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        s3.put_object(Bucket="mail-eu-dublin", Key="bench/1k", Body=os.urandom(1024))
        port, admin = free_port(), free_port()
        config = Path(tmp) / "bailiwick.yaml"
        config.write_text(
            f"listen: 127.0.0.1:{port}\nadmin_listen: 127.0.0.1:{admin}\npolicies: {ROOT / 'policies'}\n"
            f"audit: {{path: {Path(tmp) / 'audit.jsonl'}}}\n"
            f"upstream: {{url: {store.url}}}\n"
            "identity:\n  jwt:\n"
            "    - {issuer: https://idp.bench, audience: bailiwick, hs256_secret_env: BENCH_SECRET}\n"
        )
        proc = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "proxy", "serve", "--config", str(config), "--log-level", "WARNING"],
            env={**os.environ, "BENCH_SECRET": secret},
        )
        try:
            for _ in range(100):
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{admin}/healthz", timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.1)
            token = jwt.encode({"iss": "https://idp.bench", "aud": "bailiwick", "sub": "bench",
                                "exp": int(time.time()) + 3600, "jurisdiction": "IE"}, secret, algorithm="HS256")
            path = "/mail-eu-dublin/bench/1k"
            print(f"1 KiB GETs, wrk -t2, {seconds}s per run")
            for connections in (10, 64):
                direct = wrk(store.url + path, {"Authorization": SIGV4}, connections, seconds)
                proxied = wrk(f"http://127.0.0.1:{port}{path}",
                              {"Authorization": SIGV4, "X-Bailiwick-Token": token}, connections, seconds)
                print(f"  c={connections:<3} moto direct: {direct[0]:8.0f} req/s ({direct[1]})   "
                      f"through bailiwick: {proxied[0]:8.0f} req/s ({proxied[1]})")
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
