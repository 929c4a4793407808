"""One run of a sweep and how it is started: ``RunTask``, ``execute_task``, launchers.

In: a ``RunTask`` (a frozen dataclass, picklable and JSON-serialisable): the sweep and cell
names, the cell's label, the preset and ``igmda train`` config flags, the run folder, the
results folder, the budget and the size of the final evaluation. Out: the run folder trained
to ``t_max`` and evaluated once, its small outputs copied to the results folder.

``execute_task(task)`` is idempotent and may be killed at any moment (kill -9 included): it
looks at what the folders hold and does only what is missing (``run_folder.next_step``)::

    final_eval.json in the run or results folder  -> "done": copy the small outputs, no more
    a checkpoint at >= t_max and the final rows    -> "evaluate": the final evaluation only
    config.json (with or without a checkpoint)     -> "resume": igmda train --resume RUN_DIR
    nothing                                        -> "start":  igmda train --out RUN_DIR

A finished run is never trained again: ``igmda train --resume`` on it would evaluate once more
and append a duplicate final row. The final evaluation plays ``final_eval_episodes`` greedy
episodes per seed with the deployed policy (``evaluate.evaluate_run``), and for -da/-bc also
with the expert (stored as ``expert_win_rate_per_seed``).

Written in the run folder (``runs/<sweep>/<cell>/``, the ``igmda train --out`` folder):
``cell.json`` {"sweep", "cell", "label"}, ``final_eval.json``, ``task.json`` and ``log.txt``
(the local launcher's: the task and the run's stdout/stderr, appended at each start) and
``.lock`` (the pid of the process that holds the cell: a second process refuses it, exit
``BUSY``). ``run_folder.SMALL_OUTPUTS`` are copied to the results folder (``results/<sweep>/<cell>/``)
when they differ from the copy there. Every file is written to a temporary name and renamed.

A launcher starts tasks: ``Launcher.run(tasks, jobs)`` yields ``(task, returncode)`` as they
end. ``LocalLauncher`` runs each task as ``python -m igmda_jax.sweeps.launchers run-task TASK.json``
in its own process group, stopped with the launcher (SIGTERM, SIGINT or the launcher's death).
``launchers_slurm.SlurmLauncher`` (a SLURM job per task, through submitit) and
``launchers_ray.RayLauncher`` (a Ray task per task) start that same child process on the
other side, so the run and results folders are the same whichever engine ran them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from igmda_jax.sweeps.run_folder import (
    cell_lock,
    copy_small_outputs,
    latest_t_env,
    next_step,
    read_metrics,
    repair_after_kill,
    write_atomic,
    write_if_changed,
)

BUSY = 75  # exit status of a task whose cell another live process holds (EX_TEMPFAIL)
PARENT_ENV = "IGMDA_SWEEP_PARENT"  # pid of the launcher, for die_with_parent


@dataclasses.dataclass(frozen=True)
class RunTask:
    """One cell of a sweep: what to train, where, and how to evaluate it at the end."""

    sweep: str
    cell: str
    label: str
    preset: str
    config_args: tuple[str, ...]  # Config flags of `igmda train`: --alg qmix --map 3m ...
    run_dir: str
    results_dir: str
    t_max: int
    seeds: int
    final_eval_episodes: int
    expert_eval: bool  # -da/-bc: also evaluate the expert

    def train_argv(self, resume: bool) -> list[str]:
        """``igmda train`` arguments that start the run (or resume it)."""
        where = ["--resume", self.run_dir] if resume else ["--out", self.run_dir]
        return ["--preset", self.preset, *where, *self.config_args]

    def cell_record(self) -> dict[str, str]:
        """The content of cell.json: what ``igmda report`` groups runs by."""
        return {"sweep": self.sweep, "cell": self.cell, "label": self.label}

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> RunTask:
        values = json.loads(text)
        return cls(**{**values, "config_args": tuple(values["config_args"])})


# ---------------------------------------------------------------------------- one task
def train(argv: Sequence[str]) -> int:
    """``igmda train ARGV`` in this process; its exit status (2 after a one-line error)."""
    from igmda_jax.train_command import UsageError, train_command

    try:
        train_command(list(argv))
    except UsageError as error:
        print(error.message, file=sys.stderr, flush=True)
        return 2
    except SystemExit as exit_:
        if isinstance(exit_.code, str):
            print(exit_.code, file=sys.stderr, flush=True)
            return 1
        return int(exit_.code or 0)
    return 0


def final_evaluation(task: RunTask) -> dict[str, Any]:
    """Greedy win rates of the run's latest checkpoint: ``evaluate_run`` of the deployed policy
    (+ the expert's per seed for -da/-bc)."""
    from igmda_jax.tools.evaluate import evaluate_run

    result = evaluate_run(task.run_dir, episodes=task.final_eval_episodes)
    if task.expert_eval:
        expert = evaluate_run(task.run_dir, episodes=task.final_eval_episodes, actor="expert")
        result["expert_win_rate_per_seed"] = expert["win_rate_per_seed"]
    return result


def execute_task(task: RunTask) -> int:
    """Bring one cell to "done": train or resume, evaluate, copy. Returns an exit status: 0
    done, ``BUSY`` when another live process holds the cell, else igmda train's failure."""
    run_dir, results_dir = Path(task.run_dir), Path(task.results_dir)
    with cell_lock(run_dir) as holder:
        if holder is not None:
            print(
                f"{task.cell}: {run_dir} is held by another process (pid {holder}); "
                "wait for it or end it, then rerun",
                file=sys.stderr,
                flush=True,
            )
            return BUSY
        write_if_changed(run_dir / "cell.json", json.dumps(task.cell_record(), indent=1) + "\n")
        repair_after_kill(run_dir, results_dir)
        step = next_step(run_dir, results_dir, task.t_max)
        if step in ("start", "resume"):
            argv = task.train_argv(resume=step == "resume")
            print(f"igmda train {' '.join(argv)}", flush=True)
            code = train(argv)
            if code != 0:
                return code
            step = next_step(run_dir, results_dir, task.t_max)
            if step != "evaluate":
                t_env = latest_t_env(read_metrics(run_dir / "metrics.jsonl"))
                print(f"{task.cell}: igmda train ended at t_env {t_env} < {task.t_max}", flush=True)
                return 1
        if step == "evaluate":
            print(f"final evaluation: {task.final_eval_episodes} episodes per seed", flush=True)
            result = final_evaluation(task)
            write_atomic(run_dir / "final_eval.json", json.dumps(result, indent=1) + "\n")
        copy_small_outputs(run_dir, results_dir)
    return 0


def die_with_parent() -> None:
    """Linux: have the kernel send this process SIGTERM when the launcher that started it dies,
    even by kill -9, so that no orphan keeps training a cell the next sweep call resumes.
    Elsewhere (or when not started by a launcher) nothing happens; the cell lock still keeps
    two processes off one cell."""
    parent = os.environ.get(PARENT_ENV)
    if parent is None or not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM))
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):  # the launcher died before prctl
        os.kill(os.getpid(), signal.SIGTERM)


# ---------------------------------------------------------------------------- launchers
class LaunchError(RuntimeError):
    """A launcher cannot start its tasks (no scheduler, a refused submission, an unreachable
    cluster): its message is one line for the user."""


class Launcher(Protocol):
    """Starts tasks, at most ``jobs`` at once, and yields each with its exit status as it ends.
    Closing the iterator (or an exception in it) stops the tasks still running."""

    def run(self, tasks: Sequence[RunTask], jobs: int) -> Iterator[tuple[RunTask, int]]: ...


def log_tail(task: RunTask, lines: int = 15) -> str:
    """The last ``lines`` lines of the task's log.txt (tqdm's carriage returns as lines)."""
    path = Path(task.run_dir) / "log.txt"
    if not path.is_file():
        return "(no log)"
    text = path.read_bytes()[-20_000:].decode(errors="replace").replace("\r", "\n")
    kept = [line for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def cpu_devices_env(jobs: int, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Environment for one of ``jobs`` runs sharing this machine's cores: with jobs > 1 each
    run gets ``cores // jobs`` XLA CPU devices instead of one per core, so the runs do not all
    pile their seeds on every core: ``IGMDA_CPU_DEVICES`` (see envs/__init__.py), and the
    device-count flag this process's own import of ``envs`` put into ``XLA_FLAGS`` (which a
    child would otherwise inherit and keep) replaced. A count the user set is kept; the devices
    only matter on the CPU backend."""
    if jobs <= 1 or "IGMDA_CPU_DEVICES" in environ:
        return {}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return xla_devices_env(max(1, (cores or 1) // jobs), environ)


def xla_devices_env(devices: int, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Environment giving a child ``devices`` XLA CPU devices: ``IGMDA_CPU_DEVICES`` and
    ``XLA_FLAGS`` with its device-count flag replaced (an inherited one would win)."""
    flag = "--xla_force_host_platform_device_count"
    kept = [f for f in environ.get("XLA_FLAGS", "").split() if not f.startswith(flag + "=")]
    return {
        "IGMDA_CPU_DEVICES": str(devices),
        "XLA_FLAGS": " ".join([*kept, f"{flag}={devices}"]),
    }


def keep_niceness(pid: int) -> None:
    """Give the new session ``pid`` leads this process's niceness as its Linux autogroup's.

    With ``sched_autogroup`` (on by default on desktop Linux) the scheduler shares the CPU
    between sessions first and applies nice values only within a session, so a run started
    in a session of its own by a ``nice -n 19 igmda sweep`` would compete with your other work
    as an equal. Writing /proc/PID/autogroup keeps it in the background. Does nothing where
    that file does not exist or cannot be written."""
    niceness = os.nice(0)
    if niceness <= 0:
        return
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/autogroup").write_text(str(niceness))


@dataclasses.dataclass(frozen=True)
class LocalLauncher:
    """Each task in a subprocess on this machine, its stdout/stderr appended to
    ``run_dir/log.txt``; each in its own process group (session), ended with SIGTERM (then
    SIGKILL after ``grace_s``) when the iterator is closed or interrupted. On SIGTERM a run
    saves a checkpoint after its current chunk (igmda_jax/persist/stop_signals.py); ``grace_s``
    leaves it time for one chunk of a large map on a busy CPU.

    With ``time_limit_s`` (wall seconds from the start of ``run``, e.g. what is left of an
    allocation), a task starts only when ``estimate_s(task)`` (None: unknown, started) fits in
    the time left, the first that fits in queue order; at the limit the running tasks are
    stopped as above. Tasks not started or stopped by the limit are not yielded: they are in
    ``left`` (in queue order) when ``run`` ends."""

    python: str = sys.executable
    poll_s: float = 0.5
    grace_s: float = 60.0
    time_limit_s: float | None = None
    estimate_s: Callable[[RunTask], float | None] = lambda task: None
    left: list[RunTask] = dataclasses.field(default_factory=list, compare=False)

    def start(
        self, task: RunTask, jobs: int = 1, env: Mapping[str, str] | None = None
    ) -> subprocess.Popen:
        """Write task.json and start ``python -m igmda_jax.sweeps.launchers run-task`` on it, with
        :func:`cpu_devices_env` for ``jobs`` runs at once and ``env`` added to its environment
        (the SLURM and Ray launchers start their runs with this too)."""
        run_dir = Path(task.run_dir)
        task_file = run_dir / "task.json"
        write_atomic(task_file, task.to_json())
        with open(run_dir / "log.txt", "ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"\n=== {stamp} igmda sweep {task.sweep}: {task.cell} ===\n".encode())
            log.flush()
            process = subprocess.Popen(
                [self.python, "-m", "igmda_jax.sweeps.launchers", "run-task", str(task_file)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={
                    **os.environ,
                    **cpu_devices_env(jobs),
                    **(env or {}),
                    PARENT_ENV: str(os.getpid()),
                    "PYTHONUNBUFFERED": "1",
                },
            )
        keep_niceness(process.pid)
        return process

    def stop(self, processes: Sequence[subprocess.Popen]) -> None:
        """SIGTERM each process group, then SIGKILL those alive after ``grace_s``."""
        alive = sum(process.poll() is None for process in processes)
        if alive:
            print(
                f"stopping {alive} run(s): each saves a checkpoint after its current chunk "
                f"(killed after {self.grace_s:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for process in processes:
                if process.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, sig)
            deadline = time.monotonic() + self.grace_s
            while time.monotonic() < deadline and any(p.poll() is None for p in processes):
                time.sleep(0.1)

    def fits(self, task: RunTask, seconds_left: float | None) -> bool:
        """Whether ``task`` is estimated to end within ``seconds_left`` (None: no limit)."""
        estimate = None if seconds_left is None else self.estimate_s(task)
        return estimate is None or estimate <= seconds_left

    def run(self, tasks: Sequence[RunTask], jobs: int) -> Iterator[tuple[RunTask, int]]:
        started = time.monotonic()
        pending = list(tasks)
        running: list[tuple[RunTask, subprocess.Popen]] = []
        self.left.clear()
        try:
            while pending or running:
                ended = [(task, p) for task, p in running if p.poll() is not None]
                for task, process in ended:  # a run that ended at the limit still counts
                    running.remove((task, process))
                    yield task, int(process.returncode)
                seconds_left = None
                if self.time_limit_s is not None:
                    seconds_left = started + self.time_limit_s - time.monotonic()
                    if seconds_left <= 0:
                        break
                # the time left only shrinks: a task that does not fit now never will
                self.left.extend(task for task in pending if not self.fits(task, seconds_left))
                pending = [task for task in pending if task not in self.left]
                while pending and len(running) < jobs:
                    task = pending.pop(0)
                    running.append((task, self.start(task, jobs)))
                if not ended:
                    time.sleep(self.poll_s)
        finally:
            unfinished = [*self.left, *(task for task, _ in running), *pending]
            self.left[:] = [task for task in tasks if task in unfinished]  # queue order
            self.stop([process for _, process in running])


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m igmda_jax.sweeps.launchers run-task TASK.json``: execute one task."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] != "run-task":
        print("usage: python -m igmda_jax.sweeps.launchers run-task TASK.json", file=sys.stderr)
        return 2
    die_with_parent()
    return execute_task(RunTask.from_json(Path(args[1]).read_text()))


if __name__ == "__main__":
    sys.exit(main())
