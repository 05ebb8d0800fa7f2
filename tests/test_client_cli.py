"""``sse-fast listen`` / ``sse-fast push`` run as subprocesses against the raw-socket server.

They run through ``python -m sse_fast.client_cli`` (the same functions the main
CLI wires in); every subprocess has a timeout.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import orjson

from _raw_sse_server import HOLD, RawServer, Reply
from test_against_raw_server import AWKWARD, AWKWARD_EVENTS, NO_CONTENT

LIMIT = 30.0
CLI = [sys.executable, "-m", "sse_fast.client_cli"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=LIMIT)


def test_listen_json_prints_one_object_per_line_and_exits_0_on_204() -> None:
    with RawServer([Reply(body=AWKWARD), NO_CONTENT]) as server:
        done = run_cli("listen", server.url, "--json", "--retry", "5")
        requests = server.wait_for_requests(2)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines(keepends=True)
    assert all(line.endswith("\n") for line in lines)
    assert [json.loads(line) for line in lines] == [
        {"event": e.event, "data": e.data, "id": e.id} for e in AWKWARD_EVENTS
    ]
    assert all(list(json.loads(line)) == ["event", "data", "id"] for line in lines)
    assert requests[1].headers["last-event-id"] == "5"


def test_listen_filters_types_sends_headers_and_last_event_id() -> None:
    body = [b"event: a\ndata: 1\n\n", b"event: b\ndata: 2\n\n", b"id: 3\nevent: c\ndata: x\ndata: y\n\n"]
    with RawServer([Reply(body=body), NO_CONTENT]) as server:
        done = run_cli(
            "listen", server.url, "--event", "a", "--event", "c", "-H", "Authorization: Bearer t0k",
            "--last-event-id", "2", "--retry", "0.05",
        )  # fmt: skip
        first = server.wait_for_requests(2)[0]
    assert done.returncode == 0, done.stderr
    assert done.stdout == "a [2]: 1\nc [3]: x\ny\n"
    assert first.headers["authorization"] == "Bearer t0k"
    assert first.headers["last-event-id"] == "2"


def test_listen_fatal_status_exits_1_with_one_line() -> None:
    with RawServer([Reply("404 Not Found", headers=[], body=[b"no such stream"])]) as server:
        done = run_cli("listen", server.url)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert "404" in done.stderr and "no such stream" in done.stderr


def test_listen_ctrl_c_exits_130_quietly() -> None:
    with RawServer([Reply(body=[b"data: hello\n\n", HOLD])]) as server:
        proc = subprocess.Popen(
            [*CLI, "listen", server.url, "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()  # flushed per line: arrives while the stream is still open
            assert json.loads(line) == {"event": "message", "data": "hello", "id": ""}
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=LIMIT)
        finally:
            proc.kill()
            proc.wait(LIMIT)
    assert proc.returncode == 130
    assert err == ""


def test_push_posts_the_body_and_prints_the_answer() -> None:
    ok = Reply(headers=[("Content-Type", "application/json")], body=[b'{"code":0,"msg":"ok","data":{}}'])
    with RawServer([ok]) as server:
        base = f"http://127.0.0.1:{server.port}"
        done = run_cli(
            "push", base, "--event", "x", "--data", '{"n": 1}', "--uid", "1", "--uid", "2",
            "--id", "e-1", "--token", "sekrit",
        )  # fmt: skip
        request = server.wait_for_requests(1)[0]
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"code": 0, "msg": "ok", "data": {}}
    assert request.line == "POST /push HTTP/1.1"
    assert request.headers["authorization"] == "Bearer sekrit"
    assert request.headers["content-type"] == "application/json"
    sent = orjson.loads(request.body)
    assert sent == {"uids": ["1", "2"], "events": [{"event": "x", "data": {"n": 1}, "id": "e-1"}]}


def test_push_keeps_an_explicit_path_and_reports_the_server_msg() -> None:
    bad = Reply(
        "400 Bad Request",
        headers=[("Content-Type", "application/json")],
        body=[b'{"code":400,"msg":"events[0].event: too long","data":{}}'],
    )
    with RawServer([bad]) as server:
        done = run_cli("push", f"http://127.0.0.1:{server.port}/api/push", "--data", '"hi"')
        request = server.wait_for_requests(1)[0]
    assert done.returncode == 1
    assert json.loads(done.stdout)["code"] == 400
    assert "events[0].event: too long" in done.stderr
    assert request.line == "POST /api/push HTTP/1.1"
    assert orjson.loads(request.body) == {"uids": [], "events": [{"event": "message", "data": "hi"}]}


def test_push_data_must_be_json() -> None:
    done = run_cli("push", "http://127.0.0.1:1", "--data", "{not json")
    assert done.returncode == 2
    assert "--data" in done.stderr and "not valid JSON" in done.stderr
