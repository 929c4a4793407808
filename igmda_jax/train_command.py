"""``igmda train``: its arguments, the multi-process set-up, the run, and bad input as one line.

Below the CLI's table (``igmda_jax.cli``) so that a sweep's run task (``sweeps.launchers``) runs
exactly ``igmda train`` without importing the CLI. :class:`UsageError` is the one-line, exit-2
error of every subcommand.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import tyro


class UsageError(SystemExit):
    """Bad input: ``main`` prints the message as one line on stderr and exits with status 2
    (the usual status of a usage error), leaving the filesystem as it was."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = " ".join(message.split())  # one line

    def __str__(self) -> str:
        return self.message


INT_FIELDS_ALLOWING_FLOAT_TEXT = (
    "--t-max",
    "--test-interval",
    "--save-interval",
    "--epsilon-anneal-steps",
    "--buffer-size",
    "--beta-anneal-steps",
)


def integral_floats(argv: list[str]) -> list[str]:
    """Let integer options be written as 2e6: rewrite the value after such flags."""
    out = list(argv)
    for i, arg in enumerate(out[:-1]):
        if arg in INT_FIELDS_ALLOWING_FLOAT_TEXT:
            try:
                value = float(out[i + 1])
            except ValueError:
                continue
            if value.is_integer():
                out[i + 1] = str(int(value))
    return out


@dataclasses.dataclass(frozen=True)
class TrainRequest:
    """What ``igmda train ARGS`` asks for: the resolved config and where it runs."""

    config: Any  # igmda_jax.core.config.Config (imported lazily: `igmda envs` stays light)
    out_dir: str
    resume: bool
    progress: bool


def parse_train_args(argv: list[str]) -> TrainRequest:
    """Resolve ``igmda train`` arguments: preset, then the main job's defaults (config.MAIN_JOB)
    or the resumed run's saved config, then field overrides. Bad input raises SystemExit."""
    import argparse

    import envs
    from igmda_jax.core.config import PRESETS, Config, ConfigError
    from igmda_jax.core.presets import MAIN_JOB, load_config, make_config

    head = argparse.ArgumentParser(add_help=False)
    head.add_argument("--preset", default="smax")
    head.add_argument("--out", default=None)
    head.add_argument("--resume", default=None)
    head.add_argument("--no-progress", action="store_true")
    head.add_argument("--alg", default=None)  # read first: the mixer has defaults of its own
    known, rest = head.parse_known_args(argv)
    if known.preset not in PRESETS:
        raise UsageError(
            f"igmda train: unknown preset {known.preset!r}; valid: {', '.join(PRESETS)}"
        )
    if known.resume is not None:
        saved = Path(known.resume) / "config.json"
        if not saved.exists():
            raise UsageError(f"igmda train: nothing to resume: {saved} does not exist")
        try:
            default = load_config(saved)
        except ConfigError as error:
            raise UsageError(f"igmda train: cannot resume {known.resume}: {error}") from None
        out_dir = known.resume
        if known.alg is not None:  # a changed alg is refused by the resume check, naming it
            rest = ["--alg", known.alg, *rest]
    else:
        chosen = {} if known.alg is None else {"alg": known.alg}
        try:
            default = make_config(known.preset, **{**MAIN_JOB, **chosen})
        except ConfigError as error:
            raise UsageError(f"igmda train: {error}") from None
        out_dir = known.out
    config = tyro.cli(
        Config,
        default=default,
        args=integral_floats(rest),
        prog="igmda train",
        description="Train a value-decomposition algorithm (fields below override the preset). "
        "With no options: qmix-da on 3m at sight range 0 for 400k env steps (a few minutes on a "
        "2-core CPU). Also: --preset {smax,finetuned,authors}, --out DIR (default "
        "runs/<alg>_<map>_sight<r>_<time>), --resume DIR, --no-progress; one run over several "
        "processes: --coordinator HOST:PORT --num-processes N --process-id I, or --distributed "
        "{auto,on,off} (docs/scale-out-multihost.md).",
    )
    try:
        config.validate()
    except ConfigError as error:
        raise UsageError(f"igmda train: {error}") from None
    if config.backend != "smac" and config.map not in envs.list_maps():  # SC2 has its own maps
        raise UsageError(
            f"igmda train: unknown map {config.map!r}; known maps: {', '.join(envs.list_maps())}"
        )
    if out_dir is None:
        sight = "default" if config.sight_range is None else f"{config.sight_range:g}"
        out_dir = f"runs/{config.alg}_{config.map}_sight{sight}_{time.strftime('%Y%m%d-%H%M%S')}"
    return TrainRequest(config, out_dir, known.resume is not None, not known.no_progress)


def train_command(argv: list[str]) -> None:
    """igmda train [--preset smax|finetuned|authors] [--resume DIR | --out DIR] [config fields]
    [--coordinator HOST:PORT --num-processes N --process-id I] [--distributed auto|on|off]."""
    from igmda_jax.fused.distributed import DistributedError, initialize, parse_launch

    try:  # before anything starts JAX's backend (importing igmda_jax.run does)
        launch, argv = parse_launch(argv)
        initialize(launch)
    except DistributedError as error:
        raise UsageError(f"igmda train: {error}") from None
    request = parse_train_args(argv)  # bad input fails here, before the trainer's imports
    from envs.smac import SmacNotAvailableError
    from igmda_jax.core.config import ConfigError
    from igmda_jax.host.loop import HostBackendError
    from igmda_jax.persist.checkpoint import (
        CheckpointMismatchError,
        CheckpointUnreadableError,
        CheckpointWriteError,
    )
    from igmda_jax.persist.loggers import LoggerUnavailable
    from igmda_jax.persist.stop_signals import RunStopped
    from igmda_jax.run import run

    try:
        summary = run(
            request.config, request.out_dir, resume=request.resume, progress=request.progress
        )
    except RunStopped as stopped:
        print(
            f"igmda train: {stopped}; `igmda train --resume {request.out_dir}` continues it",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(stopped.exit_code) from None
    except (
        SmacNotAvailableError,
        HostBackendError,
        LoggerUnavailable,
        DistributedError,
        CheckpointMismatchError,
        CheckpointUnreadableError,
        CheckpointWriteError,
        ConfigError,
        FileExistsError,
        FileNotFoundError,
    ) as error:
        raise UsageError(f"igmda train: {error}") from None
    if summary.get("finished_before"):
        print(
            f"igmda train: {summary['out_dir']} is finished at t_env {summary['t_env']} "
            f"(t_max {request.config.t_max}): nothing to do; pass a larger --t-max to go on",
            file=sys.stderr,
        )
        return
    per_seed = " ".join(f"{w:.2f}" for w in summary["win_rate_per_seed"])
    print(
        f"final greedy win rate ({'learner' if request.config.uses_expert else 'agent'}): "
        f"{summary['win_rate']:.3f} (per seed: {per_seed}) at t_env {summary['t_env']}\n"
        f"run folder: {summary['out_dir']}"
    )
