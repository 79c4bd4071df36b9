"""Running a cell over a sequence: ``jax.lax.scan``, or in parallel over time.

:func:`scan` evaluates the same recurrence by one of three methods: a sequential
``jax.lax.scan`` (the default), a parallel prefix scan (``jax.lax.associative_scan``) for cells
whose recurrence is linear in the carry (:class:`~jaxrnn.LinearRecurrence`), or Newton
iterations for any cell whose carry is real floating-point (:mod:`jaxrnn.newton`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp

from jaxrnn import _sharding
from jaxrnn._checks import (
    check_bool,
    check_carry,
    check_cell,
    check_lengths,
    check_params,
    check_resets,
    check_unroll,
)
from jaxrnn._core import Array, Carry, Cell, Params
from jaxrnn._scan import sequence_parallel
from jaxrnn._scan.associative import associative_steps
from jaxrnn._scan.newton import Newton, check_newton_cell
from jaxrnn._scan.sequential import SQRT, scan_steps, sqrt_scan, step_policy
from jaxrnn.kernels import _dispatch as _kernels

__all__ = ["Method", "Remat", "scan"]

#: What ``remat`` accepts: ``False``, ``True``, ``"sqrt"`` or a ``jax.checkpoint`` policy.
Remat = bool | Literal["sqrt"] | Callable[..., bool]

#: What ``method`` accepts: one of these names or a :class:`jaxrnn.newton.Newton`.
Method = Literal["sequential", "associative", "newton", "auto"] | Any

_METHODS = ("sequential", "associative", "newton", "auto")


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
    kernel: bool | None = None,
    sequence_axis: str | None = None,
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

    * ``"sequential"`` (default): ``jax.lax.scan``, one step after the other.
    * ``"associative"``: for a cell that declares its recurrence linear,
      :math:`h_t = a_t \odot h_{t-1} + b_t` with :math:`a_t, b_t` from the input only
      (``cell.linear``, a :class:`~jaxrnn.LinearRecurrence`, as :func:`jaxrnn.min_gru`,
      :func:`jaxrnn.min_lstm`, :func:`jaxrnn.lru` and :func:`jaxrnn.rg_lru` declare): the
      carries are the prefix compositions of the affine maps :math:`h \mapsto a_t h + b_t`,
      evaluated by ``jax.lax.associative_scan`` in :math:`O(\log T)` depth. A step beyond
      ``lengths`` is the identity map, a reset step restarts from the initial carry, and a cell
      that also declares ``log_coefficients`` is composed in log space. Any other cell is a
      ``ValueError``.
    * ``"newton"`` or a :class:`jaxrnn.newton.Newton` (its options; ``"newton"`` is
      ``Newton()``): any cell whose carry is real floating-point, in parallel over time by
      Newton iterations on the whole trajectory (DEER, :mod:`jaxrnn.newton`). Newton's method
      differentiates the step with respect to the carry, so a complex carry (:func:`jaxrnn.lru`,
      run it with ``"associative"``) or an integer one is a ``TypeError``, raised up front.
    * ``"auto"``: ``"associative"`` for a linear cell on a GPU or TPU, ``"sequential"``
      otherwise (always on the CPU).

    Which method is fastest where, with the depth and work of each, is on the documentation's
    performance page (``docs/performance.md``), with the benchmark commands behind its figures.

    **Sequence parallelism.** Under ``jax.jit``, when the time axis of ``xs`` is split over a
    mesh axis (a ``NamedSharding`` whose spec names a mesh axis at the time position, on a mesh
    of ``jax.make_mesh``'s ``Explicit`` axes), or when ``sequence_axis`` names one, the parallel
    methods run with every device evaluating its own chunk of :math:`T/n` steps
    (``jax.shard_map`` over that axis). A chunk's steps compose to one affine map
    :math:`h \mapsto A h + B` per batch row; the devices exchange these maps (one small
    collective, an ``(A, B)`` pair per device and row), each composes those of the devices
    before it, :math:`E_p = M_{p-1} \circ \dots \circ M_0`, applies :math:`E_p` to the initial
    carry and its own prefixes to the result. ``"associative"`` does this once; ``"newton"``
    does it in every iteration and derivative solve, whose linear recurrences
    :math:`v_t = J_t v_{t-1} + c_t` compose the same way (matrices for full Jacobians,
    diagonals otherwise), with the state entering each chunk passed on from the previous device
    and the convergence tests taken over all devices. In reverse the devices run in the opposite
    order. Derivatives split the same way (the exchange transposes to the same exchange). The
    outputs ``ys`` come back split as ``xs`` was, the final carry is on every device, and
    every option (``lengths``, ``resets``, ``reverse``, ``carry``, log-space cells, batch axes
    split over other mesh axes) means what it means on one device. A ``T`` that is not a
    multiple of the device count is padded inside with masked steps (identity maps), which
    change no value and no gradient; ``ys`` then cannot be split evenly and come back with
    their time axis whole. ``method="sequential"`` over a time-split ``xs`` gathers the time
    axis first and runs one step after another (``ys`` not split over time).

    ``unroll``, ``remat`` and ``hoist`` are knobs of the sequential loop. Under the parallel
    methods ``unroll`` is ignored, ``remat=True`` (or a policy) checkpoints the whole parallel
    evaluation, and ``hoist`` applies to ``"newton"`` only.

    Args:
        cell: the :class:`~jaxrnn.Cell` to run.
        params: its parameters.
        xs: inputs of shape ``(*batch, T, features)``, or ``(T, *batch, features)`` when
            ``time_major``; any number of batch dimensions, including none. For a cell with
            ``spatial_dims = n`` (:mod:`jaxrnn.cells._conv`), ``n`` spatial axes come before the
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
        unroll: passed to ``jax.lax.scan``: a bool or a positive int.
        remat: what each step keeps for the backward pass. ``False`` (default): the outputs of
            its matmuls and nonlinearities (policy :func:`save_nonlinear`). ``True``: only the
            carry (the step is recomputed). ``"sqrt"``: only the carries at the boundaries of
            :math:`\lceil\sqrt{T}\,\rceil`-step segments, :math:`O(\sqrt{T})` memory for
            very long sequences (sequential only). A callable: the ``jax.checkpoint`` policy.
            The performance page compares their memory and compute.
        hoist: compute the cell's input projection for all steps before the loop (one large
            matmul) instead of inside each step. ``None`` (default) hoists on accelerators and
            not on the CPU, where the per-step form is faster (the performance page). Both forms
            compute the same function.
        method: ``"sequential"`` (default), ``"associative"``, ``"newton"``, ``"auto"`` or a
            :class:`jaxrnn.newton.Newton` (see above).
        kernel: run on the native CPU kernels (:mod:`jaxrnn.kernels`). ``None`` (default):
            whenever they compute exactly what this function computes otherwise (an unmodified
            :func:`jaxrnn.lstm` without peepholes, coupling or projection, or a
            :func:`jaxrnn.gru`; float32 or bfloat16; ``method="sequential"``, ``remat=False``,
            no ``resets``; on the CPU, with the kernels built). ``True``: require them (a
            ``ValueError`` naming the reason where they cannot run). ``False``: never. The
            kernel path has reverse-mode derivatives only; ``unroll`` and ``hoist`` do not
            apply to it.
        sequence_axis: the name of a mesh axis to split the time axis over (sequence
            parallelism, above), for ``"associative"`` and ``"newton"``. ``None`` (default):
            the axis named at the time position of ``xs``'s type, if any (explicit meshes).
            Needed under ``Auto`` axes, whose types carry no sharding: the mesh is then the
            one set by ``jax.set_mesh``. (Without it, an ``Auto``-sharded ``xs`` is still
            computed correctly: the compiler partitions the scan with collectives of its
            own.)

    Returns:
        ``(carry, ys)``: the final carry and the outputs, ``(*batch, T, out)`` (or
        ``(T, *batch, out)`` when ``time_major``).

    Raises:
        ValueError: a wrong shape (``xs``, ``carry``, ``lengths``, ``resets``, a leaf of
            ``params``), concrete ``lengths`` outside ``[0, T]``, an unknown ``method``,
            ``sequence_axis`` not an axis of the mesh (or no mesh) or given with
            ``"sequential"``, a time axis split over several mesh axes,
            ``"associative"`` for a cell without a linear recurrence, ``remat="sqrt"`` with a
            parallel method, ``unroll`` an int below 1.
        TypeError: a wrong kind or dtype: ``cell`` not a :class:`~jaxrnn.Cell`, ``xs`` not
            floating-point, ``lengths`` not integer, ``resets`` not bool, a carry or params of
            another structure or dtype than the cell's (params are checked for every cell of
            :mod:`jaxrnn.cells`), a step that changes the carry's dtype, an unknown ``remat``,
            ``unroll`` neither a bool nor an int, ``reverse``, ``time_major`` or ``hoist`` not
            a bool, ``"newton"`` for a cell whose carry is not real floating-point,
            ``sequence_axis`` not a string.

    Every check reads only shapes and dtypes, so it runs under ``jax.jit`` too, except the
    range of ``lengths``: traced ``lengths`` are clipped to ``[0, T]`` (a length above ``T``
    acts as ``T``, a negative one as 0, identically under every method), and reported as an
    error naming ``lengths`` when the caller runs under
    ``jax.experimental.checkify.checkify(f, errors=checkify.user_checks)``.

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
    check_cell("cell", cell)
    check_params(cell, params)
    method = resolve_method(method, cell)
    if isinstance(method, Newton):
        check_newton_cell(cell)
    unroll = check_unroll(unroll)
    reverse, time_major = check_bool("reverse", reverse), check_bool("time_major", time_major)
    hoist = None if hoist is None else check_bool("hoist", hoist)
    kernel = _kernels.check_option(kernel)
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
    mesh = _sharding.explicit_mesh(xs)
    if mesh is not None:  # an explicit mesh: the carry follows the batch sharding of xs
        params = _sharding.onto_mesh(params, mesh)
        batch_axes = tuple(a for a in range(1 if time_major else 0, xs.ndim - 1) if a != time_axis)
        spec = _sharding.batch_spec(xs, batch_axes)
        carry = _sharding.shard_like_batch(carry, mesh, spec)
        if lengths is not None:
            lengths = _sharding.shard_like_batch(lengths, mesh, spec[: len(sequence_batch)])
    initial = carry
    if resets is not None:
        resets = check_resets(resets, sequence_batch, num_steps, time_major)
        if reverse:  # in reverse, a segment ends (its first processed step) before a start
            resets = jnp.concatenate([resets[1:], jnp.zeros_like(resets[:1])], axis=0)
    seq_mesh, seq_name = sequence_parallel.sequence_axis(xs, time_axis, sequence_axis)
    if seq_name is not None and seq_mesh.shape[seq_name] == 1:  # one device: nothing to split
        seq_name = None
    if seq_name is not None and method == "sequential":
        if sequence_axis is not None:
            raise ValueError(
                f"sequence_axis={sequence_axis!r}: only the parallel methods split the time "
                f'axis over devices: use method="associative" or "newton" (or a '
                f'jaxrnn.newton.Newton), or leave sequence_axis out; got method="sequential"'
            )
        xs = sequence_parallel.unsplit_time(xs, time_axis)  # gathered: one step after another
        seq_name = None
    if seq_name is not None and num_steps > 0:
        policy = step_policy(remat)
        hoist = jax.default_backend() != "cpu" if hoist is None else hoist
        hoist = hoist and cell.project is not None and cell.step is not None
        carry, ys = sequence_parallel.run(
            _local(cell, method, reverse, remat, hoist, unroll, policy),
            seq_mesh,
            seq_name,
            reverse,
            jnp.moveaxis(xs, time_axis, 0),
            None if lengths is None else _valid(num_steps, lengths, len(sequence_batch)),
            resets,
            (params, carry, initial),
            sequence_batch,
            typed=method == "associative",
        )
        if not time_major:
            ys = jax.tree.map(lambda v: jnp.moveaxis(v, 0, len(sequence_batch)), ys)
        return carry, ys
    if kernel is not False:
        why = _kernels.reason(cell, method=method, remat=remat, resets=resets)
        why = why or _kernels.sharding_reason(params)
        if why and kernel:
            raise ValueError(f"kernel=True: this scan cannot run on the native kernels: {why}")
        if not why:
            return _kernels.run(cell, params, xs, carry, lengths, reverse, time_major)
    policy = step_policy(remat)
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
            return associative_steps(cell, params, seg, carry, valid, reverse, remat, reset)
        newton = None if method == "sequential" else method
        return scan_steps(
            cell, params, seg, carry, valid, hoist, reverse, unroll, policy, reset, newton, remat
        )

    if policy is not SQRT:
        carry, ys = run(carry, 0, num_steps, policy)
    else:
        carry, ys = sqrt_scan(run, carry, num_steps, reverse)
    if not time_major:
        ys = jax.tree.map(lambda v: jnp.moveaxis(v, 0, len(sequence_batch)), ys)
    return carry, ys


def _valid(num_steps: int, lengths, batch_ndim: int):
    """``(T, *batch)``: whether step ``t`` is within each sequence's length."""
    steps = jnp.arange(num_steps).reshape((num_steps,) + (1,) * batch_ndim)
    return steps < lengths


def _local(cell, method, reverse, remat, hoist, unroll, policy):
    """The evaluation of one device's chunk of the sequence (sequence parallelism)."""

    def local(axis, xs, valid, flags, consts):
        params, carry, initial = consts
        reset = None if flags is None else (flags, initial)
        if method == "associative":
            return associative_steps(
                cell, params, xs, carry, valid, reverse, remat, reset, axis=axis
            )
        return scan_steps(
            cell,
            params,
            xs,
            carry,
            valid,
            hoist,
            reverse,
            unroll,
            policy,
            reset,
            method,
            remat,
            axis=axis,
        )

    return local


def resolve_method(method, cell: Cell):
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
