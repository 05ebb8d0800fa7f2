"""What each route takes and answers, stated once for the API description (``GET /openapi.json``).

Every :class:`~sse_fast.routes.Route` carries an :class:`Operation`: its
parameters, its request body, the answers it can give and the kind of
credentials it asks for.  :mod:`sse_fast.openapi` turns the route table into
an OpenAPI 3.1 document from these, adding what follows from the server's
configuration (the push token, subscriber JWTs, ``--max-body``, the mount
point), so a route cannot exist without its description and the description
cannot drift from the settings.

The statuses listed here are those the endpoints (:mod:`sse_fast.endpoints`,
:mod:`sse_fast.auth`) and the engines really answer; every error is the edge's
JSON error format (:data:`ERROR`).  The push body's schema states exactly what
:func:`sse_fast.endpoints.decode_push` and the hub accept: schemathesis checks
both directions against a live server (tests/test_openapi_fuzz.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .config import MAX_PUSH_EVENTS

Schema = dict[str, Any]
"""A JSON Schema (2020-12, as OpenAPI 3.1 uses it)."""

Auth = Literal["public", "push", "subscriber", "viewer"]
"""Which credentials an operation asks for (:mod:`sse_fast.openapi` states them per configuration):

- ``public``: none;
- ``push``: the push token as ``Authorization: Bearer`` (never the query string), when the server has one;
- ``subscriber``: who subscribes: ``?uid=`` (or ``X-User-Id``), or a JWT whose ``sub`` is the uid;
- ``viewer``: the push token when there is one, else a subscriber JWT when subscribers use them, else none.
"""

JSON_MEDIA = "application/json"
EVENT_STREAM = "text/event-stream"
RETRY_AFTER = "Retry-After"


@dataclass(frozen=True, slots=True)
class Parameter:
    """A query parameter or request header (``where`` is ``"query"`` or ``"header"``)."""

    name: str
    where: Literal["query", "header"]
    description: str
    schema: Schema | None = None
    """Default: a string."""


@dataclass(frozen=True, slots=True)
class Answer:
    """One status an operation can answer.

    ``schema`` names an entry of :data:`SCHEMAS` or is a schema of its own; an
    error status (4xx, 5xx) always has the JSON error format, with ``code``
    equal to the status.  ``headers`` names entries of :data:`HEADERS` that
    the answer always carries.
    """

    status: int
    description: str
    media_type: str = JSON_MEDIA
    schema: str | Schema | None = None
    headers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Operation:
    """What one route takes and answers.

    ``body`` names the schema of a JSON request body (bounded by
    ``--max-body``: the document adds its 413 and 408); ``auth`` adds the
    credentials and their 400/401; every operation may also answer 500 and,
    on the native engine, 431.  ``streams`` marks a 200 that is an endless
    ``text/event-stream`` (``x-streaming`` in the document: fuzzers leave it
    out).
    """

    summary: str
    answers: tuple[Answer, ...]
    description: str = ""
    parameters: tuple[Parameter, ...] = ()
    body: str | None = None
    auth: Auth = "public"
    streams: bool = False
    tag: str = "edge"


# ------------------------------------------------------------------ schemas

FIELD_LINE_REFUSED = "[\\u0000-\\u001f\\u007f-\\u009f\\u2028\\u2029]"
NO_LINE_BREAK: Schema = {"not": {"type": "string", "pattern": FIELD_LINE_REFUSED}}
"""A text that goes on an SSE field line: no control character (Unicode Cc: CR, LF and NUL
among them) and no line or paragraph separator, which would end or cut the line for some reader."""

COUNT: Schema = {"type": "integer", "minimum": 0}

STATS_PROPERTIES: dict[str, Schema] = {
    "connections": COUNT | {"description": "open subscriber connections"},
    "users": COUNT | {"description": "distinct users with a connection"},
    "events": COUNT | {"description": "events accepted"},
    "deliveries": COUNT | {"description": "events written to a subscriber"},
    "failed": COUNT | {"description": "user x event deliveries that failed"},
    "failed_by_reason": {
        "type": "object",
        "required": ["offline", "slow_consumer", "write_error"],
        "additionalProperties": COUNT,
    },
    "dropped": COUNT | {"description": "events slow consumers missed when dropped"},
    "slow_consumers": COUNT,
    "heartbeats": COUNT,
    "replayed": COUNT | {"description": "events resent from the store on reconnect"},
    "resets": COUNT | {"description": "reset events sent"},
    "store_unavailable": COUNT | {"description": "pushes refused: the store was unreachable"},
    "histories_lost": COUNT | {"description": "times the store's history was wiped"},
    "tokens_expired": COUNT | {"description": "streams ended because the subscriber's token expired"},
    "overloaded": COUNT | {"description": "broadcasts refused: the fan-out was behind"},
    "store": {
        "type": "object",
        "required": ["available", "error"],
        "additionalProperties": False,
        "properties": {"available": {"type": "boolean"}, "error": {"type": ["string", "null"]}},
    },
    "ring": {
        "type": "object",
        "required": ["frames", "bytes", "max_frames", "max_bytes"],
        "additionalProperties": False,
        "properties": {"frames": COUNT, "bytes": COUNT, "max_frames": COUNT, "max_bytes": COUNT},
    },
    "last_id": {"type": ["string", "null"], "description": "the newest event id"},
    "node": {
        "type": "object",
        "description": "this process as a node of a cluster: the figures above are its own",
        "required": ["id", "bus", "bus_error"],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string", "description": "--node-id (default: host name and pid)"},
            "bus": {
                "enum": ["in_process", "following"],
                "description": "following: it fans out every push of its Redis prefix, read from the stream",
            },
            "bus_error": {"type": ["string", "null"], "description": "why it cannot follow the stream now"},
        },
    },
    "cluster": {
        "type": "object",
        "description": (
            "the nodes on this Redis prefix and what they hold: the others as they last published it "
            "(at most one lease renewal, 2 s, old), this one now; one process alone is a cluster of one"
        ),
        "required": ["nodes", "connections", "users", "by_node"],
        "additionalProperties": False,
        "properties": {
            "nodes": {
                "type": "array",
                "items": {"type": "string"},
                "description": "the nodes on this Redis prefix whose lease is current (this one included)",
            },
            "connections": {"type": "integer", "minimum": 0, "description": "open streams on all nodes"},
            "users": {
                "type": "integer",
                "minimum": 0,
                "description": "each node's distinct users, summed (a user on two nodes counts twice)",
            },
            "by_node": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "required": ["connections", "users"],
                    "additionalProperties": False,
                    "properties": {
                        "connections": {"type": "integer", "minimum": 0},
                        "users": {"type": "integer", "minimum": 0},
                    },
                },
                "description": "each node's figures by node id (one not yet published is absent)",
            },
        },
    },
}

SCHEMAS: dict[str, Schema] = {
    "Error": {
        "type": "object",
        "description": 'Every refusal and fault: `{"code": <status>, "msg": "<field>: <rule>", "data": {}}`.',
        "required": ["code", "msg", "data"],
        "additionalProperties": False,
        "properties": {
            "code": {"type": "integer", "minimum": 400, "maximum": 599, "description": "the HTTP status"},
            "msg": {"type": "string", "description": "the field and the rule it broke"},
            "data": {"type": "object", "maxProperties": 0},
        },
    },
    "PushRequest": {
        "type": "object",
        "description": (
            "Events for some users, or for everyone: without `uids` (or with `null` or `[]`) the events "
            "are broadcast. Nothing is delivered unless the whole push is accepted."
        ),
        "required": ["events"],
        "additionalProperties": False,
        "properties": {
            "uids": {
                "type": ["array", "null"],
                "items": {"type": "string", "minLength": 1},
                "description": "the users to deliver to (duplicates count once); none: everyone",
            },
            "events": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_PUSH_EVENTS,
                "items": {"$ref": "#/components/schemas/PushEvent"},
            },
        },
    },
    "PushEvent": {
        "type": "object",
        "required": ["data"],
        "additionalProperties": False,
        "properties": {
            "id": {
                "type": ["string", "null"],
                "minLength": 1,
                "maxLength": 256,
                "allOf": [NO_LINE_BREAK, {"not": {"type": "string", "pattern": "^[0-9a-z]+-[0-9]{1,19}$"}}],
                "description": (
                    "the publisher's own id: sent as the event's `id:` as given, stored with the event and "
                    "resumable (a `Last-Event-ID` naming it continues after the latest event saved with it); "
                    "not of the server's form `<epoch>-<seq>` (normally left out: the server gives one)"
                ),
            },
            "event": {
                "type": ["string", "null"],
                **NO_LINE_BREAK,
                "description": "the event type; empty or null: `message`",
            },
            "data": {"description": "any JSON value: sent as compact one-line JSON"},
        },
    },
    "PushAnswer": {
        "type": "object",
        "required": ["code", "msg", "data"],
        "additionalProperties": False,
        "properties": {
            "code": {"const": 0},
            "msg": {"const": "ok"},
            "data": {
                "type": "object",
                "required": ["ids"],
                "additionalProperties": False,
                "properties": {
                    "ids": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "the ids the events were given (`<epoch>-<seq>`), in order",
                    }
                },
            },
        },
    },
    "Stats": {
        "type": "object",
        "description": "Counters since the start, and the hub's state (every field is always there).",
        "required": list(STATS_PROPERTIES),
        "additionalProperties": False,
        "properties": STATS_PROPERTIES,
    },
    "Health": {
        "type": "object",
        "required": ["status", "connections"],
        "additionalProperties": False,
        "properties": {"status": {"const": "ok"}, "connections": COUNT},
    },
    "Ready": {
        "type": "object",
        "required": ["status", "connections"],
        "additionalProperties": False,
        "properties": {"status": {"const": "ready"}, "connections": COUNT},
    },
}

HEADERS: dict[str, dict[str, Any]] = {
    RETRY_AFTER: {
        "description": "seconds after which to try again",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    },
    "WWW-Authenticate": {
        "description": 'the scheme to authenticate with: `Bearer realm="sse_fast"`',
        "required": True,
        "schema": {"type": "string"},
    },
}

# --------------------------------------------------- the edge's operations

SHUTTING_DOWN = "`server: shutting down`"

SUBSCRIBE_OPERATION = Operation(
    summary="Subscribe to a user's events",
    description=(
        "An endless `text/event-stream`: a `: heartbeat` comment on connect (then the stream's "
        "`retry:`, `--retry-ms` spread by `--retry-jitter`) and after each quiet `--heartbeat`, "
        "then `id:`/`event:`/`data:` frames. Resuming with `Last-Event-ID` (or `?last_event_id=`) "
        "first resends what the store kept after that id; an id that cannot be resumed gets an "
        "`event: reset` first. On shutdown: `event: shutdown` repeating the stream's `retry:`. "
        "With subscriber JWTs, the stream ends with `event: token_expired` once the token's `exp` "
        "(plus `--jwt-leeway`) passes."
    ),
    parameters=(
        Parameter("event_type", "query", "deliver only events of this type"),
        Parameter("Event-Type", "header", "the same filter as a header (the query parameter wins)"),
        Parameter("last_event_id", "query", "resume after this id (the header wins)"),
        Parameter("Last-Event-ID", "header", "resume after this id, as EventSource sends it on reconnect"),
    ),
    answers=(
        Answer(200, "the stream", EVENT_STREAM, {"type": "string"}),
        Answer(
            503,
            f"`connections: ...`: `--max-connections` reached (Retry-After: 5); {SHUTTING_DOWN}; or "
            "`token: the identity provider's keys (--jwks-url) could not be fetched`",
            headers=(RETRY_AFTER,),
        ),
    ),
    auth="subscriber",
    streams=True,
    tag="subscribe",
)

PUSH_OPERATION = Operation(
    summary="Publish events to users, or to everyone",
    description=(
        "Answered once the events are accepted (validated, stored when a store is configured, in the "
        "fan-out), before they are delivered. The body is read as JSON whatever its Content-Type."
    ),
    body="PushRequest",
    answers=(
        Answer(200, "accepted: the ids the events were given", schema="PushAnswer"),
        Answer(
            400,
            "the body breaks a rule (`msg` names the field): invalid JSON, not an object, an unknown "
            "field, missing or empty `events`, more than "
            f"{MAX_PUSH_EVENTS} events, an event type or id with a control character or a line/paragraph "
            "separator, an id of the server's form or empty or over 256 characters, missing `data`, a "
            "uid that "
            "is not a non-empty string, a broadcast event larger than the fan-out ring (32 MiB); a "
            "Content-Length that is not an integer",
        ),
        Answer(
            403,
            "`origin: requests from ... are refused (cross-site)...`: sent by a web page of another "
            "origin than this edge's own or a `--cors-origin` (nothing accepted)",
        ),
        Answer(
            503,
            "nothing accepted, try again: the fan-out is behind (`push: the fan-out is behind...`), the "
            f"store cannot be reached (`store: unavailable...`), or {SHUTTING_DOWN}",
            headers=(RETRY_AFTER,),
        ),
    ),
    auth="push",
    tag="publish",
)

STATS_OPERATION = Operation(
    summary="The figures as JSON",
    answers=(Answer(200, "the figures", schema="Stats"),),
    auth="push",
    tag="figures",
)

METRICS_OPERATION = Operation(
    summary="The figures in the Prometheus text format",
    answers=(Answer(200, "Prometheus text exposition (version 0.0.4)", "text/plain", {"type": "string"}),),
    auth="push",
    tag="figures",
)

HEALTHZ_OPERATION = Operation(
    summary="Liveness: the process serves streams",
    description="Not the store: while Redis is unreachable this still answers 200 (see /readyz).",
    answers=(
        Answer(200, "serving", schema="Health"),
        Answer(503, SHUTTING_DOWN),
    ),
    tag="health",
)

READYZ_OPERATION = Operation(
    summary="Readiness: pushes can be accepted now",
    answers=(
        Answer(200, "ready", schema="Ready"),
        Answer(
            503,
            f"`store: unavailable` (the details are in /stats) or {SHUTTING_DOWN}",
            headers=(RETRY_AFTER,),
        ),
    ),
    tag="health",
)

OPENAPI_OPERATION = Operation(
    summary="This description of the HTTP API (OpenAPI 3.1)",
    description=(
        "Built from the route table: it lists the routes this server serves and reflects its "
        "configuration (push token, subscriber JWTs, `--max-body`, the mount point)."
    ),
    answers=(Answer(200, "the OpenAPI document", schema={"type": "object"}),),
    tag="meta",
)
