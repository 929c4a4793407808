"""``igmda sweep``'s command: options in, runs started, exit status out.

In: ``FILE.yaml [--jobs N] [--dry-run] [--runs-dir D] [--results-dir D] [--only CELL_GLOB]``
(``main``). The file is loaded and checked (``sweep.load_sweep``), the cells chosen by
``--only``, and a cell whose saved config drifted from the file refused. Out: with
``--dry-run``, the plan (``sweep_plan.format_plan``) and nothing written; else each unfinished
cell as a ``launchers.RunTask`` (the cell's Config fields as ``igmda train`` flags) handed to
a launcher, a line per finished run and a progress line every minute. Exit status 0 when
every selected run is done, 1 when some failed, 2 for a bad file or option, 130 when stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from igmda_jax.config import RESUMABLE_FIELDS
from igmda_jax.launchers import (
    Launcher,
    LocalLauncher,
    RunTask,
    copy_small_outputs,
    log_tail,
    read_metrics,
    write_if_changed,
)
from igmda_jax.sweep import Cell, Sweep, SweepError, load_sweep
from igmda_jax.sweep_plan import (
    COST_TABLE,
    ProgressThread,
    cell_dirs,
    cell_state,
    config_drift,
    format_plan,
    load_speeds,
    result_line,
)


def flag_args(name: str, value: Any) -> list[str]:
    """One Config field as ``igmda train`` (tyro) flags: --name value, --flag/--no-flag, None."""
    flag = name.replace("_", "-")
    if isinstance(value, bool):
        return [f"--{flag}" if value else f"--no-{flag}"]
    if value is None:
        return [f"--{flag}", "None"]
    return [f"--{flag}", repr(value) if isinstance(value, float) else str(value)]


def make_task(sweep: Sweep, cell: Cell, runs_dir: Path, results_dir: Path) -> RunTask:
    """The RunTask of a cell (absolute folders: a task may run elsewhere on a shared disk)."""
    run_dir, result_dir = cell_dirs(cell, sweep.name, runs_dir.resolve(), results_dir.resolve())
    args = [arg for name, value in cell.config_fields().items() for arg in flag_args(name, value)]
    return RunTask(
        sweep=sweep.name,
        cell=cell.name,
        label=cell.label,
        preset=cell.preset,
        config_args=tuple(args),
        run_dir=str(run_dir),
        results_dir=str(result_dir),
        t_max=cell.t_max,
        seeds=cell.seeds,
        final_eval_episodes=cell.final_eval_episodes,
        expert_eval=cell.config().uses_expert,
    )


def run_sweep(
    sweep: Sweep,
    cells: Sequence[Cell],
    runs_dir: Path,
    results_dir: Path,
    jobs: int = 1,
    launcher: Launcher | None = None,
    progress_every: float = 60.0,
    write: Callable[[str], None] = lambda line: print(line, flush=True),
) -> int:
    """Bring ``cells`` of ``sweep`` to done; 0 when all are, 1 when some failed."""
    launcher = LocalLauncher() if launcher is None else launcher
    write_if_changed(results_dir / sweep.name / "sweep.yaml", sweep.source)
    tasks = {cell.name: make_task(sweep, cell, runs_dir, results_dir) for cell in cells}
    folders = [
        (cell, Path(tasks[cell.name].run_dir), Path(tasks[cell.name].results_dir)) for cell in cells
    ]
    for _, run_dir, result_dir in folders:
        copy_small_outputs(run_dir, result_dir)
    states = {cell.name: cell_state(cell, r, d) for cell, r, d in folders}
    todo = [tasks[c.name] for c in cells if states[c.name].step != "done"]
    write(
        f"sweep {sweep.name}: {len(cells)} run(s), {len(cells) - len(todo)} done, "
        f"{len(todo)} to run, {jobs} at a time; runs in {runs_dir / sweep.name}, "
        f"results in {results_dir / sweep.name}"
    )
    for cell in cells:
        final = states[cell.name].final
        if final is not None:
            write(f"skip {cell.name}: done, win rate {final['win_rate_mean']:.3f}")
    progress = ProgressThread(folders, progress_every, write)
    progress.runs_done = len(cells) - len(todo)
    by_name = {cell.name: cell for cell in cells}
    failures = []
    progress.start()
    try:
        with contextlib.closing(launcher.run(todo, jobs)) as finished:
            for task, code in finished:
                cell = by_name[task.cell]
                state = cell_state(cell, Path(task.run_dir), Path(task.results_dir))
                if code == 0 and state.final is not None:
                    progress.runs_done += 1
                    metrics = read_metrics(Path(task.run_dir) / "metrics.jsonl")
                    write(
                        f"[{progress.runs_done}/{len(cells)}] {result_line(cell, state.final, metrics)}"
                    )
                else:
                    failures.append(task.cell)
                    log = Path(task.run_dir) / "log.txt"
                    tail = log_tail(task).replace("\n", "\n    ")
                    write(f"FAILED {task.cell} (exit {code}); last lines of {log}:\n    {tail}")
    finally:
        progress.stopped.set()
    write(progress.line())
    if failures:
        print(
            f"igmda sweep {sweep.name}: {len(failures)} run(s) failed: {', '.join(failures)}; "
            "rerun the same command to resume them",
            file=sys.stderr,
            flush=True,
        )
        return 1
    return 0


def select_cells(cells: Sequence[Cell], patterns: Sequence[str] | None) -> list[Cell]:
    """The cells whose name matches one of the glob ``patterns`` (all when None)."""
    if not patterns:
        return list(cells)
    chosen = [c for c in cells if any(fnmatch.fnmatchcase(c.name, p) for p in patterns)]
    if not chosen:
        names = ", ".join(c.name for c in cells)
        raise SweepError(f"--only {' '.join(patterns)} matches no cell; cells: {names}")
    return chosen


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="igmda sweep",
        description="Train a grid of runs from a YAML file, resumably (see igmda_jax/sweep.py "
        "for the schema). Rerun the same command to continue it.",
    )
    parser.add_argument("file", help="the sweep file (YAML)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (default 1)")
    parser.add_argument("--dry-run", action="store_true", help="print the grid and its cost")
    parser.add_argument("--runs-dir", default="runs", help="checkpoints (default runs)")
    parser.add_argument("--results-dir", default="results", help="small outputs (default results)")
    parser.add_argument(
        "--only",
        action="append",
        metavar="CELL_GLOB",
        help="only the cells matching this glob (repeatable)",
    )
    return parser.parse_args(list(argv))


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """``igmda sweep FILE.yaml [--jobs N] [--dry-run] [--runs-dir D] [--results-dir D]
    [--only CELL_GLOB]``; returns the exit status."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    runs_dir, results_dir = Path(args.runs_dir), Path(args.results_dir)
    try:
        if args.jobs < 1:
            raise SweepError(f"--jobs must be >= 1, got {args.jobs}")
        sweep = load_sweep(args.file)
        cells = select_cells(sweep.cells, args.only)
        for cell in cells:
            run_dir, result_dir = cell_dirs(cell, sweep.name, runs_dir, results_dir)
            drift = config_drift(cell, run_dir, result_dir)
            if drift:
                raise SweepError(
                    f"cell {cell.name} has a run whose config differs from the file in "
                    f"{'; '.join(drift)} (only {', '.join(RESUMABLE_FIELDS)} may change); "
                    f"restore the file or move {run_dir} and {result_dir} away"
                )
    except SweepError as error:
        print(f"igmda sweep: {error}", file=sys.stderr)
        return 2
    if args.dry_run:
        states = [cell_state(c, *cell_dirs(c, sweep.name, runs_dir, results_dir)) for c in cells]
        table = results_dir / COST_TABLE
        print(format_plan(sweep, cells, states, load_speeds(table), table, args.jobs))
        return 0
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run_sweep(sweep, cells, runs_dir, results_dir, jobs=args.jobs)
    except KeyboardInterrupt:
        print(
            f"igmda sweep {sweep.name}: interrupted; its runs were stopped and resume at the "
            "next call of the same command",
            file=sys.stderr,
        )
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
