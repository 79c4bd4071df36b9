"""Bad input fails early with an error that names the argument and the expected vs actual value.

Every :func:`jaxrnn.scan` check runs at trace time, so each is exercised both eagerly and under
``jax.jit`` (where the wrong shapes and dtypes are abstract). The regexes pin the argument name
and the numbers, not the rest of the wording.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn as jr

# Input size, hidden size, batch, time steps.
I, H, B, T = 3, 4, 2, 5  # noqa: E741


def zeros_params(cell):
    """Zero params of the cell's layout (the checks under test never look at their values)."""
    shapes = jax.eval_shape(cell.init, jax.random.key(0))
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


LSTM = jr.lstm(I, H)
LSTM_PARAMS = zeros_params(LSTM)
RNN = jr.simple_rnn(I, H)
RNN_PARAMS = zeros_params(RNN)
XS = np.ones((B, T, I), np.float32)


def run_eager(fn, *args):
    return fn(*args)


def run_jit(fn, *args):
    return jax.jit(fn)(*args)


modes = pytest.mark.parametrize("run", [run_eager, run_jit], ids=["eager", "jit"])


def scan_lstm(**kwargs):
    """``(xs, carry, lengths) -> scan(...)`` with the LSTM and fixed keyword options."""
    return lambda xs, carry=None, lengths=None: jr.scan(
        LSTM, LSTM_PARAMS, xs, carry, lengths=lengths, **kwargs
    )


# --------------------------------------------------------------------------------------------
# xs


@modes
def test_wrong_feature_size(run):
    with pytest.raises(ValueError, match=r"^xs: .*feature size.*\b3\b.*got 6\b.*\(2, 5, 6\)"):
        run(scan_lstm(), np.ones((B, T, 6), np.float32))


@modes
def test_wrong_feature_size_time_major(run):
    with pytest.raises(ValueError, match=r"^xs: .*feature size.*\b3\b.*got 2\b"):
        run(scan_lstm(time_major=True), np.ones((T, B, 2), np.float32))


@modes
@pytest.mark.parametrize("shape", [(I,), ()], ids=str)
def test_xs_rank_below_two(run, shape):
    with pytest.raises(
        ValueError, match=r"^xs: expected at least 2 dims.*got shape " + re.escape(str(shape))
    ):
        run(scan_lstm(), np.ones(shape, np.float32))


def test_layer_reports_feature_size_of_xs():
    net = jr.rnn(jr.gru, I, H, num_layers=2, bidirectional=True)
    params = zeros_params(net)
    with pytest.raises(ValueError, match=r"^xs: .*feature size.*\b3\b.*got 7\b"):
        net.apply(params, np.ones((B, T, 7), np.float32))


def test_cell_apply_reports_feature_size_of_x():
    with pytest.raises(ValueError, match=r"^x: .*feature size.*\b3\b.*got 5\b"):
        RNN.apply(RNN_PARAMS, jnp.zeros(H), jnp.ones(5))


# --------------------------------------------------------------------------------------------
# carry


@modes
def test_carry_batch_shape_differs_from_xs(run):
    carry = LSTM.initial_carry((B + 1,))
    with pytest.raises(ValueError, match=r"^carry\.h: expected shape \(2, 4\).*got \(3, 4\)"):
        run(scan_lstm(), XS, carry)


@modes
def test_carry_batch_shape_time_major(run):
    """With time_major the batch shape is xs.shape[1:-1]; a batch-major carry is rejected."""
    carry = LSTM.initial_carry((T,))
    xs_tm = np.ones((T, B, I), np.float32)
    with pytest.raises(ValueError, match=r"^carry\.h: expected shape \(2, 4\).*got \(5, 4\)"):
        run(scan_lstm(time_major=True), xs_tm, carry)


@modes
def test_carry_missing_batch_dims(run):
    fn = lambda xs, carry: jr.scan(RNN, RNN_PARAMS, xs, carry)
    with pytest.raises(ValueError, match=r"^carry: expected shape \(2, 4\).*got \(4,\)"):
        run(fn, XS, np.zeros(H, np.float32))


@modes
def test_carry_wrong_state_size(run):
    carry = jr.LSTMCarry(np.zeros((B, H), np.float32), np.zeros((B, H + 1), np.float32))
    with pytest.raises(ValueError, match=r"^carry\.c: expected shape \(2, 4\).*got \(2, 5\)"):
        run(scan_lstm(), XS, carry)


@modes
@pytest.mark.parametrize(
    "carry",
    [
        np.zeros((B, H), np.float32),  # an array where an LSTMCarry is expected
        (np.zeros((B, H), np.float32),) * 2,  # a bare tuple
        jr.LSTMCarry(np.zeros((B, H), np.float32), None),  # a missing leaf
    ],
    ids=["array", "tuple", "missing-leaf"],
)
def test_carry_wrong_structure(run, carry):
    with pytest.raises(TypeError, match=r"^carry: expected a pytree of structure.*LSTMCarry"):
        run(scan_lstm(), XS, carry)


@modes
def test_carry_wrong_dtype(run):
    carry = LSTM.initial_carry((B,), jnp.float16)
    with pytest.raises(TypeError, match=r"^carry\.h: expected dtype float32, got float16"):
        run(scan_lstm(), XS, carry)


def test_stack_carry_and_params_entries():
    net = jr.rnn(jr.lstm, I, H, num_layers=2)
    params = zeros_params(net)
    with pytest.raises(ValueError, match=r"^params: expected 2 layer entries, got 1"):
        net.apply(params[:1], XS)
    with pytest.raises(ValueError, match=r"^carry: expected 2 layer entries, got 1"):
        net.apply(params, XS, net.initial_carry((B,))[:1])


def test_bidirectional_carry_must_be_bidirectional():
    bi = jr.bidirectional(jr.gru(I, H))
    carry = tuple(bi.initial_carry((B,)))
    with pytest.raises(TypeError, match=r"^carry: expected jr.Bidirectional.*got tuple"):
        bi.apply(zeros_params(bi), XS, carry)
    with pytest.raises(TypeError, match=r"^params: expected jr.Bidirectional.*got tuple"):
        bi.apply(tuple(zeros_params(bi)), XS)


# --------------------------------------------------------------------------------------------
# lengths


@modes
@pytest.mark.parametrize(
    ("lengths", "dtype"),
    [(np.array([1.0, 2.0], np.float32), "float32"), (np.array([True, False]), "bool")],
    ids=["float", "bool"],
)
def test_lengths_must_be_integer(run, lengths, dtype):
    with pytest.raises(TypeError, match=rf"^lengths: expected an integer array, got dtype {dtype}"):
        run(scan_lstm(), XS, None, lengths)


def test_lengths_python_floats_rejected():
    with pytest.raises(TypeError, match=r"^lengths: .*integer.*float64"):
        scan_lstm()(XS, None, [1.5, 2.0])


@modes
@pytest.mark.parametrize(
    ("lengths", "shape"),
    [(np.array([1, 2, 3]), (3,)), (np.array(2), ()), (np.array([[1, 2]]), (1, 2))],
    ids=["too-long", "scalar", "extra-dim"],
)
def test_lengths_wrong_shape(run, lengths, shape):
    expected = re.escape(f"expected shape {(B,)}") + r".*got " + re.escape(str(shape))
    with pytest.raises(ValueError, match=r"^lengths: " + expected):
        run(scan_lstm(), XS, None, lengths)


@pytest.mark.parametrize(
    ("lengths", "low", "high"),
    [([-1, 2], -1, 2), ([1, T + 1], 1, 6), ([-3, 9], -3, 9)],
    ids=["negative", "above-T", "both"],
)
@pytest.mark.parametrize("run", ["eager", "jit-closed-over"])
def test_concrete_lengths_out_of_range(lengths, low, high, run):
    """Concrete lengths (also constants closed over by a jitted function) are range-checked."""
    lengths = np.array(lengths, np.int32)
    pattern = r"^lengths: .*\[0, 5\].*got values in " + re.escape(f"[{low}, {high}]")
    with pytest.raises(ValueError, match=pattern):
        if run == "eager":
            scan_lstm()(XS, None, lengths)
        else:
            jax.jit(lambda xs: scan_lstm()(xs, None, lengths))(XS)


# --------------------------------------------------------------------------------------------
# Construction: layers and factories.


def test_stack_mismatched_layer_sizes():
    layers = [jr.layer(jr.gru(I, H)), jr.layer(jr.gru(H + 1, 2))]
    with pytest.raises(ValueError, match=r"^stack: layer 0 outputs 4 .*layer 1 .*input_size 5"):
        jr.stack(layers)


def test_stack_needs_a_layer():
    with pytest.raises(ValueError, match=r"^stack: expected at least one layer"):
        jr.stack([])


def test_bidirectional_mismatched_input_sizes():
    with pytest.raises(ValueError, match=r"^bidirectional: .*input size, got 3 and 2"):
        jr.bidirectional(jr.gru(I, H), jr.gru(2, H))


@pytest.mark.parametrize("p", [1.0, 1.5, -0.1, float("nan")])
def test_dropout_out_of_range(p):
    pattern = r"^dropout: expected a probability in \[0, 1\), got " + re.escape(str(p))
    with pytest.raises(ValueError, match=pattern):
        jr.stack([jr.layer(jr.gru(I, H)), jr.layer(jr.gru(H, H))], dropout=p)
    with pytest.raises(ValueError, match=pattern):
        jr.rnn(jr.gru, I, H, num_layers=2, dropout=p)


@pytest.mark.parametrize(
    ("make", "name", "bad"),
    [
        (lambda: jr.simple_rnn(0, H), "input_size", "0"),
        (lambda: jr.simple_rnn(I, -2), "hidden_size", "-2"),
        (lambda: jr.gru(2.5, H), "input_size", "2.5"),
        (lambda: jr.gru(I, True), "hidden_size", "True"),
        (lambda: jr.lstm(I, 0), "hidden_size", "0"),
        (lambda: jr.lstm(I, H, proj_size=0), "proj_size", "0"),
        (lambda: jr.lstm(I, H, proj_size=1.0), "proj_size", "1.0"),
        (lambda: jr.jordan_rnn(I, H, 0), "output_size", "0"),
        (lambda: jr.jordan_rnn(I, "4", 2), "hidden_size", "'4'"),
        (lambda: jr.rnn(jr.gru, I, H, num_layers=0), "num_layers", "0"),
        (lambda: jr.rnn(jr.gru, I, H, num_layers=2.0), "num_layers", "2.0"),
        (lambda: jr.rnn(jr.lstm, 0, H), "input_size", "0"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_factory_sizes(make, name, bad):
    with pytest.raises(ValueError, match=rf"^{name} must be a positive int, got {re.escape(bad)}$"):
        make()


# --------------------------------------------------------------------------------------------
# remat


@pytest.mark.parametrize("remat", ["yes", "SQRT", "sqrt ", ("sqrt", 4), 1, None])
def test_remat_must_be_bool_sqrt_or_policy(remat):
    with pytest.raises(
        TypeError,
        match=rf'^remat: expected False, True, "sqrt" or a jax.checkpoint policy, got '
        rf"{re.escape(repr(remat))}$",
    ):
        scan_lstm(remat=remat)(XS)


# --------------------------------------------------------------------------------------------
# params: every built-in cell's params are checked by jr.scan, with the LSTM's message

# One cell of every factory of jaxrnn.cells, and an input sequence of its layout.
EVERY_CELL = {
    "simple_rnn": jr.simple_rnn(I, H),
    "jordan_rnn": jr.jordan_rnn(I, H, 2),
    "gru": jr.gru(I, H),
    "lstm": jr.lstm(I, H, peephole=True),
    "mgu": jr.mgu(I, H),
    "layer_norm_lstm": jr.layer_norm_lstm(I, H),
    "layer_norm_gru": jr.layer_norm_gru(I, H),
    "conv_lstm": jr.conv_lstm(I, H, (3,)),
    "conv_gru": jr.conv_gru(I, H, (3,)),
    "slstm": jr.slstm(I, H, num_heads=2),
    "min_gru": jr.min_gru(I, H),
    "min_lstm": jr.min_lstm(I, H),
    "lru": jr.lru(I, H),
    "rg_lru": jr.rg_lru(I, H),
    "learnable_carry": jr.learnable_carry(jr.gru(I, H)),
}


def _cell_xs(cell):
    spatial = (5,) * cell.spatial_dims  # a convolutional cell's feature maps
    return np.ones((B, T, *spatial, I), np.float32)


def _first_array(params):
    """Path and value of the first array leaf of ``params`` (the field the error must name)."""
    return jax.tree_util.tree_flatten_with_path(params)[0][0]


@pytest.mark.parametrize("name", sorted(EVERY_CELL))
def test_every_cell_checks_param_shapes(name):
    cell = EVERY_CELL[name]
    params = zeros_params(cell)
    path, leaf = _first_array(params)
    bad_shape = (*leaf.shape[:-1], leaf.shape[-1] + 1)
    bad = jax.tree_util.tree_map_with_path(
        lambda p, v: jnp.zeros(bad_shape, v.dtype) if p == path else v, params
    )
    field = re.escape("params" + jax.tree_util.keystr(path))
    wanted = rf"^{field}: expected shape {re.escape(str(leaf.shape))} .*{name} cell.*got "
    wanted += re.escape(str(bad_shape))
    xs = _cell_xs(cell)
    for run in (run_eager, run_jit):  # at trace time: the same error under jit
        with pytest.raises(ValueError, match=wanted):
            run(lambda p, x: jr.scan(cell, p, x), bad, xs)


@pytest.mark.parametrize("name", sorted(EVERY_CELL))
def test_every_cell_checks_param_dtypes_and_type(name):
    cell = EVERY_CELL[name]
    params = zeros_params(cell)
    path, leaf = _first_array(params)
    half = jax.tree_util.tree_map_with_path(
        lambda p, v: v.astype(jnp.float16) if p == path else v, params
    )
    field = re.escape("params" + jax.tree_util.keystr(path))
    with pytest.raises(TypeError, match=rf"^{field}: expected dtype {leaf.dtype}\b.*got float16"):
        jr.scan(cell, half, _cell_xs(cell))
    with pytest.raises(TypeError, match=rf"^params: expected {type(params).__name__} .*{name}"):
        jr.scan(cell, LSTM_PARAMS if name != "lstm" else RNN_PARAMS, _cell_xs(cell))
