"""The worker-process side of the pool (envs/pool.py): what runs inside each worker.

:class:`WorkerSpec` (everything a worker needs, pickled to the child), the :class:`WorkerEnv`
protocol a worker drives, the "smax" backend :class:`JaxWorkerEnv` (the "smac" one is
:class:`envs.smac.SmacWorkerEnv`), and :func:`_worker_main`, the process body that answers the
host's messages. Processes are started by :class:`~envs.pool.WorkerPool` with the "spawn" or
"forkserver" context, so everything here is imported by module path in the child.

Each worker process leads its own process group (``os.setsid`` first thing in
:func:`_worker_main`), so that whatever it starts, StarCraft II included (pysc2 starts the game
with a plain ``subprocess.Popen``, in its parent's group), can be killed with it by the host
(``os.killpg``, see envs/pool_processes.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any, Protocol

import numpy as np

from envs.pool_types import FIELDS, EpisodeFault, Row, WorkerSpec
from envs.spec import EnvInfo, TimeStep

__all__ = ["JaxWorkerEnv", "WorkerEnv"]


def _worker_seed(seed: int, index: int, generation: int) -> int:
    """A 31-bit seed for one process of one worker (new stream after every restart)."""
    return int(np.random.SeedSequence([seed, index, generation]).generate_state(1)[0] >> 1)


class WorkerEnv(Protocol):
    """What a worker process drives: numpy in, one Row (fields in FIELDS order) out.

    ``reset(seed)``: with an int seed the episode must be a function of that seed alone (where
    the backend can do it, see each class); None continues the worker's own stream.
    ``save_replay()``: save a replay of the game so far, or raise saying why there is none.
    """

    info: EnvInfo

    def reset(self, seed: int | None = None) -> Row: ...

    def step(self, actions: np.ndarray) -> Row: ...

    def save_replay(self) -> None: ...

    def close(self) -> None: ...


def _make_worker_env(spec: WorkerSpec) -> WorkerEnv:
    """The backend's worker env (inside the worker process)."""
    if spec.backend == "smac":
        from envs.smac import SmacWorkerEnv  # only when used: it needs StarCraft II's SMAC

        return SmacWorkerEnv(spec)
    return JaxWorkerEnv(spec)


class JaxWorkerEnv:
    """One envs.spec environment, jitted, numpy in / numpy out (runs inside a worker)."""

    def __init__(self, spec: WorkerSpec) -> None:
        import jax
        import jax.numpy as jnp

        if spec.platform is not None:
            jax.config.update("jax_platforms", spec.platform)
        if spec.compile_cache_dir is not None:
            jax.config.update("jax_compilation_cache_dir", spec.compile_cache_dir)
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
            jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
        if spec.make_env is None:
            import envs

            env = envs.make(spec.map_name, **spec.env_options)
        else:
            env = spec.make_env(spec.map_name, **spec.env_options)
        self.info: EnvInfo = env.info

        def reset(key: jax.Array) -> tuple[jax.Array, TimeStep, Any]:
            key, sub = jax.random.split(key)
            timestep, state = env.reset(sub)
            return key, timestep, state

        def step(key: jax.Array, state: Any, actions: jax.Array) -> tuple[jax.Array, TimeStep, Any]:
            key, sub = jax.random.split(key)
            timestep, state = env.step(sub, state, actions)
            return key, timestep, state

        self._jax, self._jnp = jax, jnp
        self._reset, self._step = jax.jit(reset), jax.jit(step)
        self._key = jax.random.key(spec.seed)
        self._state: Any = None
        # Compile both functions now, so that "ready" means ready.
        _, _, state = self._reset(self._key)
        warm = self._step(self._key, state, jnp.zeros((self.info.n_agents,), jnp.int32))
        jax.block_until_ready(warm)

    def _row(self, timestep: TimeStep) -> Row:
        host = self._jax.device_get(timestep)
        return tuple(np.asarray(getattr(host, name)) for name in FIELDS)

    def reset(self, seed: int | None = None) -> Row:
        """Start an episode. With ``seed`` the worker's key becomes ``jax.random.key(seed)``
        first, so the episode (its reset and every later step key) depends on the seed alone;
        None continues the worker's stream."""
        if seed is not None:
            self._key = self._jax.random.key(seed)
        self._key, timestep, self._state = self._reset(self._key)
        return self._row(timestep)

    def step(self, actions: np.ndarray) -> Row:
        if self._state is None:
            raise RuntimeError("step before reset")
        actions = self._jnp.asarray(actions, self._jnp.int32)
        self._key, timestep, self._state = self._step(self._key, self._state, actions)
        return self._row(timestep)

    def save_replay(self) -> None:
        raise NotImplementedError("SC2 replays need backend 'smac' (StarCraft II)")

    def close(self) -> None:
        self._state = None


def _save_replay(env: WorkerEnv) -> tuple[str, Any]:
    """The reply to ("save_replay", None): ("saved", None), or ("failed", traceback) when the
    env could not save one (the worker carries on)."""
    try:
        env.save_replay()
    except Exception:
        return ("failed", traceback.format_exc())
    return ("saved", None)


def _worker_main(conn: Connection, spec: WorkerSpec) -> None:
    """Worker process body. Messages host -> worker: ("reset", seed: int | None), ("step",
    actions [n_agents] int32), ("save_replay", None), ("close", None). Worker -> host: ("ready",
    EnvInfo), ("row", Row), ("drop", reason) for an episode (or a reset) the env gave up on,
    ("saved", None) / ("failed", traceback) for save_replay, ("error", traceback) before
    exiting."""
    with contextlib.suppress(OSError):  # lead a process group: the host kills it as one
        os.setsid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the host's to handle
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # run `finally` (closes SC2)
    env: WorkerEnv | None = None
    try:
        env = _make_worker_env(spec)
        conn.send(("ready", env.info))
        n_steps = 0
        while True:
            try:
                kind, payload = conn.recv()
            except EOFError:  # the host is gone
                break
            if kind == "close":
                break
            try:
                if kind == "reset":
                    reply = ("row", env.reset(seed=payload))
                elif kind == "step":
                    n_steps += 1
                    if spec.crash_at_step is not None and n_steps == spec.crash_at_step:
                        if spec.crash_mode == "exit":
                            os._exit(3)
                        while spec.crash_mode == "hang":
                            time.sleep(60.0)
                        raise RuntimeError(f"injected fault at step {n_steps}")
                    reply = ("row", env.step(payload))
                elif kind == "save_replay":
                    reply = _save_replay(env)
                else:
                    raise ValueError(f"unknown message {kind!r}")
            except EpisodeFault as fault:
                reply = ("drop", str(fault))
            conn.send(reply)
    except SystemExit:  # SIGTERM from the host: just clean up
        pass
    except BaseException:
        with contextlib.suppress(Exception):
            conn.send(("error", traceback.format_exc()))
    finally:
        if env is not None:
            with contextlib.suppress(Exception):
                env.close()
        conn.close()
