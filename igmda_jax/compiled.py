"""What a run trains with, built once: the environment its config names (``make_env``), the
trainer compiled for its seeds and devices (``compile_trainer``: one jitted chunk, seeds
vmapped and spread over devices, or the host loop's parts for worker backends), the seeds' and
evaluations' keys, and one evaluation as metrics rows (``evaluate_rows``). ``run.run`` drives
these."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec, Sharding, SingleDeviceSharding

import envs
from envs.smax_maps import MAPS as SMAX_MAPS
from igmda_jax.core.config import Config
from igmda_jax.fused.distributed import fetch
from igmda_jax.fused.seed_layout import (
    DEVICE_AXIS,
    assemble_per_device,
    global_array,
    map_seed_groups,
    pad_seeds,
    padded_seed_count,
    process_devices,
    seed_group_size,
    seed_sharding,
    unpad_seeds,
)
from igmda_jax.fused.train import Trainer, TrainState, make_train

SEED_AXIS = "seed"  # name of the vmapped seed axis of train_chunk


def env_options(config: Config) -> dict[str, Any]:
    """``envs.make`` options of the config's environment: sight, expert view, episode limit,
    and for SMAX maps the reward, own features and last actions in the state (other
    environments, the toy games, have their own)."""
    options: dict[str, Any] = {"sight_range": config.sight_range, "expert_view": config.expert_view}
    if config.episode_limit is not None:
        options["episode_limit"] = config.episode_limit
    if config.map in SMAX_MAPS:
        options["reward"] = config.reward
        options["own_features"] = config.own_features
        options["state_last_action"] = config.state_last_action
    return options


def worker_env_options(config: Config) -> dict[str, Any]:
    """Options of the host backends' worker environments: ``env_options`` for SMAX workers;
    for StarCraft II only what SMAC's worker understands (sight, expert view, episode limit)."""
    if config.backend != "smac":
        return env_options(config)
    options: dict[str, Any] = {"sight_range": config.sight_range, "expert_view": config.expert_view}
    if config.episode_limit is not None:
        options["episode_limit"] = config.episode_limit
    return options


def make_env(config: Config) -> envs.Environment:
    """The run's environment, built from the config."""
    return envs.make(config.map, **env_options(config))


@dataclasses.dataclass
class Compiled:
    """The trainer's functions, vmapped over seeds and jitted once.

    ``sharding`` places every TrainState leaf: its seed axis spread over local devices
    (``seed_sharding``) or all on one device. ``init`` returns a *working* state, whose seed
    axis may be padded to ``padded_seeds`` so that it spreads over the devices
    (``seed_layout.padded_seed_count``; the padding repeats the first seeds); ``train_chunk``
    takes and returns working states; its metrics and ``evaluate``'s results cover the
    config's ``seeds`` only. ``unpad`` gives the config's seeds (what checkpoints hold), and
    ``place`` turns such a state (e.g. a restore into ``state_like``) into a working one."""

    trainer: Trainer
    init: Any
    train_chunk: Any
    evaluate: Any
    sharding: Sharding
    seed_group: int = 1  # seeds vmapped together per device (seed_group_size)
    seeds: int = 1
    padded_seeds: int = 1
    restore_sharding: Sharding | None = None  # for unpadded states, when padded_seeds > seeds

    def close(self) -> None:
        """Nothing to release (the host backends' ``HostCompiled`` stops its workers here)."""

    def place(self, state: Any) -> Any:
        """A state of ``seeds`` or ``padded_seeds`` seeds (any placement) as a working state."""
        return jax.device_put(pad_seeds(state, self.padded_seeds), self.sharding)

    def unpad(self, state: Any) -> Any:
        """The config's seeds of a working state."""
        return unpad_seeds(state, self.seeds)

    def state_like(self, keys: jax.Array) -> Any:
        """Abstract TrainState (shapes, dtypes, placement) of ``unpad(init(keys))``: a restore
        target (without a placement, orbax would restore to the devices the checkpoint was
        saved from). Pass the restored state through ``place``."""
        shapes = jax.eval_shape(lambda k: self.unpad(self.init(k)), keys)
        placed = self.restore_sharding or self.sharding
        return jax.tree.map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=placed), shapes
        )


def compile_trainer(
    config: Config, env: envs.Environment | None = None, devices: list | None = None
) -> Compiled:
    """jit(vmap(...)) of the trainer's functions for ``config`` on ``env`` (default: the
    config's own environment, ``make_env``), seeds spread over ``devices`` (default: every
    local device, or with several processes those of ``seed_layout.process_devices``;
    ``seed_sharding``). Seeds spread over several processes are initialised, evaluated and
    trained by the process that holds them."""
    trainer = make_train(config, make_env(config) if env is None else env, SEED_AXIS)
    if devices is None:
        several = jax.process_count() > 1
        devices = process_devices(config.seeds, jax.devices()) if several else jax.local_devices()
    spans_processes = len({d.process_index for d in devices}) > 1
    padded = padded_seed_count(config.seeds, len(devices))
    sharding = seed_sharding(padded, devices) or SingleDeviceSharding(devices[0])
    init_on_one_device = jax.jit(jax.vmap(trainer.init))

    def init(keys: jax.Array) -> TrainState:
        """keys: [seeds, 2] -> a working state ([padded, ...] leaves, spread)."""
        # Initialised on one device, then spread: XLA's CPU runtime hangs (jax 0.10.2) running
        # the GRU parameter initialisation partitioned over host devices.
        if spans_processes and not isinstance(keys, jax.core.Tracer):  # (state_like traces)
            # each process its own seeds (process_devices: no padding)
            return assemble_per_device(init_on_one_device, np.asarray(keys), sharding)
        keys = pad_seeds(jax.device_put(keys, devices[0]), padded)
        return jax.device_put(init_on_one_device(keys), sharding)

    n_devices = sharding.mesh.size if isinstance(sharding, NamedSharding) else 1
    group = seed_group_size(config.seed_vmap, padded // n_devices, devices[0].platform)
    train_chunk = map_seed_groups(trainer.train_chunk, group, SEED_AXIS)
    evaluate = {
        actor: jax.vmap(functools.partial(trainer.evaluate, actor=actor))
        for actor in ("deployed", "expert")
    }
    if isinstance(sharding, NamedSharding):  # each device runs its own seeds, unsynchronised
        spec = PartitionSpec(DEVICE_AXIS)
        spread = functools.partial(
            jax.shard_map, mesh=sharding.mesh, out_specs=spec, check_vma=False
        )
        train_chunk = spread(train_chunk, in_specs=spec)
        evaluate = {actor: spread(fn, in_specs=(spec, spec)) for actor, fn in evaluate.items()}

    def chunk(state: TrainState) -> tuple[TrainState, dict]:
        """A working state -> the next one and the metrics of the config's seeds."""
        state, metrics = train_chunk(state)
        return state, unpad_seeds(metrics, config.seeds)

    def real_seeds(fn: Callable) -> Callable:
        """keys: [seeds, 2] -> stats of the config's seeds (padding inside the jit)."""
        return lambda state, keys: unpad_seeds(fn(state, pad_seeds(keys, padded)), config.seeds)

    jitted_evaluate = {actor: jax.jit(real_seeds(fn)) for actor, fn in evaluate.items()}
    place_keys = (
        (lambda keys: global_array(np.asarray(keys), sharding))
        if spans_processes
        else (lambda keys: keys)
    )

    return Compiled(
        trainer=trainer,
        init=init,
        train_chunk=jax.jit(chunk, donate_argnums=0),
        evaluate=lambda state, keys, actor="deployed": jitted_evaluate[actor](
            state, place_keys(keys)
        ),
        sharding=sharding,
        seed_group=group,
        seeds=config.seeds,
        padded_seeds=padded,
        restore_sharding=None if padded == config.seeds else SingleDeviceSharding(devices[0]),
    )


def compile_backend(
    config: Config, env: envs.Environment | None = None, pool_options: dict | None = None
) -> Any:
    """The config's backend: ``compile_trainer`` for ``fused``, else the host loop's
    :class:`~igmda_jax.host.loop.HostCompiled` (its worker processes started; close it when done).
    ``pool_options`` go to the host backends' WorkerPools (tests inject faults with them)."""
    if config.backend == "fused":
        return compile_trainer(config, env)
    if env is not None:
        raise ValueError(f"backend {config.backend!r} builds its environments in its workers")
    from igmda_jax.host.loop import HostCompiled  # the fused path does not need the worker pool

    return HostCompiled(config, worker_env_options(config), SEED_AXIS, pool_options=pool_options)


def seed_keys(config: Config) -> jax.Array:
    """One PRNG key per seed: [seeds, 2]."""
    return jnp.stack([jax.random.PRNGKey(config.seed + i) for i in range(config.seeds)])


FINAL_EVALUATION_INDEX = 1_000_000  # the evaluation keys of `igmda eval` and of final evaluations


def evaluation_keys(config: Config, index: int) -> jax.Array:
    """Keys of evaluation ``index``, independent of training: [seeds, 2]."""
    return jnp.stack(
        [
            jax.random.fold_in(jax.random.PRNGKey(10_000_019 + config.seed + i), index)
            for i in range(config.seeds)
        ]
    )


def evaluate_rows(
    compiled: Compiled, state: TrainState, config: Config, index: int, chunk_metrics: dict
) -> list[dict[str, Any]]:
    """Greedy evaluation of every seed; one metrics row per seed."""
    keys = evaluation_keys(config, index)
    result = fetch(compiled.evaluate(state, keys, "deployed"))
    if config.uses_expert:
        expert = fetch(compiled.evaluate(state, keys, "expert"))
        result["expert_win_rate"] = expert["win_rate"]
    t_env = np.asarray(fetch(state.t_env))
    rows = []
    for seed in range(config.seeds):
        row: dict[str, Any] = {
            "eval": index,
            "seed": config.seed + seed,
            "t_env": int(t_env[seed]),
            **{name: float(values[seed]) for name, values in result.items()},
        }
        for name, values in chunk_metrics.items():
            if name not in ("t_env", "finite", "win_rate", "return", "episode_length"):
                row[f"train_{name}" if name in ("episodes", "updates") else name] = float(
                    np.asarray(values)[seed]
                )
        rows.append(row)
    return rows
