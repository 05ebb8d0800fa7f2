"""The engines that serve the edge: granian (ASGI, the default) and native (uvloop transports).

Both build the same hub and app (:mod:`.setup`); they differ only in how
requests arrive and bytes reach sockets.  Each is imported when chosen, so
running one never loads the other.
"""

from __future__ import annotations

from ..config import ServeConfig
from .setup import raise_open_file_limit


def run(config: ServeConfig) -> None:
    """Run the configured engine in the foreground until SIGINT/SIGTERM."""
    config.validate()
    raise_open_file_limit()
    if config.engine == "native":
        from .native import run as run_native

        run_native(config)
    else:
        from .granian import run as run_granian

        run_granian(config)


__all__ = ["run"]
