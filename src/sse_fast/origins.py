"""Whether a request that changes state comes from a web page of another site (refused: 403).

Without it any page a user visits could ``POST /push`` to an edge it can
reach, with a ``text/plain`` body that needs no CORS preflight.  The rule, as
Go's ``net/http.CrossOriginProtection`` applies it:

1. an ``Origin`` listed with ``--cors-origin`` (or ``*`` listed) may;
2. a browser's ``Sec-Fetch-Site`` says where the request comes from:
   ``same-origin`` (the dashboard's own form) or ``none`` (typed by the
   user) may, any other value may not;
3. without it (older browsers): no ``Origin`` at all is not a browser's
   cross-site request (curl, backends) and may; an ``Origin`` whose host
   (with port) is the request's ``Host`` is the edge's own page and may;
   any other may not.

Host-only comparison and ``Sec-Fetch-Site`` both hold behind a TLS-terminating
proxy (which changes the scheme, not the host the browser named), so no
``X-Forwarded-*`` header, which a client could forge, is trusted.
"""

from __future__ import annotations

from collections.abc import Collection
from urllib.parse import urlsplit

from .errors import HTTPError
from .request import Request

SAME_SITE_VALUES = frozenset({"same-origin", "none"})


def check_same_origin(request: Request, allowed: Collection[str]) -> None:
    """Raise HTTPError 403 for a browser request from a page of another origin (see the module docstring)."""
    origin = request.header(b"origin")
    if origin is not None and (origin in allowed or "*" in allowed):
        return
    fetch_site = request.header(b"sec-fetch-site")
    if fetch_site is not None:
        if fetch_site.lower() in SAME_SITE_VALUES:
            return
        raise _refused(origin or f"a {fetch_site} page")
    if origin is None:
        return
    host = request.header(b"host")
    if host is not None and _host_of(origin) == host.lower():
        return
    raise _refused(origin)


def _host_of(origin: str) -> str | None:
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:
        return None
    return netloc.lower() or None


def _refused(origin: str) -> HTTPError:
    shown = origin if len(origin) <= 100 else origin[:97] + "..."
    return HTTPError(
        403, f"origin: requests from {shown} are refused (cross-site); allow that origin with --cors-origin"
    )
