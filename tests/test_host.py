"""Tests of the host loop (igmda_jax/host/loop.py): the learner fed by worker processes. That it
learns 3m end to end (60k env steps, beside the fused path) is experiments/host_learning.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from test_train import SMALL as TRAIN_SMALL
from test_train import kill_after_first_checkpoint, metric_rows

import envs
from envs.pool_types import EpisodeBatch as PlayedEpisodes
from envs.pool_types import FaultInjection
from envs.spec import TimeStep, recorder
from igmda_jax.compiled import env_options
from igmda_jax.core.acting import make_networks
from igmda_jax.core.presets import make_config
from igmda_jax.fused.rollout import collect
from igmda_jax.fused.train import _init_params
from igmda_jax.host.episodes import ActCarry, initial_carry, make_act, replay_episodes
from igmda_jax.host.loop import HostBackendError, check_memory
from igmda_jax.run import run
from igmda_jax.tools.evaluate import evaluate_run

# test_train's small 3m configuration (without its td_lambda), two workers per seed
SMALL = {k: v for k, v in TRAIN_SMALL.items() if k != "td_lambda"} | dict(
    iterations_per_call=2, workers_per_seed=2
)


def played_by_hand() -> PlayedEpisodes:
    """Two played episodes, T = 4: the first won after 2 steps, the second hit the time limit
    after 4 (truncated). One agent, one feature; obs = step index."""
    limit = 4
    done = np.array([[0, 0, 1, 1, 1], [0, 0, 0, 0, 1]], bool)
    truncated = np.array([[0, 0, 0, 0, 0], [0, 0, 0, 0, 1]], bool)
    reward = np.array([[0, 1.0, 5.0, 0, 0], [0, 0.5, 0.5, 0.5, 0.5]], np.float32)
    won = np.array([[0, 0, 1, 1, 1], [0, 0, 0, 0, 0]], bool)
    obs = np.broadcast_to(np.arange(limit + 1, dtype=np.float32)[None, :, None, None], (2, 5, 1, 1))
    timestep = TimeStep(
        obs=obs,
        expert_obs=obs * 2,
        state=obs[:, :, 0] * 3,
        avail=np.ones((2, 5, 1, 2), bool),
        reward=reward,
        done=done,
        won=won,
        truncated=truncated,
    )
    return PlayedEpisodes(
        timestep=timestep,
        actions=np.array([[[1], [0], [0], [0]], [[1], [1], [0], [1]]], np.int32),
        length=np.array([2, 4], np.int32),
        worker=np.array([0, 1], np.int32),
    )


def test_replay_episodes_match_the_fused_layout_by_hand() -> None:
    episodes, stats = replay_episodes(played_by_hand(), timeout_bootstrap=True)
    np.testing.assert_array_equal(episodes.filled, [[1, 1, 0, 0], [1, 1, 1, 1]])
    np.testing.assert_array_equal(episodes.rewards, [[1, 5, 0, 0], [0.5, 0.5, 0.5, 0.5]])
    # the win is terminal (and its absorbing padding); the time limit bootstraps
    np.testing.assert_array_equal(episodes.terminated, [[0, 1, 1, 1], [0, 0, 0, 0]])
    np.testing.assert_array_equal(stats["return"], [6.0, 2.0])
    np.testing.assert_array_equal(stats["won"], [True, False])
    np.testing.assert_array_equal(stats["length"], [2, 4])
    np.testing.assert_array_equal(episodes.records.obs[1, :, 0, 0], [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(episodes.records.expert_obs[1, :, 0, 0], [0, 2, 4, 6, 8])
    np.testing.assert_array_equal(episodes.records.state[0, :, 0], [0, 3, 6, 9, 12])
    # PyMARL's setting: a time-limit ending is stored as terminal
    episodes, _ = replay_episodes(played_by_hand(), timeout_bootstrap=False)
    np.testing.assert_array_equal(episodes.terminated, [[0, 1, 1, 1], [0, 0, 0, 1]])


@pytest.mark.parametrize("alg", ["qmix", "qmix-da"])
def test_host_act_plays_the_fused_collections_actions(alg: str) -> None:
    """Replaying a fused collection's observations through the host's act function, with the
    same per-step keys, gives the same actions at every real step (epsilon 0.5: both the
    greedy and the random branch are exercised)."""
    config = make_config(alg=alg, **SMALL)
    env = envs.make("3m", **env_options(config))
    nets = make_networks(config, env.info)
    params = _init_params(nets, config, jax.random.PRNGKey(3))
    actors = "learner" if config.uses_expert else "all"
    key, epsilon, prob = jax.random.PRNGKey(7), np.float32(0.5), np.float32(0.0)
    episodes, _ = collect(env, nets, config, params, key, 4, epsilon, prob, actors)
    observation = jax.vmap(jax.vmap(recorder(env)[1]))(episodes.records)
    scan_key = jax.random.split(key, 3)[2]
    act = jax.jit(make_act(config, nets, actors))
    carry: ActCarry = initial_carry(config, nets, 4, actors)
    filled = np.asarray(episodes.filled)
    for t in range(int(filled.sum(axis=1).max())):
        first = np.full(4, t == 0)
        carry, actions = act(
            params, carry, observation.obs[:, t], observation.expert_obs[:, t],
            observation.avail[:, t], first, jax.random.fold_in(scan_key, t), epsilon, prob,
        )  # fmt: skip
        real = filled[:, t]
        np.testing.assert_array_equal(np.asarray(actions)[real], episodes.actions[:, t][real])


def test_replay_that_does_not_fit_is_refused() -> None:
    class Fake:
        replay_bytes, bytes_per_step, seeds = 3 * 2**30, 1000, 2
        config = make_config(**SMALL)

    with pytest.raises(HostBackendError, match=r"needs 6.0 GiB.*lower --buffer-size"):
        check_memory(Fake(), available=2**30)  # type: ignore[arg-type]
    check_memory(Fake(), available=7 * 2**30)  # type: ignore[arg-type]


def test_smax_workers_run_resumes_to_identical_metrics_and_evaluates(tmp_path: Path) -> None:
    """--backend smax-workers: train, kill -9 after a checkpoint, --resume: the metrics equal
    an uninterrupted run's; `igmda eval` works on the run folder."""
    args = [
        "--backend", "smax-workers", "--workers-per-seed", "2", "--map", "3m",
        "--sight-range", "0", "--seeds", "2", "--n-envs", "4", "--batch-size", "8",
        "--buffer-size", "32", "--hidden-dim", "16", "--mixer-embed", "8",
        "--hypernet-embed", "16", "--iterations-per-call", "2", "--unroll-windows", "1",
        "--test-nepisode", "4",
        "--t-max", "1500", "--test-interval", "300", "--save-interval", "300", "--no-progress",
    ]  # fmt: skip
    command = [sys.executable, "-m", "igmda_jax.cli", "train", *args]
    whole = tmp_path / "whole"
    subprocess.run([*command, "--out", str(whole)], check=True, capture_output=True)

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [*command, "--out", str(killed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # kill -9 the host and its workers together
    )
    kill_after_first_checkpoint(process, killed, lambda: os.killpg(process.pid, signal.SIGKILL))
    assert metric_rows(killed / "metrics.jsonl")[-1]["t_env"] < 1500

    subprocess.run([*command[:-1], "--resume", str(killed)], check=True, capture_output=True)
    resumed, uninterrupted = (
        metric_rows(killed / "metrics.jsonl"),
        metric_rows(whole / "metrics.jsonl"),
    )
    assert resumed == uninterrupted
    assert all(row["dropped_episodes"] == 0 for row in resumed[2:])
    assert resumed[-1]["t_env"] >= 1500

    result = evaluate_run(whole, episodes=4)
    assert result["t_env"] == min(row["t_env"] for row in resumed[-2:])  # the slower seed's
    assert len(result["win_rate_per_seed"]) == 2


def test_worker_crash_loses_one_episode_and_the_run_goes_on(tmp_path: Path) -> None:
    config = make_config(
        alg="qmix-da", backend="smax-workers", t_max=600, test_interval=300, **SMALL
    )
    crash = {"fault_injection": FaultInjection(worker=1, at_step=20, mode="exit")}
    summary = run(config, tmp_path / "crash", progress=False, pool_options=crash)
    rows = [
        json.loads(line) for line in (tmp_path / "crash" / "metrics.jsonl").read_text().splitlines()
    ]
    assert summary["t_env"] >= 600
    assert sum(row["dropped_episodes"] for row in rows) == 1  # one seed, one crash
    assert {"agreement", "expert_win_rate"} <= set(rows[-1])


def test_smac_backend_without_starcraft_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "sc2"
    result = subprocess.run(
        [sys.executable, "-m", "igmda_jax.cli", "train", "--backend", "smac",
         "--map", "3s5z", "--out", str(out), "--no-progress"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "Real SMAC (StarCraft II) is not available" in result.stderr
    assert not out.exists()


def test_smac_backend_trains_and_saves_replays_through_the_same_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--backend smac is the host loop with SMAC's worker env: against the stand-in smac.env
    (2 agents, episodes cycling time limit / connection lost at step 2 / won at step 3) a run
    trains, counts the lost episodes, checkpoints, evaluates and saves SC2 replays."""
    from test_smac_pool import install_fake_smac

    install_fake_smac(tmp_path / "sc2", monkeypatch)
    (tmp_path / "sc2").mkdir(exist_ok=True)
    config = make_config(
        alg="qmix",
        backend="smac",
        t_max=150,
        test_interval=75,
        **{**SMALL, "map": "3m", "batch_size": 4},
    )
    summary = run(config, tmp_path / "run", progress=False)
    rows = metric_rows(tmp_path / "run" / "metrics.jsonl")
    assert summary["t_env"] >= 150 and len(rows) >= 3
    assert sum(row["dropped_episodes"] for row in rows) >= 1  # the lost connections
    replays = tmp_path / "replays"
    result = evaluate_run(tmp_path / "run", episodes=2, save_replay=replays)
    assert result["episodes"] == 2
    saved = sorted(p.name for p in replays.glob("*.SC2Replay"))
    assert len(saved) == 2 and all(name.startswith("run_worker") for name in saved), saved
