"""Kill a real `igmda train` with SIGKILL at random moments, resume it each time, and compare
its metrics with an uninterrupted run of the same config (wall-clock column aside).

    python experiments/kill_resume.py [--kills 10] [--backend fused|smax-workers]
        [--seed 0] [--out results/kill_resume.json]

The run is small (3m, sight 0, 2 seeds, tiny networks) so that a restart (compile included)
takes seconds. Each kill comes either during start-up and compilation (1 in 5, 1-10 s after
the start) or 0-8 s after the (re)started run has written a new checkpoint, so kills fall in compilation, training, evaluation and checkpoint writes alike. Writes one JSON:
the kill moments, the t_env each resume started from, and whether the final metrics equal the
uninterrupted run's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ARGS = [
    "--map", "3m", "--sight-range", "0", "--seeds", "2", "--n-envs", "4", "--batch-size", "8",
    "--buffer-size", "32", "--hidden-dim", "16", "--mixer-embed", "8", "--hypernet-embed", "16",
    "--iterations-per-call", "2", "--test-nepisode", "4", "--t-max", "100000",
    "--test-interval", "5000", "--save-interval", "2000", "--no-progress",
]  # fmt: skip


def rows(path: Path) -> list[dict]:
    """Metrics rows without the wall-clock column."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # cut short by a kill
            continue
        row.pop("wall_time", None)
        out.append(row)
    return out


def last_checkpoint(folder: Path) -> int | None:
    steps = [int(p.name) for p in (folder / "checkpoints").glob("*") if p.name.isdigit()]
    return max(steps) if steps else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--backend", default="fused", choices=["fused", "smax-workers"])
    parser.add_argument("--seed", type=int, default=0, help="of the kill moments")
    parser.add_argument("--out", type=Path, default=Path("results/kill_resume.json"))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    command = [sys.executable, "-m", "igmda_jax.cli", "train", *ARGS, "--backend", args.backend]
    with tempfile.TemporaryDirectory() as scratch:
        whole, killed = Path(scratch) / "whole", Path(scratch) / "killed"
        subprocess.run([*command, "--out", str(whole)], check=True, capture_output=True)
        kills: list[dict] = []
        start = [*command, "--out", str(killed)]
        while len(kills) < args.kills:
            process = subprocess.Popen(
                start, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
            )
            started = time.monotonic()
            if rng.random() < 0.2:  # during start-up and compilation
                time.sleep(rng.uniform(1.0, 10.0))
            else:  # once this (re)start has written a checkpoint, then a moment later
                progress = last_checkpoint(killed)
                while process.poll() is None and time.monotonic() - started < 600:
                    if last_checkpoint(killed) != progress:
                        break
                    time.sleep(0.2)
                time.sleep(rng.uniform(0.0, 8.0))
            after = time.monotonic() - started
            if process.poll() is not None:
                print(f"the run finished before kill {len(kills) + 1}; raise --t-max")
                return 1
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            kills.append(
                {
                    "seconds_after_start": round(after, 2),
                    "checkpoint_at_kill": last_checkpoint(killed),
                    "metric_rows_at_kill": len(rows(killed / "metrics.jsonl")),
                }
            )
            print(f"kill {len(kills)}: {kills[-1]}", flush=True)
            start = [*command, "--resume", str(killed)]
        subprocess.run(start, check=True, capture_output=True)
        resumed, reference = rows(killed / "metrics.jsonl"), rows(whole / "metrics.jsonl")
    report = {
        "command": "python experiments/kill_resume.py "
        + " ".join(f"--{k} {v}" for k, v in [("kills", args.kills), ("backend", args.backend)]),
        "train_args": ARGS,
        "kills": kills,
        "rows": len(reference),
        "identical_metrics": resumed == reference,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"{len(kills)} kills; metrics identical to the uninterrupted run: {resumed == reference}")
    print(f"wrote {args.out}")
    return 0 if resumed == reference else 1


if __name__ == "__main__":
    sys.exit(main())
