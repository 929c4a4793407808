"""Environments in worker processes, stepped in batches from the host (the host path).

:class:`WorkerPool` runs ``n_workers`` environments, one per worker process; its base class
(envs/pool_processes.py) starts, messages, replaces and shuts down the processes. Per step the
host sends one action row to every live worker, then gathers the replies and stacks them into a
:class:`~envs.spec.TimeStep` of numpy arrays with a leading worker axis. Two worker backends
speak the same protocol:

``"smac"``  real StarCraft II: ``smac.env.StarCraft2Env(map_name=...)`` from the SMAC repository
            (not the PyPI package named ``smac``); lives in envs/smac.py, which this module
            imports only when that backend is used (see :func:`envs.smac.require_smac`).
``"smax"``  any environment of this project, ``envs.make(map_name, **env_options)`` (or a
            picklable ``make_env``), jitted once per worker and exposed numpy in / numpy out.

Verbs. :meth:`WorkerPool.reset` starts episodes and :meth:`WorkerPool.step` steps the live
ones. Actions are checked on the host before anything is sent (:func:`envs.spec.check_actions`):
an unavailable or out-of-range action raises :class:`InvalidActionError` naming worker, agent
and action. A worker that fails on reset is reset again (nothing is dropped): on the same process
when its env gave up on the reset (SMAC lost its connection to the game while resetting), on a
fresh process otherwise or when that happens twice in a row. One that fails during a step loses
only its current episode (see "Faults" in envs/pool_processes.py) and its row is a placeholder.
:meth:`WorkerPool.save_replay` makes every "smac" worker save a StarCraft II replay of its game.

Seeds. ``reset(worker_ids, seeds)`` passes one seed (int or None) per worker: a "smax" worker
then sets its key to ``jax.random.key(seed)`` before resetting, so that episode (its reset and
the step keys that follow) depends on the seed alone, not on the process that plays it; None
continues the worker's key from where it is (a stream seeded from the pool's ``seed``, new after
every restart, or from the worker's last episode seed).
"smac" workers ignore episode seeds: StarCraft II seeds a game once, when SMAC launches it.
``run_episodes(act_fn, n_episodes, episode_seed)`` gives the k-th reset it sends (k = 0, 1, ...
in the order sent: round by round, ascending worker index within a round, the extra rounds that
replace dropped episodes included; a retried reset keeps its seed) the 31-bit seed
``np.random.SeedSequence([episode_seed, k]).generate_state(1)[0] >> 1``
(:func:`episode_seed_at`). As episodes are returned in the same order, with no faults the
returned episodes depend only on ``episode_seed`` and ``act_fn`` (if ``act_fn`` is a function of
its inputs), not on ``n_workers`` or on which process played them.

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

Layout. This module is the episode side of the host: the verbs and the rounds, on rows. The
process side of the host is envs/pool_processes.py (:class:`WorkerProcesses`, the base class of
:class:`WorkerPool` and the home of its constructor arguments): starting the processes,
messages with death and hang detection, restarts, drop records and shutdown. The worker process
side is envs/pool_worker.py; the records and the row layout shared by all of them are
envs/pool_types.py. Their public names are re-exported here.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from envs.pool_processes import Backend as Backend
from envs.pool_processes import WorkerProcesses, _Slot
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
    WorkerSpec,
    _absorbing,
    _pad_episodes,
    _placeholder_row,
    _row_at,
)
from envs.pool_worker import WorkerEnv
from envs.spec import InvalidActionError, TimeStep, check_actions

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
    "episode_seed_at",
]

logger = logging.getLogger(__name__)

ActFn = Callable[[TimeStep, np.ndarray], Any]
"""``act_fn(timestep, first) -> actions``: timestep leaves [n_workers, ...], first [n_workers]
bool (row starts an episode this step), actions [n_workers, n_agents] int."""

_SEED_BOUND = 2**32  # jax.random.key keeps 32 bits of a seed unless jax_enable_x64 is set


def episode_seed_at(episode_seed: int, k: int) -> int:
    """The seed of the k-th reset sent by ``run_episodes(..., episode_seed)``: 31 bits of
    ``np.random.SeedSequence([episode_seed, k])``."""
    return int(np.random.SeedSequence([episode_seed, k]).generate_state(1)[0] >> 1)


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _check_seeds(seeds: Sequence[int | None] | np.ndarray | None, n: int) -> list[int | None]:
    """``seeds`` for reset as [n] Python ints or None (all None when ``seeds`` is None)."""
    if seeds is None:
        return [None] * n
    out = list(seeds)
    if len(out) != n:
        raise ValueError(f"seeds must have one entry per worker reset ({n}), got {len(out)}")
    bad = [s for s in out if s is not None and not (_is_int(s) and 0 <= int(s) < _SEED_BOUND)]
    if bad:
        raise ValueError(f"seeds must be None or integers in [0, 2**32), got {bad[0]!r}")
    return [None if s is None else int(s) for s in out]


class WorkerPool(WorkerProcesses):
    """``n_workers`` environments in worker processes, stepped in batches (see module doc).

    The constructor and its arguments are those of :class:`~envs.pool_processes.WorkerProcesses`
    (backend, map_name, n_workers, seed, env_options, make_env, context, timeouts, ...).
    """

    # ------------------------------------------------------------------ state
    @functools.cached_property
    def _placeholder(self) -> Row:
        """The row of a worker with nothing to show (built once from ``info``)."""
        return _placeholder_row(self.info)

    @property
    def running(self) -> np.ndarray:
        """[n_workers] bool: the worker has an episode in progress."""
        return np.array([slot.running for slot in self._slots], dtype=bool)

    @property
    def live_ids(self) -> np.ndarray:
        """[n_live] int64: workers with an episode in progress, ascending."""
        return np.flatnonzero(self.running)

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

    # ------------------------------------------------------------------ verbs
    def reset(
        self,
        worker_ids: Sequence[int] | np.ndarray | None = None,
        seeds: Sequence[int | None] | np.ndarray | None = None,
    ) -> TimeStep:
        """Start a new episode on ``worker_ids`` (default all); any episode they were playing is
        abandoned. ``seeds``: [len(worker_ids)] int or None, each worker's episode seed (see
        module doc, "Seeds"); default None for all.

        A worker whose env gives up on the reset (reply "drop") is reset again on the same
        process, and replaced if it gives up twice in a row; one that dies, raises or hangs is
        replaced and reset again. Retries keep the seed; nothing is dropped. A worker that fails
        more than ``max_start_failures`` times raises WorkerPoolError.

        Returns the first TimeStep of each, leaves [len(worker_ids), ...] numpy.
        """
        self._check_open()
        ids = [int(i) for i in self._ids(worker_ids)]
        seed_of = dict(zip(ids, _check_seeds(seeds, len(ids)), strict=True))
        failures = dict.fromkeys(ids, 0)
        rows: dict[int, Row] = {}
        todo = ids
        while todo:
            slots = [self._slots[i] for i in todo]
            sent = self._send(slots, [("reset", seed_of[i]) for i in todo])
            replies = self._gather(sent, {slot.index: self._reset_timeout(slot) for slot in slots})
            failed = []
            for slot in slots:
                kind, payload = replies.get(slot.index, ("dead", "could not send to the worker"))
                if kind == "row":
                    rows[slot.index] = self._started(slot, payload)
                    continue
                slot.running, slot.steps, slot.last = False, 0, None
                failures[slot.index] += 1
                if failures[slot.index] > self.max_start_failures:
                    raise WorkerPoolError(
                        f"worker {slot.index} keeps failing on reset; last: {_last_line(payload)}"
                    )
                self._reset_failed(slot, kind, payload, again=failures[slot.index] > 1)
                failed.append(slot.index)
            todo = failed
        return self._stack([rows[i] for i in ids])

    def _started(self, slot: _Slot, payload: Any) -> Row:
        """Book a worker's answered reset: its episode is in progress from row ``payload``."""
        row = self._checked_row(slot, payload)
        slot.fresh, slot.running, slot.steps, slot.last = False, True, 0, row
        return row

    def _reset_failed(self, slot: _Slot, kind: str, payload: Any, again: bool) -> None:
        """After a failed reset: keep the process if its env gave up on the reset ("drop") for
        the first time in a row (``again`` False), else replace it."""
        if kind == "drop":
            slot.fresh = False  # it answered: the game is up, the retry is an ordinary reset
            logger.warning("worker %d: the environment gave up on reset: %s", slot.index, payload)
        else:
            logger.warning("worker %d failed on reset: %s", slot.index, str(payload))
        if kind != "drop" or again:
            self._restart(slot)

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

    def run_episodes(
        self, act_fn: ActFn, n_episodes: int, episode_seed: int | None = None
    ) -> Rollout:
        """Play until ``n_episodes`` episodes have finished; return them (see module doc).

        ``act_fn(timestep, first) -> actions`` is called once per step with a TimeStep of leaves
        [n_workers, ...] and ``first`` [n_workers] bool (True where a row begins an episode;
        reset recurrent state there); it returns actions [n_workers, n_agents] int, of which
        only the live rows are used (and validated). Dropped episodes are replaced by extra
        rounds; a round that loses all its episodes five times in a row raises. Episodes come
        in order of round, then worker.

        ``episode_seed`` (non-negative int): the k-th reset sent by this call gets the seed
        :func:`episode_seed_at` (episode_seed, k) (module doc, "Seeds"), so that without faults
        the episodes depend on episode_seed and act_fn only. None: the workers' own streams.
        """
        self._check_open()
        if isinstance(n_episodes, bool) or not isinstance(n_episodes, int) or n_episodes < 1:
            raise ValueError(f"n_episodes must be an integer >= 1, got {n_episodes!r}")
        if episode_seed is not None and not (_is_int(episode_seed) and episode_seed >= 0):
            raise ValueError(f"episode_seed must be None or an integer >= 0, got {episode_seed!r}")
        limit = self.info.episode_limit
        finished: list[tuple[int, list[Row], list[np.ndarray]]] = []
        dropped: list[DroppedEpisode] = []
        rounds = failed_rounds = resets_sent = 0
        while len(finished) < n_episodes:
            ids = np.arange(min(self.n_workers, n_episodes - len(finished)))
            rows = [self._placeholder] * self.n_workers
            first = np.zeros(self.n_workers, dtype=bool)
            seeds = None
            if episode_seed is not None:
                seeds = [episode_seed_at(episode_seed, resets_sent + k) for k in range(len(ids))]
            resets_sent += len(ids)
            start = self.reset(ids, seeds)
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

    def save_replay(self) -> None:
        """Make every worker save a StarCraft II replay of its game so far ("smac" only; SMAC's
        ``save_replay``). The file goes to env_options' ``replay_dir`` (relative to StarCraft
        II's Replays folder unless absolute), named ``<replay_prefix>_worker<i>_<UTC time>``
        (envs/smac.py, "Options"). Call it after at least one reset.

        Raises ValueError for backend "smax" (before sending anything), WorkerPoolError naming
        the workers that could not save one (a worker that died or hung on the way is replaced,
        its episode dropped).
        """
        if self.backend != "smac":
            raise ValueError("SC2 replays need backend 'smac' (StarCraft II)")
        self._check_open()
        slots = list(self._slots)
        sent = self._send(slots, [("save_replay", None)] * len(slots))
        replies = self._gather(sent, self.timeout)
        problems = []
        for slot in slots:
            kind, payload = replies.get(slot.index, ("dead", "could not send to the worker"))
            if kind == "saved":
                continue
            problems.append(f"worker {slot.index}: {_last_line(payload)}")
            if kind == "failed":
                continue
            if slot.running:
                self._drop(slot, f"worker lost while saving a replay: {payload}", restart=True)
            else:
                self._restart(slot)
        if problems:
            raise WorkerPoolError(f"could not save replays: {'; '.join(problems)}")


def _last_line(text: Any) -> str:
    """The last non-empty line of a reason or traceback."""
    lines = str(text).strip().splitlines()
    return lines[-1] if lines else str(text)
