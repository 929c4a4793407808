"""Environments in worker processes, stepped in batches from the host (the host path).

:class:`WorkerPool` starts ``n_workers`` processes (multiprocessing "spawn" or "forkserver"
context: JAX is not fork-safe). Each owns one environment and talks to the host over its own
pipe. Per step the host sends one action row to every live worker, then gathers the replies and
stacks them into a :class:`~envs.spec.TimeStep` of numpy arrays with a leading worker axis.
Two worker backends speak the same protocol:

``"smac"``  real StarCraft II: ``smac.env.StarCraft2Env(map_name=...)`` from the SMAC repository
            (not the PyPI package named ``smac``); lives in envs/smac.py, which this module
            imports only when that backend is used (see :func:`envs.smac.require_smac`).
``"smax"``  any environment of this project, ``envs.make(map_name, **env_options)`` (or a
            picklable ``make_env``), jitted once per worker and exposed numpy in / numpy out.

Episode protocol. :meth:`WorkerPool.run_episodes` runs synchronous rounds, like PyMARL's parallel
runner: at the start of a round up to ``n_workers`` workers reset; each step the host calls
``act_fn(timestep, first)`` once on a fixed-size batch of ``n_workers`` rows, sends the live
rows' actions, and workers whose episode ended idle (their row repeats the final TimeStep with
``reward=0``, exactly the absorbing semantics of envs/spec.py) until the whole round is done.
Rows that take no part in the round (or whose worker crashed) hold a placeholder: zeros,
``done=True`` and every action available. Their actions are ignored. Finished episodes are
returned as one :class:`EpisodeBatch` in the padded layout of the fused path (TimeStep leaves
``[B, T + 1, ...]`` with ``T = info.episode_limit``, actions ``[B, T, n_agents]``, masks from
``done``). :meth:`WorkerPool.reset` and :meth:`WorkerPool.step` are the low-level verbs under it.

Faults. A worker that dies, raises, or does not answer within ``timeout`` seconds is replaced
by a fresh process (new seed stream). Only its current episode is dropped: the drop is logged
as a warning, returned (:attr:`StepResult.dropped`, :attr:`Rollout.dropped`) and kept in
:attr:`WorkerPool.dropped`. An episode the environment itself gives up on (a worker env raises
:class:`EpisodeFault`, e.g. SMAC lost its connection to the game) is dropped the same way
without replacing the process. Actions are checked on the host before anything is sent
(:func:`envs.spec.check_actions`): an unavailable or out-of-range action raises
:class:`InvalidActionError` naming worker, agent and action. ``close()``, leaving a ``with``
block, garbage collection and interpreter exit all shut the workers down (they also exit by
themselves when the host's end of the pipe closes).

Layout. This module is the host side; the worker process side is envs/pool_worker.py, the
records and the row layout shared by both are envs/pool_types.py. Their public names are
re-exported here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import multiprocessing.connection as mp_connection
import os
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Literal

import numpy as np

from envs.pool_types import (
    _AVAIL,
    _DONE,
    _DTYPES,
    FIELDS,
    DroppedEpisode,
    EpisodeBatch,
    EpisodeFault,
    FaultInjection,
    Rollout,
    Row,
    StepResult,
    WorkerPoolError,
    _absorbing,
    _pad_episodes,
    _placeholder_row,
    _row_at,
)
from envs.pool_worker import WorkerEnv, WorkerSpec, _worker_main, _worker_seed
from envs.spec import EnvInfo, InvalidActionError, TimeStep, check_actions

__all__ = [
    "DroppedEpisode",
    "EpisodeBatch",
    "EpisodeFault",
    "FaultInjection",
    "InvalidActionError",
    "Rollout",
    "StepResult",
    "WorkerEnv",
    "WorkerPool",
    "WorkerPoolError",
    "WorkerSpec",
    "check_actions",
]

logger = logging.getLogger(__name__)

Backend = Literal["smax", "smac"]
ActFn = Callable[[TimeStep, np.ndarray], Any]
"""``act_fn(timestep, first) -> actions``: timestep leaves [n_workers, ...], first [n_workers]
bool (row starts an episode this step), actions [n_workers, n_agents] int."""


# ---------------------------------------------------------------------------- host side


@dataclasses.dataclass(eq=False)
class _Slot:
    """Host-side handle of one worker."""

    index: int
    process: BaseProcess
    conn: Connection
    generation: int
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
    """Stop one worker now: SIGTERM, then SIGKILL; close the host's end of its pipe."""
    if slot.process.is_alive():
        slot.process.terminate()
        slot.process.join(5.0)
    if slot.process.is_alive():
        slot.process.kill()
    slot.process.join(5.0)
    with contextlib.suppress(Exception):
        slot.conn.close()


class WorkerPool:
    """``n_workers`` environments in worker processes, stepped in batches (see module doc).

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
        start_timeout: seconds a (re)starting worker may take to report ready.
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
            from envs.smac import check_smac_backend  # envs.smac imports this module

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
        self._placeholder = _placeholder_row(self.info)

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

    def _gather(self, slots: Sequence[_Slot], timeout: float | None) -> dict[int, tuple[str, Any]]:
        """One reply per slot: the worker's message, or ("dead", reason) if it died/hung."""
        replies: dict[int, tuple[str, Any]] = {}
        pending = {slot.conn: slot for slot in slots}
        by_sentinel = {slot.process.sentinel: slot for slot in slots}
        deadline = None if timeout is None else time.monotonic() + timeout
        while pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            waitables = [*pending, *(s.process.sentinel for s in pending.values())]
            ready = mp_connection.wait(waitables, timeout=left)
            if not ready:
                for slot in pending.values():
                    replies[slot.index] = ("dead", f"no reply within {timeout} s (hung)")
                break
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
        return replies

    @staticmethod
    def _death(slot: _Slot) -> str:
        slot.process.join(1.0)
        return f"process {slot.process.pid} died (exit code {slot.process.exitcode})"

    # ------------------------------------------------------------------ state
    @property
    def pids(self) -> list[int]:
        """Current process id of every worker, [n_workers]."""
        return [int(slot.process.pid or -1) for slot in self._slots]

    @property
    def running(self) -> np.ndarray:
        """[n_workers] bool: the worker has an episode in progress."""
        return np.array([slot.running for slot in self._slots], dtype=bool)

    @property
    def live_ids(self) -> np.ndarray:
        """[n_live] int64: workers with an episode in progress, ascending."""
        return np.flatnonzero(self.running)

    @property
    def closed(self) -> bool:
        return not self._slots

    def _check_open(self) -> None:
        if self.closed:
            raise WorkerPoolError("the pool is closed")

    def _ids(self, worker_ids: Sequence[int] | np.ndarray | None) -> np.ndarray:
        ids = np.arange(self.n_workers) if worker_ids is None else np.asarray(worker_ids)
        ids = ids.astype(np.int64).reshape(-1)
        if np.any((ids < 0) | (ids >= self.n_workers)) or len(np.unique(ids)) != len(ids):
            raise ValueError(f"worker_ids must be distinct indices below {self.n_workers}: {ids}")
        return ids

    def _stack(self, rows: Sequence[Row]) -> TimeStep:
        """Stack rows into a TimeStep with leaves [len(rows), ...]."""
        return TimeStep(**{name: np.stack([r[k] for r in rows]) for k, name in enumerate(FIELDS)})

    def _checked_row(self, slot: _Slot, row: Any) -> Row:
        info = self.info
        shapes = {
            "obs": (info.n_agents, info.obs_dim),
            "expert_obs": (info.n_agents, info.expert_dim),
            "state": (info.state_dim,),
            "avail": (info.n_agents, info.n_actions),
        }
        out = []
        for name, value in zip(FIELDS, row, strict=True):
            arr = np.asarray(value).astype(_DTYPES[name], copy=False)
            if arr.shape != shapes.get(name, ()):
                raise WorkerPoolError(
                    f"worker {slot.index} sent {name} of shape {arr.shape}, "
                    f"expected {shapes.get(name, ())}"
                )
            out.append(arr)
        return tuple(out)

    def _drop(self, slot: _Slot, reason: str, restart: bool) -> DroppedEpisode:
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

    # ------------------------------------------------------------------ verbs
    def reset(self, worker_ids: Sequence[int] | np.ndarray | None = None) -> TimeStep:
        """Start a new episode on ``worker_ids`` (default all); any episode they were playing is
        abandoned. A worker that fails here is restarted and reset again (nothing is dropped).

        Returns the first TimeStep of each, leaves [len(worker_ids), ...] numpy.
        """
        self._check_open()
        ids = self._ids(worker_ids)
        todo = [int(i) for i in ids]
        rows: dict[int, Row] = {}
        attempts = 0
        while todo:
            slots = [self._slots[i] for i in todo]
            sent = self._send(slots, [("reset", None)] * len(slots))
            replies = self._gather(sent, self.timeout)
            failed = []
            for slot in slots:
                kind, payload = replies.get(slot.index, ("dead", "could not send"))
                if kind == "row":
                    rows[slot.index] = self._checked_row(slot, payload)
                    slot.running, slot.steps, slot.last = True, 0, rows[slot.index]
                else:
                    failed.append(slot.index)
                    logger.warning("worker %d failed on reset: %s", slot.index, str(payload))
                    slot.running = False
                    if kind != "drop":
                        self._restart(slot)
            todo = failed
            attempts += 1
            if todo and attempts > self.max_start_failures:
                raise WorkerPoolError(f"workers {todo} keep failing on reset")
        return self._stack([rows[int(i)] for i in ids])

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

    def step(
        self, actions: Any, worker_ids: Sequence[int] | np.ndarray | None = None
    ) -> StepResult:
        """Step the workers ``worker_ids`` (default: every worker with an episode in progress,
        ascending, see :attr:`live_ids`) with ``actions`` [n, n_agents] int.

        Actions are validated against each worker's latest ``avail`` first; a bad one raises
        InvalidActionError and nothing is sent. A worker that fails during the step is replaced
        and its episode dropped (row = placeholder, ``dropped_mask`` True).
        """
        self._check_open()
        ids = self.live_ids if worker_ids is None else self._ids(worker_ids)
        if len(ids) == 0:
            raise WorkerPoolError("no episode in progress; call reset() first")
        idle = [int(i) for i in ids if not self._slots[i].running]
        if idle:
            raise WorkerPoolError(f"workers {idle} have no episode in progress; reset them first")
        slots = [self._slots[int(i)] for i in ids]
        avail = np.stack([slot.last[_AVAIL] for slot in slots])  # type: ignore[index]
        acts = check_actions(actions, avail, worker_ids=ids)
        sent = self._send(slots, [("step", a) for a in acts])
        replies = self._gather(sent, self.timeout)
        rows: list[Row] = []
        mask = np.zeros(len(slots), dtype=bool)
        records: list[DroppedEpisode] = []
        for k, slot in enumerate(slots):
            kind, payload = replies.get(slot.index, ("dead", "could not send to the worker"))
            if kind == "row":
                row = self._checked_row(slot, payload)
                slot.steps += 1
                slot.last = row
                slot.running = not bool(row[_DONE])
                rows.append(row)
                continue
            mask[k] = True
            rows.append(self._placeholder)
            if kind == "drop":
                records.append(self._drop(slot, f"environment fault: {payload}", restart=False))
            elif kind == "error":
                records.append(self._drop(slot, f"worker raised:\n{payload}", restart=True))
            else:
                records.append(self._drop(slot, str(payload), restart=True))
        return StepResult(self._stack(rows), ids, mask, tuple(records))

    def run_episodes(self, act_fn: ActFn, n_episodes: int) -> Rollout:
        """Play until ``n_episodes`` episodes have finished; return them (see module doc).

        ``act_fn(timestep, first) -> actions`` is called once per step with a TimeStep of leaves
        [n_workers, ...] and ``first`` [n_workers] bool (True where a row begins an episode;
        reset recurrent state there); it returns actions [n_workers, n_agents] int, of which
        only the live rows are used (and validated). Dropped episodes are replaced by extra
        rounds; a round that loses all its episodes five times in a row raises. Episodes come
        in order of round, then worker.
        """
        self._check_open()
        if isinstance(n_episodes, bool) or not isinstance(n_episodes, int) or n_episodes < 1:
            raise ValueError(f"n_episodes must be an integer >= 1, got {n_episodes!r}")
        limit = self.info.episode_limit
        finished: list[tuple[int, list[Row], list[np.ndarray]]] = []
        dropped: list[DroppedEpisode] = []
        rounds = failed_rounds = 0
        while len(finished) < n_episodes:
            ids = np.arange(min(self.n_workers, n_episodes - len(finished)))
            rows = [self._placeholder] * self.n_workers
            first = np.zeros(self.n_workers, dtype=bool)
            start = self.reset(ids)
            trajectories: dict[int, tuple[list[Row], list[np.ndarray]]] = {}
            for k, i in enumerate(ids):
                row = _row_at(start, k)
                rows[i] = row
                trajectories[int(i)] = ([row], [])
                first[i] = True
            live = [int(i) for i in ids]
            round_done: list[tuple[int, list[Row], list[np.ndarray]]] = []
            while live:
                actions = np.asarray(act_fn(self._stack(rows), first.copy()))
                if actions.shape[:1] != (self.n_workers,):
                    raise InvalidActionError(
                        f"act_fn must return [{self.n_workers}, {self.info.n_agents}] actions, "
                        f"got shape {actions.shape}"
                    )
                first[:] = False
                result = self.step(actions[live], worker_ids=live)
                dropped.extend(result.dropped)
                for k, i in enumerate(result.worker_ids.tolist()):
                    row: Row | None = None
                    if not result.dropped_mask[k]:
                        row = _row_at(result.timestep, k)
                        steps, acts = trajectories[i]
                        steps.append(row)
                        acts.append(np.asarray(actions[i], np.int32))
                        if row[_DONE]:
                            round_done.append((i, steps, acts))
                        elif len(acts) < limit:
                            rows[i] = row
                            continue
                        else:
                            reason = f"no done after episode_limit={limit} steps"
                            dropped.append(self._drop(self._slots[i], reason, restart=False))
                            row = None
                    # worker i's episode is over (finished or dropped): its row idles
                    rows[i] = self._placeholder if row is None else _absorbing(row)
                    del trajectories[i]
                    live.remove(i)
            finished.extend(sorted(round_done, key=lambda episode: episode[0]))
            rounds += 1
            failed_rounds = 0 if round_done else failed_rounds + 1
            if failed_rounds >= 5:
                raise WorkerPoolError(
                    f"five rounds in a row lost every episode; last drops: {dropped[-3:]}"
                )
        return Rollout(
            episodes=_pad_episodes(finished, self.info), dropped=tuple(dropped), rounds=rounds
        )

    # ------------------------------------------------------------------ shutdown
    def close(self) -> None:
        """Shut every worker down (idempotent). Also runs on ``with`` exit, garbage collection
        and interpreter exit."""
        self._finalizer()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"pids={self.pids}"
        return (
            f"WorkerPool({self.backend!r}, {self.map_name!r}, n_workers={self.n_workers}, {state})"
        )
