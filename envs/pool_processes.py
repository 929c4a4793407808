"""The worker processes behind the pool (envs/pool.py): start, message, replace, shut down.

:class:`WorkerProcesses` is the base class of :class:`~envs.pool.WorkerPool` and holds its
process mechanics, with no notion of TimeStep rows or episode rounds. It starts ``n_workers``
processes (multiprocessing "spawn" or "forkserver" context: JAX is not fork-safe), each running
:func:`envs.pool_worker._worker_main` with one environment, and talks to each over its own pipe.
Every worker reports its EnvInfo when ready; they must agree. ``_send`` sends one message per
worker and ``_gather`` collects one reply per worker, waiting on the pipes and the process
sentinels together, so a worker that died or did not answer in time yields ``("dead", reason)``
instead of blocking the host. Replies are timed by ``timeout``, except the ready message and the
first reset of every (re)started process, timed by ``start_timeout``: that reset is where SMAC
launches StarCraft II and loads the map (see :meth:`WorkerProcesses._reset_timeout`).

Faults. A worker that dies, raises, or does not answer within ``timeout`` seconds is replaced
by a fresh process (new seed stream). Only its current episode is dropped: the drop is logged
as a warning, returned (:attr:`~envs.pool_types.StepResult.dropped`,
:attr:`~envs.pool_types.Rollout.dropped`) and kept in :attr:`WorkerProcesses.dropped`. An
episode the environment itself gives up on (a worker env raises
:class:`~envs.pool_types.EpisodeFault`, e.g. SMAC lost its connection to the game) is dropped
the same way without replacing the process. ``_drop`` and ``_restart`` are the mechanism; which reply leads
to which is decided by the verbs in envs/pool.py. A worker's :class:`_Slot` also carries the
verbs' bookkeeping of its episode (``running``, ``steps``, ``last``): a replaced process gets a
fresh slot, so a restart forgets the episode.

Shutdown. ``close()``, leaving a ``with`` block, garbage collection and interpreter exit all
shut the workers down (they also exit by themselves when the host's end of the pipe closes).
Every worker leads its own process group (envs/pool_worker.py), and a worker that is stopped,
on restart or on shutdown, is stopped with its whole group: SIGTERM to the worker (it closes its
env), then SIGKILL to the group, so that no StarCraft II process outlives its worker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import multiprocessing.connection as mp_connection
import os
import signal
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Literal, Self

from envs.pool_types import DroppedEpisode, FaultInjection, Row, WorkerPoolError, WorkerSpec
from envs.pool_worker import _worker_main, _worker_seed
from envs.spec import EnvInfo

__all__ = ["Backend", "WorkerProcesses"]

# The records keep the logger name of the public module, as before envs/pool.py was split.
logger = logging.getLogger("envs.pool")

Backend = Literal["smax", "smac"]


# ---------------------------------------------------------------------------- slots


@dataclasses.dataclass(eq=False)
class _Slot:
    """Host-side handle of one worker."""

    index: int
    process: BaseProcess
    conn: Connection
    generation: int
    fresh: bool = True  # no reset answered yet: the next one is timed by start_timeout
    running: bool = False  # an episode is in progress (may be stepped)
    steps: int = 0  # transitions in the current episode
    last: Row | None = None  # the worker's latest TimeStep


def _shutdown(slots: list[_Slot], timeout: float) -> None:
    """Close every worker: polite message, then SIGTERM, then SIGKILL. Idempotent."""
    for slot in slots:
        with contextlib.suppress(Exception):
            slot.conn.send(("close", None))
    deadline = time.monotonic() + timeout
    for slot in slots:
        slot.process.join(max(0.0, deadline - time.monotonic()))
    for slot in slots:
        _kill(slot)
    slots.clear()


def _kill(slot: _Slot) -> None:
    """Stop one worker now: SIGTERM to it (it closes its env), then SIGKILL to its process
    group (whatever it started, e.g. StarCraft II); close the host's end of its pipe."""
    if slot.process.is_alive():
        slot.process.terminate()
        slot.process.join(5.0)
    _kill_group(slot.process.pid)
    if slot.process.is_alive():
        slot.process.kill()
    slot.process.join(5.0)
    with contextlib.suppress(Exception):
        slot.conn.close()


def _kill_group(pid: int | None) -> None:
    """SIGKILL the process group led by worker ``pid`` (no-op if it is gone or not a group)."""
    if pid is None or pid <= 1 or pid == os.getpgrp():
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class WorkerProcesses:
    """``n_workers`` worker processes, one environment each (see module doc): the base class of
    :class:`~envs.pool.WorkerPool`, which adds the verbs and the episode rounds.

    Args:
        backend: "smax" (``envs.make`` or ``make_env`` in each worker) or "smac" (StarCraft II).
        map_name: map to build in every worker.
        n_workers: number of processes (>= 1).
        seed: base seed; process g of worker i uses a stream derived from (seed, i, g).
        env_options: keyword options for the environment (sight_range, expert_view,
            episode_limit, ...; for "smac" anything else goes to StarCraft2Env).
        make_env: "smax" only: a picklable ``make_env(map_name, **env_options) -> Environment``
            used instead of ``envs.make``.
        context: "spawn" (default) or "forkserver"; "fork" is refused (JAX is not fork-safe).
        timeout: seconds to wait for any reply before declaring a worker hung (None: forever).
        start_timeout: seconds a (re)starting worker may take to report ready, and to answer
            its first reset (SMAC launches StarCraft II there).
        close_timeout: seconds ``close`` waits before terminating workers.
        max_start_failures: consecutive failed restarts of one worker before giving up.
        platform: JAX platform for "smax" workers (default "cpu"; None leaves JAX to choose).
        compile_cache_dir: JAX persistent compilation cache for "smax" workers (restarts and
            later pools then skip most compilation).
        fault_injection: test-only, one :class:`FaultInjection` or several (distinct workers).
    """

    def __init__(
        self,
        backend: Backend,
        map_name: str,
        n_workers: int = 1,
        seed: int = 0,
        env_options: Mapping[str, Any] | None = None,
        *,
        make_env: Callable[..., Any] | None = None,
        context: str = "spawn",
        timeout: float | None = 300.0,
        start_timeout: float | None = 600.0,
        close_timeout: float = 30.0,
        max_start_failures: int = 3,
        platform: str | None = "cpu",
        compile_cache_dir: str | os.PathLike[str] | None = None,
        fault_injection: FaultInjection | Sequence[FaultInjection] | None = None,
    ) -> None:
        self._slots: list[_Slot] = []
        self._finalizer = weakref.finalize(self, _shutdown, self._slots, close_timeout)
        if backend not in ("smax", "smac"):
            raise ValueError(f"backend must be 'smax' or 'smac', got {backend!r}")
        if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
            raise ValueError(f"n_workers must be an integer >= 1, got {n_workers!r}")
        if context not in ("spawn", "forkserver"):
            raise ValueError(
                f"context must be 'spawn' or 'forkserver', got {context!r} (JAX is not fork-safe)"
            )
        if backend == "smac":
            if make_env is not None:
                raise ValueError("make_env is for backend='smax' only")
            from envs.smac import check_smac_backend  # only when used: it needs StarCraft II's SMAC

            check_smac_backend(map_name, env_options or {})
        self.backend: Backend = backend
        self.map_name = map_name
        self.n_workers = n_workers
        self.seed = int(seed)
        self.env_options: dict[str, Any] = dict(env_options or {})
        self.timeout = timeout
        self.start_timeout = start_timeout
        self.max_start_failures = int(max_start_failures)
        self.dropped: list[DroppedEpisode] = []
        self._make_env = make_env
        self._platform = platform
        self._cache_dir = None if compile_cache_dir is None else os.fspath(compile_cache_dir)
        faults = [fault_injection] if isinstance(fault_injection, FaultInjection) else []
        if fault_injection is not None and not isinstance(fault_injection, FaultInjection):
            faults = list(fault_injection)
        self._faults = {fault.worker: fault for fault in faults}
        self._ctx = multiprocessing.get_context(context)
        self.info: EnvInfo
        try:
            for i in range(n_workers):
                self._slots.append(self._spawn(i, 0))
            infos = [self._await_ready(slot) for slot in list(self._slots)]
        except BaseException:
            self.close()
            raise
        failed = [(i, msg) for i, msg in enumerate(infos) if isinstance(msg, str)]
        if failed:
            self.close()
            index, message = failed[0]
            raise WorkerPoolError(f"worker {index} failed to start:\n{message}")
        if any(info != infos[0] for info in infos):
            self.close()
            raise WorkerPoolError(f"workers disagree on EnvInfo: {infos}")
        self.info = infos[0]

    # ------------------------------------------------------------------ processes
    def _spawn(self, index: int, generation: int) -> _Slot:
        fault = self._faults.get(index) if generation == 0 else None
        spec = WorkerSpec(
            backend=self.backend,
            map_name=self.map_name,
            index=index,
            generation=generation,
            seed=_worker_seed(self.seed, index, generation),
            env_options=self.env_options,
            make_env=self._make_env,
            platform=self._platform,
            compile_cache_dir=self._cache_dir,
            crash_at_step=None if fault is None else fault.at_step,
            crash_mode="exit" if fault is None else fault.mode,
        )
        host_end, worker_end = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=_worker_main,
            args=(worker_end, spec),
            name=f"igmda-{self.backend}-worker-{index}",
            daemon=True,
        )
        try:
            process.start()
        finally:
            worker_end.close()
        return _Slot(index=index, process=process, conn=host_end, generation=generation)

    def _await_ready(self, slot: _Slot) -> EnvInfo | str:
        """The worker's EnvInfo, or a string saying why it did not start."""
        reply = self._gather([slot], self.start_timeout)[slot.index]
        if reply[0] == "ready":
            return reply[1]
        return reply[1] if reply[0] in ("error", "dead") else f"unexpected reply {reply[0]!r}"

    def _restart(self, slot: _Slot) -> None:
        """Replace the worker's process by a fresh one (idle, needs reset)."""
        _kill(slot)
        generation, failures = slot.generation, 0
        while True:
            generation += 1
            new = self._spawn(slot.index, generation)
            self._slots[slot.index] = new
            result = self._await_ready(new)
            if isinstance(result, EnvInfo):
                if result != self.info:
                    raise WorkerPoolError(f"restarted worker {slot.index} reports {result}")
                logger.info("worker %d restarted (pid %s)", slot.index, new.process.pid)
                return
            failures += 1
            _kill(new)
            slot = new
            logger.warning("worker %d failed to restart (%d): %s", slot.index, failures, result)
            if failures >= self.max_start_failures:
                raise WorkerPoolError(
                    f"worker {slot.index} failed to restart {failures} times; last error:\n{result}"
                )

    def _reset_timeout(self, slot: _Slot) -> float | None:
        """Seconds the slot's reset may take: ``start_timeout`` for the first reset of a
        (re)started process (SMAC launches StarCraft II and loads the map there), else
        ``timeout``."""
        return self.start_timeout if slot.fresh else self.timeout

    def _gather(
        self, slots: Sequence[_Slot], timeout: float | None | Mapping[int, float | None]
    ) -> dict[int, tuple[str, Any]]:
        """One reply per slot: the worker's message, or ("dead", reason) if it died/hung.
        ``timeout``: seconds for every slot, or a mapping worker index -> seconds (None: wait
        forever)."""
        replies: dict[int, tuple[str, Any]] = {}
        pending = {slot.conn: slot for slot in slots}
        by_sentinel = {slot.process.sentinel: slot for slot in slots}
        limits = {
            slot.index: timeout.get(slot.index) if isinstance(timeout, Mapping) else timeout
            for slot in slots
        }
        start = time.monotonic()
        deadlines = {i: None if t is None else start + t for i, t in limits.items()}
        while pending:
            finite = [d for p in pending.values() if (d := deadlines[p.index]) is not None]
            left = max(0.0, min(finite) - time.monotonic()) if finite else None
            waitables = [*pending, *(p.process.sentinel for p in pending.values())]
            ready = mp_connection.wait(waitables, timeout=left)
            for obj in ready:
                slot = pending.get(obj) if isinstance(obj, Connection) else by_sentinel.get(obj)
                if slot is None or slot.conn not in pending:
                    continue
                if isinstance(obj, Connection) or slot.conn.poll():
                    try:
                        replies[slot.index] = slot.conn.recv()
                    except (EOFError, OSError):
                        replies[slot.index] = ("dead", self._death(slot))
                else:
                    replies[slot.index] = ("dead", self._death(slot))
                del pending[slot.conn]
            now = time.monotonic()
            for conn, slot in list(pending.items()):
                deadline = deadlines[slot.index]
                if deadline is not None and now >= deadline:
                    replies[slot.index] = ("dead", f"no reply within {limits[slot.index]} s (hung)")
                    del pending[conn]
        return replies

    @staticmethod
    def _death(slot: _Slot) -> str:
        slot.process.join(1.0)
        return f"process {slot.process.pid} died (exit code {slot.process.exitcode})"

    def _send(self, slots: Sequence[_Slot], messages: Sequence[tuple[str, Any]]) -> list[_Slot]:
        """Send one message per slot; return the slots that received theirs."""
        sent = []
        for slot, message in zip(slots, messages, strict=True):
            try:
                slot.conn.send(message)
                sent.append(slot)
            except (OSError, ValueError):
                pass
        return sent

    # ------------------------------------------------------------------ state
    @property
    def pids(self) -> list[int]:
        """Current process id of every worker, [n_workers]."""
        return [int(slot.process.pid or -1) for slot in self._slots]

    @property
    def closed(self) -> bool:
        return not self._slots

    def _check_open(self) -> None:
        if self.closed:
            raise WorkerPoolError("the pool is closed")

    # ------------------------------------------------------------------ faults
    def _drop(self, slot: _Slot, reason: str, restart: bool) -> DroppedEpisode:
        """Record, log and forget the slot's episode; replace its process if ``restart``."""
        record = DroppedEpisode(
            worker=slot.index,
            pid=slot.process.pid,
            step=slot.steps,
            reason=reason.strip().splitlines()[-1] if reason.strip() else reason,
            restarted=restart,
        )
        logger.warning(
            "worker %d (pid %s): %s; episode dropped after %d steps%s",
            slot.index,
            slot.process.pid,
            reason.strip(),
            slot.steps,
            "; restarting the worker" if restart else "",
        )
        slot.running, slot.steps, slot.last = False, 0, None
        self.dropped.append(record)
        if restart:
            self._restart(slot)
        return record

    # ------------------------------------------------------------------ shutdown
    def close(self) -> None:
        """Shut every worker down (idempotent). Also runs on ``with`` exit, garbage collection
        and interpreter exit."""
        self._finalizer()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"pids={self.pids}"
        return (
            f"{type(self).__name__}({self.backend!r}, {self.map_name!r}, "
            f"n_workers={self.n_workers}, {state})"
        )
