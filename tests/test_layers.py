"""The layers of docs/ARCHITECTURE.md, checked: imports point down only, and no module-level cycle.

Read from the source with ``ast`` (nothing is imported), so a new upward
import or circle fails here rather than in review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "sse_fast"

# Higher ranks may import lower ones (and their own rank, without cycles).
RANKS: dict[str, int] = {
    "sse_fast._core": 0,
    "sse_fast.errors": 1,
    "sse_fast.json_text": 1,
    "sse_fast.protocol": 0,
    "sse_fast.ids": 1,
    "sse_fast.event": 1,
    "sse_fast.request": 1,
    "sse_fast.redact": 1,
    "sse_fast.config_sources": 3,
    "sse_fast.access_log": 5,
    "sse_fast.responses": 1,
    "sse_fast.deadlines": 1,
    "sse_fast.metrics": 1,
    "sse_fast.jwt_keys": 1,
    "sse_fast.origins": 1,
    "sse_fast.parentwatch": 1,
    "sse_fast.wakeup": 1,  # a cancel-safe timed wait (asyncio only): the bus and anything above
    "sse_fast.tls": 1,  # TLS contexts from files (standard library only): server and clients alike
    "sse_fast.stores": 2,
    "sse_fast.bus": 3,
    "sse_fast.config": 3,
    "sse_fast.hub": 4,
    "sse_fast.operations": 5,
    "sse_fast.routes": 5,
    "sse_fast.openapi": 5,
    "sse_fast.auth": 5,
    "sse_fast.endpoints": 6,
    "sse_fast.asgi": 7,
    "sse_fast.dashboard": 8,
    "sse_fast.engines": 9,
    "sse_fast.server": 10,
    "sse_fast.native": 10,
    "sse_fast.cli": 11,
    "sse_fast.__main__": 12,
    "sse_fast": 12,  # the package's __init__: re-exports from every layer
    # The client side: may use the bottom layer and itself, never the server's.
    "sse_fast.reconnect": 1,
    "sse_fast.eventsource": 1,
    "sse_fast.base_client": 1,
    "sse_fast.client": 1,
    "sse_fast.sync_client": 1,
    "sse_fast.client_cli": 1,
}
CLIENT_SIDE = (
    "sse_fast.reconnect",
    "sse_fast.eventsource",
    "sse_fast.base_client",
    "sse_fast.client",
    "sse_fast.sync_client",
    "sse_fast.client_cli",
)
CLIENT_MAY_USE = (
    "sse_fast._core",
    "sse_fast.errors",
    "sse_fast.json_text",
    "sse_fast.protocol",
    "sse_fast.tls",
    *CLIENT_SIDE,
)


def module_name(path: Path) -> str:
    parts = ["sse_fast", *path.relative_to(PACKAGE).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def rank(module: str) -> int:
    best = max((key for key in RANKS if module == key or module.startswith(key + ".")), key=len)
    return RANKS[best]


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported sse_fast module, at module level?) for every import in the file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found: list[tuple[str, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            names = [target]
            if node.module is None:  # from . import x: x may be a module
                names = [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for target in names:
            if target == "sse_fast" or target.startswith("sse_fast."):
                found.append((target, id(node) in top))
    return found


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module: str) -> None:
    for target, _ in imports(MODULES[module]):
        if module in CLIENT_SIDE or module.startswith(CLIENT_SIDE):
            assert target.startswith(CLIENT_MAY_USE), f"{module} (client side) imports {target}"
        elif module != "sse_fast":
            assert rank(target) <= rank(module), f"{module} imports {target}, a layer above it"


def test_no_import_cycle_at_module_level() -> None:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        edges = set()
        for target, at_top in imports(path):
            while target not in MODULES and "." in target:  # `from .x import name`: the module x
                target = target.rpartition(".")[0]
            if at_top and target != module and not module.startswith(target + "."):
                edges.add(target)
        graph[module] = edges
    done: set[str] = set()

    def visit(node: str, trail: list[str]) -> None:
        if node in trail:
            pytest.fail("import cycle: " + " -> ".join([*trail[trail.index(node) :], node]))
        if node in done:
            return
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, [*trail, node])
        done.add(node)

    for module in sorted(graph):
        visit(module, [])
