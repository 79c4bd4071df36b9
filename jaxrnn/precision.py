r"""The precision policy: in which dtype parameters are stored, matmuls run and state is kept.

Every jaxrnn factory that creates parameters takes Flax's two arguments:

* ``param_dtype`` (default ``float32``): how parameters are stored (and trained: optimizers see
  these "master weights");
* ``dtype`` (default: ``param_dtype``): the dtype of matmul *operands*. Inputs and weights are
  cast to it right before each matmul, which accumulates in float32
  (``preferred_element_type``), so ``dtype=jnp.bfloat16`` runs the matmuls at bf16 speed where
  the hardware has bf16 arithmetic (GPU, TPU, CPUs with ``avx512_bf16``) with float32 sums.

Everything else stays in the *accumulation dtype*, ``promote_types(dtype, float32)`` (float32
for bf16/f16/f32, float64 for float64): biases are added, gate nonlinearities evaluated and the
carry kept there, above all the LSTM cell state :math:`c_t = f_t \odot c_{t-1} + i_t \odot
\tilde c_t`, whose long sums would lose their low bits in bf16 (8 significant bits). Outputs
``y`` leave a cell in ``dtype``.

=========================  ==========  ===================  ===========  ===============
``jr.lstm(I, H, ...)``     params      matmul operands      carry        outputs ``y``
=========================  ==========  ===================  ===========  ===============
(default)                  float32     float32              float32      float32
``dtype=jnp.bfloat16``     float32     bfloat16, f32 sums   float32      bfloat16
``param_dtype=bfloat16``   bfloat16    bfloat16, f32 sums   float32      bfloat16
``param_dtype=float64``    float64     float64              float64      float64
=========================  ==========  ===================  ===========  ===============

>>> import jax.numpy as jnp
>>> from jaxrnn.precision import policy
>>> p = policy(dtype=jnp.bfloat16)
>>> p.param_dtype.name, p.dtype.name, p.accum_dtype.name
('float32', 'bfloat16', 'float32')
>>> p.dot(jnp.ones((2, 3)), jnp.ones((3, 4))).dtype.name  # bf16 operands, float32 sums
'float32'
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Policy", "policy"]


class Policy(NamedTuple):
    """Where each quantity lives; see the module docstring.

    Attributes:
        param_dtype: storage dtype of the parameters.
        dtype: dtype of matmul operands and of a cell's outputs.
        accum_dtype: dtype of matmul results, biases, nonlinearities and the carry.
    """

    param_dtype: np.dtype
    dtype: np.dtype
    accum_dtype: np.dtype

    def dot(self, x: jax.Array, w: jax.Array) -> jax.Array:
        """``x @ w`` with both operands in ``dtype``, summed in ``accum_dtype``.

        ``w`` is a weight matrix ``(K, N)``; ``x`` has any number of leading axes. Its gradient
        with respect to ``w`` is computed in the form XLA:CPU runs fastest (see
        :func:`_weight_dot`).
        """
        return _weight_dot(x.astype(self.dtype), w.astype(self.dtype), self.accum_dtype)

    def einsum(self, spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
        """``jnp.einsum(spec, a, b)`` with both operands in ``dtype``, summed in ``accum_dtype``."""
        return jnp.einsum(
            spec,
            a.astype(self.dtype),
            b.astype(self.dtype),
            preferred_element_type=self.accum_dtype,
        )

    def acc(self, x: Any) -> Any:
        """``x`` (an array or a pytree) in ``accum_dtype``: biases, gains, peepholes."""
        return jax.tree.map(lambda a: jnp.asarray(a).astype(self.accum_dtype), x)

    def out(self, y: jax.Array) -> jax.Array:
        """``y`` in ``dtype``: what a cell or layer hands to the next one."""
        return y.astype(self.dtype)

    def config(self) -> tuple[tuple[str, Any], ...]:
        """The ``(name, value)`` pairs a factory records in its ``config``."""
        return (("param_dtype", self.param_dtype), ("dtype", self.dtype))


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _weight_dot(x: jax.Array, w: jax.Array, accum_dtype: np.dtype) -> jax.Array:
    """``x @ w`` summed in ``accum_dtype``, differentiated with a physically transposed ``x``.

    The gradient of ``x @ w`` with respect to the weight, ``x^T g``, contracts over the batch,
    the leading axis of both operands. XLA:CPU hands that "transposed-LHS" form to a generic
    GEMM (Eigen) instead of the fast YNNPACK kernel it uses for ``x @ w``; inside a recurrent
    backward loop, where the weight gradient of every step is one such small GEMM, that costs
    much of a training step. Giving the transposed rule ``x^T`` as a materialised array
    (an ``optimization_barrier`` keeps XLA from folding the transpose back into the dot) turns
    it into a standard-form GEMM, which makes the LSTM training step faster on the CPU
    (benchmarks/README.md, "The weight gradient's GEMM", has the measurement). Values and
    gradients are those of ``x @ w``. Accelerators fold transposes into their GEMMs for free,
    so the barrier is used on the CPU only.
    """
    return jnp.matmul(x, w, preferred_element_type=accum_dtype)


@_weight_dot.defjvp
def _weight_dot_jvp(accum_dtype, primals, tangents):
    x, w = primals
    tx, tw = tangents
    out = jnp.matmul(x, w, preferred_element_type=accum_dtype)
    dx = jnp.matmul(tx, w, preferred_element_type=accum_dtype)
    if x.ndim > 2 and _sharded(x):
        # (T, B@data, K) cannot merge its axes under an explicit mesh: no barrier there
        return out, dx + jnp.matmul(x, tw, preferred_element_type=accum_dtype)
    rows = x.reshape(-1, x.shape[-1])  # (M, K): every leading axis is a batch axis
    if jax.default_backend() == "cpu":
        rows = jax.lax.optimization_barrier(rows.T).T  # x^T materialised for the transpose
    dw = jnp.matmul(rows, tw, preferred_element_type=accum_dtype).reshape(out.shape)
    return out, dx + dw


def _sharded(x: jax.Array) -> bool:
    """Whether ``x``'s type splits one of its axes over a mesh axis (explicit meshes)."""
    spec = getattr(getattr(jax.typeof(x), "sharding", None), "spec", None)
    return spec is not None and any(p is not None for p in spec)


def policy(param_dtype: Any = jnp.float32, dtype: Any = None) -> Policy:
    """The :class:`Policy` of ``param_dtype`` and ``dtype`` (default: ``param_dtype``).

    Raises:
        TypeError: if either is not a floating-point dtype (``jnp.float32``, ``"bfloat16"``,
            ...).
    """
    param_dtype = _float_dtype("param_dtype", param_dtype)
    dtype = param_dtype if dtype is None else _float_dtype("dtype", dtype)
    # Sums in float32, or in float64 when the operands are float64 (promote_types(dtype, f32),
    # spelled out: jnp.promote_types refuses mixed widths under strict dtype promotion).
    accum_dtype = np.dtype(np.float64) if dtype.itemsize > 4 else np.dtype(np.float32)
    return Policy(param_dtype, dtype, accum_dtype)


def _float_dtype(name: str, value: Any) -> np.dtype:
    try:
        dt = jnp.dtype(value)
    except TypeError:
        dt = None
    if dt is None or not jnp.issubdtype(dt, jnp.floating):
        raise TypeError(
            f"{name}: expected a floating-point dtype (e.g. jnp.bfloat16), got {value!r}"
        )
    return dt
