"""Locust scenarios for an SSE edge: browsers that come and go, publishers that push.

``BrowserUser``   subscribes to ``GET /events?uid=<uid>``, stays a random while
                  (``--stay-min``..``--stay-max`` s) reading the stream with the
                  compiled ``EventParser``, disconnects, waits, and reconnects
                  with ``Last-Event-ID`` (as a browser's EventSource does).
``PublisherUser`` POSTs ``{"uids": [...], "events": [{"event": "tick", "data":
                  {"t": <time>, "n": <n>}}]}`` to ``/push``: broadcasts and
                  unicasts to random uids, ``--push-rate`` per publisher.

What lands in locust's statistics:

- ``GET /events (connect)``: time to the response head of ``/events``;
- ``SSE event``: one entry per live event, its "response time" is the
  publish-to-receive latency in ms (``t`` in the data, both ends on this machine);
- ``SSE resent``: events older than the connection (replayed after Last-Event-ID);
- ``SSE heartbeat``: comments; ``SSE stream`` failures: stalls, broken streams;
- ``POST /push broadcast`` and ``POST /push unicast``: push round trips.

Pass/fail: when locust quits, the exit code is set to 1 if the failure ratio is
above ``--max-fail-ratio``, or the 95th percentile of ``SSE event`` latency is
above ``--max-event-p95`` ms, or that of the pushes above ``--max-push-p95`` ms.

Headless, bounded run (see the README section in the module's report)::

    ulimit -n 20000
    locust -f loadtest/locustfile.py --headless -H http://127.0.0.1:8080 \\
        -u 300 -r 50 --run-time 60s --uids 1000 --publishers 4 --push-rate 5 \\
        --csv build/locust/sse --html build/locust/sse.html \\
        --max-fail-ratio 0.01 --max-event-p95 1000 --max-push-p95 250
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import gevent
import orjson
from locust import FastHttpUser, HttpUser, between, events, task
from locust.env import Environment

from sse_fast._core import EventParser

log = logging.getLogger("sse_locust")


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    g = parser.add_argument_group("SSE scenario")
    g.add_argument("--uids", type=int, default=1000, env_var="SSE_UIDS", help="user id space (0..N-1)")
    g.add_argument("--stay-min", type=float, default=5.0, env_var="SSE_STAY_MIN", help="seconds")
    g.add_argument("--stay-max", type=float, default=30.0, env_var="SSE_STAY_MAX", help="seconds")
    g.add_argument("--publishers", type=int, default=2, env_var="SSE_PUBLISHERS", help="publisher users")
    g.add_argument(
        "--push-rate",
        type=float,
        default=5.0,
        env_var="SSE_PUSH_RATE",
        help="pushes per second per publisher",
    )
    g.add_argument(
        "--broadcast-share",
        type=float,
        default=0.2,
        env_var="SSE_BROADCAST_SHARE",
        help="fraction of pushes that are broadcasts (the rest go to 1-3 random uids)",
    )
    g.add_argument("--push-token", default="", env_var="SSE_PUSH_TOKEN", help="Bearer token for /push")
    g.add_argument(
        "--stall-timeout",
        type=float,
        default=35.0,
        env_var="SSE_STALL_TIMEOUT",
        help="seconds without a byte (not even a heartbeat) that count as a stalled stream",
    )
    g.add_argument("--max-fail-ratio", type=float, default=0.01, env_var="SSE_MAX_FAIL_RATIO")
    g.add_argument("--max-event-p95", type=float, default=1000.0, env_var="SSE_MAX_EVENT_P95", help="ms")
    g.add_argument("--max-push-p95", type=float, default=250.0, env_var="SSE_MAX_PUSH_P95", help="ms")


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    opts = environment.parsed_options
    if opts is not None:
        PublisherUser.fixed_count = max(0, opts.publishers)


@events.quitting.add_listener
def _thresholds(environment: Environment, **_: Any) -> None:
    """Set the exit code from the pass/fail thresholds."""
    opts = environment.parsed_options
    if opts is None:
        return
    stats = environment.stats
    problems = []
    if stats.total.fail_ratio > opts.max_fail_ratio:
        problems.append(f"failure ratio {stats.total.fail_ratio:.4f} > {opts.max_fail_ratio}")
    ev = stats.entries.get(("SSE event", "SSE"))
    if ev is not None and ev.num_requests:
        p95 = ev.get_response_time_percentile(0.95)
        if p95 > opts.max_event_p95:
            problems.append(f"SSE event p95 {p95:.0f} ms > {opts.max_event_p95:.0f} ms")
    elif stats.total.num_requests:
        problems.append("no SSE event was received")
    for name in ("POST /push broadcast", "POST /push unicast"):
        e = stats.entries.get((name, "POST"))
        if e is not None and e.num_requests:
            p95 = e.get_response_time_percentile(0.95)
            if p95 > opts.max_push_p95:
                problems.append(f"{name} p95 {p95:.0f} ms > {opts.max_push_p95:.0f} ms")
    if problems:
        for p in problems:
            log.error("threshold failed: %s", p)
        environment.process_exit_code = 1
    else:
        log.info("all thresholds met")
        environment.process_exit_code = 0


class BrowserUser(HttpUser):
    """A browser tab: subscribe, stay a while, leave, come back with Last-Event-ID."""

    weight = 1
    wait_time = between(0.5, 3.0)  # away between two visits

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        self.uid = str(random.randrange(opts.uids if opts else 1000))
        self.last_event_id = ""

    def _fire(self, name: str, ms: float, length: int = 0, exc: BaseException | None = None) -> None:
        self.environment.events.request.fire(
            request_type="SSE",
            name=name,
            response_time=ms,
            response_length=length,
            exception=exc,
            context={},
        )

    @task
    def visit(self) -> None:
        opts = self.environment.parsed_options
        stay = random.uniform(opts.stay_min, opts.stay_max) if opts else 10.0
        stall = opts.stall_timeout if opts else 35.0
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        started = time.time()
        try:
            resp = self.client.get(
                f"/events?uid={self.uid}",
                headers=headers,
                stream=True,
                timeout=(5.0, stall),
                name="/events (connect)",
                catch_response=True,
            )
        except Exception as exc:  # catch_response records it; keep the user alive
            log.debug("connect failed: %r", exc)
            return
        with resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}")
                return
            resp.success()
            parser = EventParser(self.last_event_id)
            comments = 0
            try:
                with gevent.Timeout(stay, False):  # leave after `stay` seconds
                    raw = resp.raw
                    while True:
                        # read1: whatever has arrived (chunked or not), not a full buffer
                        chunk = raw.read1(65536)
                        if not chunk:
                            break
                        now = time.time()
                        for ev in parser.feed(chunk):
                            try:
                                t = float(orjson.loads(ev.data)["t"])
                            except (ValueError, KeyError, TypeError):
                                self._fire("SSE other", 0, len(ev.data))
                                continue
                            name = "SSE resent" if t < started else "SSE event"
                            self._fire(name, max(0.0, (now - t) * 1000), len(ev.data))
                        while parser.comments > comments:
                            comments += 1
                            self._fire("SSE heartbeat", 0)
                    # the server ended the stream before we left
                    self._fire(
                        "SSE stream",
                        (time.time() - started) * 1000,
                        exc=ConnectionError("server closed the stream"),
                    )
            except Exception as exc:  # stalled (read timeout) or broken stream
                self._fire("SSE stream", (time.time() - started) * 1000, exc=exc)
            finally:
                self.last_event_id = parser.last_event_id


class PublisherUser(FastHttpUser):
    """A backend that pushes broadcasts and unicasts at ``--push-rate`` per second."""

    weight = 1  # ignored: fixed_count (from --publishers) decides
    fixed_count = 2

    def on_start(self) -> None:
        self.n = 0
        self.next_at = time.perf_counter()
        opts = self.environment.parsed_options
        self.headers = {"Content-Type": "application/json"}
        if opts is not None and opts.push_token:
            self.headers["Authorization"] = f"Bearer {opts.push_token}"

    def wait_time(self) -> float:
        opts = self.environment.parsed_options
        rate = opts.push_rate if opts else 5.0
        self.next_at += 1.0 / rate
        return max(0.0, self.next_at - time.perf_counter())

    @task
    def push(self) -> None:
        opts = self.environment.parsed_options
        uids_space = opts.uids if opts else 1000
        share = opts.broadcast_share if opts else 0.2
        self.n += 1
        event = {"event": "tick", "data": {"t": time.time(), "n": self.n}}
        if random.random() < share:
            uids: list[str] = []
            name = "POST /push broadcast"
        else:
            uids = [str(random.randrange(uids_space)) for _ in range(random.randint(1, 3))]
            name = "POST /push unicast"
        body = orjson.dumps({"uids": uids, "events": [event]})
        with self.client.post(
            "/push", data=body, headers=self.headers, name=name, catch_response=True
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"status {resp.status_code}: {resp.text[:200] if resp.text else ''}")
                return
            try:
                code = orjson.loads(resp.content or b"{}").get("code")
            except ValueError:
                code = None
            if code != 0:
                resp.failure(f"answer code {code!r}")
