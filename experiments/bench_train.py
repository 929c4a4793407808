"""Fused-training throughput of QMIX (issue 3, "Performance").

For each map (QMIX, the authors' network sizes: ``make_config("authors", alg="qmix",
n_envs=8, batch_size=32, updates_per_iteration=1)``; the replay holds only ``--buffer-size``
episodes, default 512, to save memory; its size does not change the per-step cost) it prints

* env steps/s per seed of the whole jitted training loop (``compiled.compile_trainer``: collect
  8 episodes, add to replay, 1 update, target sync; ``iterations_per_call`` times per chunk),
  timed over ``--chunks`` chunks after ``--warmup`` chunks that compile and fill the replay;
* env steps/s of the same environments and batch under a random policy
  (``envs.rollout.make_random_rollout``: auto-resets, no network, no learning) and the ratio;
* the time of one jitted ``learner.update`` alone on a batch sampled from the filled replay
  and of one jitted collection of 8 episodes (epsilon-greedy RNN agents), for a breakdown;
* the cost of 1, 4, 8 vmapped seeds: wall time per chunk relative to 1 seed and steps/s/seed
  (seeds spread over the host devices as in training, ``seed_layout.seed_sharding``; run with
  ``IGMDA_CPU_DEVICES=1`` to keep every seed on one device; ``--seed-vmap K`` vmaps K seeds
  of a device together instead of running them one after another).

Targets: >= 4,500 env steps/s per seed on 3m; 8 seeds take <= 4x the time of one seed
(steps per chunk vary with episode lengths, so "x per step" compares per-seed step rates).

    python experiments/bench_train.py [--maps 3m 8m] [--seeds-list 1 4 8] [--chunks 10]
        [--warmup 2] [--buffer-size 512] [--unroll-windows 4] [--seed-vmap 0]
        [--out results/bench_train.json]

Writes the numbers to ``--out`` (JSON) and the seed-scaling table next to it (CSV).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

import flashbax as fbx
import jax
import jax.numpy as jnp

from envs.rollout import make_random_rollout
from envs.spec import recorder
from igmda_jax.compiled import compile_trainer, seed_keys
from igmda_jax.core.config import Config
from igmda_jax.core.presets import make_config
from igmda_jax.fused.learner import make_optimizer, update
from igmda_jax.fused.rollout import collect

TARGET_STEPS_PER_SEED = 4_500  # on 3m
TARGET_8_SEED_RATIO = 4.0
SCALING_COLUMNS = ["seeds", "seconds_per_chunk", "time_vs_base", "step_time_vs_base",
                   "env_steps_per_s", "env_steps_per_s_per_seed", "mean_episode_length"]  # fmt: skip
BENCH = {"alg": "qmix", "n_envs": 8, "batch_size": 32, "updates_per_iteration": 1}


def bench_config(
    map_name: str, seeds: int, buffer_size: int, unroll_windows: int, seed_vmap: int = 0
) -> Config:
    return make_config(
        "authors",
        map=map_name,
        buffer_size=buffer_size,
        seeds=seeds,
        unroll_windows=unroll_windows,
        seed_vmap=seed_vmap,
        **BENCH,
    )


def time_calls(fn, args: tuple, repeats: int) -> float:
    """Mean seconds of ``fn(*args)`` after one compile/warm-up call."""
    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats


def bench_chunks(config: Config, warmup: int, chunks: int) -> tuple[dict[str, Any], Any, Any]:
    """Warm up (compile, fill the replay), then time ``chunks`` fused training chunks."""
    compiled = compile_trainer(config)
    start = time.perf_counter()
    state = jax.block_until_ready(compiled.init(seed_keys(config)))
    state, metrics = jax.block_until_ready(compiled.train_chunk(state))
    first_chunk = time.perf_counter() - start
    for _ in range(warmup - 1):
        state, metrics = compiled.train_chunk(state)
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - start
    while int(jax.device_get(state.updates).min()) == 0:  # the replay cannot sample yet
        state, metrics = compiled.train_chunk(state)
    t_before = int(jax.device_get(state.t_env).sum())
    start = time.perf_counter()
    for _ in range(chunks):
        state, metrics = compiled.train_chunk(state)
    jax.block_until_ready(state)
    seconds = time.perf_counter() - start
    steps = int(jax.device_get(state.t_env).sum()) - t_before
    result = {
        "seeds": config.seeds,
        "chunks": chunks,
        "iterations_per_chunk": config.iterations_per_call,
        "seconds_per_chunk": seconds / chunks,
        "env_steps": steps,
        "env_steps_per_s": steps / seconds,
        "env_steps_per_s_per_seed": steps / seconds / config.seeds,
        "init_and_first_chunk_seconds": first_chunk,
        "warmup_seconds_incl_compile": compile_s,
        "mean_episode_length": float(jax.device_get(metrics["episode_length"]).mean()),
    }
    return result, compiled, state


def bench_parts(config: Config, compiled, state, repeats: int) -> dict[str, float]:
    """One jitted update (sampled batch, seed 0) and one jitted collection, timed alone."""
    trainer = compiled.trainer
    seed0 = jax.tree.map(lambda x: x[0], state)
    buffer = fbx.make_item_buffer(config.buffer_size, config.batch_size, config.batch_size,
                                  add_sequences=True, add_batches=False)  # fmt: skip  # = train.py
    batch = jax.jit(buffer.sample)(seed0.replay, jax.random.PRNGKey(1)).experience
    _, observe = recorder(trainer.env)
    optimizer = make_optimizer(config)

    @jax.jit
    def one_update(params, target_params, opt_state, batch, key):
        return update(
            params, target_params, opt_state, batch, key, config, trainer.nets, observe, optimizer
        )

    update_args = (seed0.params, seed0.target_params, seed0.opt_state, batch, jax.random.PRNGKey(2))
    update_s = time_calls(one_update, update_args, repeats)

    @jax.jit
    def one_collect(params, key):
        eps = jnp.float32(config.epsilon_finish)
        _, stats = collect(trainer.env, trainer.nets, config, params, key, config.n_envs, eps, 0.0)
        return stats["length"].sum()

    collect_s = time_calls(one_collect, (seed0.params, jax.random.PRNGKey(3)), repeats)
    steps = int(one_collect(seed0.params, jax.random.PRNGKey(3)))
    return {
        "update_ms": 1e3 * update_s,
        "collect_ms": 1e3 * collect_s,
        "collect_env_steps": steps,
        "collect_env_steps_per_s": steps / collect_s,
    }


def bench_random(config: Config, env, n_steps: int) -> dict[str, float]:
    rollout = make_random_rollout(env, n_envs=config.n_envs, n_steps=n_steps)
    seconds = time_calls(rollout, (jax.random.PRNGKey(0),), 1)
    return {
        "env_steps": config.n_envs * n_steps,
        "env_steps_per_s": config.n_envs * n_steps / seconds,
    }


def print_table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> None:
    """columns: (header, format spec, row key); the first column is left-aligned."""
    widths = [max(len(h), 6) for h, _, _ in columns]
    lines = [[h for h, _, _ in columns]]
    lines += [[format(row[key], spec) for _, spec, key in columns] for row in rows]
    for first, *rest in lines:
        print(first.ljust(widths[0]), *(c.rjust(w) for c, w in zip(rest, widths[1:], strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--maps", nargs="+", default=["3m", "8m"])
    parser.add_argument("--seeds-list", nargs="+", type=int, default=[1, 4, 8])
    parser.add_argument("--chunks", type=int, default=10, help="timed chunks per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="untimed chunks (compile, fill)")
    parser.add_argument("--buffer-size", type=int, default=512, help="replay episodes")
    parser.add_argument("--update-repeats", type=int, default=50)
    parser.add_argument(
        "--unroll-windows", type=int, default=4, help="Config.unroll_windows (1: unroll padding)"
    )
    parser.add_argument(
        "--seed-vmap", type=int, default=0, help="Config.seed_vmap (0: auto, 1 on CPU)"
    )
    parser.add_argument("--random-steps", type=int, default=2_000, help="steps per env")
    parser.add_argument("--out", type=Path, default=Path("results/bench_train.json"))
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; QMIX, authors' network sizes,")
    print(f"n_envs 8, batch 32, 1 update/iteration, replay {args.buffer_size} episodes (small)")
    report: dict[str, Any] = {
        "jax": jax.__version__,
        "platform": jax.devices()[0].platform,
        "buffer_size": args.buffer_size,
        "unroll_windows": args.unroll_windows,
        "seed_vmap": args.seed_vmap,
        "targets": {"3m_steps_per_s_per_seed": TARGET_STEPS_PER_SEED, "8_seeds_time": 4.0},
        "maps": {},
    }
    scaling_rows: list[dict[str, Any]] = []
    base_seeds = 1 if 1 in args.seeds_list else min(args.seeds_list)
    for map_name in args.maps:
        results: dict[str, Any] = {"scaling": []}
        for seeds in sorted(set(args.seeds_list)):
            config = bench_config(
                map_name, seeds, args.buffer_size, args.unroll_windows, args.seed_vmap
            )
            row, compiled, state = bench_chunks(config, args.warmup, args.chunks)
            rate, chunk_s = row["env_steps_per_s_per_seed"], row["seconds_per_chunk"]
            print(f"  {map_name} seeds={seeds}: {rate:,.0f} steps/s/seed, {chunk_s:.3f} s/chunk")
            if seeds == base_seeds:
                results["train"] = row
                results["parts"] = bench_parts(config, compiled, state, args.update_repeats)
                results["random"] = bench_random(config, compiled.trainer.env, args.random_steps)
            results["scaling"].append(row)
            del compiled, state
        base = results["train"]
        for row in results["scaling"]:
            row["time_vs_base"] = row["seconds_per_chunk"] / base["seconds_per_chunk"]
            rate = row["env_steps_per_s_per_seed"]  # per step: steps per chunk differ
            row["step_time_vs_base"] = base["env_steps_per_s_per_seed"] / rate
            scaling_rows.append({"map": map_name, **{k: row[k] for k in SCALING_COLUMNS}})
        results.update(
            map=map_name,
            train_per_seed=base["env_steps_per_s_per_seed"],
            random_rate=results["random"]["env_steps_per_s"],
            train_over_random=base["env_steps_per_s"] / results["random"]["env_steps_per_s"],
            iteration_ms=1e3 * base["seconds_per_chunk"] / base["iterations_per_chunk"],
            update_ms=results["parts"]["update_ms"],
            collect_ms=results["parts"]["collect_ms"],
        )
        report["maps"][map_name] = results

    print()
    print_table(
        list(report["maps"].values()),
        [("map", "", "map"), ("train steps/s/seed", ",.0f", "train_per_seed"),
         ("random steps/s", ",.0f", "random_rate"), ("train/random", ".2f", "train_over_random"),
         ("iteration ms", ".1f", "iteration_ms"), ("update ms", ".1f", "update_ms"),
         ("collect ms", ".1f", "collect_ms")],
    )  # fmt: skip
    print(
        "  iteration = collect 8 episodes + 1 update (fused); update and collect timed alone "
        "(seed 0).\n  The random policy auto-resets; training runs whole episodes."
    )
    if "3m" in report["maps"]:
        got = report["maps"]["3m"]["train"]["env_steps_per_s_per_seed"]
        ok = "PASS" if got >= TARGET_STEPS_PER_SEED else "FAIL"
        print(f"target 3m >= {TARGET_STEPS_PER_SEED:,} steps/s per seed: {got:,.0f}  {ok}")
    print()
    print_table(
        scaling_rows,
        [("map", "", "map"), ("seeds", "d", "seeds"), ("s/chunk", ".3f", "seconds_per_chunk"),
         ("x 1 seed", ".2f", "time_vs_base"), ("x per step", ".2f", "step_time_vs_base"),
         ("steps/s", ",.0f", "env_steps_per_s"), ("steps/s/seed", ",.0f", "env_steps_per_s_per_seed"),
         ("ep len", ".1f", "mean_episode_length")],
    )  # fmt: skip
    for row in scaling_rows:
        if row["seeds"] == 8 and base_seeds == 1:
            ok = "PASS" if row["time_vs_base"] <= TARGET_8_SEED_RATIO else "FAIL"
            print(f"target {row['map']}: 8 seeds <= {TARGET_8_SEED_RATIO:g}x one seed's time: {ok}")
    args.out.write_text(json.dumps(report, indent=1))
    csv_path = args.out.with_suffix(".csv")
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(scaling_rows[0]))
        writer.writeheader()
        writer.writerows(scaling_rows)
    print(f"\nwrote {args.out} and {csv_path}")


if __name__ == "__main__":
    main()
