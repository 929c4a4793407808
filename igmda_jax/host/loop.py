"""The host loop: the same learner fed by environments in worker processes (``--backend
smax-workers`` or ``smac``).

:class:`HostCompiled` offers run.py what the fused path's ``Compiled`` does (init, train_chunk,
evaluate, state_like, place, unpad), so training, evaluation, metrics, progress, checkpoints and
``--resume`` are the fused path's code. Only the collection differs. Per iteration, for every
seed:

1. ``begin_iteration`` (jitted, the fused path's) gives the collection key, epsilon and beta;
2. the seed's :class:`~envs.pool.WorkerPool` plays ``n_envs`` episodes in rounds of
   ``workers_per_seed``: each step the host stacks the workers' rows and calls one jitted act
   function (:func:`~igmda_jax.host.episodes.make_act`; recurrent state on the device), and
   sends the actions back;
3. the finished episodes, padded like the fused path's (observations stored), go through the
   fused path's jitted ``learn`` (replay add, updates, target sync), vmapped over seeds.

Seeds. Each seed has its own pool, and the seeds' pools play at the same time, one host thread
per seed (JAX releases the GIL while it computes). A seed's episodes depend only on its own pool
and keys: a worker fault on one seed never shifts another's data, as seeds are independent on
the fused path. The learner update of all seeds is one vmapped call.

Determinism. Every episode is reset with a seed drawn from the iteration's collection key
(``WorkerPool.run_episodes(episode_seed=...)``) and the act keys come from the same key, so on
the deterministic SMAX workers a run is a function of its config: kill it, ``--resume``, and
the metrics are the same as an uninterrupted run's. StarCraft II cannot be reseeded per
episode; there the checkpoint holds the learner's whole state and episodes in flight are simply
played again.

Faults. A worker that crashes or hangs loses only its episode; the pool replaces the process
and plays another. Every metrics row counts the seed's episodes lost since the previous row
(``dropped_episodes``, training and evaluation).
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import os
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import SingleDeviceSharding

from envs.pool import Rollout, WorkerPool
from envs.spec import TimeStep
from igmda_jax.core.acting import training_actors
from igmda_jax.core.config import Config
from igmda_jax.fused.train import TrainState, make_train
from igmda_jax.host.episodes import (
    initial_carry,
    make_act,
    make_agreement,
    replay_bytes,
    replay_episodes,
)

__all__ = [
    "HostBackendError",
    "HostCompiled",
    "check_memory",
    "describe_memory",
    "worker_cache_dir",
]

POOL_BACKENDS = {"smax-workers": "smax", "smac": "smac"}


class HostBackendError(RuntimeError):
    """The host backend cannot run this configuration (the message says why and what to do)."""


def worker_cache_dir() -> str:
    """The JAX compilation cache the SMAX workers share ($IGMDA_CACHE_DIR, else
    ~/.cache/igmda-jax/worker-jit): a restarted worker or a resumed run skips recompiling."""
    root = os.environ.get("IGMDA_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "igmda-jax"
    )
    return os.path.join(root, "worker-jit")


def _seed_int(key: jax.Array) -> int:
    """A 31-bit integer drawn from ``key`` (an episode seed for the pool)."""
    return int(jax.random.bits(key, (), jnp.uint32)) >> 1


def _stack(trees: list[Any]) -> Any:
    """Stack equal pytrees of numpy leaves on a new leading (seed) axis."""
    return jax.tree.map(lambda *leaves: np.stack(leaves), *trees)


class HostCompiled:
    """run.py's ``Compiled`` interface on worker pools (see module doc). Close it (or use it
    as a context manager) to stop the workers."""

    def __init__(
        self,
        config: Config,
        env_options: dict[str, Any],
        seed_axis: str,
        devices: list | None = None,
        pool_options: dict[str, Any] | None = None,
    ) -> None:
        if config.backend not in POOL_BACKENDS:
            raise ValueError(f"HostCompiled runs the host backends, not {config.backend!r}")
        self.config = config
        self.seeds = self.padded_seeds = config.seeds
        self.seed_group = config.seeds
        self.restore_sharding = None
        device = (jax.local_devices() if devices is None else devices)[0]
        self.sharding = SingleDeviceSharding(device)
        self._threads = concurrent.futures.ThreadPoolExecutor(
            max_workers=config.seeds, thread_name_prefix="igmda-seed"
        )
        self.pools: list[WorkerPool] = []
        try:
            self.pools = self._start_pools(env_options, pool_options or {})
        except BaseException:
            self.close()
            raise
        info = self.pools[0].info
        self.info = info
        trainer = make_train(config, info, seed_axis)
        self.trainer = trainer
        nets = trainer.nets
        self._init = jax.jit(jax.vmap(trainer.init))
        self._begin = jax.jit(jax.vmap(trainer.begin_iteration))
        self._learn = jax.jit(jax.vmap(trainer.learn, axis_name=seed_axis), donate_argnums=0)
        self._summarize = jax.jit(jax.vmap(trainer.summarize))
        self._training_actors = training_actors(config)
        self._acts = {
            actors: jax.jit(make_act(config, nets, actors))
            for actors in {self._training_actors, "expert", "learner", "all"}
        }
        self._agreement = jax.jit(make_agreement(config, nets)) if config.uses_expert else None
        self.bytes_per_step, self.replay_bytes = replay_bytes(info, config)
        # wall seconds spent in "act" (inside the rounds), "play" (whole rounds) and "learn"
        self.seconds: collections.Counter[str] = collections.Counter()
        self._dropped_reported = np.zeros(config.seeds, np.int64)

    # ------------------------------------------------------------------ pools
    def _start_pools(
        self, env_options: dict[str, Any], pool_options: dict[str, Any]
    ) -> list[WorkerPool]:
        """One pool per seed, started concurrently."""
        config = self.config
        backend = POOL_BACKENDS[config.backend]
        options = {
            "timeout": config.worker_timeout,
            "start_timeout": config.worker_start_timeout,
            **({"compile_cache_dir": worker_cache_dir()} if backend == "smax" else {}),
            **pool_options,
        }

        def start(seed_index: int) -> WorkerPool:
            return WorkerPool(
                backend,
                config.map,
                config.workers_per_seed,
                seed=config.seed + seed_index,
                env_options=env_options,
                **options,
            )

        futures = [self._threads.submit(start, s) for s in range(config.seeds)]
        pools, errors = [], []
        for future in futures:
            try:
                pools.append(future.result())
            except BaseException as error:  # close the others before raising the first
                errors.append(error)
        if errors:
            for pool in pools:
                pool.close()
            raise errors[0]
        return pools

    def close(self) -> None:
        """Stop every worker process (idempotent)."""
        for pool in self.pools:
            pool.close()
        self._threads.shutdown(wait=False)

    def __enter__(self) -> HostCompiled:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ playing
    def _play(
        self,
        seed_index: int,
        params: Any,
        key: jax.Array,
        epsilon: jax.Array,
        expert_prob: jax.Array,
        n_episodes: int,
        actors: str,
    ) -> Rollout:
        """Seed ``seed_index``'s pool plays ``n_episodes`` episodes with ``params`` (one seed's):
        episode seeds and act keys from ``key``."""
        pool = self.pools[seed_index]
        act = self._acts[actors]
        seed_key, act_key = jax.random.split(key)
        carry = initial_carry(self.config, self.trainer.nets, pool.n_workers, actors)
        calls = itertools.count()

        def act_fn(timestep: TimeStep, first: np.ndarray) -> np.ndarray:
            nonlocal carry
            start = time.perf_counter()
            step_key = jax.random.fold_in(act_key, next(calls))
            carry, actions = act(
                params, carry, timestep.obs, timestep.expert_obs, timestep.avail, first,
                step_key, epsilon, expert_prob,
            )  # fmt: skip
            actions = np.asarray(actions)
            self.seconds["act"] += time.perf_counter() - start
            return actions

        return pool.run_episodes(act_fn, n_episodes, episode_seed=_seed_int(seed_key))

    def _play_seeds(
        self, params: Any, keys: jax.Array, epsilon, expert_prob, n_episodes: int, actors: str
    ) -> list[Rollout]:
        """Every seed's pool plays at once (one thread per seed); params/keys have a seed axis."""
        per_seed = [jax.tree.map(lambda x, s=s: x[s], params) for s in range(self.seeds)]
        eps, beta = np.asarray(epsilon), np.asarray(expert_prob)
        futures = [
            self._threads.submit(
                self._play, s, per_seed[s], keys[s], eps[s], beta[s], n_episodes, actors
            )
            for s in range(self.seeds)
        ]
        return [future.result() for future in futures]

    # ------------------------------------------------------------------ Compiled interface
    def init(self, keys: jax.Array) -> TrainState:
        """keys: [seeds, 2] -> a TrainState with a leading seed axis, on the device."""
        return jax.device_put(self._init(jax.device_put(keys, self.sharding)), self.sharding)

    def place(self, state: Any) -> Any:
        return jax.device_put(state, self.sharding)

    def unpad(self, state: Any) -> Any:
        return state

    def state_like(self, keys: jax.Array) -> Any:
        shapes = jax.eval_shape(self._init, keys)
        return jax.tree.map(
            lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=self.sharding), shapes
        )

    def train_chunk(self, state: TrainState) -> tuple[TrainState, dict[str, Any]]:
        """``iterations_per_call`` iterations (module doc); metrics as the fused chunk's."""
        config = self.config
        per_iteration = []
        for _ in range(config.iterations_per_call):
            keys, epsilon, expert_prob = jax.device_get(self._begin(state))
            start = time.perf_counter()
            rollouts = self._play_seeds(
                state.params, keys, epsilon, expert_prob, config.n_envs, self._training_actors
            )
            self.seconds["play"] += time.perf_counter() - start
            start = time.perf_counter()
            played = [replay_episodes(r.episodes, config.timeout_bootstrap) for r in rollouts]
            episodes = _stack([episodes for episodes, _ in played])
            stats = _stack([stats for _, stats in played])
            state, metrics = self._learn(state, episodes, stats)
            jax.block_until_ready(state.t_env)
            self.seconds["learn"] += time.perf_counter() - start
            per_iteration.append(metrics)
        metrics = jax.tree.map(lambda *m: jnp.stack(m, axis=1), *per_iteration)  # [S, K]
        return state, self._summarize(state, metrics)

    def evaluate(
        self, state: TrainState, keys: jax.Array, actor: str = "deployed"
    ) -> dict[str, np.ndarray]:
        """Greedy test episodes per seed: win_rate, return, episode_length [seeds] (+
        agreement for -da/-bc), as the fused ``evaluate``; and ``dropped_episodes``: episodes
        the seed's workers lost (training and evaluation) since the previous call."""
        config = self.config
        expert_plays = actor == "expert" or not config.uses_expert
        actors = "expert" if expert_plays else "learner"  # a plain agent runs as "expert"
        prob = np.full(self.seeds, float(expert_plays), np.float32)
        zero = np.zeros(self.seeds, np.float32)
        keys = np.asarray(jax.device_get(keys))
        rollouts = self._play_seeds(state.params, keys, zero, prob, config.test_nepisode, actors)
        result: dict[str, list[float]] = {"win_rate": [], "return": [], "episode_length": []}
        if self._agreement is not None:
            result["agreement"] = []
        for s, rollout in enumerate(rollouts):
            episodes, stats = replay_episodes(rollout.episodes, config.timeout_bootstrap)
            result["win_rate"].append(float(stats["won"].mean()))
            result["return"].append(float(stats["return"].mean()))
            result["episode_length"].append(float(stats["length"].mean()))
            if self._agreement is not None:
                params = jax.tree.map(lambda x, s=s: x[s], state.params)
                agree = self._agreement(params, episodes, jax.random.fold_in(keys[s], 1))
                result["agreement"].append(float(np.mean(agree)))
        dropped = np.array([len(pool.dropped) for pool in self.pools])
        result["dropped_episodes"] = (dropped - self._dropped_reported).tolist()
        self._dropped_reported = dropped
        return {name: np.asarray(values, np.float32) for name, values in result.items()}

    def save_replays(self) -> None:
        """StarCraft II replays of what every worker played (``--backend smac``; SMAC writes
        them to its ``replay_dir`` option)."""
        for pool in self.pools:
            pool.save_replay()


def describe_memory(compiled: HostCompiled) -> str:
    """One line: the replay's memory per stored step and in total (all seeds)."""
    total = compiled.replay_bytes * compiled.seeds
    return (
        f"replay: {compiled.bytes_per_step:,} bytes per stored step, "
        f"{total / 2**20:,.0f} MiB for {compiled.seeds} seed(s) x "
        f"{compiled.config.buffer_size} episodes"
    )


def check_memory(compiled: HostCompiled, available: int | None = None) -> None:
    """Refuse a replay that cannot fit in memory (``available`` bytes, default MemAvailable
    of /proc/meminfo where it exists), naming the fix."""
    if available is None:
        available = _mem_available()
    if available is None:
        return
    total = compiled.replay_bytes * compiled.seeds
    if total > available:
        raise HostBackendError(
            f"the replay needs {total / 2**30:.1f} GiB ({describe_memory(compiled)}) but "
            f"{available / 2**30:.1f} GiB are available; lower --buffer-size or --seeds"
        )


def _mem_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
