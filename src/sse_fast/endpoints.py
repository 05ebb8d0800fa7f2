"""What each route answers, independent of the transport that carries it.

Every engine (the ASGI app, the native uvloop server) asks :class:`Endpoints`
the same questions — may this request subscribe, and as whom; what does this
push body mean; what are the figures — and gets the same answers, errors and
headers.  Only streaming and socket handling differ between engines.  Which
request goes to which endpoint is the route table's business
(:mod:`sse_fast.routes`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from . import json_text
from ._core import check_single_line
from .access_log import AccessLog
from .auth import JWTAuth, Principal, UidResolver, check_push_token, query_uid
from .config import DEFAULT_MAX_BODY, MAX_PUSH_EVENTS
from .errors import (
    HTTPError,
    HubOverloadedError,
    InvalidEventError,
    SSEFastError,
    TooManyRecipientsError,
)
from .event import Event
from .hub import Hub, HubClosedError, HubFullError, Subscriber, SubscriberSink
from .metrics import render_metrics
from .openapi import ApiSettings, SubscriberAuth, openapi_document
from .origins import check_same_origin
from .request import Request
from .responses import Headers, Response
from .routes import Route
from .stores.base import StoreUnavailableError

STREAM_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
PREFLIGHT_HEADERS: Headers = [
    (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
    (b"access-control-allow-headers", b"Authorization, Content-Type, Last-Event-ID, Event-Type"),
    (b"access-control-max-age", b"600"),
]
RETRY_SOON: Headers = [(b"retry-after", b"1")]
JSON_CONTENT_TYPE = (b"content-type", b"application/json")
PUSHED_BODY = b'{"code":0,"msg":"ok","data":{"ids":%b}}'
"""The answer to an accepted push, around its ids: what ``Response.json`` gives, without the dict."""


@dataclass(slots=True, frozen=True)
class Subscription:
    """Who subscribes, to what, resuming from where (``None``: not resuming), until when (Unix
    seconds), and the request."""

    uid: str
    event_type: str | None
    last_event_id: str | None
    expires_at: float | None = None
    request: Request | None = field(default=None, compare=False, repr=False)


class Endpoints:
    """The edge's HTTP behaviour over one hub: auth, CORS, push decoding, figures, health.

    ``resolve_uid`` maps a request to a user id (default :func:`query_uid`;
    use :class:`~sse_fast.auth.JWTAuth` for tokens).  ``push_token``, when
    set, is required as ``Authorization: Bearer`` on ``/push``, ``/stats``
    and ``/metrics``.  ``cors_origins`` lists the origins allowed to
    subscribe and push from a browser (``"*"`` for any); a push from a page
    of any other origin is refused with 403 (:mod:`sse_fast.origins`).
    ``access_log``,
    when given, hears of every subscription the hub drops; the engines begin
    each request's record (:meth:`AccessLog.begin`) and end it
    (:meth:`request_done`).
    """

    def __init__(
        self,
        hub: Hub,
        *,
        resolve_uid: UidResolver = query_uid,
        push_token: str | None = None,
        cors_origins: Sequence[str] = (),
        max_body: int = DEFAULT_MAX_BODY,
        access_log: AccessLog | None = None,
    ) -> None:
        self.hub = hub
        self.resolve_uid = resolve_uid
        self.push_token = push_token
        self.cors_origins = frozenset(cors_origins)
        self.max_body = max_body
        self.access_log = access_log
        if access_log is not None:
            access_log.attach(hub)

    # --------------------------------------------------------------- errors

    def error(self, request: Request, exc: HTTPError) -> Response:
        """The error answer; the access log's line (when it is on) will carry its reason."""
        if request.log is not None:
            request.log.error = exc.reason
        return Response.error(exc, self.cors_headers(request))

    def refuse(self, request: Request, exc: HTTPError) -> Response:
        """:meth:`error`, for an engine that answers it itself: the access log hears of it."""
        response = self.error(request, exc)
        self.request_done(request, response.status)
        return response

    def request_done(self, request: Request, status: int) -> None:
        """The answer to ``request`` went out: its access log line (a no-op unless the log is on;
        once per request, however many times it is called)."""
        if request.log is not None and self.access_log is not None:
            self.access_log.request_done(request, status)

    def cors_headers(self, request: Request) -> Headers:
        origin = request.header(b"origin")
        if not origin or not self.cors_origins:
            return []
        if origin in self.cors_origins:
            return [
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"access-control-allow-credentials", b"true"),
                (b"vary", b"Origin"),
            ]
        if "*" in self.cors_origins:
            return [(b"access-control-allow-origin", b"*")]
        return []

    def preflight(self, request: Request) -> Response:
        cors = self.cors_headers(request)
        return Response(204, b"", [*cors, *PREFLIGHT_HEADERS] if cors else [])

    # ------------------------------------------------------------ subscribe

    async def subscription(self, request: Request) -> Subscription:
        """Authenticate a subscribe request and read its options (raises HTTPError).

        ``Last-Event-ID`` (or ``?last_event_id=``, percent-decoded) is UTF-8, as
        browsers and EventSource clients send it.  Bytes that are not UTF-8
        are kept as lone surrogates (``surrogateescape``): no event id holds
        one, so the hub answers ``reset`` with ``malformed_id``.  The event-type
        filter follows the rule of event types (:func:`check_single_line`).
        """
        resolved = self.resolve_uid(request)
        if not isinstance(resolved, (str, Principal)):
            resolved = await resolved
        if isinstance(resolved, str):
            uid, expires_at = resolved, None
        else:
            uid, expires_at = resolved.uid, resolved.expires_at
        raw_type = request.query_bytes("event_type") or request.header_bytes(b"event-type") or None
        event_type = None if raw_type is None else _event_type_filter(raw_type)
        raw_id = request.header_bytes(b"last-event-id")
        if raw_id is None:
            raw_id = request.query_bytes("last_event_id")
        last_event_id = None if raw_id is None else raw_id.decode("utf-8", "surrogateescape")
        return Subscription(uid, event_type, last_event_id, expires_at, request=request)

    def open_subscription(self, wanted: Subscription, sink: SubscriberSink) -> Subscriber:
        """Register ``sink`` with the hub, or raise the 503 a full or closing hub calls for."""
        try:
            sub = self.hub.subscribe(
                wanted.uid,
                sink,
                event_type=wanted.event_type,
                resume=wanted.last_event_id is not None,
                expires_at=wanted.expires_at,
            )
        except HubFullError as exc:
            raise HTTPError(503, f"connections: {exc}", [(b"retry-after", b"5")]) from None
        except HubClosedError:
            raise HTTPError(503, "server: shutting down", [(b"retry-after", b"1")]) from None
        request = wanted.request
        if request is not None and request.log is not None and self.access_log is not None:
            self.access_log.subscription_opened(request, sub, wanted.last_event_id)
        return sub

    def stream_headers(self, request: Request) -> Headers:
        return STREAM_HEADERS + self.cors_headers(request)

    # ----------------------------------------------------------------- push

    def check_push(self, request: Request) -> None:
        """What can be refused before the body is read: another site's page, the token, a declared size."""
        if request.log is not None:
            request.log.kind = "push"
        check_same_origin(request, self.cors_origins)
        check_push_token(request, self.push_token)
        declared = request.header(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise HTTPError(400, "content-length: not an integer") from None
            if size > self.max_body:
                raise HTTPError(413, f"body: larger than {self.max_body} bytes")

    def body_too_large(self) -> HTTPError:
        return HTTPError(413, f"body: larger than {self.max_body} bytes")

    async def push(self, request: Request, body: bytes) -> Response:
        """Decode ``{"uids": [...], "events": [...]}`` and push it; nothing is sent on any error.

        A push over the hub's ``max_recipients`` is refused with 413 as soon
        as the lengths of its lists are known, before its events are built.
        """
        events, uids = decode_push(body, self.hub.max_recipients)
        if request.log is not None:
            request.log.fields = {
                "events": len(events),
                "uids": len(uids) if uids else 0,
                "recipients": len(events) * (len(uids) if uids else 1),
            }
        try:
            ids = await self.hub.push(events, uids)
        except TooManyRecipientsError as exc:
            raise too_many_recipients(exc.recipients, exc.limit) from None
        except HubClosedError:
            raise HTTPError(503, "server: shutting down", [(b"retry-after", b"1")]) from None
        except HubOverloadedError:
            raise HTTPError(
                503, "push: the fan-out is behind, nothing was accepted; try again", RETRY_SOON
            ) from None
        except StoreUnavailableError:  # the details (hosts, ports) go to the log and /stats only
            raise HTTPError(503, "store: unavailable, nothing was accepted; try again", RETRY_SOON) from None
        except SSEFastError as exc:
            if isinstance(exc, ValueError):  # the push itself is wrong: names the field and the rule
                raise HTTPError(400, str(exc)) from None
            raise  # anything else is ours: a 500
        cors = self.cors_headers(request) if self.cors_origins else ()
        return Response(200, PUSHED_BODY % orjson.dumps(ids), [JSON_CONTENT_TYPE, *cors])

    # -------------------------------------------------------------- figures

    def stats(self, request: Request) -> Response:
        check_push_token(request, self.push_token)
        return Response.json(200, self.hub.snapshot(), self.cors_headers(request))

    def metrics(self, request: Request) -> Response:
        check_push_token(request, self.push_token)
        return Response(
            200,
            render_metrics(self.hub.snapshot()).encode(),
            [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")],
        )

    def healthz(self, request: Request) -> Response:
        """Liveness: the process serves streams.  Not the store: a load balancer that
        pulled every node whenever Redis blinked would cut every subscriber off."""
        if self.hub.closing:
            raise HTTPError(503, "server: shutting down")
        return Response.json(200, {"status": "ok", "connections": self.hub.connections})

    def readyz(self, request: Request) -> Response:
        """Readiness: pushes can be accepted now (the store answers, not shutting down)."""
        hub = self.hub
        if hub.closing:
            raise HTTPError(503, "server: shutting down", RETRY_SOON)
        if hub.store_error is not None:  # details in /stats, which needs the token
            raise HTTPError(503, "store: unavailable", RETRY_SOON)
        return Response.json(200, {"status": "ready", "connections": hub.connections})

    # ---------------------------------------------------------- description

    def openapi(self, request: Request, routes: Iterable[Route]) -> Response:
        """The OpenAPI document of ``routes`` as served here: this configuration, this mount point."""
        return Response.json(200, openapi_document(routes, self.api_settings(request.root_path)))

    def api_settings(self, root_path: str = "") -> ApiSettings:
        """What the API description states of this configuration."""
        subscribers: SubscriberAuth = "custom"
        jwt_cookie = None
        if self.resolve_uid is query_uid:
            subscribers = "uid"
        elif isinstance(self.resolve_uid, JWTAuth):
            subscribers = "jwt"
            jwt_cookie = self.resolve_uid.cookie
        return ApiSettings(
            push_token=self.push_token is not None,
            subscribers=subscribers,
            max_body=self.max_body,
            root_path=root_path,
            max_recipients=self.hub.max_recipients,
            jwt_cookie=jwt_cookie,
        )


def _event_type_filter(raw: bytes) -> str:
    """A subscriber's event type (UTF-8), or HTTPError 400 when no event could have it."""
    try:
        event_type = raw.decode()
    except UnicodeDecodeError:
        raise HTTPError(400, "event_type: must be UTF-8") from None
    try:
        check_single_line(event_type, "event_type")
    except InvalidEventError as exc:
        raise HTTPError(400, str(exc)) from None
    return event_type


def too_many_recipients(recipients: int, limit: int) -> HTTPError:
    return HTTPError(413, f"push: {recipients} recipients (events x uids) is over --max-recipients {limit}")


def decode_push(body: bytes, max_recipients: int | None = None) -> tuple[list[Event], list[Any] | None]:
    """The push API's JSON body as events and uids; HTTPError 400 naming the field otherwise,
    413 when it has more than ``max_recipients`` (events x uids; a broadcast one per event).

    Integers beyond 64 bits are decoded exactly (:func:`sse_fast.json_text.loads`).
    """
    try:
        payload = json_text.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HTTPError(400, f"body: invalid JSON ({exc})") from None
    if not isinstance(payload, dict):
        raise HTTPError(400, "body: must be a JSON object")
    unknown = set(payload) - {"uids", "events"}
    if unknown:
        raise HTTPError(400, f"{sorted(unknown)[0]}: unknown field")
    raw_events = payload.get("events")
    if not isinstance(raw_events, list):
        raise HTTPError(400, "events: required, a list of events")
    if not raw_events:
        raise HTTPError(400, "events: must contain at least one event")
    if len(raw_events) > MAX_PUSH_EVENTS:
        raise HTTPError(400, f"events: at most {MAX_PUSH_EVENTS} per push")
    uids = payload.get("uids")
    if uids is not None and not isinstance(uids, list):
        raise HTTPError(400, "uids: must be a list of strings")
    recipients = len(raw_events) * (len(uids) if uids else 1)
    if max_recipients is not None and recipients > max_recipients:
        raise too_many_recipients(recipients, max_recipients)
    try:
        events = [Event.from_json(obj, i) for i, obj in enumerate(raw_events)]
    except InvalidEventError as exc:
        raise HTTPError(400, str(exc)) from None
    return events, uids
