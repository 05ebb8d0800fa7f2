"""The dashboard in a real headless Chromium, against a real ``sse-fast serve``.

What only a browser shows: the page's own code runs under its
Content-Security-Policy, its ``EventSource`` streams update the figures, the
form's ``fetch`` to ``/push`` comes back as an event on the page, and after the
server is killed and started again the *same* ``EventSource`` objects
reconnect by themselves (resuming the events stream with ``Last-Event-ID``
from the SQLite history).

Marked ``browser``.  Without a Chromium the tests skip, except under CI
(``CI`` set), where a missing browser fails them: ``.ci/run`` installs it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from _chromium import Chromium, chromium_or_skip
from conftest import Serve, ServerProcess, Subscribe

pytestmark = pytest.mark.browser

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Chromium]:
    chromium = Chromium(chromium_or_skip(), tmp_path)
    yield chromium
    chromium.close()


def text(browser: Chromium, element_id: str) -> str:
    return str(browser.evaluate(f"document.getElementById({json.dumps(element_id)}).textContent"))


def state(browser: Chromium) -> dict[str, object]:
    value: dict[str, object] = browser.evaluate("JSON.parse(JSON.stringify(window.sseDashboard))")
    return value


def wait_text(browser: Chromium, element_id: str, expected: str, timeout: float = 20.0) -> None:
    element = f"document.getElementById({json.dumps(element_id)})"
    browser.wait_for(f"{element}.textContent === {json.dumps(expected)}", timeout)


def submit_push(browser: Chromium, event: str, data: str, to: str = "me") -> None:
    """Fill the page's form and press Send, as a user would."""
    browser.evaluate(
        f"""(() => {{
            document.getElementById('push-event').value = {json.dumps(event)};
            document.getElementById('push-data').value = {json.dumps(data)};
            document.getElementById('push-to').value = {json.dumps(to)};
            document.getElementById('push-send').click();
        }})()"""
    )


def received(browser: Chromium, data: str) -> list[dict[str, str]]:
    events: list[dict[str, str]] = browser.evaluate(
        f"sseDashboard.received.filter((e) => e.data === {json.dumps(data)})"
    )
    return events


def no_page_errors(browser: Chromium) -> None:
    assert browser.exceptions == []
    assert not [line for line in browser.console if "Content Security Policy" in line or "javascript" in line]


def test_figures_update_a_pushed_event_arrives_and_the_page_reconnects_after_a_crash(
    serve: Serve, subscribe: Subscribe, browser: Chromium, tmp_path: Path
) -> None:
    server: ServerProcess = serve()  # SQLite history (the default), so the events stream can resume
    browser.open(f"{server.url}/")

    # The figures come and keep coming.
    browser.wait_for("window.sseDashboard && sseDashboard.frames >= 1")
    wait_text(browser, "status", "live")
    uptime = text(browser, "uptime")
    browser.wait_for(f"document.getElementById('uptime').textContent !== {json.dumps(uptime)}", 15)
    wait_text(browser, "connections", "1")  # the page's own subscription as user "dashboard"
    other = subscribe(f"{server.url}/events?uid=someone-else")
    wait_text(browser, "connections", "2")
    wait_text(browser, "users", "2")
    assert text(browser, "viewers") == "1"
    assert text(browser, "rss").endswith("MiB")

    # The form posts to /push; the event comes back on the page's own stream.
    submit_push(browser, "greeting", '{"hello": "browser"}')
    browser.wait_for("document.getElementById('push-result').textContent.startsWith('Accepted as ')")
    browser.wait_for("""sseDashboard.received.some((e) => e.data === '{"hello":"browser"}')""")
    [first] = received(browser, '{"hello":"browser"}')
    assert first["event"] == "greeting"
    assert first["id"] in text(browser, "push-result")
    browser.wait_for("document.getElementById('log').textContent.includes('{\"hello\":\"browser\"}')")
    wait_text(browser, "total-events", "1")
    wait_text(browser, "total-deliveries", "1")
    browser.wait_for("sseDashboard.history.some((v) => v > 0)", 10)  # the chart's series saw it
    assert other.events == []  # sent to "this page" only

    shot = browser.screenshot(tmp_path / "dashboard.png")
    assert shot.read_bytes().startswith(PNG_MAGIC) and shot.stat().st_size > 10_000

    # Crash and restart on the same port: the same EventSource objects reconnect.
    before = state(browser)
    last = before["last"]
    assert isinstance(last, dict)
    server.kill()
    wait_text(browser, "status", "reconnecting", timeout=15)
    server.start()
    answer = server.push([{"event": "greeting", "data": {"after": "restart"}}], uids=["dashboard"])
    assert answer.status_code == 200
    browser.wait_for(f"sseDashboard.last.uptime < {last['uptime']}", 30)  # figures from the new process
    wait_text(browser, "status", "live")
    frames = int(browser.evaluate("sseDashboard.frames"))
    browser.wait_for(f"sseDashboard.frames > {frames}", 15)  # and they keep coming
    browser.wait_for("""sseDashboard.received.some((e) => e.data === '{"after":"restart"}')""", 30)

    after = state(browser)
    assert after["created"] == {"stats": 1, "events": 1}, after  # no stream was re-created by the page
    opened = after["opened"]
    assert isinstance(opened, dict)
    assert opened["stats"] >= 2 and opened["events"] >= 2, after
    # The events stream resumed where it was: nothing twice, nothing lost.
    assert len(received(browser, '{"hello":"browser"}')) == 1
    assert len(received(browser, '{"after":"restart"}')) == 1
    wait_text(browser, "connections", "1")  # the page's subscription is back (the other reader's is not)

    browser.screenshot(tmp_path / "dashboard-reconnected.png")
    no_page_errors(browser)


def test_with_a_push_token_the_page_shows_nothing_until_it_is_given(serve: Serve, browser: Chromium) -> None:
    server: ServerProcess = serve("--store", "none", "--push-token", "s3cret")
    browser.open(f"{server.url}/dashboard")

    browser.wait_for("!document.getElementById('auth').hidden")
    wait_text(browser, "status", "token needed")
    assert not browser.evaluate("document.getElementById('push-token-field').hidden")
    assert browser.evaluate("document.getElementById('jwt-field').hidden")
    assert state(browser)["created"] == {"stats": 0, "events": 0}
    assert text(browser, "connections") == "\N{EN DASH}"  # no figure yet

    # A wrong token: the stream is refused (401) and the page asks again.
    browser.evaluate(
        "document.getElementById('push-token').value = 'wrong';"
        "document.getElementById('auth-form').requestSubmit();"
    )
    browser.wait_for("document.getElementById('auth-reason').textContent.includes('refused')")
    browser.wait_for("!document.getElementById('auth').hidden")
    assert state(browser)["frames"] == 0

    browser.evaluate(
        "document.getElementById('push-token').value = 's3cret';"
        "document.getElementById('auth-form').requestSubmit();"
    )
    browser.wait_for("sseDashboard.frames >= 1")
    wait_text(browser, "status", "live")
    assert browser.evaluate("document.getElementById('auth').hidden")

    # The form sends the token as a Bearer header.
    submit_push(browser, "ping", '"pong"')
    browser.wait_for("""sseDashboard.received.some((e) => e.data === '"pong"')""")
    no_page_errors(browser)


@pytest.mark.redis
def test_a_node_of_a_cluster_shows_the_cluster_with_a_row_per_node(
    browser: Chromium, subscribe: Subscribe, tmp_path: Path
) -> None:
    from test_cluster import start_cluster, stop_cluster

    cluster = start_cluster(tmp_path)
    try:
        granian, native = cluster.nodes
        browser.open(f"{granian.url}/dashboard")
        browser.wait_for("window.sseDashboard && sseDashboard.frames >= 1")
        browser.wait_for("!document.getElementById('cluster').hidden")
        wait_text(browser, "cluster-nodes", "2")
        reader = subscribe(f"{native.url}/events?uid=elsewhere")
        reader.wait_subscribed()
        wait_text(browser, "cluster-connections", "2")  # the page's own stream here, one there
        rows = browser.evaluate(
            "[...document.querySelectorAll('#cluster-rows tr')].map((tr) =>"
            " [...tr.children].map((td) => td.textContent))"
        )
        assert rows == [["granian-node (this one)", "1", "1"], ["native-node", "1", "1"]]
        no_page_errors(browser)
    finally:
        stop_cluster(cluster)


def test_a_node_alone_shows_no_cluster_panel(serve: Serve, browser: Chromium) -> None:
    server = serve("--store", "none")
    browser.open(f"{server.url}/dashboard")
    browser.wait_for("window.sseDashboard && sseDashboard.frames >= 1")
    assert browser.evaluate("document.getElementById('cluster').hidden") is True
