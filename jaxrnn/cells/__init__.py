"""Recurrent cells: one time step of a recurrence, as pure functions.

Every cell family lives in a private file of this package and is re-exported here and as
``jr.<factory>``: ``_classic`` (:func:`simple_rnn`, :func:`jordan_rnn`), ``_gated``
(:func:`gru`, :func:`lstm`, :func:`mgu`), ``_layernorm`` (:func:`layer_norm_lstm`,
:func:`layer_norm_gru`), ``_conv`` (:func:`conv_lstm`, :func:`conv_gru`), ``_xlstm``
(:func:`slstm`), ``_linear`` (:func:`min_gru`, :func:`min_lstm`, :func:`lru`, :func:`rg_lru`,
whose recurrences are linear in the carry and run in parallel over time) and ``_carry``
(:func:`learnable_carry`); ``_build`` and ``_init`` hold what the factories share.

A :class:`Cell` bundles three pure functions, in the spirit of ``optax.GradientTransformation``:

* ``init(key) -> params``: a NamedTuple of arrays with named fields (the layout is part of the
  contract: users port weights by name);
* ``apply(params, carry, x) -> (carry, y)``: one step, exactly the signature ``jax.lax.scan``
  wants for its body once ``params`` is bound;
* ``initial_carry(batch_shape=(), dtype=None) -> carry``: zeros, in the cell's carry dtype
  unless ``dtype`` says otherwise.

``x`` has shape ``(*batch, input_size)`` with any number of leading batch dimensions (or none);
the cell does nothing about the batch beyond ordinary broadcasting. Use :func:`jaxrnn.scan` to
run a cell over a sequence: it validates shapes and never broadcasts silently.

Layout conventions (shared by every cell here):

* weights are stored input-major, so a projection is ``x @ w`` with ``w`` of shape
  ``(in_features, out_features)``;
* the gates of a gated cell are fused into one matrix, gate blocks side by side along the output
  axis in PyTorch's order (GRU: ``r, z, n``; LSTM: ``i, f, g, o``), so ``w[:, k*H:(k+1)*H]`` is
  gate ``k``.

Precision (:mod:`jaxrnn.precision`): every factory takes ``param_dtype`` (storage, default
float32) and ``dtype`` (matmul operands, default ``param_dtype``). Matmuls sum in float32; biases,
gate nonlinearities and the carry stay in that accumulation dtype whatever ``dtype`` is; outputs
``y`` come out in ``dtype``. ``jr.lstm(I, H, dtype=jnp.bfloat16)`` stores float32 parameters and
runs its matmuls in bf16.

Every cell also exposes its step split in two (``project`` then ``step``): ``project`` holds
the input-side work (``x @ w_ih + b``), which depends on no carry, so :func:`jaxrnn.scan` can
compute it for all time steps in one large matmul before the loop; ``step`` is the recurrent
remainder. ``apply(p, c, x) == step(p, c, project(p, x))`` by construction.

Default initialisers (``init`` splits its key once per parameter and never reuses a key):

* input weights ``w_ih``: LeCun normal (truncated normal, variance ``1 / fan_in``), drawn for the
  fused matrix at once (the same distribution as gate by gate: every block has the same fan-in);
* recurrent weights ``w_hh``: orthogonal, drawn independently for each gate's square block
  (orthogonal recurrent matrices neither explode nor vanish at initialisation); LeCun normal
  for :func:`jordan_rnn`'s ``w_oh`` and the convolutional cells' kernels;
* biases: zeros, except the LSTM forget-gate block, set to ``forget_bias`` (1.0 by default, as
  Jozefowicz et al. 2015 recommend, so the cell starts out remembering);
* LSTM peephole weights and output/projection matrices: LeCun normal where a matrix, uniform in
  ``[-1/sqrt(H), 1/sqrt(H)]`` for the diagonal peephole vectors (PyTorch's RNN default range).

Custom initialisers: every gated and classic cell factory (the dense, convolutional and
layer-normalised ones) takes the keyword arguments ``kernel_init``, ``recurrent_kernel_init``
and ``bias_init`` (Flax's names), each ``None`` for the default above or a
``jax.nn.initializers``-style callable ``init(key, shape, dtype) -> Array``; with all three
``None``, ``init`` returns the same bits as it always did. A given initialiser is called once
per gate block, as by the per-gate ``Dense`` layers of Flax's cells: with that block's shape
(input kernel ``(I, H)``, recurrent kernel ``(H, H)``, or ``(P, H)`` for an LSTM with a
projection, bias ``(H,)``; a convolutional cell's kernels ``(*kernel_size, C, H)`` and
``(*kernel_size, H, H)``), a key of its own and the parameter dtype; the blocks are
concatenated in the cell's gate order. ``recurrent_kernel_init=jax.nn.initializers.orthogonal()``
thus gives an orthogonal matrix per gate, which is the default (the same matrices, in float32
and float64; the default also draws half-precision ones, in float32, which JAX's QR needs).
Further rules:

* ``bias_init`` initialises every gate bias: in a cell with two bias vectors (a GRU's ``b_ih``
  and ``b_hh``, the MGU's) every block of each, and in the layer-normalised cells, whose
  LayerNorm biases are the gate biases, those of the input and recurrent LayerNorms;
* ``forget_bias`` is added to what ``bias_init`` gives for the forget-gate block (Keras'
  ``unit_forget_bias``), so ``bias_init=jax.nn.initializers.zeros`` gives the default biases
  and ``forget_bias=0.0`` leaves the block to ``bias_init`` alone;
* parameters that are neither a kernel nor a gate bias keep their defaults: peepholes,
  projection, LayerNorm gains and the cell-state LayerNorm, the output layer of
  :func:`jordan_rnn`;
* a value that is not callable raises ``TypeError`` when the cell is built; an initialiser
  returning another shape or dtype than it was asked for raises ``ValueError`` when ``init``
  runs, naming the argument;
* the initialisers are not recorded in ``config``: they choose the starting point, not the
  function a step computes, which is what the converters (:mod:`jaxrnn.interop`) read. With
  ``bias_init`` given, ``init`` splits its key into one more part, for the biases.
"""

# The families in the order of the docs; each file's own docstring has its equations.
# ruff: noqa: I001
from jaxrnn._core import Cell, LinearRecurrence
from jaxrnn.cells._classic import JordanParams, SimpleRNNParams, jordan_rnn, simple_rnn
from jaxrnn.cells._gated import GRUParams, LSTMCarry, LSTMParams, MGUParams, gru, lstm, mgu
from jaxrnn.cells._layernorm import (
    LayerNormGRUParams,
    LayerNormLSTMParams,
    layer_norm_gru,
    layer_norm_lstm,
)
from jaxrnn.cells._conv import ConvGRUParams, ConvLSTMParams, conv_gru, conv_lstm
from jaxrnn.cells._xlstm import SLSTMCarry, SLSTMParams, slstm
from jaxrnn.cells._linear import (
    LRUParams,
    MinGRUParams,
    MinLSTMParams,
    RGLRUParams,
    lru,
    min_gru,
    min_lstm,
    rg_lru,
    ring_init,
)
from jaxrnn.cells._carry import LearnableCarry, LearnableCarryParams, learnable_carry

__all__ = [
    "Cell",
    "ConvGRUParams",
    "ConvLSTMParams",
    "GRUParams",
    "JordanParams",
    "LRUParams",
    "LSTMCarry",
    "LSTMParams",
    "LayerNormGRUParams",
    "LayerNormLSTMParams",
    "LearnableCarry",
    "LearnableCarryParams",
    "LinearRecurrence",
    "MGUParams",
    "MinGRUParams",
    "MinLSTMParams",
    "RGLRUParams",
    "SLSTMCarry",
    "SLSTMParams",
    "SimpleRNNParams",
    "conv_gru",
    "conv_lstm",
    "gru",
    "jordan_rnn",
    "layer_norm_gru",
    "layer_norm_lstm",
    "learnable_carry",
    "lru",
    "lstm",
    "mgu",
    "min_gru",
    "min_lstm",
    "rg_lru",
    "ring_init",
    "simple_rnn",
    "slstm",
]
