"""Tests of envs/smac.py: the worker-process pool of the host path.

Most tests use ``CountdownEnv`` (below), a tiny envs.spec environment whose episodes have a
known, seed-dependent length, so every number in the padded episode layout can be checked. One
test runs the real SMAX map 3m; the "smac" backend is exercised against a stand-in
``smac.env.StarCraft2Env`` written to a temporary directory (no StarCraft II here).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import multiprocessing
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.pool import (
    FaultInjection,
    InvalidActionError,
    WorkerPool,
    WorkerPoolError,
    episode_seed_at,
)
from envs.pool_types import FIELDS
from envs.smac import SmacNotAvailableError, require_smac
from envs.spec import EnvInfo, TimeStep, assert_timestep

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is optional
    psutil = None

LIMIT = 6  # CountdownEnv's episode limit in these tests
N_WORKERS = 3


# ---------------------------------------------------------------------------- a known env


@dataclasses.dataclass(frozen=True)
class CountdownEnv:
    """2 agents, 4 actions. reset draws the episode length L ~ U{1..limit} from its key.

    obs [2, 3] = (t, agent id, L); expert_obs [2, 4] = (obs, 1); state [2] = (t, L).
    Action 0 is never available, action 3 only at even t. Transition into step t pays reward t.
    The episode ends at t = L: truncated if L == limit, else won iff L is even. Absorbing.
    """

    info: EnvInfo

    def _timestep(self, t: jax.Array, length: jax.Array, reward: jax.Array, done: jax.Array):
        tf, lf = t.astype(jnp.float32), length.astype(jnp.float32)
        ids = jnp.arange(2, dtype=jnp.float32)
        obs = jnp.stack([jnp.full((2,), tf), ids, jnp.full((2,), lf)], axis=1)
        avail = jnp.array([False, True, True, True]) & ~((jnp.arange(4) == 3) & (t % 2 == 1))
        truncated = done & (length == self.info.episode_limit)
        return TimeStep(
            obs=obs,
            expert_obs=jnp.concatenate([obs, jnp.ones((2, 1), jnp.float32)], axis=1),
            state=jnp.stack([tf, lf]),
            avail=jnp.broadcast_to(avail, (2, 4)),
            reward=jnp.asarray(reward, jnp.float32),
            done=jnp.asarray(done, bool),
            won=done & ~truncated & (length % 2 == 0),
            truncated=truncated,
        )

    def reset(self, key: jax.Array):
        length = jax.random.randint(key, (), 1, self.info.episode_limit + 1)
        t, done = jnp.zeros((), jnp.int32), jnp.zeros((), bool)
        return self._timestep(t, length, 0.0, done), (t, length, done)

    def step(self, key: jax.Array, state, actions: jax.Array):
        del key, actions
        t, length, done = state
        t = jnp.where(done, t, t + 1)
        reward = jnp.where(done, 0.0, t.astype(jnp.float32))
        done = t >= length
        return self._timestep(t, length, reward, done), (t, length, done)


def make_countdown(
    map_name: str,
    limit: int = LIMIT,
    sight_range: float | None = None,
    expert_view: str = "full_obs",
) -> CountdownEnv:
    """make_env for the pool: ``make_countdown(map_name, **env_options)``."""
    info = EnvInfo(map_name, 2, 0, 4, 3, 4, 2, limit, sight_range, expert_view)
    return CountdownEnv(info)


def policy(timestep: TimeStep, first: np.ndarray) -> np.ndarray:
    """Always-available actions: row r, agent i plays 1 + (r + i) % 2. [n_rows, 2] int."""
    del first
    rows = np.asarray(timestep.obs).shape[0]
    return 1 + (np.arange(rows)[:, None] + np.arange(2)[None, :]) % 2


def obs_policy(timestep: TimeStep, first: np.ndarray) -> np.ndarray:
    """Actions from each row's observation alone (t, agent id): 1 + (t + id) % 2. [n_rows, 2]."""
    del first
    obs = np.asarray(timestep.obs).astype(np.int64)
    return 1 + (obs[:, :, 0] + obs[:, :, 1]) % 2


def countdown_length(seed: int) -> int:
    """The episode length CountdownEnv draws after a reset with episode seed ``seed``."""
    _, sub = jax.random.split(jax.random.key(seed))  # JaxWorkerEnv's reset splits the key
    return int(jax.random.randint(sub, (), 1, LIMIT + 1))


def gone(pid: int, wait: float = 10.0) -> bool:
    """True when process ``pid`` no longer exists (zombies count as existing)."""
    deadline = time.monotonic() + wait
    while True:
        if psutil is not None:
            exists = psutil.pid_exists(pid)
        else:
            try:
                os.kill(pid, 0)
                exists = True
            except ProcessLookupError:
                exists = False
        if not exists:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


@pytest.fixture(scope="module")
def pool():
    with WorkerPool(
        "smax", "countdown", N_WORKERS, seed=0, make_env=make_countdown, timeout=60.0
    ) as p:
        yield p


# ---------------------------------------------------------------------------- shapes


def test_stacked_shapes_and_dtypes(pool):
    info = pool.info
    assert info == make_countdown("countdown").info
    first = pool.reset()
    assert_timestep(first, info, (N_WORKERS,))
    for leaf in dataclasses.astuple(first):
        assert isinstance(leaf, np.ndarray)
    assert not first.done.any() and (first.obs[:, :, 0] == 0).all()
    result = pool.step(np.ones((N_WORKERS, 2), np.int64))
    assert_timestep(result.timestep, info, (N_WORKERS,))
    np.testing.assert_array_equal(result.worker_ids, np.arange(N_WORKERS))
    assert result.dropped == () and not result.dropped_mask.any()
    np.testing.assert_array_equal(result.timestep.obs[:, 0, 0], 1.0)
    np.testing.assert_array_equal(pool.running, ~result.timestep.done)
    np.testing.assert_array_equal(pool.live_ids, np.flatnonzero(~result.timestep.done))


def test_episodes_of_different_lengths_in_padded_layout(pool):
    calls: list[tuple[TimeStep, np.ndarray]] = []

    def act(timestep: TimeStep, first: np.ndarray) -> np.ndarray:
        calls.append((timestep, first))
        return policy(timestep, first)

    roll = pool.run_episodes(act, 7)
    ep, T = roll.episodes, LIMIT
    assert len(ep) == 7 and roll.rounds == 3 and roll.dropped == ()
    np.testing.assert_array_equal(ep.worker, [0, 1, 2, 0, 1, 2, 0])
    assert_timestep(ep.timestep, pool.info, (7, T + 1))
    assert ep.actions.shape == (7, T, 2) and ep.actions.dtype == np.int32
    lengths = ep.timestep.obs[:, 0, 0, 2].astype(int)  # L as drawn by each reset
    np.testing.assert_array_equal(ep.length, lengths)
    assert len(set(lengths.tolist())) >= 2, lengths  # workers really differ
    assert roll.env_steps == lengths.sum()
    t = np.arange(T + 1)
    for b, L in enumerate(lengths):
        np.testing.assert_array_equal(ep.timestep.obs[b, :, 0, 0], np.minimum(t, L))
        np.testing.assert_array_equal(ep.timestep.reward[b], np.where(t <= L, t, 0))
        np.testing.assert_array_equal(ep.timestep.done[b], t >= L)
        np.testing.assert_array_equal(ep.mask[b], np.arange(T) < L)
        expected = 1 + (ep.worker[b] + np.arange(2)) % 2
        np.testing.assert_array_equal(ep.actions[b, :L], np.broadcast_to(expected, (L, 2)))
        np.testing.assert_array_equal(ep.actions[b, L:], 1)  # first available action
        assert ep.timestep.truncated[b, -1] == (L == T)
        assert ep.won[b] == (L != T and L % 2 == 0)
        assert ep.returns[b] == L * (L + 1) / 2
    # act_fn always sees all n_workers rows; `first` marks every round's first step.
    assert all(ts.obs.shape[0] == N_WORKERS for ts, _ in calls)
    starts = [k for k, (_, first) in enumerate(calls) if first.any()]
    assert len(starts) == 3 and starts[0] == 0
    np.testing.assert_array_equal(calls[starts[2]][1], [True, False, False])
    idle = calls[starts[2]][0]  # rows 1, 2 take no part in the last round: placeholders
    assert idle.done[1:].all() and idle.avail[1:].all() and not idle.obs[1:].any()
    for ts, _ in calls:  # rows of finished episodes are absorbing: reward 0
        assert (ts.reward[ts.done] == 0).all()


def assert_same_episodes(a, b) -> None:
    """Every array of two EpisodeBatches is equal, except which worker played each episode."""
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(a.timestep, name), getattr(b.timestep, name))
    np.testing.assert_array_equal(a.actions, b.actions)
    np.testing.assert_array_equal(a.length, b.length)


def test_reset_seeds_make_the_episode_a_function_of_the_seed(pool):
    first = pool.reset(seeds=[7, 7, None])
    lengths = first.obs[:, 0, 2].astype(int)
    assert lengths[0] == lengths[1] == countdown_length(7)
    np.testing.assert_array_equal(pool.reset([2], seeds=[9]).obs[0, 0, 2], countdown_length(9))
    with pytest.raises(ValueError, match=r"one entry per worker reset \(3\), got 2"):
        pool.reset(seeds=[1, 2])
    with pytest.raises(ValueError, match=r"seeds must be None or integers"):
        pool.reset(seeds=[1, -2, 3])


def test_episode_seed_makes_episodes_independent_of_the_workers(pool):
    with WorkerPool("smax", "countdown", 1, seed=5, make_env=make_countdown) as single:
        one = single.run_episodes(obs_policy, 7, episode_seed=11)
        again = single.run_episodes(obs_policy, 7, episode_seed=11)
    three = pool.run_episodes(obs_policy, 7, episode_seed=11)
    other = pool.run_episodes(obs_policy, 7, episode_seed=12)
    assert_same_episodes(one.episodes, again.episodes)
    assert_same_episodes(one.episodes, three.episodes)
    np.testing.assert_array_equal(three.episodes.worker, [0, 1, 2, 0, 1, 2, 0])
    expected = [countdown_length(episode_seed_at(11, k)) for k in range(7)]
    np.testing.assert_array_equal(one.episodes.length, expected)  # reset k got seed (11, k)
    assert not np.array_equal(other.episodes.length, one.episodes.length)
    with pytest.raises(ValueError, match=r"episode_seed must be None or an integer >= 0"):
        pool.run_episodes(obs_policy, 1, episode_seed=-1)


def test_episode_seeds_count_the_resets_of_replacement_rounds():
    fault = FaultInjection(worker=1, at_step=1)  # worker 1 dies on its first step
    with WorkerPool("smax", "countdown", 2, make_env=make_countdown, fault_injection=fault) as p:
        roll = p.run_episodes(obs_policy, 3, episode_seed=4)
    # round 0 sends resets 0 (worker 0) and 1 (worker 1, dropped); round 1 sends 2 and 3
    assert [d.worker for d in roll.dropped] == [1] and roll.rounds == 2
    np.testing.assert_array_equal(roll.episodes.worker, [0, 0, 1])
    expected = [countdown_length(episode_seed_at(4, k)) for k in (0, 2, 3)]
    np.testing.assert_array_equal(roll.episodes.length, expected)


def test_invalid_actions_rejected_before_sending(pool):
    pool.reset()
    good = np.ones((N_WORKERS, 2), np.int32)
    bad = good.copy()
    bad[1, 1] = 0
    with pytest.raises(InvalidActionError, match=r"worker 1, agent 1: action 0 is not available"):
        pool.step(bad)
    bad = good.copy()
    bad[2, 0] = 7
    with pytest.raises(InvalidActionError, match=r"worker 2, agent 0: action 7 is out of range"):
        pool.step(bad)
    with pytest.raises(InvalidActionError, match=r"shape"):
        pool.step(good[:2])
    with pytest.raises(InvalidActionError, match=r"integers"):
        pool.step(good.astype(np.float32))
    result = pool.step(good)  # nothing was sent before: every worker is at t = 1 now
    np.testing.assert_array_equal(result.timestep.obs[:, 0, 0], 1.0)
    live = pool.live_ids
    if len(live):  # at odd t, action 3 is unavailable
        with pytest.raises(InvalidActionError, match=rf"worker {live[0]}, agent 0: action 3"):
            pool.step(np.full((len(live), 2), 3), worker_ids=live)

    def bad_policy(timestep: TimeStep, first: np.ndarray) -> np.ndarray:
        return np.zeros((N_WORKERS, 2), np.int32)

    with pytest.raises(InvalidActionError, match=r"action 0 is not available"):
        pool.run_episodes(bad_policy, 1)


# ---------------------------------------------------------------------------- faults


def test_crashed_workers_are_restarted_and_only_their_episodes_dropped(caplog):
    faults = [
        FaultInjection(worker=1, at_step=2),
        FaultInjection(worker=2, at_step=3, mode="raise"),
        FaultInjection(worker=3, at_step=2, mode="hang"),
    ]
    with WorkerPool(
        "smax", "countdown", 4, seed=1, make_env=make_countdown, fault_injection=faults, timeout=4.0
    ) as pool:
        pids = pool.pids
        with caplog.at_level(logging.WARNING, logger="envs.smac"):
            roll = pool.run_episodes(policy, 8)
        assert len(roll.episodes) == 8
        drops = sorted(roll.dropped, key=lambda d: d.worker)
        assert [d.worker for d in drops] == [1, 2, 3], roll.dropped
        assert [d.pid for d in drops] == pids[1:] and all(d.restarted for d in drops)
        assert "exit code 3" in drops[0].reason  # the process died (os._exit)
        assert "injected fault at step 3" in drops[1].reason  # the worker raised
        assert "no reply within 4.0 s" in drops[2].reason  # the worker hung
        assert all(0 <= d.step < LIMIT for d in drops)
        assert sorted(pool.dropped, key=lambda d: d.worker) == drops
        assert all(f"worker {i}" in caplog.text for i in (1, 2, 3))
        assert caplog.text.count("episode dropped") == 3
        assert pool.pids[0] == pids[0]  # the healthy worker was left alone
        assert all(pool.pids[i] != pids[i] and gone(pids[i]) for i in (1, 2, 3))
        ep, rows = roll.episodes, np.arange(8)  # every returned episode is whole
        assert ep.timestep.done[rows, ep.length].all()
        assert not ep.timestep.done[rows, ep.length - 1].any()
        assert {1, 2, 3} <= set(ep.worker.tolist())  # the replacements played
        again = pool.run_episodes(policy, 4)
        assert again.dropped == () and len(again.episodes) == 4 and again.rounds == 1
        assert len(pool.dropped) == 3


def children() -> set[int]:
    return {child.pid for child in multiprocessing.active_children()}


def test_failed_start_raises_with_worker_traceback():
    before = children()
    with pytest.raises(WorkerPoolError, match=r"worker 0 failed to start(.|\n)*unexpected"):
        WorkerPool("smax", "countdown", 1, make_env=make_countdown, env_options={"bogus": 1})
    assert children() <= before


# ---------------------------------------------------------------------------- shutdown


def test_close_and_context_exit_leave_no_processes():
    p = WorkerPool("smax", "countdown", 1, make_env=make_countdown)
    pids = p.pids
    assert not gone(pids[0], wait=0)
    p.close()
    p.close()  # idempotent
    assert p.closed and all(gone(pid) for pid in pids)
    with pytest.raises(WorkerPoolError, match="closed"):
        p.reset()
    with WorkerPool("smax", "countdown", 1, make_env=make_countdown) as q:
        q.reset()
        pids = q.pids
    assert all(gone(pid) for pid in pids)
    assert not children() & set(pids)


def test_garbage_collection_closes_workers():
    p = WorkerPool("smax", "countdown", 1, make_env=make_countdown)
    pids = p.pids
    del p
    gc.collect()
    assert all(gone(pid) for pid in pids)


def test_interpreter_exit_closes_workers(tmp_path):
    script = tmp_path / "leave_open.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import json, sys
            sys.path[:0] = {[str(Path(__file__).parent), str(Path(__file__).parents[1])]!r}
            from envs.pool import WorkerPool
            from test_smac_pool import make_countdown

            if __name__ == "__main__":
                pool = WorkerPool("smax", "countdown", 1, make_env=make_countdown)
                pool.reset()
                print(json.dumps(pool.pids), flush=True)
                # exit without close()
            """
        )
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    pids = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(pids) == 1 and gone(pids[0])


# ---------------------------------------------------------------------------- real SMAX map


def test_smax_3m_through_the_pool():
    options = {"sight_range": 0.0, "episode_limit": 8}
    rng = np.random.default_rng(0)

    def random_available(timestep: TimeStep, first: np.ndarray) -> np.ndarray:
        scores = rng.random(timestep.avail.shape) * timestep.avail
        return scores.argmax(-1)

    with WorkerPool("smax", "3m", 2, seed=0, env_options=options) as pool:
        info = pool.info
        assert (info.map_name, info.n_agents, info.n_enemies, info.n_actions) == ("3m", 3, 3, 8)
        assert info.episode_limit == 8 and info.sight_range == 0.0
        assert_timestep(pool.reset(), info, (2,))
        # the same episode seed on two processes: the same episode, step keys included
        timestep = pool.reset(seeds=[5, 5])
        for _ in range(4):
            for name in FIELDS:
                leaf = getattr(timestep, name)
                np.testing.assert_array_equal(leaf[0], leaf[1], err_msg=name)
            if timestep.done[0]:
                break
            action = (rng.random(timestep.avail.shape[1:]) * timestep.avail[0]).argmax(-1)
            timestep = pool.step(np.stack([action, action])).timestep
        roll = pool.run_episodes(random_available, 4)
    ep = roll.episodes
    assert_timestep(ep.timestep, info, (4, 9))
    assert ep.actions.shape == (4, 8, 3) and roll.dropped == ()
    assert ((ep.length >= 1) & (ep.length <= 8)).all()
    np.testing.assert_array_equal(ep.mask, np.arange(8)[None] < ep.length[:, None])
    # actions taken were available where they were taken
    taken = np.take_along_axis(ep.timestep.avail[:, :-1], ep.actions[..., None], -1)[..., 0]
    assert taken[ep.mask].all()
    # sight 0: the agent's blocks about other units are empty, the expert's are not
    assert ep.timestep.expert_obs[:, 0].any() and not np.array_equal(
        ep.timestep.obs[:, 0], ep.timestep.expert_obs[:, 0]
    )
    truncated = ep.timestep.truncated[:, -1]
    assert not (truncated & ep.won).any() and (ep.length[truncated] == 8).all()


# ---------------------------------------------------------------------------- real SMAC path

FAKE_SMAC_ENV = r'''
"""A stand-in for smac.env (no StarCraft II): StarCraft2Env's API, and the behaviour of
smac/env/starcraft2/starcraft2.py that the pool relies on, on a map of 2 agents and 1 enemy.

As in SMAC: reset launches the game while _episode_count == 0 and otherwise restarts the battle;
step adds 1 to _episode_count when it ends an episode; init_units adds the enemy's health and
shield (a marine: 45) to max_reward while _episode_count == 0; rewards are divided by
max_reward / reward_scale_rate; a connection lost in step or reset calls full_restart (stop the
game, launch another, force_restarts += 1), after which step returns (0, True, {}) and reset
returns with the old game's unit lists, so that the next step finds every unit dead (a draw);
a launch stops the previous game (pysc2's StarcraftProcess.__del__ does, once SMAC drops it);
save_replay writes
$SC2PATH/Replays/<replay_dir>/<replay_prefix or map_name>_<UTC time>.SC2Replay. The "game" is a
`sleep 600` child process; every launch writes $SC2PATH/launch-<worker pid>-<n> containing
"<game pid> <reset|full_restart>".

Knobs, environment variables read when the env is built:
  FAKE_SMAC_EPISODES     outcome of the episode started by reset number n (1-based, cycled):
                         "limit" runs into the time limit, "won@T" is won at step T, "lost@T"
                         loses the connection at step T; default "limit,lost@2,won@3"
  FAKE_SMAC_RESET_LOST   reset numbers (comma separated) that lose the connection
  FAKE_SMAC_LAUNCH_SECONDS, FAKE_SMAC_RESTART_SECONDS: how long a launch / a restart takes
  FAKE_SMAC_CLOSE_LEAKS  close() leaves the game running (as if pysc2 failed to stop it)
"""
import os
import subprocess
import time

import numpy as np


class StarCraft2Env:
    def __init__(self, map_name="8m", seed=None, continuing_episode=False,
                 obs_instead_of_state=False, reward_scale=True, reward_scale_rate=20,
                 replay_dir="", replay_prefix=""):
        self.map_name, self._seed, self.continuing_episode = map_name, seed, continuing_episode
        self.obs_instead_of_state = obs_instead_of_state
        self.reward_scale, self.reward_scale_rate = reward_scale, reward_scale_rate
        self.replay_dir, self.replay_prefix = replay_dir, replay_prefix
        self.n_agents, self.n_enemies, self.episode_limit = 2, 1, 7
        self.reward_death_value, self.reward_win = 10, 200
        self.max_reward = self.n_enemies * self.reward_death_value + self.reward_win
        self._episode_count = self._episode_steps = self.force_restarts = 0
        self._sc2_proc, self._launches, self._units_of = None, 0, None
        self._resets = 0  # not SMAC's: reset calls, shown in the state
        knob = os.environ.get
        self._outcomes = knob("FAKE_SMAC_EPISODES", "limit,lost@2,won@3").split(",")
        self._reset_lost = {int(n) for n in knob("FAKE_SMAC_RESET_LOST", "").split(",") if n}
        self._launch_s = float(knob("FAKE_SMAC_LAUNCH_SECONDS", "0"))
        self._restart_s = float(knob("FAKE_SMAC_RESTART_SECONDS", "0"))
        self._close_leaks = bool(knob("FAKE_SMAC_CLOSE_LEAKS"))

    def unit_sight_range(self, agent_id):
        return 9

    def get_env_info(self):
        state = 2 * self.n_agents if self.obs_instead_of_state else 2
        return {"state_shape": state, "obs_shape": 2, "n_actions": 7, "n_agents": 2,
                "episode_limit": self.episode_limit}

    def _launch(self, by="reset"):
        self._stop_game()
        time.sleep(self._launch_s)
        self._sc2_proc = subprocess.Popen(["sleep", "600"])
        self._launches += 1
        name = f"launch-{os.getpid()}-{self._launches}"
        with open(os.path.join(os.environ["SC2PATH"], name), "w") as f:
            f.write(f"{self._sc2_proc.pid} {by}")

    def _stop_game(self):
        if self._sc2_proc is not None:
            self._sc2_proc.kill()
            self._sc2_proc.wait()

    def full_restart(self):
        self._stop_game()
        self._launch("full_restart")
        self.force_restarts += 1

    def reset(self):
        self._episode_steps = 0
        self._resets += 1
        if self._episode_count == 0:
            self._launch()
        else:
            time.sleep(self._restart_s)  # _restart: kill every unit, the map restarts the battle
        if self._resets in self._reset_lost:
            self.full_restart()  # observe() lost the connection: init_units is skipped
        else:
            self.init_units()
        return self.get_obs(), self.get_state()

    def init_units(self):
        self._units_of = self._launches
        if self._episode_count == 0:
            self.max_reward += 45

    def get_obs_agent(self, agent_id):
        sight, dist = self.unit_sight_range(agent_id), 4.0 + agent_id
        return np.array([1.0, dist / sight] if dist < sight else [0.0, 0.0], np.float32)

    def get_obs(self):
        return [self.get_obs_agent(i) for i in range(self.n_agents)]

    def get_state(self):
        if self.obs_instead_of_state:
            return np.concatenate(self.get_obs(), axis=0).astype(np.float32)
        return np.array([self._episode_steps, self._resets], np.float32)

    def get_avail_actions(self):
        return [[0, 1, 1, 1, 1, 1, 1] for _ in range(self.n_agents)]

    def step(self, actions):
        assert len(actions) == self.n_agents and all(isinstance(a, int) for a in actions)
        self._episode_steps += 1
        kind, _, at = self._outcomes[(self._resets - 1) % len(self._outcomes)].partition("@")
        if kind == "lost" and self._episode_steps == int(at):
            self.full_restart()
            return 0, True, {}
        reward, terminated, info = 1.0, False, {"battle_won": False}
        if self._units_of != self._launches:  # stale unit lists: every unit looks dead
            reward, terminated = 0.0, True  # game_end_code 0: a draw
        elif kind == "won" and self._episode_steps == int(at):
            reward, terminated, info["battle_won"] = 1.0 + self.reward_win, True, True
        elif self._episode_steps >= self.episode_limit:
            terminated = True
            if self.continuing_episode:
                info["episode_limit"] = True
        if terminated:
            self._episode_count += 1
        if self.reward_scale:
            reward /= self.max_reward / self.reward_scale_rate
        return reward, terminated, info

    def save_replay(self):
        if self._sc2_proc is None:  # SMAC: self._run_config is None before the first launch
            raise AttributeError("'NoneType' object has no attribute 'save_replay'")
        prefix = self.replay_prefix or self.map_name
        folder = os.path.join(os.environ["SC2PATH"], "Replays", self.replay_dir or "")
        os.makedirs(folder, exist_ok=True)
        stamp = time.strftime("%Y-%m-%d-%H-%M-%S", time.gmtime())
        with open(os.path.join(folder, f"{prefix}_{stamp}.SC2Replay"), "w") as f:
            f.write(f"{self._episode_count} episodes")

    def close(self):
        if not self._close_leaks:
            self._stop_game()
        with open(os.path.join(os.environ["SC2PATH"], f"closed-{os.getpid()}"), "w") as f:
            f.write("closed")
'''


@pytest.fixture
def forget_smac():
    """Remove any `smac` modules imported by a test from sys.modules afterwards."""
    yield
    for name in [n for n in sys.modules if n == "smac" or n.startswith("smac.")]:
        del sys.modules[name]


def write_package(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def install_fake_smac(root: Path, monkeypatch: pytest.MonkeyPatch, **knobs: str) -> None:
    """Make FAKE_SMAC_ENV the `smac.env` of this test and of the workers it starts, with
    $SC2PATH = ``root`` and the given FAKE_SMAC_* knobs (read by each env when it is built)."""
    write_package(root, {"smac/__init__.py": "", "smac/env/__init__.py": FAKE_SMAC_ENV})
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("SC2PATH", str(root))
    for name, value in knobs.items():
        monkeypatch.setenv(name, value)


def test_smac_backend_without_smac_gives_one_install_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "smac", None)  # hidden whatever is installed
    with pytest.raises(SmacNotAvailableError) as err:
        WorkerPool("smac", "3m", 2)
    text = str(err.value)
    assert "`smac` is not installed" in text
    assert "pip install git+https://github.com/oxwhirl/smac.git" in text
    assert "SC2PATH" in text and "hyper-parameter optimiser" in text
    assert isinstance(err.value, ImportError)


def test_smac_backend_fails_in_this_venv():
    # Nothing here provides StarCraft II, so the smac backend must refuse with the message.
    before = children()
    with pytest.raises(SmacNotAvailableError, match=r"oxwhirl/smac"):
        WorkerPool("smac", "3m", 1)
    assert children() <= before


def test_pypi_smac_is_recognised(tmp_path, monkeypatch, forget_smac):
    write_package(tmp_path, {"smac/__init__.py": "version = '2.0.0'\n"})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SmacNotAvailableError, match=r"no `smac.env`.*SMAC3.*hyper-parameter"):
        require_smac("3m")


def test_smac_without_starcraft_is_recognised(tmp_path, monkeypatch, forget_smac):
    write_package(tmp_path, {"smac/__init__.py": "", "smac/env/__init__.py": FAKE_SMAC_ENV})
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SC2PATH", str(tmp_path / "no-such-dir"))
    with pytest.raises(SmacNotAvailableError, match=r"StarCraft II was not found"):
        require_smac("3m")


def test_smac_backend_against_a_stand_in_env(tmp_path, monkeypatch, forget_smac):
    write_package(tmp_path, {"smac/__init__.py": "", "smac/env/__init__.py": FAKE_SMAC_ENV})
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SC2PATH", str(tmp_path))
    options = {"sight_range": 0.0, "expert_view": "full_obs", "episode_limit": 5}
    with WorkerPool("smac", "3m", 1, env_options=options) as pool:
        info = pool.info
        assert (info.n_agents, info.n_actions, info.obs_dim, info.state_dim) == (2, 7, 2, 2)
        assert info.episode_limit == 5 and info.expert_dim == 2 and info.sight_range == 0.0
        pid = pool.pids[0]
        roll = pool.run_episodes(policy, 2)
        assert pool.pids == [pid]  # an env fault drops the episode, the process stays
    ep = roll.episodes
    assert len(roll.dropped) == 1 and not roll.dropped[0].restarted
    assert "connection" in roll.dropped[0].reason and roll.rounds == 3
    # episode 1 hits the (shortened) limit: truncated; episode 3 is won at step 3
    np.testing.assert_array_equal(ep.length, [5, 3])
    np.testing.assert_array_equal(ep.timestep.truncated[:, -1], [True, False])
    np.testing.assert_array_equal(ep.won, [False, True])
    np.testing.assert_array_equal(ep.timestep.state[:, 0, 1], [1, 3])  # SMAC episode counter
    # sight 0 hides the enemy; the expert sees it with SMAC's sight 9
    assert not ep.timestep.obs.any()
    np.testing.assert_allclose(ep.timestep.expert_obs[0, 0], [[1, 4 / 9], [1, 5 / 9]])
    assert (tmp_path / f"closed-{pid}").exists()  # close() closed the env (StarCraft II)
    assert gone(pid)

    state_view = {"expert_view": "state"}
    with WorkerPool("smac", "3m", 1, env_options=state_view) as pool:
        assert pool.info.expert_dim == 2 + 2
        first = pool.reset()
        np.testing.assert_array_equal(first.expert_obs[0], [[0, 1, 1, 0], [0, 1, 0, 1]])
        np.testing.assert_allclose(first.obs[0], [[1, 4 / 9], [1, 5 / 9]])  # sight None: 9


def test_save_replay(tmp_path, monkeypatch, forget_smac, pool):
    with pytest.raises(ValueError, match=r"^SC2 replays need backend 'smac' \(StarCraft II\)$"):
        pool.save_replay()
    install_fake_smac(tmp_path, monkeypatch)
    options = {"replay_dir": "evals", "replay_prefix": "run7"}
    with WorkerPool("smac", "3m", 2, env_options=options) as smac_pool:
        pids = smac_pool.pids
        with pytest.raises(WorkerPoolError, match=r"worker 0: .*no StarCraft II game.*reset first"):
            smac_pool.save_replay()
        assert smac_pool.pids == pids  # a failed save leaves the workers alone
        smac_pool.reset(seeds=[3, None])  # SMAC ignores episode seeds
        smac_pool.save_replay()
    names = sorted(path.name for path in (tmp_path / "Replays" / "evals").iterdir())
    assert len(names) == 2, names
    assert names[0].startswith("run7_worker0_") and names[1].startswith("run7_worker1_")
    assert all(name.endswith(".SC2Replay") for name in names)
