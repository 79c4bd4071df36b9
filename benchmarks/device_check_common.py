"""What every part of the GPU check (``device_check.py``) shares.

Table rows (:func:`row`), errors as rows (:func:`error_text`, :func:`guarded`), the time budget
(:class:`Deadline`), the tolerances, and the comparison of two results (:func:`rel_err`).
Imported by ``device_check.py`` after it has set up JAX's environment and started its backend,
so that PyTorch (imported here through ``peers``) loads its CUDA libraries after JAX's.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable

import jax
import numpy as np
import peers

torch = peers.torch  # None when PyTorch cannot be imported

# max|got - ref| / max(1, max|ref|) allowed, (values, gradients), per comparison.
TOLERANCE = {
    "highest": (2e-5, 1e-4),  # float32 matmuls on both paths
    "default": (2e-2, 5e-2),  # TF32 allowed on both paths (cuDNN and XLA)
    "bf16": (5e-2, 1e-1),  # the bf16 policy against float32
    "method": (1e-3, 1e-3),  # associative / Newton against sequential
}
NO_GPU = "skipped: no GPU"


# --------------------------------------------------------------------------------------------
# Rows and the time budget.


def row(part: str, check: str, result: str = "", status: str = "ok", **data) -> dict:
    """One line of the table (and of the JSON): what was checked, what came out, the verdict.

    Printed as it is made, so that a run cut short still shows how far it got.
    """
    print(f"  {part} | {check}: {result} [{status}]", flush=True)
    return {"part": part, "check": check, "result": result, "status": status, **data}


def error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]


class Deadline:
    """A point in time; :meth:`share` hands out a fraction of what is left before it.

    ``measured`` is set by :func:`time_tasks`: ``(compile_s, call_s)``, the seconds its first
    calls took and those of one call of every task, from which the next group is predicted.
    """

    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds
        self.measured: tuple[float, float] | None = None

    def left(self) -> float:
        return self.end - time.perf_counter()

    def share(self, fraction: float) -> Deadline:
        return Deadline(max(0.0, self.left()) * min(1.0, fraction))


def guarded(part: str, check: str, fn: Callable[..., dict], *args) -> dict:
    """``fn(*args)``, or an ``error`` row naming the exception."""
    try:
        return fn(*args)
    except Exception as err:  # a failing check is a row; the rest runs on
        traceback.print_exc()
        return row(part, check, error_text(err), "error")


# --------------------------------------------------------------------------------------------
# Comparing results (JAX arrays or torch tensors).


def to_numpy(a) -> np.ndarray:
    """A JAX array or a (CPU or CUDA) torch tensor as a float32 NumPy array."""
    if torch is not None and isinstance(a, torch.Tensor):
        a = a.detach().float().cpu().numpy()
    return np.asarray(a, np.float32)


def rel_err(got, ref) -> float:
    """Worst leaf's ``max|got - ref| / max(1, max|ref|)``, in float32."""
    worst = 0.0
    is_leaf = lambda x: torch is not None and isinstance(x, torch.Tensor)
    leaves = lambda tree: jax.tree.leaves(tree, is_leaf=is_leaf)
    for a, b in zip(leaves(got), leaves(ref), strict=True):
        a, b = to_numpy(a), to_numpy(b)
        worst = max(worst, float(np.max(np.abs(a - b), initial=0.0) / max(1.0, np.max(np.abs(b)))))
    return worst
