"""A browser's subscription with a cookie token, in headless Chromium, cut off at the token's ``exp``.

The page comes from a second loopback origin served by the test (another
port: another origin, the same site, as an app at ``app.example.com`` beside
an edge at ``events.example.com``).  Its server sets the subscriber token as
an ``HttpOnly; SameSite=Strict`` cookie, which the page's script cannot read;
the page opens ``new EventSource(edge, {withCredentials: true})``, which
sends the cookie only because the edge answers with the CORS credentials
headers for that origin (``--cors-origin``), and the stream ends with
``event: token_expired`` once ``exp`` passes.

Marked ``browser``; skipped without a Chromium except under CI (see
tests/test_dashboard_browser.py).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest

from _chromium import Chromium, chromium_or_skip
from conftest import Serve

pytestmark = pytest.mark.browser

SECRET = "browser-tokens-secret-0123456789abcdef"
COOKIE = "sse_token"
TOKEN_SECONDS = 3.0

PAGE = """<!doctype html>
<meta charset="utf-8"><title>app</title>
<script>
  window.got = [];
  const es = new EventSource(%(edge)s + "/events", { withCredentials: true });
  es.onopen = () => got.push("open");
  es.addEventListener("hello", (e) => got.push("hello:" + e.data));
  es.addEventListener("token_expired", () => { got.push("token_expired@" + Date.now() / 1000); es.close(); });
  es.onerror = () => got.push("error:" + es.readyState);
  window.cookieVisible = document.cookie.includes(%(cookie)s);
</script>
"""


class AppServer:
    """The app's origin: serves the page and sets the subscriber's token as an HttpOnly cookie."""

    def __init__(self, uid: str) -> None:
        self.edge = ""
        self.exp = 0.0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != "/":  # the browser's favicon request must not mint another token
                    self.send_error(404)
                    return
                owner.exp = time.time() + TOKEN_SECONDS
                token = jwt.encode({"sub": uid, "exp": owner.exp}, SECRET)
                body = (PAGE % {"edge": json.dumps(owner.edge), "cookie": json.dumps(COOKIE)}).encode()
                self.send_response(200)
                self.send_header("content-type", "text/html; charset=utf-8")
                self.send_header("content-length", str(len(body)))
                self.send_header("set-cookie", f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Chromium]:
    chromium = Chromium(chromium_or_skip(), tmp_path)
    yield chromium
    chromium.close()


@pytest.fixture
def app() -> Iterator[AppServer]:
    server = AppServer("browser-user")
    yield server
    server.close()


def test_a_page_of_an_allowed_origin_subscribes_with_a_cookie_token_and_is_cut_off_at_exp(
    serve: Serve, browser: Chromium, app: AppServer
) -> None:
    server = serve(
        "--store", "none", "--jwt-secret", SECRET, "--jwt-cookie", COOKIE,
        "--cors-origin", app.origin, "--jwt-leeway", "0",
    )  # fmt: skip
    app.edge = server.url
    browser.open(f"{app.origin}/")
    browser.wait_for("got.includes('open')", timeout=10)
    assert browser.evaluate("window.cookieVisible") is False  # HttpOnly: the script never sees the token

    assert server.push([{"event": "hello", "data": "world"}], uids=["browser-user"]).status_code == 200
    browser.wait_for("""got.includes('hello:"world"')""", timeout=10)

    browser.wait_for("got.some((g) => g.startsWith('token_expired@'))", timeout=TOKEN_SECONDS + 5)
    seen_at = time.time()  # the page's own Date.now() may run a little off the system clock
    got: list[str] = browser.evaluate("got")
    assert got[:2] == ["open", 'hello:"world"'], got
    assert got[2].startswith("token_expired@"), got
    assert app.exp <= seen_at <= app.exp + 2, (seen_at, app.exp)
    assert not [g for g in got if g.startswith("error")], got  # closed by the page, not broken
    assert server.stats()["tokens_expired"] == 1
