"""Test configuration shared by tests/, the doctests in jaxrnn/ and README.md."""

import importlib.metadata
import os
import re
import shutil
import tempfile

# --------------------------------------------------------------------------------------------
# Compiling, not running, is the suite's time: its programs are tiny and most run once or twice.
# Two settings make XLA compile them several times faster (the scanned gradients of test_scan
# and test_cudnn, 3 to 5 times), whatever the program computes:
# - XLA's classic CPU fusion emitters (``--xla_cpu_use_fusion_emitters=false``): the newer
#   MLIR-based ones, now the default, take most of the compile time of a scanned gradient;
# - JAX's ``jax_disable_most_optimizations`` (LLVM at -O0, for when "the cost of optimization
#   is greater than that of running a less-optimized program").
# Neither changes what a program computes beyond the rounding any two XLA builds may differ in,
# which the tests' tolerances allow for, and no test asserts a speed. The pytest processes and
# the subprocesses they start (the CLI, multi-process runs) inherit both through the
# environment; the notebooks run as users run them (tests/test_notebooks.py: their training
# steps run faster optimised). JAXRNN_TEST_FAST_COMPILE=0 runs everything with XLA's defaults.
# Set before jax is imported, so that this process's backend sees the flag too. XLA aborts on
# a flag it does not know, so the emitter flag is given only to the jaxlib versions known to
# have it (0.9.1 and later; a jaxlib that drops it will say so at the first compile).
FAST_COMPILE_ENV = {
    "XLA_FLAGS": "--xla_cpu_use_fusion_emitters=false",
    "JAX_DISABLE_MOST_OPTIMIZATIONS": "1",
}
if os.environ.get("JAXRNN_TEST_FAST_COMPILE", "1") != "0":
    _jaxlib = tuple(int(p) for p in re.findall(r"\d+", importlib.metadata.version("jaxlib"))[:3])
    _flags = os.environ.get("XLA_FLAGS", "")
    if _jaxlib >= (0, 9, 1) and "xla_cpu_use_fusion_emitters" not in _flags:
        os.environ["XLA_FLAGS"] = f"{_flags} {FAST_COMPILE_ENV['XLA_FLAGS']}".strip()
    os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import jax  # noqa: E402
import pytest  # noqa: E402

# Strict dtype promotion: mixing float32 with float64 (or int with float) is an error, never a
# silent upcast, so a dtype slip in the library fails the tests.
jax.config.update("jax_numpy_dtype_promotion", "strict")
# Using a PRNG key twice is an error (the initialisers promise one key per parameter).
jax.config.update("jax_debug_key_reuse", True)
# jax may have read the environment before this file ran (another plugin imported it).
jax.config.update(
    "jax_disable_most_optimizations", os.environ.get("JAX_DISABLE_MOST_OPTIMIZATIONS") == "1"
)

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
    jax.config.update("jax_compilation_cache_dir", os.environ[_CACHE_DIR])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


@pytest.fixture
def default_compile_env():
    """This process's environment without the fast-compile settings, for a subprocess that
    must run as users run it (the notebook kernels)."""
    env = dict(os.environ)
    for name, value in FAST_COMPILE_ENV.items():
        rest = env.get(name, "").replace(value, "").strip()
        if rest:
            env[name] = rest
        else:
            env.pop(name, None)
    return env


def pytest_unconfigure(config):
    if _created_cache_dir is not None:
        shutil.rmtree(_created_cache_dir, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# The slowest tests first. pytest-xdist's work stealing hands each worker a contiguous part of
# the collection and moves the not-yet-started tail of the busiest queue to an idle worker, so
# a long test late in the collection can leave one core busy after the other has finished.
# Moved to the front (this order, the longest first; the rest keep theirs), they start
# early and the run ends on short tests. Seconds of CPU on two idle cores, with the settings
# above: the notebooks run XLA's defaults (about 10 to 40 s each); the others start
# subprocesses (the CLI, several processes, the docs build) or are long doctests.
SLOW_FIRST = [
    "tests/test_sharded.py",  # tests/sharded/ in two 8-device subprocesses (~2 min each)
    "tests/test_notebooks.py::test_notebook_executes[02_seq2seq_attention.ipynb]",
    "tests/test_notebooks.py::test_notebook_executes[01_cells_from_equations.ipynb]",
    "tests/test_notebooks.py::test_notebook_executes[03_char_language_model.ipynb]",
    "tests/test_notebooks.py::test_notebook_executes[06_regularisation_and_convlstm.ipynb]",
    "tests/test_kernels.py::test_kernels_under_address_sanitizer",  # a sanitizer build (~40 s)
    "tests/test_distributed.py",  # one module fixture launches the process pairs (~25 s)
    "tests/test_docs.py",  # sphinx-build (~15 s)
    "README.md",  # its doctests (~13 s)
    "tests/test_notebooks.py::test_notebook_executes[05_long_range.ipynb]",
    "tests/test_notebooks.py::test_notebook_executes[04_pytorch_interop.ipynb]",
    "tests/test_cli.py",  # one module fixture trains the demo the file's tests read (~20 s)
    "tests/test_device_check.py::test_dry_run_covers_every_part",  # a subprocess (~20 s)
    "tests/test_benchmarks.py::test_sweep_runs_a_child_per_core_count",
    "tests/test_benchmarks.py::test_cells_quick_run",
    "tests/test_reliability_checkpoints.py::test_signal_saves_and_resume_is_bit_exact",
    "tests/test_reliability_cli.py::test_two_runs_on_one_directory",
    "tests/test_checkpoint.py::test_resume_after_crash_is_bit_exact",
]


def _slow_rank(nodeid):
    for rank, prefix in enumerate(SLOW_FIRST):
        if nodeid == prefix or nodeid.startswith((f"{prefix}::", f"{prefix}[")):
            return rank
    return len(SLOW_FIRST)


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: _slow_rank(item.nodeid))  # stable: the rest keep their order


# --------------------------------------------------------------------------------------------
# tests/sharded/ needs 8 devices, and a process's device count is fixed when jax starts its
# backend. tests/test_sharded.py runs that directory in subprocesses with 8 virtual CPU
# devices (XLA_FLAGS=--xla_force_host_platform_device_count=8); every other process skips it.
# To run it directly: XLA_FLAGS=--xla_force_host_platform_device_count=8 pytest tests/sharded
EIGHT_DEVICES_FLAG = "--xla_force_host_platform_device_count=8"


def pytest_ignore_collect(collection_path, config):
    if collection_path.name == "sharded" and collection_path.parent.name == "tests":
        return EIGHT_DEVICES_FLAG not in os.environ.get("XLA_FLAGS", "")
    return None
