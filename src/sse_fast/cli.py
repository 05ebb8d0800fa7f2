"""The ``sse-fast`` command: ``serve`` runs the edge; ``listen`` and ``push`` talk to one."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import MISSING, fields
from importlib.metadata import version
from typing import Any

from .client_cli import add_listen_parser, add_push_parser
from .config import ServeConfig
from .engines import run

_TYPES: dict[str, type] = {"int": int, "float": float, "int | None": int, "float | None": float}
"""Field annotations (strings, under ``from __future__ import annotations``) that argparse converts."""


def add_serve_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``serve``'s options, one per :class:`~sse_fast.config.ServeConfig` field, from its metadata."""
    p = subparsers.add_parser(
        "serve",
        help="run the SSE edge (granian + uvloop)",
        description="Run the SSE edge: GET /events to subscribe, POST /push to publish, "
        "/stats, /metrics, /healthz and /readyz.",
    )
    for f in fields(ServeConfig):
        meta = dict(f.metadata)
        flag = meta.pop("flag", "--" + f.name.replace("_", "-"))
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        help_text = meta.pop("help")
        if default not in (None, [], True, False):
            help_text += f" (default {default})"
        kwargs: dict[str, Any] = {"dest": f.name, "default": default, "help": help_text, **meta}
        if "action" not in meta and str(f.type) in _TYPES:
            kwargs["type"] = _TYPES[str(f.type)]
        p.add_argument(flag, **kwargs)
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    config = ServeConfig(**{f.name: getattr(args, f.name) for f in fields(ServeConfig)})
    try:
        config.validate()
    except ValueError as exc:
        print(f"sse-fast serve: {exc}", file=sys.stderr)
        return 2
    run(config)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sse-fast", description="Server-Sent Events notification edge.")
    parser.add_argument("--version", action="version", version=f"sse-fast {version('sse-fast')}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_serve_parser(subparsers)
    add_listen_parser(subparsers)
    add_push_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code
