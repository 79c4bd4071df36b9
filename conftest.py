"""Test configuration shared by tests/, the doctests in jaxrnn/ and README.md."""

import os
import shutil
import tempfile

import jax

# Strict dtype promotion: mixing float32 with float64 (or int with float) is an error, never a
# silent upcast, so a dtype slip in the library fails the tests.
jax.config.update("jax_numpy_dtype_promotion", "strict")
# Using a PRNG key twice is an error (the initialisers promise one key per parameter).
jax.config.update("jax_debug_key_reuse", True)

# --------------------------------------------------------------------------------------------
# One XLA compilation cache per test run.
#
# Many tests compile programs that another process of the same run compiles too: the two
# pytest-xdist workers (a file split between them recompiles its shared functions), the CLI
# and multi-process tests' subprocesses, and every eager ``jr.scan`` of the same shapes (its
# scan body is a new jaxpr each call). JAX's persistent cache (keyed by the HLO, the compile
# options, the flags and the jaxlib version) lets them share one compile. The directory is new
# for every run and deleted at its end, so a run never reads an old cache: a fresh clone runs
# what CI runs. The process that creates it (pytest's main process, which starts the workers)
# exports it through the environment, which the workers, the notebook kernels and every
# subprocess inherit. JAXRNN_TEST_XLA_CACHE=0 turns it off.
_CACHE_DIR = "JAX_COMPILATION_CACHE_DIR"
_CACHE_OWNER = "JAXRNN_TEST_XLA_CACHE_OWNER"
_created_cache_dir = None

if os.environ.get("JAXRNN_TEST_XLA_CACHE", "1") != "0":
    if os.environ.get(_CACHE_OWNER) is None:  # the first pytest process of this run
        _created_cache_dir = tempfile.mkdtemp(prefix="jaxrnn-xla-cache-")
        os.environ[_CACHE_DIR] = _created_cache_dir
        os.environ[_CACHE_OWNER] = str(os.getpid())
        # Every compile is written (the default keeps only those over a second, and most of
        # the suite's compiles are shorter), whatever its size.
        os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
        os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"
    # jax read the environment when it was imported, possibly before this file ran.
    jax.config.update("jax_compilation_cache_dir", os.environ[_CACHE_DIR])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def pytest_unconfigure(config):
    if _created_cache_dir is not None:
        shutil.rmtree(_created_cache_dir, ignore_errors=True)
