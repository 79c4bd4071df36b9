"""Fuzzing the public entry points: any argument gives a result or jaxrnn's own error.

Hypothesis draws argument values, good and bad (small ints, zero, negatives, floats, huge ints,
``None``, strings, bools, arrays of the wrong dtype or shape, keys), for every cell factory of
:mod:`jaxrnn.cells` (enumerated from its ``__all__``) and for the options of :func:`jaxrnn.scan`.
Every outcome must be a result or a ``ValueError``/``TypeError`` raised by jaxrnn's own code
(the innermost frame of the traceback in a ``jaxrnn`` module): never an error from inside JAX,
XLA or NumPy, never a crash. Sizes too large for the machine run in a subprocess, so that an
XLA abort, should one come back, fails the test instead of killing pytest.

The draws are reproducible (a fixed seed, :data:`SEED`, and no example database), and the
number of cases is bounded so the file runs in well under a minute on two cores; ``CASES``
counts them and the module prints the count at the end (``pytest -s`` shows it).
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap
import traceback
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from jax._src import config as jax_config

import jaxrnn as jr
from jaxrnn import _checks

SEED = int(os.environ.get("JAXRNN_FUZZ_SEED", "24"))  # 24, the issue: the same draws each run

PACKAGE = os.path.dirname(os.path.abspath(jr.__file__)) + os.sep  # jaxrnn's own code

CASES: Counter = Counter()  # cases run per test, printed at the end of the module

FUZZ = settings(
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)

FACTORIES = sorted(
    name
    for name in jr.cells.__all__
    if name.islower() and name not in ("learnable_carry", "ring_init")
)


@pytest.fixture(scope="module", autouse=True)
def _report_cases():
    yield
    total = sum(n for k, n in CASES.items() if not k.startswith("outcome:"))
    print(f"\ntest_fuzz: {total} cases (seed {SEED}): {dict(CASES)}")


def _is_jaxrnn_error(exc: BaseException) -> bool:
    """A ValueError/TypeError whose innermost traceback frame is in a jaxrnn module."""
    if not isinstance(exc, ValueError | TypeError):
        return False
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and os.path.abspath(frames[-1].filename).startswith(PACKAGE)


def _outcome(call):
    """``("ok", result)``, or ``("error", exc)`` for jaxrnn's own error; fails otherwise.

    JAX's traceback filtering is off meanwhile: it would drop JAX's own frames and leave a
    jaxrnn frame innermost for an error raised inside JAX.
    """
    try:
        with jax_config.traceback_filtering("off"):
            return "ok", call()
    except Exception as exc:
        if _is_jaxrnn_error(exc):
            return "error", exc
        raise AssertionError(
            f"not a ValueError/TypeError raised by jaxrnn: {type(exc).__module__}."
            f"{type(exc).__name__}: {str(exc)[:300]}"
        ) from exc


# --------------------------------------------------------------------------------------------
# Values: what a careless or hostile caller may pass where a size, a flag or a number belongs

SIZES_OK = st.integers(1, 5)
SIZE_BAD = st.one_of(
    st.integers(-3, 0),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([None, "4", True, False, 2.0, (3,), np.float32(3), np.int64(-1)]),
)


@st.composite
def _mostly(draw, good, bad):
    """``good`` most of the time, else ``bad``: most draws keep most options valid, so the
    fuzz reaches the code behind the first check as well as the checks themselves."""
    return draw(bad if draw(st.integers(0, 9)) == 9 else good)


SIZE = _mostly(SIZES_OK | SIZES_OK.map(np.int32), SIZE_BAD)
ANY = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 8),
    st.floats(-2, 10, allow_nan=False),
    st.sampled_from([float("nan"), float("inf"), "x", "sigmoid", "exp", "powerlaw", (3,), ()]),
)
DTYPES = st.sampled_from(
    [None, jnp.float32, jnp.bfloat16, jnp.float16, jnp.int32, "float32", "x", 3, jnp.complex64]
)
INITS = st.sampled_from([None, jax.nn.initializers.zeros, jax.nn.initializers.normal(0.1), 3])


@st.composite
def factory_call(draw, name):
    """``(args, kwargs)`` for the factory ``name``: its positional sizes, then each keyword
    argument either left at its default or drawn."""
    sig = inspect.signature(getattr(jr.cells, name))
    args, kwargs = [], {}
    for p in sig.parameters.values():
        if p.kind is p.POSITIONAL_OR_KEYWORD:
            if p.name == "kernel_size":
                args.append(
                    draw(
                        _mostly(
                            st.sampled_from([(3,), (1, 3)]),
                            st.sampled_from([3, (), (0,), (-1,), "3", (2.5,), None]),
                        )
                    )
                )
            else:
                args.append(draw(SIZE))
        elif p.kind is p.KEYWORD_ONLY and draw(st.integers(0, 5)) == 0:
            if p.name in ("param_dtype", "dtype"):
                kwargs[p.name] = draw(DTYPES)
            elif p.name.endswith("_init"):
                kwargs[p.name] = draw(INITS)
            elif p.name == "activation":
                kwargs[p.name] = draw(st.sampled_from([jnp.tanh, jax.nn.relu, 3, None]))
            else:
                kwargs[p.name] = draw(ANY)
    return args, kwargs


KEYS = {
    "key": lambda: jax.random.key(0),
    "raw key": lambda: jax.random.PRNGKey(0),
    "batch of keys": lambda: jax.random.split(jax.random.key(0), 3),
    "int": lambda: 0,
    "none": lambda: None,
    "float array": lambda: jnp.zeros((2,)),
    "string": lambda: "key",
}
KEY = _mostly(st.sampled_from(["key", "raw key"]), st.sampled_from(sorted(KEYS)))


def _exercise(cell, key="key"):
    """Init the cell and run one step and a short scan: what a user does next."""
    params = cell.init(KEYS[key]())
    batch = (2, *(4,) * cell.spatial_dims)
    x = jnp.ones((*batch, cell.input_size), jnp.float32)
    carry, _ = cell.apply(params, cell.initial_carry(batch), x)
    assert jax.tree.structure(carry) == jax.tree.structure(cell.initial_carry(batch))
    xs = jnp.ones((2, 3, *(4,) * cell.spatial_dims, cell.input_size), jnp.float32)
    return jr.scan(cell, params, xs)


@pytest.mark.parametrize("name", FACTORIES)
@seed(SEED)
@settings(FUZZ, max_examples=12)
@given(data=st.data())
def test_factories(name, data):
    args, kwargs = data.draw(factory_call(name))
    CASES[f"factory:{name}"] += 1
    kind, cell = _outcome(lambda: getattr(jr.cells, name)(*args, **kwargs))
    if kind == "ok":
        key = data.draw(KEY)
        kind, _ = _outcome(lambda: _exercise(cell, key))
    CASES[f"outcome:{kind}"] += 1


@pytest.mark.parametrize("name", FACTORIES)
def test_factories_with_good_arguments_work(name):
    """The other side of the fuzz: plain arguments give a working cell (an error for every
    draw would pass the fuzz above)."""
    args = (
        [3, 4] + ([(3,)] if name.startswith("conv") else []) + ([2] if name == "jordan_rnn" else [])
    )
    CASES[f"factory:{name}"] += 1
    _exercise(getattr(jr.cells, name)(*args))


# --------------------------------------------------------------------------------------------
# jr.scan's options

SCAN_CELLS = {
    "gru": lambda: jr.gru(3, 4),
    "lstm": lambda: jr.lstm(3, 4),
    "min_gru": lambda: jr.min_gru(3, 4),
    "lru": lambda: jr.lru(3, 4),
}
_BUILT = {name: make() for name, make in SCAN_CELLS.items()}
_PARAMS = {name: cell.init(jax.random.key(0)) for name, cell in _BUILT.items()}
B, T = 2, 4


@st.composite
def scan_call(draw):
    name = draw(st.sampled_from(sorted(_BUILT)))
    cell = _BUILT[name]
    flag = _mostly(st.booleans(), st.sampled_from(["no", 1, 0, None, np.bool_(True)]))
    time_major = draw(flag)
    xs_shape = draw(
        _mostly(
            st.sampled_from([(B, T, 3), (T, 3)]),
            st.sampled_from([(B, T, 5), (3,), (B, 0, 3), (1, B, T, 3), ()]),
        )
    )
    if time_major is True and len(xs_shape) == 3:
        xs_shape = (T, B, 3)
    xs_dtype = draw(_mostly(st.just(np.float32), st.sampled_from([np.float64, np.int32, bool])))
    xs = np.ones(xs_shape, xs_dtype)
    batch = xs_shape[1:-1] if time_major is True else xs_shape[:-2]
    opts = {
        "reverse": draw(flag),
        "time_major": time_major,
        "unroll": draw(
            _mostly(st.integers(1, 5) | st.booleans(), st.sampled_from([0, -2, 2.5, "2", None]))
        ),
        "remat": draw(_mostly(st.sampled_from([False, True, "sqrt"]), st.sampled_from(["x", 3]))),
        "method": draw(
            _mostly(
                st.sampled_from(["sequential", "associative", "newton", "auto"]),
                st.sampled_from(["x", None, jr.newton.Newton(max_iters=2), 3]),
            )
        ),
    }
    lengths = draw(
        _mostly(
            st.none() | st.lists(st.integers(0, T), min_size=len(batch), max_size=len(batch)),
            st.lists(st.integers(-3, 9), min_size=0, max_size=3)
            | st.sampled_from([[1.5, 2.0], 3, "x", [[1, 2]]]),
        )
    )
    if lengths is not None:
        opts["lengths"] = np.asarray(lengths) if isinstance(lengths, list) else lengths
    steps = (xs_shape[0] if time_major is True else xs_shape[-2]) if len(xs_shape) > 1 else 1
    layout = (steps, *batch) if time_major is True else (*batch, steps)
    resets = draw(
        _mostly(st.sampled_from(["none", "good"]), st.sampled_from(["transposed", "int", "short"]))
    )
    resets = {
        "none": None,
        "good": np.zeros(layout, bool),
        "transposed": np.zeros(layout[::-1], bool),
        "int": np.zeros(layout, np.int32),
        "short": np.zeros(layout[:-1], bool),
    }[resets]
    if resets is not None:
        opts["resets"] = resets
    carry = draw(
        _mostly(
            st.sampled_from(["none", "zeros"]),
            st.sampled_from(["wrong-shape", "wrong-dtype", "array", "int", "tuple"]),
        )
    )
    template = cell.initial_carry(batch)
    carries = {
        "none": None,
        "zeros": template,
        "wrong-shape": jax.tree.map(lambda a: jnp.zeros((7, *a.shape), a.dtype), template),
        "wrong-dtype": jax.tree.map(lambda a: jnp.zeros(a.shape, jnp.int32), template),
        "array": jnp.zeros((B, 7)),
        "int": 3,
        "tuple": (template, template),
    }
    traced = draw(st.booleans())  # run under jit: the checks must hold at trace time
    return name, xs, carries[carry], opts, traced


def _scan(name, xs, carry, opts, traced):
    cell, params = _BUILT[name], _PARAMS[name]
    if not traced:
        return jr.scan(cell, params, xs, carry, **opts)
    lengths = opts.pop("lengths", None)
    if isinstance(lengths, np.ndarray):  # a traced lengths array: clipped, never refused
        return jax.jit(lambda x, n: jr.scan(cell, params, x, carry, lengths=n, **opts))(xs, lengths)
    if lengths is not None:
        opts["lengths"] = lengths
    return jax.jit(lambda x: jr.scan(cell, params, x, carry, **opts))(xs)


@seed(SEED)
@settings(FUZZ, max_examples=120)
@given(call=scan_call())
def test_scan_options(call):
    CASES["scan"] += 1
    kind, _ = _outcome(lambda: _scan(*call))
    CASES[f"outcome:{kind}"] += 1


# --------------------------------------------------------------------------------------------
# Sizes no machine can hold: in a subprocess, where an XLA abort cannot take pytest with it

_HUGE_SCRIPT = textwrap.dedent(
    """
    import json, sys, traceback
    import jax, jaxrnn as jr
    names, sizes = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    out = []
    for name in names:
        factory = getattr(jr.cells, name)
        for size in sizes:
            args = [3, size] + ([(3,)] if name.startswith("conv") else [])
            args += [2] if name == "jordan_rnn" else []
            kwargs = {"num_heads": 1} if name == "slstm" else {}
            try:
                cell = factory(*args, **kwargs)
                cell.init(jax.random.key(0))  # must not get here: aborts or exhausts memory
                out.append([name, size, "returned", ""])
            except Exception as exc:
                last = traceback.extract_tb(exc.__traceback__)[-1].filename
                out.append([name, size, type(exc).__name__, last + "|" + str(exc)[:200]])
    print(json.dumps(out))
    """
)

HUGE_SIZES = [10**12, 2**40, 10**19]


def test_huge_sizes_are_refused_in_a_subprocess():
    if _checks.PARAM_BYTES_LIMIT is None:
        pytest.skip("the OS does not report its physical memory")
    proc = subprocess.run(
        [sys.executable, "-c", _HUGE_SCRIPT, json.dumps(FACTORIES), json.dumps(HUGE_SIZES)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    CASES["huge"] += len(results)
    assert len(results) == len(FACTORIES) * len(HUGE_SIZES)
    for name, size, kind, detail in results:
        assert kind == "ValueError", (name, size, kind, detail)
        where, message = detail.split("|", 1)
        assert os.path.abspath(where).startswith(PACKAGE), (name, size, detail)
        assert message.startswith(f"{name}(") and "params" in message, (name, size, message)


def test_the_cases_ran():
    """The bounded draws all happened (run last in this file)."""
    if "scan" in CASES:
        assert CASES["scan"] >= 120
