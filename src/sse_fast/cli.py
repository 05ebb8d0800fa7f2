"""The ``sse-fast`` command: ``serve`` runs the edge; ``listen`` and ``push`` talk to one."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import version
from typing import Any

from . import config_sources
from .client_cli import add_listen_parser, add_push_parser
from .config import ServeConfig

_TYPES: dict[str, type] = {"int": int, "float": float}
"""Option kinds (:attr:`~sse_fast.config_sources.Option.kind`) that argparse converts."""


def add_serve_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``serve``'s options, one per :class:`~sse_fast.config.ServeConfig` field, from its metadata.

    No option has an argparse default (``SUPPRESS``): what the command line did
    not give is looked for in the environment, then in the field's default
    (:func:`sse_fast.config_sources.resolve`), so a flag wins over its variable.
    """
    p = subparsers.add_parser(
        "serve",
        help="run the SSE edge (granian + uvloop)",
        description="Run the SSE edge: GET /events to subscribe, POST /push to publish, "
        "/stats, /metrics, /healthz and /readyz.",
        epilog=config_sources.env_help(),
    )
    for option in config_sources.serve_options():
        help_text = option.help
        if option.default not in (None, [], True, False):
            help_text += f" (default {option.default})"
        help_text += f" [env {option.env}]"
        kwargs: dict[str, Any] = {"dest": option.name, "default": argparse.SUPPRESS, "help": help_text}
        if option.kind == "switch":
            kwargs["action"] = "store_true" if option.switch_value else "store_false"
        elif option.kind == "list":
            kwargs["action"] = "append"
        elif option.kind == "optional":
            kwargs["nargs"], kwargs["const"] = "?", option.const
        elif option.kind in _TYPES:
            kwargs["type"] = _TYPES[option.kind]
        if option.choices is not None:
            kwargs["choices"] = option.choices
        if option.metavar is not None:
            kwargs["metavar"] = option.metavar
        p.add_argument(option.flag, **kwargs)
        if option.secret:
            p.add_argument(
                option.file_flag,
                dest=option.name + "_file",
                default=argparse.SUPPRESS,
                metavar="FILE",
                help=f"read {option.flag} from FILE (its trailing newline stripped) [env {option.file_env}]",
            )
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    environ = config_sources.environment()
    for warning in config_sources.near_misses(environ):
        print(f"sse-fast serve: warning: {warning}", file=sys.stderr)
    given = {name: value for name, value in vars(args).items() if name not in ("func", "command")}
    try:
        config: ServeConfig = config_sources.configure(given, environ)
    except ValueError as exc:
        print(f"sse-fast serve: {exc}", file=sys.stderr)
        return 2
    from .engines import run  # here, not at the top: `sse-fast listen` and `push` load no server

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
