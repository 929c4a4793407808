"""What IGM-DA and BC cost per env step, relative to the plain algorithm (issue 4).

For each map and mixer it times the fused training loop (``compiled.compile_trainer``: collect 8
episodes, replay, 1 update of batch 32, target sync; the authors' network sizes, 1 seed,
sight range 0) for the plain algorithm, ``-da`` and ``-bc``, and prints seconds per env step
and the ratio to the plain algorithm. Target: ``-da`` costs at most 1.6x.

Measurements alternate between the algorithms ``--rounds`` times (A B C A B C ...) and the
best round of each is kept, so load on the shared machine hits all of them alike.

    python experiments/bench_da_cost.py [--maps 3m 8m] [--mixers qmix vdn qplex dmix]
        [--rounds 2] [--chunks 8] [--out results/bench_da_cost.json]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

import jax
from bench_train import bench_chunks, print_table

from igmda_jax.core.config import Config
from igmda_jax.core.presets import make_config

TARGET_DA_RATIO = 1.6


def da_bench_config(alg: str, map_name: str, buffer_size: int) -> Config:
    return make_config(
        "authors", alg=alg, map=map_name, sight_range=0.0, n_envs=8, batch_size=32,
        updates_per_iteration=1, buffer_size=buffer_size, seeds=1,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--maps", nargs="+", default=["3m", "8m"])
    parser.add_argument("--mixers", nargs="+", default=["qmix", "vdn", "qplex", "dmix"])
    parser.add_argument("--rounds", type=int, default=2, help="alternating repeats; best kept")
    parser.add_argument("--chunks", type=int, default=8, help="timed chunks per measurement")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--buffer-size", type=int, default=512)
    parser.add_argument("--out", type=Path, default=Path("results/bench_da_cost.json"))
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; authors' sizes, sight 0, 1 seed,")
    print("8 envs, batch 32, 1 update/iteration; best of alternating rounds")
    rows: list[dict[str, Any]] = []
    for map_name in args.maps:
        for mixer in args.mixers:
            algs = [mixer, f"{mixer}-da", f"{mixer}-bc"]
            best: dict[str, dict[str, Any]] = {}
            for _ in range(args.rounds):
                for alg in algs:
                    config = da_bench_config(alg, map_name, args.buffer_size)
                    row, _, _ = bench_chunks(config, args.warmup, args.chunks)
                    step_us = 1e6 / row["env_steps_per_s"]
                    print(f"  {map_name} {alg}: {step_us:.1f} us/env step")
                    if alg not in best or step_us < best[alg]["us_per_step"]:
                        best[alg] = {"us_per_step": step_us, **row}
            plain = best[mixer]["us_per_step"]
            for alg in algs:
                rows.append(
                    {
                        "map": map_name,
                        "alg": alg,
                        "us_per_env_step": best[alg]["us_per_step"],
                        "vs_plain": best[alg]["us_per_step"] / plain,
                        "env_steps_per_s": best[alg]["env_steps_per_s"],
                        "mean_episode_length": best[alg]["mean_episode_length"],
                    }
                )
    print()
    print_table(
        rows,
        [("map", "", "map"), ("alg", "", "alg"), ("us/step", ".1f", "us_per_env_step"),
         ("x plain", ".2f", "vs_plain"), ("steps/s", ",.0f", "env_steps_per_s"),
         ("ep len", ".1f", "mean_episode_length")],
    )  # fmt: skip
    for row in rows:
        if row["alg"].endswith("-da"):
            ok = "PASS" if row["vs_plain"] <= TARGET_DA_RATIO else "FAIL"
            print(f"target {row['map']} {row['alg']} <= {TARGET_DA_RATIO}x plain: "
                  f"{row['vs_plain']:.2f}x {ok}")  # fmt: skip
    args.out.write_text(json.dumps({"jax": jax.__version__, "rows": rows}, indent=1))
    with args.out.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"\nwrote {args.out} and {args.out.with_suffix('.csv')}")


if __name__ == "__main__":
    main()
