"""CRC-32 checksums of a pytree's array leaves, also of arrays spread over several processes.

In: a pytree of jax or numpy arrays (the TrainState). Out: ``{leaf path: CRC-32 of its bytes,
8 hex digits}``, the integrity record :mod:`igmda_jax.persist.checkpoint` stores beside each checkpoint
and checks after every restore. An array spread over several processes is hashed where its row
blocks live and the blocks' CRCs are combined in row order (:func:`crc32_combine`, zlib's
``crc32_combine``, which Python's zlib does not expose): the value equals one process's CRC of
the whole array. Typed PRNG keys are hashed as their key data.
"""

from __future__ import annotations

import zlib
from typing import Any

import jax
import numpy as np

PyTree = Any


def path_str(path: tuple) -> str:
    """Key path -> "opt/0/mu/w" (attribute, dict and sequence keys alike, as orbax stores)."""
    parts = [str(getattr(k, a)) for k in path for a in ("key", "name", "idx") if hasattr(k, a)]
    return "/".join(parts) or "<root>"


def is_key(dtype: Any) -> bool:
    return jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def leaf_bytes(x: Any) -> np.ndarray:
    """The bytes of an array leaf as a flat uint8 view (typed keys: their key data)."""
    if is_key(getattr(x, "dtype", np.float32)):
        x = jax.random.key_data(x)
    return np.ascontiguousarray(np.asarray(x)).reshape(-1).view(np.uint8)


def gf2_times(matrix: list[int], vector: int) -> int:
    """A 32x32 matrix over GF(2) (one int per column) times a 32-bit vector."""
    total, column = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[column]
        vector >>= 1
        column += 1
    return total


def crc32_combine(crc1: int, crc2: int, length2: int) -> int:
    """CRC-32 of ``A + B`` from ``crc32(A)``, ``crc32(B)`` and ``len(B)``: zlib's
    ``crc32_combine`` (Python's zlib does not expose it), O(log len(B)) without the bytes."""
    if length2 <= 0:
        return crc1
    odd = [0xEDB88320] + [1 << n for n in range(31)]  # the operator of one zero bit
    even = [gf2_times(odd, column) for column in odd]  # two zero bits
    odd = [gf2_times(even, column) for column in even]  # four zero bits
    while True:  # apply len(B) zero bytes to crc1, squaring the operator bit by bit
        even = [gf2_times(odd, column) for column in odd]
        if length2 & 1:
            crc1 = gf2_times(even, crc1)
        length2 >>= 1
        if not length2:
            break
        odd = [gf2_times(even, column) for column in even]
        if length2 & 1:
            crc1 = gf2_times(odd, crc1)
        length2 >>= 1
        if not length2:
            break
    return crc1 ^ crc2


def row_blocks(x: jax.Array) -> list[tuple[int, int, Any]] | None:
    """The distinct shards of ``x`` as ``(first row, last row + 1, owning device)``, in row
    order, each owned by the first device (by id) holding it; None when a shard is not a run
    of whole rows (split along a later axis), i.e. not one contiguous block of bytes."""
    blocks: dict[tuple[int, int], Any] = {}
    rows = x.shape[0] if x.ndim else 1
    for device, index in sorted(
        x.sharding.devices_indices_map(x.shape).items(), key=lambda kv: kv[0].id
    ):
        for axis, part in enumerate(index[1:], start=1):
            if part.indices(x.shape[axis]) != (0, x.shape[axis], 1):
                return None
        start, stop, _ = index[0].indices(rows) if index else (0, 1, 1)
        blocks.setdefault((start, stop), device)
    return [(start, stop, device) for (start, stop), device in sorted(blocks.items())]


def spread_digests(leaves: list[tuple[str, jax.Array]]) -> dict[str, str]:
    """CRC-32 (hex) of arrays spread over several processes, equal to that of the whole
    array's bytes: each process hashes the row blocks its devices own, one gather (a
    collective: every process calls it) brings every block's CRC, and the CRCs are combined in
    row order (:func:`crc32_combine`). Leaves split along a later axis are skipped."""
    from jax.experimental import multihost_utils

    plans = []  # (path, blocks, bytes per row)
    local = []  # this process's CRC of each block, 0 for other processes' blocks
    for path, x in leaves:
        if is_key(x.dtype):
            x = jax.random.key_data(x)
        blocks = row_blocks(x)
        if blocks is None:
            continue
        shards = {shard.device: shard for shard in x.addressable_shards}
        for _, _, device in blocks:
            mine = device.process_index == jax.process_index()
            local.append(zlib.crc32(leaf_bytes(shards[device].data)) if mine else 0)
        row_bytes = int(np.prod(x.shape[1:], dtype=np.int64)) * x.dtype.itemsize
        plans.append((path, blocks, row_bytes))
    if not plans:
        return {}
    gathered = multihost_utils.process_allgather(np.asarray(local, np.uint32))
    crcs = iter(np.bitwise_or.reduce(np.asarray(gathered).reshape(-1, len(local)), axis=0))
    out = {}
    for path, blocks, row_bytes in plans:
        digest = 0
        for start, stop, _ in blocks:
            digest = crc32_combine(digest, int(next(crcs)), (stop - start) * row_bytes)
        out[path] = f"{digest:08x}"
    return out


def tree_digests(tree: PyTree) -> dict[str, str]:
    """CRC-32 (hex) of every array leaf, by path; arrays spread over several processes are
    hashed where their parts live (:func:`spread_digests`): the same value as one process's."""
    out, spread = {}, []
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            spread.append((path_str(path), x))
        elif isinstance(x, (jax.Array, np.ndarray)):
            out[path_str(path)] = f"{zlib.crc32(leaf_bytes(x)):08x}"
    return {**out, **spread_digests(spread)} if spread else out
