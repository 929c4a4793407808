"""The measurements of ``igmda bench``, one case per process (``python -m
igmda_jax.tools.bench_cases CASE_JSON`` prints one JSON row), so compile times and peak memory are
each case's own.

Cases:

* ``{"kind": "env", "map", "n_envs", "steps"}``: random-policy env steps/s of our map at
  sight 0 (``envs.rollout.make_random_rollout``, auto-resets, no network) and of JaxMARL's own
  ``HeuristicEnemySMAX`` on the same scenario and batch (``raw``; None for maps JaxMARL lacks);
* ``{"kind": "train", "map", "alg", "seeds", "chunks"}``: the fused training loop as ``igmda
  train --alg A --map M --sight-range 0 --seeds S`` builds it (every default): compile seconds
  of the training chunk, env steps/s per seed over ``chunks`` chunks once the replay can
  sample, mean episode length, peak resident memory of the process;
* ``{"kind": "host", "map", "workers", "chunks"}``: the host loop (``igmda train --backend
  smax-workers --workers-per-seed W``, qmix, one seed): env steps/s of the worker pool alone
  (a numpy random policy, no network) and of whole training iterations (collection + act +
  update), and the host's share of an iteration: seconds in the act function and in the
  learner update over the iteration's wall seconds.

Timings take the fastest of a few repeats (env) or the mean over chunks (train); run them on an
otherwise idle machine, one at a time (``igmda bench`` does).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import envs
from envs.rollout import make_random_rollout, random_available_actions
from igmda_jax.compiled import compile_trainer, seed_keys
from igmda_jax.core.presets import make_config


def time_rollout(rollout, key: jax.Array, repeats: int = 3) -> float:
    """Fastest of ``repeats`` timed calls after a compile call (the minimum is the least
    disturbed by other load on a shared machine)."""
    jax.block_until_ready(rollout(key))
    best = float("inf")
    for i in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(rollout(jax.random.fold_in(key, i + 1)))
        best = min(best, time.perf_counter() - start)
    return best


def make_raw_rollout(map_name: str, n_envs: int, n_steps: int, episode_limit: int):
    """JaxMARL's HeuristicEnemySMAX with its own auto-resetting step and random available
    actions: [] -> total reward (jitted)."""
    from jaxmarl.environments.smax import HeuristicEnemySMAX, map_name_to_scenario

    env = HeuristicEnemySMAX(scenario=map_name_to_scenario(map_name), max_steps=episode_limit)
    agents = env.agents

    def rollout(key: jax.Array) -> jax.Array:
        reset_key, scan_key = jax.random.split(key)
        _, state = jax.vmap(env.reset)(jax.random.split(reset_key, n_envs))

        def body(carry, step_key):
            state, reward_sum = carry
            action_key, env_key = jax.random.split(step_key)
            avail = jax.vmap(env.get_avail_actions)(state)
            avail = jnp.stack([avail[a] for a in agents], axis=1).astype(bool)
            actions = random_available_actions(action_key, avail)
            action_dict = {a: actions[:, i] for i, a in enumerate(agents)}
            _, state, rewards, _, _ = jax.vmap(env.step)(
                jax.random.split(env_key, n_envs), state, action_dict
            )
            return (state, reward_sum + rewards[agents[0]].sum()), None

        (_, reward_sum), _ = jax.lax.scan(
            body, (state, jnp.float32(0.0)), jax.random.split(scan_key, n_steps)
        )
        return reward_sum

    return jax.jit(rollout)


def has_raw_counterpart(map_name: str) -> bool:
    """Whether JaxMARL's SMAX has the map (ours adds medivacs and maps of our own)."""
    return map_name in envs.smax.MAPS and not envs.make(map_name).spec.has_medivac


def env_case(map_name: str, n_envs: int, steps: int) -> dict[str, Any]:
    """Random-policy env steps/s, ours and raw JaxMARL's (see the module docstring)."""
    env = envs.make(map_name, sight_range=0.0)
    n_steps = max(50, steps // n_envs)
    key = jax.random.PRNGKey(0)
    ours = n_envs * n_steps / time_rollout(make_random_rollout(env, n_envs, n_steps), key)
    raw = None
    if has_raw_counterpart(map_name):
        rollout = make_raw_rollout(map_name, n_envs, n_steps, env.episode_limit)
        raw = n_envs * n_steps / time_rollout(rollout, key)
    return {"ours_steps_per_s": round(ours, 1), "raw_steps_per_s": raw and round(raw, 1)}


def warm_up(train_chunk, state):
    """Train chunks until the replay can sample (every seed has updated); returns the state."""
    state, _ = train_chunk(state)
    while int(jax.device_get(state.updates).min()) == 0:
        state, _ = train_chunk(state)
    return jax.block_until_ready(state)


def time_chunks(compiled, train_chunk, state, chunks: int):
    """``chunks`` timed training chunks: (state, last metrics, env steps of the run's real
    seeds, seconds)."""
    t_before = int(jax.device_get(compiled.unpad(state.t_env)).sum())
    start = time.perf_counter()
    for _ in range(chunks):
        state, metrics = train_chunk(state)
    jax.block_until_ready(state)
    seconds = time.perf_counter() - start
    steps = int(jax.device_get(compiled.unpad(state.t_env)).sum()) - t_before
    return state, metrics, steps, seconds


def train_case(map_name: str, alg: str, seeds: int, chunks: int) -> dict[str, Any]:
    """Compile seconds and env steps/s per seed of ``igmda train``'s fused loop."""
    config = make_config(alg=alg, map=map_name, sight_range=0.0, seeds=seeds)
    compiled = compile_trainer(config)
    state = jax.block_until_ready(compiled.init(seed_keys(config)))
    start = time.perf_counter()
    train_chunk = compiled.train_chunk.lower(state).compile()
    compile_s = time.perf_counter() - start
    state = warm_up(train_chunk, state)
    state, metrics, steps, seconds = time_chunks(compiled, train_chunk, state, chunks)
    return {
        "compile_s": round(compile_s, 1),
        "steps_per_s_per_seed": round(steps / seconds / seeds, 1),
        "seconds_per_chunk": round(seconds / chunks, 3),
        "mean_episode_length": round(float(jax.device_get(metrics["episode_length"]).mean()), 1),
        "devices": len(compiled.sharding.device_set),
        "device_kind": jax.local_devices()[0].device_kind,
        "device_peak_mib": device_peak_mib(),
    }


def host_case(map_name: str, workers: int, chunks: int) -> dict[str, Any]:
    """The host loop's throughput with ``workers`` SMAX worker processes (module docstring)."""
    from igmda_jax.compiled import SEED_AXIS, worker_env_options
    from igmda_jax.host.loop import HostCompiled

    config = make_config(
        alg="qmix", map=map_name, sight_range=0.0, backend="smax-workers", workers_per_seed=workers
    )
    rng = np.random.default_rng(0)

    def random_policy(timestep, first):
        avail = np.asarray(timestep.avail)
        return np.argmax(rng.random(avail.shape) * avail, axis=-1)

    with HostCompiled(config, worker_env_options(config), SEED_AXIS) as compiled:
        pool = compiled.pools[0]
        pool.run_episodes(random_policy, config.n_envs, episode_seed=0)  # warm the workers
        start, pool_steps = time.perf_counter(), 0
        for i in range(chunks * config.iterations_per_call):
            pool_steps += pool.run_episodes(random_policy, config.n_envs, episode_seed=i).env_steps
        pool_s = time.perf_counter() - start
        state = jax.block_until_ready(compiled.init(seed_keys(config)))
        state = warm_up(compiled.train_chunk, state)
        compiled.seconds.clear()
        state, _, steps, seconds = time_chunks(compiled, compiled.train_chunk, state, chunks)
        act_s, learn_s = compiled.seconds["act"], compiled.seconds["learn"]
    return {
        "pool_steps_per_s": round(pool_steps / pool_s, 1),
        "train_steps_per_s": round(steps / seconds, 1),
        "act_share": round(act_s / seconds, 3),
        "learn_share": round(learn_s / seconds, 3),
        "host_share": round((act_s + learn_s) / seconds, 3),
    }


def device_peak_mib() -> float | None:
    """Peak memory the first device's allocator reports (GPU/TPU), MiB; None on the CPU."""
    stats = jax.local_devices()[0].memory_stats()
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    return round(stats["peak_bytes_in_use"] / 2**20, 1)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports ru_maxrss in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    """Measure one case; returns the case with its numbers and the process's peak memory."""
    if case["kind"] == "env":
        numbers = env_case(case["map"], case["n_envs"], case["steps"])
    elif case["kind"] == "train":
        numbers = train_case(case["map"], case["alg"], case["seeds"], case["chunks"])
    elif case["kind"] == "host":
        numbers = host_case(case["map"], case["workers"], case["chunks"])
    else:
        raise ValueError(f"unknown bench case kind {case['kind']!r}")
    return {**case, **numbers, "peak_rss_mib": peak_rss_mib()}


if __name__ == "__main__":
    print(json.dumps(run_case(json.loads(sys.argv[1]))), flush=True)
