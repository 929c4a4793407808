"""``igmda sweep``'s command: options in, runs started, exit status out.

In: ``FILE.yaml [--jobs N] [--dry-run] [--runs-dir D] [--results-dir D] [--only CELL_GLOB]
[--launcher local|slurm|ray] [--no-wait] [--slurm-* ...] [--ray-* ...]`` (``main``;
``make_launcher`` turns the launcher options into a ``Launcher``). The file is loaded and
checked (``sweep.load_sweep``), the cells chosen by ``--only``, and a cell whose saved config
drifted from the file refused. Out: with ``--dry-run``, the plan (``sweeps.plan.format_plan``)
and nothing written; else each unfinished cell as a ``launchers.RunTask`` (the cell's Config
fields as ``igmda train`` flags) handed to the launcher (processes here, SLURM jobs, Ray
tasks), a line per finished run and a progress line every minute. Exit status 0 when every
selected run is done, 1 when some failed, 2 for a bad file or option (or a cluster that cannot
be reached or refuses the jobs), 130 when stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import importlib
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from igmda_jax.core.config import RESUMABLE_FIELDS
from igmda_jax.sweeps.launchers import (
    Launcher,
    LaunchError,
    LocalLauncher,
    RunTask,
    copy_small_outputs,
    log_tail,
    read_metrics,
    write_if_changed,
)
from igmda_jax.sweeps.launchers_ray import RayLauncher, RayOptions  # ray itself: only when used
from igmda_jax.sweeps.launchers_slurm import (
    SlurmLauncher,
    SlurmOptions,
    parse_extra,
    parse_slurm_time,
)
from igmda_jax.sweeps.plan import (
    COST_TABLE,
    ProgressThread,
    cell_dirs,
    cell_state,
    config_drift,
    format_plan,
    load_speeds,
    result_line,
)
from igmda_jax.sweeps.spec import Cell, Sweep, SweepError, load_sweep


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
    describe = getattr(launcher, "describe", None)  # the SLURM and Ray launchers say how
    at_a_time = describe(jobs) if describe is not None else f"{jobs} at a time"
    write(
        f"sweep {sweep.name}: {len(cells)} run(s), {len(cells) - len(todo)} done, "
        f"{len(todo)} to run, {at_a_time}; runs in {runs_dir / sweep.name}, "
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
        description="Train a grid of runs from a YAML file, resumably (see igmda_jax/sweeps/spec.py "
        "for the schema). Rerun the same command to continue it.",
    )
    parser.add_argument("file", help="the sweep file (YAML)")
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
    add_launcher_args(parser)
    return parser.parse_args(list(argv))


def add_launcher_args(parser: argparse.ArgumentParser) -> None:
    """--launcher and the options of the SLURM and Ray launchers (None when not given)."""
    parser.add_argument(
        "--launcher",
        choices=LAUNCHERS,
        default="local",
        help="where the runs go: processes on this machine (local, the default), SLURM jobs "
        "through submitit (pip install 'igmda-jax[slurm]'), Ray tasks (pip install "
        "'igmda-jax[ray]'); the run and results folders are the same with each",
    )
    parser.add_argument(
        "--no-wait",
        action="store_true",
        help="slurm: submit the jobs and return (by default the command waits for them, as "
        "with local runs); rerun the same command to see their state, collect the finished "
        "runs and resubmit the failed ones",
    )
    slurm = parser.add_argument_group("--launcher slurm (a job per run, one job array a call)")
    slurm.add_argument("--slurm-partition", metavar="NAME", help="partition (cluster default)")
    slurm.add_argument(
        "--slurm-time",
        metavar="TIME",
        help="time limit of each job as sbatch takes it: MM, HH:MM:SS, D-HH, D-HH:MM:SS "
        "(default 3:00:00); a run that needs longer is requeued and resumes from its checkpoint",
    )
    slurm.add_argument("--slurm-cpus", type=int, metavar="N", help="CPUs per job (cluster default)")
    slurm.add_argument("--slurm-gpus", type=int, metavar="N", help="GPUs per job (default 0)")
    slurm.add_argument(
        "--slurm-array-parallelism",
        type=int,
        metavar="N",
        help="jobs of the array running at once (default 256)",
    )
    slurm.add_argument(
        "--slurm-max-requeues",
        type=int,
        metavar="N",
        help="requeues of a job at its time limit (default 10; preemptions do not count)",
    )
    slurm.add_argument(
        "--slurm-extra",
        action="append",
        metavar="KEY=VALUE",
        help="one more '#SBATCH --KEY=VALUE' line, e.g. account=myproject, qos=high, mem=16G "
        "(repeatable)",
    )
    slurm.add_argument(
        "--slurm-local",
        action="store_true",
        default=None,
        help="run the jobs with submitit's local executor, as processes on this machine (to "
        "try a sweep without a cluster; --slurm-time still applies)",
    )
    ray = parser.add_argument_group("--launcher ray (a Ray task per run)")
    ray.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="the Ray cluster to join: auto, HOST:6379 or ray://HOST:10001 (default: start a "
        "Ray instance on this machine for the sweep)",
    )
    ray.add_argument(
        "--ray-cpus",
        type=float,
        metavar="N",
        help="CPUs per task (default 1; also the XLA CPU devices of its run)",
    )
    ray.add_argument("--ray-gpus", type=float, metavar="N", help="GPUs per task (default 0)")
    ray.add_argument(
        "--ray-max-retries",
        type=int,
        metavar="N",
        help="times a task whose worker died is run again (default 3)",
    )


def _given(args: argparse.Namespace, prefix: str) -> list[str]:
    """The options starting with ``--prefix`` given on the command line."""
    names = [n for n, v in vars(args).items() if n.startswith(prefix + "_") and v is not None]
    return ["--" + name.replace("_", "-") for name in names]


def _at_least(flag: str, value: float | None, low: float) -> None:
    if value is not None and not value >= low:
        raise SweepError(f"{flag} must be >= {low:g}, got {value:g}")


def require_extra(module: str, extra: str) -> None:
    """Import ``module``; SweepError naming the pip extra that installs it when it is missing."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise SweepError(
            f"--launcher {extra} needs the {module} package: pip install 'igmda-jax[{extra}]'"
        ) from None


def slurm_options(args: argparse.Namespace) -> SlurmOptions:
    """The ``launchers_slurm.SlurmOptions`` of the --slurm-* options and --no-wait."""
    _at_least("--slurm-cpus", args.slurm_cpus, 1)
    _at_least("--slurm-gpus", args.slurm_gpus, 0)
    _at_least("--slurm-array-parallelism", args.slurm_array_parallelism, 1)
    _at_least("--slurm-max-requeues", args.slurm_max_requeues, 0)
    values = {
        "partition": args.slurm_partition,
        "cpus": args.slurm_cpus,
        "gpus": args.slurm_gpus,
        "array_parallelism": args.slurm_array_parallelism,
        "max_requeues": args.slurm_max_requeues,
        "local": args.slurm_local,
    }
    try:
        if args.slurm_time is not None:
            values["time_min"] = parse_slurm_time(args.slurm_time)
        values["extra"] = parse_extra(args.slurm_extra or ())
    except ValueError as error:
        raise SweepError(str(error)) from None
    values["wait"] = not args.no_wait
    return SlurmOptions(**{name: v for name, v in values.items() if v is not None})


def ray_options(args: argparse.Namespace) -> RayOptions:
    """The ``launchers_ray.RayOptions`` of the --ray-* options."""
    _at_least("--ray-cpus", args.ray_cpus, 0)
    _at_least("--ray-gpus", args.ray_gpus, 0)
    _at_least("--ray-max-retries", args.ray_max_retries, 0)
    if args.ray_cpus == 0 and not args.ray_gpus:
        raise SweepError("--ray-cpus 0 needs --ray-gpus > 0: a task must ask for something")
    values = {
        "address": args.ray_address,
        "cpus": args.ray_cpus,
        "gpus": args.ray_gpus,
        "max_retries": args.ray_max_retries,
    }
    return RayOptions(**{name: v for name, v in values.items() if v is not None})


def make_launcher(args: argparse.Namespace) -> tuple[Launcher, int]:
    """The launcher --launcher names, set up from its options, and the ``jobs`` to run it with
    (0 for Ray: no cap). SweepError for an option of another launcher, a bad value or a
    missing extra; nothing is started or written."""
    _at_least("--jobs", args.jobs, 1)
    for name in ("slurm", "ray"):
        given = _given(args, name)
        if args.launcher != name and given:
            raise SweepError(f"{given[0]} is an option of --launcher {name}")
    if args.no_wait and args.launcher != "slurm":
        raise SweepError(
            "--no-wait is an option of --launcher slurm (local runs and Ray tasks end with "
            "the command)"
        )
    if args.launcher == "local":
        return LocalLauncher(), args.jobs or 1
    if args.launcher == "slurm":
        if args.jobs is not None:
            raise SweepError(
                "--jobs is not an option of --launcher slurm; SLURM runs "
                "--slurm-array-parallelism jobs at once"
            )
        options = slurm_options(args)
        require_extra("submitit", "slurm")
        return SlurmLauncher(options), options.array_parallelism
    ray = ray_options(args)
    require_extra("ray", "ray")
    return RayLauncher(ray), args.jobs or 0


LAUNCHERS = ("local", "slurm", "ray")
INTERRUPTED = {  # what became of the runs of an interrupted sweep
    "local": "its runs were stopped and resume at the next call of the same command",
    "slurm": "its jobs were not cancelled: rerun the same command to follow them and collect "
    "the finished runs",
    "ray": "its Ray tasks were cancelled and resume at the next call of the same command",
}


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """``igmda sweep FILE.yaml [--jobs N] [--dry-run] [--runs-dir D] [--results-dir D]
    [--only CELL_GLOB] [--launcher local|slurm|ray] [launcher options]``; returns the exit
    status."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    runs_dir, results_dir = Path(args.runs_dir), Path(args.results_dir)
    try:
        launcher, jobs = make_launcher(args)
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
        at_once = jobs if jobs >= 1 else len(cells)  # Ray without --jobs: the cluster decides
        print(format_plan(sweep, cells, states, load_speeds(table), table, at_once))
        return 0
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run_sweep(sweep, cells, runs_dir, results_dir, jobs=jobs, launcher=launcher)
    except LaunchError as error:
        print(f"igmda sweep: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        note = INTERRUPTED[args.launcher]
        print(f"igmda sweep {sweep.name}: interrupted; {note}", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
