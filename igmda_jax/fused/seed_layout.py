"""Where a run's seeds execute: spread over devices, and looped or vmapped within each.

On GPU/TPU the seed axis is spread over the accelerators; on the CPU importing ``envs`` makes
one XLA device per core (envs/__init__.py), and the seed axis is spread over them. With several
processes (igmda_jax/fused/distributed.py) it is spread over every process's devices
(``process_devices``), each process computing its own seeds. Within a
device the seeds run in groups (``Config.seed_vmap``), vmapped within a group and one group
after another. ``compiled.compile_trainer`` combines these into one compiled program.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DEVICE_AXIS = "seed_devices"  # mesh axis over which seed groups are spread (seed_sharding)


def seed_sharding(seeds: int, devices: list | None = None) -> NamedSharding | None:
    """Split the seed axis over the most local devices that divide ``seeds`` evenly (on CPU
    one device per core, see envs/__init__.py); None when that is one device.

    Seeds are independent: each device runs the vmapped program on its own group of seeds
    (``shard_map``), and seeds agree on ``can_update`` and the unroll window only within their
    group, so devices never wait for one another."""
    devices = jax.local_devices() if devices is None else devices
    count = max(d for d in range(1, len(devices) + 1) if seeds % d == 0)
    if count == 1:
        return None
    return NamedSharding(
        Mesh(np.array(devices[:count]), (DEVICE_AXIS,)), PartitionSpec(DEVICE_AXIS)
    )


def idle_devices_notice(seeds: int, used: int, available: int) -> str | None:
    """A hint when ``seeds`` leave devices idle even with padding (``padded_seed_count``: 6
    seeds on 4 devices run 2 per device on 3), or None when every device that could help is
    used."""
    if used >= min(seeds, available):
        return None
    better = -(-seeds // available) * available  # the next multiple of the device count
    return (
        f"note: {seeds} seeds run on {used} of {available} devices (seeds are split evenly "
        f"over devices); --seeds {better} would use all {available}"
    )


def seed_group_size(requested: int, seeds_per_device: int, platform: str) -> int:
    """Seeds vmapped together on one device (``Config.seed_vmap``; 0 = auto): the largest
    divisor of ``seeds_per_device`` not above the request. Auto is 1 on CPU: XLA's CPU backend
    runs a vmapped batch of seeds slower than the same seeds in sequence (the GRU's gradient
    costs 1.5x as much per row past ~200 rows, experiments/scan_rows.py; QMIX 3m, 4 seeds on one device:
    vmapped 4.7x one seed's time, sequential 3.5x, README "Benchmarks"). On GPU/TPU auto vmaps
    all of them."""
    wanted = (1 if platform == "cpu" else seeds_per_device) if requested == 0 else requested
    return max(
        g for g in range(1, seeds_per_device + 1) if seeds_per_device % g == 0 and g <= wanted
    )


def map_seed_groups(fn: Callable, group: int, axis_name: str) -> Callable:
    """``fn(state) -> (state, aux)`` (one seed) over a leading seed axis: vmapped
    (``axis_name``) within groups of ``group`` seeds, the groups one after another; plain vmap
    for one group.

    The groups run in a ``fori_loop`` that updates the stacked state in place (dynamic slice in,
    dynamic update out), so only one group's state is copied at a time. ``lax.map`` would
    build a second stacked state (its outputs): 1.8 GiB more peak memory for 8m, 4 seeds."""
    vmapped = jax.vmap(fn, axis_name=axis_name)

    def over_seeds(state: Any) -> tuple[Any, Any]:
        seeds = jax.tree.leaves(state)[0].shape[0]
        if group >= seeds:
            return vmapped(state)
        n_groups = seeds // group
        grouped = jax.tree.map(lambda x: x.reshape(n_groups, group, *x.shape[1:]), state)

        def group_at(tree: Any, index: jax.Array) -> Any:
            return jax.tree.map(lambda x: jax.lax.dynamic_index_in_dim(x, index, 0, False), tree)

        def put(tree: Any, part: Any, index: jax.Array) -> Any:
            return jax.tree.map(
                lambda x, y: jax.lax.dynamic_update_index_in_dim(x, y, index, 0), tree, part
            )

        _, aux_shapes = jax.eval_shape(vmapped, group_at(grouped, 0))
        aux = jax.tree.map(lambda s: jnp.zeros((n_groups, *s.shape), s.dtype), aux_shapes)

        def run_group(index: jax.Array, carry: tuple[Any, Any]) -> tuple[Any, Any]:
            grouped, aux = carry
            part, part_aux = vmapped(group_at(grouped, index))
            return put(grouped, part, index), put(aux, part_aux, index)

        grouped, aux = jax.lax.fori_loop(0, n_groups, run_group, (grouped, aux))
        flat = lambda x: x.reshape(seeds, *x.shape[2:])  # noqa: E731
        return jax.tree.map(flat, grouped), jax.tree.map(flat, aux)

    return over_seeds


def padded_seed_count(seeds: int, n_devices: int) -> int:
    """Seeds to compute so that ``seeds`` spread over up to ``n_devices`` devices.

    The seed axis splits only evenly, so 3 seeds on 2 CPU cores would all run on one. When
    rounding up to a multiple of ``min(seeds, n_devices)`` puts fewer seeds on each device, the
    axis is padded: 3 seeds on 2 devices compute 4 (2 per device, the time of 2 seeds, not 3).
    The padding repeats the first seeds (``pad_seeds``), so it changes no real seed's result."""
    spread = min(seeds, n_devices)
    divisor = max(d for d in range(1, spread + 1) if seeds % d == 0)
    per_device = -(-seeds // spread)
    return per_device * spread if per_device < seeds // divisor else seeds


def pad_seeds(tree: Any, padded: int) -> Any:
    """Every leaf's leading seed axis [seeds, ...] -> [padded, ...], repeating the first seeds."""

    def pad(x: Any) -> Any:
        missing = padded - x.shape[0]
        if not 0 <= missing <= x.shape[0]:
            raise ValueError(f"cannot pad a seed axis of {x.shape[0]} to {padded}")
        return x if missing == 0 else jnp.concatenate([x, x[:missing]])

    return jax.tree.map(pad, tree)


def unpad_seeds(tree: Any, seeds: int) -> Any:
    """Every leaf's leading seed axis cut back to the first ``seeds``."""
    return jax.tree.map(lambda x: x if x.shape[0] == seeds else x[:seeds], tree)


def process_devices(seeds: int, devices: Sequence[Any]) -> list:
    """The devices the seed axis spreads over when ``devices`` belong to several processes:
    the same number from every process (the most, up to the smallest process's count, that
    split ``seeds`` evenly), process 0's first. No padding (``padded_seed_count``): a
    checkpoint's seed axis then spreads over the same devices as the working state.

    ``seeds`` must be a multiple of the number of processes (``distributed.check_supported``
    refuses other runs), so that every process trains seeds of its own."""
    by_process: dict[int, list] = {}
    for device in devices:
        by_process.setdefault(device.process_index, []).append(device)
    processes = len(by_process)
    if seeds % processes:
        raise ValueError(f"{seeds} seeds do not split over {processes} processes")
    most = min(len(group) for group in by_process.values())
    per_process = max(d for d in range(1, most + 1) if seeds % (processes * d) == 0)
    return [device for index in sorted(by_process) for device in by_process[index][:per_process]]


def assemble_per_device(fn: Callable, keys: np.ndarray, sharding: NamedSharding) -> Any:
    """``fn(keys[part])`` on each of this process's devices of ``sharding``, for the part of
    the seed axis that device holds, assembled into global arrays spread by ``sharding``.

    keys: [seeds, 2] (the same on every process); each leaf of ``fn``'s output has a leading
    seed axis. Each process computes only its own seeds: nothing is computed twice and no
    device holds another's state. ``fn`` runs unpartitioned on one device at a time (a
    partitioned GRU initialisation hangs XLA's CPU runtime, see ``compiled.compile_trainer``)."""
    chex.assert_rank(keys, 2)
    parts = [
        fn(jax.device_put(keys[index[0]], device))
        for device, index in sharding.addressable_devices_indices_map(keys.shape).items()
    ]

    def assemble(*shards: jax.Array) -> jax.Array:
        shape = (keys.shape[0], *shards[0].shape[1:])
        return jax.make_array_from_single_device_arrays(shape, sharding, list(shards))

    return jax.tree.map(assemble, *parts)


def global_array(values: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """``values`` (the same on every process, leading seed axis) as one array spread by
    ``sharding``, each process placing only its own devices' parts."""
    values = np.asarray(values)
    return jax.make_array_from_callback(values.shape, sharding, lambda index: values[index])
