"""Where ``sse-fast serve``'s parts lived before the engines got a package of their own.

Kept so that ``granian ... sse_fast.server:create_app`` and imports of these
names keep working: the configuration is :mod:`sse_fast.config`, the engines
are :mod:`sse_fast.engines`.
"""

from __future__ import annotations

from .config import DEFAULT_STORE, ServeConfig
from .engines import run
from .engines.granian import create_app
from .engines.setup import SHUTDOWN_GRACE, build_app, build_hub, raise_open_file_limit, tune_gc

__all__ = [
    "DEFAULT_STORE",
    "SHUTDOWN_GRACE",
    "ServeConfig",
    "build_app",
    "build_hub",
    "create_app",
    "raise_open_file_limit",
    "run",
    "tune_gc",
]
