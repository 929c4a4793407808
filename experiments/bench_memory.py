"""Peak memory of fused training with a full-size replay (issue 3, memory requirement).

Requirement: a 5000-episode replay on 8m with 4 vmapped seeds runs within 8 GiB peak RSS.
In this one process (no subprocess), it builds ``make_config(--preset, alg=--alg, map=--map,
seeds=--seeds, buffer_size=--buffer-size)``, compiles the trainer (``compiled.compile_trainer``),
initialises the state and runs ``--chunks`` training chunks (more if no update has run
yet), then prints

* the process's peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, KiB on Linux)
  after imports, after init and after the chunks, and whether it is under ``--limit-gib``;
* the replay buffer's bytes (sum of ``nbytes`` over the leaves of ``state.replay``, all
  seeds), bytes per stored episode and per stored step (seeds x buffer_size x
  episode_limit steps), and its share of the peak;
* the replay's leaves (shape, dtype, MiB), largest first.

The replay is allocated in full at init, so a few chunks show the peak of a long run.

    python experiments/bench_memory.py [--map 8m] [--seeds 4] [--buffer-size 5000]
        [--alg qmix] [--chunks 3] [--out results/bench_memory.json]

Writes the numbers to ``--out`` (JSON) and the leaf table next to it (CSV).
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from igmda_jax.compiled import compile_trainer, seed_keys
from igmda_jax.core.presets import make_config

GIB = 1024**3


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def replay_leaves(replay: Any) -> list[dict[str, Any]]:
    """Every array leaf of the replay: path, shape, dtype, bytes; largest first."""
    flat, _ = jax.tree_util.tree_flatten_with_path(replay)
    leaves = [
        {
            "leaf": jax.tree_util.keystr(path),
            "shape": "x".join(str(d) for d in np.shape(leaf)),
            "dtype": str(leaf.dtype),
            "bytes": int(leaf.nbytes),
        }
        for path, leaf in flat
    ]
    return sorted(leaves, key=lambda row: -row["bytes"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--map", default="8m")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--buffer-size", type=int, default=5000, help="replay episodes")
    parser.add_argument("--alg", default="qmix")
    parser.add_argument("--preset", default="authors")
    parser.add_argument("--chunks", type=int, default=3, help="training chunks after init")
    parser.add_argument("--limit-gib", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=Path("results/bench_memory.json"))
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)

    rss_imports = peak_rss_bytes()
    config = make_config(
        args.preset, alg=args.alg, map=args.map, seeds=args.seeds, buffer_size=args.buffer_size
    )
    start = time.perf_counter()
    compiled = compile_trainer(config)
    state = jax.block_until_ready(compiled.init(seed_keys(config)))
    rss_init = peak_rss_bytes()
    chunks = 0
    while chunks < args.chunks or int(np.min(jax.device_get(state.updates))) == 0:
        state, _ = compiled.train_chunk(state)  # at least --chunks, and until updates ran
        chunks += 1
    jax.block_until_ready(state)
    seconds = time.perf_counter() - start
    rss_peak = peak_rss_bytes()

    leaves = replay_leaves(state.replay)
    replay_bytes = sum(row["bytes"] for row in leaves)
    episode_limit = compiled.trainer.env.episode_limit
    episodes = config.seeds * config.buffer_size
    result = {
        "jax": jax.__version__,
        "platform": jax.devices()[0].platform,
        "alg": config.alg,
        "preset": config.preset,
        "map": config.map,
        "seeds": config.seeds,
        "buffer_size": config.buffer_size,
        "episode_limit": episode_limit,
        "chunks": chunks,
        "t_env": int(np.sum(jax.device_get(state.t_env))),
        "updates": int(np.sum(jax.device_get(state.updates))),
        "seconds_incl_compile": seconds,
        "peak_rss_after_imports_bytes": rss_imports,
        "peak_rss_after_init_bytes": rss_init,
        "peak_rss_bytes": rss_peak,
        "replay_bytes": replay_bytes,
        "replay_bytes_per_episode": replay_bytes / episodes,
        "replay_bytes_per_step": replay_bytes / (episodes * episode_limit),
        "limit_bytes": int(args.limit_gib * GIB),
        "under_limit": rss_peak < args.limit_gib * GIB,
    }

    print(f"jax {result['jax']} on {result['platform']}")
    print(
        f"{config.alg} ({config.preset}) on {config.map}: {config.seeds} seeds, replay "
        f"{config.buffer_size} episodes x {episode_limit} steps per seed; {chunks} chunks "
        f"({result['t_env']:,} env steps, {result['updates']:,} updates over all seeds) "
        f"in {seconds:.1f} s incl. compile"
    )
    print()
    for label, value in [
        ("peak RSS after imports", rss_imports),
        ("peak RSS after init", rss_init),
        ("peak RSS after chunks", rss_peak),
        ("replay buffer (all seeds)", replay_bytes),
    ]:
        print(f"{label:<28} {value / GIB:9.3f} GiB  {value / 2**20:11,.1f} MiB")
    print(f"{'replay bytes per episode':<28} {result['replay_bytes_per_episode']:13,.0f}")
    print(f"{'replay bytes per step':<28} {result['replay_bytes_per_step']:13,.1f}")
    print(f"{'replay / peak RSS':<28} {replay_bytes / rss_peak:13.2f}")
    verdict = "PASS" if result["under_limit"] else "FAIL"
    full_size = (config.map, config.seeds, config.buffer_size) == ("8m", 4, 5000)
    note = "the requirement's size" if full_size else "NOT the requirement's 8m/4 seeds/5000"
    print(f"peak RSS {rss_peak / GIB:.2f} GiB < {args.limit_gib:g} GiB ({note}): {verdict}")
    print()
    print(f"{'replay leaf':<44} {'shape':>26} {'dtype':>8} {'MiB':>10}")
    for row in leaves:
        print(
            f"{row['leaf'][:44]:<44} {row['shape']:>26} {row['dtype']:>8} "
            f"{row['bytes'] / 2**20:10,.1f}"
        )

    args.out.write_text(json.dumps({**result, "replay_leaves": leaves}, indent=1))
    csv_path = args.out.with_suffix(".csv")
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["leaf", "shape", "dtype", "bytes"])
        writer.writeheader()
        writer.writerows(leaves)
    print(f"\nwrote {args.out} and {csv_path}")


if __name__ == "__main__":
    main()
