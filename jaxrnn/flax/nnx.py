"""Flax NNX modules around jaxrnn cells and layers.

The NNX counterparts of :mod:`jaxrnn.flax.linen`, with the same call signatures and, given the
same params, the same results. ``__call__`` is a single call to :func:`jaxrnn.scan` (or
``layer.apply``) on the params pytree rebuilt from the module's variables.

Parameters are stored as one :class:`flax.nnx.Param` per array, under the params NamedTuple's
own field names (``model.params.w_ih``, ``model.params.w_hh``, ...), in a :class:`ParamTree`
that mirrors the pytree. (A single ``nnx.Param`` holding the whole NamedTuple works with
``nnx.grad`` but not with ``nnx.Optimizer`` in Flax 0.12.8: after the first update the optimizer
state holds an ``nnx.State`` where the NamedTuple was, and the second update fails with a
pytree structure mismatch.) :meth:`RNN.get_params` returns the NamedTuple that jaxrnn's pure
functions take, and :meth:`RNN.set_params` loads one, e.g. from a Linen model or a converter.

>>> import jax, jax.numpy as jnp, optax, jaxrnn as jr
>>> from flax import nnx
>>> import jaxrnn.flax.nnx as jrnnx
>>> model = jrnnx.RNN(jr.lstm(3, 4), rngs=nnx.Rngs(0))
>>> model.params.w_hh.shape, type(model.get_params()).__name__
((4, 16), 'LSTMParams')
>>> optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
>>> xs = jnp.ones((2, 5, 3))
>>> @nnx.jit
... def train_step(model, optimizer):
...     loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(xs) - 0.5) ** 2))(model)
...     optimizer.update(model, grads)
...     return loss
>>> losses = [float(train_step(model, optimizer)) for _ in range(3)]
>>> losses[2] < losses[0]
True
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrnn._checks import check_cell, check_params
from jaxrnn._core import Array, Cell
from jaxrnn.flax._common import check_layer, run_cell, uses_key
from jaxrnn.layers import Layer as _Layer
from jaxrnn.seq2seq import Seq2Seq as _Seq2Seq
from jaxrnn.seq2seq import Seq2SeqOutput, generate

__all__ = ["RNN", "Layer", "ParamTree", "Seq2Seq"]


class ParamTree(nnx.Module):
    """A params pytree held as NNX variables: one :class:`flax.nnx.Param` per array.

    Each child of the pytree becomes an attribute named after its key (a NamedTuple field, a
    dict key, or a tuple index as a string): an ``nnx.Param`` for an array, a nested
    ``ParamTree`` for a subtree, ``None`` for ``None`` (e.g. ``LSTMParams.w_peep`` of a cell
    without peepholes). The pytree's structure is kept as static data, so the exact pytree
    (NamedTuple types included) is rebuilt on every call.

    >>> import jax, jaxrnn as jr
    >>> from jaxrnn.flax.nnx import ParamTree
    >>> tree = ParamTree(jr.rnn(jr.gru, 3, 4, bidirectional=True).init(jax.random.key(0)))
    >>> getattr(tree, "0").backward.b_hh.shape
    (12,)
    """

    def __init__(self, tree: Any):
        """Store ``tree``, a pytree that is not a single leaf."""
        children, treedef = jax.tree_util.tree_flatten_with_path(
            tree, is_leaf=lambda x: x is not tree
        )
        if jax.tree_util.treedef_is_leaf(treedef):
            raise TypeError(f"ParamTree: expected a pytree with children, got {type(tree)}")
        names: list[str] = []
        for path, child in children:
            name = _key_name(path[-1])
            if name.startswith("_") or name in names or hasattr(type(self), name):
                raise ValueError(
                    f"ParamTree: cannot store a child named {name!r} as an attribute "
                    "(private, duplicate, or the name of an nnx.Module method)"
                )
            names.append(name)
            setattr(self, name, _to_nnx(child))
        self._treedef = treedef
        self._names = tuple(names)


def _key_name(key) -> str:
    """Attribute name for one key of a pytree path."""
    for attr in ("name", "key", "idx"):  # GetAttrKey, DictKey/FlattenedIndexKey, SequenceKey
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _to_nnx(tree: Any) -> Any:
    """``None``, an ``nnx.Param`` (for a leaf) or a :class:`ParamTree` holding ``tree``."""
    if tree is None:
        return None
    if jax.tree_util.treedef_is_leaf(jax.tree.structure(tree)):
        return nnx.Param(jnp.asarray(tree))
    return ParamTree(tree)


def _from_nnx(node: Any) -> Any:
    """The pytree stored by :func:`_to_nnx` (traced values inside a transform)."""
    if node is None:
        return None
    if isinstance(node, nnx.Variable):
        return node.get_value()
    return jax.tree.unflatten(node._treedef, [_from_nnx(getattr(node, n)) for n in node._names])


def _variables(node: Any) -> list[nnx.Variable]:
    """The variables stored by :func:`_to_nnx`, in the order of the pytree's leaves."""
    if node is None:
        return []
    if isinstance(node, nnx.Variable):
        return [node]
    return [v for n in node._names for v in _variables(getattr(node, n))]


def _set(node: Any, tree: Any) -> None:
    """Load ``tree`` (same structure and shapes as the stored pytree) into the variables."""
    current = _from_nnx(node)
    if jax.tree.structure(tree) != jax.tree.structure(current):
        raise TypeError(
            f"params: expected a pytree of structure {jax.tree.structure(current)}, "
            f"got {jax.tree.structure(tree)}"
        )
    paths = jax.tree_util.tree_flatten_with_path(current)[0]
    for var, (path, old), new in zip(_variables(node), paths, jax.tree.leaves(tree), strict=True):
        if jnp.shape(new) != jnp.shape(old):
            raise ValueError(
                f"params{jax.tree_util.keystr(path)}: expected shape {jnp.shape(old)}, "
                f"got {jnp.shape(new)}"
            )
        var.set_value(jnp.asarray(new))


class RNN(nnx.Module):
    """A jaxrnn cell run over a sequence by :func:`jaxrnn.scan`, as an NNX module.

    Same call signature and results as :class:`jaxrnn.flax.RNN` (Linen).

    Args:
        cell: the :class:`~jaxrnn.Cell`.
        reverse: run from the last step to the first (see :func:`jaxrnn.scan`).
        time_major: ``xs`` and ``ys`` are ``(T, *batch, F)`` instead of ``(*batch, T, F)``.
        unroll: passed to ``jax.lax.scan``.
        remat: what each step keeps for the backward pass: ``False`` (default) the outputs of
            matmuls and nonlinearities, ``True`` only the carry, ``"sqrt"`` only the carries
            between segments of about ``sqrt(T)`` steps (for very long sequences), or a
            ``jax.checkpoint`` policy; see :func:`jaxrnn.scan`.
        method: how :func:`jaxrnn.scan` evaluates the recurrence: ``"sequential"``
            (default), ``"associative"`` (cells with a linear recurrence, such as
            :func:`jaxrnn.min_gru`), ``"newton"``, ``"auto"`` or a
            :class:`jaxrnn.newton.Newton`.
        kernel: run on the native CPU kernels (:mod:`jaxrnn.kernels`): ``None`` (default)
            wherever they compute the same, ``True`` to require them, ``False`` never; see
            :func:`jaxrnn.scan`.
        transform: a regulariser ``transform(cell, key) -> cell`` (:mod:`jaxrnn.regularizers`),
            given a key from the ``dropout`` stream unless ``deterministic``, else ``None``;
            dropout keys work as in :class:`Layer`.
        deterministic: disable the ``transform`` (``eval()``/``train()`` set it).
        rngs: ``cell.init`` gets a key from its ``params`` stream.

    Attributes:
        params: the cell's params as a :class:`ParamTree` (``params.w_ih`` is an
            ``nnx.Param``, etc.).

    >>> import jax.numpy as jnp, jaxrnn as jr
    >>> from flax import nnx
    >>> import jaxrnn.flax.nnx as jrnnx
    >>> class Tagger(nnx.Module):
    ...     def __init__(self, rngs):
    ...         self.embed = nnx.Embed(10, 3, rngs=rngs)
    ...         self.rnn = jrnnx.RNN(jr.gru(3, 8), rngs=rngs)
    ...         self.head = nnx.Linear(8, 2, rngs=rngs)
    ...     def __call__(self, tokens, lengths):
    ...         return self.head(self.rnn(self.embed(tokens), lengths=lengths))
    >>> model = Tagger(nnx.Rngs(0))
    >>> model(jnp.zeros((4, 7), jnp.int32), jnp.array([7, 5, 2, 0])).shape
    (4, 7, 2)
    >>> sorted(path for path, _ in nnx.to_flat_state(nnx.state(model.rnn, nnx.Param)))
    [('params', 'b_hh'), ('params', 'b_ih'), ('params', 'w_hh'), ('params', 'w_ih')]
    """

    def __init__(
        self,
        cell: Cell,
        *,
        reverse: bool = False,
        time_major: bool = False,
        unroll: int | bool = 1,
        remat: bool | Literal["sqrt"] | Callable[..., bool] = False,
        transform: Callable[[Cell, Any], Cell] | None = None,
        deterministic: bool = False,
        method: Any = "sequential",
        kernel: bool | None = None,
        rngs: nnx.Rngs,
    ):
        check_cell("cell", cell)
        _check_rngs(rngs)
        self.cell = cell
        self.method = method
        self.kernel = kernel
        self.reverse = reverse
        self.time_major = time_major
        self.unroll = unroll
        self.remat = remat
        self.transform = transform
        self.deterministic = deterministic
        self.params = _to_nnx(cell.init(rngs.params()))
        self.rngs = rngs["dropout"].fork() if transform is not None else nnx.data(None)

    def get_params(self) -> Any:
        """The cell's params NamedTuple, as :func:`jaxrnn.scan` takes it."""
        return _from_nnx(self.params)

    def set_params(self, params: Any) -> None:
        """Load a params NamedTuple of the cell's structure and shapes.

        Raises:
            TypeError: if the structure differs (other NamedTuple, missing field, ...) or a
                dtype differs from the cell's ``param_dtype``.
            ValueError: if a shape differs.
        """
        check_params(self.cell, params)  # a built-in cell's own check, as jr.scan makes it
        _set(self.params, params)

    def set_view(self, deterministic: bool | None = None) -> None:
        """Used by :func:`flax.nnx.view`.

        Args:
            deterministic: if given, whether the ``transform`` is disabled.
        """
        if deterministic is not None:
            self.deterministic = deterministic

    def __call__(
        self,
        xs: Array,
        *,
        lengths: Array | None = None,
        resets: Array | None = None,
        initial_carry: Any = None,
        return_carry: bool = False,
        deterministic: bool | None = None,
        rngs: nnx.Rngs | nnx.RngStream | jax.Array | None = None,
    ) -> Array | tuple[Any, Array]:
        """Run the cell over ``xs``.

        Args:
            xs: ``(*batch, T, F)`` inputs, or ``(T, *batch, F)`` when ``time_major``.
            lengths: optional integer array of the batch shape (see :func:`jaxrnn.scan`).
            resets: optional bool array marking where segments start (see :func:`jaxrnn.scan`).
            initial_carry: the initial carry; ``None`` means zeros.
            return_carry: also return the final carry.
            deterministic: overrides the module's ``deterministic`` for this call.
            rngs: the dropout key's source for this call (see :meth:`Layer.__call__`).

        Returns:
            ``ys``, or ``(carry, ys)`` when ``return_carry``.
        """
        deterministic = self.deterministic if deterministic is None else deterministic
        key = None
        if self.transform is not None and not deterministic:
            key = _draw_key(self.rngs if rngs is None else rngs)
        return run_cell(
            self, self.get_params(), xs, initial_carry, lengths, return_carry, key, resets
        )


class Layer(nnx.Module):
    """A jaxrnn :class:`~jaxrnn.Layer` (bidirectional, stacked, ...) as an NNX module.

    Same call signature and results as :class:`jaxrnn.flax.Layer` (Linen). Dropout follows NNX's
    convention (as :class:`flax.nnx.Dropout`): active unless ``deterministic`` is true, which
    :meth:`~flax.nnx.Module.eval` / :meth:`~flax.nnx.Module.train` and :func:`flax.nnx.view` set;
    the key comes from ``rngs`` given at call time, else from the ``dropout`` stream forked at
    construction. Layers without dropout never draw a key.

    Args:
        layer: the :class:`~jaxrnn.Layer`.
        deterministic: disable dropout.
        rngs: ``layer.init`` gets a key from the ``params`` stream; dropout uses the ``dropout``
            stream (Flax falls back to ``default`` when there is none).

    Attributes:
        params: the layer's params as a :class:`ParamTree`.

    >>> import jax.numpy as jnp, jaxrnn as jr
    >>> from flax import nnx
    >>> import jaxrnn.flax.nnx as jrnnx
    >>> net = jrnnx.Layer(
    ...     jr.rnn(jr.lstm, 3, 8, num_layers=2, bidirectional=True, dropout=0.2), rngs=nnx.Rngs(0)
    ... )
    >>> xs = jnp.ones((4, 7, 3))
    >>> train_ys = net(xs)  # dropout between the layers: training mode is the default
    >>> net.eval()  # sets deterministic=True
    >>> carry, ys = net(xs, return_carry=True)
    >>> ys.shape, carry[1].backward.h.shape
    ((4, 7, 16), (4, 8))
    """

    def __init__(self, layer: _Layer, *, deterministic: bool = False, rngs: nnx.Rngs):
        check_layer("layer", layer)
        _check_rngs(rngs)
        self.layer = layer
        self.deterministic = deterministic
        self.params = _to_nnx(layer.init(rngs.params()))
        self.rngs = rngs["dropout"].fork() if uses_key(layer) else nnx.data(None)

    def get_params(self) -> Any:
        """The layer's params pytree, as ``layer.apply`` takes it."""
        return _from_nnx(self.params)

    def set_params(self, params: Any) -> None:
        """Load a params pytree of the layer's structure and shapes (see :meth:`RNN.set_params`)."""
        _set(self.params, params)

    def set_view(self, deterministic: bool | None = None) -> None:
        """Used by :func:`flax.nnx.view`.

        Args:
            deterministic: if given, whether dropout is disabled.
        """
        if deterministic is not None:
            self.deterministic = deterministic

    def __call__(
        self,
        xs: Array,
        *,
        lengths: Array | None = None,
        resets: Array | None = None,
        initial_carry: Any = None,
        return_carry: bool = False,
        deterministic: bool | None = None,
        rngs: nnx.Rngs | nnx.RngStream | jax.Array | None = None,
    ) -> Array | tuple[Any, Array]:
        """Apply the layer to ``xs``.

        Args:
            xs: the input sequence, laid out as the layer expects.
            lengths: optional integer array of the batch shape.
            resets: optional bool array marking where segments start (see :func:`jaxrnn.scan`).
            initial_carry: the initial carry (the layer's structure); ``None`` means zeros.
            return_carry: also return the final carry.
            deterministic: overrides the module's ``deterministic`` for this call.
            rngs: ``Rngs`` (its ``dropout`` stream is used), an ``RngStream`` or a key, used
                instead of the stream forked at construction.

        Returns:
            ``ys``, or ``(carry, ys)`` when ``return_carry``.
        """
        deterministic = self.deterministic if deterministic is None else deterministic
        key = None
        if uses_key(self.layer) and not deterministic:
            key = _draw_key(self.rngs if rngs is None else rngs)
        seqs = {} if resets is None else {"resets": resets}
        carry, ys = self.layer.apply(
            self.get_params(), xs, initial_carry, lengths=lengths, key=key, **seqs
        )
        return (carry, ys) if return_carry else ys


class Seq2Seq(nnx.Module):
    """A jaxrnn encoder–decoder (:func:`jaxrnn.seq2seq.encoder_decoder`) as an NNX module.

    Same calls and results as :class:`jaxrnn.flax.Seq2Seq` (Linen): ``__call__`` is
    ``model.apply`` (teacher forcing) and :meth:`generate` is :func:`jaxrnn.seq2seq.generate`.
    Parameters and encoder dropout work as in :class:`Layer`.

    Args:
        model: the :class:`~jaxrnn.seq2seq.Seq2Seq`.
        deterministic: disable dropout.
        rngs: ``model.init`` gets a key from the ``params`` stream; dropout uses ``dropout``.

    >>> import jax.numpy as jnp, jaxrnn as jr
    >>> from flax import nnx
    >>> import jaxrnn.flax.nnx as jrnnx
    >>> model = jr.seq2seq.encoder_decoder(
    ...     jr.rnn(jr.gru, 8, 16), jr.gru(8 + 16, 16), src_vocab=20, tgt_vocab=20,
    ...     attention=jr.attention.dot(16),
    ... )
    >>> net = jrnnx.Seq2Seq(model, rngs=nnx.Rngs(0))
    >>> src, tgt_in = jnp.ones((2, 7), jnp.int32), jnp.ones((2, 5), jnp.int32)
    >>> net(src, tgt_in).logits.shape, net.generate(src, bos_id=1, eos_id=2, max_len=6).shape
    ((2, 5, 20), (2, 6))
    """

    def __init__(self, model: _Seq2Seq, *, deterministic: bool = False, rngs: nnx.Rngs):
        _check_rngs(rngs)
        self.model = model
        self.deterministic = deterministic
        self.params = _to_nnx(model.init(rngs.params()))
        self._encoder_dropout = uses_key(dict(model.config)["encoder"])
        self.rngs = rngs["dropout"].fork() if self._encoder_dropout else nnx.data(None)

    get_params = Layer.get_params
    set_params = Layer.set_params
    set_view = Layer.set_view

    def __call__(
        self,
        src: Array,
        tgt_in: Array,
        *,
        src_lengths: Array | None = None,
        tgt_lengths: Array | None = None,
        deterministic: bool | None = None,
        rngs: nnx.Rngs | nnx.RngStream | jax.Array | None = None,
    ) -> Seq2SeqOutput:
        """Teacher-forced logits (and attention weights) for ``tgt_in``; see ``model.apply``."""
        deterministic = self.deterministic if deterministic is None else deterministic
        key = None
        if self._encoder_dropout and not deterministic:
            key = _draw_key(self.rngs if rngs is None else rngs)
        return self.model.apply(
            self.get_params(),
            src,
            tgt_in,
            src_lengths=src_lengths,
            tgt_lengths=tgt_lengths,
            dropout_key=key,
        )

    def generate(self, src: Array, src_lengths: Array | None = None, **kwargs):
        """Decode ``src``: :func:`jaxrnn.seq2seq.generate` with this module's params."""
        return generate(self.model, self.get_params(), src, src_lengths, **kwargs)


def _check_rngs(rngs) -> None:
    """``TypeError`` unless ``rngs`` is an ``nnx.Rngs`` (the constructors draw from its
    ``params`` stream)."""
    if not isinstance(rngs, nnx.Rngs):
        raise TypeError(f"rngs: expected nnx.Rngs (e.g. nnx.Rngs(0)), got {type(rngs).__name__}")


def _draw_key(rngs: Any) -> jax.Array:
    if isinstance(rngs, nnx.Rngs):
        return rngs["dropout"]()
    if isinstance(rngs, nnx.RngStream):
        return rngs()
    if isinstance(rngs, jax.Array):
        return rngs
    if rngs is None:
        raise ValueError("Layer: dropout is active (deterministic=False) but no rngs were given")
    raise TypeError(f"rngs: expected nnx.Rngs, nnx.RngStream or a key, got {type(rngs)}")
