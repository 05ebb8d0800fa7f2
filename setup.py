"""Build the compiled core (``sse_fast._core``) with Cython.

Metadata lives in ``pyproject.toml``; this file only declares the extension, as
uvloop and httptools do.  ``SSE_FAST_CYTHON_TRACE=1`` builds with line tracing
for profiling.
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

trace = os.environ.get("SSE_FAST_CYTHON_TRACE") == "1"

extensions = [
    Extension(
        "sse_fast._core",
        ["src/sse_fast/_core.pyx"],
        extra_compile_args=["-O3"] if os.name != "nt" else [],
        define_macros=[("CYTHON_TRACE", "1")] if trace else [],
    ),
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": "3", "linetrace": trace},
    ),
)
