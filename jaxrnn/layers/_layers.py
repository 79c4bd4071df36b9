"""Layers from cells: :func:`layer`, :func:`bidirectional`, :func:`stack`, :func:`rnn`."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from jaxrnn._checks import (
    check_bool,
    check_cell,
    check_key,
    check_probability,
    check_size,
    check_switch,
    check_unroll,
)
from jaxrnn._core import Bidirectional, Cell, Layer, Transform
from jaxrnn._scan.scan import Method, Remat, resolve_method, scan
from jaxrnn.kernels._dispatch import check_option as check_kernel_option
from jaxrnn.kernels._dispatch import reason as kernel_reason
from jaxrnn.layers import _cudnn

__all__ = ["bidirectional", "layer", "rnn", "stack"]


def layer(
    cell: Cell,
    *,
    reverse: bool = False,
    time_major: bool = False,
    unroll: int | bool = 1,
    remat: Remat = False,
    transform: Transform | None = None,
    method: Method = "sequential",
    kernel: bool | None = None,
) -> Layer:
    """One cell run over the sequence by :func:`jaxrnn.scan`; params and carry are the cell's.

    ``apply(params, xs, carry=None, *, lengths=None, resets=None, key=None)``: ``lengths`` and
    ``resets`` as in :func:`jaxrnn.scan`. With a ``transform`` (a regulariser of
    :mod:`jaxrnn.regularizers`, e.g. ``functools.partial(jr.zoneout, rate=0.1)``), each call
    scans ``transform(cell, key)``: with a ``key`` in training, ``transform(cell, None)`` (its
    expectation) without one; the carry is that of ``transform(cell, None)``. ``unroll``,
    ``remat``, ``method`` (sequential, associative, Newton) and ``kernel`` (the native CPU
    kernels, :mod:`jaxrnn.kernels`; ``True`` is checked here against the cell and options) are
    :func:`jaxrnn.scan`'s.

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> lay = jr.layer(jr.gru(3, 4))
    >>> carry, ys = lay.apply(lay.init(jax.random.key(0)), jnp.ones((2, 6, 3)))
    >>> ys.shape
    (2, 6, 4)

    Raises:
        TypeError: if ``cell`` is not a :class:`~jaxrnn.Cell` (e.g. already a :class:`Layer`).
    """
    check_cell("cell", cell)
    unroll = check_unroll(unroll)
    reverse, time_major = check_bool("reverse", reverse), check_bool("time_major", time_major)
    _require_kernel(kernel, (cell,), transform, method, remat)

    def apply(params, xs, carry=None, *, lengths=None, resets=None, key=None):
        key = check_key("key", key, optional=True)
        return scan(
            _transformed(cell, transform, key),
            params,
            xs,
            carry,
            lengths=lengths,
            resets=resets,
            reverse=reverse,
            time_major=time_major,
            unroll=unroll,
            remat=remat,
            method=method,
            kernel=kernel,
        )

    config = (
        ("factory", layer),
        ("cell", cell),
        ("reverse", reverse),
        ("time_major", time_major),
        ("unroll", unroll),
        ("remat", remat),
        ("transform", transform),
        ("method", method),
        ("kernel", kernel),
    )
    initial_carry = _transformed(cell, transform, None).initial_carry
    return Layer(cell.init, apply, initial_carry, cell.input_size, cell.output_size, config)


def _transformed(cell: Cell, transform, key) -> Cell:
    """``cell`` itself, or the regularised ``transform(cell, key)``."""
    return cell if transform is None else transform(cell, key)


def _require_kernel(kernel, cells, transform, method, remat) -> None:
    """Build-time check of ``kernel``: ``True`` needs cells and options the kernels run."""
    if not check_kernel_option(kernel):
        return
    for cell in cells:
        why = "transform: a regularised cell runs on the XLA path" if transform else ""
        why = why or kernel_reason(
            cell, method=resolve_method(method, cell), remat=remat, resets=None
        )
        if why:
            raise ValueError(f"kernel=True: cannot run on the native kernels: {why}")


def bidirectional(
    forward: Cell,
    backward: Cell | None = None,
    *,
    time_major: bool = False,
    unroll: int | bool = 1,
    remat: Remat = False,
    transform: Transform | None = None,
    method: Method = "sequential",
    kernel: bool | None = None,
) -> Layer:
    """Run ``forward`` left to right and ``backward`` right to left; concatenate the outputs.

    Params and carry are :class:`Bidirectional` ``(forward, backward)``. With ``lengths``, the
    backward cell starts at each sequence's own last valid element. ``backward`` defaults to a
    cell of the same kind as ``forward`` (own parameters, drawn from another key). ``resets``
    (see :func:`jaxrnn.scan`) mark segment starts for both directions; ``transform`` applies to
    both cells, with a key of their own each (see :func:`layer`); ``method`` and ``kernel`` are
    :func:`jaxrnn.scan`'s, for both directions.

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> bi = jr.bidirectional(jr.lstm(3, 4))
    >>> params = bi.init(jax.random.key(0))
    >>> carry, ys = bi.apply(params, jnp.ones((2, 6, 3)), lengths=jnp.array([6, 3]))
    >>> ys.shape, carry.backward.h.shape
    ((2, 6, 8), (2, 4))

    Raises:
        TypeError: if ``forward`` or ``backward`` is not a :class:`~jaxrnn.Cell`.
        ValueError: if the two cells read different input sizes.
    """
    check_cell("forward", forward)
    if backward is not None:
        check_cell("backward", backward)
    backward = forward if backward is None else backward
    if forward.input_size != backward.input_size:
        raise ValueError(
            "bidirectional: forward and backward cells must read the same input size, got "
            f"{forward.input_size} and {backward.input_size}"
        )
    out = None
    if forward.output_size is not None and backward.output_size is not None:
        out = forward.output_size + backward.output_size
    _require_kernel(kernel, (forward, backward), transform, method, remat)
    opts = dict(
        time_major=time_major,
        unroll=check_unroll(unroll),
        remat=remat,
        method=method,
        kernel=kernel,
    )

    def init(key):
        k_f, k_b = jax.random.split(check_key("key", key))
        return Bidirectional(forward.init(k_f), backward.init(k_b))

    def apply(params, xs, carry=None, *, lengths=None, resets=None, key=None):
        key = check_key("key", key, optional=True)
        k_f, k_b = (None, None) if key is None else jax.random.split(key)
        fwd, bwd = _transformed(forward, transform, k_f), _transformed(backward, transform, k_b)
        carry = Bidirectional(None, None) if carry is None else carry
        for name, value in (("params", params), ("carry", carry)):
            if not isinstance(value, Bidirectional):
                raise TypeError(
                    f"{name}: expected jr.Bidirectional(forward, backward), "
                    f"got {type(value).__name__}"
                )
        seqs = dict(lengths=lengths, resets=resets, **opts)
        c_f, y_f = scan(fwd, params.forward, xs, carry.forward, **seqs)
        c_b, y_b = scan(bwd, params.backward, xs, carry.backward, reverse=True, **seqs)
        return Bidirectional(c_f, c_b), jnp.concatenate([y_f, y_b], axis=-1)

    def initial_carry(batch_shape=(), dtype=None):
        return Bidirectional(
            _transformed(forward, transform, None).initial_carry(batch_shape, dtype),
            _transformed(backward, transform, None).initial_carry(batch_shape, dtype),
        )

    config = (
        ("factory", bidirectional),
        ("forward", forward),
        ("backward", backward),
        ("time_major", time_major),
        ("unroll", unroll),
        ("remat", remat),
        ("method", method),
        ("kernel", kernel),
    )
    return Layer(init, apply, initial_carry, forward.input_size, out, config)


_bidirectional = bidirectional  # `rnn` has a flag of the same name


def stack(layers: Sequence[Layer], *, dropout: float = 0.0) -> Layer:
    """Feed each layer's outputs to the next; params and carry are tuples, one entry per layer.

    Args:
        layers: the layers, first to last; each one's ``output_size`` must equal the next one's
            ``input_size``.
        dropout: probability of zeroing an element of the outputs of every layer but the last
            (as ``torch.nn.LSTM(dropout=...)``). Applied only when ``apply`` gets a ``key``;
            without one the stack is deterministic (evaluation mode).

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> deep = jr.stack([jr.layer(jr.gru(3, 8)), jr.layer(jr.gru(8, 5))], dropout=0.1)
    >>> params = deep.init(jax.random.key(0))
    >>> carry, ys = deep.apply(params, jnp.ones((2, 6, 3)), key=jax.random.key(1))
    >>> ys.shape, [h.shape for h in carry]
    ((2, 6, 5), [(2, 8), (2, 5)])
    """
    layers = tuple(layers)
    if not layers:
        raise ValueError("stack: expected at least one layer")
    for k, lay in enumerate(layers):
        if not isinstance(lay, Layer):
            hint = ": wrap a cell in jr.layer(cell)" if isinstance(lay, Cell) else ""
            raise TypeError(f"layers[{k}]: expected a jaxrnn.Layer, got {type(lay).__name__}{hint}")
    dropout = check_probability("dropout", dropout)
    for k, (a, b) in enumerate(itertools.pairwise(layers)):
        if None not in (a.output_size, b.input_size) and a.output_size != b.input_size:
            raise ValueError(
                f"stack: layer {k} outputs {a.output_size} features but layer {k + 1} expects "
                f"input_size {b.input_size}"
            )

    def init(key):
        keys = jax.random.split(check_key("key", key), len(layers))
        return tuple(lay.init(k) for lay, k in zip(layers, keys, strict=True))

    def apply(params, xs, carry=None, *, lengths=None, resets=None, key=None):
        for name, value in (("params", params), ("carry", carry)):
            if value is not None and not isinstance(value, tuple | list):
                raise TypeError(
                    f"{name}: expected a tuple of {len(layers)} layer entries (one per layer), "
                    f"got {type(value).__name__}"
                )
        if len(params) != len(layers):
            raise ValueError(f"params: expected {len(layers)} layer entries, got {len(params)}")
        key = check_key("key", key, optional=True)
        carry = (None,) * len(layers) if carry is None else tuple(carry)
        if len(carry) != len(layers):
            raise ValueError(f"carry: expected {len(layers)} layer entries, got {len(carry)}")
        # Every layer gets its own key whenever one is given: inner layers (a nested stack)
        # may have dropout of their own even when this stack has none.
        n = len(layers)
        keys = [(None, None)] * n if key is None else jax.random.split(key, (n, 2))
        use_dropout = key is not None and dropout > 0.0
        carries = []
        for k, (lay, p, c, (lk, dk)) in enumerate(zip(layers, params, carry, keys, strict=True)):
            seqs = {} if resets is None else {"resets": resets}  # a custom Layer may lack it
            c, xs = lay.apply(p, xs, c, lengths=lengths, key=lk, **seqs)
            carries.append(c)
            if use_dropout and k < n - 1:
                keep = jax.random.bernoulli(dk, 1.0 - dropout, xs.shape)
                xs = jnp.where(keep, xs / (1.0 - dropout), jnp.zeros((), xs.dtype))
        return tuple(carries), xs

    def initial_carry(batch_shape=(), dtype=None):
        return tuple(lay.initial_carry(batch_shape, dtype) for lay in layers)

    config = (("factory", stack), ("layers", layers), ("dropout", dropout))
    return Layer(init, apply, initial_carry, layers[0].input_size, layers[-1].output_size, config)


def _check_rnn_options(cell_fn, num_layers, dropout, cudnn, transform, method):
    """``(num_layers, dropout, sequential)`` of :func:`rnn`, its options checked."""
    if isinstance(cell_fn, Cell | Layer) or not callable(cell_fn):
        raise TypeError(
            f"cell_fn: expected a cell factory such as jr.lstm (called as cell_fn(input_size, "
            f"hidden_size, **cell_kwargs)), got a {type(cell_fn).__name__}"
            + ("; pass the factory, not a cell built with it" if isinstance(cell_fn, Cell) else "")
        )
    num_layers = check_size("num_layers", num_layers)
    dropout = check_probability("dropout", dropout)
    cudnn = check_switch("cudnn", cudnn)
    if transform is not None and cudnn:
        raise ValueError("cudnn=True: a transform (regulariser) runs on the scan path only")
    sequential = isinstance(method, str) and method in ("sequential", "auto")
    if cudnn and not sequential:
        raise ValueError(
            f'cudnn=True: cuDNN runs the layer sequentially, so method must be "sequential" or '
            f'"auto", got {method!r}'
        )
    return num_layers, dropout, sequential


def _rnn_layers(cell_fn, input_size, hidden_size, num_layers, bidirectional, cell_kwargs, opts):
    """The layers of :func:`rnn`, each reading the previous one's output."""
    layers, size = [], input_size
    for _ in range(num_layers):
        if bidirectional:
            lay = _bidirectional(cell_fn(size, hidden_size, **cell_kwargs), **opts)
        else:
            lay = layer(cell_fn(size, hidden_size, **cell_kwargs), **opts)
        layers.append(lay)
        size = lay.output_size
    return layers


def rnn(
    cell_fn: Callable[..., Cell],
    input_size: int,
    hidden_size: int,
    *,
    num_layers: int = 1,
    bidirectional: bool = False,
    dropout: float = 0.0,
    time_major: bool = False,
    unroll: int | bool = 1,
    remat: Remat = False,
    cudnn: bool | None = None,
    transform: Transform | None = None,
    method: Method = "sequential",
    kernel: bool | None = None,
    **cell_kwargs,
) -> Layer:
    """A multi-layer, optionally bidirectional recurrent network, as ``torch.nn.LSTM`` builds.

    Layer ``l`` reads ``input_size`` features if ``l == 0`` and the previous layer's outputs
    otherwise (``2 * hidden_size`` when bidirectional, ``proj_size`` in place of
    ``hidden_size`` for a projected LSTM). Always a :func:`stack`, even of one layer, so params
    and carry are tuples of ``num_layers`` entries, each a :class:`Bidirectional` when
    ``bidirectional``. ``time_major=False`` corresponds to torch's ``batch_first=True``.

    Args:
        cell_fn: a cell factory such as :func:`jaxrnn.lstm`, called as
            ``cell_fn(in_size, hidden_size, **cell_kwargs)``.
        input_size: features of ``xs``.
        hidden_size: the cells' hidden size.
        num_layers: number of stacked layers.
        bidirectional: make every layer bidirectional.
        dropout: dropout between layers (see :func:`stack`).
        time_major: layout of ``xs``/``ys``.
        unroll: passed to ``jax.lax.scan``.
        remat: what each step keeps for the backward pass; see :func:`jaxrnn.scan`.
        cudnn: run LSTM stacks on cuDNN (:func:`jax.experimental.rnn.lstm`), see
            :mod:`jaxrnn.cudnn`. ``None`` (default): whenever ``apply`` is traced for a CUDA
            GPU and cuDNN computes the layer exactly (``cell_fn=jr.lstm`` without peephole,
            coupled gates or projection, float32, and no dropout with a key); otherwise the
            scan path. ``True``: require it; raises ``ValueError`` naming the reason, here when
            the layer is unsupported or the backend is not a CUDA GPU, in ``apply`` when a call
            cannot be dispatched. ``False``: never. Both paths compute the same function;
            the cuDNN path has no forward-mode derivatives (``jax.jvp``) and runs ``vmap``
            sequentially. ``unroll`` and ``remat`` do not apply to it.
        transform: a regulariser applied to every cell (see :func:`layer`), e.g.
            ``functools.partial(jr.variational_dropout, rate=0.25, recurrent_rate=0.25)``;
            each layer draws its masks from its own key. Layers with one run on the scan path.
        method: how every layer evaluates its recurrence (see :func:`jaxrnn.scan`):
            ``"sequential"`` (default), ``"associative"`` (linear-recurrence cells such as
            :func:`jaxrnn.min_gru`), ``"newton"``, a :class:`jaxrnn.Newton`, or ``"auto"``.
            cuDNN, a sequential kernel, is used only under ``"sequential"`` and ``"auto"``.
        kernel: run the layers on the native CPU kernels (:mod:`jaxrnn.kernels`): ``None``
            (default) wherever they compute the same (``cell_fn=jr.lstm`` without peephole,
            coupling or projection, or ``jr.gru``; float32 or bfloat16; sequential, no remat,
            no resets, on the CPU); ``True``: require them (``ValueError`` naming the reason);
            ``False``: never. Independent of ``cudnn``, which applies on CUDA GPUs.
        **cell_kwargs: forwarded to ``cell_fn`` (e.g. ``proj_size``, ``reset_after``).

    Raises:
        ValueError: if ``cudnn=True`` and the layer cannot run on cuDNN here, or ``dropout``
            is not a probability in ``[0, 1)``.
        TypeError: if ``cell_fn`` is not a cell factory (e.g. an already built
            :class:`~jaxrnn.Cell`), or ``cudnn`` is not ``None``, ``True`` or ``False``.

    >>> import jax, jax.numpy as jnp, jaxrnn as jr
    >>> net = jr.rnn(jr.lstm, 3, 16, num_layers=2, bidirectional=True)
    >>> params = net.init(jax.random.key(0))
    >>> carry, ys = net.apply(params, jnp.ones((4, 7, 3)))
    >>> ys.shape, len(carry), carry[1].forward.c.shape
    ((4, 7, 32), 2, (4, 16))
    """
    num_layers, dropout, sequential = _check_rnn_options(
        cell_fn, num_layers, dropout, cudnn, transform, method
    )
    bidirectional = check_bool("bidirectional", bidirectional)
    opts = dict(
        time_major=time_major,
        unroll=unroll,
        remat=remat,
        transform=transform,
        method=method,
        kernel=kernel,
    )
    layers = _rnn_layers(
        cell_fn, input_size, hidden_size, num_layers, bidirectional, cell_kwargs, opts
    )
    net = stack(layers, dropout=dropout)
    config = (
        ("factory", rnn),
        ("cell_fn", cell_fn),
        ("input_size", input_size),
        ("hidden_size", hidden_size),
        ("num_layers", num_layers),
        ("bidirectional", bidirectional),
        ("dropout", dropout),
        ("time_major", time_major),
        ("unroll", unroll),
        ("remat", remat),
        ("cell_kwargs", tuple(cell_kwargs.items())),
        ("cudnn", cudnn),
        ("transform", transform),
        ("method", method),
        ("kernel", kernel),
    )
    net = net._replace(config=config)
    if cudnn is False or transform is not None or not sequential:
        return net
    return _cudnn_dispatching(net, cudnn)


def _cudnn_dispatching(net: Layer, cudnn: bool | None) -> Layer:
    """``net`` whose ``apply`` runs on cuDNN where it computes the same, else the plain stack
    (``cudnn=True``: an error where it cannot)."""
    if cudnn:
        _cudnn.require(net)
    elif not _cudnn.supports(net)[0]:
        return net  # never dispatched: keep the plain stack
    scan_apply = net.apply

    def apply(params, xs, carry=None, *, lengths=None, resets=None, key=None):
        # Decided at trace time: the backend, the key and the dtypes of this call.
        if resets is not None:  # cuDNN has no resets
            if cudnn:
                raise ValueError("cudnn=True: resets run on the scan path only")
            return scan_apply(params, xs, carry, lengths=lengths, resets=resets, key=key)
        if _cudnn.dispatch(net, params, xs, key, require=bool(cudnn)):
            return _cudnn.apply_cudnn(net, params, xs, carry, lengths)
        return scan_apply(params, xs, carry, lengths=lengths, key=key)

    return net._replace(apply=apply)
