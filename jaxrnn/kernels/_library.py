"""Finding, loading and registering the compiled kernel library.

``pip install`` compiles ``_src/*.cc`` into ``jaxrnn/kernels/_rnn<suffix>.so`` (``setup.py``;
the build is optional: without a compiler, or where it fails, the install still succeeds). At
first use this module loads it with :mod:`ctypes`, registers its FFI targets with XLA for
the CPU platform and checks that the CPU has an instruction set the library was built for.
Every failure is remembered as a sentence (:func:`status`), and the dispatch then keeps the XLA
path.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.machinery
from pathlib import Path
from typing import NamedTuple

import jax

__all__ = ["Status", "configure", "library_path", "status"]

_HERE = Path(__file__).resolve().parent
_STEM = "_rnn"
# The FFI targets the library defines (their handler symbols have the same names).
TARGETS = (
    "jaxrnn_lstm_forward",
    "jaxrnn_lstm_backward",
    "jaxrnn_gru_forward",
    "jaxrnn_gru_backward",
    "jaxrnn_tn_matmul",
    "jaxrnn_nt_matmul",
)
# The calling convention of those targets (their operands and results), which _ops.py follows.
# The library returns the one it was built with (jaxrnn_kernel_abi in _src/rnn_ffi.cc); a
# library left over from older sources (an editable install not rebuilt) is refused, not run.
ABI = 7


class Status(NamedTuple):
    """Whether the kernels run here: ``available``, the ``reason`` when not, the instruction set
    (``"avx512"`` or ``"avx2"``), whether bf16 matmuls use AVX512-BF16 dot products, the number
    of threads a call uses, the library's path, and whether bf16 matmuls run on AMX tiles."""

    available: bool
    reason: str
    isa: str = ""
    bf16_dot: bool = False
    threads: int = 0
    path: str = ""
    amx: bool = False


def library_path() -> Path | None:
    """The compiled library next to this file, or ``None`` if it was not built."""
    for suffix in (*importlib.machinery.EXTENSION_SUFFIXES, ".so"):
        path = _HERE / f"{_STEM}{suffix}"
        if path.is_file():
            return path
    return None


@functools.cache
def _load() -> tuple[ctypes.CDLL | None, str]:
    path = library_path()
    if path is None:
        return None, (
            "the kernel library was not built: `pip install` compiles it where a C++17 compiler "
            "(g++ or clang++) is found; reinstall with one on PATH (see "
            "jaxrnn/kernels/__init__.py)"
        )
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as err:
        return None, f"the kernel library {path.name} does not load: {err}"
    abi = lib.jaxrnn_kernel_abi() if hasattr(lib, "jaxrnn_kernel_abi") else 1
    if abi != ABI:
        return None, (
            f"the kernel library {path.name} was built from other sources (calling convention "
            f"{abi}, expected {ABI}): rebuild it with `pip install -e .` or `python setup.py "
            "build_ext --inplace`"
        )
    lib.jaxrnn_kernel_isa.restype = ctypes.c_char_p
    if not lib.jaxrnn_kernel_isa():
        return None, "this CPU has neither AVX2 with FMA nor AVX-512, which the kernels need"
    try:
        for name in TARGETS:
            capsule = jax.ffi.pycapsule(getattr(lib, name))
            jax.ffi.register_ffi_target(name, capsule, platform="cpu")
    except Exception as err:
        return None, f"registering the kernels with XLA failed: {type(err).__name__}: {err}"
    return lib, ""


def status() -> Status:
    """Where the kernels stand in this process (loads the library on first call)."""
    lib, reason = _load()
    if lib is None:
        return Status(False, reason)
    return Status(
        True,
        "",
        lib.jaxrnn_kernel_isa().decode(),
        bool(lib.jaxrnn_kernel_bf16_dot()),
        int(lib.jaxrnn_kernel_threads()),
        str(library_path()),
        bool(lib.jaxrnn_kernel_amx()),
    )


def require() -> None:
    """Loads and registers the library, or raises ``RuntimeError`` saying why it cannot."""
    lib, reason = _load()
    if lib is None:
        raise RuntimeError(f"jaxrnn kernels are not available: {reason}")


def configure(
    *,
    isa: str = "best",
    bf16_dot: bool = True,
    amx: bool = True,
    hoist: bool | None = None,
    threads: int = 0,
) -> None:
    """Switches for tests and benchmarks: the instruction set (``"best"``, ``"avx512"``,
    ``"avx2"``), whether bf16 matmuls may use AVX512-BF16 dot products and, with them, AMX
    tiles, whether the forward kernel runs the input projection of all steps before its loop
    (``None``: where the weights would not stay in cache), and the threads per call (0: the
    CPUs this process may run on). They apply to calls executed afterwards, compiled or not."""
    require()
    lib, _ = _load()
    codes = {"best": 0, "avx512": 1, "avx2": 2}
    if isa not in codes:
        raise ValueError(f"isa: expected one of {', '.join(codes)}, got {isa!r}")
    hoist_code = 0 if hoist is None else (1 if hoist else 2)
    lib.jaxrnn_kernel_configure(
        codes[isa], int(bool(bf16_dot)), int(bool(amx)), hoist_code, int(threads)
    )
