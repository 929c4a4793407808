"""Where a run's evaluation rows go besides ``metrics.jsonl``: TensorBoard, CSV, Weights & Biases.

In: the rows of one evaluation (one dict per seed: ``eval``, ``seed``, ``t_env``, ``win_rate``,
``return``, losses, ``wall_time``, ...), the rows ``run.py`` writes to ``metrics.jsonl``. Out:
the same numbers in the logger's format. ``metrics.jsonl`` stays the record; every logger here
is optional, chosen by Config fields, and may be turned on or off when a run is resumed::

    --tensorboard          DIR/tensorboard/events.*   per-seed and seed-mean scalars
    --csv                  DIR/metrics.csv            metrics.jsonl as a table, rewritten whole
    --wandb-project NAME   a W&B run (offline with WANDB_MODE=offline), resumed with the run

The optional packages are imported only when their logger is asked for; a missing one is one
line naming the extra to install.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
from pathlib import Path
from typing import Any, Protocol

import numpy as np

NOT_SCALARS = ("eval", "seed", "t_env")  # row keys that index a row rather than measure it


class MetricsLogger(Protocol):
    """Receives every evaluation's rows, in order, and is closed once at the end."""

    def write(self, rows: list[dict[str, Any]]) -> None: ...

    def close(self) -> None: ...


class LoggerUnavailable(ImportError):
    """An optional logger's package is not installed; the message names the extra."""


def scalar_names(rows: list[dict[str, Any]]) -> list[str]:
    """Keys of ``rows`` that hold a number in every row, in the first row's order."""
    return [
        name
        for name in rows[0]
        if name not in NOT_SCALARS
        and all(isinstance(row.get(name), int | float) for row in rows)
        and not isinstance(rows[0][name], bool)
    ]


def seed_mean_scalars(rows: list[dict[str, Any]]) -> dict[str, float]:
    """``{"mean/<name>": mean over the rows' seeds}`` for every scalar of one evaluation."""
    return {
        f"mean/{name}": float(np.mean([row[name] for row in rows])) for name in scalar_names(rows)
    }


def per_seed_scalars(rows: list[dict[str, Any]]) -> dict[str, float]:
    """``{"seed<S>/<name>": value}`` for every scalar of every row of one evaluation."""
    return {
        f"seed{row['seed']}/{name}": float(row[name]) for row in rows for name in scalar_names(rows)
    }


class TensorBoardLog:
    """TensorBoard scalars (``--tensorboard``): one event file in ``DIR/tensorboard``,
    per-seed (at the seed's t_env) and seed-mean (at the smallest t_env) values."""

    def __init__(self, directory: Path) -> None:
        try:
            from tensorboardX import SummaryWriter
        except ImportError as error:
            raise LoggerUnavailable(
                "--tensorboard needs tensorboardX: pip install 'igmda-jax[tensorboard]'"
            ) from error
        self.writer = SummaryWriter(str(directory))

    def write(self, rows: list[dict[str, Any]]) -> None:
        step = min(row["t_env"] for row in rows)
        for tag, value in seed_mean_scalars(rows).items():
            self.writer.add_scalar(tag, value, step)
        for row in rows:
            for name in scalar_names(rows):
                self.writer.add_scalar(f"seed{row['seed']}/{name}", row[name], row["t_env"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    """A CSV table of ``rows``: one column per key (the union, in first-seen order); a row
    without a key leaves its cell empty; lists and dicts are written as JSON."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(columns), restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                key: json.dumps(value) if isinstance(value, list | dict) else value
                for key, value in row.items()
            }
        )
    return text.getvalue()


class CsvLog:
    """``DIR/metrics.csv`` (``--csv``): the rows of ``metrics.jsonl`` as one table, rewritten
    whole (write to a temporary name, rename) after every evaluation, so it always equals the
    JSONL, including after a resume that dropped rows written after the last checkpoint."""

    def __init__(self, metrics_path: Path) -> None:
        self.metrics_path = metrics_path
        self.csv_path = metrics_path.with_suffix(".csv")

    def write(self, rows: list[dict[str, Any]]) -> None:
        del rows  # the JSONL holds them already, with every row before them
        lines = self.metrics_path.read_text().splitlines()
        all_rows = [json.loads(line) for line in lines if line.strip()]
        partial = self.csv_path.with_name(self.csv_path.name + ".partial")
        partial.write_text(rows_to_csv(all_rows) if all_rows else "")
        partial.replace(self.csv_path)

    def close(self) -> None:
        pass


def wandb_run_id(out: Path) -> str:
    """The W&B run id of the run folder ``out``: drawn once, kept in ``out/wandb_id``, so that
    every resume continues the same W&B run."""
    path = out / "wandb_id"
    if path.exists():
        return path.read_text().strip()
    run_id = f"{out.name[:48]}-{secrets.token_hex(4)}".replace("/", "-")
    path.write_text(run_id + "\n")
    return run_id


class WandbLog:
    """A Weights & Biases run (``--wandb-project NAME``): the Config as its config, per-seed and
    seed-mean scalars logged with ``t_env`` as the x-axis. Resumes the same W&B run (id in
    ``DIR/wandb_id``). W&B's files go to ``DIR/wandb``; ``WANDB_MODE=offline`` keeps them there
    (``wandb sync`` uploads them later). Rows at a t_env below one already logged (a resume
    after a crash re-evaluates them) are logged again under the same t_env."""

    def __init__(self, out: Path, project: str, config: dict[str, Any]) -> None:
        try:
            import wandb
        except ImportError as error:
            raise LoggerUnavailable(
                "--wandb-project needs wandb: pip install 'igmda-jax[wandb]'"
            ) from error
        (out / "wandb").mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=project,
            id=wandb_run_id(out),
            name=out.name,
            dir=str(out),
            config=config,
            resume="allow",
            settings=wandb.Settings(quiet=True, console="off"),
        )
        self.run.define_metric("t_env")
        self.run.define_metric("*", step_metric="t_env")

    def write(self, rows: list[dict[str, Any]]) -> None:
        self.run.log(
            {
                "t_env": min(row["t_env"] for row in rows),
                **seed_mean_scalars(rows),
                **per_seed_scalars(rows),
            }
        )

    def close(self) -> None:
        """Finish the run and wait for W&B's service process to write it out: ``finish`` alone
        returns before the service has flushed the run's file (under load it held only its
        header), so a process that reads or copies the folder next could miss the records."""
        import wandb

        self.run.finish()
        wandb.teardown()


def check_loggers(config_dict: dict[str, Any]) -> None:
    """Raise :class:`LoggerUnavailable` now if a logger asked for cannot be made (before the
    run folder is written: the corrected command must not meet a half-started run)."""
    needs = {"tensorboard": ("tensorboardX", "--tensorboard", "tensorboard")}
    needs["wandb_project"] = ("wandb", "--wandb-project", "wandb")
    for field, (module, flag, extra) in needs.items():
        if config_dict.get(field):
            try:
                __import__(module)
            except ImportError as error:
                raise LoggerUnavailable(
                    f"{flag} needs {module}: pip install 'igmda-jax[{extra}]'"
                ) from error


def make_loggers(out: Path, metrics_path: Path, config_dict: dict[str, Any]) -> list[MetricsLogger]:
    """The loggers asked for by a Config (as ``config.to_dict()``) for the run folder ``out``."""
    loggers: list[MetricsLogger] = []
    if config_dict.get("tensorboard"):
        loggers.append(TensorBoardLog(out / "tensorboard"))
    if config_dict.get("csv"):
        loggers.append(CsvLog(metrics_path))
    if config_dict.get("wandb_project"):
        os.environ.setdefault("WANDB_SILENT", "true")
        loggers.append(WandbLog(out, config_dict["wandb_project"], config_dict))
    return loggers
