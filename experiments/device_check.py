"""Train QMIX and QMIX-DA with 1, 8 and 64 seeds on 3m and MMM2 for a few chunks, then
``igmda bench --quick``, and write one JSON (``experiments/device_check.sh`` calls this on a GPU
machine; its dry run calls it on the CPU with a tiny grid).

Each configuration runs in a fresh process (``igmda_jax.tools.bench_cases``: ``igmda train``'s
defaults at sight 0, compile seconds, env steps/s per seed once the replay can sample, peak host
and device memory). Configurations that would start after ``--deadline-s`` are recorded as
skipped, so the whole check ends in time; the JSON is rewritten after every one.

    python experiments/device_check.py --out OUT.json [--maps 3m MMM2] [--algs qmix qmix-da]
        [--seeds 1 8 64] [--chunks 2] [--deadline-s 480] [--bench quick|none]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from igmda_jax.tools import bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--maps", nargs="+", default=["3m", "MMM2"])
    parser.add_argument("--algs", nargs="+", default=["qmix", "qmix-da"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 8, 64])
    parser.add_argument("--chunks", type=int, default=2)
    parser.add_argument("--deadline-s", type=float, default=480.0)
    parser.add_argument("--bench", choices=["quick", "none"], default="quick")
    args = parser.parse_args()
    start = time.monotonic()
    report: dict[str, Any] = {"machine": bench.machine(), "train": [], "bench": None}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for seeds in args.seeds:  # every map and algorithm at 1 seed before any at 8
        for map_name in args.maps:
            for alg in args.algs:
                case = {"kind": "train", "map": map_name, "alg": alg, "seeds": seeds}
                case["chunks"] = args.chunks
                left = args.deadline_s - (time.monotonic() - start)
                if left < 30:
                    report["train"].append({**case, "skipped": "deadline"})
                    continue
                try:
                    row = bench.measure(case, timeout_s=left)
                    row["steps_per_s_total"] = round(row["steps_per_s_per_seed"] * seeds, 1)
                except (RuntimeError, subprocess.TimeoutExpired) as error:
                    row = {**case, "failed": str(error).splitlines()[0]}
                report["train"].append(row)
                print(json.dumps(row), flush=True)
                args.out.write_text(json.dumps(report, indent=1) + "\n")
    if args.bench == "quick":
        try:
            report["bench"] = bench.run(quick=True, timeout_s=300.0)
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            report["bench"] = {"failed": str(error).splitlines()[0]}
    report["wall_s"] = round(time.monotonic() - start, 1)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out} after {report['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
