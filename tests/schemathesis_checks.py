"""A check of our own for schemathesis runs (loaded through ``SCHEMATHESIS_HOOKS``).

schemathesis's checks compare each answer with the document; this one holds
for every answer the edge gives, documented or not (404 and 405 are not any
operation's): an error is the edge's JSON error format, naming its status.
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis
from schemathesis import Case, CheckContext, Response


class NotTheErrorFormat(AssertionError):
    """An error answer that is not ``{"code": <status>, "msg": "<field>: <rule>", "data": {}}``."""


@schemathesis.check
def error_is_the_json_error_format(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    status = response.status_code
    if status < 400:
        return None
    content_type = (response.headers.get("content-type") or [""])[0]
    if content_type.split(";")[0].strip() != "application/json":
        raise NotTheErrorFormat(f"{status} with content-type {content_type!r}, not application/json")
    try:
        body = json.loads(response.content)
    except ValueError as exc:
        raise NotTheErrorFormat(
            f"{status} with a body that is not JSON ({exc}): {response.content!r}"
        ) from None
    if not (
        isinstance(body, dict)
        and set(body) == {"code", "msg", "data"}
        and body["code"] == status
        and isinstance(body["msg"], str)
        and body["msg"]
        and body["data"] == {}
    ):
        raise NotTheErrorFormat(f"{status} with body {body!r}")
    return None
