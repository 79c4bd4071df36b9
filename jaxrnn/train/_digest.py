"""Digests of a train state, by each process and whatever the layout, for verified checkpoints.

A checkpoint stores two kinds of digest of the state it holds, both checked on restore:

* **Per process, SHA-256** (:func:`process_digests`): each process hashes what it holds:
  every leaf it holds whole, and of each leaf split over processes its own shards, each once,
  in index order with the index. Restored onto the same layout (the same number of processes
  and shards per process, as when resuming), each process verifies its own part.
* **Layout-free, 64 bits** (:func:`content_digest`): the sum, modulo :math:`2^{64}`, over
  every element of every leaf of a 64-bit hash of the leaf's name, dtype and shape, the
  element's global index and its bits. Each process sums the shards it holds the first replica
  of (leaves every process holds whole count in process 0), so every element counts once, and
  the processes' sums are added. The result does not
  depend on how the arrays are split, over how many devices or processes, so it verifies a
  checkpoint restored onto another layout: saved by 2 processes and restored by 1, or from
  replicated onto sharded parameters. It detects corruption (a changed element changes the
  sum but with probability :math:`2^{-64}`), not tampering: it is not a cryptographic hash.

Both are collectives with several processes: every process must compute them together.
"""

from __future__ import annotations

import hashlib

import jax
import numpy as np

__all__ = [
    "all_processes",
    "content_digest",
    "gather_bytes",
    "process_digests",
]


def gather_bytes(mine: bytes) -> list[bytes]:
    """The ``mine`` of every process, in process order (all of the same length)."""
    if jax.process_count() == 1:
        return [mine]
    from jax.experimental import multihost_utils

    rows = np.asarray(multihost_utils.process_allgather(np.frombuffer(mine, np.uint8)))
    return [bytes(row.astype(np.uint8)) for row in rows.reshape(jax.process_count(), -1)]


def all_processes(ok: bool) -> bool:
    """Whether ``ok`` holds in every process (each passes its own)."""
    return all(b == b"\x01" for b in gather_bytes(b"\x01" if ok else b"\x00"))


def _shard_key(index: tuple, shape: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    return tuple(sl.indices(n)[:2] for sl, n in zip(index, shape, strict=True))


def local_digest(saveable) -> tuple[str, str]:
    """``(digest, layout)``: SHA-256 of the state as this process holds it, and of its layout.

    Every leaf contributes its path, dtype, shape and bytes. A leaf other processes hold parts
    of contributes the addressable shards instead, each once (replicas skipped), in index order
    with its index; their indices make up the layout (empty in a single process).
    """
    digest, layout = hashlib.sha256(), hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(saveable)[0]:
        name = jax.tree_util.keystr(path)
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            shards = {}
            for shard in leaf.addressable_shards:
                shards.setdefault(_shard_key(shard.index, leaf.shape), shard)
            for key in sorted(shards):
                arr = np.ascontiguousarray(np.asarray(shards[key].data))
                digest.update(f"{name}|{arr.dtype}|{key}|".encode())
                digest.update(arr.tobytes())
                layout.update(f"{name}|{key}|".encode())
        else:
            arr = np.ascontiguousarray(np.asarray(leaf))
            digest.update(f"{name}|{arr.dtype}|{arr.shape}|".encode())
            digest.update(arr.tobytes())
    return digest.hexdigest(), layout.hexdigest()


def process_digests(saveable) -> tuple[dict[str, str], dict[str, str]]:
    """``({process: digest}, {process: layout})`` of every process (see :func:`local_digest`)."""
    digest, layout = local_digest(saveable)
    rows = gather_bytes(bytes.fromhex(digest) + bytes.fromhex(layout))
    return (
        {str(i): row[:32].hex() for i, row in enumerate(rows)},
        {str(i): row[32:].hex() for i, row in enumerate(rows)},
    )


# --------------------------------------------------------------------------------------------
# The layout-free digest.

_CHUNK = 1 << 20  # elements hashed at a time (bounds the temporary memory)


def _mix(z: np.ndarray) -> np.ndarray:
    """A bijective avalanche of unsigned 64-bit integers (the finaliser of SplitMix64)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _words(a: np.ndarray) -> list[np.ndarray]:
    """The bits of every element of ``a`` as unsigned 64-bit words (one or more each)."""
    size = a.dtype.itemsize
    if size in (1, 2, 4):
        unsigned = {1: np.uint8, 2: np.uint16, 4: np.uint32}[size]
        return [a.view(unsigned).astype(np.uint64)]
    if size % 8:
        raise TypeError(f"cannot digest elements of {size} bytes ({a.dtype})")
    words = a.view(np.uint64).reshape(*a.shape, size // 8)
    return [words[..., k] for k in range(size // 8)]


def _shard_sum(data: np.ndarray, index: tuple, shape: tuple[int, ...], salt: int) -> int:
    """``sum over the elements of hash(salt, global index, bits)`` of one shard, mod 2**64."""
    if not shape:  # a scalar: one element at index 0
        data, index, shape = np.reshape(data, 1), (slice(0, 1),), (1,)
    data = np.ascontiguousarray(data)
    starts = [sl.indices(n)[0] for sl, n in zip(index, shape, strict=True)]
    strides = np.cumprod((1, *shape[:0:-1]))[::-1].astype(np.uint64)
    # Global flat index of every element, but along axis 0, as a broadcastable sum.
    inner = np.zeros(data.shape[1:], np.uint64)
    for axis in range(1, data.ndim):
        span = np.arange(data.shape[axis], dtype=np.uint64) + np.uint64(starts[axis])
        inner = inner + (span * strides[axis]).reshape(
            [-1 if k == axis - 1 else 1 for k in range(data.ndim - 1)]
        )
    rows = max(1, _CHUNK // max(1, inner.size))
    total, salt = 0, np.uint64(salt)
    for r in range(0, data.shape[0], rows):
        block = data[r : r + rows]
        first = np.arange(r, r + block.shape[0], dtype=np.uint64) + np.uint64(starts[0])
        flat = (first * strides[0]).reshape(-1, *([1] * inner.ndim)) + inner
        h = _mix(flat ^ salt)
        for word in _words(block):
            h = _mix(h ^ word)
        total += int(h.sum(dtype=np.uint64))
    return total % 2**64


def content_digest(saveable) -> str:
    """The layout-free digest of a saveable state: 16 hexadecimal digits.

    Each process sums the shards of global arrays of which it holds the first replica
    (``replica_id == 0``: every element is counted once over all processes); leaves every
    process holds whole (host values, arrays on its own devices) are counted by process 0;
    the sums of all processes are added (a collective).
    """
    total = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(saveable)[0]:
        if not isinstance(leaf, jax.Array | np.ndarray):
            leaf = np.asarray(leaf)
        shape, dtype = tuple(leaf.shape), np.dtype(leaf.dtype)
        name = f"{jax.tree_util.keystr(path)}|{dtype.name}|{shape}"
        salt = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            for shard in leaf.addressable_shards:
                if shard.replica_id == 0:
                    total += _shard_sum(np.asarray(shard.data), shard.index, shape, salt)
        elif jax.process_index() == 0:  # held whole by every process: counted once
            index = tuple(slice(0, n) for n in shape)
            total += _shard_sum(np.asarray(leaf), index, shape, salt)
    parts = gather_bytes((total % 2**64).to_bytes(8, "little"))
    return f"{sum(int.from_bytes(p, 'little') for p in parts) % 2**64:016x}"
