"""schemathesis against live servers on both engines: the edge answers as its document says.

``st run`` (as a subprocess: its own process, its own report) generates
requests for every operation of ``GET /openapi.json`` but the endless
streams (``x-streaming``): the examples of the schemas, their boundaries and
the requests that break them (coverage), then random ones (fuzzing).  Every
answer must be documented (status, content type, headers such as
``Retry-After``, body schema), no answer may be a 5xx (none is expected of a
server with a memory store and no subscribers), valid bodies must be accepted
and invalid ones refused, credentials must be enforced, other methods must get
405 with ``Allow``; and every error must be the edge's JSON error format
(tests/schemathesis_checks.py).  The streams' refusals are checked by hand
below, against the same document with the same checks.

``SSE_FAST_FUZZ_EXAMPLES`` (default 50 per operation) and ``SSE_FAST_FUZZ_SEED``
(default fixed, so that CI is repeatable) explore further.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import httpx
import jwt
import schemathesis
from schemathesis import Case, CheckFunction, Response
from schemathesis.checks import not_a_server_error

from conftest import Serve, Subscribe

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "schemathesis.toml"
CHECKS = HERE / "schemathesis_checks.py"
MAX_EXAMPLES = os.environ.get("SSE_FAST_FUZZ_EXAMPLES", "50")
SEED = os.environ.get("SSE_FAST_FUZZ_SEED", "13")
TOKEN = "fuzz-t0ken"
SECRET = "a-subscriber-jwt-secret-of-32-bytes"
OWN_SCHEMA = "GET /openapi.json"
"""schemathesis leaves out the operation that serves the schema it runs from."""


def schemathesis_run(url: str, excluded: list[str], report: Path) -> subprocess.CompletedProcess[str]:
    argv = [
        sys.executable, "-m", "schemathesis.cli", "--no-color", "--config-file", str(CONFIG),
        "run", f"{url}/openapi.json",
        "--checks", "all",
        "--header", f"Authorization: Bearer {TOKEN}",
        "--phases", "examples,coverage,fuzzing",
        "--max-examples", MAX_EXAMPLES,
        "--seed", SEED,
        "--workers", "2",
        "--suppress-health-check", "too_slow",  # a shared, noisy machine
        "--request-timeout", "30",
        "--report", "junit", "--report-junit-path", str(report),
    ]  # fmt: skip
    for path in excluded:
        argv += ["--exclude-path", path]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(CHECKS)}
    return subprocess.run(
        argv, cwd=report.parent, env=env, capture_output=True, text=True, timeout=600, check=False
    )


def readable(output: str, limit: int = 20_000) -> str:
    """schemathesis's report, with its very long lines (curl commands with 2 MB bodies) cut."""
    lines = [line if len(line) <= 400 else line[:400] + " [...]" for line in output.splitlines()]
    text = "\n".join(lines)
    return text if len(text) <= limit else "[...]\n" + text[-limit:]


def test_schemathesis_finds_nothing_the_document_does_not_say(serve: Serve, tmp_path: Path) -> None:
    server = serve("--store", "memory://?max_events=1000", "--push-token", TOKEN)
    doc = httpx.get(f"{server.url}/openapi.json", timeout=5).json()
    operations = {
        f"{method.upper()} {path}": op for path, item in doc["paths"].items() for method, op in item.items()
    }
    streams = sorted({label.split(" ", 1)[1] for label, op in operations.items() if op.get("x-streaming")})
    assert streams == ["/events", "/stats/stream"]
    report = tmp_path / "junit.xml"

    result = schemathesis_run(server.url, streams, report)

    assert result.returncode == 0, readable(result.stdout + result.stderr)
    tested = {case.get("name") for case in ET.parse(report).iter("testcase")}
    wanted = {label for label, op in operations.items() if not op.get("x-streaming")} - {OWN_SCHEMA}
    assert tested == wanted
    assert "Traceback" not in server.output()


# ---------------------------------------------- the streams' refusals, by hand


def checked(case: Case[Any], *, expect: int) -> Response:
    """Send ``case`` and hold the answer to the document with schemathesis's checks."""
    response = case.call(timeout=10)
    assert response.status_code == expect, response.text
    # A 503 here is the point of the case; the document's Retry-After is still checked.
    excluded: list[CheckFunction] | None = [not_a_server_error] if expect >= 500 else None
    case.validate_response(response, excluded_checks=excluded)
    return response


def token(sub: str, *, expires_in: float = 600) -> str:
    return jwt.encode({"sub": sub, "exp": int(time.time() + expires_in)}, SECRET, algorithm="HS256")


def test_subscribing_without_a_uid_is_refused_as_documented(serve: Serve) -> None:
    server = serve("--store", "none")
    events = schemathesis.openapi.from_url(f"{server.url}/openapi.json")["/events"]["GET"]
    assert "uid" in checked(events.Case(query={}), expect=400).json()["msg"]
    assert "uid" in checked(events.Case(query={"uid": "u" * 257}), expect=400).json()["msg"]


def test_the_streams_refusals_are_as_documented(serve: Serve, subscribe: Subscribe) -> None:
    server = serve("--store", "none", "--push-token", TOKEN, "--jwt-secret", SECRET, "--max-connections", "1")
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    events = schema["/events"]["GET"]
    stats_stream = schema["/stats/stream"]["GET"]

    # /events with --jwt-secret: no token, a wrong one, an expired one.
    checked(events.Case(query={}), expect=401)
    checked(events.Case(headers={"Authorization": "Bearer not-a-jwt"}), expect=401)
    checked(events.Case(query={"token": token("alice", expires_in=-60)}), expect=401)
    # The one connection --max-connections allows is taken: 503 with Retry-After.
    holder = subscribe(f"{server.url}/events?token={token('alice')}")
    holder.wait_subscribed()
    full = checked(events.Case(query={"token": token("bob")}), expect=503)
    assert full.headers["retry-after"] == ["5"]

    # /stats/stream with a push token: only that token opens it.
    checked(stats_stream.Case(), expect=401)
    checked(stats_stream.Case(query={"token": token("alice")}), expect=401)
