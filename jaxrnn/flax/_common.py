"""Pieces shared by the Linen and NNX wrappers (no Flax import here)."""

from __future__ import annotations

from typing import Any

from jaxrnn._core import Cell
from jaxrnn._scan.scan import scan
from jaxrnn.layers import Layer, bidirectional, layer, rnn, stack


def check_layer(name: str, value) -> None:
    """``TypeError`` unless ``value`` is a :class:`~jaxrnn.Layer` (what the pure functions
    would say of a cell passed where a layer belongs)."""
    if isinstance(value, Layer):
        return
    hint = (
        "; wrap a cell in jr.layer(cell) or use the RNN module" if isinstance(value, Cell) else ""
    )
    raise TypeError(
        f"{name}: expected a jaxrnn.Layer (jr.layer, jr.rnn, ...), got {type(value).__name__}{hint}"
    )


def existing_or_new(module: Any, name: str, init) -> Any:
    """The module's param ``name``: the one it holds (left for jaxrnn's own checks to judge, as
    the pure functions would) or, at ``init``, a new one from ``init``. ``self.param`` would
    compare an existing param with ``init``'s shapes first and raise Flax's own error type."""
    if module.has_variable("params", name):
        return module.get_variable("params", name)
    return module.param(name, init)


def uses_key(lay: Layer) -> bool:
    """Whether ``lay.apply`` can make use of a ``key`` (i.e. has dropout somewhere).

    Decided from ``lay.config``: :func:`jaxrnn.layer` and :func:`jaxrnn.bidirectional` layers
    use one when they have a ``transform`` (a regulariser); :func:`jaxrnn.rnn` and
    :func:`jaxrnn.stack` layers when their dropout is positive or they have a ``transform`` (or,
    for a stack, when one of its layers does). A layer built some other way is assumed to use
    its key, so the wrappers always hand it one outside deterministic mode.
    """
    cfg = dict(lay.config)
    factory = cfg.get("factory")
    if factory is layer or factory is bidirectional:
        return cfg.get("transform") is not None
    if factory is rnn:
        return cfg["dropout"] > 0.0 or cfg.get("transform") is not None
    if factory is stack:
        return cfg["dropout"] > 0.0 or any(uses_key(sub) for sub in cfg["layers"])
    return True


def run_cell(
    module: Any, params: Any, xs, initial_carry, lengths, return_carry: bool, key=None, resets=None
):
    """``jr.scan`` with the options a Linen or NNX ``RNN`` module holds; the modules' body.

    With a ``transform`` (a regulariser such as :func:`jaxrnn.variational_dropout`), the cell
    scanned is ``transform(cell, key)``: ``key`` from the dropout stream in training, ``None`` in
    deterministic mode.
    """
    cell = module.cell if module.transform is None else module.transform(module.cell, key)
    carry, ys = scan(
        cell,
        params,
        xs,
        initial_carry,
        lengths=lengths,
        resets=resets,
        reverse=module.reverse,
        time_major=module.time_major,
        unroll=module.unroll,
        remat=module.remat,
        method=module.method,
        kernel=module.kernel,
    )
    return (carry, ys) if return_carry else ys
