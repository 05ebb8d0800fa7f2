"""Where the keys that verify subscribers' JWTs come from: a shared secret, a PEM file, or a JWKS URL.

Each source answers :meth:`KeySource.key_for` with a :class:`VerificationKey`:
the key and the only algorithms a token may be signed with under it.  The
algorithms follow from the key's type, never from the token, so a token
cannot pick how it is checked: an HS256 token whose "secret" is an RSA public
key (the classic algorithm confusion) is refused, since an RSA key admits
only RS*/PS* signatures.

- :class:`SharedSecret` (``--jwt-secret``): HS256.
- :class:`PublicKey` (``--jwt-public-key FILE``): a PEM public key (or an
  X.509 certificate); RSA (2048 bits or more) admits RS256/384/512 and
  PS256/384/512, EC P-256/P-384/P-521 ES256/ES384/ES512, Ed25519/Ed448 EdDSA.
- :class:`JWKSKeys` (``--jwks-url``): an identity provider's published key set,
  fetched with httpx, kept for ``max_age`` seconds, and fetched again at once
  when a token names a ``kid`` the set does not hold (providers rotate keys
  by publishing the new one first) -- but not more often than every
  ``min_interval`` seconds, so that tokens with made-up ``kid`` values cannot
  make the edge hammer the provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from .errors import HTTPError

logger = logging.getLogger("sse_fast.auth")

RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_ALGORITHMS = {"secp256r1": ("ES256",), "secp384r1": ("ES384",), "secp521r1": ("ES512",)}
MIN_RSA_BITS = 2048


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A key, and the algorithms a token signed under it may use."""

    key: Any
    algorithms: tuple[str, ...]
    kid: str | None = None


class KeySource(Protocol):
    """Gives the key for a token, from its (unverified) header; raises HTTPError when there is none."""

    def key_for(self, header: Mapping[str, Any]) -> VerificationKey | Awaitable[VerificationKey]: ...


class SharedSecret:
    """``--jwt-secret``: HS256 with a shared secret."""

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("--jwt-secret: must not be empty")
        self._key = VerificationKey(secret, ("HS256",))

    def key_for(self, header: Mapping[str, Any]) -> VerificationKey:
        return self._key


def algorithms_for(key: Any, where: str) -> tuple[str, ...]:
    """The algorithms a public key admits; ValueError (naming ``where``) for a key that admits none."""
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(
                f"{where}: an RSA key of {key.key_size} bits; at least {MIN_RSA_BITS} are needed"
            )
        return RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey):
        algorithms = EC_ALGORITHMS.get(key.curve.name)
        if algorithms is None:
            raise ValueError(f"{where}: the EC curve {key.curve.name} is not one of P-256, P-384, P-521")
        return algorithms
    if isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return ("EdDSA",)
    raise ValueError(f"{where}: a {type(key).__name__} cannot verify JWTs (RSA, EC or Ed25519 keys can)")


class PublicKey:
    """``--jwt-public-key FILE``: one PEM public key (or certificate); algorithms by its type."""

    def __init__(self, key: Any, where: str = "--jwt-public-key") -> None:
        self._key = VerificationKey(key, algorithms_for(key, where))

    @property
    def algorithms(self) -> tuple[str, ...]:
        return self._key.algorithms

    @classmethod
    def from_pem(cls, pem: bytes, where: str = "--jwt-public-key") -> PublicKey:
        """Load a PEM public key or X.509 certificate; ValueError naming ``where`` otherwise."""
        if b"PRIVATE KEY-----" in pem:
            raise ValueError(
                f"{where}: holds a private key; give the edge the public key only "
                "(openssl pkey -in KEY -pubout)"
            )
        if b"-----BEGIN CERTIFICATE-----" in pem:
            try:
                return cls(x509.load_pem_x509_certificate(pem).public_key(), where)
            except ValueError as exc:
                raise ValueError(f"{where}: not a readable PEM certificate ({exc})") from None
        try:
            key = serialization.load_pem_public_key(pem)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{where}: not a PEM public key ('-----BEGIN PUBLIC KEY-----'): {exc}") from None
        return cls(key, where)

    @classmethod
    def from_file(cls, path: str, where: str = "--jwt-public-key") -> PublicKey:
        try:
            pem = Path(path).read_bytes()
        except OSError as exc:
            raise ValueError(f"{where} {path}: cannot read it ({exc.strerror or exc})") from None
        return cls.from_pem(pem, f"{where} {path}")

    def key_for(self, header: Mapping[str, Any]) -> VerificationKey:
        return self._key


def parse_jwks(document: Any) -> dict[str | None, VerificationKey]:
    """The signing keys of a JWKS document by ``kid``; keys that cannot verify JWTs are left out (logged).

    Symmetric (``oct``) keys are never taken from a URL, and a key's own
    ``alg`` narrows its algorithms to that one (it must suit the key's type).
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError('not a JWKS document: expected {"keys": [...]}')
    keys: dict[str | None, VerificationKey] = {}
    for i, jwk in enumerate(document["keys"]):
        where = f"keys[{i}]"
        if not isinstance(jwk, dict):
            logger.warning("JWKS %s: not an object; skipped", where)
            continue
        if jwk.get("use", "sig") != "sig" or jwk.get("kty") == "oct":
            continue
        kid = jwk.get("kid")
        try:
            key = jwt.PyJWK(jwk).key
            algorithms = algorithms_for(key, where)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError, KeyError) as exc:
            logger.warning("JWKS %s (kid %r): skipped: %s", where, kid, exc)
            continue
        alg = jwk.get("alg")
        if alg is not None:
            if alg not in algorithms:
                logger.warning("JWKS %s (kid %r): alg %r does not suit its key; skipped", where, kid, alg)
                continue
            algorithms = (alg,)
        keys[kid if isinstance(kid, str) else None] = VerificationKey(key, algorithms, kid)
    return keys


Fetch = Callable[[str], Awaitable[Any]]


class JWKSKeys:
    """``--jwks-url``: an identity provider's key set, cached and refreshed (see the module docstring).

    ``fetch`` (default: an httpx GET) returns the decoded JSON document.  The
    set is fetched on first use; a fetch that fails keeps the set already
    held (logged), and with none held a subscriber gets 503 (try again), not
    401: the token may well be good.
    """

    def __init__(
        self,
        url: str,
        *,
        max_age: float = 300.0,
        min_interval: float = 10.0,
        timeout: float = 5.0,
        fetch: Fetch | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not url.startswith(("https://", "http://")):
            raise ValueError(f"--jwks-url: must be an http(s) URL, got {url!r}")
        self.url = url
        self.max_age = max_age
        self.min_interval = min_interval
        self._timeout = timeout
        self._fetch = fetch or self._http_get
        self._clock = clock
        self._keys: dict[str | None, VerificationKey] | None = None
        self._fetched_at = -float("inf")  # when the set was last fetched (or tried)
        self._refreshing: asyncio.Task[None] | None = None
        self._http: httpx.AsyncClient | None = None
        self.fetches = 0
        """Fetches made (tried) so far: a test sees the rate limit through it."""

    def key_for(self, header: Mapping[str, Any]) -> VerificationKey | Awaitable[VerificationKey]:
        kid = header.get("kid")
        keys = self._keys
        if keys is not None and self._clock() - self._fetched_at < self.max_age:
            found = _lookup(keys, kid)
            if found is not None:
                return found  # the common case: no coroutine
        return self._key_after_refresh(kid)

    async def _key_after_refresh(self, kid: Any) -> VerificationKey:
        now = self._clock()
        if self._keys is None or now - self._fetched_at >= self.min_interval:
            await self._refresh()
        keys = self._keys
        if keys is None:
            raise HTTPError(
                503,
                "token: the identity provider's keys (--jwks-url) could not be fetched",
                [(b"retry-after", b"5")],
            )
        found = _lookup(keys, kid)
        if found is None:
            if kid is None:
                raise HTTPError(401, f"token: no kid in its header, and the key set holds {len(keys)} keys")
            raise HTTPError(401, f"token: unknown key id {str(kid)[:64]!r} (not in --jwks-url)")
        return found

    async def _refresh(self) -> None:
        """Fetch the set once, however many subscribers are waiting for it."""
        task = self._refreshing
        if task is None or task.done():
            task = self._refreshing = asyncio.ensure_future(self._fetch_now())
        await asyncio.shield(task)

    async def _fetch_now(self) -> None:
        self._fetched_at = self._clock()
        self.fetches += 1
        try:
            document = await self._fetch(self.url)
            keys = parse_jwks(document)
        except Exception as exc:  # the provider's fault: keep what we have
            logger.warning("--jwks-url %s: could not refresh the keys: %s", self.url, exc)
            return
        if not keys:
            logger.warning("--jwks-url %s: the set holds no key that can verify JWTs", self.url)
        self._keys = keys

    async def _http_get(self, url: str) -> Any:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self._timeout, follow_redirects=True)
        response = await self._http.get(url, headers={"accept": "application/json"})
        response.raise_for_status()
        return response.json()

    async def close(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            with contextlib.suppress(Exception):
                await http.aclose()


def _lookup(keys: dict[str | None, VerificationKey], kid: Any) -> VerificationKey | None:
    if kid is None:
        return next(iter(keys.values())) if len(keys) == 1 else None
    return keys.get(kid) if isinstance(kid, str) else None
