"""Who a subscriber is, and who may publish.

A :data:`UidResolver` turns a request into the user id the hub files the
connection under (a ``str``, or a :class:`Principal` when the credentials
expire), or raises :class:`HTTPError` (401/400) with a reason the client can
read.  Two resolvers ship: :func:`query_uid` (``?uid=``, for trusted networks
and tests) and :class:`JWTAuth` (a JWT whose ``sub`` claim is the uid, from
``Authorization: Bearer``, a cookie, or ``?token=``, because a browser's
``EventSource`` cannot set headers; the keys come from :mod:`sse_fast.jwt_keys`).

The push token is another matter: it counts only as ``Authorization: Bearer``
(:func:`check_push_token`), never from the query string, which ends up in
access logs, proxies' logs and browser history.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from .errors import HTTPError
from .jwt_keys import KeySource, SharedSecret, VerificationKey
from .request import Request

UidResolver = Callable[[Request], "str | Principal | Awaitable[str | Principal]"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who subscribes, and until when (Unix seconds) the credentials hold (``None``: no end)."""

    uid: str
    expires_at: float | None = None


def query_uid(request: Request) -> str:
    """The ``uid`` query parameter (``X-User-Id`` header as a fallback)."""
    uid = request.query("uid") or request.header(b"x-user-id")
    if not uid:
        raise HTTPError(400, "uid: required (query parameter ?uid=)")
    if len(uid) > 256:
        raise HTTPError(400, "uid: longer than 256 characters")
    return uid


def authorization_bearer(request: Request) -> str | None:
    """The token of ``Authorization: Bearer <token>``, if the request has one."""
    auth = request.header(b"authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


def cookie(request: Request, name: str) -> str | None:
    """The value of cookie ``name`` (the first one), from every ``Cookie`` header."""
    for key, value in request.headers:
        if key != b"cookie":
            continue
        for pair in value.decode("latin-1").split(";"):
            found, sep, text = pair.strip().partition("=")
            if sep and found == name:
                return text.strip().strip('"') or None
    return None


def bearer_token(request: Request, cookie_name: str | None = None) -> str | None:
    """A subscriber's token: ``Authorization: Bearer``, else the cookie ``cookie_name``, else ``?token=``."""
    token = authorization_bearer(request)
    if token is None and cookie_name is not None:
        token = cookie(request, cookie_name)
    return token or request.query("token") or None


class JWTAuth:
    """Resolve the uid from a JWT's ``sub`` claim; the stream ends when ``exp`` (plus ``leeway``) passes.

    ``keys`` is a :class:`~sse_fast.jwt_keys.KeySource` (a plain string is an
    HS256 secret).  ``audience`` and ``issuer``, when given, must match the
    token's ``aud`` and ``iss``; without ``audience`` the ``aud`` claim is not
    checked.  ``cookie`` names the cookie a browser's token may come in.
    """

    __slots__ = ("audience", "cookie", "issuer", "keys", "leeway")

    def __init__(
        self,
        keys: KeySource | str,
        *,
        leeway: float = 5.0,
        audience: str | None = None,
        issuer: str | None = None,
        cookie: str | None = None,
    ) -> None:
        self.keys: KeySource = SharedSecret(keys) if isinstance(keys, str) else keys
        self.leeway = leeway
        self.audience = audience
        self.issuer = issuer
        self.cookie = cookie

    def __call__(self, request: Request) -> Principal | Awaitable[Principal]:
        token = bearer_token(request, self.cookie)
        if not token:
            where = "Authorization: Bearer, " + (f"the {self.cookie} cookie, " if self.cookie else "")
            raise HTTPError(401, f"token: required ({where}or ?token=)", _challenge())
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise HTTPError(401, f"token: invalid ({exc})", _challenge()) from None
        key = self.keys.key_for(header)
        if isinstance(key, VerificationKey):
            return self.verify(token, key)
        return self._verify_later(token, key)

    async def _verify_later(self, token: str, key: Awaitable[VerificationKey]) -> Principal:
        try:
            found = await key
        except HTTPError as exc:
            if exc.status == 401:
                raise HTTPError(401, exc.reason, _challenge()) from None
            raise
        return self.verify(token, found)

    def verify(self, token: str, key: VerificationKey) -> Principal:
        """The token's subject and deadline, once its signature and claims hold under ``key``."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=list(key.algorithms),
                leeway=self.leeway,
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["sub"], "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise HTTPError(401, "token: expired", _challenge()) from None
        except jwt.InvalidAlgorithmError:
            raise HTTPError(
                401, f"token: signed with an algorithm this key does not admit ({_alg(token)})", _challenge()
            ) from None
        except jwt.InvalidTokenError as exc:
            raise HTTPError(401, f"token: invalid ({exc})", _challenge()) from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise HTTPError(401, "token: the sub claim must be a non-empty string", _challenge())
        exp = claims.get("exp")
        return Principal(sub, None if exp is None else float(exp) + self.leeway)


def _alg(token: str) -> str:
    try:
        header: Mapping[str, Any] = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        return "?"
    return str(header.get("alg"))[:16]


def check_push_token(request: Request, expected: str | None) -> None:
    """Refuse with 401 unless ``Authorization: Bearer`` carries ``expected`` (never the query string)."""
    if expected is None:
        return
    given = authorization_bearer(request)
    if given is None or not hmac.compare_digest(given.encode(), expected.encode()):
        raise HTTPError(401, "authorization: a valid push token is required (Bearer)", _challenge())


def _challenge() -> list[tuple[bytes, bytes]]:
    return [(b"www-authenticate", b'Bearer realm="sse_fast"')]
