"""``sse-fast serve`` options from ``SSE_FAST_*`` variables and secret files, and their errors.

These run the real CLI (``sse_fast.cli.main``) in-process: a bad setting ends
it before any engine starts.  tests/test_operations.py runs servers
configured this way on both engines.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from sse_fast import cli, engines
from sse_fast.config import CONFIG_ENV, ServeConfig
from sse_fast.config_sources import (
    ConfigError,
    Option,
    env_name,
    near_misses,
    read_secret_file,
    resolve,
    serve_options,
    validate,
)


def resolved(environ: dict[str, str], **given: Any) -> ServeConfig:
    result = resolve(given, environ)
    validate(result)
    return result.config


def refusal(environ: dict[str, str], *argv: str, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> str:
    """Run ``sse-fast serve ARGV`` with ``environ``; it must refuse (exit 2): its message."""
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    ran: list[ServeConfig] = []
    monkeypatch.setattr(engines, "run", ran.append)
    assert cli.main(["serve", *argv]) == 2
    assert not ran
    err: str = capsys.readouterr().err
    assert err.startswith("sse-fast serve: ")
    return err


# ------------------------------------------------------------------ names


def test_every_option_has_a_variable_named_after_its_flag() -> None:
    options = {o.name: o for o in serve_options()}
    assert set(options) == {f.name for f in fields(ServeConfig)}
    assert options["push_token"].env == "SSE_FAST_PUSH_TOKEN"
    assert options["cors_origins"].env == "SSE_FAST_CORS_ORIGIN"  # the flag's name, not the field's
    assert options["keepalive_timeout"].env == "SSE_FAST_KEEP_ALIVE_TIMEOUT"
    assert options["dashboard"].env == "SSE_FAST_NO_DASHBOARD"
    assert all(o.env == env_name(o.flag) for o in options.values())
    secrets = {o.name for o in options.values() if o.secret}
    assert {"push_token", "jwt_secret"} <= secrets
    assert options["jwt_secret"].file_env == "SSE_FAST_JWT_SECRET_FILE"


def test_help_names_every_variable_and_the_rules() -> None:
    parser = argparse.ArgumentParser()
    cli.add_serve_parser(parser.add_subparsers())
    with pytest.raises(SystemExit), contextlib.redirect_stdout(io.StringIO()) as out:
        parser.parse_args(["serve", "--help"])
    text = " ".join(out.getvalue().split())
    for option in serve_options():
        assert f"[env {option.env}]" in text
        if option.secret:
            assert option.file_flag in text and option.file_env in text
    for rule in ("comma-separated", "1, true, 0 or false", "wins over", CONFIG_ENV, "--push-token-file"):
        assert rule in text


def test_the_workers_variable_is_reserved_and_never_read_as_an_option() -> None:
    assert all(CONFIG_ENV not in (o.env, o.file_env) for o in serve_options())
    config = resolved({CONFIG_ENV: '{"port": 1}', "SSE_FAST_PORT": "9090"})
    assert config.port == 9090
    assert near_misses({CONFIG_ENV: "{}"}) == []
    with pytest.raises(AssertionError, match="reserved"):
        from sse_fast.config_sources import _check_names

        _check_names([Option("serve", "--serve", CONFIG_ENV, "str", None, "")])


# ---------------------------------------------------------------- values


def test_values_of_each_kind_from_the_environment() -> None:
    config = resolved(
        {
            "SSE_FAST_PORT": "9091",
            "SSE_FAST_HEARTBEAT": "2.5",
            "SSE_FAST_CORS_ORIGIN": "https://a.example, https://b.example",
            "SSE_FAST_NO_DASHBOARD": "TRUE",
            "SSE_FAST_ENGINE": "native",
            "SSE_FAST_PUSH_TOKEN": "from-env",
            "SSE_FAST_FANOUT_WRITE_PACE": "0",
            "SSE_FAST_ACCESS_LOG": "1",
            "SSE_FAST_LOG_FORMAT": "json",
        }
    )
    assert (config.port, config.heartbeat, config.engine, config.push_token) == (
        9091,
        2.5,
        "native",
        "from-env",
    )
    assert config.cors_origins == ["https://a.example", "https://b.example"]
    assert config.dashboard is False
    assert config.fanout_write_pace == 0.0
    assert (config.access_log, config.log_format) == ("-", "json")
    assert resolved({"SSE_FAST_NO_DASHBOARD": "0"}).dashboard is True
    assert resolved({"SSE_FAST_ACCESS_LOG": "false"}).access_log is None
    assert resolved({"SSE_FAST_ACCESS_LOG": "/var/log/sse.log"}).access_log == "/var/log/sse.log"


def test_a_flag_wins_over_its_variable() -> None:
    environ = {"SSE_FAST_PORT": "9092", "SSE_FAST_CORS_ORIGIN": "https://env.example", "SSE_FAST_PORT_X": "1"}
    config = resolved(environ, port=7000, cors_origins=["https://flag.example"])
    assert config.port == 7000
    assert config.cors_origins == ["https://flag.example"]  # not appended to the variable's
    assert resolved(environ).port == 9092


@pytest.mark.parametrize(
    ("environ", "argv", "says"),
    [
        ({"SSE_FAST_PORT": "eighty"}, (), "SSE_FAST_PORT (--port): not an integer: 'eighty'"),
        ({"SSE_FAST_PORT": "70000"}, (), "--port (from SSE_FAST_PORT): must be between 0"),
        ({"SSE_FAST_HEARTBEAT": "-1"}, (), "--heartbeat (from SSE_FAST_HEARTBEAT): must be a positive"),
        ({"SSE_FAST_MAX_BODY": "1.5"}, (), "SSE_FAST_MAX_BODY (--max-body): not an integer"),
        ({"SSE_FAST_NO_DASHBOARD": "yes"}, (), "SSE_FAST_NO_DASHBOARD (--no-dashboard): must be 1, true, 0"),
        ({"SSE_FAST_ENGINE": "tornado"}, (), "SSE_FAST_ENGINE (--engine): 'tornado' is not one of granian"),
        (
            {"SSE_FAST_CORS_ORIGIN": "https://a.example,,"},
            (),
            "SSE_FAST_CORS_ORIGIN (--cors-origin): an empty",
        ),
        ({"SSE_FAST_PUSH_TOKEN": ""}, (), "SSE_FAST_PUSH_TOKEN (--push-token): set but empty"),
        ({}, ("--push-token", ""), "--push-token: must not be empty"),
        ({"SSE_FAST_KEEP_ALIVE_TIMEOUT": "0"}, (), "--keep-alive-timeout (from SSE_FAST_KEEP_ALIVE_TIMEOUT)"),
        (
            {"SSE_FAST_ACCESS_LOG": "/nonexistent-dir/access.log"},
            (),
            "--access-log (from SSE_FAST_ACCESS_LOG): cannot write to '/nonexistent-dir/access.log'",
        ),
    ],
)
def test_bad_values_are_refused_naming_the_variable(
    environ: dict[str, str], argv: tuple[str, ...], says: str, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    assert says in refusal(environ, *argv, monkeypatch=monkeypatch, capsys=capsys)


def test_a_misspelt_variable_is_warned_about(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.setenv("SSE_FAST_PUSH_TOKN", "x")
    monkeypatch.setattr(engines, "run", lambda config: None)
    assert cli.main(["serve"]) == 0
    assert "SSE_FAST_PUSH_TOKN is not an option, and is ignored: did you mean SSE_FAST_PUSH_TOKEN?" in (
        capsys.readouterr().err
    )


# ---------------------------------------------------------- secret files


def test_secrets_from_files_lose_their_trailing_newline(tmp_path: Path) -> None:
    token, secret = tmp_path / "token", tmp_path / "secret"
    token.write_text("t0ken\n")
    secret.write_bytes(b"s3cret\r\n")
    config = resolved({"SSE_FAST_JWT_SECRET_FILE": str(secret)}, push_token_file=str(token))
    assert (config.push_token, config.jwt_secret) == ("t0ken", "s3cret")
    assert (
        resolved({"SSE_FAST_PUSH_TOKEN_FILE": "/nowhere"}, push_token_file=str(token)).push_token == "t0ken"
    )


@pytest.mark.parametrize(
    ("environ", "argv", "says"),
    [
        ({}, ("--push-token", "Zq9v", "--push-token-file", "{file}"), "--push-token and --push-token-file:"),
        (
            {"SSE_FAST_PUSH_TOKEN": "Zq9v"},
            ("--push-token-file", "{file}"),
            "SSE_FAST_PUSH_TOKEN (--push-token) and",
        ),
        (
            {"SSE_FAST_JWT_SECRET_FILE": "{file}"},
            ("--jwt-secret", "Zq9v"),
            "--jwt-secret and SSE_FAST_JWT_SECRET_FILE",
        ),
        (
            {"SSE_FAST_JWT_SECRET": "Zq9v", "SSE_FAST_JWT_SECRET_FILE": "{file}"},
            (),
            "SSE_FAST_JWT_SECRET (--jwt-secret) and SSE_FAST_JWT_SECRET_FILE (--jwt-secret-file)",
        ),
        ({}, ("--push-token-file", "{missing}"), "--push-token-file: cannot read"),
        ({"SSE_FAST_JWT_SECRET_FILE": "{empty}"}, (), "SSE_FAST_JWT_SECRET_FILE (--jwt-secret-file): "),
        ({}, ("--push-token-file", "{two_lines}"), "holds more than one line"),
        ({}, ("--push-token-file", "{directory}"), "--push-token-file: cannot read"),
    ],
)
def test_secret_file_refusals(
    environ: dict[str, str],
    argv: tuple[str, ...],
    says: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
) -> None:
    (tmp_path / "file").write_text("Zq9vValue\n")
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "two_lines").write_text("a\nb\n")
    paths = {name: str(tmp_path / name) for name in ("file", "empty", "two_lines", "missing")} | {
        "directory": str(tmp_path)
    }
    environ = {k: v.format(**paths) for k, v in environ.items()}
    argv = tuple(a.format(**paths) for a in argv)
    message = refusal(environ, *argv, monkeypatch=monkeypatch, capsys=capsys)
    assert says in message
    assert "Zq9v" not in message  # never the secret itself


def test_an_empty_secret_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        read_secret_file(str(empty), "--push-token-file")


# ------------------------------------------------------- store passwords


def test_a_bad_store_url_is_named_without_its_password(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    for url in (
        "redis://:S3CRETPW@127.0.0.1:99999/0",
        "redis://user:S3CRETPW@127.0.0.1:6379/zero",
        "rediss://:S3CRETPW@127.0.0.1/0?max_age=x",
        "redis://127.0.0.1/0?password=S3CRETPW&max_events=x",
        "postgres://app:S3CRETPW@db/app",
    ):
        message = refusal({"SSE_FAST_STORE": url}, monkeypatch=monkeypatch, capsys=capsys)
        assert "store:" in message and "***" in message
        assert "S3CRETPW" not in message


@pytest.mark.parametrize(
    ("argv", "environ", "says"),
    [
        ((), {"SSE_FAST_HEARTBEAT": "often"}, "SSE_FAST_HEARTBEAT (--heartbeat): not a number: 'often'"),
        (
            ("--store", "redis://:S3CRETPW@127.0.0.1:99999/0"),
            {},
            "store: 'redis://:***@127.0.0.1:99999/0': port",
        ),
    ],
)
def test_the_real_command_refuses(argv: tuple[str, ...], environ: dict[str, str], says: str) -> None:
    """The entry point run outside pytest's process: its message on standard error, exit 2."""
    result = subprocess.run(
        [sys.executable, "-m", "sse_fast", "serve", *argv],
        env={**environ, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert says in result.stderr
    assert "S3CRETPW" not in result.stderr + result.stdout
