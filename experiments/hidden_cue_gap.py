"""IGM-DA against plain value decomposition on the memory task hidden_cue_long at sight 0.

hidden_cue_long (envs/toy.py): 2 agents, 8 decisions, 5 actions; the goal is shown to a sight-0
agent only at the first step and rewarded only at the last (return 2.0 when both agents play
it, 2/5 = 0.4 expected for a memoryless policy). The expert of ``-da`` sees the goal at every
step. For each algorithm (default: every mixer, plain and ``-da``) it trains ``--seeds`` vmapped
seeds with the ``smax`` preset (``igmda_jax.run.run``; run folders under ``--runs-dir``,
resumed if present) and prints the deployed policy's greedy return per evaluation (mean over
seeds) and the first env step where every seed reaches 90 % of the optimum.

    python experiments/hidden_cue_gap.py [--algs qmix qmix-da ...] [--t-max 150000]
        [--seeds 3] [--test-interval 5000] [--runs-dir runs/hidden_cue_gap]
        [--out results/hidden_cue_gap.json]

Writes the table (JSON), every evaluation row (CSV beside it) and a plot (PNG beside it).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
from bench_learning import read_metrics, train

from envs.toy import optimal_return
from igmda_jax.core.presets import make_config

MAP = "hidden_cue_long"
DEFAULT_ALGS = [f"{mixer}{variant}" for mixer in ("vdn", "qmix", "qplex", "dmix")
                for variant in ("", "-da")]  # fmt: skip


def curve(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per evaluation: t_env (min over seeds) and every seed's greedy return."""
    by_eval: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_eval.setdefault(row["eval"], []).append(row)
    return [
        {"t_env": min(r["t_env"] for r in group), "returns": [r["return"] for r in group]}
        for _, group in sorted(by_eval.items())
    ]


def plot(curves: dict[str, list[dict[str, Any]]], optimum: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    colors = {mixer: f"C{i}" for i, mixer in enumerate(("vdn", "qmix", "qplex", "dmix"))}
    for alg, evals in curves.items():
        steps = np.array([e["t_env"] for e in evals])
        means = np.array([np.mean(e["returns"]) for e in evals])
        style = "-" if alg.endswith("-da") else "--"
        ax.plot(steps, means, style, color=colors.get(alg.split("-")[0]), label=alg)
    ax.axhline(optimum, color="grey", linewidth=0.8)
    ax.set_title(f"{MAP}, sight 0: greedy return of the deployed policy\n(mean over seeds)")
    ax.set_xlabel("env steps")
    ax.set_ylabel("return (optimum 2.0, memoryless 0.4)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algs", nargs="+", default=DEFAULT_ALGS)
    parser.add_argument("--t-max", type=int, default=150_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--test-interval", type=int, default=5_000)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/hidden_cue_gap"))
    parser.add_argument("--out", type=Path, default=Path("results/hidden_cue_gap.json"))
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    optimum = optimal_return(MAP)
    curves: dict[str, list[dict[str, Any]]] = {}
    table = []
    for alg in args.algs:
        config = make_config(
            "smax", alg=alg, map=MAP, sight_range=0.0, seeds=args.seeds, t_max=args.t_max,
            test_interval=args.test_interval, save_interval=50_000,
        )  # fmt: skip
        run_dir = args.runs_dir / alg
        train(config, run_dir, progress=not args.no_progress)
        curves[alg] = curve(read_metrics(run_dir))
        solved = next((e["t_env"] for e in curves[alg] if min(e["returns"]) >= 0.9 * optimum), None)
        final = curves[alg][-1]
        table.append(
            {
                "alg": alg,
                "t_env_all_seeds_90pct": solved,
                "final_t_env": final["t_env"],
                "final_return_mean": float(np.mean(final["returns"])),
                "final_return_per_seed": final["returns"],
            }
        )
        print(
            f"{alg:<10} all seeds >= 90 % of optimum at: {solved if solved else 'never':>8}   "
            f"final mean return {table[-1]['final_return_mean']:.2f} at {final['t_env']}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"map": MAP, "sight_range": 0.0, "rows": table}, indent=1))
    with args.out.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["alg", "seed_index", "t_env", "return"])
        for alg, evals in curves.items():
            for e in evals:
                for seed, value in enumerate(e["returns"]):
                    writer.writerow([alg, seed, e["t_env"], value])
    plot(curves, optimum, args.out.with_suffix(".png"))
    print(f"wrote {args.out} (+ .csv, .png)")


if __name__ == "__main__":
    main()
