"""The route table: which (method, path) goes to which endpoint, for every engine.

Both engines look requests up here — the ASGI app to dispatch them, the
native engine to recognise the subscribe route it streams itself — so a route
is declared once.  Optional parts (the dashboard) add theirs at start-up.
Paths are matched decoded (``%2F`` is ``/``), as ASGI servers hand them over.
Each route carries its :class:`~sse_fast.operations.Operation`: what it takes
and answers, from which ``GET /openapi.json`` describes the API, so a route
cannot be added without its description.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from . import operations as op
from .errors import HTTPError
from .operations import Operation

SUBSCRIBE = "subscribe"
PUSH = "push"
OPENAPI = "openapi"


@dataclass(frozen=True, slots=True)
class Route:
    """One route: ``name`` says which endpoint answers it; ``operation`` what it takes and answers."""

    method: str
    path: str
    name: str
    operation: Operation


EDGE_ROUTES: tuple[Route, ...] = (
    Route("GET", "/events", SUBSCRIBE, op.SUBSCRIBE_OPERATION),
    Route("POST", "/push", PUSH, op.PUSH_OPERATION),
    Route("GET", "/stats", "stats", op.STATS_OPERATION),
    Route("GET", "/metrics", "metrics", op.METRICS_OPERATION),
    Route("GET", "/healthz", "healthz", op.HEALTHZ_OPERATION),
    Route("GET", "/readyz", "readyz", op.READYZ_OPERATION),
    Route("GET", "/openapi.json", OPENAPI, op.OPENAPI_OPERATION),
)


class RouteTable:
    """Routes by (method, path); :meth:`match` answers 404 and 405 as the edge does."""

    def __init__(self, routes: Iterable[Route] = EDGE_ROUTES) -> None:
        self._routes: dict[tuple[str, str], Route] = {}
        for route in routes:
            self.add(route)

    def add(self, route: Route) -> None:
        self._routes[(route.method, route.path)] = route

    def find(self, method: str, path: str) -> Route | None:
        return self._routes.get((method, path))

    def match(self, method: str, path: str) -> Route:
        """The route for ``method path``, or HTTPError 404 (no such path) / 405 (other methods)."""
        route = self._routes.get((method, path))
        if route is not None:
            return route
        allowed = sorted(m for (m, p) in self._routes if p == path)
        if allowed:
            raise HTTPError(
                405,
                f"method: {method} not allowed, use {' or '.join(allowed)}",
                [(b"allow", ", ".join(allowed).encode())],
            )
        raise HTTPError(404, f"path: no route for {path}")

    def __iter__(self) -> Iterator[Route]:
        return iter(self._routes.values())
