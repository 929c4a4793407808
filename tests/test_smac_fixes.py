"""Tests of the "smac" worker against SMAC's own behaviour (smac/env/starcraft2/starcraft2.py).

Each test drives FAKE_SMAC_ENV (tests/test_smac_pool.py), a stand-in ``smac.env`` that mimics
the parts of the real StarCraft2Env involved: launching the game on the first reset, the
episode counter, ``force_restarts``, the reward normaliser and the game process. Its knobs
(FAKE_SMAC_* environment variables) are read when each worker builds its env.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_smac_pool import children, install_fake_smac, policy

from envs.pool import FaultInjection, WorkerPool

OPTIONS = {"episode_limit": 3}
SCALED_STEP = 20 / (10 + 200 + 45)  # the fake's step reward 1 / (max_reward / scale rate)


@pytest.fixture
def forget_smac():
    """Remove any `smac` modules imported by a test from sys.modules afterwards."""
    yield
    for name in [n for n in sys.modules if n == "smac" or n.startswith("smac.")]:
        del sys.modules[name]


def launches(root: Path, pid: int) -> list[tuple[int, str]]:
    """The games worker ``pid`` launched, in order: (game pid, "reset" or "full_restart")."""
    out = []
    n = 1
    while (path := root / f"launch-{pid}-{n}").exists():
        game, by = path.read_text().split()
        out.append((int(game), by))
        n += 1
    return out


def ended(pid: int, wait: float = 10.0) -> bool:
    """True when process ``pid`` has exited. A zombie counts: a game orphaned by its worker is
    reaped by whatever adopts it, which may never happen in a container."""
    deadline = time.monotonic() + wait
    while True:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


# ---------------------------------------------------------------------------- fix 1


def test_first_episode_fault_or_abandon_launches_one_game(tmp_path, monkeypatch, forget_smac):
    # SMAC launches the game in reset while _episode_count == 0, which only step's end of an
    # episode increments, and counts the enemies into max_reward each time (init_units).
    install_fake_smac(tmp_path, monkeypatch, FAKE_SMAC_EPISODES="limit")
    with WorkerPool("smac", "3m", 1, env_options=OPTIONS) as clean:
        reference = clean.run_episodes(policy, 2).episodes.timestep.reward
    np.testing.assert_allclose(reference[:, 1:], SCALED_STEP, rtol=1e-6)

    monkeypatch.setenv("FAKE_SMAC_EPISODES", "lost@2,limit,limit")  # episode 1 loses the game
    with WorkerPool("smac", "3m", 1, env_options=OPTIONS) as faulty:
        roll = faulty.run_episodes(policy, 2)
        pid = faulty.pids[0]
    assert [(d.step, d.restarted) for d in roll.dropped] == [(1, False)]
    np.testing.assert_array_equal(roll.episodes.timestep.reward, reference)
    assert [by for _, by in launches(tmp_path, pid)] == ["reset", "full_restart"]

    monkeypatch.setenv("FAKE_SMAC_EPISODES", "limit")
    with WorkerPool("smac", "3m", 1, env_options=OPTIONS) as abandoned:
        abandoned.reset()
        abandoned.step(np.ones((1, 2), np.int32))  # the first episode is abandoned here
        roll = abandoned.run_episodes(policy, 2)
        pid = abandoned.pids[0]
    np.testing.assert_array_equal(roll.episodes.timestep.reward, reference)
    assert [by for _, by in launches(tmp_path, pid)] == ["reset"]


# ---------------------------------------------------------------------------- fix 2


def test_connection_lost_during_reset_is_retried_not_scored(
    tmp_path, monkeypatch, forget_smac, caplog
):
    # SMAC's reset catches the lost connection, calls full_restart and returns as if nothing
    # happened; the next step would find every unit of the stale lists dead (a draw).
    install_fake_smac(tmp_path, monkeypatch, FAKE_SMAC_EPISODES="limit", FAKE_SMAC_RESET_LOST="2")
    with WorkerPool("smac", "3m", 1, env_options=OPTIONS) as pool:
        pid = pool.pids[0]
        with caplog.at_level(logging.WARNING, logger="envs.pool"):
            roll = pool.run_episodes(policy, 3)
        assert pool.pids == [pid]  # retried on the same process
    ep = roll.episodes
    assert roll.dropped == () and roll.rounds == 3
    np.testing.assert_array_equal(ep.length, [3, 3, 3])  # no one-step draw
    np.testing.assert_array_equal(ep.timestep.state[:, 0, 1], [1, 3, 4])  # reset 2 was redone
    np.testing.assert_allclose(ep.timestep.reward[:, 1:], SCALED_STEP, rtol=1e-6)
    assert "worker 0: the environment gave up on reset" in caplog.text
    assert "during reset" in caplog.text
    assert [by for _, by in launches(tmp_path, pid)] == ["reset", "full_restart"]


def test_connection_lost_in_the_first_reset_replaces_the_worker(
    tmp_path, monkeypatch, forget_smac, caplog
):
    install_fake_smac(tmp_path, monkeypatch, FAKE_SMAC_EPISODES="limit", FAKE_SMAC_RESET_LOST="1")
    with WorkerPool("smac", "3m", 1, env_options=OPTIONS) as pool:
        pid = pool.pids[0]
        monkeypatch.delenv("FAKE_SMAC_RESET_LOST")  # the replacement's game keeps its connection
        with caplog.at_level(logging.WARNING, logger="envs.pool"):
            roll = pool.run_episodes(policy, 1)
        assert pool.pids[0] != pid
    assert "during its first reset" in caplog.text
    np.testing.assert_allclose(roll.episodes.timestep.reward[0, 1:], SCALED_STEP, rtol=1e-6)
    assert all(ended(game) for game, _ in launches(tmp_path, pid))


# ---------------------------------------------------------------------------- fix 3


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads process states from /proc")
def test_games_end_with_their_workers(tmp_path, monkeypatch, forget_smac):
    # pysc2 starts StarCraft II with a plain Popen: the game is in its worker's process group.
    # The fake's close() leaves the game running, so only the group kill can end it.
    install_fake_smac(tmp_path, monkeypatch, FAKE_SMAC_EPISODES="limit", FAKE_SMAC_CLOSE_LEAKS="1")
    faults = [FaultInjection(0, at_step=1, mode="exit"), FaultInjection(1, at_step=1, mode="hang")]
    pool = WorkerPool("smac", "3m", 2, env_options=OPTIONS, fault_injection=faults, timeout=3.0)
    try:
        first = pool.pids
        pool.reset()
        games = [launches(tmp_path, pid)[0][0] for pid in first]
        assert not any(ended(game, wait=0) for game in games)
        result = pool.step(np.ones((2, 2), np.int32))  # worker 0 dies, worker 1 hangs
        assert result.dropped_mask.all() and all(d.restarted for d in result.dropped)
        assert all(ended(game) for game in games)
        pool.reset()
        games = [launches(tmp_path, pid)[0][0] for pid in pool.pids]
        assert not any(ended(game, wait=0) for game in games)
    finally:
        pool.close()
    assert all(ended(game) for game in games)


# ---------------------------------------------------------------------------- fix 4


def test_first_reset_is_timed_by_start_timeout(tmp_path, monkeypatch, forget_smac, caplog):
    knobs = {"FAKE_SMAC_LAUNCH_SECONDS": "3", "FAKE_SMAC_RESTART_SECONDS": "3"}
    install_fake_smac(tmp_path, monkeypatch, FAKE_SMAC_EPISODES="limit", **knobs)
    with WorkerPool("smac", "3m", 1, env_options=OPTIONS, timeout=1.5, start_timeout=60) as pool:
        pid = pool.pids[0]
        pool.reset()  # launches the game: 3 s, more than timeout
        assert pool.pids == [pid]
        with caplog.at_level(logging.WARNING, logger="envs.pool"):
            first = pool.reset()  # restarts the battle: 3 s, timed by timeout, so replaced
        assert "no reply within 1.5 s (hung)" in caplog.text
        assert pool.pids[0] != pid  # ... and the replacement's first reset launched in time
    assert first.state[0, 1] == 1  # the replacement's first reset


# ---------------------------------------------------------------------------- fixes 5, 6


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("seed", r"^env_options\['seed'\] is not allowed: use WorkerPool's seed argument"),
        ("map_name", r"^env_options\['map_name'\] is not allowed: pass the map as map_name$"),
    ],
)
def test_seed_and_map_name_options_are_refused_on_the_host(option, message):
    before = children()
    with pytest.raises(ValueError, match=message):
        WorkerPool("smac", "3m", 1, env_options={option: 1})
    assert children() <= before


def test_obs_instead_of_state_is_refused_with_a_sight_range(tmp_path, monkeypatch, forget_smac):
    options = {"sight_range": 0.0, "obs_instead_of_state": True}
    with pytest.raises(ValueError, match=r"obs_instead_of_state=True with sight_range .* hides"):
        WorkerPool("smac", "3m", 1, env_options=options)
    install_fake_smac(tmp_path, monkeypatch)
    with WorkerPool("smac", "3m", 1, env_options={"obs_instead_of_state": True}) as pool:
        assert pool.info.state_dim == 2 * 2  # without a sight range SMAC's own state is kept
