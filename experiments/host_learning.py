"""QMIX learns 3m through the host loop (episodes played by worker processes, the path real
StarCraft II takes) as it does on the fused path: the same config, seed and budget on both
backends, greedy win rate at each evaluation, and the smoke test's criterion (0 % at the start,
>= 30 % at some evaluation by 60k env steps: tests/test_train.py's learning test) for each.

    python experiments/host_learning.py [--t-max 60000] [--out results/host_learning.json]

This was a test (tests/test_host.py) until the suite had to fit CI's time: the host path's
parts stay tested there (acting equals the fused collection's, replays have the fused layout,
the update is the same jitted function, kill -9 and resume give identical metrics); this script
is the end-to-end learning check. Exit status 1 when a backend misses the criterion.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import envs  # noqa: F401  (first: applies the XLA CPU flags before JAX starts)
from igmda_jax.core.presets import make_config
from igmda_jax.run import run

ROOT = Path(__file__).resolve().parents[1]
THRESHOLD = 0.3


def learn(backend: str, t_max: int, out: Path) -> dict:
    """One qmix run on 3m (smax preset) with ``backend``: its evaluations and wall seconds."""
    config = make_config(
        "smax",
        alg="qmix",
        map="3m",
        t_max=t_max,
        test_interval=t_max // 3,
        save_interval=10**9,
        backend=backend,
    )
    start = time.monotonic()
    run(config, out, progress=False)
    seconds = time.monotonic() - start
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    curve = [(row["t_env"], row["win_rate"]) for row in rows]
    learned = curve[0][1] == 0.0 and max(win for _, win in curve) >= THRESHOLD
    return {"backend": backend, "wall_s": round(seconds, 1), "curve": curve, "learned": learned}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--t-max", type=int, default=60_000)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "host_learning.json")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="igmda-host-learning-") as scratch:
        for backend in ("fused", "smax-workers"):
            result = learn(backend, args.t_max, Path(scratch) / backend)
            curve = ", ".join(f"{t:,}: {100 * w:.0f} %" for t, w in result["curve"])
            print(f"{backend}: {curve} ({result['wall_s']} s) learned={result['learned']}")
            results.append(result)
    report = {
        "command": " ".join(["python experiments/host_learning.py", *sys.argv[1:]]),
        "criterion": f"0 % at the first evaluation, >= {THRESHOLD:.0%} at some evaluation",
        "t_max": args.t_max,
        "runs": results,
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0 if all(result["learned"] for result in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
