"""What a SLURM job of a sweep runs: ``SlurmRun``, submitit's checkpointable callable.

In: a ``RunTask``. Out: its run brought to done (or as far as the job got) and the exit
status of ``python -m igmda_jax.sweeps.launchers run-task``, which ``SlurmRun()(task)`` starts in a
child process exactly as the local launcher does (task.json, log.txt, the cell lock), with
submitit's requeue signal (USR2) ignored in the child. SLURM sends that signal to the job
``signal_delay_s`` (90 s) before its time limit; submitit's handler then calls
``SlurmRun.checkpoint``, which stops the child and returns the same task as the job to
requeue, and the requeued job resumes the run from its last checkpoint
(``launchers.execute_task``). submitit requeues any submitted callable that has a
``checkpoint`` method (``submitit.helpers.Checkpointable`` only adds a default one), so this
module imports submitit only inside ``checkpoint``: it is unpickled and run in the job, where
submitit is installed. ``launchers_slurm`` submits it.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from igmda_jax.persist.stop_signals import STOPPED_EXIT_CODES
from igmda_jax.sweeps.launchers import LocalLauncher, RunTask, xla_devices_env


def requeue_signal() -> signal.Signals:
    """The signal submitit requeues on (``SUBMITIT_PREEMPT_SIGNAL``, USR2 by default)."""
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))


def job_devices_env(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Environment giving the run one XLA CPU device per CPU of the job (SLURM_CPUS_PER_TASK,
    else the CPUs this process may use). sbatch passes on the submitting shell's environment,
    whose XLA_FLAGS count the login node's cores: that count is replaced. Nothing when
    ``IGMDA_CPU_DEVICES`` is set (the user's choice)."""
    if "IGMDA_CPU_DEVICES" in environ:
        return {}
    cpus = environ.get("SLURM_CPUS_PER_TASK", "")
    count = int(cpus) if cpus.isdigit() else len(os.sched_getaffinity(0))
    return xla_devices_env(max(1, count), environ)


def start_ignoring(signals: Sequence[signal.Signals], start: Callable[[], Any]) -> Any:
    """``start()`` with ``signals`` ignored meanwhile: a child started then inherits the
    ignoring (an ignored signal stays ignored across exec), this process gets its handlers
    back."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in signals}
    try:
        return start()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class SlurmRun:
    """The callable each job runs: the task's run in a child process, as the local launcher
    starts it; ``checkpoint`` (called by submitit on its requeue signal) stops the child and
    returns the job to requeue."""

    def __init__(self, signal_grace_s: float = 30.0, poll_s: float = 0.5) -> None:
        self.signal_grace_s = signal_grace_s
        self.poll_s = poll_s
        self._process: subprocess.Popen | None = None
        self._stopping = False

    def __getstate__(self) -> dict[str, float]:
        return {"signal_grace_s": self.signal_grace_s, "poll_s": self.poll_s}

    def __setstate__(self, state: dict[str, float]) -> None:
        self.__init__(**state)

    def __call__(self, task: RunTask) -> int:
        """Run the task; its exit status. A child ended by a signal this job did not send
        (SLURM's SIGTERM at preemption or time limit, after which the run saves a checkpoint and
        exits 143; the OOM killer) raises, after ``signal_grace_s`` seconds in which submitit's
        requeue signal still requeues the job."""
        start = functools.partial(LocalLauncher().start, task, env=job_devices_env())
        self._process = start_ignoring([requeue_signal()], start)
        # poll, not wait(): submitit's handler then runs outside Popen's lock and can stop it
        while (code := self._process.poll()) is None:
            time.sleep(self.poll_s)
        stopped = code < 0 or code in STOPPED_EXIT_CODES  # killed, or saved and stopped
        if stopped and not self._stopping:
            time.sleep(self.signal_grace_s)
            name = signal.Signals(-code if code < 0 else code - 128).name
            raise RuntimeError(f"{task.cell}: its run was stopped by {name}; rerun igmda sweep")
        return code

    def checkpoint(self, task: RunTask) -> Any:
        """Stop the child (SIGTERM: it saves a checkpoint; SIGKILL after 60 s) and return this
        task as the ``DelayedSubmission`` submitit requeues."""
        from submitit.helpers import DelayedSubmission

        self._stopping = True
        if self._process is not None:
            LocalLauncher().stop([self._process])
        return DelayedSubmission(SlurmRun(self.signal_grace_s, self.poll_s), task)
