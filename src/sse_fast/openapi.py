"""The OpenAPI 3.1 document of the HTTP API, built from the route table (``GET /openapi.json``).

Each route's :class:`~sse_fast.operations.Operation` says what it takes and
answers; :func:`openapi_document` adds what the server's configuration decides
(:class:`ApiSettings`): whether a push token is required, how subscribers
authenticate, the largest push body, the mount point.  The document therefore
lists exactly the routes this server serves (the dashboard's only when it is
on) and the credentials it really asks for.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Literal

from .config import DEFAULT_MAX_BODY, DEFAULT_MAX_RECIPIENTS
from .operations import HEADERS, JSON_MEDIA, SCHEMAS, Answer, Operation, Parameter, Schema
from .routes import Route

OPENAPI_VERSION = "3.1.0"

SubscriberAuth = Literal["uid", "jwt", "custom"]

Security = list[dict[str, list[str]]]
"""An operation's security requirements: any one of them will do."""

PUSH_SECURITY: Security = [{"pushToken": []}]
SUBSCRIBER_SECURITY: Security = [{"subscriberJwt": []}, {"subscriberToken": []}]
COOKIE_SECURITY: Security = [{"subscriberCookie": []}]
SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "pushToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "the server's `--push-token`, as `Authorization: Bearer <token>`",
    },
    "subscriberJwt": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": (
            "a JWT checked with `--jwt-secret` (HS256), `--jwt-public-key` or `--jwks-url`; its `sub` "
            "claim is the uid; the stream ends with `event: token_expired` once `exp` (plus "
            "`--jwt-leeway`) passes"
        ),
    },
    "subscriberToken": {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": (
            "the subscriber JWT as `?token=` (a browser's EventSource cannot send headers; the URL, "
            "token included, ends up in access logs and history: prefer the cookie)"
        ),
    },
    "subscriberCookie": {
        "type": "apiKey",
        "in": "cookie",
        "name": "COOKIE",
        "description": "the subscriber JWT in the `--jwt-cookie` cookie (EventSource `withCredentials`)",
    },
}

UID_PARAMETERS = (
    Parameter(
        "uid",
        "query",
        "the subscriber's user id (required unless `X-User-Id` is sent)",
        {"type": "string", "minLength": 1, "maxLength": 256},
    ),
    Parameter(
        "X-User-Id", "header", "the user id, when `?uid=` is absent", {"type": "string", "maxLength": 256}
    ),
)
UID_REFUSED = Answer(400, "`uid: required (query parameter ?uid=)` or `uid: longer than 256 characters`")
PUSH_TOKEN_REFUSED = Answer(
    401,
    "`authorization: a valid push token is required (Bearer)`",
    headers=("WWW-Authenticate",),
)
JWT_REFUSED = Answer(
    401,
    "`token: required (...)`, `token: expired`, `token: invalid (...)`, `token: unknown key id ...`, "
    "`token: signed with an algorithm this key does not admit (...)`",
    headers=("WWW-Authenticate",),
)
CUSTOM_REFUSED = (
    Answer(400, "the application's subscriber resolver refused the request"),
    Answer(401, "the application's subscriber resolver refused the credentials"),
)
HEAD_TOO_LARGE = Answer(431, "`headers: ...`: a request head over 32 KiB or 100 headers (native engine)")
SERVER_FAULT = Answer(500, "`server: internal error`: a fault of the server's own (logged)")

DESCRIPTION = """\
Server-Sent Events notification edge: subscribe with `GET /events`, publish with `POST /push`.

Every refusal and fault is JSON `{"code": <status>, "msg": "<field>: <rule>", "data": {}}` with
`code` equal to the HTTP status: 400 bad input, 401 missing or wrong credentials, 404 no such path,
405 another method (with `Allow`), 413 a body over the limit, 503 try again later (with `Retry-After`,
except /healthz), 500 a fault of the server's own.

`OPTIONS` on any path is a CORS preflight: 204, with the CORS headers when the `Origin` is one of
`--cors-origin`.
"""


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """What of the server's configuration the document states.

    ``push_token``: ``/push``, ``/stats`` and ``/metrics`` require it;
    ``subscribers``: ``uid`` (``?uid=``), ``jwt`` (``--jwt-secret``) or
    ``custom`` (an application's own resolver); ``root_path``: where the app
    is mounted (the document's server URL); ``max_recipients``: the most
    recipients of one push (the hub's).
    """

    push_token: bool = False
    subscribers: SubscriberAuth = "uid"
    max_body: int = DEFAULT_MAX_BODY
    root_path: str = ""
    max_recipients: int = DEFAULT_MAX_RECIPIENTS
    jwt_cookie: str | None = None


def openapi_document(routes: Iterable[Route], settings: ApiSettings) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes`` as a server with ``settings`` serves them."""
    paths: dict[str, dict[str, Any]] = {}
    tags: dict[str, None] = {}
    schemes: dict[str, None] = {}
    for route in routes:
        operation = _operation(route, settings)
        for requirement in operation.get("security", ()):
            schemes.update(dict.fromkeys(requirement))
        tags[route.operation.tag] = None
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    components: dict[str, Any] = {"schemas": SCHEMAS, "headers": HEADERS}
    if schemes:
        components["securitySchemes"] = {name: _scheme(name, settings) for name in schemes}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "sse_fast", "version": _version(), "description": DESCRIPTION},
        "servers": [{"url": settings.root_path or "/"}],
        "tags": [{"name": tag} for tag in tags],
        "paths": paths,
        "components": components,
    }


def _operation(route: Route, settings: ApiSettings) -> dict[str, Any]:
    op = route.operation
    parameters = list(op.parameters)
    answers = list(op.answers)
    security = _security(op, settings, parameters, answers)
    if op.body is not None:
        too_large = f"`body: larger than {settings.max_body} bytes` (`--max-body`)"
        if op.body == "PushRequest":
            too_large += (
                f"; or `push: N recipients (events x uids) is over --max-recipients "
                f"{settings.max_recipients}`: more than {settings.max_recipients} events x uids, a "
                "broadcast counting one per event (nothing accepted)"
            )
        answers += [
            Answer(408, "the body did not arrive in time (`--body-timeout`)"),
            Answer(413, too_large),
        ]
    answers += [HEAD_TOO_LARGE, SERVER_FAULT]
    out: dict[str, Any] = {
        "operationId": _operation_id(route),
        "summary": op.summary,
        "tags": [op.tag],
    }
    if op.description:
        out["description"] = op.description
    if parameters:
        out["parameters"] = [_parameter(p) for p in parameters]
    if op.body is not None:
        out["requestBody"] = {
            "required": True,
            "description": f"JSON, at most {settings.max_body} bytes (`--max-body`)",
            "content": {JSON_MEDIA: {"schema": _ref(op.body)}},
        }
    out["responses"] = {str(a.status): _answer(a) for a in sorted(answers, key=lambda a: a.status)}
    out["security"] = security  # [] states "no credentials", rather than leaving it unsaid
    if op.streams:
        out["x-streaming"] = True
    return out


def _security(
    op: Operation, settings: ApiSettings, parameters: list[Parameter], answers: list[Answer]
) -> Security:
    """The operation's security requirements; adds the parameters and refusals they bring."""
    auth = op.auth
    if auth == "viewer":
        if settings.push_token:
            auth = "push"
        elif settings.subscribers != "uid":
            auth = "subscriber"
        else:
            return []
    if auth == "push":
        if not settings.push_token:
            return []
        answers.append(PUSH_TOKEN_REFUSED)
        return PUSH_SECURITY
    if auth == "subscriber":
        if settings.subscribers == "uid":
            parameters[:0] = UID_PARAMETERS
            answers.append(UID_REFUSED)
            return []
        if settings.subscribers == "jwt":
            answers.append(JWT_REFUSED)
            return SUBSCRIBER_SECURITY + (COOKIE_SECURITY if settings.jwt_cookie else [])
        answers.extend(CUSTOM_REFUSED)
    return []


def _scheme(name: str, settings: ApiSettings) -> dict[str, Any]:
    scheme = dict(SECURITY_SCHEMES[name])
    if name == "subscriberCookie" and settings.jwt_cookie:
        scheme["name"] = settings.jwt_cookie
    return scheme


def _parameter(p: Parameter) -> dict[str, Any]:
    return {
        "name": p.name,
        "in": p.where,
        "required": False,
        "description": p.description,
        "schema": p.schema or {"type": "string"},
    }


def _answer(answer: Answer) -> dict[str, Any]:
    schema: Schema | None
    if answer.status >= 400:
        media = JSON_MEDIA
        schema = {"allOf": [_ref("Error"), {"properties": {"code": {"const": answer.status}}}]}
    else:
        media = answer.media_type
        schema = _ref(answer.schema) if isinstance(answer.schema, str) else answer.schema
    out: dict[str, Any] = {"description": answer.description}
    if answer.headers:
        out["headers"] = {name: {"$ref": f"#/components/headers/{name}"} for name in answer.headers}
    out["content"] = {media: {"schema": schema} if schema is not None else {}}
    return out


def _ref(name: str) -> Schema:
    if name not in SCHEMAS:
        raise KeyError(f"schema: {name!r} is not in sse_fast.operations.SCHEMAS")
    return {"$ref": f"#/components/schemas/{name}"}


def _operation_id(route: Route) -> str:
    words = re.sub(r"[^A-Za-z0-9]+", "_", route.path).strip("_")
    return f"{route.method.lower()}_{words or 'root'}"


def _version() -> str:
    try:
        return metadata.version("sse-fast")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0"
