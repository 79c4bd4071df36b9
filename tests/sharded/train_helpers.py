"""Helpers of the 8-device tests of ``jr.train``: a small character-level LM and its runs."""

import os

import jax
import numpy as np
import pytest

import jaxrnn.models as jm
import jaxrnn.train as jt
from jaxrnn import data

#: The CLI's default cell.
CELL = "lstm"
TEXT = "to be, or not to be, that is the question: " * 6


@pytest.fixture(scope="module")
def lm():
    """``(model, batches, optimizer, fresh)``: ``fresh()`` is a new step-0 state."""
    vocab = data.Vocab.from_text(TEXT)
    model = jm.char_lm(vocab.size, 16, cell=CELL, embed_size=8, dropout=0.1)
    batches = data.TextBatches(vocab.encode(TEXT), 8, 10, seed=0)
    opt = jt.default_optimizer(1e-2, 4, warmup_steps=1)

    def fresh():
        params = model.init(jax.random.key(0))
        return jt.init_state(params, opt, jax.random.key(1), model.initial_carry((8,)))

    return model, batches, opt, fresh


def train_step(lm, mesh, traces=None):
    """The LM's compiled train step for ``mesh`` (``None``: one device); every time the step
    is traced (so compiled) appends to the list ``traces`` when one is given."""
    model, _, opt, _ = lm
    loss = jm.lm_loss(model)

    def counted(*args):
        if traces is not None:
            traces.append(jax.tree.map(jax.typeof, args))
        return loss(*args)

    return jt.make_train_step(counted, opt, mesh=mesh)


def fit(lm, mesh, steps, *, state=None, step=None, checkpoints=None):
    """``jt.fit`` of the LM from ``state`` (default a fresh one) to ``steps``, on ``mesh``."""
    step = train_step(lm, mesh) if step is None else step
    state = lm[3]() if state is None else state
    return jt.fit(state, step, lm[1], steps, mesh=mesh, checkpoints=checkpoints, progress=False)


def report(name, losses, ref_losses, params, ref_params):
    """With ``JAXRNN_SHOW_DIFF=1`` (and ``-s``): the largest absolute differences against one
    device, of the losses and of the final parameters."""
    if os.environ.get("JAXRNN_SHOW_DIFF"):
        loss = float(np.max(np.abs(np.asarray(losses) - np.asarray(ref_losses))))
        param = max(
            float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
            for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params), strict=True)
        )
        print(f"\nDIFF {name}: loss {loss:.3g} params {param:.3g}")
