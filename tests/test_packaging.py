"""The wheel carries the compiled core, its type stubs and the ``py.typed`` marker.

This builds a real wheel (``pip wheel . --no-deps``, about 20 s: pip sets up an
isolated build environment with setuptools and Cython), so it catches a
``setup.py`` or ``package-data`` change that would ship a pure-Python wheel, an
untyped one, or one whose extension does not import.  It carries no marker and
so runs with every ``pytest``, in CI too.

The repository is copied (without build artefacts) to a temporary folder first:
the build writes ``build/`` and ``*.egg-info`` beside the sources, and the
checkout may be in use by an editable install at the same time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from fnmatch import fnmatch
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

_ARTEFACTS = shutil.ignore_patterns(
    ".git",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "*.so",
    "*.pyd",
    "_core.c",
    ".hypothesis",
    ".benchmarks",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".venv*",
    "*.db*",
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("packaging")
    source = work / "source"
    shutil.copytree(REPO, source, ignore=_ARTEFACTS)
    out = work / "wheels"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--quiet", "-w", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert proc.returncode == 0, f"pip wheel failed:\n{proc.stdout}\n{proc.stderr}"
    wheels = list(out.glob("sse_fast-*.whl"))
    assert len(wheels) == 1, f"expected one sse_fast wheel, got {os.listdir(out)}"
    return wheels[0]


def _names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


def test_wheel_is_platform_specific(wheel: Path) -> None:
    # A compiled extension inside means the wheel cannot be tagged py3-none-any.
    assert not wheel.name.endswith("-none-any.whl"), wheel.name


def test_wheel_contains_the_compiled_core(wheel: Path) -> None:
    names = _names(wheel)
    cores = [n for n in names if fnmatch(n, "sse_fast/_core.*.so") or fnmatch(n, "sse_fast/_core.*.pyd")]
    assert len(cores) == 1, names
    assert "sse_fast/_core.c" not in names  # Cython's generated C: 1 MB that no import uses


def test_wheel_contains_type_information(wheel: Path) -> None:
    names = _names(wheel)
    assert "sse_fast/py.typed" in names
    assert "sse_fast/_core.pyi" in names
    assert "sse_fast/errors.py" in names


def test_compiled_core_from_the_wheel_imports_and_frames(wheel: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(tmp_path)
    code = (
        "import sse_fast._core as c, sys; "
        "assert c.__file__.startswith(sys.argv[1]), c.__file__; "
        "assert c.encode_event('x', 'e', '1') == b'id: 1\\nevent: e\\ndata: x\\n\\n'; "
        "print(c.__file__)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith(".so") or proc.stdout.strip().endswith(".pyd")
