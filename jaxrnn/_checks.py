"""Argument checks shared by the library: one helper per kind of value, one wording everywhere.

Every helper raises ``ValueError`` (wrong value) or ``TypeError`` (wrong kind of object) whose
message starts with the argument's name and states what was expected and what was given. Values
are checked only when they are concrete: under ``jax.jit`` (or ``grad``, ``vmap``) a traced
argument still has its shape and dtype checked, but not its values, so the callers' docstrings
say which checks a traced argument skips.
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
import os
import weakref
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

from jaxrnn._core import Array, Carry, Cell

__all__ = [
    "check_batch_shape",
    "check_bool",
    "check_callable",
    "check_carry",
    "check_cell",
    "check_features",
    "check_ids",
    "check_int",
    "check_key",
    "check_lengths",
    "check_param_memory",
    "check_params",
    "check_probability",
    "check_resets",
    "check_scalar",
    "check_size",
    "check_step_keeps_carry_dtype",
    "check_unroll",
    "is_concrete",
]


def is_concrete(x) -> bool:
    """Whether ``x`` has values to check (``False`` for a tracer under ``jit``/``grad``/...)."""
    return not isinstance(x, jax.core.Tracer)


def _is_bool(value) -> bool:
    return isinstance(value, bool | np.bool_) or (
        hasattr(value, "dtype") and jnp.dtype(value.dtype) == jnp.bool_
    )


def check_int(name: str, value, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` as a Python ``int``: an integer (Python, NumPy, or a 0-d integer array), not a
    bool, in ``[low, high]`` (each bound optional).

    Raises:
        ValueError: for anything else (the message says ``"<name> must be an int ..."``).
    """
    bounds = "" if low is None else f" >= {low}"
    if high is not None:
        bounds = f" in [{low}, {high}]" if low is not None else f" <= {high}"
    ok = not _is_bool(value) and is_concrete(value)
    if ok and not isinstance(value, numbers.Integral):
        ok = (
            isinstance(value, np.ndarray | jax.Array)
            and value.shape == ()
            and jnp.issubdtype(value.dtype, jnp.integer)
        )
    if ok:
        value = int(value)
        ok = (low is None or value >= low) and (high is None or value <= high)
    if not ok:
        raise ValueError(f"{name} must be an int{bounds}, got {value!r}")
    return value


def check_size(name: str, value) -> int:
    """A positive ``int`` size (Python or NumPy integer, not a bool), returned as a Python int.

    Raises:
        ValueError: ``"<name> must be a positive int, got ..."``.
    """
    try:
        return check_int(name, value, low=1)
    except ValueError:
        raise ValueError(f"{name} must be a positive int, got {value!r}") from None


def check_unroll(unroll) -> int | bool:
    """``unroll`` of a sequential scan: a bool, or an int >= 1 (``jax.lax.scan``'s own check
    lets 0 through and reports other values without naming the argument).

    Raises:
        ValueError: ``"unroll must be a bool or a positive int, got ..."`` for an int < 1.
        TypeError: the same message for anything else (a float, a string, ``None``).
    """
    if isinstance(unroll, bool | np.bool_):
        return bool(unroll)
    try:
        return check_int("unroll", unroll, low=1)
    except ValueError:
        error = ValueError if isinstance(unroll, numbers.Integral) else TypeError
        raise error(
            f"unroll must be a bool or a positive int, got {unroll!r} ({type(unroll).__name__})"
        ) from None


def check_switch(name: str, value) -> bool | None:
    """``value`` if it is ``None`` (automatic), ``True`` (required) or ``False`` (never): the
    three-way switches ``cudnn=`` and ``kernel=``. ``1`` and ``0`` are refused, not read as
    ``True`` and ``False``.

    Raises:
        TypeError: ``"<name>: expected None, True or False, got ..."``.
    """
    if value is None or value is True or value is False:
        return value
    raise TypeError(f"{name}: expected None, True or False, got {value!r}")


def check_bool(name: str, value) -> bool:
    """``value`` as a Python ``bool``: ``True``/``False`` (or a NumPy bool), nothing else (a
    string such as ``"no"`` is truthy and would silently mean ``True``).

    Raises:
        TypeError: ``"<name> must be a bool (True or False), got ..."``.
    """
    if isinstance(value, bool | np.bool_):
        return bool(value)
    raise TypeError(
        f"{name} must be a bool (True or False), got {value!r} ({type(value).__name__})"
    )


def check_callable(name: str, value, example: str = "a jax.nn.initializers function") -> None:
    """``TypeError`` unless ``value`` is callable (``example`` says what is meant)."""
    if not callable(value):
        raise TypeError(
            f"{name} must be callable (e.g. {example}), got {value!r} ({type(value).__name__})"
        )


@functools.cache
def _default_key_data_shape() -> tuple[int, ...]:
    """The shape of a raw key of the default PRNG implementation ((2,) for threefry)."""
    return tuple(jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0))).shape)


def check_key(name: str, key, *, optional: bool = False):
    """One PRNG key: a typed key of shape ``()`` (``jax.random.key(seed)``) or a raw ``uint32``
    key (``jax.random.PRNGKey(seed)``, shape ``(2,)`` for the default implementation); traced
    keys are checked alike (shape and dtype are static). ``None`` is returned as is when
    ``optional``.

    Raises:
        ValueError: a batch of keys (``"<name>: expected one PRNG key, got a batch of keys of
            shape ..."``): split it, or ``jax.vmap`` over it.
        TypeError: anything else, ``None`` included unless ``optional`` (an int, a float array,
            a string).
    """
    if key is None and optional:
        return None
    wanted = f"{name}: expected one PRNG key (jax.random.key(seed))"
    if isinstance(key, jax.Array | np.ndarray):
        shape = tuple(key.shape)
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            if shape == ():
                return key
            raise ValueError(
                f"{wanted}, got a batch of keys of shape {shape}: split it or jax.vmap over it"
            )
        raw = _default_key_data_shape()
        if key.dtype == jnp.uint32 and shape[-len(raw) :] == raw:
            if shape == raw:
                return key
            raise ValueError(
                f"{wanted}, got a batch of raw keys of shape {shape}: split it or jax.vmap over it"
            )
        raise TypeError(f"{wanted}, got an array of dtype {key.dtype} and shape {shape}")
    raise TypeError(f"{wanted}, got {key!r} ({type(key).__name__})")


def _physical_memory() -> int | None:
    """This machine's physical memory in bytes (``None`` where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


#: The most bytes the parameters of one cell may take: this machine's physical memory. Params
#: above it can never be allocated here, and creating them with ``init`` can abort the whole
#: process inside XLA, so the factories refuse them up front. (An accelerator usually holds
#: less: params between its memory and this limit still fail, with XLA's out-of-memory error.)
PARAM_BYTES_LIMIT: int | None = _physical_memory()


def _bytes(n: int) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n} bytes ({n / size:.1f} {unit})"
    return f"{n} bytes"


def check_param_memory(what: str, init, bound: int) -> Any:
    """Refuse a cell whose params (``jax.eval_shape(init, key)``, nothing allocated) need more
    bytes than :data:`PARAM_BYTES_LIMIT`; return the abstract params (``None`` when they were
    not computed: ``bound``, an upper bound on the bytes, is within the limit, which spares
    the common case tracing ``init`` (and calling custom initialisers) at build time; or
    ``init`` cannot be traced yet, e.g. a custom initialiser that fails: ``init`` reports it).

    Args:
        what: the factory call, e.g. ``"lru(input_size=3, hidden_size=1000000000000)"``.
        init: the cell's ``init(key)``.
        bound: an upper bound on the params' bytes, from the sizes alone.

    Raises:
        ValueError: ``"<what>: its params need N bytes (...), more than this machine's memory
            (...)"``, or sizes too large to be shapes at all.
    """
    if PARAM_BYTES_LIMIT is None or bound <= PARAM_BYTES_LIMIT:
        return None
    try:
        expected = jax.eval_shape(init, jax.random.key(0))
    except OverflowError:
        raise ValueError(
            f"{what}: its params are too large to be allocated: a dimension or element count "
            "exceeds what JAX can index"
        ) from None
    except Exception:  # e.g. a custom initialiser's error, which init raises when it runs
        return None
    needed = sum(math.prod(leaf.shape) * leaf.dtype.itemsize for leaf in jax.tree.leaves(expected))
    check_memory(f"{what}: its params", needed, "choose smaller sizes")
    return expected


def check_memory(what: str, needed: int, advice: str) -> None:
    """Refuse ``needed`` bytes beyond :data:`PARAM_BYTES_LIMIT`, this machine's memory, before
    anything is allocated: ``"<what> need N bytes (...), more than this machine's memory, M
    bytes (...); <advice>"`` (a ``ValueError``)."""
    if PARAM_BYTES_LIMIT is not None and needed > PARAM_BYTES_LIMIT:
        raise ValueError(
            f"{what} need {_bytes(needed)}, more than this machine's memory, "
            f"{_bytes(PARAM_BYTES_LIMIT)}; {advice}"
        )


def check_features(name: str, x: Array, size: int) -> None:
    """Trace-time check that the last axis of ``x`` is ``size``."""
    shape = jnp.shape(x)
    if len(shape) == 0 or shape[-1] != size:
        got = shape[-1] if shape else "a scalar"
        raise ValueError(
            f"{name}: expected feature size (last axis) {size}, got {got} ({name}.shape={shape})"
        )


def check_batch_shape(batch_shape) -> tuple[int, ...]:
    """``batch_shape`` (an int or a sequence of ints, each >= 0) as a tuple of Python ints."""
    if not isinstance(batch_shape, bool) and isinstance(batch_shape, int | np.integer):
        batch_shape = (batch_shape,)
    try:
        dims = tuple(batch_shape)
    except TypeError:
        raise TypeError(
            f"batch_shape: expected a tuple of ints, got {type(batch_shape).__name__}"
        ) from None
    try:
        return tuple(check_int("batch_shape", d, low=0) for d in dims)
    except ValueError:
        raise ValueError(
            f"batch_shape: expected a tuple of ints >= 0, got {batch_shape!r}"
        ) from None


def check_scalar(
    name: str,
    value,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> Any:
    """A finite real number in the given range, or a traced 0-d real array (values unchecked).

    Python ``int``/``float``, NumPy scalars and 0-d arrays, and 0-d JAX arrays are accepted
    alike; bools, strings, complex numbers, arrays with dimensions, NaN, infinities and values out
    of range are not. A concrete value is returned as a Python ``float``; a tracer is returned as
    it is, after its shape and dtype are checked.

    Args:
        name: the argument's name, for the message.
        value: the value.
        low: lower bound (``None``: none).
        high: upper bound (``None``: none).
        low_open: exclude ``low`` itself.
        high_open: exclude ``high`` itself.

    Raises:
        TypeError: if ``value`` is not a real number (or a bool).
        ValueError: if it is NaN, infinite or out of range.
    """
    if low is not None and high is not None:
        lo, hi = ("(" if low_open else "[") + f"{low:g}", f"{high:g}" + (")" if high_open else "]")
        wanted = f"in {lo}, {hi} and finite"
    elif low is not None:
        wanted = f"{'>' if low_open else '>='} {low:g} and finite"
    elif high is not None:
        wanted = f"{'<' if high_open else '<='} {high:g} and finite"
    else:
        wanted = "a finite number"
    if isinstance(value, numbers.Real) and not _is_bool(value):
        pass
    elif (
        isinstance(value, np.ndarray | jax.Array | np.generic)
        and np.shape(value) == ()
        and not _is_bool(value)
        and (jnp.issubdtype(value.dtype, jnp.floating) or jnp.issubdtype(value.dtype, jnp.integer))
    ):
        if not is_concrete(value):
            return value  # traced: shape and dtype are all there is to check
    else:
        what = type(value).__name__
        if hasattr(value, "dtype"):
            what += f" of dtype {value.dtype} and shape {np.shape(value)}"
        raise TypeError(f"{name} must be a real number ({wanted}), got {value!r} ({what})")
    number = float(value)
    if (
        not math.isfinite(number)
        or (low is not None and (number <= low if low_open else number < low))
        or (high is not None and (number >= high if high_open else number > high))
    ):
        raise ValueError(f"{name} must be {wanted}, got {number!r}")
    return number


def check_probability(name: str, value, *, include_one: bool = False):
    """A probability in ``[0, 1)`` (``[0, 1]`` with ``include_one``), as :func:`check_scalar`
    checks it (a traced 0-d array passes unchecked).

    Raises:
        TypeError: ``"<name>: expected a probability in [0, 1), got ..."`` for a non-number.
        ValueError: the same message for NaN or a value out of range.
    """
    wanted = f"{name}: expected a probability in [0, {'1]' if include_one else '1)'}"
    try:
        return check_scalar(name, value, low=0.0, high=1.0, high_open=not include_one)
    except TypeError:
        raise TypeError(f"{wanted}, got {value!r} ({type(value).__name__})") from None
    except ValueError:
        raise ValueError(f"{wanted}, got {float(value)}") from None


def check_ids(name: str, ids, vocab: int, *, valid=None, what: str = "the vocabulary"):
    """Integer token ids in ``[0, vocab)``, returned as a NumPy or JAX array.

    Only positions where ``valid`` (a bool array broadcastable to ``ids``) is ``True`` are
    checked: padding may hold anything. The values are checked only when ``ids`` (and
    ``valid``) are concrete; traced ids have only their dtype checked.

    Raises:
        TypeError: if ``ids`` is not an integer array.
        ValueError: if a checked id lies outside ``[0, vocab)``; the message gives the range,
            the offending value and its index.
    """
    if not isinstance(ids, jax.Array | np.ndarray):
        ids = np.asarray(ids)
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise TypeError(f"{name}: expected integer token ids, got dtype {ids.dtype}")
    if is_concrete(ids) and (valid is None or is_concrete(valid)):
        values = np.asarray(ids)
        bad = (values < 0) | (values >= vocab)
        if valid is not None:
            bad &= np.broadcast_to(np.asarray(valid, bool), values.shape)
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"{name}: token ids must lie in [0, {vocab}) ({what} size {vocab}), got "
                f"{values[index]} at index {index if len(index) != 1 else index[0]}"
                + (f" ({int(bad.sum())} ids out of range)" if bad.sum() > 1 else "")
            )
    return ids


def check_cell(name: str, cell) -> None:
    """``TypeError`` unless ``cell`` is a :class:`jaxrnn.Cell`."""
    if isinstance(cell, Cell):
        return
    got = type(cell).__name__
    hint = ""
    if got == "Layer":
        hint = "; a Layer runs a whole sequence: pass the cell it was built from"
    elif callable(cell) and getattr(cell, "__module__", "").startswith("jaxrnn"):
        hint = f"; {getattr(cell, '__name__', got)} is a factory: call it to build the cell"
    raise TypeError(f"{name}: expected a jaxrnn.Cell, got {got}{hint}")


# ``jax.eval_shape(init, key)`` per ``init`` function, dropped with the function.
EXPECTED_PARAMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _expected_params(cell):
    """``jax.eval_shape(cell.init, key)``, cached per ``init`` function."""
    try:
        return EXPECTED_PARAMS[cell.init]
    except (KeyError, TypeError):
        pass
    expected = jax.eval_shape(cell.init, jax.random.key(0))
    with contextlib.suppress(TypeError):  # not weakly referenceable: compute every time
        EXPECTED_PARAMS[cell.init] = expected
    return expected


def _built_by_jaxrnn(cell) -> str | None:
    """The name of the built-in factory (any family of :mod:`jaxrnn.cells`: ``lstm``,
    ``conv_gru``, ``slstm``, ...) that built ``cell``, or ``None`` for any other cell (custom
    cells, attention decoders bound to a memory)."""
    factory = dict(getattr(cell, "config", ()) or ()).get("factory")
    if getattr(factory, "__module__", "").startswith(_CELLS_PACKAGE):
        return factory.__name__
    return None


# Every built-in cell factory lives in this package (one private file per family).
_CELLS_PACKAGE = "jaxrnn.cells."


def check_params(cell, params, name: str = "params") -> None:
    """Check that ``params`` have the structure, shapes and dtypes ``cell.init`` produces.

    Every cell built by a factory of :mod:`jaxrnn.cells` is checked (its ``config`` names the
    factory); a custom cell may take any params. Shapes and dtypes are static, so this check also
    runs under ``jit``.

    Raises:
        TypeError: wrong type or structure (e.g. ``GRUParams`` for an LSTM cell, ``None``), or a
            leaf of the wrong dtype.
        ValueError: a leaf of the wrong shape.
    """
    factory = _built_by_jaxrnn(cell)
    if factory is None:
        return
    expected = _expected_params(cell)
    exp_type = type(expected).__name__
    if type(params) is not type(expected):
        raise TypeError(
            f"{name}: expected {exp_type} (the params of this {factory} cell, from its init), "
            f"got {type(params).__name__}"
        )
    exp_leaves, exp_tree = jax.tree_util.tree_flatten_with_path(expected)
    got_leaves, got_tree = jax.tree_util.tree_flatten_with_path(params)
    if exp_tree != got_tree:
        raise TypeError(
            f"{name}: expected the structure of this {factory} cell's params {exp_tree}, got "
            f"{got_tree}"
        )
    for (path, exp), (_, got) in zip(exp_leaves, got_leaves, strict=True):
        where = name + jax.tree_util.keystr(path)
        if jnp.shape(got) != exp.shape:
            raise ValueError(
                f"{where}: expected shape {exp.shape} (as this {factory} cell's init makes it), "
                f"got {jnp.shape(got)}"
            )
        if jnp.result_type(got) != exp.dtype:
            raise TypeError(
                f"{where}: expected dtype {exp.dtype} (the cell's param_dtype), got "
                f"{jnp.result_type(got)}"
            )


def check_carry(cell: Cell, carry: Carry, batch_shape: tuple[int, ...]) -> None:
    """Raise a clear error unless ``carry`` matches ``cell.initial_carry(batch_shape)``."""
    expected = jax.eval_shape(lambda: cell.initial_carry(batch_shape))
    exp_leaves, exp_tree = jax.tree_util.tree_flatten_with_path(expected)
    got_leaves, got_tree = jax.tree_util.tree_flatten_with_path(carry)
    if exp_tree != got_tree:
        raise TypeError(f"carry: expected a pytree of structure {exp_tree}, got {got_tree}")
    for (path, exp), (_, got) in zip(exp_leaves, got_leaves, strict=True):
        name = "carry" + jax.tree_util.keystr(path)
        shape = jnp.shape(got)
        if shape != exp.shape:
            raise ValueError(
                f"{name}: expected shape {exp.shape} (batch shape {tuple(batch_shape)} of xs, "
                f"then the cell's state size), got {shape}"
            )
        if jnp.result_type(got) != exp.dtype:
            raise TypeError(f"{name}: expected dtype {exp.dtype}, got {jnp.result_type(got)}")


def check_step_keeps_carry_dtype(step, params, carry, inputs, xs_dtype) -> None:
    """``lax.scan`` needs a step to return its carry in the dtypes it got; say which input broke
    that (JAX's own message names no argument)."""
    x = jax.ShapeDtypeStruct(inputs.shape[1:], inputs.dtype)
    new = jax.eval_shape(lambda c, x: step(params, c, x)[0], carry, x)
    old_leaves, new_leaves = jax.tree.leaves(carry), jax.tree.leaves(new)
    got = [jnp.result_type(leaf) for leaf in old_leaves]
    out = [leaf.dtype for leaf in new_leaves]
    if len(got) == len(out) and got == out:
        return
    param_dtypes = sorted({str(jnp.result_type(p)) for p in jax.tree.leaves(params)})
    raise TypeError(
        f"carry: one step of the cell turns a carry of dtypes {[str(d) for d in got]} into "
        f"{[str(d) for d in out]}, so it cannot be scanned (xs: {xs_dtype}, params: "
        f"{', '.join(param_dtypes) or 'none'}). Give the carry, xs and params the dtypes the "
        "cell computes in, or build the cell with the param_dtype/dtype you need."
    )


def check_lengths(lengths, batch_shape: tuple[int, ...], num_steps: int) -> Array:
    """Validate ``lengths`` (integer, of the batch shape) and return it as a JAX array.

    Concrete lengths outside ``[0, T]`` are a ``ValueError``. Traced lengths (under ``jit``)
    cannot be checked at trace time; they are clipped to ``[0, T]`` (a length above ``T``
    means ``T``, a negative one 0), the one meaning every function taking ``lengths`` gives
    them, and reported through :func:`jax.experimental.checkify.debug_check`: a function
    wrapped in ``checkify.checkify(f, errors=checkify.user_checks)`` returns an error naming
    ``lengths`` instead (outside ``checkify`` the check costs nothing).
    """
    if not isinstance(lengths, jax.Array):
        lengths = np.asarray(lengths)
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise TypeError(f"lengths: expected an integer array, got dtype {lengths.dtype}")
    if lengths.shape != tuple(batch_shape):
        raise ValueError(
            f"lengths: expected shape {tuple(batch_shape)} (the batch shape of xs), "
            f"got {lengths.shape}"
        )
    if not isinstance(lengths, jax.core.Tracer):
        values = np.asarray(lengths)
        if values.size and (values.min() < 0 or values.max() > num_steps):
            raise ValueError(
                f"lengths: every length must lie in [0, {num_steps}] (T of xs), got values in "
                f"[{values.min()}, {values.max()}]"
            )
        return jnp.asarray(lengths)
    checkify.debug_check(
        jnp.all((lengths >= 0) & (lengths <= num_steps)),
        f"lengths: every length must lie in [0, {num_steps}] (T of xs), got values in "
        "[{low}, {high}] (outside checkify they are clipped to [0, T])",
        low=jnp.min(lengths, initial=0),
        high=jnp.max(lengths, initial=0),
    )
    return jnp.clip(lengths, 0, num_steps).astype(lengths.dtype)


def check_resets(resets, batch_shape: tuple[int, ...], num_steps: int, time_major: bool):
    """Validate ``resets`` (bool, ``(*batch, T)`` or ``(T, *batch)``); return it time-major."""
    if not isinstance(resets, jax.Array):
        resets = np.asarray(resets)
    if resets.dtype != jnp.bool_:
        raise TypeError(f"resets: expected a bool array, got dtype {resets.dtype}")
    expected = (num_steps, *batch_shape) if time_major else (*batch_shape, num_steps)
    if resets.shape != expected:
        layout = "(T, *batch)" if time_major else "(*batch, T)"
        raise ValueError(
            f"resets: expected shape {expected} {layout} (the batch shape and T of xs), "
            f"got {resets.shape}"
        )
    resets = jnp.asarray(resets)
    return resets if time_major else jnp.moveaxis(resets, -1, 0)
