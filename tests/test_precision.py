"""The precision policy (jaxrnn.precision): dtypes of params, carries and outputs, and values.

References: the float64 NumPy cells of tests/test_cells.py with every matrix product's operands
rounded to bfloat16 first (``ml_dtypes``), which is exactly what ``dtype=jnp.bfloat16``
promises (bf16 operands, high-precision sums, everything else in float32); the float32 run of
the same parameters, which bf16 outputs must stay within bf16 tolerance of; and the float32
path for inputs of another float dtype, which the policy casts.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import numpy_init
from test_cells import CELL_IDS, CELLS, IN, make_inputs, reference_apply

import jaxrnn as jr
import jaxrnn.flax as jrf
import jaxrnn.train as jt
from jaxrnn.precision import policy

BF16 = jnp.bfloat16
# bf16 keeps 8 significant bits: one rounding is at most 2**-9 relative, and an output rounded
# once after float32 arithmetic can land one bf16 ulp (<= 2**-7 relative) from the rounding of
# the float64 reference.
BF16_ULP = 2.0**-7
# A whole sequence in bf16 vs float32 (same params): every step's matmul operands are rounded,
# and the errors of T steps add up through the recurrence. Measured max |diff| over the cells
# below at T = 8 with unit-scale inputs: <= 0.02; the bound leaves room for other seeds.
SEQ_ATOL = 0.06


def bf16_mm(w, v):
    """A matrix product with both operands rounded to bfloat16, summed in float64."""
    rnd = lambda a: np.asarray(a).astype(ml_dtypes.bfloat16).astype(np.float64)
    return rnd(w) @ rnd(v)


def cell_cases():
    return pytest.mark.parametrize(("name", "make", "kind", "opts"), CELLS, ids=CELL_IDS)


def bf16_cell(make):
    """The cell of ``make`` (param dtype float32) with bf16 matmuls."""
    cell = make(jnp.float32)
    cfg = dict(cell.config)
    kwargs = {k: v for k, v in cfg.items() if k not in ("factory", "param_dtype", "dtype")}
    return cfg["factory"](**kwargs, param_dtype=jnp.float32, dtype=BF16)


def dtypes(tree):
    return [leaf.dtype for leaf in jax.tree.leaves(tree)]


# --------------------------------------------------------------------------------------------
# The policy itself.


def test_policy_defaults_and_accumulation_dtype():
    p = policy()
    assert (p.param_dtype, p.dtype, p.accum_dtype) == (jnp.float32,) * 3
    p = policy(dtype=BF16)
    assert (p.param_dtype, p.dtype, p.accum_dtype) == (jnp.float32, BF16, jnp.float32)
    p = policy(BF16)
    assert (p.param_dtype, p.dtype, p.accum_dtype) == (BF16, BF16, jnp.float32)
    p = policy(jnp.float64)
    assert p.accum_dtype == jnp.float64
    assert dict(policy(dtype="bfloat16").config())["dtype"] == BF16


@pytest.mark.parametrize("bad", [jnp.int32, "int8", bool, "nonsense"])
def test_policy_rejects_non_float_dtypes(bad):
    with pytest.raises(TypeError, match="dtype: expected a floating-point dtype"):
        jr.lstm(3, 4, dtype=bad)
    with pytest.raises(TypeError, match="param_dtype: expected a floating-point dtype"):
        jr.gru(3, 4, param_dtype=bad)


# --------------------------------------------------------------------------------------------
# Cells: one step against the bf16-operand reference.


@cell_cases()
def test_bf16_step_matches_bf16_operand_reference(name, make, kind, opts):
    cell = bf16_cell(make)
    assert dict(cell.config)["dtype"] == BF16 and dict(cell.config)["param_dtype"] == jnp.float32
    assert all(d == jnp.float32 for d in dtypes(jax.eval_shape(cell.init, jax.random.key(0))))
    assert all(d == jnp.float32 for d in dtypes(cell.initial_carry((3,))))

    _, params, carry, x = make_inputs(make, (3,), jnp.float32, seed=4)
    new_carry, y = jax.jit(cell.apply)(params, carry, x)
    assert all(d == jnp.float32 for d in dtypes(new_carry)), "the carry stays float32"
    assert y.dtype == BF16, "outputs come out in dtype"

    ref_carry, ref_y = reference_apply(kind, opts, params, carry, x, mm=bf16_mm)
    for got, want in zip(jax.tree.leaves(new_carry), jax.tree.leaves(ref_carry), strict=True):
        np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-5, atol=1e-6)
    want_y = ref_y.astype(ml_dtypes.bfloat16).astype(np.float64)
    np.testing.assert_allclose(np.asarray(y, np.float64), want_y, rtol=BF16_ULP, atol=1e-6)


@cell_cases()
def test_bf16_step_is_not_the_float32_step(name, make, kind, opts):
    """The reference above can tell the policies apart: bf16 operands change the carry by far
    more than its 1e-5 tolerance (so keeping the carry in bf16, or not rounding, would fail)."""
    _, params, carry, x = make_inputs(make, (3,), jnp.float32, seed=4)
    ref32, _ = reference_apply(kind, opts, params, carry, x)
    ref16, _ = reference_apply(kind, opts, params, carry, x, mm=bf16_mm)
    pairs = zip(jax.tree.leaves(ref32), jax.tree.leaves(ref16), strict=True)
    gap = max(np.max(np.abs(a - b)) for a, b in pairs)
    assert gap > 1e-4


@cell_cases()
def test_bf16_sequence_within_bf16_tolerance_of_float32(name, make, kind, opts):
    cell32, cell16 = make(jnp.float32), bf16_cell(make)
    params = cell32.init(jax.random.key(1))
    xs = jax.random.normal(jax.random.key(2), (4, 8, IN))
    lengths = jnp.array([8, 5, 1, 0])
    c32, y32 = jax.jit(lambda p, x: jr.scan(cell32, p, x, lengths=lengths))(params, xs)
    c16, y16 = jax.jit(lambda p, x: jr.scan(cell16, p, x, lengths=lengths))(params, xs)
    assert y16.dtype == BF16 and all(d == jnp.float32 for d in dtypes(c16))
    np.testing.assert_allclose(np.asarray(y16, np.float32), y32, atol=SEQ_ATOL)
    for a, b in zip(jax.tree.leaves(c16), jax.tree.leaves(c32), strict=True):
        np.testing.assert_allclose(a, b, atol=SEQ_ATOL)
    assert bool(jnp.all(y16[3] == 0)), "padding stays exactly zero in bf16"


@cell_cases()
def test_bf16_gradients_are_float32_and_close_to_float32_gradients(name, make, kind, opts):
    cell32, cell16 = make(jnp.float32), bf16_cell(make)
    params = cell32.init(jax.random.key(1))
    xs = jax.random.normal(jax.random.key(2), (4, 6, IN))

    def loss(cell):
        def f(p):
            _, ys = jr.scan(cell, p, xs)
            return jnp.mean(jnp.square(ys.astype(jnp.float32)))

        return jax.jit(jax.grad(f))

    g32, g16 = loss(cell32)(params), loss(cell16)(params)
    assert all(d == jnp.float32 for d in dtypes(g16)), "gradients of float32 master weights"
    for a, b in zip(jax.tree.leaves(g16), jax.tree.leaves(g32), strict=True):
        scale = float(jnp.max(jnp.abs(b))) + 1e-3
        np.testing.assert_allclose(a, b, atol=0.05 * scale)


def test_param_dtype_bf16_stores_bf16_and_still_keeps_a_float32_carry():
    cell = jr.lstm(3, 4, param_dtype=BF16)
    params = cell.init(jax.random.key(0))
    assert all(d == BF16 for d in dtypes(params))
    carry, ys = jr.scan(cell, params, jnp.ones((2, 5, 3)))
    assert ys.dtype == BF16 and dtypes(carry) == [jnp.float32, jnp.float32]


# --------------------------------------------------------------------------------------------
# jr.scan: the carry follows the policy, not xs; clear errors for what it cannot explain.


@pytest.mark.parametrize("xs_dtype", [BF16, jnp.float16])
def test_scan_casts_inputs_of_another_float_dtype(xs_dtype):
    """Used to fail with JAX's "scan body function carry input and carry output must have equal
    types": bf16 inputs, float32 params. Now the inputs are cast to the matmul dtype."""
    cell = jr.lstm(3, 4)
    params = cell.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (2, 5, 3)).astype(xs_dtype)
    carry, ys = jr.scan(cell, params, xs)
    want_carry, want_ys = jr.scan(cell, params, xs.astype(jnp.float32))
    assert ys.dtype == jnp.float32 and dtypes(carry) == [jnp.float32] * 2
    np.testing.assert_array_equal(ys, want_ys)
    np.testing.assert_array_equal(carry.c, want_carry.c)


def test_scan_rejects_a_carry_in_another_dtype():
    cell = jr.lstm(3, 4, dtype=BF16)
    params = cell.init(jax.random.key(0))
    carry = jax.tree.map(lambda c: c.astype(BF16), cell.initial_carry((2,)))
    with pytest.raises(TypeError, match=r"carry\.h: expected dtype float32, got bfloat16"):
        jr.scan(cell, params, jnp.ones((2, 5, 3)), carry)


@pytest.mark.parametrize("dtype", [jnp.int32, bool, jnp.complex64])
def test_scan_rejects_non_float_inputs(dtype):
    cell = jr.gru(3, 4)
    with pytest.raises(TypeError, match=r"xs: expected a floating-point array, got dtype"):
        jr.scan(cell, cell.init(jax.random.key(0)), jnp.ones((2, 5, 3), dtype))


def test_scan_names_the_inputs_when_a_custom_cell_changes_the_carry_dtype():
    leaky = jr.Cell(
        init=lambda key: jnp.float32(0.5),
        # bf16 carry in, float32 carry out: lax.scan cannot run this.
        apply=lambda d, h, x: (d * h.astype(jnp.float32) + x,) * 2,
        initial_carry=lambda batch_shape=(), dtype=None: jnp.zeros((*batch_shape, 2), BF16),
    )
    with pytest.raises(TypeError, match=r"carry: one step of the cell turns a carry of dtypes"):
        jr.scan(leaky, leaky.init(None), jnp.ones((3, 2)))


# --------------------------------------------------------------------------------------------
# Through layers, attention, seq2seq, Flax modules, training and the language model.


def test_layers_carry_float32_and_output_dtype():
    net = jr.rnn(jr.lstm, 3, 8, num_layers=2, bidirectional=True, dtype=BF16)
    params = net.init(jax.random.key(0))
    assert all(d == jnp.float32 for d in dtypes(params))
    carry, ys = net.apply(params, jnp.ones((2, 5, 3)), lengths=jnp.array([5, 2]))
    assert ys.dtype == BF16 and ys.shape == (2, 5, 16)
    assert all(d == jnp.float32 for d in dtypes(carry))
    assert all(d == jnp.float32 for d in dtypes(net.initial_carry((2,))))


@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: jr.attention.additive(4, 6, 5, normalize=True, **kw),
        lambda **kw: jr.attention.general(4, 6, scaled=True, **kw),
    ],
    ids=["additive", "general"],
)
def test_attention_bf16(make):
    a32, a16 = make(), make(dtype=BF16)
    params = a32.init(jax.random.key(0))
    assert all(d == jnp.float32 for d in dtypes(a16.init(jax.random.key(0))))
    query = jax.random.normal(jax.random.key(1), (2, 4))
    keys = jax.random.normal(jax.random.key(2), (2, 7, 6))
    mask = jr.attention.length_mask(jnp.array([7, 3]), 7)
    c32, w32 = a32.apply(params, query, keys, mask=mask)
    c16, w16 = a16.apply(params, query, keys, mask=mask)
    assert c16.dtype == BF16 and w16.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(c16, np.float32), c32, atol=0.05)
    np.testing.assert_allclose(w16, w32, atol=0.02)
    assert bool(jnp.all(w16[1, 3:] == 0)) and np.allclose(jnp.sum(w16, -1), 1.0, atol=1e-6)


def test_dot_attention_bf16():
    a32, a16 = jr.attention.dot(6, scaled=True), jr.attention.dot(6, scaled=True, dtype=BF16)
    query = jax.random.normal(jax.random.key(1), (2, 6))
    keys = jax.random.normal(jax.random.key(2), (2, 7, 6))
    _, w32 = a32.apply(None, query, keys)
    c16, w16 = a16.apply(None, query, keys)
    assert c16.dtype == BF16 and w16.dtype == jnp.float32
    np.testing.assert_allclose(w16, w32, atol=0.02)


def test_seq2seq_bf16_logits_float32_and_trainable():
    model = jr.seq2seq.encoder_decoder(
        jr.rnn(jr.gru, 8, 16, bidirectional=True, dtype=BF16),
        jr.gru(8 + 32, 16, dtype=BF16),
        src_vocab=11,
        tgt_vocab=11,
        attention=jr.attention.additive(16, 32, 16, dtype=BF16),
        dtype=BF16,
    )
    # init's dtypes (traced only); the values drawn by NumPy (compiling the initialisers costs
    # more than the test).
    assert all(d == jnp.float32 for d in dtypes(jax.eval_shape(model.init, jax.random.key(0))))
    params = numpy_init(model.init, jax.random.key(0))
    src = jax.random.randint(jax.random.key(1), (4, 6), 3, 11)
    tgt = jnp.flip(src, axis=1)
    tgt_in = jr.seq2seq.shift_right(tgt, bos_id=1)

    def loss(p):
        logits = model.apply(p, src, tgt_in).logits
        return jr.losses.softmax_cross_entropy(logits, tgt, reduction="mean")

    # The forward pass, the gradients and decoding in one compiled program (eagerly, every
    # scan, decoding loop and new-shape op would compile on its own).
    @jax.jit
    def run(params):
        out = model.apply(params, src, tgt_in, src_lengths=jnp.array([6, 6, 4, 1]))
        tokens = jr.seq2seq.generate(model, params, src, bos_id=1, eos_id=2, max_len=5)
        return out, jax.grad(loss)(params), tokens

    out, grads, tokens = run(params)
    assert out.logits.dtype == jnp.float32 and out.weights.dtype == jnp.float32
    assert all(d == jnp.float32 for d in dtypes(grads))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    assert tokens.shape == (4, 5)


def test_flax_linen_and_nnx_modules_keep_the_cells_policy():
    cell = jr.lstm(3, 8, dtype=BF16)
    xs = jax.random.normal(jax.random.key(0), (2, 5, 3))
    linen = jrf.RNN(cell)
    variables = linen.init(jax.random.key(1), xs)
    params = variables["params"]["cell"]
    assert all(d == jnp.float32 for d in dtypes(params))
    ys = linen.apply(variables, xs)
    assert ys.dtype == BF16
    np.testing.assert_array_equal(ys, jr.scan(cell, params, xs)[1])

    module = jrf.nnx.RNN(cell, rngs=nnx.Rngs(0))
    assert all(d == jnp.float32 for d in dtypes(module.get_params()))
    carry, ys = module(xs, return_carry=True)
    assert ys.dtype == BF16 and dtypes(carry) == [jnp.float32] * 2

    class Model(nn.Module):
        @nn.compact
        def __call__(self, xs):
            return nn.Dense(1, dtype=BF16)(jrf.RNN(jr.gru(3, 8, dtype=BF16))(xs))

    v = Model().init(jax.random.key(2), xs)
    assert Model().apply(v, xs).dtype == BF16


def test_train_keeps_float32_master_weights_and_learns():
    cell = jr.lstm(2, 16, dtype=BF16)
    xs = jax.random.normal(jax.random.key(0), (8, 12, 2))
    target = jnp.cumsum(xs[..., :1], axis=1) / 4.0  # running sum of the first input

    def loss_fn(params, carry, batch, key):
        _, ys = jr.scan(cell, params["rnn"], batch["x"])
        pred = ys.astype(jnp.float32) @ params["w"]
        return jnp.mean((pred - batch["y"]) ** 2), carry

    params = {"rnn": cell.init(jax.random.key(1)), "w": jnp.zeros((16, 1))}
    opt = optax.adam(1e-2)
    state = jt.init_state(params, opt, jax.random.key(2))
    step = jt.make_train_step(loss_fn, opt)
    losses = []
    for _ in range(60):
        state, metrics = step(state, {"x": xs, "y": target})
        losses.append(float(metrics["loss"]))
    assert all(d == jnp.float32 for d in dtypes(state.params))
    assert all(d == jnp.float32 for d in dtypes(state.opt_state) if jnp.issubdtype(d, jnp.floating))
    assert losses[-1] < 0.3 * losses[0], losses


def test_char_lm_bf16():
    model = jr.models.char_lm(10, 16, cell="gru", embed_size=8, dtype=BF16)
    params = model.init(jax.random.key(0))
    assert all(d == jnp.float32 for d in dtypes(params))
    ids = jnp.zeros((2, 5), jnp.int32)
    carry, logits = jax.jit(model.apply)(params, model.initial_carry((2,)), ids)
    assert logits.dtype == jnp.float32 and dtypes(carry) == [jnp.float32]
    assert dict(model.config)["dtype"] == BF16
    config = jr.models.CharLMConfig(dtype="bfloat16", hidden_size=8, embed_size=4)
    assert dict(config.model(10).config)["dtype"] == BF16


def test_interop_converts_float32_parameters_of_a_bf16_policy_cell():
    torch = pytest.importorskip("torch")
    net = jr.rnn(jr.lstm, 3, 4, dtype=BF16)
    params = net.init(jax.random.key(0))
    module = jr.interop.to_torch(net, params)
    assert module.weight_ih_l0.dtype == torch.float32
    np.testing.assert_array_equal(
        module.weight_hh_l0.detach().numpy(), np.asarray(params[0].w_hh).T
    )
