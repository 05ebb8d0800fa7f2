"""HTTPS and HTTP/2 in a real headless Chromium, against ``sse-fast serve --tls-cert`` on granian.

Why HTTP/2 matters to browsers: over HTTP/1.1 a browser opens at most 6
connections per host and every ``EventSource`` holds one, so a page (or a
user's tabs together) with more streams than that waits; over HTTP/2 they
share one connection.  A page from the edge opens 10 streams: with HTTP/2
(the default with TLS) all 10 receive a broadcast, with ``--http 1`` only 6
do.  ``EventSource.close()`` resets its HTTP/2 stream: the server must
notice within a heartbeat although the connection stays open.

The certificate is made at test time; Chromium trusts exactly its key
(``--ignore-certificate-errors-spki-list``).  Marked ``browser``: skipped
without a Chromium, failed under CI.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from _certs import CertificateFiles, self_signed
from _chromium import Chromium, chromium_or_skip
from conftest import Serve, ServerProcess, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.engines("granian")]

STREAMS = 10
BROWSER_HTTP1_CONNECTIONS = 6
"""Chromium's (and every browser's) limit of HTTP/1.1 connections per host."""
HEARTBEAT = 1.0


def spki_hash(cert: CertificateFiles) -> str:
    """What ``--ignore-certificate-errors-spki-list`` names a key by: base64 of the SHA-256 of its SPKI."""
    public_key = x509.load_pem_x509_certificate(Path(cert.cert).read_bytes()).public_key()
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@pytest.fixture
def cert(tmp_path: Path) -> CertificateFiles:
    return self_signed(tmp_path)


@pytest.fixture
def browser(tmp_path: Path, cert: CertificateFiles) -> Iterator[Chromium]:
    chromium = Chromium(
        chromium_or_skip(), tmp_path, flags=(f"--ignore-certificate-errors-spki-list={spki_hash(cert)}",)
    )
    yield chromium
    chromium.close()


def open_streams(browser: Chromium, server: ServerProcess, count: int) -> None:
    """A page of the edge's own origin opens ``count`` EventSources, each recording what it receives."""
    browser.open(f"{server.url}/healthz")
    browser.evaluate(
        f"""(() => {{
            window.streams = [];
            for (let i = 0; i < {count}; i++) {{
                const source = new EventSource('/events?uid=page-' + i);
                const stream = {{source, open: false, got: []}};
                source.onopen = () => {{ stream.open = true; }};
                source.addEventListener('news', (e) => stream.got.push(JSON.parse(e.data)));
                window.streams.push(stream);
            }}
        }})()"""
    )


def page_protocol(browser: Chromium) -> str:
    """The protocol the page came over (its streams, same origin, share that connection)."""
    return str(browser.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol"))


@pytest.mark.parametrize(("http", "served"), [("auto", STREAMS), ("1", BROWSER_HTTP1_CONNECTIONS)])
def test_a_page_with_ten_streams_needs_http2(
    serve: Serve, cert: CertificateFiles, browser: Chromium, http: str, served: int
) -> None:
    server = serve("--store", "none", "--no-dashboard", "--http", http, *cert.serve_args)
    open_streams(browser, server, STREAMS)
    wait_until(lambda: server.stats()["connections"] == served)
    browser.wait_for(f"streams.filter((s) => s.open).length === {served}")
    assert server.push([{"event": "news", "data": "to all"}]).status_code == 200
    browser.wait_for(f"streams.filter((s) => s.got.includes('to all')).length === {served}")
    time.sleep(0.3)  # the streams left waiting (HTTP/1.1) stay waiting
    assert browser.evaluate("streams.filter((s) => s.got.length > 0).length") == served
    assert server.stats()["connections"] == served
    assert page_protocol(browser) == ("h2" if http == "auto" else "http/1.1")


def test_a_closed_http2_stream_is_noticed_within_a_heartbeat(
    serve: Serve, cert: CertificateFiles, browser: Chromium, capsys: pytest.CaptureFixture[str]
) -> None:
    server = serve("--store", "none", "--no-dashboard", "--heartbeat", str(HEARTBEAT), *cert.serve_args)
    open_streams(browser, server, 2)
    browser.wait_for("streams.every((s) => s.open)")
    wait_until(lambda: server.stats()["connections"] == 2)
    browser.evaluate("streams[1].source.close()")
    closed = time.monotonic()
    wait_until(lambda: server.stats()["connections"] == 1, timeout=HEARTBEAT, interval=0.01)
    noticed = time.monotonic() - closed
    assert server.push([{"event": "news", "data": "still"}]).status_code == 200
    browser.wait_for("streams[0].got.includes('still')")  # the other stream, on the same connection, lives on
    assert page_protocol(browser) == "h2"
    with capsys.disabled():
        print(f"\n  Chromium's closed HTTP/2 stream noticed after {noticed * 1000:.0f} ms")
