"""The ``sse-fast listen`` and ``sse-fast push`` subcommands.

The main CLI adds them with :func:`add_listen_parser` / :func:`add_push_parser`;
each sets ``func`` to a function that takes the parsed arguments and returns
the exit code.  ``python -m sse_fast.client_cli listen|push ...`` runs them
without the rest of the CLI.
"""

from __future__ import annotations

import argparse
import logging
import os
import ssl
import subprocess
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson

from . import json_text
from ._core import ServerSentEvent
from .errors import ClientStoppedError
from .sync_client import SyncClient
from .tls import client_verify

__all__ = ["add_listen_parser", "add_push_parser", "listen", "main", "push"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C


def add_listen_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``listen URL``: print every event of a stream, reconnecting until interrupted."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "listen",
        help="print the events of an SSE stream, reconnecting as a browser would",
        description="Print each event of an SSE stream, reconnecting (with Last-Event-ID) until "
        "interrupted. Exits 0 when the server answers 204, 1 on any other reason to stop.",
    )
    parser.add_argument("url", help="the event stream, e.g. http://127.0.0.1:8000/events?uid=1")
    parser.add_argument("--json", action="store_true", help='one {"event","data","id"} JSON object per line')
    parser.add_argument("--last-event-id", default="", metavar="ID", help="resume after this event id")
    parser.add_argument(
        "-H",
        "--header",
        dest="headers",
        action="append",
        default=[],
        type=_header,
        metavar="'NAME: VALUE'",
        help="extra request header (repeatable)",
    )
    token = parser.add_mutually_exclusive_group()
    token.add_argument("--token", default=None, metavar="T", help="sent as 'Authorization: Bearer T'")
    token.add_argument(
        "--token-command",
        default=None,
        metavar="CMD",
        help="run CMD (a shell command) before every connection and send what it prints as "
        "'Authorization: Bearer ...': a fresh token after the server's token_expired",
    )
    parser.add_argument(
        "--event",
        dest="events",
        action="append",
        default=[],
        metavar="TYPE",
        help="only print events of this type (repeatable; default: all)",
    )
    parser.add_argument(
        "--retry",
        type=_seconds,
        default=3.0,
        metavar="SECONDS",
        help="reconnection time until the server sets one (default: 3)",
    )
    parser.add_argument(
        "--max-attempts",
        type=_positive_int,
        default=None,
        metavar="N",
        help="give up after N failed attempts in a row (default: never)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log connects and reconnects to stderr")
    _add_tls_options(parser)
    parser.set_defaults(func=listen)
    return parser


def add_push_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``push URL``: send one event through a server's push API."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "push",
        help="push one event through the push API",
        description='POST {"uids": [...], "events": [{"event", "data"}]} to URL (URL/push if it has no path) '
        "and print the answer. Exits 0 on 200, 1 otherwise.",
    )
    parser.add_argument("url", help="the server (http://host:port) or its push endpoint")
    parser.add_argument("--event", default="message", metavar="TYPE", help="event type (default: message)")
    parser.add_argument("--data", required=True, type=_json, metavar="JSON", help="event data, as JSON")
    parser.add_argument(
        "--uid",
        dest="uids",
        action="append",
        default=[],
        metavar="U",
        help="recipient user id (repeatable; none: everyone)",
    )
    parser.add_argument(
        "--id",
        default=None,
        metavar="ID",
        help="an event id of your own, resumable; not of the form <epoch>-<seq> (default: the server's)",
    )
    parser.add_argument("--token", default=None, metavar="T", help="sent as 'Authorization: Bearer T'")
    parser.add_argument("--timeout", type=_seconds, default=10.0, metavar="SECONDS", help="request timeout")
    _add_tls_options(parser)
    parser.set_defaults(func=push)
    return parser


def _add_tls_options(parser: argparse.ArgumentParser) -> None:
    """How an ``https://`` server's certificate is checked (default: against the system's CAs)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--cacert",
        metavar="FILE",
        default=None,
        help="trust the CA certificates in this PEM file (e.g. a self-signed server's certificate) "
        "instead of the system's",
    )
    group.add_argument(
        "-k", "--insecure", action="store_true", help="do not check the server's certificate at all"
    )


def _verify(args: argparse.Namespace) -> ssl.SSLContext | bool | None:
    """The ``verify`` for httpx, or None after printing why ``--cacert`` cannot be used."""
    try:
        return client_verify(args.cacert, args.insecure)
    except ValueError as exc:
        print(f"sse-fast {args.command}: error: {exc}", file=sys.stderr)
        return None


# -- listen ---------------------------------------------------------------


def listen(args: argparse.Namespace) -> int:
    """Run ``listen``; the exit code says why it stopped (0: 204, 1: error, 130: Ctrl-C)."""
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.ERROR,
        format="sse-fast listen: %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        # The one-line error below says why we stop; keep the client's own warning out of the way.
        logging.getLogger("sse_fast.client").setLevel(logging.ERROR)
    verify = _verify(args)
    if verify is None:
        return EXIT_ERROR
    client = SyncClient(
        args.url,
        headers=dict(args.headers),
        token=command_token(args.token_command) if args.token_command else args.token,
        last_event_id=args.last_event_id,
        retry=args.retry,
        max_attempts=args.max_attempts,
        verify=verify,
    )
    write = _json_line if args.json else _human_line
    out = sys.stdout

    def show(event: ServerSentEvent) -> None:
        out.write(write(event))
        out.flush()

    for event_type in args.events or ["*"]:
        client.on(event_type, show)
    try:
        client.run()
    except KeyboardInterrupt:
        client.close()
        return EXIT_INTERRUPTED
    except ClientStoppedError as exc:
        print(f"sse-fast listen: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, and keep Python's exit flush from complaining.
        client.close()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_ERROR
    return EXIT_OK


def command_token(command: str) -> Callable[[], str]:
    """A token provider that runs ``command`` in a shell and returns its output, stripped."""

    def token() -> str:
        done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=30, check=False)
        if done.returncode != 0:
            detail = done.stderr.strip().splitlines()[-1:] or [""]
            raise RuntimeError(f"--token-command exited with {done.returncode} {detail[0]}".rstrip())
        return done.stdout.strip()

    return token


def _json_line(event: ServerSentEvent) -> str:
    return orjson.dumps({"event": event.event, "data": event.data, "id": event.id}).decode() + "\n"


def _human_line(event: ServerSentEvent) -> str:
    label = f"{event.event} [{event.id}]" if event.id else event.event
    return f"{label}: {event.data}\n"


# -- push -----------------------------------------------------------------


def push(args: argparse.Namespace) -> int:
    """Run ``push``; prints the server's JSON answer, exit 0 on 200 and 1 otherwise."""
    event: dict[str, Any] = {"event": args.event, "data": args.data}
    if args.id is not None:
        event["id"] = args.id
    body = {"uids": list(args.uids), "events": [event]}
    headers = {"Content-Type": "application/json"}
    if args.token:
        headers["Authorization"] = f"Bearer {args.token}"
    url = push_url(args.url)
    verify = _verify(args)
    if verify is None:
        return EXIT_ERROR
    try:
        response = httpx.post(
            url, content=json_text.dumps(body).encode(), headers=headers, timeout=args.timeout, verify=verify
        )
    except httpx.HTTPError as exc:
        print(f"sse-fast push: error: {url}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(response.text.rstrip("\n"))
    if response.status_code == 200:
        return EXIT_OK
    print(f"sse-fast push: error: HTTP {response.status_code}: {_server_msg(response)}", file=sys.stderr)
    return EXIT_ERROR


def push_url(url: str) -> str:
    """``http://host:port`` means its ``/push``; a URL with a path is used as it is."""
    parts = urlsplit(url)
    if parts.path in ("", "/"):
        parts = parts._replace(path="/push")
    return urlunsplit(parts)


def _server_msg(response: httpx.Response) -> str:
    try:
        obj = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        obj = None
    if isinstance(obj, dict) and isinstance(obj.get("msg"), str):
        return str(obj["msg"])
    return response.reason_phrase or "request failed"


# -- argument types (their errors name the option through argparse) ---------------


def _json(text: str) -> Any:
    try:
        return json_text.loads(text.encode("utf-8", "surrogateescape"))
    except orjson.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from None


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected 'Name: value', got {text!r}")
    return name.strip(), value.strip()


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    """``python -m sse_fast.client_cli listen|push ...``: the two subcommands on their own."""
    parser = argparse.ArgumentParser(prog="sse-fast")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_listen_parser(subparsers)
    add_push_parser(subparsers)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
