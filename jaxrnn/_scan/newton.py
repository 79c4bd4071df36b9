r"""Evaluating a recurrence in parallel over time by Newton's method on its fixed-point equations.

A scan computes :math:`h_t = f(h_{t-1}, x_t)` one step after another. DEER (Lim et al. 2024,
"Parallelizing non-linear sequential models over the sequence length") instead treats the whole
trajectory :math:`h = (h_1, \dots, h_T)` as the unknown of the :math:`T` equations

.. math::

    r_t(h) = h_t - f(h_{t-1}, x_t) = 0, \qquad t = 1, \dots, T \quad (h_0 \text{ given}),

and solves them by Newton's method. Linearising every step around the current guess
:math:`h^{(k)}` gives a *linear* recurrence,

.. math::

    h^{(k+1)}_t = J_t\, h^{(k+1)}_{t-1} + c_t, \qquad
    J_t = \frac{\partial f}{\partial h}\bigl(h^{(k)}_{t-1}, x_t\bigr), \quad
    c_t = f\bigl(h^{(k)}_{t-1}, x_t\bigr) - J_t\, h^{(k)}_{t-1},

which an associative scan solves in :math:`O(\log T)` depth: the affine maps
:math:`v \mapsto J_t v + c_t` compose as :math:`(J_2, c_2) \circ (J_1, c_1) = (J_2 J_1,
J_2 c_1 + c_2)`. Every iteration makes at least one more step exact (step 1 is exact after one
iteration, and step :math:`t` after :math:`t`), so :math:`T` iterations always suffice; near the
solution the convergence is quadratic, and a few iterations usually do.

quasi-DEER (Gonzalez et al. 2024, "Towards scalable and stable parallelization of nonlinear
RNNs") keeps only the diagonal of :math:`J_t`: the scan then works on vectors
(:math:`O(D)` instead of :math:`O(D^3)` per step and memory :math:`O(TD)` instead of
:math:`O(TD^2)`), at the price of more iterations; the bound of :math:`T` iterations still holds.
The same paper's ELK damps the iteration (Levenberg-Marquardt, computed by a Kalman filter) to
keep it stable where the Jacobian products grow; :attr:`Newton.damping` is described there.

:func:`newton_scan` is a drop-in for ``jax.lax.scan``; :func:`jaxrnn.scan` uses it for
``method="newton"``. Its derivatives do not differentiate through the iterations: they come from
the implicit function theorem at the solution, one more linear recurrence (run in reverse for
gradients), solved the same way.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._scan._newton_linear import (  # the linear recurrences, by parallel prefix scans
    _apply,
    _diagonal,
    _kalman_gains,
    _linear_scan,
    _shift,
)
from jaxrnn._scan._newton_solve import (  # derivatives' solvers, and what failing does
    NewtonConvergenceError,
    _LinearSolver,
    _on_failure,
)
from jaxrnn._scan.sequence_parallel import SeqAxis, check_error_reporting

__all__ = [
    "AUTO_FULL_MAX",
    "Newton",
    "NewtonConvergenceError",
    "NewtonInfo",
    "check_newton_cell",
    "newton_scan",
]

#: ``jacobian="auto"`` uses full Jacobians up to this state size per example, diagonal ones
#: above. A full Jacobian costs :math:`O(TD^2)` memory and :math:`O(D^3)` per step of the scan;
#: both forms need :math:`D` Jacobian-vector products per iteration to build, and the full form
#: converges in fewer iterations. At :math:`D = 64` a step's matrix product costs about as much
#: as the :math:`D` products with a GRU of that size, and the Jacobians of a batch of 16 sequences
#: of 1024 steps take 256 MB in float32; beyond, memory decides for the diagonal.
AUTO_FULL_MAX = 64

# Diagonal Jacobians are built from one Jacobian-vector product per state component; batches of
# them are evaluated together, at most about this many tangent elements at once (256 MB in
# float32), so the diagonal form never holds a full Jacobian in memory.
_CHUNK_ELEMENTS = 1 << 26


class Newton(NamedTuple):
    r"""Options of :func:`newton_scan` (``jaxrnn.scan(..., method=Newton(...))``).

    ``method="newton"`` means ``Newton()``.

    Attributes:
        tol: convergence tolerance. The forward iteration stops when the residual of the
            recurrence, :math:`\max_{t,i} |f(h_{t-1}, x_t)_i - h_{t,i}| / (1 + |f(h_{t-1},
            x_t)_i|)`, is at most ``tol``; the linear recurrences of the derivatives stop when
            their residual is at most ``tol`` relative to the largest entry of their solution.
            ``None`` (default): :math:`\epsilon^{3/4}` for the machine epsilon :math:`\epsilon`
            of the precision ``f`` computes in, the narrowest floating dtype among the carry
            and the outputs ``y``: about ``6e-6`` for float32, ``2e-12`` for float64, ``3e-2``
            for bfloat16 (below the rounding of its arithmetic, Newton's corrections are
            noise: a bfloat16 cell with a float32 carry would creep towards float32's
            tolerance one step per iteration).
        max_iters: iteration cap. ``None`` (default): the number of steps :math:`T`, after which
            the undamped iteration is exact, whatever the Jacobian approximation.
        jacobian: ``"full"`` (DEER: the whole :math:`D \times D` Jacobian of each step),
            ``"diagonal"`` (quasi-DEER: its diagonal) or ``"auto"`` (default): full when the
            state of one example has at most :data:`AUTO_FULL_MAX` entries, diagonal otherwise.
            The derivatives are exact either way (the diagonal form solves their linear
            recurrences by iterative refinement with exact Jacobian products).
        damping: the ELK damping :math:`\lambda \ge 0` (default 0: plain Newton). Each
            iteration then runs the Kalman filter of ELK with unit process noise and
            observation noise :math:`1/\lambda` around the current guess; per state component,
            with the diagonal :math:`a_t` of the Jacobian,

            .. math::

                P^-_t = a_t^2 P_{t-1} + 1, \quad
                K_t = \frac{\lambda P^-_t}{\lambda P^-_t + 1}, \quad
                P_t = (1 - K_t) P^-_t, \quad P_0 = 0, \\
                h^{(k+1)}_t = (1 - K_t) \odot \bigl(J_t h^{(k+1)}_{t-1} + c_t\bigr)
                    + K_t \odot h^{(k)}_t .

            With ``jacobian="diagonal"`` this is quasi-ELK's filter exactly (Gonzalez et al.
            2024 use the filtered means, as here); with full Jacobians the gains still come from
            the diagonal (the covariance is kept diagonal), a cheaper stand-in for ELK's full
            Kalman filter. The gains shrink the steps where the Jacobian products grow and leave
            the solution unchanged, but a damped iteration no longer becomes exact after
            :math:`T` iterations: give ``max_iters`` room.
        on_failure: what happens when ``max_iters`` iterations do not reach ``tol`` (or the
            iteration overflows): ``"sequential"`` (default) computes the result with
            ``jax.lax.scan`` instead (inside the same compiled program; the returned
            :class:`NewtonInfo` says it happened), ``"error"`` raises
            :class:`NewtonConvergenceError` naming the iterations and the residual (under
            ``jax.jit`` it surfaces as a ``jax.errors.JaxRuntimeError`` carrying that message,
            when the result is computed). The linear recurrences of the derivatives are
            treated the same way (their fallback is a sequential scan of Jacobian products).
    """

    tol: float | None = None
    max_iters: int | None = None
    jacobian: Literal["full", "diagonal", "auto"] = "auto"
    damping: float = 0.0
    on_failure: Literal["error", "sequential"] = "sequential"


class NewtonInfo(NamedTuple):
    """Diagnostics of the forward iteration, from ``newton_scan(..., return_info=True)``.

    Attributes:
        iterations: the number of Newton iterations run (linear recurrences solved), an int32
            scalar; 0 when the initial guess already passes.
        residual: the residual after them (see :attr:`Newton.tol`), a float scalar.
        converged: whether it reached ``tol``. ``False`` means the result came from the
            sequential fallback (``on_failure="sequential"``).
    """

    iterations: jax.Array
    residual: jax.Array
    converged: jax.Array


class _Config(NamedTuple):
    """The static configuration of one solve (hashable: a non-differentiable argument)."""

    tol: float
    max_iters: int
    num_steps: int
    full: bool
    damping: float
    on_failure: str
    axis: Any = None  # a SeqAxis when the time axis is split over devices (sequence_parallel)


def newton_scan(
    f,
    init,
    xs,
    *,
    reverse: bool = False,
    options: Newton = Newton(),  # noqa: B008 (an immutable NamedTuple)
    length: int | None = None,
    batch_ndim: int = 0,
    return_info: bool = False,
    sequence_axis: str | None = None,
):
    r"""``jax.lax.scan(f, init, xs, reverse=reverse)`` evaluated in parallel by Newton's method.

    .. math::

        (h_t, y_t) = f(h_{t-1}, x_t), \qquad t = 1, \dots, T

    The trajectory :math:`h_{1..T}` is found by the Newton (DEER) or quasi-Newton (quasi-DEER)
    iteration of the module docstring, from the initial guess :math:`h_t = h_0`. Each round
    evaluates ``f`` at all steps at once from the current trajectory (which gives the residual);
    the outputs ``ys`` and the final carry are those evaluations for the trajectory that passed,
    so they are exactly ``f``'s on it. The carry is flattened into one state vector per example
    (its leaves concatenated, computed in at least float32).

    Derivatives (``jax.grad``, ``jax.vjp``, ``jax.jvp``, ...) come from the implicit function
    theorem at the solution rather than from the iterations: a tangent :math:`\dot h` solves the
    linear recurrence :math:`\dot h_t = J_t \dot h_{t-1} + \dot f_t` and a cotangent the adjoint
    one, run in reverse,

    .. math::

        \lambda_t = \bar h_t + J_{t+1}^\top \lambda_{t+1}, \quad \lambda_{T+1} = 0, \qquad
        \bar\theta = \sum_t \Bigl(\frac{\partial f(h_{t-1}, x_t)}{\partial \theta}\Bigr)^{\!\top}
        \lambda_t,

    (:math:`\theta`: ``init``, ``xs`` and whatever ``f`` closes over, such as parameters),
    with the exact Jacobians at the solution: one associative scan for full Jacobians,
    iterative refinement around the diagonal one otherwise, and the products with
    :math:`\partial f/\partial\theta` as one vectorised Jacobian product over all steps.

    Args:
        f: the step, ``f(carry, x) -> (carry, y)``, as for ``jax.lax.scan``. The carry must be a
            pytree of floating-point arrays that ``f`` returns with the same structure, shapes
            and dtypes; ``f`` must be differentiable in it.
        init: the initial carry.
        xs: the inputs, a pytree of arrays with a leading time axis of length :math:`T` (or
            ``None`` with ``length``).
        reverse: run from the last step to the first, as ``jax.lax.scan(reverse=True)``.
        options: a :class:`Newton`.
        length: the number of steps when ``xs`` is ``None`` (checked against ``xs`` otherwise).
        batch_ndim: the number of leading axes of every carry leaf that are batch axes, along
            which ``f`` treats examples independently (it must: a step may not mix examples).
            Each example then has its own :math:`D \times D` Jacobians. ``0`` (default) treats
            the whole carry as one state, which is always correct but makes full Jacobians
            :math:`B^2` times larger for a batch of :math:`B`. :func:`jaxrnn.scan` passes its
            batch rank.
        return_info: also return a :class:`NewtonInfo`.
        sequence_axis: the name of a manual mesh axis of an enclosing ``jax.shard_map`` that
            splits the time axis: ``xs`` is then this device's chunk of the sequence (in time
            order, the same length on every device), ``init`` the same on every device, and
            the returned ``ys`` this chunk's outputs and the carry the whole sequence's. Every
            linear recurrence is combined across the devices (their chunks' composed maps,
            one small exchange per solve), the states entering each chunk come from the
            previous device, and the convergence tests take the maximum over the devices.
            :func:`jaxrnn.scan` passes it for a time-sharded ``xs``. ``on_failure="error"``
            then needs the mesh's other axes not ``Explicit`` (jax runs no
            ``jax.debug.callback`` there): a ``ValueError`` otherwise.

    Returns:
        ``(carry, ys)`` as ``jax.lax.scan`` returns them, and the :class:`NewtonInfo` when
        ``return_info``.

    Raises:
        TypeError: if a carry leaf is not floating-point, ``f`` changes the carry's structure or
            dtypes, or ``options`` is not a :class:`Newton`.
        ValueError: if an option is out of range, the leaves of ``xs`` disagree on the number of
            steps, or the carry leaves do not share ``batch_ndim`` leading axes.
        NewtonConvergenceError: when the iteration does not converge and
            ``on_failure="error"``.

    Under ``jax.vmap`` the convergence test covers the whole batch, and the
    ``on_failure="sequential"`` fallback becomes a select that always runs both branches.

    >>> import jax, jax.numpy as jnp
    >>> from jaxrnn.newton import Newton, newton_scan
    >>> def f(h, x):
    ...     h = jnp.tanh(0.5 * h + x)
    ...     return h, 2 * h
    >>> xs = jnp.linspace(-1.0, 1.0, 12).reshape(6, 2)
    >>> carry, ys, info = newton_scan(f, jnp.zeros(2), xs, return_info=True)
    >>> ref_carry, ref_ys = jax.lax.scan(f, jnp.zeros(2), xs)
    >>> bool(jnp.allclose(ys, ref_ys, atol=1e-5)), bool(info.converged), int(info.iterations)
    (True, True, 3)
    >>> g = jax.grad(lambda xs: newton_scan(f, jnp.zeros(2), xs)[1].sum())(xs)
    >>> g_ref = jax.grad(lambda xs: jax.lax.scan(f, jnp.zeros(2), xs)[1].sum())(xs)
    >>> bool(jnp.allclose(g, g_ref, atol=1e-5))
    True
    """
    if not isinstance(options, Newton):
        raise TypeError(f"options: expected a jaxrnn.newton.Newton, got {options!r}")
    num_steps = _num_steps(xs, length)
    layout = _Layout.of(init, batch_ndim)
    cfg = _config(options, layout, num_steps, layout.dtypes)  # checks the options
    if num_steps == 0:
        carry, ys = jax.lax.scan(f, init, xs, length=0, reverse=reverse)
        info = NewtonInfo(jnp.int32(0), jnp.zeros((), layout.dtype), jnp.array(True))
        return (carry, ys, info) if return_info else (carry, ys)
    if reverse:
        xs = jax.tree.map(lambda v: jnp.flip(v, 0), xs)
    axis = None
    if sequence_axis is not None:
        axis = SeqAxis(sequence_axis, jax.lax.axis_size(sequence_axis), reverse, typed=False)
        check_error_reporting(options.on_failure)

    def step(h, x):
        carry, y = f(layout.unflatten(h), x)
        layout.check_output(carry)
        return layout.flatten(carry), y

    h0 = layout.flatten(init)
    x0 = jax.tree.map(lambda v: v[0], xs)
    step, consts = jax.closure_convert(step, h0, x0)
    if options.tol is None:  # the precision f computes in: that of its carry and outputs
        ys_shape = jax.eval_shape(step, h0, x0, *consts)[1]
        computed = [y.dtype for y in jax.tree.leaves(ys_shape)]
        floats = [d for d in computed if jnp.issubdtype(d, jnp.floating)]
        cfg = _config(options, layout, num_steps, (*layout.dtypes, *floats))
    if axis is not None:  # max_iters counts the whole sequence's steps
        cfg = _config(options._replace(tol=cfg.tol), layout, num_steps * axis.size, ())
        cfg = cfg._replace(num_steps=num_steps, axis=axis)
    new_states, ys, info = _trajectory(step, cfg, tuple(consts), h0, xs)
    last = new_states[-1] if axis is None else axis.from_last(new_states[-1])
    carry = layout.unflatten(last)
    if reverse:
        ys = jax.tree.map(lambda v: jnp.flip(v, 0), ys)
    info = jax.tree.map(jax.lax.stop_gradient, info)
    return (carry, ys, info) if return_info else (carry, ys)


# --- the state vector ----------------------------------------------------------------------


def check_newton_cell(cell) -> None:
    """Refuse, up front, a cell whose carry Newton's method cannot differentiate: every carry
    leaf must be real floating-point (not complex, as :func:`jaxrnn.lru`'s, nor integer).

    Raises:
        TypeError: naming the cell, the offending dtype and the methods that do run it.
    """
    try:
        carry = jax.eval_shape(lambda: cell.initial_carry(()))
    except Exception:  # a custom cell without a batch-free carry: newton_scan checks it later
        return
    bad = sorted({str(leaf.dtype) for leaf in jax.tree.leaves(carry)} - _REAL_FLOATS)
    if bad:
        factory = getattr(dict(cell.config or ()).get("factory"), "__name__", "custom")
        other = '"associative" or "sequential"' if cell.linear is not None else '"sequential"'
        raise TypeError(
            f'method="newton": Newton\'s method needs a real floating-point carry (it '
            f"differentiates the step with respect to the carry), and this {factory} cell's "
            f"carry has dtype {', '.join(bad)}: use method={other}"
        )


_REAL_FLOATS = {str(jnp.dtype(d)) for d in (jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64)}


class _Layout(NamedTuple):
    """How a carry pytree maps to the state ``(*batch, D)`` and back."""

    treedef: Any
    shapes: tuple[tuple[int, ...], ...]  # each leaf's shape without the batch axes
    dtypes: tuple[Any, ...]
    batch_shape: tuple[int, ...]
    dtype: Any  # the state's dtype: the leaves' promoted dtype, at least float32

    @classmethod
    def of(cls, carry, batch_ndim: int) -> _Layout:
        if isinstance(batch_ndim, bool) or not isinstance(batch_ndim, int) or batch_ndim < 0:
            raise ValueError(f"batch_ndim: expected an int >= 0, got {batch_ndim!r}")
        leaves, treedef = jax.tree.flatten(carry)
        if not leaves:
            raise TypeError("init: newton_scan needs a carry with at least one array leaf")
        dtypes = tuple(jnp.result_type(leaf) for leaf in leaves)
        for dtype in dtypes:
            if not jnp.issubdtype(dtype, jnp.floating):
                raise TypeError(
                    "init: Newton's method needs a floating-point carry (it differentiates the "
                    f"step with respect to it), got a leaf of dtype {dtype}"
                )
        shapes = [jnp.shape(leaf) for leaf in leaves]
        batch_shape = shapes[0][:batch_ndim]
        if any(len(s) < batch_ndim or s[:batch_ndim] != batch_shape for s in shapes):
            raise ValueError(
                f"batch_ndim={batch_ndim}: every carry leaf must start with the same "
                f"{batch_ndim} batch axes, got leaf shapes {shapes}"
            )
        # the widest leaf dtype, at least float32 (no promotion: strict promotion may be on)
        dtype = max([jnp.dtype(jnp.float32), *dtypes], key=lambda d: jnp.dtype(d).itemsize)
        return cls(treedef, tuple(s[batch_ndim:] for s in shapes), dtypes, batch_shape, dtype)

    @property
    def size(self) -> int:
        """``D``, the number of state entries per example."""
        return sum(math.prod(s) for s in self.shapes)

    def flatten(self, carry) -> jax.Array:
        leaves = jax.tree.leaves(carry)
        parts = [jnp.reshape(leaf, (*self.batch_shape, -1)).astype(self.dtype) for leaf in leaves]
        return jnp.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]

    def unflatten(self, h: jax.Array):
        batch = h.shape[: h.ndim - 1]  # the batch axes, or more under vmap
        sizes = [math.prod(s) for s in self.shapes]
        parts = jnp.split(h, np.cumsum(sizes)[:-1], axis=-1) if len(sizes) > 1 else [h]
        leaves = [
            p.reshape(*batch, *s).astype(d)
            for p, s, d in zip(parts, self.shapes, self.dtypes, strict=True)
        ]
        return jax.tree.unflatten(self.treedef, leaves)

    def check_output(self, carry) -> None:
        """``jax.lax.scan``'s contract: ``f`` returns the carry it was given, type for type."""
        leaves, treedef = jax.tree.flatten(carry)
        got = [(jnp.shape(x)[len(self.batch_shape) :], jnp.result_type(x)) for x in leaves]
        want = list(zip(self.shapes, self.dtypes, strict=True))
        if treedef != self.treedef or got != want:
            raise TypeError(
                "f: the carry output must have the structure, shapes and dtypes of the carry "
                f"input (as for jax.lax.scan): got {treedef} with {got}, expected "
                f"{self.treedef} with {want}"
            )


def _num_steps(xs, length) -> int:
    sizes = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for leaf in jax.tree.leaves(xs)}
    if None in sizes:
        raise ValueError("xs: every leaf needs a leading time axis")
    if length is not None:
        sizes.add(int(length))
    if not sizes:
        raise ValueError("length: needed when xs has no leaves (as for jax.lax.scan)")
    if len(sizes) != 1:
        raise ValueError(
            f"xs: the leaves (and length) disagree on the number of steps: {sorted(sizes)}"
        )
    return sizes.pop()


def _config(options: Newton, layout: _Layout, num_steps: int, dtypes) -> _Config:
    """Check ``options`` and resolve their defaults for this carry, length and the floating
    dtypes ``f`` computes in."""
    tol, max_iters, jacobian, damping, on_failure = options
    if tol is None:
        tol = max(float(jnp.finfo(d).eps) for d in dtypes) ** 0.75
    if isinstance(tol, bool) or not (isinstance(tol, numbers.Real) and 0 < tol < math.inf):
        raise ValueError(f"tol: expected a positive number, got {tol!r}")
    if max_iters is None:
        max_iters = max(num_steps, 1)
    if isinstance(max_iters, bool) or not isinstance(max_iters, numbers.Integral) or max_iters < 1:
        raise ValueError(f"max_iters: expected an int >= 1 or None, got {max_iters!r}")
    if jacobian not in ("full", "diagonal", "auto"):
        raise ValueError(f'jacobian: expected "full", "diagonal" or "auto", got {jacobian!r}')
    real = isinstance(damping, numbers.Real) and not isinstance(damping, bool)
    if not (real and 0 <= damping < math.inf):
        raise ValueError(f"damping: expected a number >= 0, got {damping!r}")
    if on_failure not in ("error", "sequential"):
        raise ValueError(f'on_failure: expected "error" or "sequential", got {on_failure!r}')
    full = jacobian == "full" or (jacobian == "auto" and layout.size <= AUTO_FULL_MAX)
    return _Config(float(tol), int(max_iters), num_steps, full, float(damping), on_failure)


# --- evaluating the step at every time step at once ----------------------------------------


def _evaluate(step, consts, prev, xs):
    """``step`` at every time step: the new states and outputs, ``(T, *batch, D)`` and ys."""
    return jax.vmap(lambda h, x: step(h, x, *consts))(prev, xs)


def _linearize(step, consts, prev, xs):
    """The new states, their Jacobian-vector product in ``prev`` (a function), and the ys."""
    return jax.linearize(lambda p: _evaluate(step, consts, p, xs), prev, has_aux=True)


def _jacobian(jvp, prev, full: bool):
    r"""The Jacobians :math:`J_t = \partial f / \partial h` at ``prev``: ``(T, *batch, D, D)``
    when ``full``, else their diagonals ``(T, *batch, D)``; ``jvp`` is the linearisation there.

    One Jacobian-vector product per state component ``d``, with the tangent :math:`e_d` in
    every example at once: the examples are independent, so each gets its own column ``d``.
    """
    size = prev.shape[-1]

    def column(d):
        # zeros_like(prev) + e_d: the tangent gets prev's type, sharding included (explicit meshes)
        return jvp(jnp.zeros_like(prev) + jax.nn.one_hot(d, size, dtype=prev.dtype))

    chunk = _CHUNK_ELEMENTS // prev.size
    if full or chunk >= size:  # all columns fit in the budget: take the diagonal of the whole
        columns = jnp.moveaxis(jax.vmap(column)(jnp.arange(size)), 0, -1)
        return columns if full else jnp.diagonal(columns, 0, -2, -1)

    def entry(d):
        return jnp.sum(column(d) * jax.nn.one_hot(d, size, dtype=prev.dtype), axis=-1)

    diag = jax.lax.map(entry, jnp.arange(size), batch_size=max(chunk, 1))
    return jnp.moveaxis(diag, 0, -1)


# --- the forward iteration -----------------------------------------------------------------


def _residual(states, new_states, axis):
    err = jnp.max(jnp.abs(new_states - states) / (1 + jnp.abs(new_states)))
    return err if axis is None else axis.maximum(err)


def _solve(step, cfg: _Config, consts, h0, xs):
    """Newton iterations: the new states ``f(h_{t-1}, x_t)`` ``(T, *batch, D)`` and the outputs
    at the solution, and the :class:`NewtonInfo`.

    Each round linearises every step at the current trajectory (which also evaluates ``f``
    there, hence its residual), and solves the linear recurrence unless the residual is small
    enough or the rounds are used up; the round that finds this returns the trajectory it was
    given, so the outputs always belong to the trajectory whose residual is reported.
    """

    axis = cfg.axis

    def iterate(loop):
        k, states, *_ = loop
        prev = _shift(states, h0, axis)
        fs, jvp, ys = _linearize(step, consts, prev, xs)
        err = _residual(states, fs, axis)
        update = (err > cfg.tol) & jnp.isfinite(err) & (k < cfg.max_iters)
        jac = _jacobian(jvp, prev, cfg.full)
        # the first step's input h0 is known: c_1 = f(h0, x_1) (on the first device only)
        first = True if axis is None else axis.is_first()
        coef = jac.at[0].set(jnp.where(first, jnp.zeros_like(jac[0]), jac[0]))
        rhs = fs - _apply(jac, prev, cfg.full)
        rhs = rhs.at[0].set(jnp.where(first, fs[0], rhs[0]))
        if cfg.damping:
            keep = 1 - _kalman_gains(_diagonal(jac, cfg.full), cfg.damping, axis)
            coef = keep[..., None] * coef if cfg.full else keep * coef
            rhs = keep * rhs + (1 - keep) * states
        states = jnp.where(update, _linear_scan(coef, rhs, cfg.full, axis=axis), states)
        return k + update.astype(k.dtype), states, fs, ys, err, ~update

    guess = jnp.broadcast_to(h0, (cfg.num_steps, *h0.shape))
    fs, ys = jax.tree.map(_zeros, jax.eval_shape(lambda p: _evaluate(step, consts, p, xs), guess))
    if axis is not None:  # per-device loop carries
        guess, fs, ys = axis.vary((guess, fs, ys))
    inf = jnp.array(jnp.inf, h0.dtype)
    loop = (jnp.int32(0), guess, fs, ys, inf, jnp.array(False))
    k, _, fs, ys, err, _ = jax.lax.while_loop(lambda loop: ~loop[-1], iterate, loop)
    converged = err <= cfg.tol

    def sequential():
        def one(h, x):
            h, y = step(h, x, *consts)
            return h, (h, y)

        if axis is None:
            return jax.lax.scan(one, h0, xs, length=cfg.num_steps)[1]
        return axis.on_whole(lambda xs: jax.lax.scan(one, axis.vary(h0), xs)[1], xs)

    fs, ys = _on_failure(cfg, converged, (fs, ys), sequential, "the Newton iteration", k, err)
    return fs, ys, NewtonInfo(k, err, converged)


def _zeros(shape: jax.ShapeDtypeStruct) -> jax.Array:
    """Zeros of ``shape``'s shape, dtype and (under an explicit mesh) sharding."""
    sharding = getattr(shape, "sharding", None)
    if isinstance(sharding, jax.sharding.NamedSharding) and not sharding.mesh.empty:
        return jnp.zeros(shape.shape, shape.dtype, out_sharding=sharding)
    return jnp.zeros(shape.shape, shape.dtype)


# --- derivatives: the implicit function theorem at the solution ----------------------------


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _trajectory(step, cfg: _Config, consts, h0, xs):
    return _solve(step, cfg, consts, h0, xs)


@_trajectory.defjvp
def _trajectory_jvp(step, cfg: _Config, primals, tangents):
    r"""The tangent :math:`\dot h` solves :math:`\dot h_t = J_t \dot h_{t-1} + \dot f_t`, where
    :math:`\dot f_t` is the tangent of :math:`f(h_{t-1}, x_t)` from ``h0``, ``xs`` and
    ``consts`` alone; the outputs' tangents follow from it. ``jax.lax.custom_linear_solve``
    makes the transpose (the gradient) solve the adjoint recurrence with its own solver instead
    of transposing the solver."""
    consts, h0, xs = primals
    d_consts, d_h0, d_xs = tangents
    new_states, ys, info = _trajectory(step, cfg, consts, h0, xs)
    # At the solution the states entering the steps are the new states shifted by one.
    axis = cfg.axis
    prev = _shift(new_states, h0, axis)

    def evaluate(p, x, c):
        return _evaluate(step, c, p, x)

    d_prev = _shift(jnp.zeros_like(new_states), d_h0, axis)
    _, (rhs, rhs_ys) = jax.jvp(evaluate, (prev, xs, consts), (d_prev, d_xs, d_consts))
    jvp, jvp_ys = _split(jax.linearize(lambda p: evaluate(p, xs, consts), prev)[1])
    zero = jnp.zeros_like(h0)

    def matvec(v):  # (I - S) v with (S v)_t = J_t v_{t-1}
        return v - jvp(_shift(v, zero, axis))

    jac = _jacobian(jvp, prev, cfg.full)
    solver = _LinearSolver(step, cfg, consts, prev, xs, jac)
    d_states = jax.lax.custom_linear_solve(
        matvec, rhs, solve=solver.forward, transpose_solve=solver.adjoint
    )
    d_ys = jax.tree.map(_add_tangents, rhs_ys, jvp_ys(_shift(d_states, zero, axis)))
    float0 = jax.dtypes.float0
    d_info = NewtonInfo(np.zeros((), float0), jnp.zeros_like(info.residual), np.zeros((), float0))
    return (new_states, ys, info), (d_states, d_ys, d_info)


def _split(linear):
    """Split a linear function to ``(new states, ys)`` into one function per output."""
    return (lambda v: linear(v)[0]), (lambda v: linear(v)[1])


def _add_tangents(a, b):
    return a if a.dtype == jax.dtypes.float0 else a + b
