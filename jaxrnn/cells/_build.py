"""What every built-in cell factory shares, apart from the initialisers (:mod:`._init`).

``make_cell`` assembles a :class:`~jaxrnn.Cell` from a factory's ``project`` and ``step``
(``apply = step(project(x))``, which :func:`jaxrnn.scan` splits to hoist ``project`` out of the
time loop); ``zeros_carry`` is the ``initial_carry`` of a cell with one state vector;
``affine_project`` is the input-side projection ``x @ w + b`` most cells share;
``cell_config`` is the ``config`` every factory records (what :mod:`jaxrnn.interop` and the
params check read). The conventions
they implement are described in :mod:`jaxrnn.cells`.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable

import jax.numpy as jnp

from jaxrnn._checks import (
    EXPECTED_PARAMS,
    check_batch_shape,
    check_bool,
    check_callable,
    check_features,
    check_key,
    check_param_memory,
    check_params,
    check_scalar,
    check_size,
)
from jaxrnn._core import Array, Cell, LinearRecurrence
from jaxrnn.cells import _init
from jaxrnn.precision import Policy, policy


def make_cell(
    init,
    initial_carry,
    input_size: int | None,
    output_size: int | None,
    project,
    step,
    config,
    *,
    spatial_dims: int = 0,
    linear: LinearRecurrence | None = None,
) -> Cell:
    """A :class:`~jaxrnn.Cell` whose ``apply`` is ``step(params, carry, project(params, x))``,
    with the checks of :func:`built_cell`."""

    def apply(params, carry, x):
        return step(params, carry, project(params, x))

    cell = built_cell(
        Cell(
            init,
            apply,
            initial_carry,
            input_size,
            output_size,
            project,
            step,
            config,
            spatial_dims,
            linear,
        )
    )
    _BUILT[cell.apply] = (cell.project, cell.step, cell.config)
    return cell


def built_cell(cell: Cell) -> Cell:
    """``cell`` (a built-in factory's, its ``config`` from :func:`cell_config`) with the checks
    every built-in cell makes: sizes whose params this machine cannot hold are refused now
    (:func:`jaxrnn._checks.check_param_memory`), ``init`` checks its key, ``apply`` checks its
    params (as :func:`jaxrnn.scan` does: kind, shapes and dtypes, at trace time)."""
    config = dict(cell.config)
    factory = config["factory"].__name__
    sizes = {k: v for k, v in config.items() if k.endswith("_size") and v is not None}
    what = f"{factory}({', '.join(f'{k}={v!r}' for k, v in sizes.items())})"
    expected = check_param_memory(what, cell.init, _param_bytes_bound(sizes))
    inner_init, inner_apply = cell.init, cell.apply

    def init(key):
        return inner_init(check_key("key", key))

    def apply(params, carry, x):
        check_params(checked, params)
        return inner_apply(params, carry, x)

    checked = cell._replace(init=init, apply=apply)
    if expected is not None:
        EXPECTED_PARAMS[init] = expected
    return checked


def _param_bytes_bound(sizes: dict) -> int:
    """An upper bound on the parameter bytes of any built-in cell of these sizes: every one
    holds fewer than ``8 S^2 K`` parameters (``S`` the sum of its sizes, ``K`` the kernel's
    volume; an LSTM with peepholes and a projection has about ``5 S^2``) of at most 8 bytes
    each, and twice that for safety."""
    total, volume = 0, 1
    for name, value in sizes.items():
        if name == "kernel_size":
            volume = math.prod(value)
        else:
            total += value
    return 128 * total**2 * volume


# The functions and config of every cell a factory built, keyed by its ``apply`` (held weakly:
# an entry lives as long as the cell's functions): how a consumer tells a cell as its factory
# made it, whose ``config`` describes what it computes, from a modified one (a regulariser's
# wrapper, or a ``cell._replace(apply=...)``). The native kernels' dispatch relies on it.
_BUILT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def as_built(cell: Cell) -> bool:
    """Whether ``cell``'s ``apply``, ``project``, ``step`` and ``config`` are those its factory
    made (so its ``config`` says exactly what it computes)."""
    try:
        entry = _BUILT.get(cell.apply)
    except TypeError:  # an apply that cannot be weakly referenced was not made here
        return False
    if entry is None:
        return False
    project, step, config = entry
    return cell.project is project and cell.step is step and cell.config == config


def setup(param_dtype, dtype, initializers=(None, None, None), **sizes):
    """What every factory checks first: each of ``sizes`` a positive int (returned as Python
    ints, in order), the initialisers ``(kernel_init, recurrent_kernel_init, bias_init)`` each
    ``None`` or callable, then the precision policy of ``param_dtype`` and ``dtype``.

    ``input_size, hidden_size, pol = setup(param_dtype, dtype, inits, input_size=I,
    hidden_size=H)``.
    """
    checked = [check_size(name, value) for name, value in sizes.items()]
    _init.check_initializers(*initializers)
    return (*checked, policy(param_dtype, dtype))


# The flags and numbers the factories record in their config, checked here for all of them
# (a string flag such as "no" would be truthy; a None or string forget_bias would fail inside
# JAX when init runs).
_BOOL_FIELDS = ("reset_after", "peephole", "coupled", "log_space", "reset_gate")
_REAL_FIELDS = ("forget_bias",)


def cell_config(factory, pol: Policy, **fields) -> tuple[tuple[str, object], ...]:
    """A built-in cell's ``config``: ``("factory", factory)``, then ``fields`` in the order given
    (the arguments that choose the function a step computes), then the precision policy's
    ``param_dtype`` and ``dtype``. Flags (``reset_after``, ``peephole``, ...) must be bools,
    ``forget_bias`` a finite number and ``activation`` callable, or a ``TypeError``/
    ``ValueError`` names the argument."""
    for name, value in fields.items():
        if name in _BOOL_FIELDS:
            fields[name] = check_bool(name, value)
        elif name in _REAL_FIELDS and factory.__name__ != "slstm":  # slstm: also "powerlaw"
            fields[name] = check_scalar(name, value)
        elif name == "activation":
            check_callable(name, value, "jnp.tanh or jax.nn.relu")
    return (("factory", factory), *fields.items(), *pol.config())


def zeros_carry(size, default_dtype, carry_type=None) -> Callable[..., Array]:
    """``initial_carry`` returning zeros of shape ``(*batch_shape, size)``, or with a
    ``carry_type`` (a NamedTuple such as ``LSTMCarry``) and one size per field, that NamedTuple
    of zeros of shapes ``(*batch_shape, size_k)``."""

    def initial_carry(batch_shape=(), dtype=None):
        batch_shape = check_batch_shape(batch_shape)
        dtype = default_dtype if dtype is None else _carry_dtype(dtype)
        if carry_type is None:
            return jnp.zeros((*batch_shape, size), dtype)
        return carry_type(*(jnp.zeros((*batch_shape, s), dtype) for s in size))

    return initial_carry


def _carry_dtype(dtype):
    """``dtype`` as a floating-point dtype for a carry, or a ``TypeError`` naming it."""
    try:
        checked = jnp.dtype(dtype)
    except TypeError:
        checked = None
    if checked is None or not jnp.issubdtype(checked, jnp.inexact):
        raise TypeError(f"dtype: expected a floating-point dtype for the carry, got {dtype!r}")
    return checked


def affine_project(input_size: int, weight: str, bias: str, pol: Policy):
    """``project(params, x) = x @ params.<weight> + params.<bias>`` with a feature-size check,
    in the accumulation dtype of ``pol``."""

    def project(params, x):
        check_features("x", x, input_size)
        return pol.dot(x, getattr(params, weight)) + pol.acc(getattr(params, bias))

    return project
