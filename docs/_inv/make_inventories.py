"""Write the small Sphinx inventories (``objects.inv`` files) that docs/conf.py gives intersphinx.

The documentation links to the Python, JAX, NumPy, Flax, Optax and Orbax docs through
``intersphinx``. Their real inventories live on the web, and the site must build offline and with
warnings as errors (here, in CI and in ``tests/test_docs.py``), so ``conf.py`` points intersphinx
at the files this script writes next to it (``docs/_inv/<name>.inv``) instead of downloading them.
Each lists the external objects that the docstrings and pages actually refer to (roles such as
``:func:`jax.vmap``` and the types in signatures, ``jax.Array``, ``optax.GradientTransformation``),
each at the address its project's documentation gives it (read from that project's Sphinx
sources: ``_autosummary/<name>.html`` pages for JAX, ``generated/<name>.html`` for Optax's
``latest``, one page per module for Flax and Orbax).

To link one more external object: add it to ``INVENTORIES`` below, run
``python docs/_inv/make_inventories.py`` and commit the rewritten ``.inv`` files
(``tests/test_docs.py`` checks that they match this table). ``sphinx-build -n`` (nitpicky) lists
the references that still resolve nowhere.

The files use Sphinx's inventory format version 2: four header lines, then zlib-compressed lines
``name domain:role priority uri display-name`` (``-``: the display name is the name).
"""

from __future__ import annotations

import argparse
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name -> (project, version, base url, [(object name, domain:role, uri relative to the base)]).
# The base urls are repeated in docs/conf.py's intersphinx_mapping.
_PY = "py:class"
_FN = "py:function"
_MOD = "py:module"
_METH = "py:method"
_EXC = "py:exception"
_DATA = "py:data"


_LINEN_LAYERS = "api_reference/flax.linen/layers.html"
_ORBAX_ARGS = ("Composite", "StandardSave", "StandardRestore", "JsonSave", "JsonRestore")


def _jax_summary(*names: str, role: str = _FN) -> list[tuple[str, str, str]]:
    """Objects with their own page under ``_autosummary/`` (JAX's ``autosummary`` tables)."""
    return [(name, role, f"_autosummary/{name}.html") for name in names]


INVENTORIES: dict[str, tuple[str, str, str, list[tuple[str, str, str]]]] = {
    "python": (
        "Python",
        "3",
        "https://docs.python.org/3/",
        [
            ("bool", _PY, "library/functions.html#bool"),
            ("int", _PY, "library/functions.html#int"),
            ("float", _PY, "library/functions.html#float"),
            ("str", _PY, "library/stdtypes.html#str"),
            ("tuple", _PY, "library/stdtypes.html#tuple"),
            ("list", _PY, "library/stdtypes.html#list"),
            ("dict", _PY, "library/stdtypes.html#dict"),
            ("None", _DATA, "library/constants.html#None"),
            ("ArithmeticError", _EXC, "library/exceptions.html#ArithmeticError"),
            ("KeyboardInterrupt", _EXC, "library/exceptions.html#KeyboardInterrupt"),
            ("TypeError", _EXC, "library/exceptions.html#TypeError"),
            ("ValueError", _EXC, "library/exceptions.html#ValueError"),
            *(
                (
                    f"collections.abc.{name}",
                    _PY,
                    f"library/collections.abc.html#collections.abc.{name}",
                )
                for name in ("Callable", "Iterable", "Iterator", "Mapping", "Sequence")
            ),
            ("datetime.date", _PY, "library/datetime.html#datetime.date"),
            ("os.PathLike", _PY, "library/os.html#os.PathLike"),
            ("pathlib.Path", _PY, "library/pathlib.html#pathlib.Path"),
            ("typing.Any", _DATA, "library/typing.html#typing.Any"),
            ("typing.Literal", _DATA, "library/typing.html#typing.Literal"),
            ("typing.NamedTuple", _PY, "library/typing.html#typing.NamedTuple"),
        ],
    ),
    "jax": (
        "JAX",
        "latest",
        "https://docs.jax.dev/en/latest/",
        [
            ("jax.lax", _MOD, "jax.lax.html#module-jax.lax"),
            ("jax.numpy", _MOD, "jax.numpy.html#module-jax.numpy"),
            ("jax.random", _MOD, "jax.random.html#module-jax.random"),
            ("jax.nn.initializers", _MOD, "jax.nn.initializers.html#module-jax.nn.initializers"),
            ("jax.sharding", _MOD, "jax.sharding.html#module-jax.sharding"),
            *_jax_summary("jax.Array", "jax.ShapeDtypeStruct", role=_PY),
            *_jax_summary(
                "jax.jit",
                "jax.grad",
                "jax.value_and_grad",
                "jax.vmap",
                "jax.jvp",
                "jax.checkpoint",
                "jax.eval_shape",
                "jax.make_mesh",
                "jax.custom_batching.sequential_vmap",
                "jax.lax.scan",
                "jax.lax.associative_scan",
                "jax.lax.optimization_barrier",
                "jax.random.key",
                "jax.random.split",
                "jax.nn.initializers.glorot_uniform",
                "jax.nn.initializers.lecun_normal",
                "jax.nn.initializers.orthogonal",
                "jax.nn.initializers.zeros",
            ),
            *_jax_summary("jax.nn.initializers.Initializer", role=_PY),
            ("jax.sharding.Mesh", _PY, "jax.sharding.html#jax.sharding.Mesh"),
            ("jax.sharding.NamedSharding", _PY, "jax.sharding.html#jax.sharding.NamedSharding"),
            ("jax.sharding.PartitionSpec", _PY, "jax.sharding.html#jax.sharding.PartitionSpec"),
            # jax.P is jax.sharding.PartitionSpec under a short name.
            ("jax.P", _PY, "jax.sharding.html#jax.sharding.PartitionSpec"),
        ],
    ),
    "numpy": (
        "NumPy",
        "stable",
        "https://numpy.org/doc/stable/",
        [
            ("numpy.ndarray", _PY, "reference/generated/numpy.ndarray.html#numpy.ndarray"),
            ("numpy.dtype", _PY, "reference/generated/numpy.dtype.html#numpy.dtype"),
        ],
    ),
    # Flax NNX; its site is the Flax documentation.
    "flax": (
        "Flax",
        "latest",
        "https://flax.readthedocs.io/en/latest/",
        [
            *(
                (f"flax.nnx.{name}", role, f"api_reference/flax.nnx/module.html#flax.nnx.{name}")
                for name, role in (
                    ("Module", _PY),
                    ("Module.train", _METH),
                    ("Module.eval", _METH),
                    ("view", _FN),
                )
            ),
            ("flax.nnx.Param", _PY, "api_reference/flax.nnx/variables.html#flax.nnx.Param"),
            ("flax.nnx.Variable", _PY, "api_reference/flax.nnx/variables.html#flax.nnx.Variable"),
            ("flax.nnx.Rngs", _PY, "api_reference/flax.nnx/rnglib.html#flax.nnx.Rngs"),
            ("flax.nnx.RngStream", _PY, "api_reference/flax.nnx/rnglib.html#flax.nnx.RngStream"),
            ("flax.nnx.Dropout", _PY, "api_reference/flax.nnx/nn/stochastic.html#flax.nnx.Dropout"),
        ],
    ),
    # Flax Linen has its own site.
    "flax_linen": (
        "Flax Linen",
        "latest",
        "https://flax-linen.readthedocs.io/en/latest/",
        [
            ("flax.linen.Module", _PY, "api_reference/flax.linen/module.html#flax.linen.Module"),
            *(
                (f"flax.linen.{name}", _PY, f"{_LINEN_LAYERS}#flax.linen.{name}")
                for name in (
                    "RNN",
                    "Bidirectional",
                    "SimpleCell",
                    "GRUCell",
                    "MGUCell",
                    "LSTMCell",
                    "OptimizedLSTMCell",
                    "ConvLSTMCell",
                )
            ),
        ],
    ),
    "optax": (
        "Optax",
        "latest",
        "https://optax.readthedocs.io/en/latest/",
        [
            ("optax", _MOD, "index.html"),
            *(
                (f"optax.{name}", role, f"api/generated/optax.{name}.html")
                for name, role in (
                    ("GradientTransformation", _PY),
                    ("adam", _FN),
                    ("adamw", _FN),
                    ("sgd", _FN),
                    ("chain", _FN),
                    ("clip_by_global_norm", _FN),
                    ("apply_updates", _FN),
                )
            ),
            (
                "optax.schedules.warmup_cosine_decay_schedule",
                _FN,
                "api/generated/optax.schedules.warmup_cosine_decay_schedule.html",
            ),
        ],
    ),
    "orbax": (
        "Orbax",
        "latest",
        "https://orbax.readthedocs.io/en/latest/",
        [
            (
                "orbax.checkpoint",
                _MOD,
                "api_reference/checkpoint.checkpointers.html#module-orbax.checkpoint",
            ),
            *(
                (
                    f"orbax.checkpoint.{name}",
                    _PY,
                    f"api_reference/checkpoint.checkpoint_manager.html#orbax.checkpoint.{name}",
                )
                for name in ("CheckpointManager", "CheckpointManagerOptions")
            ),
            *(
                (
                    f"orbax.checkpoint.args.{name}",
                    _PY,
                    f"api_reference/checkpoint.args.html#orbax.checkpoint.args.{name}",
                )
                for name in _ORBAX_ARGS
            ),
        ],
    ),
}


def inventory_lines(name: str) -> tuple[list[str], list[str]]:
    """The header lines and the object lines of inventory ``name``."""
    project, version, _, objects = INVENTORIES[name]
    header = [
        "# Sphinx inventory version 2",
        f"# Project: {project}",
        f"# Version: {version}",
        "# The remainder of this file is compressed using zlib.",
    ]
    body = [f"{obj} {role} 1 {uri} -" for obj, role, uri in sorted(objects)]
    return header, body


def read_inventory(path: Path) -> tuple[list[str], list[str]]:
    """The header lines and the (decompressed) object lines of an inventory file."""
    data = path.read_bytes()
    lines, rest = [], data
    for _ in range(4):
        line, rest = rest.split(b"\n", 1)
        lines.append(line.decode())
    return lines, zlib.decompress(rest).decode().splitlines()


def write_inventory(name: str, directory: Path = HERE) -> Path:
    header, body = inventory_lines(name)
    path = directory / f"{name}.inv"
    text = "".join(f"{line}\n" for line in body).encode()
    path.write_bytes("".join(f"{line}\n" for line in header).encode() + zlib.compress(text, 9))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=HERE, help="directory (default: docs/_inv)")
    args = parser.parse_args(argv)
    for name in INVENTORIES:
        print(write_inventory(name, args.out))


if __name__ == "__main__":
    main()
