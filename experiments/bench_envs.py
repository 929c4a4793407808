"""Random-policy environment throughput: our SMAX maps at sight 0 vs raw JaxMARL SMAX.

Prints env steps/s (one step = one environment advancing one step) for 1, 8 and 64 vmapped
environments on 3m, 8m, 3s5z and MMM2, for our wrapper (envs.make(map, sight_range=0)) and for
JaxMARL's HeuristicEnemySMAX on the same map and batch, and their ratio (raw / ours; the target
is <= 1.5). MMM2 has no raw counterpart (SMAX has no medivac).

    python experiments/bench_envs.py [--maps 3m 8m] [--batches 1 8 64] [--total-steps 30000]

``igmda bench`` measures the same at 8 envs (its timing functions live in
``igmda_jax.tools.bench_cases``); this script adds the 1- and 64-env batches.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax

import envs
from envs.rollout import make_random_rollout
from igmda_jax.tools.bench_cases import make_raw_rollout, time_rollout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--maps", nargs="+", default=["3m", "8m", "3s5z", "MMM2"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 64])
    parser.add_argument("--total-steps", type=int, default=30_000)
    parser.add_argument("--out", default="results/bench_envs.json")
    args = parser.parse_args()
    key = jax.random.PRNGKey(0)
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; random policy, sight 0")
    print(f"{'map':<8} {'envs':>5} {'ours steps/s':>13} {'raw steps/s':>12} {'raw/ours':>9}")
    rows = []
    for map_name in args.maps:
        env = envs.make(map_name, sight_range=0.0)
        for n_envs in args.batches:
            n_steps = max(100, args.total_steps // n_envs)
            ours = n_envs * n_steps / time_rollout(make_random_rollout(env, n_envs, n_steps), key)
            if map_name in envs.smax.MAPS and env.spec.has_medivac:
                raw_text, ratio_text = "n/a", "n/a"
            else:
                raw_rollout = make_raw_rollout(map_name, n_envs, n_steps, env.episode_limit)
                raw = n_envs * n_steps / time_rollout(raw_rollout, key)
                raw_text, ratio_text = f"{raw:12,.0f}", f"{raw / ours:9.2f}"
            print(
                f"{map_name:<8} {n_envs:>5} {ours:13,.0f} {raw_text:>12} {ratio_text:>9}",
                flush=True,
            )
            rows.append(
                {
                    "map": map_name,
                    "n_envs": n_envs,
                    "ours_steps_per_s": round(ours),
                    "raw_steps_per_s": None if raw_text == "n/a" else round(raw),
                }
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"jax": jax.__version__, "sight_range": 0.0, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
