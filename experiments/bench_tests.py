"""How long the test suite (or some of its files) takes cold, in one process and spread over
worker processes (pytest-xdist, ``-n N --dist loadfile``), measured in one call so the two
numbers share the machine's state.

    python experiments/bench_tests.py                               # the whole suite, 1 vs 2
    python experiments/bench_tests.py tests/test_smax.py tests/test_gru_scan.py --workers 1 2

Each measurement starts with an empty XLA compilation cache of its own (what CI sees: a clean
clone compiles everything once), runs ``python -m pytest -q -p no:cacheprovider FILES`` and
prints its wall seconds, its exit status and its pass/fail line; the last line gives each
worker count's time as a ratio of the first. A failing run is reported, not hidden.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_suite(files: list[str], workers: int) -> tuple[float, int, str]:
    """Wall seconds, exit status and pytest's summary line of one cold run with ``workers``
    processes (1: no xdist)."""
    with tempfile.TemporaryDirectory(prefix="igmda-bench-tests-") as cache:
        env = os.environ | {"JAX_COMPILATION_CACHE_DIR": cache}
        parallel = ["-n", str(workers) if workers > 1 else "0"]  # --dist loadfile: pyproject
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *parallel]
        start = time.monotonic()
        result = subprocess.run(
            [*command, *files], cwd=ROOT, env=env, capture_output=True, text=True
        )
        seconds = time.monotonic() - start
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    return seconds, result.returncode, lines[-1] if lines else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", default=["tests"], help="test files (default: all)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    print(f"files: {' '.join(args.files)}; {os.cpu_count()} CPUs", flush=True)
    times = {}
    for workers in args.workers:
        seconds, status, summary = run_suite(args.files, workers)
        times[workers] = seconds
        print(f"workers {workers}: {seconds:7.1f} s, exit {status}: {summary}", flush=True)
    first = args.workers[0]
    ratios = ", ".join(f"{w}: {times[w] / times[first]:.2f}" for w in args.workers)
    print(f"wall time as a share of {first} worker(s): {ratios}")


if __name__ == "__main__":
    main()
