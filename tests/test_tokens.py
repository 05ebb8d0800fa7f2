"""Subscriber tokens end to end, on both engines: expiry, public keys, JWKS rotation, cookies, CORS.

Every server is a real ``sse-fast serve`` process; tokens are made here with
PyJWT and keys generated per run with ``cryptography``.  A JWKS is served on
loopback by the test itself, so a key rotation can be staged.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from conftest import (
    RecordingSink,
    Serve,
    SharedServe,
    Subscribe,
    nothing_else_arrived,
    unique_uid,
    wait_until,
)
from sse_fast.config import ServeConfig

SECRET = "tokens-test-secret-0123456789abcdef"
COOKIE = "sse_token"
ALLOWED = "http://app.example"


def hs256(sub: str, expires_in: float | None = None, **claims: Any) -> str:
    payload: dict[str, Any] = {"sub": sub, **claims}
    if expires_in is not None:
        payload["exp"] = int(time.time() + expires_in)
    return jwt.encode(payload, SECRET)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def hand_signed_hs256(payload: dict[str, Any], secret: bytes) -> str:
    """An HS256 token made by hand: PyJWT itself refuses to use a PEM key as an HMAC secret."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps(payload).encode())
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)


# ------------------------------------------------------------------ expiry


def test_a_stream_ends_at_its_tokens_exp_and_the_same_token_is_then_refused(
    serve: Serve, subscribe: Subscribe
) -> None:
    server = serve("--store", "memory://", "--jwt-secret", SECRET, "--jwt-leeway", "1")
    token = hs256("alice", expires_in=1.5)
    exp = jwt.decode(token, SECRET, algorithms=["HS256"])["exp"]
    reader = subscribe(f"{server.url}/events", authorization=f"Bearer {token}")
    reader.wait_subscribed()
    assert server.push([{"event": "before", "data": 1}], uids=["alice"]).status_code == 200
    assert reader.ended.wait(10), "the stream outlived its token"
    ended = time.time()
    assert exp + 1 - 0.05 <= ended <= exp + 1 + 2.5  # exp plus the leeway, not before
    events = reader.received()
    assert [e.event for e in events] == ["before", "token_expired"]
    assert events[-1].json() == {"reason": "token_expired"}

    again = httpx.get(f"{server.url}/events", headers={"authorization": f"Bearer {token}"}, timeout=5)
    assert again.status_code == 401
    assert again.json() == {"code": 401, "msg": "token: expired", "data": {}}
    assert server.stats()["tokens_expired"] == 1
    assert "sse_fast_tokens_expired_total 1" in httpx.get(f"{server.url}/metrics", timeout=5).text
    assert server.stats()["connections"] == 0


def test_the_hub_ends_only_streams_whose_deadline_passed_and_forgets_the_timers_of_those_that_left() -> None:
    from sse_fast import Hub

    async def scenario() -> None:
        hub = Hub(heartbeat=60)
        await hub.start()
        forever, expiring, leaving = RecordingSink(), RecordingSink(), RecordingSink()
        hub.subscribe("a", forever)
        sub = hub.subscribe("a", expiring, expires_at=time.time() + 0.2)
        gone = hub.subscribe("a", leaving, expires_at=time.time() + 0.2)
        assert gone.expiry is not None
        hub.unsubscribe(gone)
        assert gone.expiry is None  # cancelled with the subscription
        await asyncio.sleep(0.35)
        assert expiring.closed and sub.close_reason == "token_expired"
        assert expiring.data.endswith(b'event: token_expired\ndata: {"reason":"token_expired"}\n\n')
        assert not forever.closed and not leaving.closed
        assert b"token_expired" not in leaving.data
        assert hub.stats.tokens_expired == 1 and hub.connections == 1
        await hub.close()

    asyncio.run(scenario())


# --------------------------------------------------------------- key types


def test_rs256_tokens_verify_with_the_public_key_and_no_other_algorithm_is_admitted(
    serve: Serve, subscribe: Subscribe, rsa_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    pem = tmp_path / "idp.pem"
    pem.write_bytes(public_pem(rsa_key))
    server = serve(
        "--store", "none", "--jwt-public-key", str(pem),
        "--jwt-audience", "edge", "--jwt-issuer", "https://idp.example",
    )  # fmt: skip
    claims = {"sub": "bob", "aud": "edge", "iss": "https://idp.example", "exp": int(time.time()) + 60}
    good = jwt.encode(claims, rsa_key, algorithm="RS256")
    reader = subscribe(f"{server.url}/events", authorization=f"Bearer {good}")
    assert reader.status == 200
    reader.wait_subscribed()

    def refused(token: str) -> str:
        answer = httpx.get(f"{server.url}/events", headers={"authorization": f"Bearer {token}"}, timeout=5)
        assert answer.status_code == 401, answer.text
        msg: str = answer.json()["msg"]
        return msg

    # The classic confusion: HS256 with the public key's PEM as the shared secret.
    confused = hand_signed_hs256(claims, public_pem(rsa_key))
    assert refused(confused) == "token: signed with an algorithm this key does not admit (HS256)"
    assert refused(jwt.encode({**claims, "aud": "other"}, rsa_key, algorithm="RS256")).startswith(
        "token: invalid (Audience"
    )
    assert refused(jwt.encode({**claims, "iss": "https://evil"}, rsa_key, algorithm="RS256")).startswith(
        "token: invalid (Invalid issuer"
    )
    another = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert refused(jwt.encode(claims, another, algorithm="RS256")).startswith("token: invalid (Signature")


def test_es256_keys_admit_es256_only() -> None:
    from sse_fast.auth import JWTAuth, Principal
    from sse_fast.errors import HTTPError
    from sse_fast.jwt_keys import PublicKey
    from sse_fast.request import Request

    key = ec.generate_private_key(ec.SECP256R1())
    auth = JWTAuth(PublicKey.from_pem(public_pem(key)))

    def request(token: str) -> Request:
        return Request("GET", "/events", b"", [(b"authorization", f"Bearer {token}".encode())])

    principal = auth(request(jwt.encode({"sub": "carol", "exp": 2_000_000_000}, key, algorithm="ES256")))
    assert principal == Principal("carol", 2_000_000_005.0)  # exp plus the default leeway
    with pytest.raises(HTTPError, match="does not admit \\(HS256\\)"):
        auth(request(hand_signed_hs256({"sub": "carol"}, public_pem(key))))
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(HTTPError, match="does not admit \\(ES384\\)"):
        auth(request(jwt.encode({"sub": "carol"}, p384, algorithm="ES384")))


def test_a_bad_key_file_stops_the_server_at_startup_with_the_reason(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    private = tmp_path / "private.pem"
    private.write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n")
    small = tmp_path / "small.pem"
    small.write_bytes(public_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)))
    cases = {
        str(tmp_path / "missing.pem"): "cannot read",
        str(private): "holds a private key",
        str(garbage): "not a PEM public key",
        str(small): "an RSA key of 1024 bits",
    }
    for path, reason in cases.items():
        with pytest.raises(ValueError, match=f"^--jwt-public-key {path}: {reason}"):
            ServeConfig(jwt_public_key=path, store=None).validate()
    with pytest.raises(ValueError, match="give only one of"):
        ServeConfig(jwt_secret=SECRET, jwks_url="https://idp.example/jwks", store=None).validate()
    with pytest.raises(ValueError, match=r"^--jwt-cookie: needs"):
        ServeConfig(jwt_cookie="t", store=None).validate()
    done = subprocess.run(
        [sys.executable, "-m", "sse_fast", "serve", "--store", "none", "--jwt-public-key", str(private)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert f"sse-fast serve: --jwt-public-key {private}: holds a private key" in done.stderr


# -------------------------------------------------------------------- JWKS


class JWKSServer:
    """A JWKS document on loopback whose keys the test changes; counts the fetches."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.fetches += 1
                body = json.dumps({"keys": owner.keys}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/.well-known/jwks.json"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def publish(self, *keys: tuple[str, rsa.RSAPrivateKey]) -> None:
        self.keys = []
        for kid, key in keys:
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
            self.keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def jwks() -> Iterator[JWKSServer]:
    server = JWKSServer()
    yield server
    server.close()


def test_jwks_keys_are_cached_refreshed_on_an_unknown_kid_and_the_refresh_is_rate_limited(
    serve: Serve, subscribe: Subscribe, jwks: JWKSServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks.publish(("k1", rsa_key))
    server = serve("--store", "none", "--jwks-url", jwks.url, "--jwks-min-interval", "1")

    def token(kid: str, key: rsa.RSAPrivateKey, sub: str = "dave") -> str:
        return jwt.encode({"sub": sub, "exp": int(time.time()) + 60}, key, "RS256", headers={"kid": kid})

    def status(value: str) -> tuple[int, str]:
        answer = httpx.get(f"{server.url}/events", headers={"authorization": f"Bearer {value}"}, timeout=5)
        return answer.status_code, answer.json()["msg"] if answer.status_code != 200 else ""

    first = subscribe(f"{server.url}/events", authorization=f"Bearer {token('k1', rsa_key)}")
    assert first.status == 200
    second = subscribe(f"{server.url}/events", authorization=f"Bearer {token('k1', rsa_key, 'erin')}")
    assert second.status == 200
    assert jwks.fetches == 1  # cached

    # The provider rotates: the new key is published, tokens name its kid.
    jwks.publish(("k1", rsa_key), ("k2", rotated))
    time.sleep(1.05)  # the first fetch is more than --jwks-min-interval ago
    assert subscribe(f"{server.url}/events", authorization=f"Bearer {token('k2', rotated)}").status == 200
    assert jwks.fetches == 2

    # Made-up kids: one refresh at most per --jwks-min-interval, however many tokens.
    time.sleep(1.05)
    for _ in range(5):
        assert status(token("nope", rotated)) == (401, "token: unknown key id 'nope' (not in --jwks-url)")
    assert jwks.fetches == 3
    # A key signed under a kid it does not hold is refused too.
    assert status(token("k1", rotated))[1].startswith("token: invalid (Signature")


# ----------------------------------------------------------------- cookies


def test_a_cookie_token_subscribes_and_cors_answers_credentials_to_listed_origins_only(
    shared_serve: SharedServe, subscribe: Subscribe
) -> None:
    server = shared_serve(
        "--store", "memory://", "--jwt-secret", SECRET, "--jwt-cookie", COOKIE, "--cors-origin", ALLOWED
    )
    uid = unique_uid()
    reader = subscribe(
        f"{server.url}/events", cookie=f"theme=dark; {COOKIE}={hs256(uid, 60)}", origin=ALLOWED
    )
    assert reader.status == 200
    assert reader.response_headers is not None
    assert reader.response_headers["access-control-allow-origin"] == ALLOWED
    assert reader.response_headers["access-control-allow-credentials"] == "true"
    reader.wait_subscribed()
    assert server.push([{"event": "hello", "data": uid}], uids=[uid]).status_code == 200
    nothing_else_arrived(server, reader)
    assert [e.json() for e in reader.received()] == [uid]

    other = httpx.options(
        f"{server.url}/events",
        headers={"origin": "http://other.example", "access-control-request-method": "GET"},
    )
    assert "access-control-allow-origin" not in other.headers
    missing = httpx.get(f"{server.url}/events", headers={"cookie": "theme=dark"}, timeout=5)
    assert missing.status_code == 401
    assert (
        missing.json()["msg"] == f"token: required (Authorization: Bearer, the {COOKIE} cookie, or ?token=)"
    )


def test_cors_star_with_tokens_is_refused_at_startup() -> None:
    with pytest.raises(ValueError, match="'\\*' is not allowed together with --jwks-url"):
        ServeConfig(jwks_url="https://idp.example/jwks", cors_origins=["*"], store=None).validate()


# -------------------------------------------------------------- cross-site


def test_pushes_from_other_sites_are_refused_and_deliver_nothing(
    shared_serve: SharedServe, subscribe: Subscribe
) -> None:
    server = shared_serve(
        "--store", "memory://", "--jwt-secret", SECRET, "--jwt-cookie", COOKIE, "--cors-origin", ALLOWED
    )
    uid = unique_uid()
    reader = subscribe(f"{server.url}/events", authorization=f"Bearer {hs256(uid, 60)}")
    reader.wait_subscribed()
    body = json.dumps({"uids": [uid], "events": [{"event": "x", "data": "refused"}]})
    host = server.url.removeprefix("http://")

    def push(**headers: str) -> httpx.Response:
        plain = {"content-type": "text/plain", **{k.replace("_", "-"): v for k, v in headers.items()}}
        return httpx.post(f"{server.url}/push", content=body, headers=plain, timeout=5)

    for headers in (
        {"origin": "https://evil.example"},
        {"origin": "https://evil.example", "sec_fetch_site": "cross-site"},
        {"origin": f"http://{host}", "sec_fetch_site": "same-site"},  # a sibling subdomain's page
        {"origin": "null"},
        {"sec_fetch_site": "cross-site"},
    ):
        answer = push(**headers)
        assert answer.status_code == 403, headers
        assert answer.json()["msg"].startswith("origin: requests from ")
    nothing_else_arrived(server, reader)
    assert reader.received() == []

    accepted = [
        {},  # curl, a backend: no Origin at all, whatever the Content-Type
        {"origin": f"http://{host}"},  # the edge's own page (an older browser)
        {"origin": f"https://{host}"},  # the same, behind a TLS-terminating proxy
        {"origin": "https://edge.example", "sec_fetch_site": "same-origin"},  # the browser says so
        {"origin": ALLOWED, "sec_fetch_site": "cross-site"},  # listed with --cors-origin
    ]
    for headers in accepted:
        assert push(**headers).status_code == 200, headers
    nothing_else_arrived(server, reader)
    assert len(reader.received()) == len(accepted)


def test_the_push_token_counts_only_as_a_bearer_header(shared_serve: SharedServe) -> None:
    server = shared_serve("--store", "none", "--push-token", "s3cret")
    events = {"events": [{"event": "x", "data": 1}]}
    assert httpx.post(f"{server.url}/push?token=s3cret", json=events, timeout=5).status_code == 401
    assert httpx.get(f"{server.url}/stats?token=s3cret", timeout=5).status_code == 401
    assert httpx.get(f"{server.url}/metrics?token=s3cret", timeout=5).status_code == 401
    bearer = {"authorization": "Bearer s3cret"}
    assert httpx.post(f"{server.url}/push", json=events, headers=bearer, timeout=5).status_code == 200
    assert httpx.get(f"{server.url}/stats", headers=bearer, timeout=5).status_code == 200
    assert httpx.get(f"{server.url}/metrics", headers=bearer, timeout=5).status_code == 200


def test_the_readme_curl_push_still_works(shared_serve: SharedServe, subscribe: Subscribe) -> None:
    server = shared_serve("--store", "none")
    uid = unique_uid()
    reader = subscribe(f"{server.url}/events?uid={uid}")
    reader.wait_subscribed()
    body = json.dumps({"uids": [uid], "events": [{"event": "greeting", "data": {"hello": "world"}}]})
    done = subprocess.run(
        ["curl", "-s", f"{server.url}/push", "-d", body], capture_output=True, text=True, timeout=10
    )
    assert json.loads(done.stdout)["code"] == 0
    wait_until(lambda: len(reader.received()) == 1)


# ----------------------------------------------------------------- clients


TOKEN_SECONDS = 1.2
"""How long each token the providers below hand out holds (the server's leeway is 0)."""


def fresh_token(uid: str) -> str:
    return jwt.encode({"sub": uid, "exp": time.time() + TOKEN_SECONDS}, SECRET)


def test_clients_with_a_token_provider_ride_across_expiries_without_a_gap_or_a_duplicate(
    serve: Serve, tmp_path: Path
) -> None:
    """The async client, the sync client and ``sse-fast listen`` at once, over three expiries."""
    import sse_fast

    server = serve("--store", "memory://", "--jwt-secret", SECRET, "--jwt-leeway", "0")
    url = f"{server.url}/events"
    uid = unique_uid()
    calls = {"async": 0, "sync": 0}
    got: dict[str, list[Any]] = {"async": [], "sync": []}
    expired = {"async": 0, "sync": 0}
    errors: list[str] = []

    async def async_token() -> str:
        calls["async"] += 1
        return fresh_token(uid)

    def sync_token() -> str:
        calls["sync"] += 1
        return fresh_token(uid)

    script = tmp_path / "make_token.py"  # not token.py: that would shadow the standard library's token
    script.write_text(
        "import time, jwt\n"
        f"print(jwt.encode({{'sub': {uid!r}, 'exp': time.time() + {TOKEN_SECONDS}}}, {SECRET!r}))\n"
    )
    listener = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sse_fast",
            "listen",
            url,
            "--json",
            "-v",
            "--token-command",
            f"{sys.executable} {script}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    listened: list[dict[str, Any]] = []

    def read_listener() -> None:
        assert listener.stdout is not None
        for line in listener.stdout:
            listened.append(json.loads(line))

    threading.Thread(target=read_listener, daemon=True).start()
    sync_client = sse_fast.SyncClient(url, token=sync_token)

    def run_sync() -> None:
        for event in sync_client:
            if event.event == "token_expired":
                expired["sync"] += 1
            else:
                got["sync"].append(event.json())

    reader = threading.Thread(target=run_sync, daemon=True)
    reader.start()
    count = 0

    async def scenario() -> None:
        nonlocal count
        client = sse_fast.Client(url, token=async_token)

        def on_event(event: Any) -> None:
            if event.event == "token_expired":
                expired["async"] += 1
            else:
                got["async"].append(event.json())

        client.on("*", on_event)
        client.on_error(lambda exc: errors.append(repr(exc)))
        await client.connect()
        async with httpx.AsyncClient() as http:
            for _ in range(250):  # the listener's and the sync client's first connections
                if (await http.get(f"{server.url}/stats")).json()["connections"] == 3:
                    break
                await asyncio.sleep(0.02)
            started = time.monotonic()
            while time.monotonic() - started < 2.6 * TOKEN_SECONDS:
                body = {"uids": [uid], "events": [{"event": "n", "data": count}]}
                assert (await http.post(f"{server.url}/push", json=body)).status_code == 200
                count += 1
                await asyncio.sleep(0.03)
        await asyncio.sleep(0.3)
        await client.close()

    asyncio.run(scenario())
    wait_until(lambda: len(got["sync"]) >= count)
    wait_until(lambda: sum(e["event"] == "n" for e in listened) >= count or listener.poll() is not None)
    sync_client.close()
    reader.join(5)
    listener.terminate()
    _, err = listener.communicate(timeout=10)

    expected = list(range(count))
    assert count > 40
    assert got["async"] == expected
    assert got["sync"] == expected
    assert [int(e["data"]) for e in listened if e["event"] == "n"] == expected, err.decode()
    for name in ("async", "sync"):
        # one call per connection: the first, and one after each expiry (or a drop, under load)
        assert expired[name] >= 2 and calls[name] >= expired[name] + 1, (name, expired, calls, errors)
    assert sum(e["event"] == "token_expired" for e in listened) >= 2
    assert server.stats()["tokens_expired"] >= 6


def test_a_key_set_is_read_strictly_and_an_unreachable_one_is_a_503_not_a_401(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    from sse_fast.auth import JWTAuth, Principal
    from sse_fast.errors import HTTPError
    from sse_fast.jwt_keys import JWKSKeys
    from sse_fast.request import Request

    rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    document: dict[str, Any] = {
        "keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "shared"},  # never a secret from a URL
            {**rsa_jwk, "kid": "enc", "use": "enc"},  # not for signatures
            {**rsa_jwk, "kid": "mismatch", "alg": "ES256"},  # an alg its key cannot do
            {**rsa_jwk, "alg": "RS256"},  # no kid: the only usable key
        ]
    }
    answers: list[Any] = [OSError("connection refused"), document]

    async def fetch(url: str) -> Any:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    keys = JWKSKeys("https://idp.example/jwks", fetch=fetch, min_interval=0)
    auth = JWTAuth(keys)

    def request(token: str) -> Request:
        return Request("GET", "/events", b"", [(b"authorization", f"Bearer {token}".encode())])

    async def resolve(token: str) -> Any:
        result = auth(request(token))
        return result if isinstance(result, Principal) else await result

    async def scenario() -> None:
        plain = jwt.encode({"sub": "frank"}, rsa_key, algorithm="RS256")
        with pytest.raises(HTTPError) as unreachable:
            await resolve(plain)
        assert unreachable.value.status == 503
        assert (await resolve(plain)).uid == "frank"  # fetched now: the one key, no kid needed
        for kid in ("shared", "enc", "mismatch"):
            named = jwt.encode({"sub": "frank"}, rsa_key, algorithm="RS256", headers={"kid": kid})
            with pytest.raises(HTTPError, match="unknown key id") as refused:
                answers.append(document)
                await resolve(named)
            assert refused.value.status == 401
        ps256 = jwt.encode({"sub": "frank"}, rsa_key, algorithm="PS256")
        with pytest.raises(HTTPError, match=r"does not admit \(PS256\)"):
            await resolve(ps256)  # the key's own alg narrows it to RS256

    asyncio.run(scenario())


def test_with_a_token_provider_a_401_is_tried_once_more_with_a_fresh_token_then_stops() -> None:
    from sse_fast.eventsource import EventSourceMachine, Reconnect, Stop

    def refused(machine: EventSourceMachine) -> object:
        machine.begin_attempt()
        machine.receive_response(401, {}, b'{"code":401,"msg":"token: expired","data":{}}')
        return machine.connection_closed()

    plain = EventSourceMachine("http://edge/events")
    assert isinstance(refused(plain), Stop)  # a fixed token will not get better
    fresh = EventSourceMachine("http://edge/events", fresh_tokens=True)
    again = refused(fresh)
    assert isinstance(again, Reconnect) and again.delay == 0.0
    assert isinstance(refused(fresh), Stop)  # twice in a row: the provider's tokens are refused
    assert fresh.error is not None and "401" in str(fresh.error)
