"""``igmda sweep``'s command: options in, runs started, exit status out.

In: ``FILE.yaml [FILE.yaml ...] [--jobs N] [--dry-run] [--runs-dir D] [--results-dir D]
[--only CELL_GLOB] [--time-limit DURATION] [--launcher local|slurm|ray] [--no-wait]
[--slurm-* ...] [--ray-* ...]``
(``main``; ``sweeps.launcher_options`` turns the launcher options into a ``Launcher``). Each
file is loaded and checked (``sweep.load_sweep``), the cells chosen by ``--only``, and a cell
whose saved config drifted from its file refused. Out: with ``--dry-run``, each sweep's plan
(``sweeps.plan.format_plan``) and nothing written; else each unfinished cell as a
``launchers.RunTask`` (the cell's Config fields as ``igmda train`` flags) handed to the
launcher (processes here, SLURM jobs, Ray tasks) in one queue over all the files, in their
order, a line per finished run and a progress line every minute. With ``--time-limit`` (local
runs) a run starts only if it is estimated to end in the time left and the running ones are
stopped at the limit. Exit status 0 when every selected run is done, 1 when some failed, 2 for
a bad file or option (or a cluster that cannot be reached or refuses the jobs), 3 when
``--time-limit`` left runs for a later call, 130 when stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fnmatch
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from igmda_jax.core.config import RESUMABLE_FIELDS
from igmda_jax.sweeps.launcher_options import INTERRUPTED, add_launcher_args, make_launcher
from igmda_jax.sweeps.launchers import (
    Launcher,
    LaunchError,
    LocalLauncher,
    RunTask,
    log_tail,
)
from igmda_jax.sweeps.plan import (
    COST_TABLE,
    CellState,
    ProgressThread,
    cell_dirs,
    cell_speed,
    cell_state,
    config_drift,
    duration_text,
    estimated_hours,
    finished_hours,
    format_plan,
    load_speeds,
    result_line,
)
from igmda_jax.sweeps.run_folder import copy_small_outputs, read_metrics, write_if_changed
from igmda_jax.sweeps.spec import Cell, Sweep, SweepError, load_sweep

TIME_LIMITED = 3  # exit status: no run failed, but --time-limit left some for a later call


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


def parse_duration(text: str) -> float:
    """Seconds in ``H:MM``, ``H:MM:SS`` or a number with a unit: ``150m``, ``2.5h``, ``900s``."""
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    try:
        if ":" in text:
            parts = [float(part) for part in text.split(":")]
            if len(parts) not in (2, 3) or any(part < 0 for part in parts[1:]):
                raise ValueError
            seconds = sum(part * 60.0 ** (2 - i) for i, part in enumerate(parts))
        else:
            seconds = float(text[:-1]) * units[text[-1:]]
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is no duration: give H:MM, H:MM:SS, or a number with s, m or h"
        ) from None
    if not 0.0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: the time limit must be positive")
    return seconds


def time_limited(
    launcher: LocalLauncher,
    time_limit_s: float,
    entries: Sequence[tuple[tuple[str, str], Cell, RunTask]],
    states: dict[tuple[str, str], CellState],
    results_dir: Path,
) -> LocalLauncher:
    """``launcher`` starting only the runs estimated to end within ``time_limit_s``
    (``plan.estimated_hours``: finished runs of the same setup, else the measured speeds)."""
    speeds = load_speeds(results_dir / COST_TABLE)
    finished = finished_hours(results_dir)
    seconds = {}
    for key, cell, _ in entries:
        hours = estimated_hours(cell, states[key], cell_speed(cell, speeds), finished)
        seconds[key] = None if hours is None else hours * 3600.0
    return dataclasses.replace(
        launcher,
        time_limit_s=time_limit_s,
        estimate_s=lambda task: seconds[task.sweep, task.cell],
        left=[],
    )


def run_sweeps(
    groups: Sequence[tuple[Sweep, Sequence[Cell]]],
    runs_dir: Path,
    results_dir: Path,
    jobs: int = 1,
    launcher: Launcher | None = None,
    progress_every: float = 60.0,
    write: Callable[[str], None] = lambda line: print(line, flush=True),
    time_limit_s: float | None = None,
) -> int:
    """Bring the cells of every sweep to done through one queue, in the order given (a core
    freed at the end of one sweep starts the next sweep's runs); 0 when all are done, 1 when
    some failed, ``TIME_LIMITED`` when none failed but ``time_limit_s`` (local launcher only)
    left some for a later call."""
    launcher = LocalLauncher() if launcher is None else launcher
    several = len(groups) > 1
    entries = []  # ((sweep name, cell name), cell, task) in queue order
    for sweep, cells in groups:
        write_if_changed(results_dir / sweep.name / "sweep.yaml", sweep.source)
        for cell in cells:
            task = make_task(sweep, cell, runs_dir, results_dir)
            entries.append(((sweep.name, cell.name), cell, task))
    folders = [(cell, Path(task.run_dir), Path(task.results_dir)) for _, cell, task in entries]
    for _, run_dir, result_dir in folders:
        copy_small_outputs(run_dir, result_dir)
    states = {
        key: cell_state(cell, r, d)
        for (key, *_), (cell, r, d) in zip(entries, folders, strict=True)
    }
    todo = [task for key, _, task in entries if states[key].step != "done"]
    if time_limit_s is not None:
        if not isinstance(launcher, LocalLauncher):
            raise LaunchError("--time-limit needs the local launcher")
        launcher = time_limited(launcher, time_limit_s, entries, states, results_dir)
        estimates = ", ".join(
            f"{_shown((task.sweep, task.cell), several)} {duration_text(launcher.estimate_s(task))}"
            for task in todo
        )
        write(
            f"time limit {duration_text(time_limit_s)}: a run starts only if its estimate ends "
            f"before it (? = unknown: started); estimates: {estimates}"
        )
    describe = getattr(launcher, "describe", None)  # the SLURM and Ray launchers say how
    at_a_time = describe(jobs) if describe is not None else f"{jobs} at a time"
    for sweep, cells in groups:
        to_run = sum(states[sweep.name, c.name].step != "done" for c in cells)
        write(
            f"sweep {sweep.name}: {len(cells)} run(s), {len(cells) - to_run} done, "
            f"{to_run} to run"
            + ("" if several else f", {at_a_time}")
            + f"; runs in {runs_dir / sweep.name}, results in {results_dir / sweep.name}"
        )
    if several:
        write(f"one queue of {len(todo)} run(s) over {len(groups)} sweeps, {at_a_time}")
    for key, *_ in entries:
        final = states[key].final
        if final is not None:
            write(f"skip {_shown(key, several)}: done, win rate {final['win_rate_mean']:.3f}")
    progress = ProgressThread(folders, progress_every, write)
    progress.runs_done = len(entries) - len(todo)
    by_key = {key: cell for key, cell, _ in entries}
    failures = []
    progress.start()
    try:
        with contextlib.closing(launcher.run(todo, jobs)) as finished:
            for task, code in finished:
                key = (task.sweep, task.cell)
                cell = by_key[key]
                state = cell_state(cell, Path(task.run_dir), Path(task.results_dir))
                if code == 0 and state.final is not None:
                    progress.runs_done += 1
                    metrics = read_metrics(Path(task.run_dir) / "metrics.jsonl")
                    line = result_line(cell, state.final, metrics)
                    line = f"{task.sweep}/{line}" if several else line
                    write(f"[{progress.runs_done}/{len(entries)}] {line}")
                else:
                    failures.append(_shown(key, several))
                    log = Path(task.run_dir) / "log.txt"
                    tail = log_tail(task).replace("\n", "\n    ")
                    write(
                        f"FAILED {_shown(key, several)} (exit {code}); last lines of {log}:"
                        f"\n    {tail}"
                    )
    finally:
        progress.stopped.set()
    write(progress.line())
    left = list(getattr(launcher, "left", []))
    if left:
        write(
            f"time limit: {len(left)} run(s) left for a later call (not started, estimated to "
            f"end after the limit, or stopped at it with a checkpoint): "
            + ", ".join(_shown((task.sweep, task.cell), several) for task in left)
        )
    if failures:
        names = " ".join(sweep.name for sweep, _ in groups)
        print(
            f"igmda sweep {names}: {len(failures)} run(s) failed: {', '.join(failures)}; "
            "rerun the same command to resume them",
            file=sys.stderr,
            flush=True,
        )
        return 1
    return TIME_LIMITED if left else 0


def _shown(key: tuple[str, str], several: bool) -> str:
    """A run's name in messages: its cell, with its sweep when a call runs several."""
    return f"{key[0]}/{key[1]}" if several else key[1]


def select_cells(cells: Sequence[Cell], patterns: Sequence[str] | None) -> list[Cell]:
    """The cells whose name matches one of the glob ``patterns`` (all when None)."""
    if not patterns:
        return list(cells)
    chosen = [c for c in cells if any(fnmatch.fnmatchcase(c.name, p) for p in patterns)]
    if not chosen:
        names = ", ".join(c.name for c in cells)
        raise SweepError(f"--only {' '.join(patterns)} matches no cell; cells: {names}")
    return chosen


def select_groups(
    sweeps: Sequence[Sweep], patterns: Sequence[str] | None
) -> list[tuple[Sweep, list[Cell]]]:
    """Each sweep with its cells matching ``patterns`` (all when None); a sweep with none is
    left out, and SweepError when no sweep has one."""
    if len(sweeps) == 1:
        return [(sweeps[0], select_cells(sweeps[0].cells, patterns))]
    groups = []
    for sweep in sweeps:
        cells = select_cells(sweep.cells, patterns) if _matches(sweep, patterns) else []
        if cells:
            groups.append((sweep, cells))
    if not groups:
        raise SweepError(f"--only {' '.join(patterns or [])} matches no cell of any sweep")
    return groups


def _matches(sweep: Sweep, patterns: Sequence[str] | None) -> bool:
    return not patterns or any(
        fnmatch.fnmatchcase(cell.name, pattern) for cell in sweep.cells for pattern in patterns
    )


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="igmda sweep",
        description="Train a grid of runs from a YAML file, resumably (see igmda_jax/sweeps/spec.py "
        "for the schema). Rerun the same command to continue it.",
    )
    parser.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="the sweep file (YAML); several run through one queue, in the order given",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        help="runs at once (default 1; with --launcher ray: as many as the cluster's free "
        "resources fit; not with --launcher slurm, see --slurm-array-parallelism)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the grid and its cost")
    parser.add_argument("--runs-dir", default="runs", help="checkpoints (default runs)")
    parser.add_argument("--results-dir", default="results", help="small outputs (default results)")
    parser.add_argument(
        "--only",
        action="append",
        metavar="CELL_GLOB",
        help="only the cells matching this glob (repeatable)",
    )
    parser.add_argument(
        "--time-limit",
        type=parse_duration,
        metavar="DURATION",
        help="local launcher: start a run only if it is estimated to end within this time "
        "(H:MM, H:MM:SS, 150m, 2.5h) from now, and stop the running ones at it (each saves a "
        "checkpoint); exit status 3 when runs are left for a later call",
    )
    add_launcher_args(parser)
    return parser.parse_args(list(argv))


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """``igmda sweep FILE.yaml [FILE.yaml ...] [--jobs N] [--dry-run] [--runs-dir D] [--results-dir D]
    [--only CELL_GLOB] [--launcher local|slurm|ray] [launcher options]``; returns the exit
    status."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    runs_dir, results_dir = Path(args.runs_dir), Path(args.results_dir)
    try:
        launcher, jobs = make_launcher(args)
        sweeps = [load_sweep(file) for file in args.files]
        names = [sweep.name for sweep in sweeps]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise SweepError(f"sweep name(s) {', '.join(repeated)} given twice; name each once")
        groups = select_groups(sweeps, args.only)
        for sweep, cells in groups:
            for cell in cells:
                run_dir, result_dir = cell_dirs(cell, sweep.name, runs_dir, results_dir)
                drift = config_drift(cell, run_dir, result_dir)
                if drift:
                    raise SweepError(
                        f"cell {cell.name} of {sweep.name} has a run whose config differs from "
                        f"the file in {'; '.join(drift)} (only {', '.join(RESUMABLE_FIELDS)} may "
                        f"change); restore the file or move {run_dir} and {result_dir} away"
                    )
    except SweepError as error:
        print(f"igmda sweep: {error}", file=sys.stderr)
        return 2
    if args.dry_run:
        table = results_dir / COST_TABLE
        speeds = load_speeds(table)
        finished = finished_hours(results_dir)
        for sweep, cells in groups:
            states = [
                cell_state(c, *cell_dirs(c, sweep.name, runs_dir, results_dir)) for c in cells
            ]
            at_once = jobs if jobs >= 1 else len(cells)  # Ray without --jobs: the cluster decides
            print(format_plan(sweep, cells, states, speeds, table, at_once, finished))
        return 0
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run_sweeps(
            groups, runs_dir, results_dir, jobs=jobs, launcher=launcher,
            time_limit_s=args.time_limit,
        )  # fmt: skip
    except LaunchError as error:
        print(f"igmda sweep: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        note = INTERRUPTED[args.launcher]
        print(f"igmda sweep {' '.join(names)}: interrupted; {note}", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
