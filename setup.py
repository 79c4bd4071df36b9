"""Builds jaxrnn's optional native kernels; all other metadata is in pyproject.toml.

The C++ in ``jaxrnn/kernels/_src`` is compiled, at ``pip install``, into one shared library
``jaxrnn/kernels/_rnn*.so`` that jaxrnn loads with ctypes and registers with XLA's FFI (as an
extension module it only defines an empty module, so that importing it does no harm). It
holds an AVX2 and an AVX-512 version of every kernel and picks one by the CPU at load time, so
it is compiled with the compiler's default target, not ``-march=native``: an environment
copied to another x86-64 machine keeps working. The FFI headers are vendored (``_src/xla``),
so nothing is downloaded.

The extension is optional: without a C++17 compiler, on a CPU that is not x86-64, or when the
build fails, ``pip install`` still succeeds and jaxrnn runs everything on XLA
(``jaxrnn.kernels.status()`` says why). ``python setup.py build_ext --inplace`` builds it in a
source checkout.
"""

import platform

from setuptools import Extension, setup

_SRC = "jaxrnn/kernels/_src"


def _extensions() -> list[Extension]:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return []  # the kernels are written for x86-64 vector instructions
    return [
        Extension(
            "jaxrnn.kernels._rnn",
            sources=[
                f"{_SRC}/rnn_ffi.cc",
                f"{_SRC}/rnn_avx512.cc",
                f"{_SRC}/rnn_avx512bf16.cc",
                f"{_SRC}/rnn_amx.cc",
                f"{_SRC}/rnn_avx2.cc",
            ],
            # Included by the sources: a change to them rebuilds the library.
            depends=[f"{_SRC}/rnn_impl.inc", f"{_SRC}/rnn_common.h"],
            include_dirs=[_SRC],
            language="c++",
            extra_compile_args=["-std=c++17", "-O3", "-Wno-return-type", "-Wno-sign-compare"],
            libraries=["pthread"],
            optional=True,
        )
    ]


setup(ext_modules=_extensions())
