"""Per-device memory of parameters and optimizer state, replicated or split over ``"model"``.

The table is computed, not measured: the train state of a character-level LSTM
(``jr.models.char_lm``, AdamW from ``jr.train.default_optimizer``) is built abstractly with
``jax.eval_shape`` (nothing is allocated, so 8k hidden units cost nothing), and each array's
bytes on one device follow from its sharding on an abstract mesh of ``--devices`` devices:
``jr.train.state_shardings`` on a ``data_mesh`` (everything replicated) and on a
``model_mesh(model=m)`` (parameters and both Adam moments split ``m`` ways).

``--layouts`` compiles one training step on ``--devices`` virtual CPU devices for three ways to
use them and reports what XLA made of each, from the compiled program: the collectives inside
the time loops (run at every time step) and outside them (once per step), and the per-device
argument and temporary bytes of ``compiled.memory_analysis()`` (their sum bounds the step's
peak):

* ``dp``: ``data_mesh``, parameters replicated (the reference);
* ``fsdp``: parameters and optimizer state split as below at rest, gathered whole for the
  step (a sharding constraint), batch rows over every device;
* ``tp``: ``model_mesh`` as ``jr.train`` uses it (tensor parallelism): parameters and
  optimizer state split along their gate/feature axis over ``"model"``, rows over ``"data"``,
  XLA partitions the computation to match.

Run from the repository root: ``python benchmarks/bench_memory.py`` (the table) and
``python benchmarks/bench_memory.py --layouts`` (compiles; sets ``XLA_FLAGS`` itself).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence

if "--layouts" in sys.argv and "device_count" not in os.environ.get("XLA_FLAGS", ""):
    count = 8
    if "--devices" in sys.argv:
        count = int(sys.argv[sys.argv.index("--devices") + 1])
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={count}"
    ).strip()

import jax
import numpy as np
from jax.sharding import AbstractMesh, NamedSharding

import jaxrnn.models as jm
import jaxrnn.train as jt

MiB = 2**20


def abstract_state(hidden: int, vocab: int = 256, embed: int = 256):
    """The step-0 train state of a char LM, as shapes and dtypes only."""
    model = jm.char_lm(vocab, hidden, cell="lstm", embed_size=embed)
    opt = jt.default_optimizer(1e-3, 1000)

    def build():
        return jt.init_state(model.init(jax.random.key(0)), opt, jax.random.key(1))

    return jax.eval_shape(build)


def per_device_bytes(state, mesh) -> int:
    """Bytes of parameters and optimizer state on one device of ``mesh``."""
    shardings = jt.state_shardings(state, mesh)
    total = 0
    for part in ("params", "opt_state"):
        leaves = jax.tree.leaves(getattr(state, part))
        specs = jax.tree.leaves(getattr(shardings, part))
        for leaf, sharding in zip(leaves, specs, strict=True):
            shard = NamedSharding(mesh, sharding.spec).shard_shape(leaf.shape)
            total += int(np.prod(shard)) * np.dtype(leaf.dtype).itemsize
    return total


def memory_table(hiddens: Sequence[int], devices: int = 8, models: Sequence[int] = (2, 4, 8)):
    """Rows ``{"hidden", "params", "replicated", "model=m", ...}`` (bytes per device)."""
    rows = []
    for hidden in hiddens:
        state = abstract_state(hidden)
        row = {
            "hidden": hidden,
            "params": sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params)),
            "replicated": per_device_bytes(state, AbstractMesh((devices,), ("data",))),
        }
        for m in models:
            mesh = AbstractMesh((devices // m, m), ("data", "model"))
            row[f"model={m}"] = per_device_bytes(state, mesh)
        rows.append(row)
    return rows


def markdown(rows, devices: int) -> str:
    keys = [k for k in rows[0] if k.startswith("model=")]
    head = f"| hidden | parameters | replicated ({devices} devices) | " + " | ".join(keys) + " |"
    lines = [head, "|" + "---|" * (3 + len(keys))]
    for r in rows:
        cells = [f"{r['hidden']:,}", f"{r['params'] / 1e6:,.1f} M", f"{r['replicated'] / MiB:,.0f}"]
        cells += [f"{r[k] / MiB:,.0f}" for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n(MiB per device: float32 parameters and AdamW's two moments)"


# --------------------------------------------------------------------------------------------
# Layouts, compiled.

COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")


def collectives(hlo: str) -> dict[str, int]:
    """``{"in_loops": n, "outside": n}``: collective ops in while bodies and elsewhere."""
    bodies = set(re.findall(r"body=%?([\w.\-]+)", hlo))
    counts, computation = {"in_loops": 0, "outside": 0}, None
    pattern = re.compile(r" (" + "|".join(COLLECTIVES) + r")(-start)?\(")
    for line in hlo.splitlines():
        if line and not line.startswith(" ") and line.rstrip().endswith("{"):
            computation = line.split()[1 if line.startswith("ENTRY") else 0].lstrip("%")
        if pattern.search(line):
            counts["in_loops" if computation in bodies else "outside"] += 1
    return counts


def compile_layouts(hidden: int, batch: int, time: int, model: int) -> dict[str, dict]:
    """Compile one step of each layout; collectives and memory of the compiled programs."""
    from jax.sharding import PartitionSpec

    from jaxrnn import data

    text = "".join(chr(32 + i % 90) for i in range(batch * time * 4))
    vocab = data.Vocab.from_text(text)
    lm = jm.char_lm(vocab.size, hidden, cell="lstm", embed_size=64)
    opt = jt.default_optimizer(1e-3, 100)
    batches = data.TextBatches(vocab.encode(text), batch, time)
    loss = jm.lm_loss(lm)
    state = jt.init_state(
        lm.init(jax.random.key(0)), opt, jax.random.key(1), lm.initial_carry((batch,))
    )
    results = {}
    for name in ("dp", "fsdp", "tp"):
        mesh = jt.data_mesh() if name == "dp" else jt.model_mesh(model)
        whole = NamedSharding(mesh, PartitionSpec())
        if name == "fsdp":  # gathered whole for the step, rows over every device
            rows = NamedSharding(mesh, PartitionSpec(("data", "model")))

            def step_loss(params, carry, batch, key, mesh_whole=whole):
                params = jax.lax.with_sharding_constraint(params, mesh_whole)
                return loss(params, carry, batch, key)

        else:  # as jr.train compiles it for this mesh
            rows, step_loss = NamedSharding(mesh, PartitionSpec("data")), loss
        shardings = jt.state_shardings(state, mesh)._replace(
            carry=jax.tree.map(lambda _, r=rows: r, state.carry)
        )
        fn = jax.jit(
            jt.make_train_step(step_loss, opt),
            in_shardings=(shardings, rows),
            out_shardings=(shardings, whole),
        )
        compiled = fn.lower(state, batches(0)).compile()
        memory = compiled.memory_analysis()
        results[name] = {
            **collectives(compiled.as_text()),
            "argument_bytes": int(memory.argument_size_in_bytes),
            "temp_bytes": int(memory.temp_size_in_bytes),
        }
    return results


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    p.add_argument("--devices", type=int, default=8, help="devices of the mesh (default 8)")
    p.add_argument("--layouts", action="store_true", help="compile dp, fsdp and tp steps")
    p.add_argument("--layout-hidden", type=int, default=512, help="H of --layouts")
    p.add_argument("--batch", type=int, default=16, help="B of --layouts")
    p.add_argument("--time", type=int, default=32, help="T of --layouts")
    p.add_argument("--model", type=int, default=4, help="model axis of --layouts")
    p.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test")
    args = p.parse_args(argv)
    if args.quick:
        args.hidden, args.layout_hidden, args.batch, args.time = [8, 16], 16, 8, 4
    models = [m for m in (2, 4, 8) if args.devices % m == 0]
    rows = memory_table(args.hidden, args.devices, models)
    print(markdown(rows, args.devices))
    out = {"memory": rows}
    if args.layouts:
        out["layouts"] = compile_layouts(args.layout_hidden, args.batch, args.time, args.model)
        print(
            f"\nlayouts, H={args.layout_hidden}, B={args.batch}, T={args.time}, model={args.model}"
        )
        print("| layout | collectives in time loops | outside | argument MiB | temp MiB |")
        print("|---|---|---|---|---|")
        for name, r in out["layouts"].items():
            print(
                f"| {name} | {r['in_loops']} | {r['outside']} | "
                f"{r['argument_bytes'] / MiB:,.2f} | {r['temp_bytes'] / MiB:,.2f} |"
            )
    return out


if __name__ == "__main__":
    main()
