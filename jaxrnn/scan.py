"""Running a cell over a sequence: ``jax.lax.scan``, or in parallel over time.

:func:`scan` evaluates the same recurrence by one of three methods: a sequential
``jax.lax.scan`` (the default), a parallel prefix scan (``jax.lax.associative_scan``) for cells
whose recurrence is linear in the carry (:class:`~jaxrnn.LinearRecurrence`), or Newton
iterations for any cell (:mod:`jaxrnn.newton`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn._checks import check_cell, check_params
from jaxrnn.cells import Array, Carry, Cell, Params
from jaxrnn.newton import Newton, newton_scan

__all__ = ["Method", "Remat", "save_nonlinear", "scan"]

#: What ``remat`` accepts: ``False``, ``True``, ``"sqrt"`` or a ``jax.checkpoint`` policy.
Remat = bool | Literal["sqrt"] | Callable[..., bool]

#: What ``method`` accepts: one of these names or a :class:`jaxrnn.newton.Newton`.
Method = Literal["sequential", "associative", "newton", "auto"] | Any

_METHODS = ("sequential", "associative", "newton", "auto")

# Primitives whose outputs the backward pass of a step keeps (``remat=False``): matmuls,
# transcendental functions and reductions, which cost far more to recompute than to store.
# Everything else in a step (adds, multiplies, ``1 - s``, splits, selects) is cheap elementwise
# work that XLA recomputes inside the backward loop's fusions instead of writing it to memory and
# reading it back. Measured in benchmarks/README.md ("What the backward pass keeps"): the LSTM
# training step 1.16x faster and 32% smaller than keeping every intermediate.
_SAVED_PRIMITIVES = frozenset(
    {
        "dot_general",
        "conv_general_dilated",
        "logistic",
        "tanh",
        "exp",
        "exp2",
        "log",
        "log1p",
        "expm1",
        "erf",
        "erfc",
        "erf_inv",
        "sin",
        "cos",
        "tan",
        "atan2",
        "pow",
        "sqrt",
        "rsqrt",
        "cbrt",
        "cumsum",
        "reduce_sum",
        "reduce_max",
        "reduce_min",
        "argmax",
        "argmin",
    }
)


def save_nonlinear(prim, *_, **__) -> bool:
    """``jax.checkpoint`` policy of ``jaxrnn.scan(remat=False)``.

    Saves the outputs of matmuls, convolutions, transcendental functions and reductions; the
    elementwise arithmetic between them is recomputed in the backward pass.

    >>> import jax, jaxrnn as jr
    >>> jr.save_nonlinear(jax.lax.logistic_p), jr.save_nonlinear(jax.lax.mul_p)
    (True, False)
    """
    return prim.name in _SAVED_PRIMITIVES


def scan(
    cell: Cell,
    params: Params,
    xs: Array,
    carry: Carry | None = None,
    *,
    lengths: Array | None = None,
    resets: Array | None = None,
    reverse: bool = False,
    time_major: bool = False,
    unroll: int | bool = 1,
    remat: Remat = False,
    hoist: bool | None = None,
    method: Method = "sequential",
) -> tuple[Carry, Array]:
    r"""Run ``cell`` over the time axis of ``xs``.

    .. math::

        (\text{carry}_t, y_t) = \text{cell.apply}(\text{params}, \text{carry}_{t-1}, x_t),
        \qquad t = 1, \dots, T

    When the cell provides ``project``/``step`` and ``hoist`` is on, the input projection of all
    ``T`` steps is computed in one matmul before the loop, and the loop runs only the recurrent
    part.

    ``method`` chooses how the recurrence is evaluated; every option (``carry``, ``lengths``,
    ``resets``, ``reverse``, ``time_major``, any batch shape) means the same under every
    method, and values and gradients agree with ``"sequential"`` up to floating-point
    rounding:

    * ``"sequential"`` (default): ``jax.lax.scan``, one step after the other: depth and work
      :math:`O(T)`.
    * ``"associative"``: for a cell that declares its recurrence linear,
      :math:`h_t = a_t \odot h_{t-1} + b_t` with :math:`a_t, b_t` from the input only
      (``cell.linear``, a :class:`~jaxrnn.LinearRecurrence`; the cells of
      :mod:`jaxrnn.linear`). The coefficients of all steps are computed at once, and the
      carries are the prefix compositions of the affine maps :math:`h \mapsto a_t h + b_t`,
      which ``jax.lax.associative_scan`` evaluates as a balanced tree: :math:`O(\log T)`
      depth (about :math:`2 \log_2 T` rounds, each one elementwise operation over up to
      :math:`T/2` pairs) for :math:`O(T)` work (about :math:`2T` compositions of two
      multiplies and an add, against :math:`T` multiply-adds for the loop, and more memory
      traffic: every round reads and writes its slice of the ``(T, *batch, H)``
      coefficients). The loop's :math:`T` dependent steps each have only ``batch * H``
      independent lanes of work; the tree has :math:`T/2` times more per round. On a GPU or
      TPU, whose thousands of lanes one step leaves mostly idle and whose per-step launch
      or loop overhead is what a long ``lax.scan`` pays, the shorter critical path wins
      (untimed here: no accelerator was available). On a CPU a few cores are already busy
      with one step's ``batch * H`` lanes, so the extra work and traffic only cost: the
      sequential scan of a linear recurrence measured 5-10x faster than
      ``associative_scan`` (T = 1k-64k; 3.7 against 37.9 ms at T = 1024, B = 16, H = 256).
      Masks fold into the coefficients: a step beyond ``lengths`` becomes the identity
      :math:`(1, 0)` and outputs zeros, a reset step becomes
      :math:`(0, a_t h_0 + b_t)`, and ``reverse`` composes from the end. A cell that also
      declares ``log_coefficients`` (positive :math:`a, b`) is composed in log space. Any
      other cell is a ``ValueError``.
    * ``"newton"`` or a :class:`jaxrnn.newton.Newton` (its options; ``"newton"`` is
      ``Newton()``): any cell, evaluated in parallel over time by Newton iterations on the
      whole trajectory (DEER); see :mod:`jaxrnn.newton`.
    * ``"auto"``: what measured fastest on the backend: ``"associative"`` for a linear cell on
      a GPU or TPU, ``"sequential"`` otherwise (always on the CPU).

    ``unroll``, ``remat`` and ``hoist`` are knobs of the sequential loop; under the parallel
    methods ``unroll`` is ignored, ``remat=False`` means plain autodiff, ``remat=True`` (or a
    policy) wraps the whole parallel evaluation in ``jax.checkpoint`` (the backward pass
    recomputes it instead of storing its intermediates), ``remat="sqrt"`` is a ``ValueError``
    (its segments are sequential), and ``hoist`` is ignored by ``"associative"`` (which always
    projects all steps at once) and applies to ``"newton"`` as to ``"sequential"``.

    Args:
        cell: the :class:`~jaxrnn.Cell` to run.
        params: its parameters.
        xs: inputs of shape ``(*batch, T, features)``, or ``(T, *batch, features)`` when
            ``time_major``; any number of batch dimensions, including none. For a cell with
            ``spatial_dims = n`` (:mod:`jaxrnn.conv`), ``n`` spatial axes come before the
            features: ``(*batch, T, *spatial, features)``.
        carry: the initial carry with leading dims equal to the batch shape; ``None`` means
            ``cell.initial_carry(batch_shape)`` (zeros). Its dtype is the cell's (the carry
            dtype of its precision policy, :mod:`jaxrnn.precision`), not that of ``xs``:
            ``xs`` of any float dtype are cast to the cell's matmul dtype.
        lengths: optional integer array of the batch shape, each sequence's true length. Steps
            at ``t >= length`` leave the carry unchanged and output zeros, and the inputs there
            are never read (garbage or NaN padding changes nothing), so the returned carry is
            the carry after each sequence's last valid step.
        resets: optional bool array ``(*batch, T)`` (``(T, *batch)`` when ``time_major``; the
            batch shape of ``lengths``) marking where a new segment begins: an episode in
            reinforcement learning, a document in packed sequences (Haiku's ``ResetCore``).
            Where ``resets[..., t]`` is True, the carry entering step ``t`` is replaced by the
            initial carry (``carry``, or zeros), so nothing flows across a segment boundary.
            With ``reverse=True`` the same array describes the same segments: the carry
            entering step ``t`` is replaced where ``t + 1`` begins a segment. Steps beyond
            ``lengths`` stay masked whatever ``resets`` holds there.
        reverse: run from the last step to the first; outputs stay aligned with inputs. With
            ``lengths``, each sequence runs from its own last valid element back to its first.
        time_major: layout of ``xs`` and of the returned ``ys``.
        unroll: passed to ``jax.lax.scan``.
        remat: what each step keeps for the backward pass. ``False`` (default): the outputs of
            its matmuls and nonlinearities (policy :func:`save_nonlinear`); the cheap
            elementwise arithmetic between them is recomputed, which measured faster and smaller
            than keeping every intermediate (``benchmarks/``). ``True``: only the carry; the
            whole step is recomputed (``jax.checkpoint``), much less memory for long sequences
            for about one more forward pass of compute. ``"sqrt"``: two-level checkpointing for
            very long sequences. The steps are cut into segments of
            :math:`S = \lceil\sqrt{T}\,\rceil` (the last :math:`T \bmod S` steps form one
            shorter segment); only the carries at segment boundaries are kept, and the backward
            pass recomputes one segment at a time, keeping its steps' residuals as ``False``
            does. Memory :math:`O(\sqrt{T})`: about :math:`T/S` carries plus :math:`S` steps of
            residuals, against :math:`T` carries for ``True`` and :math:`T` steps of residuals
            for ``False``; compute as for ``True``. A callable is used as the
            ``jax.checkpoint`` policy, e.g. ``jax.checkpoint_policies.everything_saveable``.
        hoist: compute the cell's input projection for all steps before the loop (one large
            matmul) instead of inside each step. ``None`` (default) hoists on accelerators and
            not on the CPU, where measurement (``benchmarks/bench_cells.py``) shows the per-step
            form 1.4-2.5x faster: the large projected buffer costs more memory traffic than the
            big matmul saves there. Both forms compute the same function.
        method: ``"sequential"`` (default), ``"associative"``, ``"newton"``, ``"auto"`` or a
            :class:`jaxrnn.newton.Newton` (see above).

    Returns:
        ``(carry, ys)``: the final carry and the outputs, ``(*batch, T, out)`` (or
        ``(T, *batch, out)`` when ``time_major``).

    Raises:
        ValueError: if ``xs`` has the wrong feature size or rank, the carry's batch shape
            differs from the batch shape of ``xs``, ``lengths`` has the wrong shape, concrete
            ``lengths`` lie outside ``[0, T]``, a leaf of ``params`` has another shape than
            ``cell.init`` gives it, ``method`` is unknown, ``"associative"`` is asked of a
            cell without a linear recurrence, or ``remat="sqrt"`` of a parallel method.
        TypeError: if ``cell`` is not a :class:`~jaxrnn.Cell` (a :class:`~jaxrnn.Layer`, a
            factory), ``xs`` is not a float array (integer, bool and complex are refused),
            ``lengths`` is not an integer array, the carry's structure or dtype is not the
            cell's, ``params`` are not of the type, structure and dtypes ``cell.init`` returns
            (checked for cells built by a factory of :mod:`jaxrnn.cells`; a custom cell takes
            any params), a step changes the carry's dtype, or ``remat`` is none of the forms
            above.

    Every check but the range of ``lengths`` reads only shapes and dtypes, so it runs under
    ``jax.jit`` too; traced ``lengths`` are not range-checked (a length above ``T`` then acts
    as ``T``, a negative one as 0).

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> cell = jr.lstm(3, 8)
    >>> params = cell.init(jax.random.key(0))
    >>> xs = jnp.ones((2, 5, 3))  # (batch, time, features)
    >>> carry, ys = jr.scan(cell, params, xs, lengths=jnp.array([5, 2]))
    >>> ys.shape, carry.h.shape
    ((2, 5, 8), (2, 8))
    >>> bool((ys[1, 2:] == 0).all()), bool((carry.h[1] == ys[1, 1]).all())
    (True, True)

    A linear-recurrence cell, in parallel over time:

    >>> cell = jr.min_gru(3, 8)
    >>> params = cell.init(jax.random.key(0))
    >>> _, ys_seq = jr.scan(cell, params, xs)
    >>> _, ys_par = jr.scan(cell, params, xs, method="associative")
    >>> bool(jnp.allclose(ys_seq, ys_par, atol=1e-6))
    True
    """
    check_cell("cell", cell, Cell)
    check_params(cell, params)
    method = _resolve_method(method, cell)
    if method != "sequential" and isinstance(remat, str) and remat == "sqrt":
        raise ValueError(
            f'remat="sqrt" cuts the sequence into segments scanned one after the other; it '
            f'applies to method="sequential" only, got method={method!r}'
        )
    xs = jnp.asarray(xs)
    if not jnp.issubdtype(xs.dtype, jnp.floating):
        raise TypeError(f"xs: expected a floating-point array, got dtype {xs.dtype}")
    # A convolutional cell's sequences are (*batch, T, *spatial, F): the spatial axes sit
    # between time and features and belong to the carry's shape, not to `lengths`'.
    spatial = n = cell.spatial_dims
    if xs.ndim < 2 + n:
        layout = "(time, *batch, " if time_major else "(*batch, time, "
        layout += f"<{n} spatial dims>, features)" if n else "features)"
        cell_note = f" for a cell with spatial_dims={n}" if n else ""
        raise ValueError(
            f"xs: expected at least {2 + n} dims {layout}{cell_note}, got shape {xs.shape}"
        )
    if cell.input_size is not None and xs.shape[-1] != cell.input_size:
        raise ValueError(
            f"xs: expected feature size (last axis) {cell.input_size} (the cell's input_size), "
            f"got {xs.shape[-1]} (xs.shape={xs.shape})"
        )
    time_axis = 0 if time_major else xs.ndim - 2 - spatial
    num_steps = xs.shape[time_axis]
    batch_shape = xs.shape[:time_axis] + xs.shape[time_axis + 1 : -1]
    sequence_batch = batch_shape[: len(batch_shape) - spatial]  # what `lengths` indexes

    if carry is None:
        carry = cell.initial_carry(batch_shape)
    else:
        check_carry(cell, carry, batch_shape)
    if lengths is not None:
        lengths = check_lengths(lengths, sequence_batch, num_steps)
    initial = carry
    if resets is not None:
        resets = _check_resets(resets, sequence_batch, num_steps, time_major)
        if reverse:  # in reverse, a segment ends (its first processed step) before a start
            resets = jnp.concatenate([resets[1:], jnp.zeros_like(resets[:1])], axis=0)
    policy = _step_policy(remat)
    if hoist is None:
        hoist = jax.default_backend() != "cpu"
    hoist = bool(hoist) and cell.project is not None and cell.step is not None

    def run(carry, start, size, policy):
        """Steps ``[start, start + size)`` (``start`` static or traced); ys time-major."""
        if size == num_steps:
            seg = xs
        elif isinstance(start, int):
            seg = jax.lax.slice_in_dim(xs, start, start + size, axis=time_axis)
        else:
            seg = jax.lax.dynamic_slice_in_dim(
                xs, start, size, time_axis, allow_negative_indices=False
            )
        valid = None
        if lengths is not None:
            steps = (start + jnp.arange(size)).reshape((size,) + (1,) * len(sequence_batch))
            valid = steps < lengths  # (size, *batch), without the spatial axes
        reset = None
        if resets is not None:
            reset = (
                resets
                if size == num_steps
                else jax.lax.dynamic_slice_in_dim(resets, start, size, 0)
            )
            reset = (reset, initial)
        seg = jnp.moveaxis(seg, time_axis, 0)
        if method == "associative":
            return _associative_steps(cell, params, seg, carry, valid, reverse, remat, reset)
        newton = None if method == "sequential" else method
        return _scan_steps(
            cell, params, seg, carry, valid, hoist, reverse, unroll, policy, reset, newton, remat
        )

    if policy is not _SQRT:
        carry, ys = run(carry, 0, num_steps, policy)
    else:
        carry, ys = _sqrt_scan(run, carry, num_steps, reverse)
    if not time_major:
        ys = jax.tree.map(lambda v: jnp.moveaxis(v, 0, len(sequence_batch)), ys)
    return carry, ys


# remat="sqrt": two-level checkpointing. Even remat=True keeps one carry per step, O(T), which
# for long sequences (T in the tens of thousands) dominates a training step's memory. Cutting
# the sequence into segments of S ~ sqrt(T) steps and keeping only the carries at segment
# boundaries, the backward pass recomputes one segment at a time, keeping that segment's
# per-step residuals (policy save_nonlinear) only while it is differentiated: O(sqrt(T))
# memory for about one more forward pass of compute, the same cost as remat=True.
_SQRT = object()  # the sentinel _step_policy returns for remat="sqrt"


def _step_policy(remat):
    """The ``jax.checkpoint`` policy of one step for ``remat`` (``_SQRT`` for ``"sqrt"``)."""
    if remat is True:
        return None  # keep nothing but the carry: recompute the whole step
    if remat is False:
        return save_nonlinear
    if isinstance(remat, str):
        if remat == "sqrt":
            return _SQRT
    elif callable(remat):
        return remat
    raise TypeError(
        f'remat: expected False, True, "sqrt" or a jax.checkpoint policy, got {remat!r}'
    )


def _segment_length(num_steps: int) -> int:
    """Steps per segment of ``remat="sqrt"``: ``ceil(sqrt(T))`` (1 for ``T = 0``).

    The memory of the backward pass is about ``T / S`` boundary carries plus ``S`` steps'
    residuals, least near ``S = sqrt(T)``. (A step's residuals are a few carries' worth, so a
    somewhat shorter segment would do slightly better; this is the place to tune it.)
    """
    return math.isqrt(num_steps - 1) + 1 if num_steps > 0 else 1


def _sqrt_scan(run, carry, num_steps: int, reverse: bool):
    """``remat="sqrt"``: ``run`` over ``T // S`` checkpointed segments of ``S`` steps, then rest.

    The outer scan keeps only each segment's initial carry; its backward pass recomputes one
    segment at a time with the per-step policy. The ``T mod S`` remaining steps (the last ones
    in time order, hence run first when ``reverse``) form one short scan of their own, so xs is
    neither padded nor copied: every segment slices its own steps out of it.
    """
    seg_len = _segment_length(num_steps)
    num_segs, rest = divmod(num_steps, seg_len)

    def segment(carry, k):
        return run(carry, k * seg_len, seg_len, save_nonlinear)

    def segments(carry):
        body = jax.checkpoint(segment, prevent_cse=False, policy=None)  # keep only the carry
        carry, ys = jax.lax.scan(body, carry, jnp.arange(num_segs), reverse=reverse)
        return carry, jax.tree.map(lambda v: v.reshape((num_steps - rest, *v.shape[2:])), ys)

    def remainder(carry):
        return run(carry, num_steps - rest, rest, save_nonlinear)

    if not num_segs:  # T = 0
        return remainder(carry)
    if not rest:
        return segments(carry)
    if reverse:
        carry, ys_rest = remainder(carry)
        carry, ys = segments(carry)
    else:
        carry, ys = segments(carry)
        carry, ys_rest = remainder(carry)
    return carry, jax.tree.map(lambda a, b: jnp.concatenate([a, b]), ys, ys_rest)


def _resolve_method(method, cell: Cell):
    """``"sequential"``, ``"associative"`` or a :class:`~jaxrnn.newton.Newton` for ``method``."""
    if isinstance(method, Newton):
        return method
    if not (isinstance(method, str) and method in _METHODS):
        raise ValueError(
            f"method: expected one of {', '.join(repr(m) for m in _METHODS)} or a "
            f"jaxrnn.newton.Newton, got {method!r}"
        )
    if method == "newton":
        return Newton()
    if method == "auto":
        parallel = cell.linear is not None and jax.default_backend() != "cpu"
        return "associative" if parallel else "sequential"
    if method == "associative" and cell.linear is None:
        raise ValueError(
            f'method="associative" needs a cell that declares its recurrence linear '
            f"(Cell.linear, h_t = a_t * h_(t-1) + b_t), and {_cell_name(cell)} does not: use "
            f'method="sequential" or "newton", or a linear-recurrence cell (jr.min_gru, '
            f"jr.min_lstm, jr.lru, jr.rg_lru)"
        )
    return method


def _cell_name(cell: Cell) -> str:
    """``"this lstm cell"`` (the factory's name) or ``"this custom cell"``."""
    factory = dict(cell.config or ()).get("factory")
    name = getattr(factory, "__name__", None)
    return f"this {name} cell" if name else "this custom cell (its config names no factory)"


def _scan_steps(
    cell,
    params,
    xs,
    carry,
    valid,
    hoist,
    reverse,
    unroll,
    policy,
    reset=None,
    newton=None,
    remat=False,
):
    """``lax.scan`` of the cell over time-major ``xs``, masked by ``valid`` ``(T, *batch)``;
    ``reset = (flags (T, *batch), initial carry)`` restarts the carry where a flag is set.
    With ``newton`` (a :class:`~jaxrnn.newton.Newton`), ``jaxrnn.newton.newton_scan`` replaces
    ``lax.scan``; the step is then not checkpointed, and ``remat`` other than ``False``
    checkpoints the whole solve instead."""
    if valid is not None:
        # Padding is never read: zero it before any arithmetic so that NaN or inf there cannot
        # leak into values or gradients.
        xs = jnp.where(_expand(valid, xs), xs, jnp.zeros((), xs.dtype))
    if hoist:
        inputs, step = cell.project(params, xs), cell.step  # one matmul for all steps
    else:
        inputs, step = xs, cell.apply

    _check_step_keeps_carry_dtype(step, params, carry, inputs, xs.dtype)

    flags, initial = (None, None) if reset is None else reset

    def make_body(params, initial):
        def body(carry, inp):
            x, ok, restart = inp
            if restart is not None:
                carry = jax.tree.map(
                    lambda c, c0: jnp.where(_expand(restart, c), c0, c), carry, initial
                )
            new_carry, y = step(params, carry, x)
            if ok is not None:
                new_carry = jax.tree.map(
                    lambda n, o: jnp.where(_expand(ok, n), n, o), new_carry, carry
                )
                y = jax.tree.map(lambda v: jnp.where(_expand(ok, v), v, jnp.zeros((), v.dtype)), y)
            return new_carry, y

        return body

    scan_inputs = (inputs, valid, flags)

    if newton is not None:
        batch_ndim = xs.ndim - 2 - cell.spatial_dims  # xs: (T, *batch, *spatial, features)

        def solve(params, carry, scan_inputs, initial):
            body = make_body(params, initial)
            return newton_scan(
                body, carry, scan_inputs, reverse=reverse, options=newton, batch_ndim=batch_ndim
            )

        if remat is not False:
            solve = jax.checkpoint(solve, prevent_cse=False, policy=policy)
        return solve(params, carry, scan_inputs, initial)

    body = jax.checkpoint(make_body(params, initial), prevent_cse=False, policy=policy)
    return jax.lax.scan(body, carry, scan_inputs, reverse=reverse, unroll=unroll)


# method="associative". The carries of h_t = a_t h_(t-1) + b_t are the prefix compositions of
# the affine maps h -> a_t h + b_t; composing (a1, b1) then (a2, b2) gives (a1 a2, a2 b1 + b2),
# an associative operation, so jax.lax.associative_scan evaluates all T prefixes in O(log T)
# depth. The masks of jr.scan fold into the coefficients, and the initial carry is applied to
# the composed maps at the end: h_t = A_t h_0 + B_t.


def _associative_steps(cell, params, xs, carry, valid, reverse, remat, reset=None):
    """The cell's linear recurrence over time-major ``xs`` by ``jax.lax.associative_scan``, with
    the masks of :func:`_scan_steps`; the same ``(carry, ys)``."""
    if xs.shape[0] == 0:  # nothing to compose: the loop's empty result
        return _scan_steps(cell, params, xs, carry, valid, False, reverse, 1, save_nonlinear)
    if valid is not None:
        xs = jnp.where(_expand(valid, xs), xs, jnp.zeros((), xs.dtype))
    _check_step_keeps_carry_dtype(cell.apply, params, carry, xs, xs.dtype)
    flags, initial = (None, carry) if reset is None else reset
    lin = cell.linear

    def evaluate(params, xs, carry, initial):
        xp = xs if cell.project is None else cell.project(params, xs)
        if lin.log_coefficients is not None:
            log_a, log_b = lin.log_coefficients(params, xp)
            compose = functools.partial(_log_space, valid=valid, flags=flags, reverse=reverse)
            hs = jax.tree.map(compose, log_a, log_b, carry, initial)
        else:
            a, b = lin.coefficients(params, xp)
            compose = functools.partial(_linear_space, valid=valid, flags=flags, reverse=reverse)
            hs = jax.tree.map(compose, a, b, carry, initial)
        ys = lin.readout(params, hs, xp)
        if valid is not None:
            ys = jax.tree.map(lambda v: jnp.where(_expand(valid, v), v, jnp.zeros((), v.dtype)), ys)
        last = 0 if reverse else -1  # the carry after the step processed last
        return jax.tree.map(lambda h: h[last], hs), ys

    if remat is not False:
        evaluate = jax.checkpoint(evaluate, prevent_cse=False, policy=_step_policy(remat))
    return evaluate(params, xs, carry, initial)


def _linear_space(a, b, h0, h_reset, *, valid, flags, reverse):
    """All ``h_t`` of ``h_t = a_t h_(t-1) + b_t`` from ``h_0`` (one leaf; time axis 0).

    A step beyond ``lengths`` is the identity map ``(1, 0)``; the carry entering a reset step
    is ``h_reset``, so a reset step maps to ``(0, a h_reset + b)``, a masked one included (as
    in the loop, which resets the carry there too)."""
    if valid is not None:
        ok = _expand(valid, a)
        a = jnp.where(ok, a, jnp.ones((), a.dtype))
        b = jnp.where(ok, b, jnp.zeros((), b.dtype))
    if flags is not None:
        restart = _expand(flags, a)
        b = jnp.where(restart, a * h_reset + b, b)
        a = jnp.where(restart, jnp.zeros((), a.dtype), a)
    a, b = jax.lax.associative_scan(_compose_affine, (a, b), reverse=reverse)
    return a * h0 + b


def _compose_affine(first, then):
    """The map ``h -> a2 (a1 h + b1) + b2`` of ``first = (a1, b1)``, ``then = (a2, b2)``."""
    a1, b1 = first
    a2, b2 = then
    return a1 * a2, a2 * b1 + b2


def _log_space(log_a, log_b, h0, h_reset, *, valid, flags, reverse):
    """``_linear_space`` for positive ``a = exp(log_a)``, ``b = exp(log_b)``, composed in log
    space. Each composed map is ``(keep, S, Q)``: ``h -> exp(S) h + exp(Q)`` if ``keep`` (no
    reset inside it), else ``h -> exp(S) h_reset + exp(Q)``, with ``S`` the sum of ``log_a``
    since its last reset. ``h_0`` and ``h_reset`` enter linearly and may have any sign."""
    keep = jnp.ones(log_a.shape, bool)
    if flags is not None:
        keep = jnp.broadcast_to(~_expand(flags, log_a), log_a.shape)
    if valid is not None:  # a step beyond `lengths` is the identity map: exp(0) h + exp(-inf)
        ok = _expand(valid, log_a)
        log_a = jnp.where(ok, log_a, jnp.zeros((), log_a.dtype))
        log_b = jnp.where(ok, log_b, jnp.full((), -jnp.inf, log_b.dtype))
    keep, log_a, log_b = jax.lax.associative_scan(
        _compose_log, (keep, log_a, log_b), reverse=reverse
    )
    start = h0 if flags is None else jnp.where(keep, h0, h_reset)
    return jnp.exp(log_a) * start + jnp.exp(log_b)


def _compose_log(first, then):
    """``_compose_affine`` of two ``(keep, S, Q)`` maps in log space (see :func:`_log_space`)."""
    k1, s1, q1 = first
    k2, s2, q2 = then
    neg_inf = jnp.full((), -jnp.inf, s2.dtype)
    s = s2 + jnp.where(k2, s1, jnp.zeros((), s1.dtype))
    q = _logaddexp(jnp.where(k2, s2, neg_inf) + q1, q2)
    return k1 & k2, s, q


@jax.custom_jvp
def _logaddexp(x: Array, y: Array) -> Array:
    """``jnp.logaddexp`` whose derivative is 0, not NaN, where both arguments are ``-inf``
    (the empty sums of masked steps)."""
    return jnp.logaddexp(x, y)


@_logaddexp.defjvp
def _logaddexp_jvp(primals, tangents):
    (x, y), (tx, ty) = primals, tangents
    out = jnp.logaddexp(x, y)
    ref = jnp.where(jnp.isfinite(out), out, jnp.zeros((), out.dtype))
    return out, jnp.exp(x - ref) * tx + jnp.exp(y - ref) * ty


def _expand(mask: Array, like: Array) -> Array:
    """Append trailing unit axes to the batch-shaped ``mask`` so it lines up with ``like``."""
    return mask.reshape(mask.shape + (1,) * (jnp.ndim(like) - mask.ndim))


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


def _check_step_keeps_carry_dtype(step, params, carry, inputs, xs_dtype) -> None:
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
    """Validate ``lengths`` (integer, of the batch shape; in ``[0, T]`` when concrete)."""
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


def _check_resets(resets, batch_shape: tuple[int, ...], num_steps: int, time_major: bool):
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
