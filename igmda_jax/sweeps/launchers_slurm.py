"""Sweep runs as SLURM jobs through submitit: ``SlurmOptions``, ``SlurmLauncher``, job records.

In: the sweep's ``RunTask``s and ``SlurmOptions`` (partition, time limit, CPUs and GPUs per
job, array parallelism, requeues, extra ``#SBATCH`` parameters, whether to wait; ``local``:
submitit's local executor, jobs as processes on this machine). Out: one job per task, those of
one call submitted as one job array; with ``wait`` the tasks yielded as their jobs end.

Each job runs ``launchers_slurm_job.SlurmRun()(task)``: the run in a child process, as the
local launcher starts it; at the job's time limit (or preemption) submitit requeues it through
``SlurmRun.checkpoint`` and it resumes from the run's last checkpoint, at most
``max_requeues`` times for time limits. submitit is imported only when jobs are submitted or
read.

Each submitted job is recorded in ``RUN_DIR/slurm_job.json`` (``JobRecord``); submitit's
pickles and logs go to ``runs/<sweep>/.slurm/``. A later call reads the record: a job SLURM
still holds (``job_phase``: PENDING, RUNNING, REQUEUED, ... and UNKNOWN, a job sacct does not
list) is followed and not submitted again; a job that ended without the run being done is
submitted again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from igmda_jax.sweeps.launchers import LaunchError, RunTask
from igmda_jax.sweeps.launchers_slurm_job import SlurmRun
from igmda_jax.sweeps.run_folder import write_atomic

RECORD = "slurm_job.json"
SUBMITIT_DIR = ".slurm"  # in runs/<sweep>/; hidden, so igmda report does not look inside
# States of a job SLURM still holds (it may run, or run again), as sacct writes them; submitit
# counts UNKNOWN (no sacct line yet) and PREEMPTED (before the requeue) as not ended too.
ACTIVE_STATES = frozenset({
    "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_FED",
    "REQUEUE_HOLD", "RESIZING", "SIGNALING", "STAGE_OUT", "READY", "PREEMPTED", "UNKNOWN",
})  # fmt: skip


def _print(line: str) -> None:
    print(line, flush=True)


# ---------------------------------------------------------------------------- options
@dataclasses.dataclass(frozen=True)
class SlurmOptions:
    """How the jobs are asked for; None leaves a value to the cluster's default."""

    partition: str | None = None
    time_min: int = 180  # the time limit of each job; a longer run is requeued
    cpus: int | None = None  # per job (cpus_per_task)
    gpus: int = 0  # per job (gpus_per_node)
    array_parallelism: int = 256  # jobs of one array running at once
    max_requeues: int = 10  # after a time limit (preemptions do not count)
    extra: tuple[tuple[str, str], ...] = ()  # more #SBATCH --KEY=VALUE lines
    local: bool = False  # submitit's local executor instead of SLURM
    wait: bool = True  # follow the jobs until they end


def parse_slurm_time(text: str) -> int:
    """A SLURM time limit (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM`` or
    ``D-HH:MM:SS``) in whole minutes, rounded up. ValueError when it is not one of these or is
    not positive."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if match is None:
        raise ValueError(
            f"--slurm-time {text!r} is not a SLURM time (MM, HH:MM:SS, D-HH, D-HH:MM:SS)"
        )
    days, first, second, third = (int(g) if g is not None else None for g in match.groups())
    if days is not None:  # D-HH[:MM[:SS]]
        hours, minutes, seconds = first, second or 0, third or 0
    elif third is not None:  # HH:MM:SS
        hours, minutes, seconds = first, second, third
    else:  # MM[:SS]
        hours, minutes, seconds = 0, first, second or 0
    total = (((days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds
    if total <= 0:
        raise ValueError(f"--slurm-time {text!r} must be more than 0")
    return -(-total // 60)


def parse_extra(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``KEY=VALUE`` strings (sbatch's long options without the dashes, e.g. ``account=abc``,
    ``mem=16G``) as pairs. ValueError for one without a key or an ``=``."""
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", key.strip()):
            raise ValueError(f"--slurm-extra {item!r} is not KEY=VALUE (e.g. account=myproject)")
        pairs.append((key.strip(), value.strip()))
    return tuple(pairs)


def executor_parameters(options: SlurmOptions, name: str) -> dict[str, Any]:
    """The ``AutoExecutor.update_parameters`` of the options: generic names for the time
    limit, CPUs and GPUs (submitit translates them for SLURM and the local executor), slurm_*
    for the rest (the local executor ignores them)."""
    parameters: dict[str, Any] = {
        "name": name,
        "timeout_min": options.time_min,
        "slurm_array_parallelism": options.array_parallelism,
    }
    if options.partition is not None:
        parameters["slurm_partition"] = options.partition
    if options.cpus is not None:
        parameters["cpus_per_task"] = options.cpus
    if options.gpus > 0:
        parameters["gpus_per_node"] = options.gpus
    if options.extra:
        parameters["slurm_additional_parameters"] = dict(options.extra)
    return parameters


def job_phase(state: str) -> Literal["active", "ended"]:
    """Whether a job in ``state`` (sacct's, e.g. "RUNNING" or "CANCELLED by 1000", or the
    local executor's) is still held by the scheduler ("active") or has ended."""
    words = state.split()
    return "active" if (words[0].upper() if words else "UNKNOWN") in ACTIVE_STATES else "ended"


# ---------------------------------------------------------------------------- job records
@dataclasses.dataclass(frozen=True)
class JobRecord:
    """The job last submitted for a cell (``RUN_DIR/slurm_job.json``)."""

    job_id: str  # SLURM's (ARRAY_TASK for an array), or the local executor's controller pid
    folder: str  # submitit's folder: the job's pickles and logs
    cluster: str  # "slurm" or "local"
    submitted: str

    def paths(self) -> Any:
        """submitit's JobPaths of the job (its result pickle and logs)."""
        from submitit.core.utils import JobPaths

        return JobPaths(self.folder, job_id=self.job_id, task_id=0)


def read_record(run_dir: Path) -> JobRecord | None:
    """The cell's job record; None when there is none or it is not a record."""
    try:
        values = json.loads((run_dir / RECORD).read_text())
        return JobRecord(**{f.name: str(values[f.name]) for f in dataclasses.fields(JobRecord)})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    if not Path("/proc/self/stat").exists():  # no /proc: no zombie check
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # someone else's
            return True
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def job_outcome(record: JobRecord, state: str) -> tuple[int, str | None]:
    """An ended job's exit status (SlurmRun's return value) and a note when it did not return
    one: read from the result pickle submitit writes when the job ends."""
    paths = record.paths()
    try:
        kind, value = pickle.loads(paths.result_pickle.read_bytes())
    except (OSError, pickle.UnpicklingError, ValueError, EOFError):
        return 1, f"job {record.job_id} ended {state} without a result; its log: {paths.stderr}"
    if kind == "success" and isinstance(value, int):
        return value, None
    lines = [line for line in str(value).splitlines() if line.strip()]
    return 1, f"job {record.job_id} failed: {lines[-1] if lines else kind}; log {paths.stderr}"


@dataclasses.dataclass
class Tracked:
    """A task and its job: the submitit Job when this process submitted it or asked SLURM
    about it, None for a local-executor job submitted by an earlier call."""

    task: RunTask
    record: JobRecord
    job: Any = None

    def state(self) -> str:
        if self.job is not None:
            return str(self.job.state)
        if self.record.cluster == "local":  # no process handle: its controller's pid
            if pid_alive(int(self.record.job_id)):
                return "RUNNING"
            return "FINISHED" if self.record.paths().result_pickle.is_file() else "INTERRUPTED"
        import submitit

        self.job = submitit.SlurmJob(folder=self.record.folder, job_id=self.record.job_id)
        return str(self.job.state)


# ---------------------------------------------------------------------------- the launcher
def make_executor(options: SlurmOptions, folder: Path, name: str) -> Any:
    """A submitit AutoExecutor for SLURM (or its local executor) with the options set;
    LaunchError where SLURM is not installed."""
    import submitit

    cluster = "local" if options.local else "slurm"
    timeouts = {f"{cluster}_max_num_timeout": options.max_requeues}
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=cluster, **timeouts)
    except RuntimeError as error:
        raise LaunchError(
            f"--launcher slurm: {error} (run igmda sweep on a SLURM login node, or add "
            "--slurm-local to try the sweep with submitit's local executor)"
        ) from None
    executor.update_parameters(**executor_parameters(options, name))
    return executor


@dataclasses.dataclass
class SlurmLauncher:
    """Each task a SLURM job (see the module docstring); ``jobs`` is not used: SLURM runs at
    most ``options.array_parallelism`` of them at once."""

    options: SlurmOptions
    write: Callable[[str], None] = _print
    poll_s: float | None = None  # between checks of the jobs: 30 s on SLURM, 1 s locally

    def describe(self, jobs: int) -> str:
        engine = "submitit's local executor" if self.options.local else "SLURM"
        waits = "" if self.options.wait else " (--no-wait: not waited for)"
        return f"as {engine} jobs, {self.options.array_parallelism} at a time at most{waits}"

    def run(self, tasks: Sequence[RunTask], jobs: int) -> Iterator[tuple[RunTask, int]]:
        live = [Tracked(t, r) for t in tasks if (r := read_record(Path(t.run_dir))) is not None]
        if any(t.record.cluster == "slurm" for t in live):
            import submitit  # register every job with the watcher first: one sacct call

            for tracked in live:
                if tracked.record.cluster == "slurm":
                    tracked.job = submitit.SlurmJob(tracked.record.folder, tracked.record.job_id)
        for tracked in list(live):
            state = tracked.state()
            if job_phase(state) == "active":
                self.write(f"{tracked.task.cell}: job {tracked.record.job_id} is {state}")
                continue
            self.write(
                f"{tracked.task.cell}: job {tracked.record.job_id} ended {state} before the "
                "run was done; submitting it again"
            )
            live.remove(tracked)
        followed = {tracked.task.cell for tracked in live}
        live += self.submit([task for task in tasks if task.cell not in followed])
        if not self.options.wait:
            if live:
                self.write(
                    f"{len(live)} job(s) queued or running, not waited for (--no-wait); "
                    "rerun the same command to see them and collect the finished runs"
                )
            return
        yield from self.follow(live)

    def submit(self, tasks: Sequence[RunTask]) -> list[Tracked]:
        """Submit the tasks as one job array; record each job in its run folder."""
        if not tasks:
            return []
        folder = Path(tasks[0].run_dir).parent / SUBMITIT_DIR
        executor = make_executor(self.options, folder, f"igmda-{tasks[0].sweep}")
        try:
            with executor.batch():
                jobs = [executor.submit(SlurmRun(), task) for task in tasks]
        except Exception as error:  # sbatch refused: submitit's FailedSubmissionError and co
            lines = [line for line in str(error).splitlines() if line.strip()]
            raise LaunchError(f"submitting the jobs failed: {' '.join(lines)[:500]}") from None
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        cluster = "local" if self.options.local else "slurm"
        tracked = []
        for task, job in zip(tasks, jobs, strict=True):
            record = JobRecord(str(job.job_id), str(folder), cluster, stamp)
            write_atomic(Path(task.run_dir) / RECORD, json.dumps(dataclasses.asdict(record)) + "\n")
            self.write(f"{task.cell}: submitted job {record.job_id}")
            tracked.append(Tracked(task, record, job))
        return tracked

    def follow(self, live: list[Tracked]) -> Iterator[tuple[RunTask, int]]:
        """Yield each task with its job's exit status as the job ends. Closing the iterator
        leaves the jobs running: a later call follows them again."""
        poll_s = self.poll_s if self.poll_s is not None else (1.0 if self.options.local else 30.0)
        while live:
            ended = [(t, s) for t in live if job_phase(s := t.state()) == "ended"]
            for tracked, state in ended:
                live.remove(tracked)
                code, note = job_outcome(tracked.record, state)
                if note is not None:
                    self.write(f"{tracked.task.cell}: {note}")
                yield tracked.task, code
            if not ended:
                time.sleep(poll_s)
