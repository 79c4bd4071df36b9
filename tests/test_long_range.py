"""The long-range model and training loop (jaxrnn.models.long_range), and the Flax wrappers
running the new cells.

References: the model's forward pass against the same blocks composed by hand (dense input,
float64 NumPy layer norm, ``jr.scan`` of an independently built cell, dense head); the
memoryless baselines against their formulas; ``method="associative"`` against
``"sequential"`` for the linear cells. Training is checked only for finiteness and progress on
an easy configuration (no timings).
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn as jr
from jaxrnn.models import long_range as lr

H = 4


def layer_norm64(x, scale, bias, eps=lr._LN_EPS):
    x = np.asarray(x, np.float64)
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * np.asarray(scale) + np.asarray(bias)


def reference(task, cell, params, xs):
    """The model of the module docstring, composed by hand."""
    p = jax.tree.map(np.asarray, params)
    if task == "adding":
        u = np.asarray(xs, np.float64) @ p["w_in"] + p["b_in"]
    else:
        u = np.eye(p["w_in"].shape[0])[np.asarray(xs)] @ p["w_in"] + p["b_in"]
    for block in params["blocks"]:
        normed = layer_norm64(u, block["scale"], block["bias"]).astype(np.float32)
        ys = jax.jit(lambda p, x: jr.scan(cell, p, x)[1])(block["cell"], normed)
        u = u + np.asarray(ys, np.float64)
    if task == "adding":
        u = u[:, -1]
    out = u @ p["w_out"] + p["b_out"]
    return out[:, 0] if task == "adding" else out


@pytest.mark.parametrize(
    "task,cell,factory",
    [("adding", "gru", jr.gru), ("copy", "lru", jr.lru), ("char", "slstm", None)],
)
def test_forward_is_the_hand_composed_model(task, cell, factory):
    if factory is None:
        factory = lr.LONG_RANGE_CELLS[cell]
    length = 3
    layers = 2 if task == "adding" else 1
    model = lr.long_range_model(task, cell, H, num_layers=layers, length=length)
    params = jax.jit(model.init)(jax.random.key(0))
    # perturb the layer norms away from the identity affine map
    for i, block in enumerate(params["blocks"]):
        block["scale"] = block["scale"] * (1.5 + i)
        block["bias"] = block["bias"] + 0.1
    xs, ys = model.batch(jax.random.key(1), 2)
    got = jax.jit(model.apply)(params, xs)
    want = reference(task, factory(H, H), params, xs)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

    loss, metric = jax.jit(model.loss)(params, xs, ys)
    if task == "adding":
        np.testing.assert_allclose(loss, np.mean((want - np.asarray(ys)) ** 2), rtol=1e-5)
        assert float(metric) == float(loss)
    else:
        logits = want - want.max(-1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        ce = -np.take_along_axis(logp, np.asarray(ys)[..., None], -1).mean()
        np.testing.assert_allclose(loss, ce, rtol=1e-5)
        if task == "char":
            np.testing.assert_allclose(metric, ce / math.log(2), rtol=1e-5)
            assert xs.shape == ys.shape == (2, length)
        else:
            acc = (want.argmax(-1) == np.asarray(ys))[:, -lr.COPY_LENGTH :].mean()
            np.testing.assert_allclose(metric, acc)


def test_baselines():
    assert lr.long_range_model("adding", "gru", H, length=5).baseline == pytest.approx(1 / 6)
    copy = lr.long_range_model("copy", "gru", H, length=100).baseline
    assert copy == pytest.approx(10 * math.log(8) / 120)
    vocab, train_ids, val_ids, entropy = lr._char_data()
    p = np.bincount(train_ids, minlength=vocab.size) / train_ids.size
    p = p[p > 0]
    assert lr.long_range_model("char", "gru", H, length=5).baseline == -(p * np.log(p)).sum()
    assert 0 < entropy < math.log(vocab.size) and val_ids.size > 0


@pytest.mark.parametrize("cell", list(lr.LONG_RANGE_CELLS))
def test_every_cell_trains(cell):
    config = lr.LongRangeConfig(
        task="adding",
        length=3,
        cell=cell,
        hidden_size=8,
        batch_size=32,
        steps=10,
        eval_every=1,
        eval_size=64,
        learning_rate=2e-2,
    )
    result = lr.train_long_range(config)
    assert result.steps == list(range(1, 11))
    assert np.isfinite(result.train_loss).all() and np.isfinite(result.eval_loss).all()
    assert result.eval_loss[-1] < 0.7 * result.eval_loss[0], result.eval_loss
    assert result.eval_metric == result.eval_loss  # the adding problem's metric is its MSE
    pairs = zip(result.steps, result.eval_metric, strict=True)
    solved = [s for s, m in pairs if m < lr.ADDING_SOLVED_MSE]
    assert result.solved_at == (solved[0] if solved else None)
    assert result.seconds > 0 and result.baseline == pytest.approx(1 / 6)


@pytest.mark.parametrize(
    "task,cell",
    [("adding", "min_lstm"), ("copy", "lru")],  # every linear cell: tests/test_linear.py
)
def test_associative_is_sequential_for_the_linear_cells(task, cell):
    seq = lr.long_range_model(task, cell, H, length=6)
    par = lr.long_range_model(task, cell, H, length=6, method="associative")
    params = jax.jit(seq.init)(jax.random.key(2))
    batch = seq.batch(jax.random.key(3), 2)
    (l_seq, m_seq), g_seq = jax.jit(jax.value_and_grad(seq.loss, has_aux=True))(params, *batch)
    (l_par, m_par), g_par = jax.jit(jax.value_and_grad(par.loss, has_aux=True))(params, *batch)
    np.testing.assert_allclose(l_par, l_seq, rtol=1e-5)
    np.testing.assert_allclose(m_par, m_seq, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g_par), jax.tree.leaves(g_seq), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"task": "copying"}, r"task: expected one of 'adding', 'copy', 'char', got 'copying'"),
        ({"cell": "transformer"}, r"cell: expected one of \[.*'gru'.*\], got 'transformer'"),
        ({"method": "parallel"}, r"method: expected one of 'sequential'.*got 'parallel'"),
        ({"method": "associative"}, r"method: \"associative\" needs a linear.*got cell='gru'"),
        ({"hidden_size": 0}, r"hidden_size"),
        ({"num_layers": 0}, r"num_layers"),
        ({"length": 1}, r"length must be an int >= 2"),
        ({"steps": 0}, r"steps must be an int >= 1"),
        ({"eval_every": 0}, r"eval_every must be an int >= 1"),
        ({"batch_size": 0}, r"batch_size"),
        ({"learning_rate": 0.0}, r"learning_rate"),
    ],
)
def test_bad_config_is_a_value_error_naming_the_field(kwargs, match):
    config = lr.LongRangeConfig(cell="gru", length=4, hidden_size=H, steps=1)._replace(**kwargs)
    with pytest.raises(ValueError, match=match):
        lr.train_long_range(config)


def test_config_must_be_a_long_range_config():
    with pytest.raises(TypeError, match="config: expected a LongRangeConfig, got dict"):
        lr.train_long_range({"task": "adding"})


def test_newton_method_is_accepted():
    model = lr.long_range_model("adding", "gru", H, length=5, method=jr.Newton(jacobian="full"))
    ref = lr.long_range_model("adding", "gru", H, length=5)
    params = jax.jit(ref.init)(jax.random.key(4))
    xs, _ = ref.batch(jax.random.key(5), 2)
    got, want = jax.jit(model.apply)(params, xs), jax.jit(ref.apply)(params, xs)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_flax_modules_run_the_new_cells():
    import flax.nnx as nnx

    import jaxrnn.flax as jrf
    import jaxrnn.flax.nnx as jrnnx

    xs = jax.random.normal(jax.random.key(6), (2, 5, 3))
    lengths = jnp.array([5, 3])
    # minGRU/minLSTM with "associative" in both Flax APIs: tests/test_linear.py. Here the
    # complex-valued LRU state and sLSTM's four-part carry.
    cases = [  # (cell, method, also as an nnx module)
        (jr.lru(3, H), "associative", False),
        (jr.slstm(3, H, num_heads=2), "sequential", True),
    ]
    for cell, method, nnx_too in cases:
        linen = jrf.RNN(cell, method=method)
        variables = jax.jit(linen.init)(jax.random.key(0), xs)
        scan = jax.jit(lambda p, cell=cell: jr.scan(cell, p, xs, lengths=lengths)[1])
        want = scan(variables["params"]["cell"])
        got = jax.jit(functools.partial(linen.apply, lengths=lengths))(variables, xs)
        np.testing.assert_allclose(got, want, atol=2e-6)
        if not nnx_too:
            continue
        model = jrnnx.RNN(cell, method=method, rngs=nnx.Rngs(0))
        got = nnx.jit(lambda m: m(xs, lengths=lengths))(model)
        np.testing.assert_allclose(got, scan(model.get_params()), atol=2e-6)
