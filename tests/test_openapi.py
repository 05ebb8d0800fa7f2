"""The API description: every route described, a valid OpenAPI 3.1 document, stating the configuration.

The document is checked here in-process and as both engines serve it; that
the live server answers as it says is tests/test_openapi_fuzz.py's job.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

from conftest import Serve
from sse_fast.asgi import SSEApp
from sse_fast.config import ServeConfig
from sse_fast.engines.setup import build_app
from sse_fast.hub import Hub
from sse_fast.openapi import PUSH_SECURITY, SUBSCRIBER_SECURITY, openapi_document
from sse_fast.request import Request
from sse_fast.routes import EDGE_ROUTES

Document = dict[str, Any]

CONFIGS: dict[str, Callable[[], ServeConfig]] = {
    "open": lambda: ServeConfig(store=None),
    "push-token": lambda: ServeConfig(store=None, push_token="t0ken"),
    "jwt": lambda: ServeConfig(store=None, jwt_secret="s3cret"),
    "token-and-jwt": lambda: ServeConfig(store=None, push_token="t0ken", jwt_secret="s3cret"),
    "no-dashboard": lambda: ServeConfig(store=None, dashboard=False),
    "max-body": lambda: ServeConfig(store=None, max_body=5000),
    "max-recipients": lambda: ServeConfig(store=None, max_recipients=700),
}


def document(config: ServeConfig, root_path: str = "") -> Document:
    app = build_app(config)
    return describe(app, root_path)


def describe(app: SSEApp, root_path: str = "") -> Document:
    request = Request("GET", "/openapi.json", b"", [], root_path)
    return openapi_document(app.route_table, app.endpoints.api_settings(request.root_path))


def operation(doc: Document, method: str, path: str) -> dict[str, Any]:
    found: dict[str, Any] = doc["paths"][path][method.lower()]
    return found


def statuses(doc: Document, method: str, path: str) -> set[int]:
    return {int(s) for s in operation(doc, method, path)["responses"]}


def parameters(doc: Document, method: str, path: str) -> set[str]:
    return {p["name"] for p in operation(doc, method, path).get("parameters", ())}


# ------------------------------------------------------- every route described


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_route_of_the_table_is_in_the_document_and_nothing_else(name: str) -> None:
    app = build_app(CONFIGS[name]())
    doc = describe(app)
    served = {(route.method.lower(), route.path) for route in app.route_table}
    described = {(method, path) for path, item in doc["paths"].items() for method in item}
    assert described == served
    if name != "no-dashboard":  # the dashboard's routes, added with add_route, are there too
        assert {("get", "/"), ("get", "/dashboard"), ("get", "/stats/stream")} <= served


def test_every_route_says_what_it_answers() -> None:
    app = build_app(ServeConfig(store=None))
    routes = list(app.route_table)
    assert {r.path for r in EDGE_ROUTES} <= {r.path for r in routes}
    for route in routes:
        op = route.operation
        assert op.summary, f"{route.method} {route.path}: no summary"
        assert any(200 <= a.status < 300 for a in op.answers), f"{route.method} {route.path}: no success"
        for answer in op.answers:
            assert answer.description, f"{route.method} {route.path} {answer.status}: no description"


def test_a_route_cannot_be_added_without_its_description() -> None:
    app = SSEApp(Hub())

    async def handler(*_: object) -> None:
        return None

    with pytest.raises(TypeError):
        app.add_route("GET", "/extra", handler)  # type: ignore[call-arg]  # the missing operation is the test


# ------------------------------------------------------------ a valid document


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_the_document_is_valid_openapi_3_1(name: str) -> None:
    doc = document(CONFIGS[name]())
    assert doc["openapi"] == "3.1.0"
    validate(doc)


def test_every_error_is_the_json_error_format_naming_its_status() -> None:
    doc = document(ServeConfig(store=None, push_token="t0ken"))
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for status, answer in op["responses"].items():
                if int(status) < 400:
                    continue
                [(media, content)] = answer["content"].items()
                assert media == "application/json", (method, path, status)
                error, code = content["schema"]["allOf"]
                assert error == {"$ref": "#/components/schemas/Error"}
                assert code == {"properties": {"code": {"const": int(status)}}}
                if status == "503" and path != "/healthz":  # liveness has nothing to retry
                    assert "Retry-After" in answer["headers"], (method, path)


# --------------------------------------------------------- the configuration


def test_without_a_push_token_publishing_and_figures_need_no_credentials() -> None:
    doc = document(ServeConfig(store=None))
    for method, path in (("POST", "/push"), ("GET", "/stats"), ("GET", "/metrics"), ("GET", "/stats/stream")):
        assert operation(doc, method, path)["security"] == []
        assert 401 not in statuses(doc, method, path)
    assert "securitySchemes" not in doc["components"]


def test_with_a_push_token_publishing_and_figures_require_it() -> None:
    doc = document(ServeConfig(store=None, push_token="t0ken"))
    for method, path in (("POST", "/push"), ("GET", "/stats"), ("GET", "/metrics"), ("GET", "/stats/stream")):
        assert operation(doc, method, path)["security"] == PUSH_SECURITY
        assert "WWW-Authenticate" in operation(doc, method, path)["responses"]["401"]["headers"]
    for path in ("/healthz", "/readyz", "/openapi.json", "/"):
        assert operation(doc, "GET", path)["security"] == []
        assert 401 not in statuses(doc, "GET", path)
    assert set(doc["components"]["securitySchemes"]) == {"pushToken"}  # never in the query string


def test_subscribers_name_themselves_with_uid_unless_they_bring_a_jwt() -> None:
    open_doc = document(ServeConfig(store=None))
    assert {"uid", "X-User-Id", "event_type", "Event-Type", "last_event_id", "Last-Event-ID"} == parameters(
        open_doc, "GET", "/events"
    )
    assert operation(open_doc, "GET", "/events")["security"] == []
    assert {200, 400, 503} <= statuses(open_doc, "GET", "/events")
    assert 401 not in statuses(open_doc, "GET", "/events")

    jwt_doc = document(ServeConfig(store=None, jwt_secret="s3cret"))
    assert "uid" not in parameters(jwt_doc, "GET", "/events")
    assert operation(jwt_doc, "GET", "/events")["security"] == SUBSCRIBER_SECURITY
    assert {200, 401, 503} <= statuses(jwt_doc, "GET", "/events")
    # Without a push token the stats stream asks what /events asks.
    assert operation(jwt_doc, "GET", "/stats/stream")["security"] == SUBSCRIBER_SECURITY


def test_a_resolver_of_the_applications_own_is_described_as_such() -> None:
    app = SSEApp(Hub(), resolve_uid=lambda request: "someone")
    doc = describe(app)
    assert {400, 401} <= statuses(doc, "GET", "/events")
    assert "uid" not in parameters(doc, "GET", "/events")
    validate(doc)


def test_the_body_limit_and_its_answers_are_stated() -> None:
    doc = document(ServeConfig(store=None, max_body=5000))
    push = operation(doc, "POST", "/push")
    assert "5000 bytes" in push["requestBody"]["description"]
    assert "5000 bytes" in push["responses"]["413"]["description"]
    assert {200, 400, 408, 413, 500, 503} <= statuses(doc, "POST", "/push")
    assert push["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PushRequest"
    }


def test_the_recipient_limit_is_stated_with_its_413() -> None:
    push = operation(document(ServeConfig(store=None, max_recipients=700)), "POST", "/push")
    assert "over --max-recipients 700" in push["responses"]["413"]["description"]


def test_the_mount_point_is_the_server_url() -> None:
    assert document(ServeConfig(store=None))["servers"] == [{"url": "/"}]
    assert document(ServeConfig(store=None), "/sse")["servers"] == [{"url": "/sse"}]


def test_streaming_routes_are_marked() -> None:
    doc = document(ServeConfig(store=None))
    streaming = {
        (m, p) for p, item in doc["paths"].items() for m, op in item.items() if op.get("x-streaming")
    }
    assert streaming == {("get", "/events"), ("get", "/stats/stream")}


# ------------------------------------------------------------- as served live


def test_both_engines_serve_the_document_of_their_configuration(serve: Serve) -> None:
    server = serve("--store", "none", "--push-token", "t0ken", "--max-body", "5000")
    answer = httpx.get(f"{server.url}/openapi.json", timeout=5)  # no token: the description is public
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    expected = document(ServeConfig(store=None, push_token="t0ken", max_body=5000))
    assert answer.json() == expected
    validate(answer.json())
