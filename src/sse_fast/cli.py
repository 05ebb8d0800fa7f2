"""The ``sse-fast`` command: ``serve`` runs the edge; ``listen`` and ``push`` talk to one."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from .client_cli import add_listen_parser, add_push_parser
from .server import DEFAULT_STORE, ServeConfig, run


def add_serve_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the SSE edge (granian + uvloop)",
        description="Run the SSE edge: GET /events to subscribe, POST /push to publish, "
        "/stats, /metrics and /healthz.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port to bind (default 8080)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (only 1 until the shared bus)")
    p.add_argument("--heartbeat", type=float, default=15.0, help="seconds of silence before a heartbeat")
    p.add_argument("--push-token", help="require 'Authorization: Bearer TOKEN' on /push, /stats, /metrics")
    p.add_argument("--jwt-secret", help="subscribers authenticate with an HS256 JWT; its 'sub' is the uid")
    p.add_argument(
        "--cors-origin", action="append", default=[], metavar="ORIGIN",
        help="allow browsers from ORIGIN (repeatable; '*' for any when --jwt-secret is not set)",
    )
    p.add_argument("--max-connections", type=int, default=10_000, help="subscriber limit (default 10000)")
    p.add_argument("--max-body", type=int, default=1024 * 1024, help="largest /push body in bytes")
    p.add_argument(
        "--store", default=DEFAULT_STORE,
        help=f"event history for Last-Event-ID resend: sqlite:///PATH, memory://, redis://HOST:PORT/DB "
        f"or 'none' (default {DEFAULT_STORE})",
    )
    p.add_argument("--ring-frames", type=int, default=4096, help="frames a subscriber may fall behind")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--no-dashboard", dest="dashboard", action="store_false",
        help="do not serve the live dashboard (GET /, /dashboard) and its stats stream (/stats/stream)",
    )
    p.add_argument(
        "--engine", choices=["granian", "native"], default="granian",
        help="granian (default: HTTP/1.1 and 2, TLS) or native (uvloop + httptools, HTTP/1.1, "
        "the most subscribers per core)",
    )
    p.add_argument(
        "--http", choices=["1", "2", "auto"], default="1",
        help="granian engine: HTTP/1.1 only (default: the least memory per stream), 2, or auto-detect",
    )
    p.add_argument("--header-timeout", type=float, default=10.0,
                   help="native engine: seconds a client may take to send its request headers")
    p.add_argument("--keep-alive-timeout", type=float, default=5.0,
                   help="native engine: seconds an idle keep-alive connection is kept")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    config = ServeConfig(
        host=args.host,
        port=args.port,
        workers=args.workers,
        heartbeat=args.heartbeat,
        push_token=args.push_token,
        jwt_secret=args.jwt_secret,
        cors_origins=list(args.cors_origin),
        max_connections=args.max_connections,
        max_body=args.max_body,
        store=None if args.store in ("", "none") else args.store,
        ring_frames=args.ring_frames,
        log_level=args.log_level,
        dashboard=args.dashboard,
        engine=args.engine,
        http=args.http,
        header_timeout=args.header_timeout,
        keepalive_timeout=args.keep_alive_timeout,
    )
    try:
        config.validate()
        if config.store:
            from .stores import open_store

            open_store(config.store)  # fail here, with the reason, not in a worker
    except ValueError as exc:
        print(f"sse-fast serve: {exc}", file=sys.stderr)
        return 2
    run(config)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sse-fast", description="Server-Sent Events notification edge.")
    parser.add_argument("--version", action="version", version=f"sse-fast {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_serve_parser(subparsers)
    add_listen_parser(subparsers)
    add_push_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code
