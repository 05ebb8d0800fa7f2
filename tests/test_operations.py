"""Operations, over real servers on both engines: options from the environment and from secret
files, store passwords kept out of everything the edge shows, and the access log."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import redis

from conftest import ALL_ENGINES, HOST, Serve, ServerProcess, Subscribe, free_port, unique_uid, wait_until


def serves_with_granian(server: ServerProcess) -> bool:
    return bool(httpx.get(f"{server.url}/healthz").headers.get("server") == "granian")


# ------------------------------------------------------------- environment


def test_options_come_from_the_environment_and_flags_win(
    serve: Serve, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    engine = request.node.callspec.params["serve"]
    monkeypatch.setenv("SSE_FAST_PUSH_TOKEN", "env-token")
    monkeypatch.setenv("SSE_FAST_CORS_ORIGIN", "https://a.example, https://b.example")
    monkeypatch.setenv("SSE_FAST_NO_DASHBOARD", "true")
    monkeypatch.setenv("SSE_FAST_MAX_BODY", "2000")
    monkeypatch.setenv("SSE_FAST_ENGINE", next(e for e in ALL_ENGINES if e != engine))  # the flag wins
    server = serve("--max-body", "4000", "--store", "memory://")  # the flag wins over SSE_FAST_MAX_BODY
    assert serves_with_granian(server) == (engine == "granian")
    event: list[dict[str, object]] = [{"event": "e", "data": "x" * 2500}]
    assert server.push(event).status_code == 401
    assert server.push(event, token="env-token").status_code == 200
    assert server.push([{"data": "x" * 4500}], token="env-token").status_code == 413
    for origin in ("https://a.example", "https://b.example"):
        answer = httpx.options(f"{server.url}/push", headers={"origin": origin})
        assert answer.headers["access-control-allow-origin"] == origin
    assert (
        "access-control-allow-origin"
        not in httpx.options(f"{server.url}/push", headers={"origin": "https://c.example"}).headers
    )
    assert httpx.get(f"{server.url}/").status_code == 404  # SSE_FAST_NO_DASHBOARD


def test_secrets_from_files(
    serve: Serve, subscribe: Subscribe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file, secret_file = tmp_path / "push-token", tmp_path / "jwt-secret"
    token_file.write_text("file-token\n")
    secret_file.write_text("file-jwt-secret-of-32-bytes-or-more\n")
    monkeypatch.setenv("SSE_FAST_JWT_SECRET_FILE", str(secret_file))
    server = serve("--push-token-file", str(token_file), "--store", "memory://")
    assert server.push([{"data": 1}], token="file-token").status_code == 200
    assert server.push([{"data": 1}], token="file-token\n".strip() + "x").status_code == 401
    good = jwt.encode({"sub": "alice"}, "file-jwt-secret-of-32-bytes-or-more", algorithm="HS256")
    bad = jwt.encode({"sub": "alice"}, "file-jwt-secret-of-32-bytes-or-more\n", algorithm="HS256")
    assert httpx.get(f"{server.url}/events", headers={"authorization": f"Bearer {bad}"}).status_code == 401
    reader = subscribe(f"{server.url}/events", authorization=f"Bearer {good}")
    reader.wait_subscribed()
    assert server.push([{"event": "hi", "data": 2}], ["alice"], token="file-token").status_code == 200
    assert [e.event for e in reader.wait_events(1)] == ["hi"]
    assert "file-token" not in server.output() and "file-jwt-secret" not in server.output()


# --------------------------------------------------------- store passwords

PASSWORD = "S3cretRedisPw"


class PasswordRedis:
    """A throw-away redis-server that wants a password (never the shared one)."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                HOST,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(directory),
                "--requirepass",
                PASSWORD,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self._answers, timeout=10)

    def _answers(self) -> bool:
        try:
            return bool(redis.Redis(host=HOST, port=self.port, password=PASSWORD, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


@pytest.fixture
def password_redis(tmp_path: Path) -> Iterator[PasswordRedis]:
    server = PasswordRedis(tmp_path)
    yield server
    server.stop()


def first_stats_frame(server: ServerProcess) -> str:
    """The dashboard's first ``event: stats`` frame, as the page receives it."""
    with httpx.stream("GET", f"{server.url}/stats/stream", timeout=10) as response:
        text = ""
        for chunk in response.iter_text():
            text += chunk
            if "event: stats" in text and text.endswith("\n\n"):
                return text
    raise AssertionError(f"no stats frame: {text!r}")


@pytest.mark.redis
def test_store_passwords_never_show(
    serve: Serve, subscribe: Subscribe, password_redis: PasswordRedis, tmp_path: Path
) -> None:
    url = f"redis://default:{PASSWORD}@{HOST}:{password_redis.port}/0?prefix=ops-{unique_uid()}&password={PASSWORD}"
    server = serve("--store", url, "--access-log", "--log-level", "info", "--heartbeat", "0.5")
    uid = unique_uid()
    reader = subscribe(f"{server.url}/events?uid={uid}")
    reader.wait_subscribed()
    assert server.push([{"data": 1}], [uid]).status_code == 200
    password_redis.stop()  # the store goes away under the running server
    refused = server.push([{"data": 2}], [uid])
    assert refused.status_code == 503
    wait_until(lambda: server.stats()["store"]["error"] is not None)
    shown = {
        "push answer": refused.text,
        "/stats": httpx.get(f"{server.url}/stats").text,
        "/metrics": httpx.get(f"{server.url}/metrics").text,
        "/readyz": httpx.get(f"{server.url}/readyz").text,
        "dashboard": httpx.get(f"{server.url}/").text,
        "dashboard stats": first_stats_frame(server),
        "openapi": httpx.get(f"{server.url}/openapi.json").text,
    }
    assert "Redis unavailable" in shown["/stats"] and "store" in shown["dashboard stats"]
    wait_until(lambda: "store unavailable" in server.output())  # the server's log says so...
    server.stop()
    shown["log, listening line and access log"] = server.output()
    assert "listening on" in shown["log, listening line and access log"]
    assert " push status=503 " in shown["log, listening line and access log"]
    for place, text in shown.items():
        assert PASSWORD not in text, place  # ...but never the password


# -------------------------------------------------------------- access log


def log_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


class RawSubscriber:
    """A subscriber on a raw socket, so that closing it really hangs up at once."""

    def __init__(self, server: ServerProcess, target: str) -> None:
        self.sock = socket.create_connection((HOST, server.port), timeout=10)
        self.sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        self.received = b""
        # The stream's first bytes: a heartbeat, then its retry: block.
        self.read_until(lambda: re.search(rb": heartbeat\n\nretry: \d+\n\n", self.received) is not None)

    def read_until(self, done: bytes | Callable[[], bool]) -> None:
        while not (done() if callable(done) else done in self.received):
            chunk = self.sock.recv(65536)
            assert chunk, f"closed before {done!r}: {self.received!r}"
            self.received += chunk

    def close(self) -> None:
        self.sock.close()


def test_the_access_log_in_json(serve: Serve, subscribe: Subscribe, tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    server = serve(
        "--access-log", str(path), "--log-format", "json", "--push-token", "PushT0ken", "--store", "memory://"
    )
    uid, other = unique_uid(), unique_uid()
    reader = RawSubscriber(server, f"/events?uid={uid}&event_type=news&token=QueryT0ken")
    pushed = server.push(
        [{"event": "news", "data": 1}, {"event": "news", "data": 2}], [uid, other], token="PushT0ken"
    )
    assert pushed.status_code == 200
    reader.read_until(b"data: 2\n")
    assert server.push([{"data": 1}], token="wrong").status_code == 401
    assert server.push([{"nope": 1}], token="PushT0ken").status_code == 400
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    assert httpx.get(f"{server.url}/events?token=QueryT0ken").status_code == 400
    reader.close()
    wait_until(lambda: any(line["kind"] == "close" for line in log_lines(path)))
    last = subscribe(f"{server.url}/events?uid={other}", last_event_id=pushed.json()["data"]["ids"][0])
    last.wait_events(1)  # the second event, replayed
    server.stop()

    lines = log_lines(path)
    text = path.read_text()
    assert "PushT0ken" not in text and "QueryT0ken" not in text
    for line in lines:
        assert line["time"].endswith("Z") and line["kind"] in ("push", "request", "open", "close")
        assert line["remote"].startswith("127.0.0.1:")
    pushes = [line for line in lines if line["kind"] == "push"]
    assert [p["status"] for p in pushes] == [200, 401, 400]
    ok = pushes[0]
    assert (ok["events"], ok["uids"], ok["recipients"], ok["method"], ok["path"]) == (
        2,
        2,
        4,
        "POST",
        "/push",
    )
    assert ok["duration_ms"] >= 0
    assert pushes[1]["error"].startswith("authorization:") and "events" not in pushes[1]
    requests = {(r["method"], r["path"]): r for r in lines if r["kind"] == "request"}
    assert requests[("GET", "/healthz")]["status"] == 200
    refused = requests[("GET", "/events?token=***")]
    assert refused["status"] == 400 and refused["error"].startswith("uid:")
    opens = [line for line in lines if line["kind"] == "open"]
    closes = {line["sub"]: line for line in lines if line["kind"] == "close"}
    assert [o["uid"] for o in opens] == [uid, other]
    first, second = opens
    assert first["event_type"] == "news" and first["last_event_id"] is None
    assert first["path"] == f"/events?uid={uid}&event_type=news&token=***"
    assert second["last_event_id"] == pushed.json()["data"]["ids"][0]
    assert closes[first["sub"]]["reason"] == "client_gone"
    assert closes[first["sub"]]["events"] == 2
    assert closes[first["sub"]]["duration_s"] > 0
    assert closes[second["sub"]]["reason"] == "shutdown"
    assert closes[second["sub"]]["events"] == 1
    assert not any(line["kind"] == "request" and line["path"].startswith("/events?uid=") for line in lines)
