"""Who a subscriber is, and who may publish.

A :data:`UidResolver` turns a request into the user id the hub files the
connection under, or raises :class:`HTTPError` (401/400) with a reason the
client can read.  Two resolvers ship: :func:`query_uid` (``?uid=``, for trusted
networks and tests) and :class:`JWTAuth` (an HS256 token whose ``sub`` claim
is the uid, from ``Authorization: Bearer`` or, because a browser's
``EventSource`` cannot set headers, from ``?token=``).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import jwt

from .errors import HTTPError
from .request import Request

UidResolver = Callable[[Request], "str | Awaitable[str]"]


def query_uid(request: Request) -> str:
    """The ``uid`` query parameter (``X-User-Id`` header as a fallback)."""
    uid = request.query("uid") or request.header(b"x-user-id")
    if not uid:
        raise HTTPError(400, "uid: required (query parameter ?uid=)")
    if len(uid) > 256:
        raise HTTPError(400, "uid: longer than 256 characters")
    return uid


def bearer_token(request: Request) -> str | None:
    """The token of ``Authorization: Bearer <token>``, else ``?token=``."""
    auth = request.header(b"authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return request.query("token") or None


@dataclass(frozen=True)
class JWTAuth:
    """Resolve the uid from an HS256 JWT's ``sub`` claim (``exp`` is honoured)."""

    secret: str
    algorithms: tuple[str, ...] = ("HS256",)
    leeway: float = 5.0

    def __call__(self, request: Request) -> str:
        token = bearer_token(request)
        if not token:
            raise HTTPError(401, "token: required (Authorization: Bearer or ?token=)", _challenge())
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.secret,
                algorithms=list(self.algorithms),
                leeway=self.leeway,
                options={"require": ["sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise HTTPError(401, "token: expired", _challenge()) from None
        except jwt.InvalidTokenError as exc:
            raise HTTPError(401, f"token: invalid ({exc})", _challenge()) from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise HTTPError(401, "token: the sub claim must be a non-empty string", _challenge())
        return sub


def check_push_token(request: Request, expected: str | None) -> None:
    """Refuse with 401 unless the request carries ``expected`` as its bearer token."""
    if expected is None:
        return
    given = bearer_token(request)
    if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPError(401, "authorization: a valid push token is required (Bearer)", _challenge())


def _challenge() -> list[tuple[bytes, bytes]]:
    return [(b"www-authenticate", b'Bearer realm="sse_fast"')]
