"""A real web page in headless Chromium, using the storage through the real proxy (moto behind it).

The page (tests/browser/upload.html) is served from an origin of its own, so everything it asks the proxy is
cross-origin and the browser itself enforces CORS: a preflight for the token header, and an answer the page may
read only if the proxy's Access-Control-* headers allow it. The page uploads a file with a presigned POST form
(boto3's generate_presigned_post) and reads it back with fetch(), as an Irish user (allowed) and as a US user
(refused, readably, with nothing reaching the storage server). What it saw is read from its DOM; a screenshot
of it after each case is kept in $BAILIWICK_TEST_ARTIFACTS (default test-artifacts/browser/).

The browser is Debian's chromium with its chromedriver, driven by Selenium's Python client. Nothing is
downloaded: the driver's path is given, so Selenium Manager is never asked, and SE_OFFLINE forbids it the
network anyway. Without them the test is skipped, or fails when BAILIWICK_REQUIRE_CLIENTS=1 (scripts/test).
"""

from __future__ import annotations

import functools
import json
import os
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, replace
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError

from proxy.harness import ProxyThread
from tests.conftest import ROOT, make_token, proxy_config, s3_client
from tests.support.recorder import Recorder
from tests.support.records import written_records
from tests.support.serve import wait_until
from tests.test_client_matrix import need

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

PAGES = Path(__file__).resolve().parent / "browser"
BUCKET = "browser-web"
WAIT_SECONDS = 20


def _artifacts() -> Path:
    return Path(os.environ.get("BAILIWICK_TEST_ARTIFACTS") or ROOT / "test-artifacts" / "browser")


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """The page's own requests are no news."""


@pytest.fixture(scope="module")
def page_origin() -> Iterator[str]:
    """tests/browser/ served on a port of its own: the page's origin is not the proxy's."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(PAGES)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def _policy(origin: str) -> str:
    return f"""\
datasets:
  - name: web-eu
    region: eu-west-1
    resources: [s3://{BUCKET}]
    rules:
      - allow: [read, list, write]
        from: [IE]
    cors:
      - allowed_origins: [{origin}]
        allowed_methods: [GET, PUT, POST, HEAD]
        allowed_headers: [x-bailiwick-token, content-type]
        expose_headers: [ETag]
        max_age_seconds: 600
"""


@pytest.fixture(scope="module")
def browser_audit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("browser-audit") / "audit.jsonl"


@pytest.fixture(scope="module")
def web_proxy(recorder: Recorder, direct: Any, page_origin: str, browser_audit: Path,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyThread]:
    folder = tmp_path_factory.mktemp("browser-policy")
    (folder / "web.yaml").write_text(_policy(page_origin), encoding="utf-8")
    direct.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    running = ProxyThread(replace(proxy_config(recorder.url, browser_audit), policies=folder)).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def driver() -> Iterator[WebDriver]:
    """One headless Chromium for the module, Debian's, through Debian's chromedriver."""
    # scripts/test installs them (Debian's chromium and chromium-driver); missing, they fail the run there.
    chromium, chromedriver = need("chromium"), need("chromedriver")
    if os.environ.get("BAILIWICK_REQUIRE_CLIENTS") == "1":
        from selenium import webdriver
    else:
        webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    with pytest.MonkeyPatch.context() as env:
        # Selenium Manager (which can download browsers and drivers) is skipped when the driver's path is
        # given, as here; should it run anyway, offline mode forbids it any download.
        env.setenv("SE_OFFLINE", "true")
        env.setenv("SE_AVOID_STATS", "true")
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1100,700", "--no-first-run", "--disable-extensions"):
            options.add_argument(argument)   # no sandbox: as root (CI) Chromium refuses to start its own
        browser = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    try:
        browser.set_page_load_timeout(WAIT_SECONDS)
        yield browser
    finally:
        browser.quit()


@dataclass(frozen=True)
class Case:
    jurisdiction: str
    upload: bool            # a presigned POST form first, or an object put straight into the storage
    form_key: str           # the form's key field (S3 substitutes ${filename}); for a put, the key itself
    filename: str

    @property
    def key(self) -> str:
        return self.form_key.replace("${filename}", self.filename)


def _show(driver: WebDriver, origin: str, name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Open the page with `params`, wait for it to finish, keep its screenshot; what it saw."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{origin}/upload.html?" + urllib.parse.urlencode({"case": json.dumps(params)}))
    result = WebDriverWait(driver, WAIT_SECONDS).until(
        lambda d: d.find_element(By.CSS_SELECTOR, '#result[data-state="done"]'))
    seen: dict[str, Any] = json.loads(result.text)
    folder = _artifacts()
    folder.mkdir(parents=True, exist_ok=True)
    shot = folder / f"{name}.png"
    shot.unlink(missing_ok=True)
    assert driver.save_screenshot(str(shot))
    assert shot.stat().st_size > 0
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return seen


def _stored(direct: Any, key: str) -> bytes | None:
    try:
        return bytes(direct.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    except ClientError as err:
        if err.response["Error"]["Code"] != "NoSuchKey":
            raise
        return None


@pytest.mark.parametrize("case", [
    pytest.param(Case("IE", False, "page/hello-ie.txt", ""), id="ie-fetch"),
    pytest.param(Case("US", False, "page/hello-us.txt", ""), id="us-fetch"),
    pytest.param(Case("IE", True, "uploads/fixed-ie.txt", "report.txt"), id="ie-upload"),
    pytest.param(Case("IE", True, "uploads/${filename}", "report-ie.txt"), id="ie-upload-filename-key"),
    pytest.param(Case("US", True, "uploads/fixed-us.txt", "report.txt"), id="us-upload"),
    pytest.param(Case("US", True, "uploads/${filename}", "report-us.txt"), id="us-upload-filename-key"),
])
def test_a_web_page_uploads_and_reads_through_the_proxy_under_cors(
    request: pytest.FixtureRequest, driver: WebDriver, page_origin: str, web_proxy: ProxyThread,
    recorder: Recorder, direct: Any, browser_audit: Path, case: Case,
) -> None:
    name = request.node.callspec.id
    text = f"Quarterly report ({name}), {case.jurisdiction} office\nfigures: 1, 2, 3\n"
    allowed = case.jurisdiction == "IE"
    signer = s3_client(web_proxy.url)
    params: dict[str, Any] = {
        "label": f"{name}: a user in {case.jurisdiction}", "proxy": web_proxy.url,
        "token": make_token(case.jurisdiction), "text": text, "filename": case.filename, "post": None,
        # What S3 wants of a browser, made by the application's server for the proxy's address: a signed URL and a
        # signed form (boto3's, with the test's storage credentials). The token is what the proxy wants.
        "get_url": signer.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": case.key},
                                                 ExpiresIn=300),
    }
    if case.upload:
        post = signer.generate_presigned_post(Bucket=BUCKET, Key=case.form_key, ExpiresIn=300)
        params["post"] = {"url": post["url"], "fields": post["fields"]}
    else:
        direct.put_object(Bucket=BUCKET, Key=case.key, Body=text.encode())
    mark, lines = recorder.mark(), len(written_records(browser_audit))

    seen = _show(driver, page_origin, name, params)

    steps = {step["step"]: step for step in seen["steps"]}
    assert set(steps) == ({"upload", "download"} if case.upload else {"download"}), seen
    upstream = recorder.since(mark)
    if not allowed:
        # Whatever the page saw: nothing of the refused user's reached the storage server (preflights neither).
        assert upstream == b""
        if case.upload:
            assert _stored(direct, case.key) is None
    for step in steps.values():
        # Read by the page: the proxy's CORS headers came with every answer, refusals too, or fetch() had failed.
        assert "error" not in step, step
    status, code = (200, None) if allowed else (403, "AccessDenied")
    if case.upload:
        upload = steps["upload"]
        if allowed:
            # S3's answer to a form upload without success_action_status: 204, no body.
            assert (upload["status"], upload["code"], upload["body"]) == (204, None, ""), upload
            assert _stored(direct, case.key) == text.encode()   # exactly the file's bytes, under its key
            assert b"POST /" + BUCKET.encode() in upstream
        else:
            assert (upload["status"], upload["code"]) == (status, code), upload
            assert f"<Code>{code}</Code>" in upload["body"]
        _audited(browser_audit, lines, "POST", case, code)
    download = steps["download"]
    if allowed:
        assert (download["status"], download["code"], download["body"]) == (200, None, text), download
        # ETag: exposed to the page by the dataset's cors rule (moto's own CORS answer is never passed on).
        assert download["etag"] == direct.head_object(Bucket=BUCKET, Key=case.key)["ETag"]
    else:
        assert (download["status"], download["code"]) == (status, code), download
        assert f"<Code>{code}</Code>" in download["body"]
    _audited(browser_audit, lines, "GET", case, code)
    # The browser asked first (the token header is no CORS-safelisted one), whoever the user: answered by the
    # policy, without identity and without the storage server.
    preflight = _line(browser_audit, lines, "OPTIONS", f"s3://{BUCKET}/{case.key}")
    assert (preflight["request"]["operation"], preflight["decision"], preflight["rule"]) == (
        "CorsPreflight", "allow", "cors #1")


def _line(audit: Path, after: int, method: str, resource: str | None = None) -> dict[str, Any]:
    """The one audit line of a `method` request (to `resource`) among those written after the first `after`."""
    def found() -> list[dict[str, Any]]:
        return [r for r in written_records(audit)[after:]
                if r["request"]["method"] == method and resource in (None, r["request"]["resource"])]

    wait_until(lambda: bool(found()), timeout=5)
    [line] = found()
    return line


def _audited(audit: Path, after: int, method: str, case: Case, code: str | None) -> None:
    """The audit line of the page's `method` request (after the first `after` lines) says what the page saw."""
    line = _line(audit, after, method)
    assert (line["decision"], line["error_code"], line["dataset"], line["caller"]["jurisdiction"]) == (
        "deny" if code else "allow", code, "web-eu", case.jurisdiction)
    assert line["request"]["resource"] == f"s3://{BUCKET}/{case.key}"   # the key S3 stores, ${filename} replaced
