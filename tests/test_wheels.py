"""The wheels of ``scripts/build_wheels.sh``, installed as a user installs them, serve and deliver.

For each CPython (3.10 to 3.13): a fresh venv of that Python, ``pip install
--only-binary sse-fast sse-fast`` from the wheelhouse with no C compiler
reachable (``CC``/``CXX`` are ``false``, and ``cc``/``gcc``/... on ``PATH``
fail), so pip must pick the manylinux wheel by its tags or give up; then the
compiled core imports from the venv, and that venv's ``sse-fast serve`` (each
engine) delivers a push to a subscriber over a real socket.

The wheels must be built first; ``SSE_FAST_WHEELHOUSE`` names their folder
(CI: ``scripts/build_wheels.sh`` then ``SSE_FAST_WHEELHOUSE=wheelhouse``).
Without it the tests skip; with it, a missing wheel or Python fails.
``SSE_FAST_WHEEL_PYTHONS`` narrows the versions ("3.12 3.13").  The four
venvs are installed side by side, once per module (~20-40 s in all with a
warm pip cache).
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ALL_ENGINES, ServerProcess, Subscribe, split_opening, unique_uid

PYTHONS = os.environ.get("SSE_FAST_WHEEL_PYTHONS", "3.10 3.11 3.12 3.13").split()
WHEELHOUSE = os.environ.get("SSE_FAST_WHEELHOUSE")
PLATFORM_TAG = f"manylinux_2_17_{platform.machine()}"
COMPILERS = ("cc", "gcc", "c++", "g++", "clang", "clang++", f"{platform.machine()}-linux-gnu-gcc")

pytestmark = pytest.mark.skipif(
    not WHEELHOUSE, reason="set SSE_FAST_WHEELHOUSE to the folder scripts/build_wheels.sh filled"
)


@dataclass
class Install:
    """One Python's venv with the wheel installed (or why it is not)."""

    python: str
    wheel: Path
    venv: Path
    returncode: int
    log: str

    @property
    def bin(self) -> Path:
        return self.venv / "bin"


def find_python(version: str) -> str | None:
    """The newest pyenv CPython ``version``, else ``pythonX.Y`` on PATH."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found = sorted(
        root.glob(f"{version}.*/bin/python3"),
        key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.parent.name)],
    )
    return str(found[-1]) if found else shutil.which(f"python{version}")


def wheel_for(version: str) -> Path:
    assert WHEELHOUSE
    tag = "cp" + version.replace(".", "")
    wheels = sorted(Path(WHEELHOUSE).glob(f"sse_fast-*-{tag}-{tag}-*.whl"))
    assert len(wheels) == 1, f"expected one {tag} wheel in {WHEELHOUSE}, found {[w.name for w in wheels]}"
    return wheels[0]


def wheel_tags(wheel: Path) -> set[str]:
    """The tags a wheel's file name declares (``py-abi-plat1.plat2``, each platform a tag)."""
    python, abi, platforms = wheel.name.removesuffix(".whl").split("-")[-3:]
    return {f"{python}-{abi}-{plat}" for plat in platforms.split(".")}


def without_compiler(tmp: Path) -> dict[str, str]:
    """The environment of a machine with no C compiler: each one on PATH fails, as does $CC."""
    shadow = tmp / "no-compiler"
    shadow.mkdir()
    for name in COMPILERS:
        fake = shadow / name
        fake.write_text("#!/bin/sh\necho 'no C compiler on this machine' >&2\nexit 1\n")
        fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV", "PYTHON"))}
    return {
        **env,
        "CC": "false",
        "CXX": "false",
        "PATH": f"{shadow}{os.pathsep}{os.environ['PATH']}",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }


@pytest.fixture(scope="module")
def installs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Install]]:
    """Every Python's venv, created and installed side by side."""
    tmp = tmp_path_factory.mktemp("wheels")
    env = without_compiler(tmp)
    assert subprocess.run(["gcc", "--version"], env=env, capture_output=True).returncode != 0
    running: dict[str, tuple[str, Path, Path, subprocess.Popen[str]]] = {}
    for version in PYTHONS:
        python = find_python(version)
        assert python, f"Python {version} not found (pyenv versions, or python{version} on PATH)"
        wheel = wheel_for(version)
        venv = tmp / f"venv-{version}"
        project_version = wheel.name.split("-")[1]
        # As a user on a machine without a compiler: from an index (here the
        # wheelhouse, beside PyPI for the dependencies), binary or nothing.
        script = (
            f'"{python}" -m venv "{venv}" && "{venv}/bin/python" -m pip install '
            f'--find-links "{wheel.parent}" --only-binary sse-fast "sse-fast=={project_version}"'
        )
        proc = subprocess.Popen(
            ["sh", "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        running[version] = (python, wheel, venv, proc)
    done: dict[str, Install] = {}
    for version, (python, wheel, venv, proc) in running.items():
        log, _ = proc.communicate(timeout=600)
        done[version] = Install(python, wheel, venv, proc.returncode, log)
    yield done


def installed(installs: dict[str, Install], version: str) -> Install:
    install = installs[version]
    assert install.returncode == 0, f"pip install failed on {install.python}:\n{install.log[-4000:]}"
    assert not re.search(r"Building wheels? for sse-fast", install.log), install.log
    return install


@pytest.mark.timeout(900)  # a fresh venv and its dependencies, niced beside the main run
@pytest.mark.parametrize("version", PYTHONS)
def test_the_wheel_installs_without_a_compiler_and_its_core_imports(
    installs: dict[str, Install], version: str
) -> None:
    install = installed(installs, version)
    code = (
        "import importlib.metadata as md, json, sys\n"
        "import sse_fast, sse_fast._core as core\n"
        "dist = md.distribution('sse-fast')\n"
        "print(json.dumps({'core': core.__file__, 'prefix': sys.prefix, 'version': sys.version_info[:2],\n"
        "    'tags': [t.split(': ', 1)[1] for t in dist.read_text('WHEEL').splitlines()\n"
        "             if t.startswith('Tag:')],\n"
        "    'frame': core.encode_event('x', 'e', '1').decode()}))\n"
    )
    python = str(install.bin / "python")
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60, cwd=install.venv)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    assert found["version"] == [int(n) for n in version.split(".")]
    assert found["core"].startswith(str(install.venv)), found["core"]
    assert Path(found["core"]).suffix == ".so"
    tag = "cp" + version.replace(".", "")
    assert f"{tag}-{tag}-{PLATFORM_TAG}" in found["tags"], found["tags"]
    assert set(found["tags"]) == wheel_tags(install.wheel)  # the wheelhouse's file, not a build of its own
    assert found["frame"] == "id: 1\nevent: e\ndata: x\n\n"


@pytest.mark.parametrize("engine", ALL_ENGINES)
@pytest.mark.parametrize("version", PYTHONS)
def test_the_installed_server_delivers_a_push(
    installs: dict[str, Install], version: str, engine: str, subscribe: Subscribe, tmp_path: Path
) -> None:
    install = installed(installs, version)
    command = [str(install.bin / "sse-fast"), "serve", "--log-level", "warning"]
    server = ServerProcess(["--engine", engine], tmp_path, command=command)
    try:
        server.start()
        uid = unique_uid()
        reader = subscribe(f"{server.url}/events?uid={uid}")
        assert reader.status == 200
        reader.wait_subscribed()
        answer = server.push([{"event": "greeting", "data": {"python": version}}], uids=[uid])
        assert answer.status_code == 200, answer.text
        [event_id] = answer.json()["data"]["ids"]
        reader.wait_events(1)
        expected = f'id: {event_id}\nevent: greeting\ndata: {{"python":"{version}"}}\n\n'.encode()
        assert split_opening(bytes(reader.raw))[1] == expected
    finally:
        server.kill()
