"""What the paper's Table 1 costs on this machine: 6 maps x {qmix, qplex, dmix} x {plain, -da}
x 3 seeds x 1M env steps at sight 0, with `igmda train`'s defaults.

For each map and algorithm it builds the run exactly as ``igmda train --alg A --map M
--sight-range 0 --seeds 3`` does (default preset, SMAC's reward and own features), and measures:

* ``compile_s``: lowering + XLA compilation of the fused training chunk (``train_chunk``);
* ``eval_compile_s``: the first greedy evaluation (compilation + one run), every actor of the
  run (-da: learner and expert);
* ``env_steps_per_s``: env steps per second *per seed* with the 3 seeds training together,
  timed over ``--chunks`` chunks once the replay can sample (compile excluded). This is the
  start of training (epsilon near 1): later episodes have other lengths, so the rate drifts;
  the pilot sweep's wall times check the estimate;
* ``eval_s``: one warm greedy evaluation of ``test_nepisode`` episodes per seed (all actors);
* ``cell_hours``: t_max / env_steps_per_s + compile + (t_max / test_interval + 1) evaluations.

With ``--jobs N`` the configurations are measured N at a time, each worker process on
``cores // N`` XLA CPU devices, which is how ``igmda sweep --jobs N`` runs them: the rates are
taken beside the other runs, and the grid's wall time is the runs' list schedule
(``igmda_jax.sweeps.plan.wall_hours``), not their sum.

Run it alone on the machine (pause other work): it is a timing. Writes ``--out`` (JSON, the
``rows`` that ``igmda sweep --dry-run`` reads) and a Markdown table beside it.

    python experiments/table1_cost.py [--maps ...] [--algs ...] [--chunks 2] [--seeds 3]
        [--jobs 1] [--t-max 1000000] [--out results/table1_cost.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jax

from igmda_jax.compiled import compile_trainer, evaluation_keys, seed_keys
from igmda_jax.core.presets import make_config
from igmda_jax.sweeps.launchers import cpu_devices_env
from igmda_jax.sweeps.plan import wall_hours
from igmda_jax.tools.bench_cases import time_chunks, warm_up

PAPER_MAPS = ["3s5z", "5m_vs_6m", "MMM2", "8m", "3s_vs_5z", "8m_vs_9m"]
ALGS = ["qmix", "qmix-da", "qplex", "qplex-da", "dmix", "dmix-da"]


def measure(map_name: str, alg: str, seeds: int, chunks: int, t_max: int) -> dict[str, Any]:
    """Compile, warm up, and time one configuration (see the module docstring)."""
    config = make_config(alg=alg, map=map_name, sight_range=0.0, seeds=seeds, t_max=t_max)
    compiled = compile_trainer(config)
    keys = seed_keys(config)
    state = jax.block_until_ready(compiled.init(keys))
    start = time.perf_counter()
    train_chunk = compiled.train_chunk.lower(state).compile()
    compile_s = time.perf_counter() - start

    actors = ["deployed", "expert"] if config.uses_expert else ["deployed"]

    def evaluate_all() -> None:
        for actor in actors:
            jax.block_until_ready(compiled.evaluate(state, evaluation_keys(config, 0), actor))

    start = time.perf_counter()
    evaluate_all()
    eval_compile_s = time.perf_counter() - start
    warmup_start = time.perf_counter()
    state = warm_up(train_chunk, state)
    warmup_s = time.perf_counter() - warmup_start
    state, metrics, steps, seconds = time_chunks(compiled, train_chunk, state, chunks)
    start = time.perf_counter()
    evaluate_all()
    eval_s = time.perf_counter() - start
    rate = steps / seconds / seeds
    evaluations = t_max // config.test_interval + 1
    cell_s = t_max / rate + compile_s + eval_compile_s + evaluations * eval_s
    return {
        "map": map_name,
        "alg": alg,
        "seeds": seeds,
        "env_steps_per_s": round(rate, 1),
        "compile_s": round(compile_s, 1),
        "eval_compile_s": round(eval_compile_s, 1),
        "eval_s": round(eval_s, 2),
        "warmup_s": round(warmup_s, 1),
        "timed_chunks": chunks,
        "timed_env_steps": steps,
        "mean_episode_length": round(float(jax.device_get(metrics["episode_length"]).mean()), 1),
        "cell_hours": round(cell_s / 3600, 3),
    }


def markdown(report: dict[str, Any]) -> str:
    """Hours per cell (maps x algorithms), env steps/s per seed, and compile seconds."""
    rows = report["rows"]
    algs = [a for a in ALGS if any(r["alg"] == a for r in rows)]
    maps = [m for m in PAPER_MAPS if any(r["map"] == m for r in rows)]
    cell = {(r["map"], r["alg"]): r for r in rows}

    def table(title: str, key: str, fmt: str) -> list[str]:
        lines = [f"### {title}", "", "| map | " + " | ".join(algs) + " |"]
        lines.append("|---|" + "---|" * len(algs))
        for m in maps:
            values = [format(cell[m, a][key], fmt) if (m, a) in cell else "" for a in algs]
            lines.append(f"| {m} | " + " | ".join(values) + " |")
        return [*lines, ""]

    by_map = {m: sum(r["cell_hours"] for r in rows if r["map"] == m) for m in maps}
    by_alg = {a: sum(r["cell_hours"] for r in rows if r["alg"] == a) for a in algs}
    out = [
        "# What the paper's Table 1 costs on this machine",
        "",
        f"`python experiments/table1_cost.py` ({report['platform']}, {report['devices']} "
        f"devices, jax {report['jax']}): `igmda train` defaults (preset `smax`, SMAC's reward, "
        f"`own_features=smac`), sight 0, {report['seeds']} seeds per run trained together, "
        f"{report['t_max']:,} env steps per run.",
        "",
        f"**Full grid: {report['total_hours']:.1f} hours** of this machine, "
        + (
            "one run at a time."
            if report.get("jobs", 1) == 1
            else f"{report['jobs']} runs at a time (`igmda sweep --jobs {report['jobs']}`), "
            f"each on {report['devices']} of the {report['cores']} cores; "
            f"{report['run_hours']:.1f} run-hours in all."
        ),
        "",
        "Most expensive maps: "
        + ", ".join(f"{m} {h:.1f} h" for m, h in sorted(by_map.items(), key=lambda x: -x[1])),
        "",
        "By algorithm: "
        + ", ".join(f"{a} {h:.1f} h" for a, h in sorted(by_alg.items(), key=lambda x: -x[1])),
        "",
        *table("Hours per run (training + compile + evaluations)", "cell_hours", ".2f"),
        *table(
            f"Env steps/s per seed ({report['seeds']} seeds together, compile excluded)",
            "env_steps_per_s",
            ",.0f",
        ),
        *table("Compile seconds of the training chunk", "compile_s", ".0f"),
        *table("First evaluation seconds (compile + run, every actor)", "eval_compile_s", ".0f"),
        "Rates are measured at the start of training (epsilon near 1, replay just able to "
        "sample); episode lengths, and with them the rate, drift as the policy learns.",
        "",
    ]
    return "\n".join(out)


def measure_cells(
    cells: list[tuple[str, str]], args: argparse.Namespace, out: Path
) -> dict[str, Any]:
    """Measure ``cells`` one after another in this process, resuming from ``out``."""
    report: dict[str, Any] = {
        "jax": jax.__version__,
        "platform": jax.devices()[0].platform,
        "devices": len(jax.local_devices()),
        "cores": len(os.sched_getaffinity(0)),
        "jobs": 1,
        "seeds": args.seeds,
        "t_max": args.t_max,
        "rows": [],
    }
    if out.exists():  # resume: keep rows already measured with the same settings
        previous = json.loads(out.read_text())
        if (previous.get("seeds"), previous.get("t_max")) == (args.seeds, args.t_max):
            report["rows"] = previous["rows"]
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["map"], r["alg"]) for r in report["rows"]}
    for map_name, alg in cells:
        if (map_name, alg) in done:
            continue
        row = measure(map_name, alg, args.seeds, args.chunks, args.t_max)
        print(
            f"{map_name:>9} {alg:>9}: {row['env_steps_per_s']:8,.0f} steps/s/seed, "
            f"compile {row['compile_s']:5.1f} s, eval {row['eval_s']:5.2f} s, "
            f"{row['cell_hours']:.2f} h per run",
            flush=True,
        )
        report["rows"].append(row)
        out.write_text(json.dumps(report, indent=1))
    return report


def run_workers(args: argparse.Namespace, cells: list[tuple[str, str]]) -> dict[str, Any]:
    """``args.jobs`` worker processes, worker i measuring cells i, i + jobs, ... at once."""
    command = [sys.executable, __file__, "--seeds", str(args.seeds), "--chunks", str(args.chunks)]
    command += ["--t-max", str(args.t_max), "--maps", *args.maps, "--algs", *args.algs]
    partials = [args.out.with_suffix(f".worker{i}.json") for i in range(args.jobs)]
    workers = [
        subprocess.Popen(
            [*command, "--jobs", str(args.jobs), "--worker", str(i), "--out", str(partial)],
            env={**os.environ, **cpu_devices_env(args.jobs)},
        )
        for i, partial in enumerate(partials)
    ]
    if any(worker.wait() != 0 for worker in workers):
        sys.exit("a worker failed; rerun the same command to resume it")
    reports = [json.loads(partial.read_text()) for partial in partials]
    by_cell = {(r["map"], r["alg"]): r for report in reports for r in report["rows"]}
    return {**reports[0], "jobs": args.jobs, "rows": [by_cell[c] for c in cells]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--maps", nargs="+", default=PAPER_MAPS)
    parser.add_argument("--algs", nargs="+", default=ALGS)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--chunks", type=int, default=2, help="timed chunks per configuration")
    parser.add_argument("--jobs", type=int, default=1, help="configurations measured at once")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--t-max", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=Path("results/table1_cost.json"))
    args = parser.parse_args()
    cells = [(m, a) for m in args.maps for a in args.algs]
    if args.worker is not None:  # one of run_workers' processes
        measure_cells(cells[args.worker :: args.jobs], args, args.out)
        return
    report = run_workers(args, cells) if args.jobs > 1 else measure_cells(cells, args, args.out)
    hours = [r["cell_hours"] for r in report["rows"]]
    report["run_hours"] = round(sum(hours), 2)
    report["total_hours"] = round(wall_hours(hours, report["jobs"]), 2)
    args.out.write_text(json.dumps(report, indent=1))
    args.out.with_suffix(".md").write_text(markdown(report))
    print(f"full grid: {report['total_hours']:.1f} h; wrote {args.out} and its .md")


if __name__ == "__main__":
    main()
