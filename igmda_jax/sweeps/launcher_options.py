"""``igmda sweep``'s launcher options: ``--launcher local|slurm|ray``, ``--no-wait`` and the
``--slurm-*`` / ``--ray-*`` options added to its parser (``add_launcher_args``), checked, and
turned into a ``Launcher`` and its number of runs at once (``make_launcher``). A missing
optional extra (submitit, ray) is refused in one line naming it."""

from __future__ import annotations

import argparse
import importlib

from igmda_jax.sweeps.launchers import Launcher, LocalLauncher
from igmda_jax.sweeps.launchers_ray import RayLauncher, RayOptions  # ray itself: only when used
from igmda_jax.sweeps.launchers_slurm import (
    SlurmLauncher,
    SlurmOptions,
    parse_extra,
    parse_slurm_time,
)
from igmda_jax.sweeps.spec import SweepError


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
