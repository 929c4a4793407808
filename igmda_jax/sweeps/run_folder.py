"""The files of one sweep run and what they say about it: atomic writes, the small outputs
copied from the run folder (``runs/<sweep>/<cell>/``) to the results folder
(``results/<sweep>/<cell>/``), the metrics rows, the finished checkpoints, the step a run still
needs (``next_step``: done, evaluate, resume or start), the cell's lock and the repair of what a
kill leaves. :mod:`igmda_jax.sweeps.launchers` runs a task from them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

SMALL_OUTPUTS = ("config.json", "metrics.jsonl", "provenance.json", "cell.json", "final_eval.json")
Step = Literal["done", "evaluate", "resume", "start"]


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: a reader (or a kill)
    sees the old content or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def write_if_changed(path: Path, data: str | bytes) -> bool:
    """``write_atomic`` unless ``path`` already holds exactly ``data`` (its mtime then stays)."""
    data = data.encode() if isinstance(data, str) else data
    if path.is_file() and path.read_bytes() == data:
        return False
    write_atomic(path, data)
    return True


def copy_small_outputs(run_dir: Path, results_dir: Path) -> list[str]:
    """Copy the ``SMALL_OUTPUTS`` the run folder holds to the results folder, each only when it
    differs from the copy there. Returns the names copied."""
    copied = []
    for name in SMALL_OUTPUTS:
        source = run_dir / name
        if source.is_file() and write_if_changed(results_dir / name, source.read_bytes()):
            copied.append(name)
    return copied


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Rows of a metrics.jsonl; a missing file is empty and a line cut by a kill is skipped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            rows.append(json.loads(line))
    return rows


def latest_t_env(rows: Sequence[dict[str, Any]]) -> int:
    """Env steps per seed at the last evaluation: the smallest t_env of its rows (0: none)."""
    if not rows:
        return 0
    last = max(row["eval"] for row in rows)
    return min(int(row["t_env"]) for row in rows if row["eval"] == last)


def checkpoint_steps(run_dir: Path) -> list[int]:
    """Steps of the finished checkpoints in ``run_dir/checkpoints`` (orbax renames a step's
    folder to its number when the save is complete), ascending."""
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit() and p.is_dir())


def next_step(run_dir: Path, results_dir: Path, t_max: int) -> Step:
    """What a run still needs (see the module docstring). "evaluate" needs both a checkpoint
    at >= t_max and the final metrics rows: the periodic save can reach t_max just before the
    final evaluation row is written, and resuming from it writes that row once."""
    if (run_dir / "final_eval.json").is_file() or (results_dir / "final_eval.json").is_file():
        return "done"
    steps = checkpoint_steps(run_dir)
    if (
        steps
        and steps[-1] >= t_max
        and latest_t_env(read_metrics(run_dir / "metrics.jsonl")) >= t_max
    ):
        return "evaluate"
    return "resume" if (run_dir / "config.json").is_file() else "start"


@contextlib.contextmanager
def cell_lock(run_dir: Path) -> Iterator[int | None]:
    """Hold ``run_dir/.lock`` (an flock, released by the kernel when the process dies) for the
    block. Yields None when held, else the pid written by the process that holds it (0 when
    unreadable)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            yield int(text) if text.isdigit() else 0
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield None
    finally:
        os.close(fd)


def repair_after_kill(run_dir: Path, results_dir: Path) -> None:
    """Undo what a kill in the middle of a plain (non-atomic) write by ``igmda train`` leaves:
    a cut last line of metrics.jsonl is dropped (the resume rewrites the rows it keeps), and a
    cut config.json is restored from the results folder's copy, or removed when there is no
    checkpoint yet (the run then starts over)."""
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        data = metrics.read_bytes()
        if data and not data.endswith(b"\n"):
            write_atomic(metrics, data[: data.rfind(b"\n") + 1])
    config = run_dir / "config.json"
    if not config.is_file() or _is_json(config):
        return
    if (results_dir / "config.json").is_file() and _is_json(results_dir / "config.json"):
        write_atomic(config, (results_dir / "config.json").read_bytes())
    elif not checkpoint_steps(run_dir):
        config.unlink()


def _is_json(path: Path) -> bool:
    try:
        json.loads(path.read_text())
    except ValueError:
        return False
    return True
