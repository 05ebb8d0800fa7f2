"""``python -m sse_fast`` is the ``sse-fast`` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
