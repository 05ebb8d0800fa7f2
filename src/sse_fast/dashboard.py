"""A live dashboard: one HTML page, and one stats stream shared by all its viewers.

``GET /`` and ``GET /dashboard`` serve a self-contained page (inline CSS and
JavaScript, no build step, nothing fetched from elsewhere).  The page follows
``GET /stats/stream``: an SSE stream of ``event: stats`` frames, one a second.

The figures are computed **once** a second by **one** task, whatever the
number of viewers, and reach the viewers through a second, store-less
:class:`~sse_fast.hub.Hub` served by the same ASGI machinery as ``/events``: a
frame is encoded once and fanned out as the same bytes, heartbeats and slow
viewers are handled by that hub's sweep, and the viewers are not counted among
the subscribers they are watching.  The task starts with the first viewer and
ends when the application's hub closes (it then says goodbye to the viewers).

A ``stats`` frame's data is :meth:`Hub.snapshot` (``connections``, ``users``,
``events``, ``deliveries``, ``failed``, ``failed_by_reason``, ``dropped``,
``slow_consumers``, ``heartbeats``, ``replayed``, ``resets``, ``ring``,
``last_id``, ``node``, ``cluster``) plus:

- ``rates``: ``events``, ``deliveries``, ``failed``, ``dropped`` per second
  over the last ``interval`` seconds;
- ``cpu_percent``: CPU time of the serving process over that interval, in
  percent of one core (above 100 when several threads are busy);
- ``rss_bytes``: its resident memory (``null`` where it cannot be read);
- ``uptime`` (seconds since the dashboard was set up with the app),
  ``interval``, ``time`` (Unix seconds) and ``viewers`` (open stats streams).

Authorisation follows the app's: with a push token, the stream needs it;
otherwise, with a subscriber resolver other than the open ``?uid=`` one (a
JWT), it needs what ``/events`` needs.  The page itself holds no figures, so
it loads without a token and asks for one.  An ``EventSource`` cannot send
``Authorization``, and the push token must never travel in a URL (access
logs, history), so the page trades the token for a **viewer pass**:
``POST /dashboard/session`` with ``Authorization: Bearer <token>`` answers
with a cookie (``HttpOnly``, ``SameSite=Strict``, ``Path`` the stats stream,
``Secure`` over HTTPS) holding an expiry and an HMAC of it under a key of
this process: it lets its holder watch the figures until then (12 hours, or
the JWT's ``exp``), nothing else, and the stream ends with ``token_expired``
when it lapses.  Scripts may still send ``Authorization: Bearer`` to the
stream itself.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import os
import re
import time
from importlib import resources
from typing import Any
from urllib.parse import urlencode

from .asgi import Receive, Scope, Send, SSEApp, send_response
from .auth import Principal, check_push_token, cookie, query_uid
from .errors import HTTPError
from .event import Event
from .hub import Hub
from .operations import EVENT_STREAM, JSON_MEDIA, RETRY_AFTER, Answer, Operation
from .origins import check_same_origin
from .request import Request
from .responses import Response

logger = logging.getLogger("sse_fast.dashboard")

STATS_EVENT = "stats"
"""Event type of the frames on ``/stats/stream``."""

PAGE_PATHS = ("/", "/dashboard")
STREAM_PATH = "/stats/stream"
SESSION_PATH = "/dashboard/session"
VIEWER_COOKIE = "sse_fast_viewer"
"""The cookie that holds a viewer pass to the stats stream."""
PASS_SECONDS = 12 * 3600
"""How long a viewer pass lasts at most."""
PUBLISHER_TASK_NAME = "sse_fast.dashboard.publisher"
VIEWER_UID = "viewer"
RATE_KEYS = ("events", "deliveries", "failed", "dropped")

PAGE_OPERATION = Operation(
    summary="The live dashboard",
    description="One self-contained page (no CDN); it asks for the token the stats stream needs.",
    answers=(Answer(200, "the page", "text/html", {"type": "string"}),),
    tag="dashboard",
)
STREAM_OPERATION = Operation(
    summary="The dashboard's stats stream",
    description=(
        f"An endless `text/event-stream` of `event: {STATS_EVENT}` frames, one a second: the /stats "
        "figures plus `rates`, `cpu_percent`, `rss_bytes`, `uptime`, `interval`, `time`, `viewers`. "
        f"Besides the credentials below, the `{VIEWER_COOKIE}` cookie that `POST {SESSION_PATH}` sets "
        "opens it (what a browser's EventSource uses); the stream then ends with `event: token_expired` "
        "when the pass lapses."
    ),
    answers=(
        Answer(200, "the stream", EVENT_STREAM, {"type": "string"}),
        Answer(
            503,
            "`server: shutting down`, or `connections: ...` (as many viewers as subscribers)",
            headers=(RETRY_AFTER,),
        ),
    ),
    auth="viewer",
    streams=True,
    tag="dashboard",
)

SESSION_OPERATION = Operation(
    summary="Trade the dashboard's token for a viewer pass to the stats stream",
    description=(
        "Send the token the stats stream needs as `Authorization: Bearer`; the answer sets the "
        f"`{VIEWER_COOKIE}` cookie (HttpOnly, SameSite=Strict, for the stats stream only), valid "
        "for 12 hours or until the JWT's `exp`. A browser's EventSource then needs no token in its URL."
    ),
    answers=(
        Answer(
            200,
            "the pass is set (`data.expires`: Unix seconds)",
            JSON_MEDIA,
            {"type": "object", "required": ["code", "msg", "data"]},
        ),
        Answer(403, "`origin: ...`: asked for by a page of another origin"),
    ),
    auth="viewer",
    tag="dashboard",
)

_AUTH_PLACEHOLDER = b"__SSE_FAST_AUTH__"


class ViewerPasses:
    """Expiring passes to the stats stream: ``<expiry>.<HMAC-SHA256 of it>`` under a key of this process.

    A restart makes every pass invalid (the page asks for a new one with the
    token it holds); changing nothing else, a pass cannot outlive its expiry
    and grants nothing but the figures.
    """

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key or os.urandom(32)

    def issue(self, expires: int) -> str:
        return f"{expires}.{self._mac(expires)}"

    def check(self, value: str | None, now: float | None = None) -> int | None:
        """The pass's expiry while it is valid, else ``None``."""
        if not value:
            return None
        text, _, mac = value.partition(".")
        if not text.isdigit() or len(text) > 12:
            return None
        expires = int(text)
        if not hmac.compare_digest(mac, self._mac(expires)):
            return None
        return expires if expires > (time.time() if now is None else now) else None

    def _mac(self, expires: int) -> str:
        digest = hmac.new(self._key, f"sse_fast viewer {expires}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class ProcessSampler:
    """CPU time and resident memory of this process, with the standard library only.

    ``/proc/self/statm`` is opened once and re-read with ``pread``: one system
    call a second.  Where it does not exist the peak RSS from ``resource`` is
    the best the standard library offers.
    """

    def __init__(self) -> None:
        self._page_size = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._statm: int | None = None
        with contextlib.suppress(OSError):
            self._statm = os.open("/proc/self/statm", os.O_RDONLY)

    @staticmethod
    def cpu_seconds() -> float:
        return time.process_time()

    def rss_bytes(self) -> int | None:
        if self._statm is not None:
            with contextlib.suppress(OSError, ValueError, IndexError):
                return int(os.pread(self._statm, 128, 0).split()[1]) * self._page_size
        try:
            import resource
        except ImportError:  # pragma: no cover - Windows
            return None
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak) if os.uname().sysname == "Darwin" else int(peak) * 1024

    def close(self) -> None:
        if self._statm is not None:
            with contextlib.suppress(OSError):
                os.close(self._statm)
            self._statm = None


class StatsSampler:
    """Turns successive hub snapshots into one stats frame (counters become rates)."""

    def __init__(self, hub: Hub, started: float, process: ProcessSampler | None = None) -> None:
        self.hub = hub
        self.started = started
        self.process = process or ProcessSampler()
        self._last_time = time.monotonic()
        self._last_cpu = self.process.cpu_seconds()
        self._last_counts = self._counts(hub.snapshot())

    @staticmethod
    def _counts(snapshot: dict[str, Any]) -> dict[str, int]:
        return {key: int(snapshot[key]) for key in RATE_KEYS}

    def sample(self, viewers: int) -> dict[str, Any]:
        """The frame for now; rates and CPU cover the time since the previous call."""
        now = time.monotonic()
        cpu = self.process.cpu_seconds()
        snapshot = self.hub.snapshot()
        counts = self._counts(snapshot)
        elapsed = max(now - self._last_time, 1e-6)
        snapshot["rates"] = {
            key: round((counts[key] - self._last_counts[key]) / elapsed, 3) for key in RATE_KEYS
        }
        snapshot["cpu_percent"] = round(100.0 * (cpu - self._last_cpu) / elapsed, 2)
        snapshot["rss_bytes"] = self.process.rss_bytes()
        snapshot["uptime"] = round(now - self.started, 3)
        snapshot["interval"] = round(elapsed, 3)
        snapshot["time"] = round(time.time(), 3)
        snapshot["viewers"] = viewers
        self._last_time, self._last_cpu, self._last_counts = now, cpu, counts
        return snapshot


class Dashboard:
    """The dashboard routes of one :class:`~sse_fast.asgi.SSEApp`; :meth:`install` adds them.

    ``interval`` is the seconds between stats frames.
    """

    def __init__(self, app: SSEApp, *, interval: float = 1.0) -> None:
        if interval <= 0:
            raise ValueError("interval: must be a positive number of seconds")
        self.app = app
        self.hub = app.hub
        self.interval = interval
        self.started = time.monotonic()
        self.viewers = Hub(
            heartbeat=app.hub.heartbeat,
            max_connections=app.hub.max_connections,
            ring_frames=64,
            ring_bytes=1024 * 1024,
        )
        # The viewers' streams go through an SSEApp of their own, so that they
        # get exactly the subscribe path of /events (sink, disconnect watch,
        # CORS, errors); its resolver is where the stats stream's auth lives.
        self._viewers_app = SSEApp(
            self.viewers,
            resolve_uid=self._authorize,
            cors_origins=tuple(app.cors_origins),
            watch_disconnect=app.watch_disconnect,
            manage_hub=False,
        )
        self._task: asyncio.Task[None] | None = None
        self._page: tuple[bytes, list[tuple[bytes, bytes]]] | None = None
        self.passes = ViewerPasses()

    def install(self) -> Dashboard:
        for path in PAGE_PATHS:
            self.app.add_route("GET", path, self.page, PAGE_OPERATION)
        self.app.add_route("GET", STREAM_PATH, self.stream, STREAM_OPERATION)
        self.app.add_route("POST", SESSION_PATH, self.session, SESSION_OPERATION)
        return self

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # ---------------------------------------------------------------- page

    async def page(self, request: Request, scope: Scope, receive: Receive, send: Send) -> None:
        if self._page is None:
            self._page = render_page(self._auth_modes())
        body, headers = self._page
        await send_response(send, Response(200, body, headers))

    def _auth_modes(self) -> list[str]:
        """What the page must ask for: a push token (stats, /push) and/or a subscriber JWT (/events)."""
        modes = []
        if self.app.push_token is not None:
            modes.append("push-token")
        if self.app.resolve_uid is not query_uid:
            modes.append("jwt")
        return modes

    # -------------------------------------------------------------- stream

    async def stream(self, request: Request, scope: Scope, receive: Receive, send: Send) -> None:
        """One viewer: handed to the viewers' app as a plain subscription.

        ``Last-Event-ID`` is dropped: stats are not history, and the store-less
        hub would answer a resume with a ``reset`` event.
        """
        await self._ensure_running()
        params = {name: value for name in ("token", "uid") if (value := request.query(name)) is not None}
        inner: dict[str, Any] = dict(scope)
        inner.update(
            path="/events",
            raw_path=b"/events",
            root_path="",
            query_string=urlencode(params).encode(),
            headers=[(k, v) for k, v in scope.get("headers") or () if bytes(k).lower() != b"last-event-id"],
        )
        await self._viewers_app(inner, receive, send)

    async def _authorize(self, request: Request) -> str | Principal:
        """A viewer pass (the cookie), else the stream's own credentials (scripts)."""
        expires = self.passes.check(cookie(request, VIEWER_COOKIE))
        if expires is not None:
            return Principal(VIEWER_UID, expires)
        if self.app.push_token is not None:
            check_push_token(request, self.app.push_token)
            return VIEWER_UID
        resolve = self.app.resolve_uid
        if resolve is query_uid:
            return VIEWER_UID
        resolved = resolve(request)
        return resolved if isinstance(resolved, (str, Principal)) else await resolved

    # -------------------------------------------------------------- session

    async def session(self, request: Request, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /dashboard/session``: the token as ``Authorization: Bearer`` buys a viewer pass cookie."""
        check_same_origin(request, self.app.cors_origins)
        now = int(time.time())
        expires = now + PASS_SECONDS
        if self.app.push_token is not None:
            check_push_token(request, self.app.push_token)
        elif self.app.resolve_uid is not query_uid:
            resolved = self.app.resolve_uid(request)
            if not isinstance(resolved, (str, Principal)):
                resolved = await resolved
            if isinstance(resolved, Principal) and resolved.expires_at is not None:
                expires = min(expires, int(resolved.expires_at))
        secure = scope.get("scheme") == "https" or (request.header(b"origin") or "").startswith("https:")
        attributes = [
            f"{VIEWER_COOKIE}={self.passes.issue(expires)}",
            f"Path={request.root_path}{STREAM_PATH}",
            f"Max-Age={max(0, expires - now)}",
            "HttpOnly",
            "SameSite=Strict",
        ]
        if secure:
            attributes.append("Secure")
        headers = [(b"set-cookie", "; ".join(attributes).encode()), (b"cache-control", b"no-store")]
        body = {"code": 0, "msg": "ok", "data": {"expires": expires}}
        await send_response(send, Response.json(200, body, headers))

    # ----------------------------------------------------------- publisher

    async def _ensure_running(self) -> None:
        if self._task is not None:
            return
        if self.hub.closing:
            raise HTTPError(503, "server: shutting down", [(b"retry-after", b"1")])
        await self.viewers.start()  # store-less: returns without suspending
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._publish(), name=PUBLISHER_TASK_NAME)

    async def _publish(self) -> None:
        """The one publisher: a frame per interval while anyone watches, until the hub closes."""
        loop = asyncio.get_running_loop()
        sampler = StatsSampler(self.hub, self.started)
        next_tick = loop.time() + self.interval
        try:
            while not self.hub.closing:
                now = loop.time()
                if now < next_tick:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self.hub.wait_closing(), next_tick - now)
                    continue
                next_tick = max(next_tick + self.interval, now + self.interval / 2)
                try:
                    frame = sampler.sample(self.viewers.connections)
                    if self.viewers.connections:
                        await self.viewers.push(Event(STATS_EVENT, frame))
                except Exception:
                    logger.exception("stats frame failed")
        finally:
            sampler.process.close()
            await self.viewers.close()

    async def close(self) -> None:
        """Stop the publisher and end the viewers' streams (it also stops by itself with the hub)."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.viewers.close()


def render_page(auth_modes: list[str]) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The page's bytes and headers; the Content-Security-Policy admits exactly its inline code."""
    html = resources.files("sse_fast").joinpath("static/dashboard.html").read_bytes()
    body = html.replace(_AUTH_PLACEHOLDER, " ".join(auth_modes).encode())
    scripts = " ".join(_hashes(body, b"script"))
    styles = " ".join(_hashes(body, b"style"))
    csp = (
        f"default-src 'none'; script-src {scripts}; style-src {styles}; connect-src 'self'; "
        "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    headers = [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"cache-control", b"no-cache"),
        (b"content-security-policy", csp.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
    ]
    return body, headers


def _hashes(html: bytes, tag: bytes) -> list[str]:
    pattern = re.compile(rb"<" + tag + rb">(.*?)</" + tag + rb">", re.DOTALL)
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(m.group(1)).digest()).decode() + "'"
        for m in pattern.finditer(html)
    ] or ["'none'"]


def install_dashboard(app: SSEApp, *, interval: float = 1.0) -> Dashboard:
    """Serve the dashboard page and stats stream from ``app``."""
    return Dashboard(app, interval=interval).install()


__all__ = ["STATS_EVENT", "Dashboard", "ProcessSampler", "StatsSampler", "install_dashboard", "render_page"]
