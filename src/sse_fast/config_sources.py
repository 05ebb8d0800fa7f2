"""Where a :class:`~sse_fast.config.ServeConfig` comes from: flags, ``SSE_FAST_*`` variables, secret files.

Every field of ``ServeConfig`` is one :class:`Option`, derived from the field
and its metadata, so a field added to the dataclass gets its flag, its
environment variable and (marked ``secret=True``) its ``--<flag>-file`` form
without a line here:

- the variable is ``SSE_FAST_`` and the flag's name upper-cased, ``-`` as
  ``_`` (``--cors-origin``: ``SSE_FAST_CORS_ORIGIN``, ``--no-dashboard``:
  ``SSE_FAST_NO_DASHBOARD``); a repeatable option takes a comma-separated
  list, a switch ``1``/``true``/``0``/``false``, a number the flag's type;
- a flag given on the command line wins over its variable;
- a secret may be read from a file instead (``--push-token-file F``, or
  ``SSE_FAST_PUSH_TOKEN_FILE``): one line, its trailing newline stripped;
  giving a secret and its file, in any mix of flags and variables, is an
  error naming both;
- :data:`~sse_fast.config.CONFIG_ENV` (``SSE_FAST_SERVE``) is how the
  server hands its whole configuration to granian's workers: it is reserved,
  no option may take its name, and it is never read as one.

Errors are :class:`ConfigError` naming the flag and, when it came from one,
the variable or the file.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass, fields
from typing import Any, Literal

from .config import CONFIG_ENV, ServeConfig
from .redact import redact_text

ENV_PREFIX = "SSE_FAST_"
FILE_SUFFIX = "-file"
RESERVED_ENV = frozenset({CONFIG_ENV, "SSE_FAST_PARENT_PID"})
"""Variables the server sets for its own processes: never options."""
TRUE_WORDS = ("1", "true")
FALSE_WORDS = ("0", "false")

Kind = Literal["str", "int", "float", "switch", "list", "optional"]
Source = Literal["default", "flag", "env", "file"]

_NUMBER_TYPES: dict[str, Kind] = {
    "int": "int",
    "int | None": "int",
    "float": "float",
    "float | None": "float",
}


class ConfigError(ValueError):
    """A setting that cannot be used, naming the flag (and the variable or file it came from)."""


@dataclass(frozen=True)
class Option:
    """One ``serve`` option: its field, flag, variable, and how its text becomes a value."""

    name: str
    flag: str
    env: str
    kind: Kind
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    switch_value: Any = None
    """What a switch (``--no-dashboard``) stores when given."""
    const: Any = None
    """What an option whose value is optional (``--access-log``) stores when given without one."""
    secret: bool = False
    """Whether a ``--<flag>-file`` form reads the value from a file."""
    metavar: str | None = None

    @property
    def file_flag(self) -> str:
        return self.flag + FILE_SUFFIX

    @property
    def file_env(self) -> str:
        return env_name(self.file_flag)

    def convert(self, text: str, where: str) -> Any:
        """The value of ``text`` given for this option; ``where`` names it in the error."""
        if self.kind == "int":
            try:
                return int(text)
            except ValueError:
                raise ConfigError(f"{where}: not an integer: {text!r}") from None
        if self.kind == "float":
            try:
                return float(text)
            except ValueError:
                raise ConfigError(f"{where}: not a number: {text!r}") from None
        if self.choices is not None and text not in self.choices:
            raise ConfigError(f"{where}: {text!r} is not one of {', '.join(self.choices)}")
        return text

    def from_env(self, text: str) -> Any:
        """The value of the variable's ``text``: a switch, a list, or one value."""
        where = f"{self.env} ({self.flag})"
        if text == "":
            raise ConfigError(f"{where}: set but empty; unset it for the default")
        if self.kind in ("switch", "optional"):
            word = text.strip().lower()
            if word in TRUE_WORDS:
                return self.switch_value if self.kind == "switch" else self.const
            if word in FALSE_WORDS:
                return self.default
            if self.kind == "switch":
                raise ConfigError(f"{where}: must be 1, true, 0 or false, not {text!r}")
            return text
        if self.kind == "list":
            items = [item.strip() for item in text.split(",")]
            if any(not item for item in items):
                raise ConfigError(f"{where}: an empty item in the comma-separated list {text!r}")
            return [self.convert(item, where) for item in items]
        return self.convert(text, where)


def env_name(flag: str) -> str:
    """``--cors-origin`` -> ``SSE_FAST_CORS_ORIGIN``."""
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def serve_options() -> list[Option]:
    """One :class:`Option` per ``ServeConfig`` field, in the dataclass's order."""
    options: list[Option] = []
    for f in fields(ServeConfig):
        meta = f.metadata
        flag = str(meta.get("flag", "--" + f.name.replace("_", "-")))
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        action = meta.get("action")
        kind: Kind
        switch_value = None
        if action in ("store_true", "store_false"):
            kind, switch_value = "switch", action == "store_true"
        elif action == "append":
            kind = "list"
        elif meta.get("nargs") == "?":
            kind = "optional"
        else:
            kind = _NUMBER_TYPES.get(str(f.type), "str")
        choices = meta.get("choices")
        option = Option(
            name=f.name,
            flag=flag,
            env=env_name(flag),
            kind=kind,
            default=default,
            help=str(meta["help"]),
            choices=tuple(choices) if choices is not None else None,
            switch_value=switch_value,
            const=meta.get("const"),
            secret=bool(meta.get("secret", False)),
            metavar=meta.get("metavar"),
        )
        options.append(option)
    _check_names(options)
    return options


def _check_names(options: Iterable[Option]) -> None:
    """No two options share a variable, and none takes a reserved one (``SSE_FAST_SERVE``)."""
    seen: set[str] = set()
    for option in options:
        names = [option.env, *([option.file_env] if option.secret else [])]
        for name in names:
            if name in RESERVED_ENV or name in seen:
                raise AssertionError(f"{option.flag}: its variable {name} is reserved or taken")
            seen.add(name)


def read_secret_file(path: str, where: str) -> str:
    """A secret held in a file (a Docker or Kubernetes secret): one line, the trailing newline stripped."""
    try:
        with open(path, "rb") as file:
            raw = file.read(64 * 1024 + 1)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path!r}: {exc.strerror or exc}") from None
    if len(raw) > 64 * 1024:
        raise ConfigError(f"{where}: {path!r} is larger than 64 KiB; it should hold one secret")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: {path!r} is not UTF-8 text") from None
    text = text.removesuffix("\n").removesuffix("\r")
    if not text.strip():
        raise ConfigError(f"{where}: {path!r} is empty")
    if "\n" in text or "\r" in text:
        raise ConfigError(f"{where}: {path!r} holds more than one line; it should hold one secret")
    return text


@dataclass
class Resolved:
    """The configuration, and where each setting came from (for error messages)."""

    config: ServeConfig
    sources: dict[str, tuple[Source, str]]
    """Field name -> (source, what named it: the flag, the variable or the file option)."""


def resolve(
    given: Mapping[str, Any], environ: Mapping[str, str], options: list[Option] | None = None
) -> Resolved:
    """Merge flags given on the command line (``given``: field name -> value, files by
    ``<name>_file``) with ``environ`` and the defaults into a :class:`ServeConfig`.

    Raises :class:`ConfigError` for a variable that cannot be read, a secret
    file that cannot, or a secret given twice over.
    """
    options = options if options is not None else serve_options()
    values: dict[str, Any] = {}
    sources: dict[str, tuple[Source, str]] = {}
    for option in options:
        forms: list[tuple[Source, str, Any]] = []  # the value's form, and its file's, each if given
        if option.name in given:
            forms.append(("flag", option.flag, given[option.name]))
        elif option.env in environ:
            forms.append(("env", f"{option.env} ({option.flag})", option.from_env(environ[option.env])))
        if option.secret:
            file_key = option.name + "_file"
            if file_key in given:
                forms.append(("file", option.file_flag, given[file_key]))
            elif option.file_env in environ:
                path = environ[option.file_env]
                if not path:
                    raise ConfigError(f"{option.file_env} ({option.file_flag}): set but empty")
                forms.append(("file", f"{option.file_env} ({option.file_flag})", path))
        if len(forms) > 1:
            raise ConfigError(
                f"{forms[0][1]} and {forms[1][1]}: give the secret or the file that holds it, not both"
            )
        if not forms:
            sources[option.name] = ("default", option.flag)
            continue
        source, where, value = forms[0]
        if source == "file":
            value = read_secret_file(str(value), where)
        values[option.name] = value
        sources[option.name] = (source, where)
    return Resolved(ServeConfig(**values), sources)


def validate(resolved: Resolved, options: list[Option] | None = None) -> None:
    """:meth:`ServeConfig.validate`, its errors naming the variable or file a setting came from
    (and never a password: a store URL's is redacted)."""
    try:
        resolved.config.validate()
    except ValueError as exc:
        message = _name_sources(str(exc), resolved, options or serve_options())
        raise ConfigError(redact_text(message)) from None


def configure(given: Mapping[str, Any], environ: Mapping[str, str]) -> ServeConfig:
    """The configuration ``sse-fast serve`` runs with: :func:`resolve`, then :func:`validate`."""
    resolved = resolve(given, environ)
    validate(resolved)
    return resolved.config


def _name_sources(message: str, resolved: Resolved, options: list[Option]) -> str:
    """``--port: must be ...`` -> ``--port (from SSE_FAST_PORT): must be ...`` when the variable set it."""
    head, sep, rest = message.partition(":")
    if not sep:
        return message
    by_flag = {option.flag: option for option in options}
    named = []
    for flag in head.split("/"):
        option = by_flag.get(flag.strip())
        source = resolved.sources.get(option.name) if option is not None else None
        if option is not None and source is not None and source[0] in ("env", "file"):
            origin = source[1].split(" ", 1)[0]
            named.append(f"{flag} (from {origin})")
        else:
            named.append(flag)
    return "/".join(named) + sep + rest


def near_misses(environ: Mapping[str, str], options: list[Option] | None = None) -> list[str]:
    """Warnings for ``SSE_FAST_*`` variables that look like a misspelt option (they are ignored)."""
    options = options if options is not None else serve_options()
    known = {o.env for o in options} | {o.file_env for o in options if o.secret}
    warnings = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in known or name in RESERVED_ENV:
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.85)
        if close:
            warnings.append(f"{name} is not an option, and is ignored: did you mean {close[0]}?")
    return warnings


def env_help(options: list[Option] | None = None) -> str:
    """What ``sse-fast serve --help`` says of the variables and files, after the options."""
    secrets = [o for o in (options if options is not None else serve_options()) if o.secret]
    first = secrets[0] if secrets else None
    example = f"{first.file_flag} FILE, or {first.file_env}" if first else "--push-token-file FILE"
    return (
        "Every option can also be set by an environment variable: SSE_FAST_ and the option's "
        "name in capitals, '-' as '_' (each option's help names it, e.g. --cors-origin: "
        "SSE_FAST_CORS_ORIGIN). A flag on the command line wins over its variable. Repeatable "
        "options take a comma-separated list; switches 1, true, 0 or false; numbers are checked as "
        "the flag's are; a variable set but empty is an error. Secrets "
        f"({', '.join(o.flag for o in secrets)}) can be read from a file instead ({example}): "
        "its trailing newline is stripped; giving a secret and its file is an error. Prefer the "
        f"variables or files for secrets: the command line is visible to every local user. {CONFIG_ENV} "
        "is reserved: the server hands its configuration to its worker processes in it."
    )


def environment() -> Mapping[str, str]:
    """This process's environment (a seam for tests)."""
    return os.environ
