"""Learning speed of QMIX: greedy win rate against env steps and wall time (issue 3).

Trains QMIX with each preset (``smax``: ours; ``authors``: PyMARL's settings; ``finetuned``:
pymarl2's) on each map at full sight (``sight_range=None``) with the ``--reward`` of the SMAX
maps (default: SMAC's, the Config default), ``--seeds`` seeds in one program, up to
``--t-max`` env steps, evaluating greedily every ``--test-interval`` steps. Every run is a
normal run folder (``igmda_jax.run.run``: config.json, metrics.jsonl, checkpoints/) under
``--runs-dir/<preset>_<map>``; a folder that already holds a run is resumed, and one that
already reached ``--t-max`` is not touched, so the benchmark continues across sessions.

From each run's metrics.jsonl it prints, per (preset, map): the env steps and wall time at
which the greedy win rate averaged over seeds first reaches 50 % and 80 %, and the final win
rate. Wall time is the ``wall_time`` column that run() records: seconds since the run
started, including jit compilation of training and evaluation, summed over resumed sessions
(each resume compiles again; Python start-up and imports are not counted).
Target: 3m reaches >= 80 % greedy wins within 180 s of wall time.

    python experiments/bench_learning.py [--maps 3m 5m_vs_6m] [--presets authors finetuned]
        [--t-max 1000000] [--seeds 3] [--test-interval 10000] [--reward smac]
        [--runs-dir runs/bench_learning]
        [--only-report] [--out results/bench_learning.json]

Writes the table to ``--out`` (JSON), every evaluation row (preset, map, seed, eval, t_env,
wall_time, win_rate, return) to the same path with .csv, and a plot (.png: seed-mean win rate
and each seed's against env steps, a panel per map, a colour per preset).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from igmda_jax.core.config import REWARDS, Config
from igmda_jax.core.presets import make_config
from igmda_jax.run import run

THRESHOLDS = (0.5, 0.8)
TARGET_3M_SECONDS = 180.0  # 3m: >= 80 % greedy win rate within 3 minutes, compile included
CSV_FIELDS = ["preset", "map", "seed", "eval", "t_env", "wall_time", "win_rate", "return"]


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def train(config: Config, run_dir: Path, progress: bool) -> dict[str, Any]:
    """Start, resume or skip the run in ``run_dir``; returns what this session did."""
    rows = read_metrics(run_dir)
    if rows and min(r["t_env"] for r in rows if r["eval"] == rows[-1]["eval"]) >= config.t_max:
        return {"action": "skipped (reached t_max)", "session_seconds": 0.0}
    resume = (run_dir / "config.json").exists()
    start = time.perf_counter()
    summary = run(config, run_dir, resume=resume, progress=progress)
    return {
        "action": "resumed" if resume else "trained",
        "session_seconds": time.perf_counter() - start,
        "final_win_rate": summary["win_rate"],
    }


def evaluations(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per evaluation: t_env (min over seeds), wall_time, win rates of all seeds."""
    by_eval: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_eval.setdefault(row["eval"], []).append(row)
    return [
        {
            "eval": index,
            "t_env": min(r["t_env"] for r in group),
            "wall_time": max(r["wall_time"] for r in group),
            "win_rates": [r["win_rate"] for r in group],
        }
        for index, group in sorted(by_eval.items())
    ]


def summarize(evals: list[dict[str, Any]]) -> dict[str, Any]:
    """Env steps and wall time where the seed-mean win rate first reaches each threshold."""
    result: dict[str, Any] = {"evaluations": len(evals)}
    for threshold in THRESHOLDS:
        hit = next((e for e in evals if np.mean(e["win_rates"]) >= threshold), None)
        name = f"{round(threshold * 100)}"
        result[f"t_env_{name}"] = hit["t_env"] if hit else None
        result[f"wall_{name}"] = hit["wall_time"] if hit else None
    last = evals[-1] if evals else None
    result["t_env_final"] = last["t_env"] if last else None
    result["wall_final"] = last["wall_time"] if last else None
    result["win_final"] = float(np.mean(last["win_rates"])) if last else None
    return result


def plot(curves: dict[tuple[str, str], list[dict[str, Any]]], maps: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(maps), figsize=(5 * len(maps), 3.8), squeeze=False)
    for ax, map_name in zip(axes[0], maps, strict=True):
        for (preset, curve_map), evals in curves.items():
            if curve_map != map_name or not evals:
                continue
            steps = np.array([e["t_env"] for e in evals])
            wins = np.array([e["win_rates"] for e in evals])  # [evals, seeds]
            (line,) = ax.plot(steps, wins.mean(axis=1), label=preset, linewidth=2)
            ax.plot(steps, wins, color=line.get_color(), alpha=0.3, linewidth=0.8)
        ax.set_title(f"QMIX on {map_name} (full sight)")
        ax.set_xlabel("env steps")
        ax.set_ylabel("greedy win rate (seed mean; thin: each seed)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--maps", nargs="+", default=["3m", "5m_vs_6m"])
    parser.add_argument("--presets", nargs="+", default=["smax", "finetuned", "authors"])
    parser.add_argument("--t-max", type=int, default=1_000_000)
    parser.add_argument("--seeds", type=int, default=3, help="vmapped seeds per run")
    parser.add_argument("--test-interval", type=int, default=10_000)
    parser.add_argument("--reward", choices=REWARDS, default=Config.reward)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/bench_learning"))
    parser.add_argument("--only-report", action="store_true", help="no training; report only")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("results/bench_learning.json"))
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)

    table: list[dict[str, Any]] = []
    curves: dict[tuple[str, str], list[dict[str, Any]]] = {}
    csv_rows: list[dict[str, Any]] = []
    for preset in args.presets:
        for map_name in args.maps:
            run_dir = args.runs_dir / f"{preset}_{map_name}"
            session: dict[str, Any] = {"action": "report only"}
            if not args.only_report:
                config = make_config(
                    preset,
                    alg="qmix",
                    map=map_name,
                    sight_range=None,
                    seeds=args.seeds,
                    t_max=args.t_max,
                    test_interval=args.test_interval,
                    reward=args.reward,
                )
                print(f"== {preset} {map_name}: {run_dir}", flush=True)
                session = train(config, run_dir, progress=not args.no_progress)
            rows = read_metrics(run_dir)
            evals = evaluations(rows)
            curves[(preset, map_name)] = evals
            seeds = sorted({r["seed"] for r in rows})
            table.append(
                {"preset": preset, "map": map_name, "run_dir": str(run_dir), "seeds": seeds,
                 **summarize(evals), "session": session}
            )  # fmt: skip
            csv_rows += [
                {"preset": preset, "map": map_name, **{k: r.get(k) for k in CSV_FIELDS[2:]}}
                for r in rows
            ]

    print()
    print("QMIX, full sight; win rate = greedy test win rate averaged over seeds")
    header = (
        f"{'preset':<10} {'map':<9} {'seeds':>5} {'t_env@50%':>10} {'wall@50%':>9} "
        f"{'t_env@80%':>10} {'wall@80%':>9} {'final t_env':>11} {'final win':>9} {'wall s':>8}"
    )
    print(header)
    for row in table:
        print(
            f"{row['preset']:<10} {row['map']:<9} {len(row['seeds']):>5} "
            f"{fmt(row['t_env_50'], ',d'):>10} {fmt(row['wall_50'], '.0f'):>9} "
            f"{fmt(row['t_env_80'], ',d'):>10} {fmt(row['wall_80'], '.0f'):>9} "
            f"{fmt(row['t_env_final'], ',d'):>11} {fmt(row['win_final'], '.2f'):>9} "
            f"{fmt(row['wall_final'], '.0f'):>8}"
        )
    print("wall = seconds since the run started (compile included), from metrics.jsonl")
    for row in table:
        if row["map"] == "3m" and row["evaluations"]:
            wall = row["wall_80"]
            ok = "PASS" if wall is not None and wall <= TARGET_3M_SECONDS else "FAIL"
            print(
                f"target 3m >= 80 % within {TARGET_3M_SECONDS:.0f} s ({row['preset']}): "
                f"{fmt(wall, '.0f')} s  {ok}"
            )

        if row["map"] == "5m_vs_6m" and row["evaluations"]:
            early = [e for e in curves[(row["preset"], "5m_vs_6m")] if e["t_env"] <= 1_000_000]
            best = max(float(np.mean(e["win_rates"])) for e in early)
            print(
                f"target 5m_vs_6m clearly > 0 % within 1M steps ({row['preset']}): best seed-mean "
                f"win rate {best:.2f} up to t_env {early[-1]['t_env']:,}"
            )
    args.out.write_text(json.dumps({"thresholds": THRESHOLDS, "runs": table}, indent=1))
    csv_path, png_path = args.out.with_suffix(".csv"), args.out.with_suffix(".png")
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(csv_rows)
    plot(curves, args.maps, png_path)
    print(f"\nwrote {args.out}, {csv_path} and {png_path}")


if __name__ == "__main__":
    main()
