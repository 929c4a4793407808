"""``igmda bench``: how fast igmda-jax runs on this machine, as one table and one JSON.

    igmda bench [--quick] [--out results/bench.json] [--readme docs/benchmarks.md]
    python -m igmda_jax.tools.bench ...

Every case runs in a fresh process (``igmda_jax.tools.bench_cases``), one at a time, so compile
times and peak memory are each case's own. Reported:

* **env**: random-policy env steps/s of our maps at sight 0 and of raw JaxMARL SMAX, 8
  vmapped environments (the training batch), and raw / ours;
* **train**: ``igmda train``'s fused loop (every default, sight 0) per map and algorithm: env
  steps/s per seed, its ratio to the random-policy env throughput of the same map and batch,
  compile seconds of the training chunk, the process's peak memory;
* **-da cost**: time per env step of qmix-da over qmix, per map;
* **seeds**: S seeds trained together, their time per per-seed env step over one seed's;
* **host**: the host loop over SMAX worker processes (``--backend smax-workers``) with 1, 2, 4
  and 8 workers: the pool's env steps/s alone, training steps/s, and the host's share of an
  iteration (act function + learner update). ``--host`` measures only these and merges them
  into an existing ``--out`` file.

``--quick`` (3m only) finishes within about 5 minutes on a 2-core CPU. The full run's wall time
is written with its results. ``--readme PAGE`` replaces the block of a Markdown page
(ours: docs/benchmarks.md) between
``<!-- bench:begin -->`` and ``<!-- bench:end -->`` with :func:`markdown` of the results (or,
with ``--render-only``, of the existing ``--out`` file, measuring nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

QUICK = {
    "env_maps": ["3m"],
    "train": [("3m", "qmix", 1), ("3m", "qmix-da", 1), ("3m", "qmix", 8)],
    "chunks": 3,
}
FULL_MAPS = ["3m", "8m", "5m_vs_6m", "3s5z", "MMM2"]
FULL = {
    "env_maps": FULL_MAPS,
    "train": [(m, a, 1) for m in FULL_MAPS for a in ("qmix", "qmix-da")]
    + [(m, a, 1) for m in ("3m", "MMM2") for a in ("qplex", "dmix")]
    + [(m, "qmix", s) for m in ("3m", "8m") for s in (2, 4, 8)],
    "chunks": 4,
}
HOST_WORKERS = (1, 2, 4, 8)
HOST = {"map": "3m", "chunks": 3}
ENV_BATCH = 8  # = Config.n_envs, the batch training collects with
ENV_STEPS = 40_000
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def host_plan() -> list[dict[str, Any]]:
    """The host loop's cases (``--host``, and part of the full run)."""
    return [
        {"kind": "host", "map": HOST["map"], "workers": w, "chunks": HOST["chunks"]}
        for w in HOST_WORKERS
    ]


def plan(quick: bool) -> list[dict[str, Any]]:
    """The cases of a quick or full run, in the order they are measured."""
    spec = QUICK if quick else FULL
    cases: list[dict[str, Any]] = [
        {"kind": "env", "map": m, "n_envs": ENV_BATCH, "steps": ENV_STEPS} for m in spec["env_maps"]
    ]
    cases += [
        {"kind": "train", "map": m, "alg": a, "seeds": s, "chunks": spec["chunks"]}
        for m, a, s in spec["train"]
    ]
    return cases if quick else cases + host_plan()


def case_name(case: dict[str, Any]) -> str:
    if case["kind"] == "env":
        return f"env {case['map']} x{case['n_envs']}"
    if case["kind"] == "host":
        return f"host {case['map']} {case['workers']} worker(s)"
    return f"train {case['map']} {case['alg']} {case['seeds']} seed(s)"


def measure(case: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """One case in a fresh ``python -m igmda_jax.tools.bench_cases`` process: its JSON row."""
    result = subprocess.run(
        [sys.executable, "-m", "igmda_jax.tools.bench_cases", json.dumps(case)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"{case_name(case)} failed (exit {result.returncode}):\n{tail}")
    return json.loads(lines[-1])


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import jax  # noqa: PLC0415 (the cases import jax themselves; this only names it)

    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        model = names[0].split(":", 1)[1].strip() if names else model
    return {
        "cpu": model,
        "cores": len(os.sched_getaffinity(0)),
        "platform": jax.default_backend(),
        "jax": jax.__version__,
        "python": platform.python_version(),
    }


def derive(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Tables from measured rows: env, train (with train / env), -da cost and seed scaling."""
    env = {r["map"]: r for r in rows if r["kind"] == "env"}
    train = [r for r in rows if r["kind"] == "train"]
    one_seed = {(r["map"], r["alg"]): r for r in train if r["seeds"] == 1}
    env_table = [
        {
            "map": m,
            "n_envs": r["n_envs"],
            "ours_steps_per_s": r["ours_steps_per_s"],
            "raw_steps_per_s": r["raw_steps_per_s"],
            "raw_over_ours": r["raw_steps_per_s"] and round(r["raw_steps_per_s"] / r["ours_steps_per_s"], 2),
        }
        for m, r in env.items()
    ]  # fmt: skip
    train_table = []
    for r in train:
        if r["seeds"] != 1:
            continue
        ratio = (
            r["steps_per_s_per_seed"] / env[r["map"]]["ours_steps_per_s"]
            if r["map"] in env
            else None
        )
        train_table.append(
            {
                "map": r["map"],
                "alg": r["alg"],
                "steps_per_s_per_seed": r["steps_per_s_per_seed"],
                "train_over_env": ratio and round(ratio, 3),
                "compile_s": r["compile_s"],
                "peak_rss_mib": r["peak_rss_mib"],
            }
        )  # fmt: skip
    da_table = [
        {
            "map": m,
            "da_over_plain": round(
                one_seed[m, "qmix"]["steps_per_s_per_seed"] / r["steps_per_s_per_seed"], 2
            ),
        }
        for (m, alg), r in one_seed.items()
        if alg == "qmix-da" and (m, "qmix") in one_seed
    ]
    seed_table = [
        {
            "map": r["map"],
            "seeds": r["seeds"],
            "steps_per_s_per_seed": r["steps_per_s_per_seed"],
            "cost_vs_one_seed": round(
                one_seed[r["map"], "qmix"]["steps_per_s_per_seed"] / r["steps_per_s_per_seed"], 2
            ),
            "peak_rss_mib": r["peak_rss_mib"],
        }
        for r in train
        if r["alg"] == "qmix" and (r["map"], "qmix") in one_seed
    ]
    seed_table.sort(key=lambda r: (r["map"], r["seeds"]))
    host_table = [
        {
            "map": r["map"],
            "workers": r["workers"],
            "pool_steps_per_s": r["pool_steps_per_s"],
            "train_steps_per_s": r["train_steps_per_s"],
            "host_share": r["host_share"],
            "fused_steps_per_s": (one_seed.get((r["map"], "qmix")) or {}).get(
                "steps_per_s_per_seed"
            ),
        }
        for r in rows
        if r["kind"] == "host"
    ]
    return {
        "env": env_table,
        "train": train_table,
        "da_cost": da_table,
        "seeds": seed_table,
        "host": host_table,
    }


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return [*lines, ""]


def _number(value: float | None, spec: str = ",.0f") -> str:
    return "n/a" if value is None else format(value, spec)


def markdown(report: dict[str, Any]) -> str:
    """The README's benchmark block: machine, command, and the four tables."""
    m, t = report["machine"], report["tables"]
    lines = [
        f"`{report['command']}` on {m['cpu']} ({m['cores']} cores, {m['platform']}, jax "
        f"{m['jax']}); {report['wall_s'] / 60:.0f} min; `results/bench.json`. Env steps/s are "
        "per seed; training is `igmda train`'s defaults at sight 0, timed once the replay can "
        "sample (epsilon near 1); each case ran alone in its own process.",
        "",
    ]
    lines += _table(
        ["map", "random-policy env steps/s (8 envs)", "raw JaxMARL", "raw / ours"],
        [
            (r["map"], _number(r["ours_steps_per_s"]), _number(r["raw_steps_per_s"]),
             _number(r["raw_over_ours"], ".2f"))
            for r in t["env"]
        ],
    )  # fmt: skip
    lines += _table(
        ["map", "alg", "train steps/s", "train / env", "compile s", "peak MiB"],
        [
            (r["map"], r["alg"], _number(r["steps_per_s_per_seed"]),
             _number(r["train_over_env"], ".2f"), _number(r["compile_s"], ".0f"),
             _number(r["peak_rss_mib"], ",.0f"))
            for r in t["train"]
        ],
    )  # fmt: skip
    if t["da_cost"]:
        lines += _table(
            ["map", "qmix-da time per step / qmix"],
            [(r["map"], _number(r["da_over_plain"], ".2f")) for r in t["da_cost"]],
        )
    lines += _table(
        ["map", "seeds", "steps/s per seed", "cost vs 1 seed", "peak MiB"],
        [
            (r["map"], r["seeds"], _number(r["steps_per_s_per_seed"]),
             _number(r["cost_vs_one_seed"], ".2f"), _number(r["peak_rss_mib"], ",.0f"))
            for r in t["seeds"]
        ],
    )  # fmt: skip
    if t.get("host"):
        lines += [
            f"Host loop (`{report.get('host_command', report['command'])}`): qmix on "
            "`--backend smax-workers`, one seed; the pool alone plays a numpy random policy; "
            "host share = act function + learner update over an iteration's wall time.",
            "",
        ]
        lines += _table(
            ["map", "workers", "pool steps/s", "train steps/s", "host share", "fused steps/s"],
            [
                (r["map"], r["workers"], _number(r["pool_steps_per_s"]),
                 _number(r["train_steps_per_s"]), _number(r["host_share"], ".2f"),
                 _number(r["fused_steps_per_s"]))
                for r in t["host"]
            ],
        )  # fmt: skip
    return "\n".join(lines).rstrip() + "\n"


def replace_block(text: str, block: str) -> str:
    """``text`` with the part between the bench markers replaced by ``block``."""
    if BEGIN not in text or END not in text:
        raise ValueError(f"no {BEGIN} ... {END} block to replace")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{block}{END}{tail}"


def run(
    quick: bool, timeout_s: float, write=print, cases: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Measure every case of the plan (or ``cases``; progress on ``write``), derive the
    tables."""
    cases = plan(quick) if cases is None else cases
    start = time.perf_counter()
    rows = []
    for index, case in enumerate(cases, 1):
        row = measure(case, timeout_s)
        rows.append(row)
        numbers = {k: v for k, v in row.items() if k not in case}
        write(f"[{index}/{len(cases)}] {case_name(case)}: {numbers}")
    return {
        "command": "igmda bench" + (" --quick" if quick else ""),
        "machine": machine(),
        "wall_s": round(time.perf_counter() - start, 1),
        "rows": rows,
        "tables": derive(rows),
    }


def merge_host(report: dict[str, Any] | None, host: dict[str, Any]) -> dict[str, Any]:
    """``report`` with its host rows replaced by those of ``host`` (a ``--host`` run)."""
    if report is None:
        return {**host, "command": "igmda bench --host"}
    rows = [r for r in report["rows"] if r["kind"] != "host"] + host["rows"]
    return {
        **report,
        "rows": rows,
        "tables": derive(rows),
        "host_command": "igmda bench --host",
        "host_wall_s": host["wall_s"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="igmda bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3m only, about 5 minutes")
    parser.add_argument("--out", type=Path, default=Path("results/bench.json"))
    parser.add_argument(
        "--readme",
        type=Path,
        help="rewrite the benchmark block of this page (ours: docs/benchmarks.md)",
    )
    parser.add_argument(
        "--render-only", action="store_true", help="measure nothing: render --out into --readme"
    )
    parser.add_argument(
        "--host", action="store_true", help="only the host loop's cases, merged into --out"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per case")
    args = parser.parse_args(argv)
    if args.render_only:
        if args.readme is None:
            parser.error("--render-only needs --readme")
        report = json.loads(args.out.read_text())
    elif args.host:
        try:
            measured = run(False, args.timeout, lambda line: print(line, flush=True), host_plan())
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            print(f"igmda bench: {error}", file=sys.stderr)
            return 1
        report = merge_host(
            json.loads(args.out.read_text()) if args.out.exists() else None, measured
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    else:
        try:
            report = run(args.quick, args.timeout, write=lambda line: print(line, flush=True))
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            print(f"igmda bench: {error}", file=sys.stderr)
            return 1
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    block = markdown(report)
    print(block, end="")
    if args.readme is not None:
        args.readme.write_text(replace_block(args.readme.read_text(), block))
        print(f"rewrote the benchmark block of {args.readme}")
    print(f"{'read' if args.render_only else 'wrote'} {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
