"""Sweep runs as Ray tasks: ``RayOptions``, ``RayLauncher``, ``run_in_worker``.

In: the sweep's ``RunTask``s and ``RayOptions`` (the cluster's address, CPUs and GPUs per task,
retries). Out: each task yielded with its exit status as its Ray task ends.

Without an address the launcher starts a Ray instance on this machine (``ray.init(address=
"local")``) and shuts it down at the end; with one (``auto``, ``ray://HOST:10001``, ``HOST:6379``)
it joins that cluster; when Ray is already initialised in this process it uses that. Each task
is ``run_in_worker`` in a Ray worker with ``num_cpus``/``num_gpus`` asked: it starts
``python -m igmda_jax.sweeps.launchers run-task`` in a child process exactly as the local launcher
does (task.json, log.txt, the cell lock), with one XLA CPU device per CPU asked, and returns
its exit status. The child dies with its worker (``launchers.die_with_parent``), and Ray runs
a task whose worker died again, ``max_retries`` times: the new run resumes from the run
folder's last checkpoint (``launchers.execute_task``). Closing the iterator cancels the tasks
still running (their workers are killed, and so their runs); the next call resumes them.

The run folders must be on a filesystem every Ray node sees, at the same path, and every node
needs igmda-jax installed in the Python environment Ray runs.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from igmda_jax.sweeps.launchers import BUSY, LaunchError, LocalLauncher, RunTask, xla_devices_env


def _print(line: str) -> None:
    print(line, flush=True)


@dataclasses.dataclass(frozen=True)
class RayOptions:
    """Where the tasks run and what each asks for."""

    address: str | None = None  # None: a new Ray instance on this machine
    cpus: float = 1.0  # per task (num_cpus); also the XLA CPU devices of its run
    gpus: float = 0.0  # per task (num_gpus)
    max_retries: int = 3  # runs again of a task whose worker died


def remote_options(options: RayOptions, task: RunTask) -> dict[str, Any]:
    """The ``.options(...)`` of the task's Ray task: its resources, its retries of a dead worker
    (not of a failed run: that exits non-zero and is reported) and its name."""
    return {
        "num_cpus": options.cpus,
        "num_gpus": options.gpus,
        "max_retries": options.max_retries,
        "retry_exceptions": False,
        "name": f"igmda {task.sweep}/{task.cell}",
    }


def init_kwargs(address: str | None) -> dict[str, Any]:
    """``ray.init`` arguments: a new local instance without the dashboard when no address,
    else the cluster at ``address`` (which takes no resource or dashboard arguments)."""
    if address is None:
        return {"address": "local", "include_dashboard": False, "logging_level": logging.WARNING}
    return {"address": address, "logging_level": logging.WARNING}


def host_port(address: str) -> tuple[str, int] | None:
    """HOST and PORT of a ``HOST:PORT`` or ``ray://HOST:PORT`` address; None for others
    (``auto``: Ray finds the cluster itself)."""
    match = re.fullmatch(r"(?:ray://)?\[?([^\[\]/]+?)\]?:(\d+)", address.strip())
    return (match.group(1), int(match.group(2))) if match else None


def unreachable(address: str, timeout_s: float = 10.0) -> str | None:
    """Why nothing answers at the address's HOST:PORT (a TCP connection), None when something
    does or the address has no port: ``ray.init`` would wait for minutes instead."""
    where = host_port(address)
    if where is None:
        return None
    try:
        with socket.create_connection(where, timeout=timeout_s):
            return None
    except OSError as error:
        return str(error) or type(error).__name__


def connect(address: str | None) -> bool:
    """Initialise Ray unless this process already has; whether it did (and so shuts it down).
    LaunchError when the cluster cannot be reached."""
    import ray

    if ray.is_initialized():
        return False
    if address is not None and (why := unreachable(address)) is not None:
        raise LaunchError(f"cannot reach the Ray cluster at {address}: {why}")
    try:
        ray.init(**init_kwargs(address))
    except Exception as error:  # ConnectionError, RuntimeError, ValueError, ...
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        first = next((line for line in str(error).splitlines() if line.strip()), repr(error))
        raise LaunchError(f"cannot start or reach {where}: {first}") from None
    return True


def run_in_worker(task_json: str, cpus: float, busy_wait_s: float = 30.0) -> int:
    """What each Ray task runs, in a Ray worker: the task's run in a child process (the local
    launcher's), one XLA CPU device per CPU asked unless ``IGMDA_CPU_DEVICES`` is set; its exit
    status. A child that finds the cell held (``BUSY``: the run of a worker that just died may
    still be ending) is started again for up to ``busy_wait_s`` seconds."""
    task = RunTask.from_json(task_json)
    env = {} if "IGMDA_CPU_DEVICES" in os.environ else xla_devices_env(max(1, int(cpus)))
    deadline = time.monotonic() + busy_wait_s
    while True:
        code = LocalLauncher().start(task, env=env).wait()
        if code != BUSY or time.monotonic() > deadline:
            return code
        time.sleep(1.0)


def failure_note(error: BaseException) -> str:
    """One line for a Ray task that raised: its type and the first line of its message."""
    first = next((line for line in str(error).splitlines() if line.strip()), "")
    return f"Ray task failed: {type(error).__name__}: {first}"[:500]


@dataclasses.dataclass
class RayLauncher:
    """Each task a Ray task (see the module docstring); at most ``jobs`` at once when
    ``jobs`` >= 1, else as many as the cluster's free resources fit."""

    options: RayOptions = RayOptions()
    write: Callable[[str], None] = _print
    poll_s: float = 1.0

    def describe(self, jobs: int) -> str:
        where = f"the Ray cluster at {self.options.address}" if self.options.address else "Ray"
        cap = f", at most {jobs} at a time" if jobs >= 1 else ""
        return f"as {where} tasks of {self.options.cpus:g} CPU, {self.options.gpus:g} GPU{cap}"

    def run(self, tasks: Sequence[RunTask], jobs: int) -> Iterator[tuple[RunTask, int]]:
        if not tasks:
            return
        import ray

        started = connect(self.options.address)
        remote = ray.remote(run_in_worker)
        pending, running = list(tasks), {}
        try:
            while pending or running:
                while pending and (jobs < 1 or len(running) < jobs):
                    task = pending.pop(0)
                    options = remote_options(self.options, task)
                    ref = remote.options(**options).remote(task.to_json(), self.options.cpus)
                    running[ref] = task
                ready, _ = ray.wait(list(running), num_returns=1, timeout=self.poll_s)
                for ref in ready:
                    task = running.pop(ref)
                    try:
                        code = int(ray.get(ref))
                    except Exception as error:  # the retries spent, a cancelled task, ...
                        self.write(f"{task.cell}: {failure_note(error)}")
                        code = 1
                    yield task, code
        finally:
            for ref in running:
                try:
                    ray.cancel(ref, force=True)
                except Exception as error:  # the task ended meanwhile, Ray is going down
                    self.write(f"could not cancel a Ray task: {failure_note(error)}")
            if started:
                ray.shutdown()
