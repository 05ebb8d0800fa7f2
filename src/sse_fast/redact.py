"""Secrets kept out of what the edge shows: store URLs' passwords, tokens in query strings.

A store URL may carry a password (``redis://:pw@host/0``, ``redis://user:pw@...``,
``postgres://user:pw@...``, or ``?password=`` in its query), and a request's
query string a token (``?token=``).  Whatever the edge prints, logs or answers
— an error message naming a bad URL, a store's error in ``/stats``, an access
log line — goes through these functions first, so that a secret given to the
edge never comes back out of it.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl, urlencode

REDACTED = "***"

SECRET_PARAMS = frozenset(
    {
        "password",
        "passwd",
        "pass",
        "pwd",
        "secret",
        "token",
        "access_token",
        "id_token",
        "refresh_token",
        "jwt",
        "api_key",
        "apikey",
        "key",
        "authorization",
        "auth",
        "sslpassword",
        "ssl_password",
    }
)
"""Query parameters whose value is a secret (compared lower-case): ``sslpassword`` is libpq's,
``ssl_password`` redis-py's (the passphrase of a ``rediss://`` client key, ``ssl_keyfile=``)."""

_USERINFO = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:@/\s?#]*):(?P<password>[^@/\s]*)@"
)
"""``scheme://user:password@`` anywhere in a text (the user may be empty, as in ``redis://:pw@``)."""
_SECRET_PARAM = re.compile(
    r"(?P<key>(?:^|(?<=[?&;\s]))(?:" + "|".join(sorted(SECRET_PARAMS, key=len, reverse=True)) + r")=)"
    r"(?P<value>[^&\s#'\"]*)",
    re.IGNORECASE,
)


def redact_text(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` and every secret
    query parameter (``password=``, ``token=``...) replaced by ``***``."""
    if "://" in text:
        text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", text)
    if "=" in text:
        text = _SECRET_PARAM.sub(lambda m: f"{m['key']}{REDACTED}", text)
    return text


def redact_url(url: str) -> str:
    """A URL fit to show: its password, and the values of secret query parameters, as ``***``."""
    return redact_text(url)


def redact_query(query: str) -> str:
    """A request's query string fit to log: the values of secret parameters as ``***``."""
    if not query or "=" not in query:
        return query
    try:
        pairs = parse_qsl(query, keep_blank_values=True)
    except ValueError:
        return redact_text(query)
    if not any(key.lower() in SECRET_PARAMS for key, _ in pairs):
        return query
    return urlencode(
        [(key, REDACTED if key.lower() in SECRET_PARAMS else value) for key, value in pairs], safe="*"
    )


class RedactingFilter(logging.Filter):
    """A handler filter that redacts every record it passes (message, arguments and traceback).

    Log records are rare (not one per request), so redacting each costs
    nothing that matters; a library's message that quotes a URL is covered too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler's own error path
            return True
        redacted = redact_text(message)
        if redacted != message or record.args:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        return True


def redact_logs(logger: logging.Logger | None = None) -> None:
    """Add a :class:`RedactingFilter` to every handler of ``logger`` (the root logger by default)."""
    target = logger if logger is not None else logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
