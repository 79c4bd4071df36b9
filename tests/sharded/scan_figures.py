"""Prints the largest differences against one device of the batch-sharded scan families of
test_scan_sharded.py and test_kernels_sharded.py (values and gradients), for the closing note:

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/sharded/scan_figures.py
"""

import os
import sys


def _largest(a, b):
    import jax
    import numpy as np

    return max(
        float(np.max(np.abs(np.asarray(x, np.float32) - np.asarray(y, np.float32))))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def main():
    import jax
    import jax.numpy as jnp
    import test_kernels_sharded as kernels
    import test_scan_sharded as scans
    from jax.sharding import AxisType
    from sharding_helpers import put

    mesh = jax.make_mesh((8,), ("data",))
    auto = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
    xs = jax.random.normal(jax.random.key(1), (8, 6, 3))
    lengths = jnp.array([6, 0, 3, 6, 1, 5, 6, 2])
    worst = {"explicit": 0.0, "explicit+set_mesh": 0.0, "auto": 0.0}
    for make in scans.CELLS.values():
        cell = make()
        params = cell.init(jax.random.key(0))
        f = scans._loss(cell, kernel=False)
        one = f(params, xs, lengths)
        for how, m in (("explicit", mesh), ("auto", auto)):
            got = f(params, put(xs, m, "data"), put(lengths, m, "data"))
            worst[how] = max(worst[how], _largest(got, one))
        with jax.set_mesh(mesh):
            got = f(params, put(xs, mesh, "data"), put(lengths, mesh, "data"))
        worst["explicit+set_mesh"] = max(worst["explicit+set_mesh"], _largest(got, one))
    print(f"sequential scan, {len(scans.CELLS)} cells:", {k: f"{v:.2e}" for k, v in worst.items()})

    grid = jax.make_mesh((2, 4), ("data", "model"))
    split = 0.0
    for make in scans.MODEL_CELLS.values():
        cell = make()
        params = cell.init(jax.random.key(0))
        f = scans._loss(cell)
        on_grid = jax.tree.map(
            lambda w: (
                put(w, grid)
                if w.ndim == 0 or w.shape[-1] % 4
                else put(w, grid, *[None] * (w.ndim - 1), "model")
            ),
            params,
        )
        got = f(on_grid, put(xs, grid, "data"), put(lengths, grid, "data"))
        split = max(split, _largest(got, f(params, xs, lengths)))
    print("weights split over model:", f"{split:.2e}")

    rows = jax.random.normal(jax.random.key(1), (16, 6, 3))
    worst = {"f32": 0.0, "bf16": 0.0}
    for name, make in kernels.CELLS.items():
        cell = make()
        params = cell.init(jax.random.key(0))
        want = kernels._step(cell, False)(params, rows, kernels.LENGTHS)
        sharded = (put(rows, mesh, "data"), put(kernels.LENGTHS, mesh, "data"))
        got = kernels._step(cell, True)(params, *sharded)
        kind = "bf16" if name.endswith("bf16") else "f32"
        worst[kind] = max(worst[kind], _largest(got, want))
    print(
        "kernels per shard vs the one-device XLA path:", {k: f"{v:.2e}" for k, v in worst.items()}
    )


if __name__ == "__main__":
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
