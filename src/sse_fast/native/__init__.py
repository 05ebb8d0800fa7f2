"""The native engine moved to :mod:`sse_fast.engines.native`; these names stay importable here."""

from __future__ import annotations

from ..engines.native import Limits, NativeServer, run

__all__ = ["Limits", "NativeServer", "run"]
